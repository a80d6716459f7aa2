#!/usr/bin/env python
"""Full BPTT's memory against T, and checkpointed BPTT where full no longer fits.

For T from 10^3 to 10^5 (GRU char LM, SGD, ``--hidden`` x ``--batch``): the
temporary memory XLA plans for one compiled train step
(``jrnn.compare.compiled_memory``; nothing runs, so a plan larger than the
machine is still reported) for full BPTT, ``checkpointed`` (S = sqrt(T)) and
``checkpointed:budget=...``; then one real step of each estimator whose plan
fits in ``--ram`` (the rest are reported as not run), timed by
``jrnn.compare.step_time``. Prints a Markdown table; ``--json`` writes it.

    python benchmarks/memory_curve.py             # T = 1e3 .. 1e5, several minutes
    python benchmarks/memory_curve.py --quick     # T = 100, 300: seconds
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform

import jrnn

jrnn.reuse_host_memory()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jrnn import compare  # noqa: E402

V = 28


def measure(H: int, B: int, T: int, spec: str, ram: float, repeats: int) -> dict:
    model = jrnn.language_model(jrnn.gru(H), V)
    opt = jrnn.make_optimizer("sgd", 0.1, 1.0)
    est = jrnn.grads.parse(spec)
    state = jrnn.init_state(model, opt, est, jax.random.key(0), B)
    rng = np.random.default_rng(0)
    batch = jrnn.Batch(*(rng.integers(0, V, (T, B)).astype(np.int32) for _ in range(2)))
    step = jrnn.train_step(model, opt, est, donate=False).jitted
    key = jax.random.key(1)
    mem = compare.compiled_memory(step, state, batch, key)
    row = {"T": T, "spec": spec, "temp_gib": mem["temp"] / 2 ** 30, "ran": False}
    if mem["total"] < ram:
        t = compare.step_time(step, state, batch, key, repeats=repeats)
        row.update(ran=True, s_per_step=t["median_s"], us_per_token=1e6 * t["median_s"] / (T * B))
    return row


def table(rows: list, H: int, B: int, ram: float) -> str:
    full = {r["T"]: r for r in rows if r["spec"] == "full"}
    out = [f"GRU-{H}, B={B}, one SGD step; memory: XLA's plan of temporaries; time: median step "
           f"(run only where the plan fits in {ram / 2 ** 30:.0f} GiB)", "",
           "| T | estimator | temp memory | vs full | time / step | us / token | vs full |",
           "|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        f = full[r["T"]]
        rel_m = r["temp_gib"] / f["temp_gib"] if f["temp_gib"] else float("nan")
        t = f"{1e3 * r['s_per_step']:,.1f} ms" if r["ran"] else "not run (does not fit)"
        us = f"{r['us_per_token']:.2f}" if r["ran"] else "-"
        rel_t = f"{r['s_per_step'] / f['s_per_step']:.2f}x" if r["ran"] and f["ran"] else "-"
        mem = r["temp_gib"]
        m = f"{mem:.2f} GiB" if mem >= 0.1 else f"{mem * 1024:.1f} MiB"
        out.append(f"| {r['T']:,} | {r['spec']} | {m} | {rel_m:.3f} | {t} | {us} | {rel_t} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--T", default="1000,10000,30000,100000")
    ap.add_argument("--budget", default="1GiB", help="checkpointed:budget=... row")
    # 20 GiB was too many on this 24 GiB machine: full BPTT at T=30,000 (a 15.6 GiB plan) was OOM-killed
    ap.add_argument("--ram", type=float, default=12.0, help="GiB a step may plan to be run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    Ts = [100, 300] if a.quick else [int(t) for t in a.T.split(",")]
    H, B = (16, 4) if a.quick else (a.hidden, a.batch)
    ram = a.ram * 2 ** 30
    rows = []
    for T in Ts:
        for spec in ("full", f"checkpointed:{int(math.isqrt(T))}", f"checkpointed:budget={a.budget}"):
            rows.append(measure(H, B, T, spec, ram, 1 if a.quick else a.repeats))
            print(rows[-1], flush=True)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.machine()) if os.path.exists("/proc/cpuinfo") else platform.machine()
    print(f"\n{cpu}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, jax {jax.__version__}")
    print(table(rows, H, B, ram))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"hidden": H, "batch": B, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
