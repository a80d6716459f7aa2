#!/usr/bin/env python
"""TBPTT(k1, k2) against truncated:K and full BPTT: time and memory per token.

One compiled train step per estimator (GRU char LM, SGD), at k1 = T = 35 and
T = 1000, for k2 in {1, 5, 35}; time is the median of ``--repeats`` calls
(``jrnn.compare.step_time``), memory XLA's buffer plan for the step
(``jrnn.compare.compiled_memory``: temporaries, i.e. what the backward pass
keeps). Prints a Markdown table; ``--json`` writes the numbers.

    python benchmarks/tbptt.py              # ~2 minutes on 2 cores
    python benchmarks/tbptt.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import jrnn

jrnn.reuse_host_memory()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jrnn import compare  # noqa: E402

V = 28


def specs(T: int) -> list[str]:
    out = ["full"]
    for k in (1, 5, 35):
        if k <= T:
            out += [f"tbptt:{T},{k}", f"truncated:{k}"]
    return out


def measure(H: int, B: int, T: int, spec: str, repeats: int) -> dict:
    model = jrnn.language_model(jrnn.gru(H), V)
    opt = jrnn.make_optimizer("sgd", 0.1, 1.0)
    est = jrnn.grads.parse(spec)
    state = jrnn.init_state(model, opt, est, jax.random.key(0), B)
    rng = np.random.default_rng(0)
    batch = jrnn.Batch(*(rng.integers(0, V, (T, B)).astype(np.int32) for _ in range(2)))
    step = jrnn.train_step(model, opt, est).jitted
    key = jax.random.key(1)
    mem = compare.compiled_memory(step, state, batch, key)
    t = compare.step_time(step, state, batch, key, repeats=repeats)
    tokens = T * B
    return {"spec": spec, "T": T, "ms_per_step": 1e3 * t["median_s"],
            "us_per_token": 1e6 * t["median_s"] / tokens, "temp_mib": mem["temp"] / 2 ** 20}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lengths", default="35,1000")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="GRU-32, T=35,100, 2 repeats")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.hidden, a.lengths, a.repeats = 32, "35,100", 2
    print(f"{platform.machine()} {os.cpu_count()} cores, jax {jax.__version__}, load "
          f"{os.getloadavg()[0]:.2f}; GRU-{a.hidden}, B={a.batch}, V={V}, SGD; median of {a.repeats}")
    rows = []
    for T in (int(t) for t in a.lengths.split(",")):
        for spec in specs(T):
            rows.append(measure(a.hidden, a.batch, T, spec, a.repeats))
    full = {r["T"]: r for r in rows if r["spec"] == "full"}
    print("\n| T = k1 | estimator | ms / update | us / token | vs full (time) | temp MiB | vs full (memory) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        f = full[r["T"]]
        print(f"| {r['T']} | {r['spec']} | {r['ms_per_step']:.2f} | {r['us_per_token']:.3f} | "
              f"{r['ms_per_step'] / f['ms_per_step']:.2f} | {r['temp_mib']:.2f} | "
              f"{r['temp_mib'] / f['temp_mib']:.3f} |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"argv": vars(a), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
