#!/usr/bin/env python
"""Aligned sequence to sequence: per-step tagging that needs the future, bidirectional vs causal.

Usage::

    python experiments/tagging.py                       # full setting (a few minutes on 2 cores)
    python experiments/tagging.py --quick --out /tmp/tag    # smoke run (under a minute)

Task (:func:`jrnn.data.synthetic.neighbour_sum_tags`): tag each step of a
variable-length sequence of ``K`` symbols with ``(x_{t-1} + x_{t+1}) mod K``
(the last step unscored). A causal net never sees ``x_{t+1}`` when it tags
step ``t``: it can do no better than chance, ``1/K``. One bidirectional
layer with a linear head is not enough either: its logits are a sum of a
forward and a backward term, and a sum mod K is not additively separable;
a second layer can combine them. Models: a unidirectional GRU tagger
(``jrnn.classifier(..., tokens=True)`` trained through ``jrnn.fit``), and
bidirectional GRU stacks of 1 and 2 layers (:func:`jrnn.tagging.tagger_model`,
a whole-sequence model, trained by ``jrnn.fit`` with full BPTT), all with the
same Adam optimizer, batches and number of steps. Measured: held-out per-step
accuracy over the real (unpadded) positions.

Writes ``results.json``, ``results.md`` and ``tagging.png`` to ``--out``
(default ``results/tagging`` beside this script).
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
from jrnn import tagging
from jrnn.data import synthetic
from provenance import footer, machine, pyplot, save  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "tagging")

SETTINGS = {
    "quick": {"symbols": 3, "min_len": 2, "max_len": 8, "hidden": 32, "steps": 300, "batch": 32,
              "lr": 1e-2, "test": 512, "eval_every": 100},
    "full": {"symbols": 4, "min_len": 2, "max_len": 16, "hidden": 64, "steps": 2000, "batch": 64,
             "lr": 3e-3, "test": 1024, "eval_every": 200},
}


def _data(s, rng):
    return synthetic.neighbour_sum_tags(s["batch"], s["min_len"], s["max_len"], s["symbols"],
                                        rng=rng)


def _masked_accuracy(logits, tags, mask):
    return float(jrnn.accuracy(logits, jnp.asarray(tags), jnp.asarray(mask)))


def _fit(model, s, metric):
    """Train through jrnn.fit on the same fresh batches for every model; the accuracy curve."""
    def batches(epoch):
        for i in range(s["steps"]):
            x, y, m, ln = _data(s, np.random.default_rng([0, epoch, i]))
            yield jrnn.Batch(x, y, m, lengths=ln)

    curve = {"step": [0], "accuracy": [metric(model.init(jax.random.key(0)))]}
    t0 = time.perf_counter()
    res = jrnn.fit(model, jrnn.make_optimizer("adam", lr=s["lr"], clip=1.0), batches,
                   batch_size=s["batch"], carry_over=False, validate=lambda p: {"accuracy": metric(p)},
                   config=jrnn.LoopConfig(epochs=1, progress=False, quiet=True,
                                          log_every=s["eval_every"], eval_every=s["eval_every"]))
    for r in res.history:
        if "accuracy" in r and r["step"] != curve["step"][-1]:
            curve["step"].append(int(r["step"]))
            curve["accuracy"].append(float(r["accuracy"]))
    return {**curve, "final": curve["accuracy"][-1], "seconds": time.perf_counter() - t0}


def train_unidirectional(s, test):
    ids, tags, mask, _ = test
    model = jrnn.classifier(jrnn.gru(s["hidden"]), s["symbols"] + 1, s["symbols"], tokens=True)

    def metric(params):
        hs, _ = jrnn.unroll(model.cell, params["cell"], jnp.asarray(ids))
        return _masked_accuracy(model.head(params["head"], hs), tags, mask)

    return _fit(model, s, metric)


def train_bidirectional(s, test, layers):
    ids, tags, mask, n = test
    H = s["hidden"]
    model = tagging.tagger_model([(jrnn.gru(H), jrnn.gru(H))] * layers, s["symbols"] + 1,
                                 s["symbols"])  # a whole-sequence Model: full BPTT in jrnn.fit
    forward = jax.jit(lambda p: model.head(p["head"], model.forward(
        p["cell"], jrnn.Batch(jnp.asarray(ids), None, lengths=jnp.asarray(n)))))

    def metric(params):
        return _masked_accuracy(forward(params), tags, mask)

    return _fit(model, s, metric)


def write_md(res, path):
    c = res["config"]
    lines = ["# Per-step tagging that needs the future: bidirectional vs unidirectional", "",
             f"Tag_t = (x_(t-1) + x_(t+1)) mod {c['symbols']} on sequences of lengths "
             f"{c['min_len']}..{c['max_len']} (padded, masked); GRU-{c['hidden']} per direction; "
             f"Adam lr {c['lr']:g}, {c['steps']} steps of {c['batch']}, the same batches for "
             f"every model; held-out per-step accuracy on {c['test']} sequences. Chance (the best "
             f"a causal model can do): 1/{c['symbols']} = {1 / c['symbols']:.3f}. One bidirectional "
             "layer under a linear head scores additive logits f(x_(t-1)) + g(x_(t+1)), which "
             "cannot express a sum mod K; the second layer combines the two directions.", "",
             "| model | accuracy: start -> end | seconds |", "|---|---|---|"]
    for name, r in res["models"].items():
        lines.append(f"| {name} | {r['accuracy'][0]:.3f} -> {r['final']:.3f} | {r['seconds']:.1f} |")
    lines += ["", footer(res)]
    if res["plot"]:
        lines += ["", f"![accuracy]({res['plot']})"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def plot(res, path):
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, r in res["models"].items():
        ax.plot(r["step"], r["accuracy"], label=name)
    ax.axhline(1 / res["config"]["symbols"], color="grey", lw=0.8, ls="--", label="chance")
    ax.set(xlabel="step", ylabel="held-out per-step accuracy", title="neighbour-sum tagging")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (tiny sizes, few steps)")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args(argv)
    s = dict(SETTINGS["quick" if args.quick else "full"])
    if args.steps:
        s["steps"] = args.steps
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    test = synthetic.neighbour_sum_tags(s["test"], s["min_len"], s["max_len"], s["symbols"], rng=7)
    models = {"unidirectional GRU (jrnn.fit)": train_unidirectional(s, test),
              "bidirectional GRU, 1 layer": train_bidirectional(s, test, 1),
              "bidirectional GRU, 2 layers": train_bidirectional(s, test, 2)}
    for name, r in models.items():
        print(f"{name:32s} {r['accuracy'][0]:.3f} -> {r['final']:.3f} ({r['seconds']:.1f} s)",
              file=sys.stderr)
    res = {"config": {**s, "quick": args.quick}, "models": models,
           "total_seconds": time.perf_counter() - t0,
           "machine": machine()}
    save(res, args.out, "tagging.png", plot, write_md)
    print(f"total {res['total_seconds']:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
