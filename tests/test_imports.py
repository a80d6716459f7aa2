"""``import jrnn`` loads the library only: no torch, no plotting, no harness.

The benchmark and experiment harnesses (``benchmarks/``, ``experiments/``) and
the peers they compare against live beside the package; the library never
imports them. Checked in a fresh interpreter, so nothing imported by other
tests can hide an import.
"""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
HARNESSES = ("benchmarks", "experiments")

CODE = """
import json, sys
import jrnn
from jrnn import compare
mods = {name: getattr(m, "__file__", None) for name, m in list(sys.modules.items())}
print(json.dumps(mods))
"""


def test_import_jrnn_loads_neither_torch_nor_any_harness():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, check=True).stdout
    mods = json.loads(out.strip().splitlines()[-1])
    assert "jrnn" in mods and "jrnn.compare" in mods
    heavy = sorted(m for m in mods if m.split(".")[0] in ("torch", "matplotlib"))
    assert not heavy, f"import jrnn imported {heavy[:5]}"
    old = sorted(m for m in mods if m in ("jrnn.bench_speed", "jrnn.bench_grads"))
    assert not old, old
    named = sorted(m for m in mods if m.split(".")[0] in
                   ("throughput", "peers", "soak", "bptt_variants", "bptt_variants_report", "d2l_timemachine"))
    assert not named, f"import jrnn imported harness modules {named}"
    harness_dirs = [str(ROOT / d) for d in HARNESSES]
    from_harness = sorted(m for m, f in mods.items() if f and any(f.startswith(d) for d in harness_dirs))
    assert not from_harness, f"import jrnn imported modules from benchmarks/ or experiments/: {from_harness}"


def test_the_package_holds_no_harness():
    pkg = ROOT / "src" / "jrnn"
    assert not (pkg / "bench_speed.py").exists() and not (pkg / "bench_grads.py").exists()
    assert (ROOT / "benchmarks" / "throughput.py").exists() and (ROOT / "experiments" / "bptt_variants.py").exists()
