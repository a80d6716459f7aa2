"""Reproduce d2l's character-level language models on *The Time Machine*.

d2l (PyTorch edition, d2l 0.17 / zh 2.0.0, sections 8.5, 8.6, 9.1-9.3) trains
on the first 10,000 characters (28-symbol vocabulary), batch 32, 35 steps,
SGD, gradient clipping 1, 500 epochs, sequential partitioning with the hidden
state carried (detached) across minibatches. We do the same with jrnn's one
train step, hold out the last 10% of those characters for a validation
perplexity (d2l reports training perplexity only), and print our numbers
beside the book's. The book's tokens/s are from a GPU (``cuda:0``); ours are
from whatever this runs on (named in the output).

Usage::

    JRNN_DATA_DIR=../shared/data python experiments/d2l_timemachine.py [--epochs 500] [--only lstm,gru]

Writes ``experiments/results/d2l_timemachine/{results.json, results.md, perplexity.png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time

import jax
import numpy as np

import jrnn
from jrnn import data

# (name, section, cell factory, lr, sampling, book perplexity, book tokens/s on cuda:0)
# Book figures: d2l zh 2.0.0 (PyTorch, d2l 0.17 code), sections 8.5-9.3.
RUNS = [
    ("rnn-scratch", "8.5", lambda: jrnn.elman(512, init="d2l"), 1.0, "sequential", 1.0, 67212.6),
    ("rnn-scratch-random", "8.5", lambda: jrnn.elman(512, init="d2l"), 1.0, "random", 1.5, 65222.3),
    ("rnn-concise", "8.6", lambda: jrnn.elman(256), 1.0, "sequential", 1.3, 404413.8),
    ("gru", "9.1", lambda: jrnn.gru(256), 1.0, "sequential", 1.0, 109423.8),
    ("lstm", "9.2", lambda: jrnn.lstm(256), 1.0, "sequential", 1.1, 234815.0),
    ("deep-lstm", "9.3", lambda: jrnn.stack([jrnn.lstm(256), jrnn.lstm(256)]), 2.0, "sequential", 1.0, 186005.7),
]


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
    except Exception:
        return platform.processor() or "unknown"


def load_data(max_tokens=10_000):
    """``(train, val, vocab)``: the book's first ``max_tokens`` characters, the last 10% held out."""
    corpus, vocab = data.load_corpus(data.time_machine(), max_tokens=max_tokens)
    train, val = data.split(corpus, 0.1)
    return train, val, vocab


def run_one(name, cell_fn, lr, sampling, train, val, vocab, epochs, seed, regularise=None):
    """Train one model with d2l's setting through ``jrnn.fit``; ``regularise`` (``model ->
    model``, e.g. ``lambda m: jrnn.regularise.dropout(m, weight_drop=0.5)``) wraps it."""
    B, T = 32, 35
    model = jrnn.language_model(cell_fn(), len(vocab))
    if regularise is not None:
        model = regularise(model)
    opt = jrnn.make_optimizer("sgd", lr, 1.0)
    steps = data.num_batches(len(train), B, T, sampling)
    # validation: the held-out tail read as one sequence (too short for 32 x 35 batches)
    val_batch = jrnn.Batch(val[:-1, None], val[1:, None])  # time-major [T, 1]
    t0 = time.perf_counter()
    loop = jrnn.LoopConfig(epochs=epochs, seed=seed, steps_per_epoch=steps, log_every=10_000)
    res = jrnn.fit(model, opt, lambda ep: data.batches(train, B, T, sampling, seed=seed, epoch=ep),
                   batch_size=B, carry_over=sampling == "sequential",
                   validate=jrnn.held_out(model, lambda: [val_batch]), config=loop)
    wall = time.perf_counter() - t0
    tr = [h for h in res.history if "train_ppl" in h]
    va = [h for h in res.history if "val_ppl" in h]
    tps = float(np.median([h["tokens_per_s"] for h in tr[1:]])) if len(tr) > 1 else tr[0]["tokens_per_s"]
    prefix = vocab.encode("time traveller")
    sample = vocab.decode(jrnn.predict(model, res.state.params, prefix, 50))
    return {
        "train_ppl": tr[-1]["train_ppl"], "val_ppl": va[-1]["val_ppl"],
        "best_val_ppl": min(h["val_ppl"] for h in va), "tokens_per_s": tps, "seconds": wall,
        "sample": sample, "curve": {"epoch": [h["epoch"] + 1 for h in tr],
                                    "train_ppl": [h["train_ppl"] for h in tr],
                                    "val_ppl": [h["val_ppl"] for h in va]},
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=500)
    ap.add_argument("--only", default="", help="comma-separated run names (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "d2l_timemachine"))
    args = ap.parse_args(argv)
    jrnn.reuse_host_memory()  # before any JAX computation

    train, val, vocab = load_data()
    runs = [r for r in RUNS if not args.only or r[0] in args.only.split(",")]
    env = {"cpu": cpu_name(), "device": str(jax.devices()[0]), "jax": jax.__version__,
           "date": time.strftime("%Y-%m-%d"), "epochs": args.epochs,
           "data": f"first 10,000 chars of The Time Machine, vocab {len(vocab)}; "
                   f"train {len(train)} / validation {len(val)} (last 10%)"}
    print(f"{env['data']}; {env['device']} ({env['cpu']}); {args.epochs} epochs", flush=True)
    results = {}
    for name, sec, cell_fn, lr, sampling, book_ppl, book_tps in runs:
        print(f"== {name} (d2l {sec}): lr {lr}, {sampling} sampling", flush=True)
        r = run_one(name, cell_fn, lr, sampling, train, val, vocab, args.epochs, args.seed)
        r.update(section=sec, lr=lr, sampling=sampling, book_ppl=book_ppl, book_tokens_per_s=book_tps)
        results[name] = r
        print(f"   train perplexity {r['train_ppl']:.2f} (book {book_ppl}), validation {r['val_ppl']:.2f} "
              f"(best {r['best_val_ppl']:.2f}); {r['tokens_per_s']:,.0f} tokens/s "
              f"(book {book_tps:,.0f} on cuda:0); {r['seconds']:.0f} s; {r['sample']!r}", flush=True)

    os.makedirs(args.out, exist_ok=True)
    json.dump({"env": env, "results": results}, open(os.path.join(args.out, "results.json"), "w"), indent=1)
    lines = [f"Measured {env['date']} on {env['cpu']} ({env['device']}), jax {env['jax']}; {env['data']}; "
             f"batch 32, 35 steps, SGD, clip 1, {args.epochs} epochs.", "",
             "| model (d2l section) | lr | train ppl (jrnn) | train ppl (book) | val ppl (jrnn, last / best) "
             "| tokens/s (jrnn, CPU) | tokens/s (book, GPU) |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} ({r['section']}) | {r['lr']:g} | {r['train_ppl']:.2f} | {r['book_ppl']} | "
                     f"{r['val_ppl']:.2f} / {r['best_val_ppl']:.2f} | {r['tokens_per_s']:,.0f} | "
                     f"{r['book_tokens_per_s']:,.0f} |")
    table = "\n".join(lines)
    open(os.path.join(args.out, "results.md"), "w").write(table + "\n")
    print("\n" + table)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
        for name, r in results.items():
            c = r["curve"]
            axes[0].plot(c["epoch"], c["train_ppl"], label=name)
            axes[1].plot(range(1, len(c["val_ppl"]) + 1), c["val_ppl"], label=name)
        for ax, t in zip(axes, ("training perplexity", "validation perplexity (held-out 10%)")):
            ax.set_yscale("log"); ax.set_xlabel("epoch"); ax.set_title(t); ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "perplexity.png"), dpi=90)
    except ImportError:
        pass


if __name__ == "__main__":
    main()
