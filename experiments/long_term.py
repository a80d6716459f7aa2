#!/usr/bin/env python
"""Long-term dependencies (Goodfellow et al. 10.7-10.9): copy and adding at several delays.

Usage::

    python experiments/long_term.py                        # full run (a few minutes on 2 cores)
    python experiments/long_term.py --quick --out /tmp/lt    # smoke run (one delay per task)
    python experiments/long_term.py --grad truncated:10      # any estimator of jrnn.grads

Tasks (:mod:`jrnn.data.synthetic`, a fresh batch every update):

- ``copy``: 2 symbols out of 8, a delay, then recall them
  (:func:`~jrnn.data.synthetic.copy_task`); measure: recall accuracy, chance
  1/8.
- ``adding``: Hochreiter & Schmidhuber's adding problem over ``T`` steps
  (:func:`~jrnn.data.synthetic.adding_task`); measure: test MSE of the sum,
  0.167 for always answering 1 (the variance of the sum of two ``U(0, 1)``).

Models, each trained through :func:`jrnn.fit` with the same budget (Adam,
clipping 1, batch 32): ``rnn`` (tanh Elman), ``gru``, ``lstm`` (forget bias
1), ``leaky`` (:func:`jrnn.cells.leaky`, learnable per-unit time constants
initialised log-spaced from 1.5 to 100 steps); and ``esn``
(:mod:`jrnn.reservoir`): a fixed random reservoir of ``--esn-hidden`` tanh
units at spectral radius 0.95, only the readout fitted, by ridge regression
on 2048 sequences (no gradient steps at all).

Writes ``results.json``, ``results.md`` and ``learning_curves.png`` to
``--out`` (default ``results/long_term`` beside this script).
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
from jrnn import grads, reservoir
from jrnn.cells import leaky
from jrnn.data import synthetic
from provenance import footer, machine, pyplot, save  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "long_term")
SYMBOLS, SEQ_LEN = 8, 2
CELLS = ("rnn", "gru", "lstm", "leaky")


def make_cell(name: str, hidden: int):
    if name == "rnn":
        return jrnn.elman(hidden)
    if name == "gru":
        return jrnn.gru(hidden)
    if name == "lstm":
        return jrnn.lstm(hidden, forget_bias=1.0)
    if name == "leaky":
        return leaky(hidden, tau=np.geomspace(1.5, 100.0, hidden))
    raise ValueError(f"unknown cell {name!r}; choose from {CELLS}")


class Task:
    """One task at one delay: its model factory, batches, and test measure."""

    def __init__(self, kind: str, delay: int):
        self.kind, self.delay = kind, delay

    def batch(self, batch_size: int, rng) -> jrnn.Batch:
        if self.kind == "copy":
            x, y, m = synthetic.copy_task(batch_size, SYMBOLS, SEQ_LEN, self.delay, rng=rng)
            return jrnn.Batch(x, y, m)
        x, _, y, m = synthetic.adding_task(batch_size, self.delay, rng)
        return jrnn.Batch(x, y, m)

    def model(self, cell):
        if self.kind == "copy":
            V = SYMBOLS + 2
            return jrnn.classifier(cell, V, V, tokens=True)
        return jrnn.regressor(cell, 2, 1)

    @property
    def steps(self) -> int:
        return 2 * SEQ_LEN + self.delay if self.kind == "copy" else self.delay

    @property
    def measure(self) -> str:
        return "recall accuracy" if self.kind == "copy" else "test MSE"

    @property
    def baseline(self) -> float:
        return 1.0 / SYMBOLS if self.kind == "copy" else 1.0 / 6.0

    def score_fn(self, model, test: jrnn.Batch):
        """``params -> score`` on the fixed test batch (jitted)."""
        carry = model.cell.initial_carry((test.inputs.shape[1],))

        @jax.jit
        def score(params):
            hs, _ = jrnn.unroll(model.cell, params["cell"], test.inputs, carry)
            out = model.head(params["head"], hs)
            if self.kind == "copy":
                return jrnn.accuracy(out, test.targets, test.mask)
            return jnp.mean((out[-1] - test.targets[-1]) ** 2)

        return score

    def solved(self, score: float) -> bool:
        return score > 0.9 if self.kind == "copy" else score < 0.1 * self.baseline


def train_one(task: Task, cell_name, hidden, updates, lr, estimator, seed, test, evals):
    model = task.model(make_cell(cell_name, hidden))
    score = task.score_fn(model, test)
    every = max(1, updates // evals)

    def batches(epoch):
        for i in range(updates):
            yield task.batch(32, np.random.default_rng([seed, epoch, i]))

    t0 = time.perf_counter()
    res = jrnn.fit(model, jrnn.make_optimizer("adam", lr, clip=1.0), batches,
                   estimator=estimator, batch_size=32, carry_over=False,
                   validate=lambda p: {"score": float(score(p))},
                   config=jrnn.LoopConfig(epochs=1, seed=seed, log_every=every, eval_every=every,
                                          progress=False, quiet=True, on_nonfinite="stop"))
    curve = {"updates": [], "score": []}
    for r in res.history:
        if "score" in r and (not curve["updates"] or r["step"] != curve["updates"][-1]):
            curve["updates"].append(int(r["step"]))
            curve["score"].append(float(r["score"]))
    return {**curve, "final": curve["score"][-1], "seconds": time.perf_counter() - t0}


def esn_one(task: Task, hidden, seed, test, alpha=1e-3):
    t0 = time.perf_counter()
    model = task.model(jrnn.elman(hidden))
    D = SYMBOLS + 2 if task.kind == "copy" else 2
    res = reservoir.reservoir(jax.random.key(seed), D, hidden, spectral_radius=0.95,
                              input_scale=1.0 if task.kind == "copy" else 0.5)
    train = task.batch(2048, np.random.default_rng([seed, 99]))
    params = reservoir.fit_readout(model, res, train, alpha)
    final = float(task.score_fn(model, test)(params))
    return {"final": final, "seconds": time.perf_counter() - t0, "train_sequences": 2048,
            "alpha": alpha}


def write_md(res, path):
    c = res["config"]
    names = list(CELLS) + ["esn"]
    lines = [
        "# Long-term dependencies: Elman vs GRU vs LSTM vs leaky units vs an echo-state network",
        "",
        f"Each net: {c['hidden']} units, {c['updates']} Adam updates (lr {c['lr']:g}, clip 1, "
        f"batch 32, a fresh batch each update), estimator `{c['estimator']}`, through `jrnn.fit`; "
        f"leaky: learnable per-unit time constants, log-spaced 1.5..100 at init. ESN: "
        f"{c['esn_hidden']} fixed tanh units at spectral radius 0.95, ridge readout on 2048 "
        f"sequences. Copy: recall {SEQ_LEN} of {SYMBOLS} symbols after the delay "
        f"(T = delay + {2 * SEQ_LEN}), measure recall accuracy (chance {1 / SYMBOLS:.3f}). Adding: "
        f"T = delay, measure test MSE (0.167 for always answering 1). Test set: 512 fresh "
        f"sequences. Bold: solved (accuracy > 0.9; MSE < 0.0167).",
        "",
        "| task | delay | T | measure | " + " | ".join(names) + " |",
        "|---|---:|---:|---|" + "---:|" * len(names),
    ]
    for r in res["runs"]:
        cells = []
        for n in names:
            v = r["models"][n]["final"]
            s = f"{v:.3f}"
            cells.append(f"**{s}**" if r["solved"][n] else s)
        lines.append(f"| {r['task']} | {r['delay']} | {r['T']} | {r['measure']} | "
                     + " | ".join(cells) + " |")
    lines += ["", f"Training seconds per net (median): {res['median_seconds']:.1f}.", footer(res)]
    if res["plot"]:
        lines += ["", f"![learning curves]({res['plot']})"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def plot(res, path):
    plt = pyplot()
    if plt is None:
        return False
    runs = res["runs"]
    kinds = sorted({r["task"] for r in runs}, key=["copy", "adding"].index)
    ncol = max(sum(r["task"] == k for r in runs) for k in kinds)
    fig, axes = plt.subplots(len(kinds), ncol, figsize=(4 * ncol, 3.2 * len(kinds)), squeeze=False)
    for row, kind in enumerate(kinds):
        for col, r in enumerate([r for r in runs if r["task"] == kind]):
            ax = axes[row, col]
            for n in CELLS:
                m = r["models"][n]
                ax.plot(m["updates"], m["score"], label=n)
            ax.axhline(r["models"]["esn"]["final"], color="k", ls="--", lw=1, label="esn (ridge)")
            ax.axhline(r["baseline"], color="0.6", ls=":", lw=1, label="chance / answer 1")
            ax.set_title(f"{kind}, delay {r['delay']} (T={r['T']})")
            ax.set_xlabel("update")
            ax.set_ylabel(r["measure"])
            if kind == "adding":
                ax.set_yscale("log")
            if row == 0 and col == 0:
                ax.legend(fontsize=7)
        for col in range(sum(r["task"] == kind for r in runs), ncol):
            axes[row, col].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: one short delay per task")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--copy-delays", default=None, help="default 10,30,60 (quick 5)")
    ap.add_argument("--adding-steps", default=None, help="default 25,50,100 (quick 10)")
    ap.add_argument("--updates", type=int, default=None, help="default 1500 (quick 40)")
    ap.add_argument("--hidden", type=int, default=None, help="default 32 (quick 16)")
    ap.add_argument("--esn-hidden", type=int, default=None, help="default 256 (quick 64)")
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--grad", default="full", help="estimator: " + ", ".join(grads.ESTIMATORS))
    args = ap.parse_args(argv)
    ints = lambda s: [int(v) for v in s.split(",") if v.strip()]
    copy_delays = ints(args.copy_delays or ("5" if args.quick else "10,30,60"))
    adding_steps = ints(args.adding_steps or ("10" if args.quick else "25,50,100"))
    updates = args.updates or (40 if args.quick else 1500)
    hidden = args.hidden or (16 if args.quick else 32)
    esn_hidden = args.esn_hidden or (64 if args.quick else 256)
    estimator = grads.parse(args.grad)
    cfg = {"copy_delays": copy_delays, "adding_steps": adding_steps, "updates": updates,
           "hidden": hidden, "esn_hidden": esn_hidden, "lr": args.lr, "estimator": estimator.name,
           "seed": args.seed, "quick": args.quick}
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    tasks = [Task("copy", d) for d in copy_delays] + [Task("adding", t) for t in adding_steps]
    res = {"config": cfg, "runs": []}
    seconds = []
    for task in tasks:
        test = task.batch(512, np.random.default_rng([args.seed, 12345]))
        run = {"task": task.kind, "delay": task.delay, "T": task.steps, "measure": task.measure,
               "baseline": task.baseline, "models": {}}
        for name in CELLS:
            r = train_one(task, name, hidden, updates, args.lr, estimator, args.seed, test,
                          4 if args.quick else 20)
            run["models"][name] = r
            seconds.append(r["seconds"])
            print(f"{task.kind:6s} delay {task.delay:3d} {name:5s} {task.measure} {r['final']:.3f} "
                  f"({r['seconds']:.1f} s)", file=sys.stderr, flush=True)
        run["models"]["esn"] = esn_one(task, esn_hidden, args.seed, test)
        print(f"{task.kind:6s} delay {task.delay:3d} esn   {task.measure} "
              f"{run['models']['esn']['final']:.3f}", file=sys.stderr, flush=True)
        run["solved"] = {n: task.solved(m["final"]) for n, m in run["models"].items()}
        res["runs"].append(run)
    res["median_seconds"] = float(np.median(seconds))
    res["total_seconds"] = time.perf_counter() - t0
    res["machine"] = machine()
    save(res, args.out, "learning_curves.png", plot, write_md)
    print(f"total {res['total_seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
