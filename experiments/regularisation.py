#!/usr/bin/env python
"""Dropout against the d2l Time Machine overfitting (issue 17, "Measured").

``experiments/d2l_timemachine.py`` shows every model overfitting the book's
9,000 training characters: validation perplexity bottoms out near 8.7-9.0
around epoch 150 and climbs to 56-78 by epoch 500. Here the same setting
(its data, its models, its ``run_one`` through ``jrnn.fit``, validation on the
held-out 10% at every epoch end) is trained with and without each regulariser
of :mod:`jrnn.regularise`, one at a time at a sensible rate and in
combination. Goals: final validation perplexity within 20% of the best, and a
best below the unregularised GRU's 8.71.

Training perplexity is the train step's own (with dropout on, so it
overstates what the trained model does on its training data).

Usage::

    JRNN_DATA_DIR=../shared/data python experiments/regularisation.py [--only gru,gru-wd0.5] [--quick]

Runs are added to (or replace their entry in) ``<out>/results.json``, so
``--only`` reruns pieces; ``results.md`` and ``validation.png`` are rebuilt
from every stored run of the same setting.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import time

import d2l_timemachine as d2l  # this directory is on sys.path (script or pytest rootdir-less import)
import jax
import numpy as np

import jrnn

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "regularisation")

# model name -> (cell factory of the hidden size, d2l's lr)
MODELS = {
    "gru": (lambda H: jrnn.gru(H), 1.0),
    "lstm": (lambda H: jrnn.lstm(H), 1.0),
    "deep-lstm": (lambda H: jrnn.stack([jrnn.lstm(H), jrnn.lstm(H)]), 2.0),
}

# (run name, model, jrnn.regularise.Dropout fields, hidden size, lr (None: the model's))
RUNS = [
    ("gru", "gru", {}, 256, None),
    ("gru-wd0.5", "gru", {"weight_drop": 0.5}, 256, None),
    ("gru-out0.3", "gru", {"output": 0.3}, 256, None),
    ("gru-rec0.25", "gru", {"recurrent": 0.25}, 256, None),
    ("gru-emb0.1", "gru", {"embedding": 0.1}, 256, None),
    ("gru-wd0.5-out0.3", "gru", {"weight_drop": 0.5, "output": 0.3}, 256, None),
    ("gru-wd0.7", "gru", {"weight_drop": 0.7}, 256, None),
    ("gru-wd0.7-out0.3", "gru", {"weight_drop": 0.7, "output": 0.3}, 256, None),
    ("gru512-wd0.7-out0.3", "gru", {"weight_drop": 0.7, "output": 0.3}, 512, None),
    ("lstm", "lstm", {}, 256, None),
    ("lstm-rec0.25", "lstm", {"recurrent": 0.25}, 256, None),
    ("lstm-wd0.7-out0.3", "lstm", {"weight_drop": 0.7, "output": 0.3}, 256, None),
    ("deep-lstm", "deep-lstm", {}, 256, None),
    ("deep-lstm-wd0.5-btw0.3-out0.3", "deep-lstm",
     {"weight_drop": 0.5, "between": 0.3, "output": 0.3}, 256, None),
    ("deep-lstm-wd0.7-btw0.3-out0.3", "deep-lstm",
     {"weight_drop": 0.7, "between": 0.3, "output": 0.3}, 256, None),
]
QUICK_RUNS = [("gru", "gru", {}, 32, None),
              ("gru-wd0.5-out0.3", "gru", {"weight_drop": 0.5, "output": 0.3}, 32, None)]


def summarise(curve) -> dict:
    """Best / final validation perplexity, the epoch of the best (1-based) and final / best."""
    v = np.asarray(curve["val_ppl"])
    best = int(np.argmin(v))
    return {"best_val_ppl": float(v[best]), "best_epoch": best + 1, "val_ppl": float(v[-1]),
            "final_over_best": float(v[-1] / v[best])}


def table(runs: dict, env: dict) -> str:
    head = (f"Measured {env['date']} on {env['cpu']} ({env['device']}), jax {env['jax']}; {env['data']}; "
            f"batch 32, 35 steps, SGD, clip 1, sequential batches with the state carried, "
            f"{env['epochs']} epochs, validation at every epoch end. Goals: final / best <= 1.20 "
            f"and best < 8.71 (today's GRU).")
    columns = ("| run | model | dropout | lr | best val ppl (epoch) | final val ppl | final / best "
               "| train ppl (dropout on) | s |")
    lines = [head, "", columns, "|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        rates = ", ".join(f"{k} {v:g}" for k, v in r["dropout"].items()) or "none"
        if "diverged" in r:
            lines.append(f"| {name} | {r['model']}-{r['hidden']} | {rates} | {r['lr']:g} | diverged "
                         f"(non-finite loss at step {r['diverged_step']}) | | | | {r['seconds']:.0f} |")
            continue
        lines.append(f"| {name} | {r['model']}-{r['hidden']} | {rates} | {r['lr']:g} | "
                     f"{r['best_val_ppl']:.2f} ({r['best_epoch']}) | {r['val_ppl']:.2f} | "
                     f"{r['final_over_best']:.2f} | {r['train_ppl']:.2f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def plot(runs: dict, path: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    models = list(dict.fromkeys(r["model"] for r in runs.values()))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.8), sharey=True, squeeze=False)
    for ax, m in zip(axes[0], models):
        for name, r in runs.items():
            if r["model"] == m and "curve" in r:
                v = r["curve"]["val_ppl"]
                ax.plot(range(1, len(v) + 1), v, label=name, lw=1.2 if r["dropout"] else 2.0)
        ax.axhline(8.71, color="k", ls=":", lw=0.8)
        ax.set_yscale("log"); ax.set_xlabel("epoch"); ax.set_title(f"{m}: validation perplexity")
        ax.grid(alpha=0.3); ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=None, help="default 500 (--quick: 4)")
    ap.add_argument("--only", default="", help="comma-separated run names (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 2 GRU-32 runs on the first 2,000 characters")
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    epochs = args.epochs or (4 if args.quick else 500)
    jrnn.reuse_host_memory()  # before any JAX computation

    all_runs = QUICK_RUNS if args.quick else RUNS
    only = set(filter(None, args.only.split(",")))
    unknown = only - {r[0] for r in all_runs}
    if unknown:
        raise SystemExit(f"unknown runs {sorted(unknown)}; known: {[r[0] for r in all_runs]}")
    n_chars = 2_000 if args.quick else 10_000
    train, val, vocab = d2l.load_data(n_chars)
    env = {"cpu": d2l.cpu_name(), "device": str(jax.devices()[0]), "jax": jax.__version__,
           "date": time.strftime("%Y-%m-%d"), "epochs": epochs, "quick": args.quick,
           "data": f"first {n_chars:,} chars of The Time Machine, vocab {len(vocab)}; "
                   f"train {len(train)} / validation {len(val)} (last 10%)"}
    os.makedirs(args.out, exist_ok=True)
    path = pathlib.Path(args.out) / "results.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    same = {k: stored["env"].get(k) for k in ("epochs", "quick", "data")} == \
        {k: env[k] for k in ("epochs", "quick", "data")} if stored else False
    runs = dict(stored["runs"]) if same else {}  # only runs of the same setting share a table

    print(f"{env['data']}; {env['device']} ({env['cpu']}); {epochs} epochs", flush=True)
    for name, model, rates, hidden, lr in all_runs:
        if only and name not in only:
            continue
        cell_fn, model_lr = MODELS[model]
        lr = model_lr if lr is None else lr
        reg = (lambda m, rates=rates: jrnn.regularise.dropout(m, **rates)) if rates else None
        print(f"== {name}: {model}-{hidden}, lr {lr:g}, dropout {rates or 'none'}", flush=True)
        t0 = time.perf_counter()
        try:
            r = d2l.run_one(name, functools.partial(cell_fn, hidden), lr, "sequential", train, val,
                            vocab, epochs, args.seed, regularise=reg)
            r.update(summarise(r["curve"]))
        except jrnn.NonFiniteError as e:  # a diverging setting is a result, not a crash of the sweep
            r = {"diverged": str(e), "diverged_step": e.step, "seconds": time.perf_counter() - t0}
        r.update(model=model, hidden=hidden, lr=lr, dropout=rates)
        runs[name] = r
        if "diverged" in r:
            print(f"   diverged: {r['diverged']}", flush=True)
        else:
            print(f"   best val {r['best_val_ppl']:.2f} (epoch {r['best_epoch']}), final {r['val_ppl']:.2f} "
                  f"(x{r['final_over_best']:.2f}), train {r['train_ppl']:.2f}; {r['seconds']:.0f} s; "
                  f"{r['sample']!r}", flush=True)
        # written after every run: a long sweep keeps what it has measured
        order = [n for n, *_ in all_runs if n in runs]
        runs = {n: runs[n] for n in order}
        path.write_text(json.dumps({"env": env, "runs": runs}, indent=1))

    md = table(runs, env)
    (pathlib.Path(args.out) / "results.md").write_text(md + "\n")
    plot(runs, os.path.join(args.out, "validation.png"))
    print("\n" + md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
