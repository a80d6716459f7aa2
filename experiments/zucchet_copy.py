#!/usr/bin/env python
"""Zucchet et al. 2023's copy task: exact online learning (diag-RTRL) vs 1-step truncation,
SnAp-1 and full BPTT, scaled down to a loaded 2-core CPU.

Usage::

    python experiments/zucchet_copy.py                        # the table (10 min on 2 cores)
    python experiments/zucchet_copy.py --quick --out /tmp/zc   # smoke run (< 40 s)

The task (as in the paper's code, ``online_lru/dataloaders/copy.py``, ``copy-pad-classification``
with ``pattern_length=20``; its padding stays at the class default 7): a pattern of 20 steps of
7 random bits, 7 blank steps, a stop token (the 8th input channel) and 20 blank steps in which the
net must output the pattern, T = 2 * 20 + 7 + 1 = 48. Loss: the mean over the 7 bits of the
2-class cross-entropy (here: sigmoid BCE) on the 20 recall steps; measure: per-bit accuracy on
those steps (chance 0.5), as the paper's ``compute_accuracies``.

Rows (estimator on cell): ``full`` (BPTT), ``diag-rtrl`` (exact online, O(P) memory) and
``truncated:1`` on a one-layer LRU (:func:`jrnn.lru.lru`); ``snap1`` and ``full`` on a one-layer GRU
(SnAp-1 needs a dense cell; the paper's SnAp-1 row is a GRU too); a 2-layer LRU stack (GELU
outputs) with ``diag-rtrl:spatial`` (Zucchet et al.'s approximation: exact within each layer, errors
cross layers within a step only), ``truncated:1`` and ``full``.
Every run trains through :func:`jrnn.fit` with Adam, a fresh batch each update, a fixed test set.

Scaled down from the paper (4 layers of LRU with d_model 128 / N 64 complex, GLU, dropout 0.1,
20,000 sequences x 25 epochs at batch 50 = 10,000 updates, a learning-rate sweep, 3 seeds): one
layer (N, H below), no GLU/norm/dropout, ``--updates`` updates at batch 32 and one learning
rate per cell, seeds as given.

Writes ``results.json``, ``results.md`` and ``accuracy.png`` to ``--out`` (default
``results/zucchet_copy`` beside this script).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jrnn
from jrnn import compare, grads
from jrnn import lru as L
from jrnn.grads import diagonal  # noqa: F401  (registers diag-rtrl)
from provenance import footer, machine, pyplot, save  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "zucchet_copy")
BITS = 7


def copy_batch(batch_size: int, pattern: int, pad: int, rng) -> jrnn.Batch:
    """Zucchet et al.'s padded copy task, time-major.

    Returns a :class:`jrnn.Batch`: inputs float32 ``[T, B, BITS + 1]`` (the pattern's bits, then
    the stop token on the last channel at step ``pattern + pad``), targets float32
    ``[T, B, BITS]`` (the pattern, on the last ``pattern`` steps), mask ``[T, B]`` (those steps).
    """
    T = 2 * pattern + pad + 1
    bits = rng.integers(0, 2, size=(pattern, batch_size, BITS)).astype(np.float32)
    x = np.zeros((T, batch_size, BITS + 1), np.float32)
    x[:pattern, :, :BITS] = bits
    x[pattern + pad, :, BITS] = 1.0
    y = np.zeros((T, batch_size, BITS), np.float32)
    y[T - pattern:] = bits
    mask = np.zeros((T, batch_size), np.float32)
    mask[T - pattern:] = 1.0
    return jrnn.Batch(x, y, mask)


def bits_model(cell) -> jrnn.Model:
    """The cell, a dense readout to 7 logits, and the mean per-bit BCE per position."""
    def init(key):
        kc, kh = jax.random.split(key)
        p = cell.init(kc, BITS + 1)
        s = 1.0 / np.sqrt(cell.hidden_size)
        return {"cell": p, "head": {"W": jax.random.uniform(kh, (cell.hidden_size, BITS),
                                                            jnp.float32, -s, s),
                                    "b": jnp.zeros((BITS,), jnp.float32)}}

    head = lambda p, h: h @ p["W"] + p["b"]
    loss = lambda o, y: optax.sigmoid_binary_cross_entropy(o, y).mean(-1)
    return jrnn.Model(cell, init, head, loss, BITS + 1, tokens=False, labels=False)


def make_cell(kind: str, args):
    if kind == "lru":
        return L.lru(args.hidden, state_size=args.state, r_min=args.r_min)
    if kind == "lru2":
        return jrnn.stack([L.lru(args.stack_hidden, state_size=args.stack_state, r_min=args.r_min,
                                 activation="gelu") for _ in range(2)])
    return jrnn.gru(args.gru_hidden)


def score_fn(model, test: jrnn.Batch):
    carry = model.cell.initial_carry((test.inputs.shape[1],))
    m = jnp.asarray(test.mask)

    @jax.jit
    def score(params):
        hs, _ = jrnn.unroll(model.cell, params["cell"], test.inputs, carry)
        out = model.head(params["head"], hs)
        acc = ((out > 0) == (test.targets > 0.5)).mean(-1)
        loss = model.loss(out, test.targets)
        return jnp.sum(acc * m) / m.sum(), jnp.sum(loss * m) / m.sum()

    return score


def train_one(kind, spec, seed, args, test):
    model = bits_model(make_cell(kind, args))
    est = grads.parse(spec)
    score = score_fn(model, test)
    every = max(1, args.updates // args.evals)
    lr = args.lr_gru if kind == "gru" else args.lr

    def batches(epoch):
        for i in range(args.updates):
            yield copy_batch(args.batch, args.pattern, args.pad,
                             np.random.default_rng([seed, epoch, i]))

    def validate(p):
        acc, loss = score(p)
        return {"acc": float(acc), "test_loss": float(loss)}

    t0 = time.perf_counter()
    res = jrnn.fit(model, jrnn.make_optimizer("adam", lr, clip=1.0), batches, estimator=est,
                   batch_size=args.batch, carry_over=False, validate=validate,
                   config=jrnn.LoopConfig(epochs=1, seed=seed, log_every=every, eval_every=every,
                                          progress=False, quiet=True, on_nonfinite="stop"))
    curve = {"updates": [], "acc": [], "test_loss": []}
    for r in res.history:
        if "acc" in r and (not curve["updates"] or r["step"] != curve["updates"][-1]):
            curve["updates"].append(int(r["step"]))
            curve["acc"].append(float(r["acc"]))
            curve["test_loss"].append(float(r["test_loss"]))
    seconds = time.perf_counter() - t0
    return {**curve, "final_acc": curve["acc"][-1], "final_loss": curve["test_loss"][-1],
            "seconds": seconds, "lr": lr}


ROWS = [("lru", "full"), ("lru", "diag-rtrl"), ("lru", "truncated:1"),
        ("gru", "full"), ("gru", "snap1"),
        ("lru2", "full"), ("lru2", "diag-rtrl:spatial"), ("lru2", "truncated:1")]
QUICK_ROWS = [("lru", "diag-rtrl"), ("gru", "snap1"), ("lru2", "diag-rtrl:spatial")]


def summarise(runs):
    out = []
    for (kind, spec), rs in runs.items():
        acc = np.array([r["final_acc"] for r in rs])
        loss = np.array([r["final_loss"] for r in rs])
        sec = np.array([r["seconds"] for r in rs])
        out.append({"cell": kind, "estimator": spec, "acc_mean": float(acc.mean()),
                    "acc_std": float(acc.std()), "loss_mean": float(loss.mean()),
                    "loss_std": float(loss.std()), "seconds": float(np.median(sec)),
                    "accs": acc.tolist()})
    return out


CELL_NAMES = {"lru": "LRU (1 layer)", "lru2": "LRU (2 layers, gelu)", "gru": "GRU (1 layer)"}


def write_md(res, path):
    c = res["config"]
    lines = [
        "# Zucchet et al. 2023's copy task: exact online learning vs truncation, SnAp-1, BPTT",
        "",
        f"Pattern {c['pattern']} steps x {BITS} bits, padding {c['pad']}, T = "
        f"{2 * c['pattern'] + c['pad'] + 1}; loss: mean per-bit BCE on the {c['pattern']} recall "
        f"steps; accuracy: per bit on those steps (chance 0.5), on {c['test']} fixed test "
        f"sequences. {c['updates']} Adam updates (clip 1, batch {c['batch']}, a fresh batch each), "
        f"seeds {c['seeds']}; LRU: H={c['hidden']}, N={c['state']} complex, r_min={c['r_min']}, "
        f"lr {c['lr']:g}; GRU: H={c['gru_hidden']}, lr {c['lr_gru']:g}.",
        "",
        "| cell | estimator | online? | test accuracy (mean +- std) | test loss | s per run |",
        "|---|---|---|---:|---:|---:|",
    ]
    online = {"full": "no (BPTT)", "diag-rtrl": "yes, exact", "truncated:1": "yes, biased",
              "snap1": "yes, biased", "diag-rtrl:spatial": "yes, approx. across layers"}
    for r in res["summary"]:
        lines.append(f"| {CELL_NAMES[r['cell']]} | `{r['estimator']}` | {online[r['estimator']]} | "
                     f"{r['acc_mean']:.3f} +- {r['acc_std']:.3f} | {r['loss_mean']:.3f} +- "
                     f"{r['loss_std']:.3f} | {r['seconds']:.0f} |")
    if "diag_vs_full" in res:
        lines += ["", f"diag-rtrl vs full BPTT on the LRU, same seed: max |accuracy difference| "
                      f"over the curve {res['diag_vs_full']:.2e} (the same gradients, up to "
                      f"float32 rounding)."]
    lines += ["", "Scaled down from the paper (its sweep files `experiments/table1_*.yaml`): 4 "
              "layers of LRU (d_model 128, N 64) with GLU and dropout 0.1, 10,000 updates at "
              "batch 50, a learning-rate sweep and 3 seeds; here 1 layer (linear) or 2 (GELU "
              "outputs), no GLU or dropout, one learning rate, the updates and widths above. The paper's "
              "Table 1 figures are not printed beside ours: the copies of the paper reachable "
              "here give its setup but not the table. Its claim (abstract): the online rule "
              "performs competitively with offline BPTT.", "", footer(res)]
    if res["plot"]:
        lines += ["", f"![test accuracy]({res['plot']})"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def plot(res, path):
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for key, rs in res["runs"].items():
        curves = np.array([r["acc"] for r in rs])
        ups = rs[0]["updates"]
        online = key.split("|")[1] != "full"  # dashed, so diag-rtrl shows over BPTT's curve
        line, = ax.plot(ups, curves.mean(0), label=key.replace("|", " "), ls="--" if online else "-")
        if len(rs) > 1:
            ax.fill_between(ups, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.2)
    ax.axhline(0.5, color="0.6", ls=":", lw=1)
    ax.set_xlabel("update")
    ax.set_ylabel("test per-bit accuracy")
    ax.set_title("copy task (pattern 20, padding 7)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def memory(args, lengths=(48, 480, 4800)) -> dict:
    """XLA's planned temporary bytes of one LRU gradient (``jrnn.compare.compiled_memory``,
    compiled, not run) for diag-rtrl and full BPTT, at sequence lengths ``lengths``."""
    model = bits_model(make_cell("lru", args))
    params = model.init(jax.random.key(0))
    out = {}
    for spec in ("diag-rtrl", "full"):
        est = grads.parse(spec)
        for T in lengths:
            batch = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                                 copy_batch(args.batch, (T - args.pad - 1) // 2, args.pad,
                                            np.random.default_rng(0)))
            carry = est.init_carry(model, params, (args.batch,))
            fn = lambda c, b, est=est: est.value_and_grad(model, params, c, b, None)[:2]
            mem = compare.compiled_memory(fn, carry, batch)
            out[f"{spec}|{batch.inputs.shape[0]}"] = mem["temp"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny model, few updates")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--seeds", type=int, default=None, help="default 3 (quick 1)")
    ap.add_argument("--updates", type=int, default=None, help="default 1000 (quick 4)")
    ap.add_argument("--pattern", type=int, default=None, help="default 20 (quick 4)")
    ap.add_argument("--pad", type=int, default=7)
    ap.add_argument("--hidden", type=int, default=None, help="LRU output width H (default 64)")
    ap.add_argument("--state", type=int, default=None, help="LRU complex states N (default 128)")
    ap.add_argument("--stack-hidden", type=int, default=None, help="per layer (default 32)")
    ap.add_argument("--stack-state", type=int, default=None, help="per layer (default 64)")
    ap.add_argument("--gru-hidden", type=int, default=None, help="default 64 (quick 8)")
    ap.add_argument("--r-min", type=float, default=0.5)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--lr-gru", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--test", type=int, default=None, help="test sequences (default 512, quick 64)")
    ap.add_argument("--evals", type=int, default=None, help="default 25 (quick 1)")
    ap.add_argument("--rows", default=None, help="subset, e.g. 'lru|full,gru|snap1'")
    ap.add_argument("--memory", action="store_true",
                    help="only write memory.json: compiled temp bytes of diag-rtrl vs full vs T")
    args = ap.parse_args(argv)
    q = args.quick
    args.seeds = args.seeds or (1 if q else 3)
    args.updates = args.updates or (4 if q else 1000)
    args.pattern = args.pattern or (4 if q else 20)
    args.hidden = args.hidden or (8 if q else 64)
    args.state = args.state or (8 if q else 128)
    args.gru_hidden = args.gru_hidden or (8 if q else 64)
    args.stack_hidden = args.stack_hidden or (8 if q else 32)
    args.stack_state = args.stack_state or (8 if q else 64)
    args.test = args.test or (64 if q else 512)
    args.evals = args.evals or (1 if q else 25)
    rows = QUICK_ROWS if q else ROWS
    if args.rows:
        rows = [tuple(r.split("|")) for r in args.rows.split(",")]
    cfg = {k: getattr(args, k) for k in (
        "seeds", "updates", "pattern", "pad", "hidden", "state", "gru_hidden", "stack_hidden",
        "stack_state", "r_min", "lr", "lr_gru", "batch", "test", "quick")}
    os.makedirs(args.out, exist_ok=True)
    if args.memory:
        mem = {"config": cfg, "temp_bytes": memory(args), "machine": machine()}
        with open(os.path.join(args.out, "memory.json"), "w") as f:
            json.dump(mem, f, indent=1)
        print(json.dumps(mem["temp_bytes"]), file=sys.stderr)
        return 0
    t0 = time.perf_counter()
    test = copy_batch(args.test, args.pattern, args.pad, np.random.default_rng(12345))
    runs = {}
    for kind, spec in rows:
        for seed in range(args.seeds):
            r = train_one(kind, spec, seed, args, test)
            runs.setdefault((kind, spec), []).append(r)
            print(f"{kind:4s} {spec:18s} seed {seed} acc {r['final_acc']:.3f} loss "
                  f"{r['final_loss']:.3f} ({r['seconds']:.1f} s)", file=sys.stderr, flush=True)
    res = {"config": cfg, "summary": summarise(runs),
           "runs": {f"{k}|{s}": v for (k, s), v in runs.items()}}
    if ("lru", "full") in runs and ("lru", "diag-rtrl") in runs:
        res["diag_vs_full"] = float(max(
            np.max(np.abs(np.subtract(a["acc"], b["acc"])))
            for a, b in zip(runs["lru", "full"], runs["lru", "diag-rtrl"])))
    res["total_seconds"] = time.perf_counter() - t0
    res["machine"] = machine()
    save(res, args.out, "accuracy.png", plot, write_md)
    print(f"total {res['total_seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
