#!/usr/bin/env python
"""Marschall, Cho & Savin 2020's comparison on the Add task: final loss and gradient alignment.

Usage::

    python experiments/marschall_add.py                  # full run (about 10-15 min on 2 loaded cores)
    python experiments/marschall_add.py --quick --out /tmp/ma   # smoke run (< 40 s)

The task (Pitis 2016, :func:`jrnn.data.synthetic.add_task`): Bernoulli inputs
``x_t`` and the soft label ``y_t = 0.5 + 0.5 x_{t-5} - 0.25 x_{t-9}`` (``t1 = 5``,
``t2 = 9``, deterministic labels, inputs and labels as two channels: the
authors' ``main.py`` and ``gen_data/Add_Task.py``), softmax cross-entropy. The
loss is normalised by ``H(0.625) = 0.662`` nats, the loss of the best
predictor that ignores the inputs (the "baseline" line of the authors'
plots): 1 = nothing learned, 0.785 = the ``t1`` dependency alone, 0.687 =
both (the optimum).

The network: a leaky vanilla RNN of 32 units (:func:`jrnn.leaky`, fixed
``tau = 2``, i.e. ``alpha = 0.5``; orthogonal ``W_hh``, Glorot ``W_xh``),
a dense softmax readout, trained online with batch size 1 through
:func:`jrnn.fit` (``carry_over=True``): one stream, cut into 1-step batches
(one SGD update per time step) for the online methods -- RTRL, UORO, KF-RTRL,
SnAp-1, RFLO, e-prop, 1-step truncated BPTT and a control that trains the
readout alone (the recurrent weights stay at init) -- and into 10-step windows for
BPTT (``full`` on each window, the carry detached between windows: an update
every 10 steps, its learning rate times 10 because jrnn's batch loss is the
window's mean). Each method runs ``--seeds`` initialisations x ``--lrs``
learning rates as one vmapped sweep on the same stream (plain SGD, no
clipping); the learning rate with the lowest mean validation loss is picked
per method and its test loss reported (validation and test: separate streams,
no learning).

Gradient alignment (``jrnn.compare.alignment``, cosine of the cell-parameter
gradients; the head's gradient is exact for every method): along ONE
trajectory, trained by RTRL, every method's estimate of the gradient of the
current step's loss is computed at the same params every step -- the online
methods from their own carries (influence, traces) advanced along the
trajectory, BPTT through the last 10 steps, truncated:1 through one -- and the
pairwise cosines are averaged over the steps after a burn-in. For RFLO the
cosine between its trained readout ``W_hq`` and its fixed feedback ``B`` is
also reported (feedback alignment: ``W_hq`` turning toward ``B`` is what makes
the random learning signal useful).

Reference: Marschall, Cho & Savin 2020, "A unified framework of online
learning algorithms for training recurrent neural networks" (JMLR 21),
section 6; code: github.com/omarschall/vanilla-rtrl. Sized to run in under
15 minutes on 2 loaded cores (what that leaves out: ``results.md``).

Writes ``results.json``, ``results.md`` and ``marschall_add.png`` to ``--out``
(default ``results/marschall_add`` beside this script).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jrnn
import jrnn.grads.local  # noqa: F401  (registers rflo and eprop)
from jrnn import compare, grads
from jrnn.data import synthetic
from jrnn.models import Batch, Model
from provenance import footer, machine, pyplot, save  # noqa: E402

if importlib.util.find_spec("jrnn.grads.kf") is not None:
    import jrnn.grads.kf  # noqa: F401  (registers kf-rtrl)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "marschall_add")
T1, T2, HIDDEN, TAU, WINDOW = 5, 9, 32, 2.0, 10
BASELINE = 0.6615632381579821  # H(0.625): the best input-blind cross-entropy (nats)
MARGIN = 0.01  # the least normalised-loss gap that counts as "worse" in the verdict
ALIGN_MARGIN = 0.05  # and the least alignment gap that counts as "better aligned"
ONLY_T1, OPTIMUM = 0.5191666997072095, 0.45445436744939044  # x_{t-t1} alone; both lags



def readout_only() -> grads.GradientEstimator:
    """The control: the readout's exact gradient, none for the recurrent weights (they stay at
    their init; the authors' ``Only_Output_Weights``). What a method adds beyond it is what its
    recurrent credit assignment buys."""
    full = grads.full()

    def value_and_grad(model, params, carry, batch, key):
        loss, g, carry, aux = full.value_and_grad(model, params, carry, batch, key)
        return loss, {**g, "cell": jax.tree.map(jnp.zeros_like, g["cell"])}, carry, aux

    return grads.GradientEstimator(full.init_carry, value_and_grad, "readout-only")


# method -> (estimator spec or constructor, batch length: 1 = an update every step, WINDOW =
# BPTT windows)
METHODS = {
    "readout only": (readout_only, 1),
    "bptt:10": ("full", WINDOW),
    "truncated:1": ("truncated:1", 1),
    "rtrl": ("rtrl", 1),
    "uoro": ("uoro", 1),
    "kf-rtrl": ("kf-rtrl", 1),
    "snap1": ("snap1", 1),
    "rflo": ("rflo", 1),
    "eprop": ("eprop", 1),
}


QUICK_METHODS = ("bptt:10", "truncated:1", "rtrl", "rflo", "eprop")  # --quick: each kind of run


def available_methods() -> list[str]:
    """The methods whose estimator is registered (kf-rtrl only where ``jrnn.grads.kf`` exists)."""
    return [m for m, (spec, _) in METHODS.items()
            if callable(spec) or spec.partition(":")[0] in grads.ESTIMATORS]


def estimator(name: str) -> grads.GradientEstimator:
    spec = METHODS[name][0]
    return spec() if callable(spec) else grads.parse(spec)


def add_model(hidden: int = HIDDEN, tau: float = TAU) -> Model:
    """The leaky RNN (fixed ``tau``) with a 2-way softmax readout on soft labels ``[T, B, 2]``."""
    cell = jrnn.leaky(hidden, tau=tau, learn_tau=False, init="orthogonal")
    return jrnn.regressor(cell, 2, 2)._replace(loss=optax.softmax_cross_entropy)


def stream(steps: int, seed: int):
    """``(xs [T, 1, 2], ys [T, 1, 2])`` of the Add task."""
    return synthetic.add_task(steps, T1, T2, rng=seed)


def cut(xs, ys, L):
    """``epoch -> batches`` of ``L`` consecutive steps (one update each)."""
    n = len(xs) // L
    return lambda epoch: (Batch(xs[i * L:(i + 1) * L], ys[i * L:(i + 1) * L]) for i in range(n))


def validator(model, val, test, length=200):
    """``params -> {"val_loss", "test_loss"}``: mean cross-entropy (nats) on two held-out
    streams, the carry running on across each (no learning)."""

    def losses(params):
        out = {}
        for name, (xs, ys) in (("val_loss", val), ("test_loss", test)):
            out[name] = jrnn.evaluate(model, params, cut(xs, ys, min(length, len(xs)))(0))
        return out

    return losses


def train_method(model, name, train, validate, lrs, seeds, eval_every, seed=0):
    """One method's sweep (``seeds`` x ``lrs`` runs in one program) through :func:`jrnn.fit`."""
    L = METHODS[name][1]
    est = estimator(name)
    opt = jrnn.make_optimizer("sgd", lrs[0] * L, clip=None, inject=True)
    steps = len(train[0]) // L
    t0 = time.perf_counter()
    status, extra = "ok", {}
    try:
        res = jrnn.fit(model, opt, cut(*train, L), estimator=est, batch_size=1, carry_over=True,
                       validate=validate,
                       config=jrnn.LoopConfig(epochs=1, seed=seed, seeds=seeds,
                                              lrs=tuple(lr * L for lr in lrs), progress=False,
                                              quiet=True, log_every=max(1, eval_every // L),
                                              eval_every=max(1, eval_every // L),
                                              on_nonfinite="stop"))
        history = res.history
        fb = getattr(res.state.carry, "feedback", None)
        if fb is not None:  # RFLO: has the readout come to align with the fixed feedback?
            W = res.state.params["head"]["W_hq"]  # [R, H, O] as fb ([H, O] for one run)
            W, fb = (jnp.reshape(a, (-1,) + jnp.shape(a)[-2:]) for a in (W, fb))
            extra = {"readout_feedback_cos": [
                float(compare.alignment(W[r], fb[r])["cos"]) for r in range(W.shape[0])]}
    except jrnn.NonFiniteError as e:  # a diverging run stops its sweep: keep what was logged
        history, status = list(getattr(e, "history", [])), f"non-finite: {e}"
    seconds = time.perf_counter() - t0
    evals = [r for r in history if "val_loss" in r]
    R = seeds * len(lrs)  # run r = seed (r // len(lrs)) with lrs[r % len(lrs)]
    as_runs = lambda v: list(v) if isinstance(v, (list, tuple)) else [v]
    val = np.array([as_runs(r["val_loss"]) for r in evals]).reshape(len(evals), R)
    test = np.array([as_runs(r["test_loss"]) for r in evals]).reshape(len(evals), R)
    final_val = val[-1].reshape(seeds, len(lrs)) / BASELINE
    final_test = test[-1].reshape(seeds, len(lrs)) / BASELINE
    score = np.where(np.isfinite(final_val), final_val, np.inf).mean(0)
    best = int(np.argmin(score))
    if "readout_feedback_cos" in extra:  # the best lr's runs
        extra["readout_feedback_cos"] = [extra["readout_feedback_cos"][k * len(lrs) + best]
                                         for k in range(seeds)]
    return {**extra, "estimator": est.name, "window": L, "status": status, "seconds": seconds,
            "steps": steps * L, "updates": steps, "lrs": list(lrs), "best_lr": lrs[best],
            "final_val_norm": final_val.tolist(), "final_test_norm": final_test.tolist(),
            "best_test_norm": final_test[:, best].tolist(),
            "best_test_mean": float(np.mean(final_test[:, best])),
            "best_test_std": float(np.std(final_test[:, best])),
            "curve_steps": [int(r["step"]) * L for r in evals],
            "curve_test_norm": (test.reshape(len(evals), seeds, len(lrs))[:, :, best]
                                / BASELINE).mean(1).tolist()}


def alignment_run(model, names, lr, steps, burn_in, seed=0, data_seed=100, fast_compile=False):
    """Pairwise alignment of every method's per-step gradient along one RTRL-trained trajectory.

    Every step ``t``: the driver (RTRL) and each online method take the 1-step batch
    ``t`` from their own carries, ``bptt:10`` the last 10 steps from the trajectory's
    state 10 steps back (loss of step ``t`` only), all at the same params; the params
    then take RTRL's SGD step. Returns ``(mean cos [M, M], steps counted)``; the
    cosines are of the cell-parameter gradients (``jrnn.compare.alignment``).
    """
    xs, ys = (jnp.asarray(a) for a in stream(steps + WINDOW, data_seed))
    ests = {n: estimator(n) for n in names}
    # params and carries in one compiled program (eagerly, every op would compile alone)
    params, carries = jax.jit(lambda k: (lambda p: (p, {
        n: e.init_carry(model, p, (1,)) for n, e in ests.items() if METHODS[n][1] == 1}))(
        model.init(k)))(jax.random.key(seed))
    H, M = model.cell.hidden_size, len(names)
    onehot_last = jnp.zeros((WINDOW, 1), jnp.float32).at[-1].set(1.0)

    def step(acc, t):
        params, carries, hist, total, count = acc
        key = jax.random.fold_in(jax.random.key(seed + 1), t)
        batch = Batch(jax.lax.dynamic_slice_in_dim(xs, t, 1), jax.lax.dynamic_slice_in_dim(ys, t, 1))
        g, new = {}, {}
        for i, n in enumerate(names):
            if n in carries:
                _, g[n], new[n], _ = ests[n].value_and_grad(model, params, carries[n], batch,
                                                           jax.random.fold_in(key, i))
            else:  # BPTT through the last WINDOW steps, the loss of step t only
                win = Batch(jax.lax.dynamic_slice_in_dim(xs, t - WINDOW + 1, WINDOW),
                            jax.lax.dynamic_slice_in_dim(ys, t - WINDOW + 1, WINDOW), onehot_last)
                _, g[n], _, _ = ests[n].value_and_grad(model, params, hist[0], win, None)
        cos = jnp.stack([jnp.stack([compare.alignment(g[a]["cell"], g[b]["cell"])["cos"]
                                    for b in names]) for a in names])
        on = (t >= burn_in).astype(cos.dtype)
        params = jax.tree.map(lambda p, d: p - lr * d, params, g["rtrl"])
        state = new["rtrl"].state
        hist = jnp.concatenate([hist[1:], state[None]])
        return (params, new, hist, total + on * cos, count + on), None

    hist0 = jnp.zeros((WINDOW, 1, H), jnp.float32)
    # the scan starts at t = WINDOW - 1, the first step with a full window behind it
    # --quick: XLA's backend optimisation level 0 compiles faster (same values, slower steps)
    opts = {"xla_backend_optimization_level": 0} if fast_compile else None
    run = jax.jit(lambda p, c: jax.lax.scan(
        step, (p, c, hist0, jnp.zeros((M, M)), jnp.zeros(())),
        jnp.arange(WINDOW - 1, WINDOW - 1 + steps))[0], compiler_options=opts)
    _, _, _, total, count = run(params, carries)
    return np.asarray(total / count), int(count)


def spearman(a, b) -> float:
    ra, rb = (np.argsort(np.argsort(np.asarray(v))) for v in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1])


def write_md(res, path):
    c = res["config"]
    lines = [
        "# Marschall et al. 2020 on the Add task: final loss and gradient alignment",
        "",
        f"Add task (Pitis 2016) with t1 = {T1}, t2 = {T2}, deterministic soft labels, softmax "
        f"cross-entropy normalised by H(0.625) = {BASELINE:.3f} nats (1 = input-blind baseline, "
        f"{ONLY_T1 / BASELINE:.3f} = t1 learned, {OPTIMUM / BASELINE:.3f} = optimum). Leaky RNN, "
        f"{c['hidden']} units, tau = {c['tau']:g} (alpha = {1 / c['tau']:g}), trained online "
        f"(batch size 1) through jrnn.fit for {c['steps']} time steps, plain SGD; "
        f"{c['seeds']} seeds x learning rates {c['lrs']} per method (one vmapped sweep, the "
        f"same stream); the lr with the best mean validation loss is kept, its test loss "
        f"({c['eval_steps']} held-out steps) reported.",
        "",
        "| method | updates | best lr | final normalised test loss (mean +- std over seeds) "
        "| per seed | alignment with rtrl | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    names = res["alignment"]["methods"]
    A = np.asarray(res["alignment"]["cos"])
    for name, r in res["methods"].items():
        al = A[names.index("rtrl"), names.index(name)] if name in names else float("nan")
        lr = f"{r['best_lr']:g}" + (f" (x{r['window']} per window)" if r["window"] > 1 else "")
        lines.append(f"| {name} | {r['updates']} | {lr} | {r['best_test_mean']:.3f} +- "
                     f"{r['best_test_std']:.3f} | {' / '.join(f'{v:.3f}' for v in r['best_test_norm'])} "
                     f"| {'—' if math.isnan(al) else f'{al:.3f}'} | {r['seconds']:.0f} |")
    lrs = res["config"]["lrs"]
    lines += ["", "Final normalised test loss per learning rate (mean over seeds; the window's "
              "rate is x10 for bptt:10):", "",
              "| method | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |", "|---" * (len(lrs) + 1) + "|"]
    for name, r in res["methods"].items():
        means = np.mean(np.asarray(r["final_test_norm"], float), axis=0)
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in means) + " |")
    for name, r in res["methods"].items():
        if "readout_feedback_cos" in r:
            lines += ["", f"{name}: cosine between the trained readout W_hq and the fixed random "
                      f"feedback B at the end (best lr, per seed): "
                      + " / ".join(f"{v:.2f}" for v in r["readout_feedback_cos"])
                      + " (feedback alignment: W_hq turning toward B makes B's learning signal "
                      "useful; 0 = unrelated)."]
    a = res["alignment"]
    lines += ["", f"Pairwise gradient alignment (mean cosine of the cell-parameter gradients of "
              f"the current step's loss, all at the same params along one RTRL-trained "
              f"trajectory, lr {a['lr']:g}, steps {a['burn_in']}..{a['steps']}, {a['counted']} "
              f"steps averaged):", "",
              "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for i, n in enumerate(names):
        lines.append(f"| {n} | " + " | ".join(f"{A[i, j]:.2f}" for j in range(len(names))) + " |")
    v = res["verdict"]
    lines += ["", "**Does alignment with the exact gradient predict the final loss?** "
              f"Spearman rank correlation between alignment with rtrl and final loss, over the "
              f"{len(v['methods'])} approximate methods: {v['spearman']:.2f} (-1 = perfectly "
              f"predictive). Pairs where the better-aligned method ends with a loss worse by more "
              f"than both methods' seed spreads (std) added and by at least {MARGIN}, its "
              f"alignment higher by at least {ALIGN_MARGIN}:",
              ""]
    lines += [f"- {p}" for p in v["inversions"]] or ["- none"]
    lines += ["", f"Paper's observation ('alignment with exact methods does not alone explain "
              f"ultimate performance') reproduced here: **{v['reproduced']}**. {v['note']}", "",
              "Scaled down from the paper: " + res["scaled_down"], "",
              footer(res, " (including compilation)")]
    if res["plot"]:
        lines += ["", f"![final loss and alignment]({res['plot']})"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def plot(res, path):
    plt = pyplot()
    if plt is None:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    for name, r in res["methods"].items():
        ax.plot(r["curve_steps"], r["curve_test_norm"], label=name)
    for y, txt in ((1.0, "baseline"), (ONLY_T1 / BASELINE, "t1 only"), (OPTIMUM / BASELINE, "optimum")):
        ax.axhline(y, ls=":", c="0.5", lw=0.8)
        ax.text(0, y, txt, fontsize=7, va="bottom", color="0.4")
    ax.set_xlabel("time step")
    ax.set_ylabel("normalised test loss (best lr, mean over seeds)")
    ax.legend(fontsize=7, loc="upper right")
    ax = axes[1]
    names = list(res["methods"])
    for i, n in enumerate(names):
        vals = res["methods"][n]["best_test_norm"]
        ax.scatter([i] * len(vals), vals, s=14)
        ax.plot([i - 0.3, i + 0.3], [np.mean(vals)] * 2, c="k", lw=1)
    ax.set_xticks(range(len(names)), names, rotation=40, fontsize=8)
    ax.axhline(OPTIMUM / BASELINE, ls=":", c="0.5", lw=0.8)
    ax.set_ylabel("final normalised test loss (seeds)")
    ax = axes[2]
    a = res["alignment"]
    im = ax.imshow(np.asarray(a["cos"]), vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(a["methods"])), a["methods"], rotation=40, fontsize=8)
    ax.set_yticks(range(len(a["methods"])), a["methods"], fontsize=8)
    for i in range(len(a["methods"])):
        for j in range(len(a["methods"])):
            ax.text(j, i, f"{a['cos'][i][j]:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("pairwise gradient alignment (cos)")
    fig.suptitle(f"Add task (t1={T1}, t2={T2}), leaky RNN {res['config']['hidden']} units, online")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def verdict(res) -> dict:
    """Rank correlation of alignment-with-rtrl vs final loss, and the clear inversions."""
    a = res["alignment"]
    names = [n for n in a["methods"] if n != "rtrl" and n in res["methods"]]
    A = np.asarray(a["cos"])
    al = {n: A[a["methods"].index("rtrl"), a["methods"].index(n)] for n in names}
    m = res["methods"]
    loss = {n: m[n]["best_test_mean"] for n in names}
    spread = {n: m[n]["best_test_std"] for n in names}
    inv = []
    for x in names:
        for y in names:
            if al[x] > al[y] + ALIGN_MARGIN and loss[x] > loss[y] + max(spread[x] + spread[y], MARGIN):
                inv.append(f"{x} (alignment {al[x]:.2f}, loss {loss[x]:.3f}) vs {y} (alignment "
                           f"{al[y]:.2f}, loss {loss[y]:.3f})")
    rho = spearman([al[n] for n in names], [loss[n] for n in names]) if len(names) > 2 else float("nan")
    return {"methods": names, "spearman": rho, "inversions": inv, "reproduced": bool(inv),
            "note": ("An inversion is a pair the alignment ranks one way and the final loss the "
                     "other, beyond the seeds' spread; with none, alignment would have ranked "
                     "the methods as their final losses do.")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: few steps, one seed and lr")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--steps", type=int, default=None, help="training time steps (default 40000; quick 400)")
    ap.add_argument("--seeds", type=int, default=None, help="default 3 (quick 1)")
    ap.add_argument("--lrs", default=None, help="comma-separated SGD rates (default 0.003,0.01,0.03,0.1,0.3; quick 0.03)")
    ap.add_argument("--eval-steps", type=int, default=None, help="held-out steps (default 2000; quick 100)")
    ap.add_argument("--align-steps", type=int, default=None, help="default 3000 (quick 100)")
    ap.add_argument("--align-lr", type=float, default=0.03)
    ap.add_argument("--methods", default=None, help="default: every registered one of "
                    + ",".join(METHODS) + " (quick: " + ",".join(QUICK_METHODS) + ")")
    args = ap.parse_args(argv)
    avail = available_methods()
    default = [m for m in avail if m in QUICK_METHODS] if args.quick else avail
    methods = [m.strip() for m in (args.methods or ",".join(default)).split(",") if m.strip()]
    bad = [m for m in methods if m not in avail]
    if bad:
        ap.error(f"--methods: unknown or unavailable {bad}; choose from {avail}")
    if "rtrl" not in methods:
        ap.error("--methods must include rtrl (it drives the alignment trajectory)")
    q = args.quick
    steps = args.steps or (400 if q else 40000)
    seeds = args.seeds or (1 if q else 3)
    lrs = [float(v) for v in (args.lrs or ("0.03" if q else "0.003,0.01,0.03,0.1,0.3")).split(",")]
    eval_steps = args.eval_steps or (100 if q else 2000)
    align_steps = args.align_steps or (100 if q else 3000)
    burn_in = align_steps // 3
    os.makedirs(args.out, exist_ok=True)

    t0 = time.perf_counter()
    model = add_model()
    train = stream(steps, 0)
    validate = validator(model, stream(eval_steps, 1), stream(eval_steps, 2))
    eval_every = max(WINDOW, steps // 10 // WINDOW * WINDOW)
    res = {"config": {"t1": T1, "t2": T2, "hidden": HIDDEN, "tau": TAU, "steps": steps,
                      "seeds": seeds, "lrs": lrs, "eval_steps": eval_steps, "window": WINDOW,
                      "quick": q, "optimizer": "sgd, no clipping", "baseline_nats": BASELINE},
           "methods": {}}
    for name in methods:
        r = train_method(model, name, train, validate, lrs, seeds, eval_every)
        res["methods"][name] = r
        print(f"{name:12s} lr {r['best_lr']:g}: normalised test loss {r['best_test_mean']:.3f} +- "
              f"{r['best_test_std']:.3f} ({r['seconds']:.0f} s) {r['status']}",
              file=sys.stderr, flush=True)
    # rtrl drives, first row; the readout-only control has no cell gradient to align
    names = ["rtrl"] + [m for m in methods if m not in ("rtrl", "readout only")]
    t1 = time.perf_counter()
    cos, counted = alignment_run(model, names, args.align_lr, align_steps, burn_in + WINDOW - 1,
                                 fast_compile=q)
    res["alignment"] = {"methods": names, "cos": cos.tolist(), "lr": args.align_lr,
                        "steps": align_steps, "burn_in": burn_in, "counted": counted,
                        "seconds": time.perf_counter() - t1}
    print(f"alignment ({time.perf_counter() - t1:.0f} s): with rtrl "
          + ", ".join(f"{n} {cos[0, i]:.2f}" for i, n in enumerate(names)), file=sys.stderr)
    res["verdict"] = verdict(res)
    res["scaled_down"] = (
        f"{steps} training steps per run (the authors' main.py: 30000; the paper's own run "
        f"length, seeds and lr grid were not checked), {seeds} seeds x "
        f"{len(lrs)} learning rates per method, alignment over {align_steps} steps of one "
        f"trajectory; held-out loss on {eval_steps} steps. Here the lr grid is coarse (x3 "
        f"apart) and the same for every method.")
    res["total_seconds"] = time.perf_counter() - t0
    res["machine"] = machine()
    save(res, args.out, "marschall_add.png", plot, write_md)
    print(f"total {res['total_seconds']:.1f} s; spearman {res['verdict']['spearman']:.2f}, "
          f"inversions {len(res['verdict']['inversions'])}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
