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

``--corpus full``: the larger corpus, the whole Time Machine (d2l-preprocessed,
~170k characters, the last 10% held out), a 2-layer LSTM-256 (B 32, T 35,
sequential batches with the state carried, Adam 2e-3, clip 1: SGD needs far
more epochs than the budget here), with and without the main regularisers;
validation perplexity over the held-out tail (32 x 35 sequential batches) at
every epoch end, and the train step's tokens/s, so each regulariser's cost
shows beside its effect. Epochs (``--epochs``, default 10) are scaled so the
whole table takes about 25 minutes on 2 loaded CPU cores (its first five runs
took 17 minutes at load 8-11, the sixth 8 more); it goes to ``<out>/full/``.

Usage::

    JRNN_DATA_DIR=../shared/data python experiments/regularisation.py [--only gru,gru-wd0.5] [--quick]
    JRNN_DATA_DIR=../shared/data python experiments/regularisation.py --corpus full [--epochs 10]

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
import provenance

import jrnn
from jrnn import data

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
    ("lstm-zo0.05-0.5", "lstm", {"zoneout": 0.05, "zoneout_c": 0.5}, 256, None),
    ("deep-lstm", "deep-lstm", {}, 256, None),
    ("deep-lstm-wd0.5-btw0.3-out0.3", "deep-lstm",
     {"weight_drop": 0.5, "between": 0.3, "output": 0.3}, 256, None),
    ("deep-lstm-wd0.7-btw0.3-out0.3", "deep-lstm",
     {"weight_drop": 0.7, "between": 0.3, "output": 0.3}, 256, None),
]
QUICK_RUNS = [("gru", "gru", {}, 32, None),
              ("gru-wd0.5-out0.3", "gru", {"weight_drop": 0.5, "output": 0.3}, 32, None)]

# --corpus full: (run name, jrnn.regularise.Dropout fields) for a 2-layer LSTM-256. Zoneout at
# Krueger et al.'s character-level rates (c 0.5, h 0.05). Two combinations: the d2l table's best
# kind (weight drop + between + output), and the two best single regularisers of this table
FULL_RUNS = [
    ("none", {}),
    ("between0.3", {"between": 0.3}),
    ("wd0.5-out0.3", {"weight_drop": 0.5, "output": 0.3}),
    ("zoneout", {"zoneout": 0.05, "zoneout_c": 0.5}),
    ("wd0.5-btw0.3-out0.3", {"weight_drop": 0.5, "between": 0.3, "output": 0.3}),
    ("btw0.3-zoneout", {"between": 0.3, "zoneout": 0.05, "zoneout_c": 0.5}),
]
FULL_QUICK_RUNS = [("none", {}), ("zoneout", {"zoneout": 0.05, "zoneout_c": 0.5})]
FULL_LR, FULL_B, FULL_T = 2e-3, 32, 35


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
    ap.add_argument("--corpus", choices=("d2l", "full"), default="d2l",
                    help="d2l: the book's first 10,000 characters (default); full: the whole Time "
                         "Machine, 2-layer LSTM-256 (written to <out>/full)")
    args = ap.parse_args(argv)
    if args.corpus == "full":
        return main_full(args)
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


def run_full(rates: dict, hidden: int, train, val, vocab, epochs: int, seed: int) -> dict:
    """One 2-layer LSTM of the larger-corpus table through ``jrnn.fit``: its curves, best / final
    validation perplexity and the median tokens/s of its epochs (the first, compiling, left out)."""
    model = jrnn.language_model(jrnn.stack([jrnn.lstm(hidden), jrnn.lstm(hidden)]), len(vocab))
    if rates:
        model = jrnn.regularise.dropout(model, **rates)
    B, T = FULL_B, FULL_T
    loop = jrnn.LoopConfig(epochs=epochs, seed=seed, steps_per_epoch=data.num_batches(
        len(train), B, T, "sequential"), log_every=10_000)
    vb = min(B, (len(val) - T - 1) // T)  # the held-out tail in B rows (fewer for --quick)
    t0 = time.perf_counter()
    res = jrnn.fit(model, jrnn.make_optimizer("adam", FULL_LR, 1.0),
                   lambda ep: data.batches(train, B, T, "sequential", seed=seed, epoch=ep),
                   batch_size=B, validate=jrnn.held_out(model, lambda: data.sequential_batches(
                       val, vb, T, 0)), config=loop)
    wall = time.perf_counter() - t0
    tr = [h for h in res.history if "train_ppl" in h]
    va = [h for h in res.history if "val_ppl" in h]
    tps = [h["tokens_per_s"] for h in tr]
    r = {"train_ppl": tr[-1]["train_ppl"], "tokens_per_s": float(np.median(tps[1:] or tps)),
         "seconds": wall, "sample": vocab.decode(jrnn.predict(model, res.state.params,
                                                               vocab.encode("time traveller"), 50)),
         "curve": {"epoch": [h["epoch"] + 1 for h in tr], "train_ppl": [h["train_ppl"] for h in tr],
                   "val_ppl": [h["val_ppl"] for h in va]}}
    r.update(summarise(r["curve"]))
    return r


def full_table(res: dict) -> str:
    env, runs = res["env"], res["runs"]
    head = (f"Measured {env['date']}; {env['data']}; 2-layer LSTM-{env['hidden']}, batch {FULL_B}, "
            f"{FULL_T} steps, sequential batches with the state carried, Adam {FULL_LR:g}, clip 1, "
            f"{env['epochs']} epochs, validation at every epoch end. tokens/s: the train step's "
            f"(median over epochs 2..), one run each, one after another on the machine below, "
            f"whose load moves them by up to 2x (benchmarks/regularise_cost.py interleaves the "
            f"options for the ratios).")
    lines = [head, "", "| run | dropout | best val ppl (epoch) | final val ppl | final / best | "
             "train ppl (dropout on) | tokens/s | s |", "|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        rates = ", ".join(f"{k} {v:g}" for k, v in r["dropout"].items()) or "none"
        lines.append(f"| {name} | {rates} | {r['best_val_ppl']:.2f} ({r['best_epoch']}) | "
                     f"{r['val_ppl']:.2f} | {r['final_over_best']:.2f} | {r['train_ppl']:.2f} | "
                     f"{r['tokens_per_s']:,.0f} | {r['seconds']:.0f} |")
    return "\n".join(lines + ["", provenance.footer(res)])


def full_plot(res: dict, path: str) -> bool:
    plt = provenance.pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in res["runs"].items():
        v = r["curve"]["val_ppl"]
        ax.plot(range(1, len(v) + 1), v, marker=".", label=name, lw=2.0 if not r["dropout"] else 1.2)
    ax.set_xlabel("epoch"); ax.set_ylabel("validation perplexity")
    ax.set_title(f"full Time Machine, 2-layer LSTM-{res['env']['hidden']}")
    ax.grid(alpha=0.3); ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def main_full(args) -> int:
    """``--corpus full``: the larger-corpus table (module docstring)."""
    epochs = args.epochs or (2 if args.quick else 10)
    hidden = 16 if args.quick else 256
    all_runs = FULL_QUICK_RUNS if args.quick else FULL_RUNS
    only = set(filter(None, args.only.split(",")))
    unknown = only - {r[0] for r in all_runs}
    if unknown:
        raise SystemExit(f"unknown runs {sorted(unknown)}; known: {[r[0] for r in all_runs]}")
    jrnn.reuse_host_memory()
    corpus, vocab = data.load_corpus(data.time_machine(), max_tokens=4_000 if args.quick else -1)
    train, val = data.split(corpus, 0.1)
    env = {"date": time.strftime("%Y-%m-%d"), "epochs": epochs, "hidden": hidden, "quick": args.quick,
           "data": f"{'first 4,000 chars of ' if args.quick else 'the whole '}The Time Machine "
                   f"(d2l-preprocessed, {len(corpus):,} chars, vocab {len(vocab)}); train {len(train):,} "
                   f"/ validation {len(val):,} (last 10%)"}
    out = os.path.join(args.out, "full")
    os.makedirs(out, exist_ok=True)
    path = pathlib.Path(out) / "results.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    same = bool(stored) and {k: stored["env"].get(k) for k in env if k != "date"} == \
        {k: v for k, v in env.items() if k != "date"}
    # a rerun of some runs (--only) adds its time to the stored runs'; the machine is this run's
    t_before = stored.get("total_seconds", 0.0) if same else 0.0
    res = {"env": env, "machine": provenance.machine(),
           "runs": dict(stored["runs"]) if same else {}, "total_seconds": t_before}
    print(f"{env['data']}; {res['machine']['cpu']} (load {res['machine']['load']:.1f}); "
          f"{epochs} epochs", flush=True)
    t_all = time.perf_counter()
    for name, rates in all_runs:
        if only and name not in only:
            continue
        print(f"== {name}: dropout {rates or 'none'}", flush=True)
        r = run_full(rates, hidden, train, val, vocab, epochs, args.seed)
        r["dropout"] = rates
        res["runs"][name] = r
        print(f"   best val {r['best_val_ppl']:.2f} (epoch {r['best_epoch']}), final {r['val_ppl']:.2f}; "
              f"{r['tokens_per_s']:,.0f} tokens/s; {r['seconds']:.0f} s; {r['sample']!r}", flush=True)
        res["runs"] = {n: res["runs"][n] for n, _ in all_runs if n in res["runs"]}
        res["total_seconds"] = t_before + time.perf_counter() - t_all
        path.write_text(json.dumps(res, indent=1))  # after every run: a long sweep keeps its part
    res["total_seconds"] = t_before + time.perf_counter() - t_all
    provenance.save(res, out, "validation.png", full_plot,
                    lambda r, p: pathlib.Path(p).write_text(full_table(r) + "\n"))
    print("\n" + full_table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
