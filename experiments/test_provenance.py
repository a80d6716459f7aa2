"""experiments/provenance.py: the machine record and the results.md footer."""

import os

from provenance import footer, machine, pyplot


def test_machine_names_the_cpu_and_the_footer_says_it():
    m = machine()
    assert m["cpu"] and m["cpu"] not in ("x86_64", "aarch64") or not os.path.exists("/proc/cpuinfo")
    assert m["cores"] == os.cpu_count() and m["jax"] and m["device"]
    line = footer({"machine": {**m, "load": 0.25}, "total_seconds": 12.345}, " (compiles included)")
    assert line == (f"Machine: {m['cpu']}, {m['cores']} cores (load 0.2 at start), JAX {m['jax']} on "
                    f"{m['device']}; total 12.3 s (compiles included).")
    assert pyplot() is not None  # matplotlib comes with the test extra
