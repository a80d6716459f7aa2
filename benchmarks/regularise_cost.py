#!/usr/bin/env python
"""What each regulariser of ``jrnn.regularise`` costs in the train step, against the plain fast path.

For LSTM-256 and GRU-256 character models (vocab 28, B 32, T 35, SGD, clip 1,
full BPTT), one compiled train step per option (``jrnn.regularise.dropout``
with one rate set, or ``layer_norm=True``), timed in interleaved rounds (every
option once per round, so a change of machine load hits them all alike); the
figure is each option's fastest round, and the ratio the median over rounds of
its tokens/s over the unregularised step's in the same round (robust to a load
that drifts between rounds). Weight drop and embedding dropout
keep the fast recurrence (a params transform); the variational masks on
``h_{t-1}``, candidate dropout, zoneout and layer norm run the plain scan.

    python benchmarks/regularise_cost.py           # a few minutes on 2 loaded cores
    python benchmarks/regularise_cost.py --quick   # LSTM only, H=32, 1 round: a smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jrnn

jrnn.reuse_host_memory()

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "experiments"))
import provenance  # noqa: E402  (the machine record the experiments share)

V, B, T = 28, 32, 35
# option name -> (jrnn.regularise.Dropout fields, layer_norm); lstm-only fields are dropped for the gru
OPTIONS = {
    "none (fast path)": ({}, False),
    "weight_drop 0.5": ({"weight_drop": 0.5}, False),
    "embedding 0.1": ({"embedding": 0.1}, False),
    "output 0.3": ({"output": 0.3}, False),
    "recurrent 0.25 (Gal)": ({"recurrent": 0.25}, False),
    "candidate 0.25 (Semeniuta)": ({"candidate": 0.25}, False),
    "zoneout 0.1 (h, and c)": ({"zoneout": 0.1, "zoneout_c": 0.1}, False),
    "layer norm": ({}, True),
}


def _time(step, state, batch, n):
    state, _ = step(state, batch, jax.random.key(0))  # compiled already; one warm step
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for i in range(n):
        state, _ = step(state, batch, jax.random.key(i))
    jax.block_until_ready(state)
    return state, (time.perf_counter() - t0) / n


def run(cell_name: str, H: int, n: int, rounds: int):
    """``({option: seconds per step of the fastest round}, {option: median per-round tokens/s
    ratio to the unregularised step})`` for one cell."""
    rng = np.random.default_rng(0)
    batch = jrnn.Batch(*(rng.integers(0, V, (T, B)).astype(np.int32) for _ in range(2)))
    opt = jrnn.make_optimizer("sgd", 1.0, 1.0)
    steps = {}
    for name, (rates, ln) in OPTIONS.items():
        if cell_name != "lstm":
            rates = {k: v for k, v in rates.items() if k != "zoneout_c"}
        model = jrnn.language_model(jrnn.by_name(cell_name, H, layer_norm=ln), V)
        model = jrnn.regularise.dropout(model, **rates)
        step = jrnn.train_step(model, opt)
        state = jrnn.init_state(model, opt, jrnn.grads.full(), jax.random.key(0), B)
        state, _ = step(state, batch, jax.random.key(0))  # compile
        steps[name] = [step, state]
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, entry in steps.items():
            entry[1], s = _time(entry[0], entry[1], batch, n)
            times[name].append(s)
    base = np.asarray(times["none (fast path)"])
    return ({k: min(v) for k, v in times.items()},
            {k: float(np.median(base / np.asarray(v))) for k, v in times.items()})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    H, n, rounds = (32, 5, 1) if a.quick else (256, 10, 10)
    m = provenance.machine()
    print(f"{m['cpu']}, {m['cores']} cores, load {m['load']:.2f} at start; jax {m['jax']} on "
          f"{m['device']}; B {B}, T {T}, vocab {V}, H {H}; {n} steps x {rounds} rounds, "
          f"interleaved; tokens/s of the fastest round, ratio: median over rounds", flush=True)
    cells = ("lstm",) if a.quick else ("lstm", "gru")  # the smoke run: one cell's compiles
    res = {c: run(c, H, n, rounds) for c in cells}
    print("| option | " + " | ".join(f"{c.upper()} tokens/s | vs none" for c in cells) + " |\n|---|"
          + "---|---|" * len(cells))
    for name in OPTIONS:
        row = [name]
        for c in cells:
            best, ratio = res[c]
            row += [f"{B * T / best[name]:,.0f}", f"{ratio[name]:.2f}"]
        print("| " + " | ".join(row) + " |")
    print(f"load {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
