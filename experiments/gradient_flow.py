#!/usr/bin/env python
"""Vanishing and exploding gradients made visible (Goodfellow et al. 10.7; Pascanu et al. 2013).

Usage::

    python experiments/gradient_flow.py                        # full run
    python experiments/gradient_flow.py --quick --out /tmp/gf    # smoke run (seconds)

On the adding problem (loss at the last step only, ``T`` steps, a batch of 16)
three measurements with :mod:`jrnn.gradient_flow`:

1. **Spectral radius of W_hh.** Elman nets (tanh) whose ``W_hh`` (Gaussian
   entries) is rescaled to ``rho`` in ``--radii``
   (:func:`jrnn.reservoir.with_spectral_radius`): ``||dL/dh_t||`` for every
   ``t`` (:func:`~jrnn.gradient_flow.hidden_grads`, mean over the batch), and
   the singular values of the step Jacobians along one trajectory
   (:func:`~jrnn.gradient_flow.step_singular_values`).
2. **Gating.** The same measurements for GRU, LSTM (forget bias 1) and leaky
   units (time constants 1.5..100) at their default initialisation, beside
   the Elman net at the same init.
3. **Clipping.** An Elman net at ``rho = --clip-rho`` trained with SGD through
   :func:`jrnn.fit`, with and without global-norm clipping at 1: the gradient
   norm and the loss per update. Clipping rescales the update, not the
   backpropagated signal: ``dL/dh_t`` is the same, the step is bounded.

Writes ``results.json``, ``results.md`` and ``gradient_flow.png`` to ``--out``
(default ``results/gradient_flow`` beside this script).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import numpy as np

import jrnn
from jrnn import gradient_flow as gf
from jrnn.cells import leaky
from jrnn.data import synthetic
from jrnn.reservoir import with_spectral_radius
from provenance import footer, machine, pyplot, save  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "gradient_flow")


def adding_batch(T: int, B: int, seed: int) -> jrnn.Batch:
    x, _, y, m = synthetic.adding_task(B, T, seed)
    return jrnn.Batch(x, y, m)


def elman_at_radius(hidden: int, rho: float, seed: int):
    """A regressor over a tanh Elman cell whose W_hh (Gaussian) has spectral radius ``rho``."""
    model = jrnn.regressor(jrnn.elman(hidden), 2, 1)
    params = model.init(jax.random.key(seed))
    w = np.random.default_rng(seed).standard_normal((hidden, hidden)).astype(np.float32)
    params["cell"]["W_hh"] = with_spectral_radius(w, rho)
    return model, params


def profile(model, params, batch):
    """``||dL/dh_t||`` (mean over the batch) and the step-Jacobian singular values of sequence 0."""
    g = gf.hidden_grads(model, params, batch)
    norms = np.asarray(g.norms).mean(axis=1)  # [T]
    s = np.asarray(gf.step_singular_values(model.cell, params["cell"], batch.inputs[:, 0]))
    return {"grad_norm": norms.tolist(), "ratio_first_last": float(norms[0] / norms[-1]),
            "sv_max": s[:, 0].tolist(), "sv_min": s[:, -1].tolist(),
            "sv_max_median": float(np.median(s[:, 0])),
            "sv_geomean": float(np.exp(np.mean(np.log(np.maximum(s, 1e-30))))),
            "loss": float(g.loss)}


def gated_models(hidden: int, seed: int):
    cells = {"rnn": jrnn.elman(hidden), "gru": jrnn.gru(hidden),
             "lstm": jrnn.lstm(hidden, forget_bias=1.0),
             "leaky": leaky(hidden, tau=np.geomspace(1.5, 100.0, hidden))}
    out = {}
    for name, cell in cells.items():
        model = jrnn.regressor(cell, 2, 1)
        out[name] = (model, model.init(jax.random.key(seed)))
    return out


def clipping_run(hidden, rho, T, updates, lr, clip, seed):
    model, params = elman_at_radius(hidden, rho, seed)
    model = model._replace(init=lambda key: params)  # start from the rescaled W_hh
    opt = jrnn.make_optimizer("sgd", lr, clip=clip)

    def batches(epoch):
        for i in range(updates):
            yield adding_batch(T, 16, seed * 100_000 + i + 1)

    status = "ok"
    with tempfile.TemporaryDirectory() as tmp:  # its metrics.jsonl keeps the records of a run that stops
        try:
            res = jrnn.fit(model, opt, batches, batch_size=16, carry_over=False, run_dir=tmp,
                           config=jrnn.LoopConfig(epochs=1, seed=seed, log_every=1, progress=False,
                                                  quiet=True, on_nonfinite="stop"))
            history, final = res.history, res.state.params
        except jrnn.NonFiniteError as e:
            status, final = f"non-finite at update {e.step}", None
            with open(os.path.join(tmp, "metrics.jsonl")) as f:
                history = [json.loads(line) for line in f if line.strip()]
    rec = [r for r in history if "train_loss" in r]
    out = {"updates": [int(r["step"]) for r in rec], "loss": [float(r["train_loss"]) for r in rec],
           "grad_norm": [float(r["grad_norm"]) for r in rec], "status": status, "clip": clip}
    if final is not None:
        out["after"] = profile(model, final, adding_batch(T, 16, seed + 7))
    return out


def write_md(res, path):
    c = res["config"]
    lines = [
        "# Vanishing and exploding gradients, made visible",
        "",
        f"Adding problem, T = {c['T']}, loss at the last step, batch 16; {c['hidden']} units. "
        "`||dL/dh_t||` from `jrnn.gradient_flow.hidden_grads` (mean over the batch); step-Jacobian "
        "singular values from `step_singular_values` along sequence 0.",
        "",
        "## Spectral radius of W_hh (tanh Elman, Gaussian W_hh rescaled)",
        "",
        "| rho | ‖dL/dh_0‖ / ‖dL/dh_T-1‖ | median ‖J_t‖_2 | geometric mean of all singular values |",
        "|---:|---:|---:|---:|",
    ]
    for rho, r in res["radius"].items():
        lines.append(f"| {rho} | {r['ratio_first_last']:.2e} | {r['sv_max_median']:.3f} | "
                     f"{r['sv_geomean']:.3f} |")
    lines += ["", "## Gating (default initialisation)", "",
              "| cell | ‖dL/dh_0‖ / ‖dL/dh_T-1‖ | median ‖J_t‖_2 | geometric mean of all singular values |",
              "|---|---:|---:|---:|"]
    for name, r in res["gating"].items():
        lines.append(f"| {name} | {r['ratio_first_last']:.2e} | {r['sv_max_median']:.3f} | "
                     f"{r['sv_geomean']:.3f} |")
    lines += ["", f"## Clipping (Elman at rho = {c['clip_rho']}, SGD lr {c['clip_lr']:g}, "
              f"{c['clip_updates']} updates through `jrnn.fit`)", "",
              "| clipping | status | max gradient norm | final loss (mean of last 10) | "
              "‖dL/dh_0‖ / ‖dL/dh_T-1‖ after |",
              "|---|---|---:|---:|---:|"]
    for name, r in res["clipping"].items():
        loss = np.asarray(r["loss"][-10:], float)
        after = f"{r['after']['ratio_first_last']:.2e}" if "after" in r else "—"
        lines.append(f"| {name} | {r['status']} | {max(r['grad_norm'], default=float('nan')):.3g} "
                     f"| {loss.mean() if loss.size else float('nan'):.4g} | {after} |")
    lines += ["", "A ratio of 0 is an underflow: the signal fell below float32's range.", "",
              "Clipping bounds the update (the norm is taken before clipping); it does not "
              "change the backpropagated ‖dL/dh_t‖ at given params, which only the recurrence "
              "(spectral radius, saturation, gates) sets.", "",
              footer(res)]
    if res["plot"]:
        lines += ["", f"![gradient flow]({res['plot']})"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def plot(res, path):
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(2, 3, figsize=(15, 8))
    T = res["config"]["T"]
    t = np.arange(T)
    for rho, r in res["radius"].items():
        ax[0, 0].semilogy(t, r["grad_norm"], label=f"rho={rho}")
        ax[0, 1].semilogy(t, r["sv_max"], label=f"rho={rho}")
    ax[0, 0].set_title("Elman: ||dL/dh_t|| (loss at t=T-1)")
    ax[0, 1].set_title("Elman: largest singular value of J_t")
    ax[0, 1].axhline(1.0, color="k", lw=0.5)
    for name, r in res["gating"].items():
        ax[1, 0].semilogy(t, r["grad_norm"], label=name)
        ax[1, 1].semilogy(t, r["sv_max"], label=f"{name} max")
        ax[1, 1].semilogy(t, r["sv_min"], ls=":", color=ax[1, 1].lines[-1].get_color(),
                          label=f"{name} min")
    ax[1, 0].set_title("gating (default init): ||dL/dh_t||")
    ax[1, 1].set_title("gating: largest / smallest singular value of J_t")
    ax[1, 1].axhline(1.0, color="k", lw=0.5)
    for a in (ax[0, 0], ax[0, 1], ax[1, 0], ax[1, 1]):
        a.set_xlabel("t")
        a.legend(fontsize=7)
    for name, r in res["clipping"].items():
        ax[0, 2].semilogy(r["updates"], r["grad_norm"], lw=0.8, label=name)
        ax[1, 2].semilogy(r["updates"], r["loss"], lw=0.8, label=name)
    rho = res["config"]["clip_rho"]
    ax[0, 2].set_title(f"Elman rho={rho}, SGD: gradient norm per update")
    ax[1, 2].set_title(f"Elman rho={rho}, SGD: loss per update")
    for a in (ax[0, 2], ax[1, 2]):
        a.set_xlabel("update")
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: short sequences, few updates")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="T (default 100; quick 20)")
    ap.add_argument("--hidden", type=int, default=None, help="default 64 (quick 16)")
    ap.add_argument("--radii", default="0.5,0.9,1.0,1.5,3.0")
    ap.add_argument("--clip-rho", type=float, default=3.0)
    ap.add_argument("--clip-lr", type=float, default=0.1)
    ap.add_argument("--clip-updates", type=int, default=None, help="default 300 (quick 20)")
    args = ap.parse_args(argv)
    T = args.steps or (20 if args.quick else 100)
    hidden = args.hidden or (16 if args.quick else 64)
    radii = [float(v) for v in args.radii.split(",") if v.strip()]
    updates = args.clip_updates or (20 if args.quick else 300)
    cfg = {"T": T, "hidden": hidden, "radii": radii, "clip_rho": args.clip_rho,
           "clip_lr": args.clip_lr, "clip_updates": updates, "seed": args.seed, "quick": args.quick}
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    batch = adding_batch(T, 16, args.seed)
    res = {"config": cfg, "radius": {}, "gating": {}, "clipping": {}}
    for rho in radii:
        model, params = elman_at_radius(hidden, rho, args.seed)
        res["radius"][f"{rho:g}"] = r = profile(model, params, batch)
        print(f"rho {rho:g}: ||dL/dh_0|| / ||dL/dh_T-1|| = {r['ratio_first_last']:.2e}, median "
              f"||J||_2 = {r['sv_max_median']:.3f}", file=sys.stderr, flush=True)
    for name, (model, params) in gated_models(hidden, args.seed).items():
        res["gating"][name] = r = profile(model, params, batch)
        print(f"{name}: ratio {r['ratio_first_last']:.2e}, median ||J||_2 {r['sv_max_median']:.3f}",
              file=sys.stderr, flush=True)
    for name, clip in (("no clipping", None), ("clip 1", 1.0)):
        res["clipping"][name] = r = clipping_run(hidden, args.clip_rho, T, updates, args.clip_lr,
                                                  clip, args.seed)
        print(f"{name}: {r['status'][:60]}; max grad norm {max(r['grad_norm'], default=0):.3g}",
              file=sys.stderr, flush=True)
    res["total_seconds"] = time.perf_counter() - t0
    res["machine"] = machine()
    save(res, args.out, "gradient_flow.png", plot, write_md)
    print(f"total {res['total_seconds']:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
