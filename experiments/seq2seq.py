#!/usr/bin/env python
"""Unaligned sequence to sequence: an encoder-decoder on variable-length reversal (or sorting).

Usage::

    python experiments/seq2seq.py                      # full setting (a few minutes on 2 cores)
    python experiments/seq2seq.py --quick --out /tmp/s2s   # smoke run (under a minute)

The model is :func:`jrnn.seq2seq.encoder_decoder` on GRU cells: the encoder
reads the source, its final state is the decoder's initial state (the
context vector, no attention), and the decoder is trained with teacher
forcing on the packed stream ``[source; <bos>; target]`` through
``jrnn.fit`` (full BPTT; every stream padded to one length: one compile).
The test set has ``--test-per-length`` fresh examples per length, including
lengths beyond the longest trained on; each is decoded greedily and by beam
search. Measured per length: exact-sequence accuracy (every symbol and the
length right) and per-token accuracy (position-wise matches over the true
length).

Writes ``results.json``, ``results.md`` and ``seq2seq.png`` to ``--out``
(default ``results/seq2seq`` beside this script).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

import jrnn
from jrnn import seq2seq as s2s
from jrnn.data import synthetic
from provenance import footer, machine, pyplot, save  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "seq2seq")
TASKS = {"reversal": synthetic.reversal, "sorting": synthetic.sorting}

SETTINGS = {
    "quick": {"symbols": 5, "min_len": 1, "max_len": 4, "extra_len": 1, "hidden": 48, "steps": 500,
              "batch": 32, "lr": 1e-2, "beam": 3, "test_per_length": 50, "eval_every": 100},
    "full": {"symbols": 8, "min_len": 1, "max_len": 8, "extra_len": 2, "hidden": 128, "steps": 3000,
             "batch": 64, "lr": 3e-3, "beam": 4, "test_per_length": 200, "eval_every": 250},
}


def accuracy_by_length(decoded, targets, lengths):
    """``{length: (exact, per_token)}``: exact-sequence and per-token accuracy, on the host."""
    sym, dl = np.asarray(decoded.symbols), np.asarray(decoded.lengths)
    out = {}
    for L in sorted({int(x) for x in lengths}):
        cols = np.flatnonzero(lengths == L)
        hits = np.zeros((L, len(cols)), bool)
        n = min(L, sym.shape[0])
        hits[:n] = sym[:n, cols] == targets[:n, cols]
        exact = hits.all(0) & (dl[cols] == L)
        out[L] = (float(exact.mean()), float(hits.mean()))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (tiny sizes, few steps)")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--task", default="reversal", choices=sorted(TASKS))
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--cell", default="gru", choices=sorted(jrnn.CELLS))
    args = ap.parse_args(argv)
    s = dict(SETTINGS["quick" if args.quick else "full"])
    if args.steps:
        s["steps"] = args.steps
    task = TASKS[args.task]
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    ed = s2s.encoder_decoder(jrnn.by_name(args.cell, s["hidden"]), s["symbols"])
    T = 2 * s["max_len"] + 1  # the longest packed pair: source, <bos>, target

    def batches(epoch):
        for i in range(s["steps"]):
            rng = np.random.default_rng([0, epoch, i])
            yield s2s.stream(ed, *task(s["batch"], s["min_len"], s["max_len"], s["symbols"], rng=rng),
                             num_steps=T)

    # a fixed validation batch: its teacher-forced loss is the learning curve
    val = s2s.stream(ed, *task(256, s["min_len"], s["max_len"], s["symbols"], rng=99), num_steps=T)
    val_loss = jrnn.held_out(ed.model, lambda: [val], carry_over=False)
    res_fit = jrnn.fit(ed.model, jrnn.make_optimizer("adam", lr=s["lr"], clip=1.0), batches,
                       batch_size=s["batch"], carry_over=False, validate=val_loss,
                       config=jrnn.LoopConfig(epochs=1, progress=False, quiet=True,
                                              log_every=s["eval_every"], eval_every=s["eval_every"]))
    train_seconds = time.perf_counter() - t0
    params = res_fit.state.params
    curve = [(int(r["step"]), float(r["val_loss"])) for r in res_fit.history if "val_loss" in r]

    # test: fresh examples of each length, the trained lengths and a few longer ones
    top = s["max_len"] + s["extra_len"]
    srcs, tgts, lens = [], [], []
    for L in range(s["min_len"], top + 1):
        src, n, tgt, _ = task(s["test_per_length"], L, L, s["symbols"], rng=1000 + L)
        pad = np.zeros((top - L, src.shape[1]), np.int32)
        srcs.append(np.concatenate([src, pad]))
        tgts.append(np.concatenate([tgt, pad]))
        lens.append(n)
    src, tgt, n = np.concatenate(srcs, 1), np.concatenate(tgts, 1), np.concatenate(lens)
    max_out = top + 1
    decoders = {"greedy": lambda: s2s.greedy(ed, params, src, n, max_out),
                f"beam {s['beam']}": lambda: s2s.beam_search(ed, params, src, n, max_out, s["beam"])}
    table, seconds = {}, {}
    for name, run in decoders.items():
        t1 = time.perf_counter()
        d = jax.block_until_ready(run())
        seconds[name] = time.perf_counter() - t1
        table[name] = accuracy_by_length(d, tgt, n)
        table[name + " mean log p"] = float(np.mean(np.asarray(d.log_prob)))
    res = {"config": {**s, "task": args.task, "cell": args.cell, "quick": args.quick,
                      "stream_T": T, "test_max_len": top},
           "curve": curve, "train_seconds": train_seconds, "decode_seconds": seconds,
           "by_length": {k: {str(L): v for L, v in t.items()} for k, t in table.items()
                         if isinstance(t, dict)},
           "mean_log_prob": {k: table[k + " mean log p"] for k in decoders},
           "total_seconds": time.perf_counter() - t0,
           "machine": machine()}
    save(res, args.out, "seq2seq.png", plot, write_md)
    for k, t in res["by_length"].items():
        print(k, {L: f"{e:.2f}/{p:.2f}" for L, (e, p) in t.items()}, file=sys.stderr)
    print(f"train {train_seconds:.1f} s, total {res['total_seconds']:.1f} s", file=sys.stderr)
    return 0


def write_md(res, path):
    c = res["config"]
    decs = list(res["by_length"])
    lines = [f"# Encoder-decoder on {c['task']}", "",
             f"{c['cell'].upper()}-{c['hidden']} encoder and decoder (context vector = the "
             f"encoder's final state, no attention), {c['symbols']} symbols, trained on lengths "
             f"{c['min_len']}..{c['max_len']} with teacher forcing through jrnn.fit (full BPTT, "
             f"Adam lr {c['lr']:g}, {c['steps']} steps of {c['batch']}; {res['train_seconds']:.0f} s). "
             f"Test: {c['test_per_length']} fresh examples per length; lengths above "
             f"{c['max_len']} were never seen in training. Cells: exact-sequence accuracy / "
             f"per-token accuracy.", "",
             "| length | " + " | ".join(decs) + " |", "|---|" + "---|" * len(decs)]
    for L in res["by_length"][decs[0]]:
        seen = "" if int(L) <= c["max_len"] else " (unseen)"
        cells = [f"{res['by_length'][d][L][0]:.2f} / {res['by_length'][d][L][1]:.2f}" for d in decs]
        lines.append(f"| {L}{seen} | " + " | ".join(cells) + " |")
    lines += ["", "Mean log-probability of the decoded sequences: " + ", ".join(
        f"{k} {v:.3f}" for k, v in res["mean_log_prob"].items()) + " (beam search never scores "
        "below greedy on the same example).", "",
        footer(res)]
    if res["plot"]:
        lines += ["", f"![accuracy by length]({res['plot']})"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def plot(res, path):
    plt = pyplot()
    if plt is None:
        return False
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 3.8))
    steps, losses = zip(*res["curve"]) if res["curve"] else ((), ())
    a0.plot(steps, losses)
    a0.set_xlabel("step")
    a0.set_ylabel("validation loss (teacher forced, nats/token)")
    a0.set_yscale("log")
    for d, t in res["by_length"].items():
        Ls = [int(L) for L in t]
        a1.plot(Ls, [t[L][0] for L in t], "o-", label=f"{d}: exact")
        a1.plot(Ls, [t[L][1] for L in t], "s--", label=f"{d}: per token")
    a1.axvline(res["config"]["max_len"] + 0.5, color="grey", lw=0.8)
    a1.set_xlabel("length")
    a1.set_ylabel("accuracy")
    a1.legend(fontsize=7)
    fig.suptitle(f"encoder-decoder on {res['config']['task']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


if __name__ == "__main__":
    sys.exit(main())
