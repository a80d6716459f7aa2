#!/usr/bin/env python
"""Output-to-hidden recurrence (Goodfellow fig. 10.4): teacher forcing vs free running vs
scheduled sampling, and the train/test mismatch of teacher forcing.

Usage::

    python experiments/teacher_forcing.py                     # full setting (a few minutes)
    python experiments/teacher_forcing.py --quick --out /tmp/tf   # smoke run (under a minute)

The model (:func:`jrnn.output_recurrence.output_model`) has no hidden-to-hidden
recurrence: ``h_t = tanh(x_t W_x + f_{t-1} W_f + b)``, ``o_t = h_t W_o + b_o``, where
the fed-back ``f_{t-1}`` is the previous target (teacher forcing) or the
model's own previous output (free running). The task
(:func:`jrnn.data.synthetic.rotation`): a point on the unit circle turned by
an input-driven angle each step, ``y_t = R(0.3 + 0.5 x_t) y_{t-1}``, from a
given start ``y_{-1}``; the map is marginally stable, so open-loop errors are
not damped.

Three models train through ``jrnn.fit`` (full BPTT, Adam) on the same
batches, differing only in the flags of their input stream: teacher
forcing (flags 1), free running (flags 0 after the start), and scheduled
sampling (each step teacher-forced with probability ``p``, drawn on the host
per batch, ``p`` decayed linearly from 1 to 0 over the first 3/4 of
training; Bengio et al. 2015). Each is then evaluated on held-out sequences
both ways: teacher-forced (one-step-ahead) MSE, and free-running MSE over the
training length ``T`` and over ``4T`` (the deployment condition). Teacher
forcing's gap between the two is the mismatch the chapter describes.

Writes ``results.json``, ``results.md`` and ``teacher_forcing.png`` to
``--out`` (default ``results/teacher_forcing`` beside this script).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jrnn
from jrnn import output_recurrence as orc
from jrnn.data import synthetic
from provenance import footer, machine, pyplot, save  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "teacher_forcing")
MODES = ("teacher forcing", "free running", "scheduled sampling")

SETTINGS = {
    "quick": {"T": 20, "hidden": 32, "steps": 300, "batch": 32, "lr": 1e-2, "test": 256,
              "eval_every": 100, "noise": [0.0, 0.1]},
    "full": {"T": 40, "hidden": 64, "steps": 3000, "batch": 64, "lr": 3e-3, "test": 512,
             "eval_every": 250, "noise": [0.0, 0.1, 0.3]},
}


def p_teacher(mode: str, i: int, steps: int) -> float:
    """The probability of feeding the target at training step ``i``."""
    if mode == "teacher forcing":
        return 1.0
    if mode == "free running":
        return 0.0
    return max(0.0, 1.0 - i / (0.75 * steps))  # scheduled sampling: linear decay to 0


def evaluator(model, T, n, seed=12345):
    """``params -> {tf_mse, fr_mse, fr_mse_long}`` on ``n`` held-out sequences of ``T`` and ``4T``."""
    xs, ys, start = synthetic.rotation(n, 4 * T, rng=seed)
    tf = jnp.asarray(orc.inputs(xs[:T], ys[:T], 1.0, start))
    fr = jnp.asarray(orc.inputs(xs, ys, orc.schedule(4 * T, n, 0.0, 0), start))
    ys = jnp.asarray(ys)

    @jax.jit
    def mse(params):
        o_tf, _ = jrnn.unroll(model.cell, params["cell"], tf)
        o_fr, _ = jrnn.unroll(model.cell, params["cell"], fr)
        err = jnp.sum((o_fr - ys) ** 2, -1).mean(1)  # [4T]
        return jnp.sum((o_tf - ys[:T]) ** 2, -1).mean(), err[:T].mean(), err.mean(), err

    def evaluate(params):
        a, b, c, err = mse(params)
        return {"tf_mse": float(a), "fr_mse": float(b), "fr_mse_long": float(c),
                "err_by_step": np.asarray(err).tolist()}

    return evaluate


def train(mode, s, evaluate, noise=0.0, seed=0):
    model = orc.output_model(s["hidden"], 1, 2, "value")
    T, B, steps = s["T"], s["batch"], s["steps"]

    def batches(epoch):
        for i in range(steps):
            rng = np.random.default_rng([seed, epoch, i])  # the same data for every mode
            xs, ys, start = synthetic.rotation(B, T, rng=rng)
            ys = ys + np.float32(noise) * rng.standard_normal(ys.shape, np.float32)  # observed
            flags = orc.schedule(T, B, p_teacher(mode, i, steps), rng)
            yield jrnn.Batch(orc.inputs(xs, ys, flags, start), ys)

    def validate(params):
        r = evaluate(params)
        return {k: r[k] for k in ("tf_mse", "fr_mse", "fr_mse_long")}

    t0 = time.perf_counter()
    res = jrnn.fit(model, jrnn.make_optimizer("adam", lr=s["lr"], clip=1.0), batches, batch_size=B,
                   carry_over=False, validate=validate,
                   config=jrnn.LoopConfig(epochs=1, seed=seed, progress=False, quiet=True,
                                          log_every=s["eval_every"], eval_every=s["eval_every"]))
    seconds = time.perf_counter() - t0
    curve = {k: [float(r[k]) for r in res.history if k in r] for k in ("tf_mse", "fr_mse")}
    curve["step"] = [int(r["step"]) for r in res.history if "tf_mse" in r]
    return {**evaluate(res.state.params), "curve": curve, "seconds": seconds}


def write_md(res, path):
    c = res["config"]
    lines = ["# Teacher forcing vs free running (output-to-hidden recurrence)", "",
             f"Goodfellow fig. 10.4 net (hidden {c['hidden']}, no hidden-to-hidden recurrence) on "
             f"the input-driven rotation, T = {c['T']}; {c['steps']} Adam steps (lr {c['lr']:g}) "
             f"of {c['batch']} sequences, the same batches for every mode; the training targets "
             f"(and so the teacher-forced inputs) observed with Gaussian noise of the given sd; "
             f"held-out: {c['test']} clean sequences. MSE per step (sum over the 2 outputs); "
             f"'free running' feeds the model its own outputs from the given start.", "",
             f"| target noise | trained with | teacher-forced MSE | free-running MSE (T={c['T']}) "
             f"| free-running MSE (4T={4 * c['T']}) | mismatch (free / forced, T) | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        lines.append(f"| {r['noise']:g} | {r['mode']} | {r['tf_mse']:.2e} | {r['fr_mse']:.2e} | "
                     f"{r['fr_mse_long']:.2e} | {r['fr_mse'] / max(r['tf_mse'], 1e-12):.1f}x | "
                     f"{r['seconds']:.1f} |")
    lines += ["", "Teacher forcing trains on inputs (the observed previous targets) it never "
              "gets at test time, where it is fed its own outputs: the mismatch column is its "
              "open-loop error over its one-step error. Free running trains in the test "
              "condition, at the cost of back-propagating through the fed-back outputs.", ""]
    for noise in c["noise"]:
        rs = [r for r in res["runs"] if r["noise"] == noise]
        best = min(rs, key=lambda r: r["fr_mse_long"])
        tf = next(r for r in rs if r["mode"] == "teacher forcing")
        lines.append(f"- noise {noise:g}: lowest open-loop error over 4T: **{best['mode']}** "
                     f"({best['fr_mse_long']:.2e}); teacher forcing's open-loop error over T is "
                     f"{tf['fr_mse'] / max(tf['tf_mse'], 1e-12):.0f}x its one-step error.")
    lines += ["",
              footer(res)]
    if res["plot"]:
        lines += ["", f"![open-loop error by step]({res['plot']})"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def plot(res, path):
    plt = pyplot()
    if plt is None:
        return False
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 3.8))
    for r in res["runs"]:
        m = f"{r['mode']} (noise {r['noise']:g})"
        ls = "-" if r["noise"] else ":"
        a0.plot(np.arange(1, len(r["err_by_step"]) + 1), r["err_by_step"], ls, label=m)
        a1.plot(r["curve"]["step"], r["curve"]["fr_mse"], ls, label=m)
    a0.axvline(res["config"]["T"], color="grey", lw=0.8)
    a0.set(xlabel="step of the open-loop rollout", ylabel="squared error", yscale="log",
           title="free-running error by step (held out)")
    a1.set(xlabel="training step", ylabel="held-out free-running MSE (T)", yscale="log",
           title="learning curves")
    a0.legend(fontsize=7)
    a1.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (tiny sizes, few steps)")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--noise", default=None, help="comma-separated target noise sds (default 0,0.1; full 0,0.1,0.3)")
    args = ap.parse_args(argv)
    s = dict(SETTINGS["quick" if args.quick else "full"])
    if args.steps:
        s["steps"] = args.steps
    if args.noise:
        s["noise"] = [float(v) for v in args.noise.split(",")]
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    evaluate = evaluator(orc.output_model(s["hidden"], 1, 2, "value"), s["T"], s["test"])
    runs = []
    for noise in s["noise"]:
        for m in MODES:
            r = {"mode": m, "noise": float(noise), **train(m, s, evaluate, noise)}
            runs.append(r)
            print(f"noise {noise:g} {m:20s} tf {r['tf_mse']:.2e}  fr(T) {r['fr_mse']:.2e}  "
                  f"fr(4T) {r['fr_mse_long']:.2e}  ({r['seconds']:.1f} s)", file=sys.stderr, flush=True)
    res = {"config": {**s, "quick": args.quick}, "runs": runs,
           "total_seconds": time.perf_counter() - t0,
           "machine": machine()}
    save(res, args.out, "teacher_forcing.png", plot, write_md)
    print(f"total {res['total_seconds']:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
