#!/usr/bin/env python
"""SnAp-1's cost against full BPTT: milliseconds per train step on the char LM.

One compiled train step per (cell, estimator) (``jrnn.train_step``, SGD, a
character LM with V = 28, batch 32, 35 steps), timed by
``jrnn.compare.step_time`` (median of ``--repeats`` calls). Estimators:

- ``full``: full BPTT (unroll's fast path);
- ``snap1``: SnAp-1 as shipped (the diagonal from the cell's fast recurrence);
- ``snap1 (old)``: SnAp-1 as it was before (kept here as the reference):
  one example and one step at a time, the dense ``N x N`` carry Jacobian per
  example by ``jacfwd``, its diagonal blocks kept (the same numbers:
  ``tests/test_snap.py`` checks the shipped one against a dense reference);
- ``kf-rtrl`` and ``ok`` (rank 2; rnn only) and ``rtrl`` at ``--rtrl-hidden`` (RTRL's influence
  is ``B N P``: 32 x 64 x 18k floats would not be a fair step to time).

Prints a Markdown table with the CPU load beside it; ``--json`` writes the rows.

    python benchmarks/snap_cost.py            # ~2 minutes on 2 cores
    python benchmarks/snap_cost.py --quick    # one cell, 2 repeats (smoke)
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

import jax.numpy as jnp  # noqa: E402

from jrnn import compare  # noqa: E402
from jrnn.grads import kf, online  # noqa: E402,F401  (kf: registers kf-rtrl)

V = 28


def old_snap1() -> jrnn.grads.GradientEstimator:
    """SnAp-1 before this benchmark's change: per example, per step, dense ``J_s``."""

    def update_factory(model, params, K):
        H = model.cell.hidden_size
        u = jnp.asarray(np.concatenate([
            np.broadcast_to(np.arange(l.shape[-1]) % H, l.shape).ravel()
            for l in jax.tree.leaves(params["cell"])]))

        def update(f, theta, s, x, Mc, gs, key):
            J_s = jax.jacfwd(lambda s: f(theta, s, x)[0])(s).reshape(K, H, K, H)
            D = jnp.diagonal(J_s, axis1=1, axis2=3)
            _, vjp = jax.vjp(lambda th: f(th, s, x)[0], theta)
            imm = jax.vmap(lambda e: vjp(e)[0])(jnp.repeat(jnp.eye(K, dtype=s.dtype), H, axis=1))
            g_hist = jnp.sum(gs.reshape(K, H)[:, u] * Mc, axis=0)
            return jnp.einsum("abp,bp->ap", D[:, :, u], Mc) + imm, g_hist

        return update

    def init_carry(model, params, batch_shape):
        K = online._snap_blocks(model, params)
        return online._online("snap1-old", lambda B, N, P, dt: jnp.zeros((B, K, P), dt),
                              None).init_carry(model, params, batch_shape)

    def value_and_grad(model, params, carry, batch, key):
        K = online._snap_blocks(model, params)
        est = online._online("snap1-old", None, update_factory(model, params, K))
        return est.value_and_grad(model, params, carry, batch, key)

    return jrnn.grads.GradientEstimator(init_carry, value_and_grad, "snap1-old")
CELLS = {"gru": jrnn.gru, "lstm": jrnn.lstm, "rnn": jrnn.elman}


def measure(cell, spec: str, B: int, T: int, repeats: int) -> dict:
    model = jrnn.language_model(cell, V)
    opt = jrnn.make_optimizer("sgd", 0.1, 1.0)
    est = old_snap1() if spec == "snap1-old" else jrnn.grads.parse(spec)
    state = jrnn.init_state(model, opt, est, jax.random.key(0), B)
    rng = np.random.default_rng(0)
    batch = jrnn.Batch(*(rng.integers(0, V, (T, B)).astype(np.int32) for _ in range(2)))
    step = jrnn.train_step(model, opt, est).jitted
    t = compare.step_time(step, state, batch, jax.random.key(1), repeats=repeats)
    return {"ms": 1e3 * t["median_s"], "min_ms": 1e3 * t["min_s"], "compile_s": t["compile_s"],
            "load": os.getloadavg()[0]}


def rows(cells, H: int, rtrl_hidden: int, B: int, T: int, repeats: int):
    for name in cells:
        make = CELLS[name]
        cases = [("full", make(H), "full"), ("snap1", make(H), "snap1"),
                 ("snap1 (old)", make(H), "snap1-old")]
        if name == "rnn":
            cases += [("kf-rtrl", make(H), "kf-rtrl"), ("ok (rank 2)", make(H), "ok")]
        cases += [(f"full (H={rtrl_hidden})", make(rtrl_hidden), "full"),
                  (f"rtrl (H={rtrl_hidden})", make(rtrl_hidden), "rtrl")]
        for label, cell, spec in cases:
            r = measure(cell, spec, B, T, max(2, repeats // 4) if spec == "snap1-old" else repeats)
            yield {"cell": name, "estimator": label, **r}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--rtrl-hidden", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=35)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--cells", default="gru,lstm,rnn")
    ap.add_argument("--quick", action="store_true", help="gru only, H=16, 2 repeats")
    ap.add_argument("--json", help="write the rows to this file")
    a = ap.parse_args(argv)
    cells = a.cells.split(",")
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        ap.error(f"unknown cells {unknown}; choose from {', '.join(CELLS)}")
    if a.quick:
        cells, a.hidden, a.rtrl_hidden, a.repeats = ["gru"], 16, 8, 2
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax "
          f"{jax.__version__}, {jax.devices()[0].platform}; char LM V={V}, B={a.batch}, "
          f"T={a.steps}, H={a.hidden}; median and min of {a.repeats} train steps (snap1 (old): a quarter as many)\n")
    print("| cell | estimator | ms / update (median) | min | x full (median) | x full (min) | load (1 min) |")
    print("|---|---|---|---|---|---|---|")
    out, base = [], {}
    for r in rows(cells, a.hidden, a.rtrl_hidden, a.batch, a.steps, a.repeats):
        key = (r["cell"], r["estimator"].partition(" (H=")[2] or None)
        if r["estimator"].startswith("full"):
            base[key] = r
        r["x_full"] = r["ms"] / base[key]["ms"]
        r["x_full_min"] = r["min_ms"] / base[key]["min_ms"]
        out.append(r)
        print(f"| {r['cell']} | {r['estimator']} | {r['ms']:.1f} | {r['min_ms']:.1f} | "
              f"{r['x_full']:.1f} | {r['x_full_min']:.1f} | {r['load']:.1f} |", flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
