"""Compare the gradient estimators ("BPTT variants") in one run: accuracy, cost, learning.

``jrnn bench-grads [options]`` (or ``python experiments/bptt_variants.py``)
measures, for one cell type, in one process:

1. **Accuracy** -- on a small character LM (default GRU-32, ``T = 35``), the
   cosine similarity and relative L2 error of each estimator's gradient against
   full BPTT on the *same* params, batch and initial carry, at initialisation
   and after a few full-BPTT updates. Stochastic estimators (``randomized``,
   ``uoro``) are run for ``--keys`` PRNG keys at once (``jax.vmap``); their
   *bias* is ``|mean_k g_k - g_full| / |g_full|`` (with the Monte-Carlo floor
   ``sqrt(variance / keys)`` beside it) and their *variance* is
   ``mean_k |g_k - mean g|^2 / |g_full|^2``. Numbers are on the cell's params:
   the readout ("head") gets its exact gradient from every estimator.
2. **Cost** -- wall time per update (median of ``--repeats`` calls of the
   compiled train step, after compilation, ``jax.block_until_ready``) and the
   compiled step's memory (XLA's buffer assignment from
   ``jit(step).lower(...).compile().memory_analysis()``: temporaries +
   arguments + outputs - donated/aliased; static, not a measured RSS) as the
   sequence length ``T`` grows, plus a sweep of checkpointed BPTT's segment
   length at the largest ``T``. Online estimators are timed only while the
   predicted time per update stays under ``--online-max-seconds``.
3. **Learning** -- validation perplexity against updates and against
   training wall-clock (a) on the char LM of *The Time Machine* (first
   ``--lm-chars`` characters) and (b) on the copy task
   (:func:`jrnn.data.copy_task`), whose ``--copy-delay`` exceeds the
   truncation lengths, so truncated BPTT cannot learn it. Every estimator
   trains through the same :func:`jrnn.train_step`. Online estimators stop
   after ``--lm-online-budget`` / ``--copy-online-budget`` seconds of training.

It writes ``results.json``, ``results.md`` and PNG plots (``accuracy.png``,
``cost.png``, ``learning_lm.png``, ``learning_copy.png``; matplotlib is
optional) to ``--out``, prints one progress line per stage on stderr, and
records the machine (CPU model, JAX version, device, load average) in both
files. ``--quick`` shrinks every size for a CI smoke run (seconds).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from typing import Any

__all__ = ["main", "build_parser", "DEFAULTS", "QUICK"]

DEFAULT_OUT = os.path.join("experiments", "results", "bptt_variants")
SECTIONS = ("accuracy", "cost", "lm", "copy")  # "learning" = lm,copy
CELLS = ("gru", "lstm", "rnn")
ONLINE = ("rtrl", "uoro", "snap1")
STOCHASTIC = ("randomized", "uoro")

# Full-run defaults and their --quick counterparts (an explicit flag wins over both).
DEFAULTS: dict[str, Any] = dict(
    estimators="full,truncated:5,truncated:17,randomized:0.8,randomized:0.95,checkpointed,rtrl,uoro,snap1",
    hidden=32, batch=8, seq_len=35, keys=64, pretrain=100,
    lengths="32,128,512,2048", repeats=5, segments="8,32,128,512", online_max_seconds=4.0,
    lm_chars=50_000, lm_hidden=64, lm_batch=32, lm_seq_len=35, lm_updates=300, lm_lr=0.01,
    copy_hidden=16, copy_batch=32, copy_symbols=8, copy_len=2, copy_delay=30, copy_updates=800,
    copy_lr=0.02, eval_every=25, lm_online_budget=40.0, copy_online_budget=80.0,
)
QUICK: dict[str, Any] = dict(
    hidden=8, batch=4, seq_len=12, keys=8, pretrain=5,
    lengths="16,64", repeats=1, segments="4,16", online_max_seconds=1.0,
    lm_chars=4_000, lm_hidden=8, lm_batch=4, lm_seq_len=12, lm_updates=10, lm_lr=0.01,
    copy_hidden=8, copy_batch=8, copy_symbols=3, copy_len=2, copy_delay=6, copy_updates=10,
    copy_lr=0.02, eval_every=5, lm_online_budget=5.0, copy_online_budget=5.0,
)


# ----------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``jrnn bench-grads``."""

    def d(name):
        return f"(default {DEFAULTS[name]}; --quick {QUICK[name]})" if name in QUICK else \
            f"(default {DEFAULTS[name]})"

    p = argparse.ArgumentParser(
        prog="jrnn bench-grads",
        description="Compare jrnn's gradient estimators (full, truncated:K, randomized:P, "
                    "checkpointed[:S], rtrl, uoro, snap1) on one cell: gradient accuracy against "
                    "full BPTT, time and memory per update as T grows, and learning curves on a "
                    "char LM and on the copy task. Writes results.json, results.md and PNG plots.",
        epilog="Example: JRNN_DATA_DIR=../shared/data jrnn bench-grads --out /tmp/bg   "
               "(CI: jrnn bench-grads --quick --corpus pydoc --out /tmp/bg)")
    g = p.add_argument_group("run")
    g.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    g.add_argument("--quick", action="store_true",
                   help="tiny sizes everywhere for a CI smoke run (a few seconds per estimator)")
    g.add_argument("--only", default="accuracy,cost,learning",
                   help="comma-separated sections to run: accuracy, cost, lm, copy, learning (= lm,copy) "
                        "(default all)")
    g.add_argument("--estimators", default=None,
                   help="comma-separated estimator specs (jrnn.grads.parse) " + d("estimators"))
    g.add_argument("--cost-estimators", default=None,
                   help="specs timed in the cost section (default: --estimators with one "
                        "truncated and one randomized, the first of each)")
    g.add_argument("--learn-estimators", default=None, help="specs trained in the learning "
                   "section (default: --estimators)")
    g.add_argument("--cell", default="gru", choices=CELLS, help="recurrent cell for every section (default gru)")
    g.add_argument("--corpus", default="timemachine", choices=("timemachine", "pydoc"),
                   help="char-LM text: 'timemachine' ($JRNN_DATA_DIR, cache or download, sha1 "
                        "checked) or the offline 'pydoc' (default timemachine)")
    g.add_argument("--seed", type=int, default=0, help="seed of params, data and keys (default 0)")
    g.add_argument("--no-plots", action="store_true", help="skip the PNG plots")

    a = p.add_argument_group("accuracy and cost model (small: RTRL costs O(N^2 P) per step)")
    a.add_argument("--hidden", type=int, help="hidden size " + d("hidden"))
    a.add_argument("--batch", type=int, help="batch size " + d("batch"))
    a.add_argument("--seq-len", type=int, help="T of the accuracy batch " + d("seq_len"))
    a.add_argument("--keys", type=int, help="PRNG keys per stochastic estimator, vmapped " + d("keys"))
    a.add_argument("--pretrain", type=int, help="full-BPTT updates before the 'trained' accuracy "
                   "measurement; 0 skips it " + d("pretrain"))
    a.add_argument("--lengths", help="sequence lengths T of the cost section " + d("lengths"))
    a.add_argument("--repeats", type=int, help="timed calls per (estimator, T); median kept " + d("repeats"))
    a.add_argument("--segments", help="checkpointed segment lengths S swept at the largest T, or "
                   "'none' " + d("segments"))
    a.add_argument("--online-max-seconds", type=float, help="skip timing an online estimator at a T "
                   "where its predicted time per update exceeds this " + d("online_max_seconds"))
    a.add_argument("--no-rss", dest="rss", action="store_false", help="skip the peak-RSS check of full "
                   "vs checkpointed at the largest T (one subprocess each, Linux; always off with --quick)")

    lm = p.add_argument_group("learning: char LM")
    lm.add_argument("--lm-chars", type=int, help="characters of the corpus used (last 10%% held out) " + d("lm_chars"))
    lm.add_argument("--lm-hidden", type=int, help="hidden size " + d("lm_hidden"))
    lm.add_argument("--lm-batch", type=int, help="batch size " + d("lm_batch"))
    lm.add_argument("--lm-seq-len", type=int, help="T " + d("lm_seq_len"))
    lm.add_argument("--lm-updates", type=int, help="updates per estimator " + d("lm_updates"))
    lm.add_argument("--lm-lr", type=float, help="Adam learning rate, clip 1 " + d("lm_lr"))
    lm.add_argument("--lm-online-budget", type=float, help="training seconds per online estimator "
                    "(rtrl, uoro, snap1); it stops there, BPTT variants always do all updates "
                    + d("lm_online_budget"))

    c = p.add_argument_group("learning: copy task (recall copy-len symbols after copy-delay steps)")
    c.add_argument("--copy-hidden", type=int, help="hidden size " + d("copy_hidden"))
    c.add_argument("--copy-batch", type=int, help="batch size " + d("copy_batch"))
    c.add_argument("--copy-symbols", type=int, help="distinct symbols " + d("copy_symbols"))
    c.add_argument("--copy-len", type=int, help="symbols to remember " + d("copy_len"))
    c.add_argument("--copy-delay", type=int, help="delay (> truncation K to defeat it) " + d("copy_delay"))
    c.add_argument("--copy-updates", type=int, help="updates per estimator " + d("copy_updates"))
    c.add_argument("--copy-lr", type=float, help="Adam learning rate, clip 1 " + d("copy_lr"))
    c.add_argument("--copy-online-budget", type=float, help="as --lm-online-budget, for this task "
                   + d("copy_online_budget"))

    t = p.add_argument_group("learning: both tasks")
    t.add_argument("--eval-every", type=int, help="updates between validation points " + d("eval_every"))
    return p


def _resolve(args) -> argparse.Namespace:
    """Fill unset options from DEFAULTS or QUICK and validate them eagerly."""
    table = dict(DEFAULTS, **QUICK) if args.quick else DEFAULTS
    for k, v in table.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    args.rss = args.rss and not args.quick and sys.platform.startswith("linux")
    args.only = [x for s in only for x in (("lm", "copy") if s == "learning" else (s,))]
    bad = [s for s in args.only if s not in SECTIONS]
    if bad or not args.only:
        raise ValueError(f"--only takes a comma-separated subset of {SECTIONS}, got {bad or args.only}")
    args.estimators = _specs(args.estimators, "--estimators")
    if args.cost_estimators is None:
        seen, out = set(), []
        for s in args.estimators:
            fam = s.split(":")[0]
            if fam in ("truncated", "randomized"):
                if fam in seen:
                    continue
                seen.add(fam)
            out.append(s)
        args.cost_estimators = out
    else:
        args.cost_estimators = _specs(args.cost_estimators, "--cost-estimators")
    args.learn_estimators = (args.estimators if args.learn_estimators is None
                             else _specs(args.learn_estimators, "--learn-estimators"))
    args.lengths = _ints(args.lengths, "--lengths")
    args.segments = [] if str(args.segments).lower() == "none" else _ints(args.segments, "--segments")
    for name in ("hidden", "batch", "seq_len", "keys", "repeats", "lm_chars", "lm_hidden", "lm_batch",
                 "lm_seq_len", "lm_updates", "copy_hidden", "copy_batch", "copy_symbols", "copy_len",
                 "copy_delay", "copy_updates", "eval_every"):
        v = getattr(args, name)
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1, got {v!r}")
    if args.keys < 2:
        raise ValueError(f"--keys must be >= 2 to estimate a variance, got {args.keys}")
    if args.pretrain < 0:
        raise ValueError(f"--pretrain must be >= 0, got {args.pretrain}")
    for name in ("lm_lr", "copy_lr", "lm_online_budget", "copy_online_budget", "online_max_seconds"):
        v = getattr(args, name)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number > 0, got {v!r}")
    return args


def _ints(text, flag):
    try:
        out = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated integers, got {text!r}") from None
    if not out or min(out) < 1:
        raise ValueError(f"{flag} must be comma-separated integers >= 1, got {text!r}")
    return sorted(set(out))


def _specs(text, flag):
    from . import grads

    out = [s.strip() for s in str(text).split(",") if s.strip()]
    if not out:
        raise ValueError(f"{flag} is empty")
    for s in out:
        grads.parse(s)  # raises ValueError naming the bad spec
    return list(dict.fromkeys(out))


# ----------------------------------------------------------------------------
# helpers


class _Log:
    """One progress line per stage on stderr, with the elapsed time."""

    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self, msg: str):
        print(f"[bench-grads {time.perf_counter() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def _family(spec: str) -> str:
    return spec.split(":")[0]


def _machine() -> dict:
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        import jaxlib
        jaxlib_version = jaxlib.__version__
    except (ImportError, AttributeError):
        jaxlib_version = "?"
    dev = jax.devices()[0]
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    commit = None
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        commit = subprocess.run(["git", "-C", here, "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    sources = {}  # the estimator code actually imported (the git tree may be dirty)
    for name in ("grads", "unroll", "models", "cells", "train"):
        try:
            with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py"), "rb") as f:
                sources[f"{name}.py"] = hashlib.sha1(f.read()).hexdigest()[:12]
        except OSError:
            pass
    return {"cpu": cpu, "cores": cores, "platform": platform.platform(), "python": platform.python_version(),
            "jax": jax.__version__, "jaxlib": jaxlib_version, "device": f"{dev.platform}:{dev.device_kind}",
            "devices": len(jax.devices()), "git": commit, "sources_sha1": sources,
            "loadavg_start": _loadavg()}


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _lm_data(args):
    """Char corpus (first ``lm_chars`` ids), its vocabulary, train/val split."""
    from . import data

    text = data.time_machine() if args.corpus == "timemachine" else data.bundled_text()
    corpus, vocab = data.load_corpus(text, "char", max_tokens=args.lm_chars)
    n_val = max(len(corpus) // 10, 2)
    return corpus[:-n_val], corpus[-n_val:], vocab


def _cell(args, hidden):
    import jrnn

    return {"gru": jrnn.gru, "lstm": jrnn.lstm, "rnn": jrnn.elman}[args.cell](hidden)


def _batch(x, y, mask=None):
    import jax.numpy as jnp

    import jrnn

    return jrnn.Batch(jnp.asarray(x), jnp.asarray(y), None if mask is None else jnp.asarray(mask))


def _lm_batches(train, B, T, seed):
    """Endless random-partition batches (time-major), epoch after epoch."""
    from . import data

    epoch = 0
    while True:
        for x, y in data.batches(train, B, T, "random", seed=seed, epoch=epoch):
            yield _batch(x.T, y.T)
        epoch += 1


def _compile(step, state, batch, key):
    """``(compiled, seconds)`` of a jitted train step (falls back to a warm-up call)."""
    import jax

    t = time.perf_counter()
    if hasattr(step, "lower"):
        compiled = step.lower(state, batch, key).compile()
    else:  # not a jax.jit object: warm up on a copy (the step may donate its input)
        jax.block_until_ready(step(jax.tree.map(lambda a: a.copy(), state), batch, key))
        compiled = step
    return compiled, time.perf_counter() - t


def _memory(compiled) -> dict | None:
    try:
        m = compiled.memory_analysis()
    except Exception as e:  # backend without memory_analysis: report, do not fail
        return {"error": f"{type(e).__name__}: {e}"}
    if m is None:
        return None
    d = {k: int(getattr(m, f"{k}_size_in_bytes", 0) or 0) for k in ("temp", "argument", "output", "alias")}
    d["peak"] = d["temp"] + d["argument"] + d["output"] - d["alias"]
    return d


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


# ----------------------------------------------------------------------------
# 1. accuracy


def _accuracy(args, log, train, vocab) -> dict:
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    import jrnn
    from . import data, grads

    model = jrnn.language_model(_cell(args, args.hidden), len(vocab))
    B, T = args.batch, args.seq_len
    key = jax.random.key(args.seed)
    x, y = next(iter(data.batches(train, B, T, "random", seed=args.seed + 1)))
    batch = _batch(x.T, y.T)
    params0 = model.init(key)
    param_sets = {"init": params0}
    if args.pretrain:
        log(f"accuracy: {args.pretrain} full-BPTT updates for the 'trained' params")
        opt = jrnn.make_optimizer("adam", args.lm_lr, clip=1.0)
        st = jrnn.init_state(model, opt, grads.full(), key, B)
        step = jrnn.train_step(model, opt, grads.full(), carry_over=False)
        it = _lm_batches(train, B, T, args.seed + 2)
        for i in range(args.pretrain):
            st, _ = step(st, next(it), jax.random.fold_in(key, i))
        param_sets["trained"] = jax.device_get(st.params)

    vec = lambda g: ravel_pytree(g["cell"])[0]
    vec_all = lambda g: ravel_pytree(g)[0]
    keys = jax.random.split(jax.random.key(args.seed + 3), args.keys)
    out = {"model": f"{args.cell}-{args.hidden} char LM, V={len(vocab)}", "B": B, "T": T,
           "keys": args.keys, "pretrain_updates": args.pretrain,
           "metric_note": "cosine / relative L2 error on the cell's params (the head is exact for "
                          "every estimator); '_all' = all params", "results": {}}
    fulls = {}
    for spec in ["full"] + [s for s in args.estimators if s != "full"]:
        est = grads.parse(spec)
        rec = out["results"].setdefault(spec, {})
        try:
            carry = est.init_carry(model, params0, (B,))
        except ValueError as e:
            rec["skipped"] = str(e)
            log(f"accuracy: {spec}: skipped ({e})")
            continue
        t0 = time.perf_counter()
        stochastic = _family(spec) in STOCHASTIC
        if stochastic:
            fn = jax.jit(lambda p, c, ks: jax.vmap(
                lambda k: (lambda r: (vec(r[1]), vec_all(r[1])))(est.value_and_grad(model, p, c, batch, k)))(ks))
        else:
            fn = jax.jit(lambda p, c, k: (lambda r: (vec(r[1]), vec_all(r[1])))(
                est.value_and_grad(model, p, c, batch, k)))
        for name, params in param_sets.items():
            if stochastic:
                G, Ga = fn(params, carry, keys)
            else:
                g, ga = fn(params, carry, keys[0])
                G, Ga = g[None], ga[None]
            if spec == "full":
                fulls[name] = (G[0], Ga[0])
            f, fa = fulls[name]
            rec[name] = _grad_stats(G, f) | {k + "_all": v for k, v in _grad_stats(Ga, fa).items()
                                               if k in ("cos", "rel_err")}
        jax.block_until_ready(G)
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        r = rec.get("trained", rec["init"])
        log(f"accuracy: {spec:16s} cos {r['cos']:.4f}  rel err {r['rel_err']:.3g}"
            + (f"  bias {r['bias']:.3g} (floor {r['bias_floor']:.2g})  var {r['variance']:.3g}"
               if stochastic else "") + f"  [{rec['seconds']:.1f}s]")
    return out


def _grad_stats(G, f) -> dict:
    """Stats of ``G [N, P]`` (N samples of an estimate) against the reference ``f [P]``."""
    import jax.numpy as jnp

    nf = jnp.linalg.norm(f)
    cos = (G @ f) / (jnp.linalg.norm(G, axis=1) * nf)
    rel = jnp.linalg.norm(G - f, axis=1) / nf
    d = {"cos": float(cos.mean()), "rel_err": float(rel.mean()), "grad_norm": float(jnp.linalg.norm(G, axis=1).mean()),
         "full_norm": float(nf)}
    N = G.shape[0]
    if N > 1:
        mean = G.mean(0)
        var = float(jnp.sum((G - mean) ** 2) / (N - 1) / nf ** 2)
        d.update(cos_std=float(cos.std()), cos_of_mean=float(mean @ f / (jnp.linalg.norm(mean) * nf)),
                 bias=float(jnp.linalg.norm(mean - f) / nf), bias_floor=math.sqrt(var / N),
                 variance=var, n=N)
    return d


# ----------------------------------------------------------------------------
# 2. cost


def _cost(args, log, vocab_size) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jrnn
    from . import grads

    model = jrnn.language_model(_cell(args, args.hidden), vocab_size)
    opt = jrnn.make_optimizer("adam", 1e-3, clip=1.0)
    B = args.batch
    rng = np.random.default_rng(args.seed)
    key = jax.random.key(args.seed)
    out = {"model": f"{args.cell}-{args.hidden} char LM, V={vocab_size}", "B": B, "lengths": args.lengths,
           "repeats": args.repeats,
           "memory_note": "peak = temp + arguments + outputs - aliased (donated) bytes of the compiled "
                          "train step, from XLA's buffer assignment (compiled.memory_analysis()); a "
                          "static plan, not a measured RSS",
           "results": {}, "segments": {}}

    def measure(spec, T, batch, timed=True):
        est = grads.parse(spec)
        st = jrnn.init_state(model, opt, est, key, B)
        step = jrnn.train_step(model, opt, est, carry_over=False)
        compiled, comp_s = _compile(step, st, batch, key)
        rec = {"compile_s": round(comp_s, 2), "memory": _memory(compiled)}
        if timed:
            st, m = compiled(st, batch, key)  # warm (first execution)
            jax.block_until_ready(st)
            ts = []
            ks = [jax.random.fold_in(key, i) for i in range(args.repeats)]
            for k in ks:
                t0 = time.perf_counter()
                st, m = compiled(st, batch, k)
                jax.block_until_ready((st, m))
                ts.append(time.perf_counter() - t0)
            rec["seconds"] = _median(ts)
            rec["min_seconds"] = min(ts)
            rec["all_seconds"] = [round(t, 5) for t in ts]
        return rec

    last = {}  # online spec -> (T, seconds) of its last timed length
    for T in args.lengths:
        batch = _batch(rng.integers(0, vocab_size, (T, B), dtype=np.int32),
                       rng.integers(0, vocab_size, (T, B), dtype=np.int32))
        for spec in args.cost_estimators:
            rec = out["results"].setdefault(spec, {})
            timed, note = True, None
            if _family(spec) in ONLINE and spec in last:
                T0, s0 = last[spec]
                pred = s0 * T / T0
                if pred > args.online_max_seconds:
                    timed = False
                    note = (f"time skipped: predicted {pred:.2g} s/update (linear in T from "
                            f"{s0:.2g} s at T={T0}) > --online-max-seconds {args.online_max_seconds:g}")
            try:
                r = measure(spec, T, batch, timed)
            except ValueError as e:  # e.g. RTRL over its max_bytes
                rec[str(T)] = {"skipped": str(e)}
                log(f"cost: T={T:5d} {spec:16s} skipped ({e})")
                continue
            if note:
                r["note"] = note
            rec[str(T)] = r
            if timed and _family(spec) in ONLINE:
                last[spec] = (T, r["seconds"])
            mem = (r["memory"] or {}).get("peak")
            log(f"cost: T={T:5d} {spec:16s} "
                + (f"{1e3 * r['seconds']:9.2f} ms/update" if timed else "   (not timed)    ")
                + (f"  peak {mem / 2**20:8.2f} MiB" if mem is not None else ""))

    Tmax = max(args.lengths)
    batch = _batch(rng.integers(0, vocab_size, (Tmax, B), dtype=np.int32),
                   rng.integers(0, vocab_size, (Tmax, B), dtype=np.int32))
    full_peak = ((out["results"].get("full", {}).get(str(Tmax)) or {}).get("memory") or {}).get("peak")
    if "full" not in out["results"]:
        full_peak = (measure("full", Tmax, batch, timed=False)["memory"] or {}).get("peak")
    sweep = {}
    for S in [s for s in args.segments if s <= Tmax]:
        r = measure(f"checkpointed:{S}", Tmax, batch)
        peak = (r["memory"] or {}).get("peak")
        if peak is not None and full_peak:
            r["ratio_to_full"] = peak / full_peak
        sweep[str(S)] = r
        log(f"cost: T={Tmax} checkpointed:{S:<4d} {1e3 * r['seconds']:9.2f} ms/update  peak "
            f"{(peak or 0) / 2**20:8.2f} MiB  ({r.get('ratio_to_full', float('nan')):.3f} of full)")
    out["segments"] = {"T": Tmax, "full_peak": full_peak, "results": sweep}
    ck = [s for s in args.cost_estimators if _family(s) == "checkpointed"]
    summary = {}
    if full_peak:
        for s in ck:
            p = ((out["results"][s].get(str(Tmax)) or {}).get("memory") or {}).get("peak")
            if p:
                summary[s] = p / full_peak
        below = [int(S) for S, r in sweep.items() if r.get("ratio_to_full", 1) < 0.25]
        best = min(sweep.items(), key=lambda kv: kv[1].get("ratio_to_full", 9), default=(None, {}))
        out["checkpoint_summary"] = {
            "T": Tmax, "ratio_default": summary, "best_S": None if best[0] is None else int(best[0]),
            "best_ratio": best[1].get("ratio_to_full"), "S_below_quarter": below}
    if args.rss:
        out["rss"] = _rss(args, vocab_size, Tmax, ["full"] + ck[:1], log)
    return out


_RSS_SNIPPET = r"""
import sys, jax, jax.numpy as jnp, numpy as np, jrnn
cell, H, V, B, T, spec = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
model = jrnn.language_model({"gru": jrnn.gru, "lstm": jrnn.lstm, "rnn": jrnn.elman}[cell](H), V)
opt = jrnn.make_optimizer("adam", 1e-3, clip=1.0)
est = jrnn.grads.parse(spec)
st = jrnn.init_state(model, opt, est, jax.random.key(0), B)
b = jrnn.Batch(jnp.zeros((T, B), jnp.int32), jnp.zeros((T, B), jnp.int32))
c = jrnn.train_step(model, opt, est, carry_over=False).lower(st, b, jax.random.key(0)).compile()
def status(k):
    for line in open("/proc/self/status"):
        if line.startswith(k):
            return int(line.split()[1]) * 1024
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak-RSS counter after compilation
before = status("VmRSS:")
st, m = c(st, b, jax.random.key(1)); jax.block_until_ready(st)
print(before, status("VmHWM:"))
"""


def _rss(args, V, T, specs, log) -> dict:
    """Peak RSS growth during one execution of the compiled step, one subprocess per spec."""
    out = {"note": "peak-RSS growth (VmHWM after resetting it via /proc/self/clear_refs, minus VmRSS "
                   "before) during the first execution of the compiled step, in a fresh subprocess; "
                   "includes allocator effects", "T": T}
    for spec in specs:
        try:
            r = subprocess.run([sys.executable, "-c", _RSS_SNIPPET, args.cell, str(args.hidden), str(V),
                                str(args.batch), str(T), spec], capture_output=True, text=True, timeout=600)
            before, hwm = (int(v) for v in r.stdout.split()[-2:])
            out[spec] = {"rss_before": before, "peak_growth": hwm - before}
            log(f"cost: RSS T={T} {spec}: +{(hwm - before) / 2**20:.1f} MiB during the step")
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            out[spec] = {"error": f"{type(e).__name__}: {e}"}
            log(f"cost: RSS {spec}: failed ({e})")
    return out


# ----------------------------------------------------------------------------
# 3. learning


def _train_curve(model, opt, spec, batches, evaluate, args, updates, batch_size, log, task,
                 budget) -> dict:
    """Train one estimator with jrnn.train_step; validation points vs updates and seconds."""
    import jax

    import jrnn
    from . import grads

    est = grads.parse(spec)
    key = jax.random.key(args.seed)
    try:
        state = jrnn.init_state(model, opt, est, key, batch_size)
    except ValueError as e:
        log(f"learning[{task}]: {spec}: skipped ({e})")
        return {"skipped": str(e)}
    step = jrnn.train_step(model, opt, est, carry_over=False)
    b = next(batches)
    compiled, comp_s = _compile(step, state, b, key)
    online = _family(spec) in ONLINE
    budget = budget if online else math.inf
    rec = {"updates": [0], "seconds": [0.0], "compile_s": round(comp_s, 2), "nonfinite": 0,
           "train_loss": [], "stopped_by_budget": False}
    for k, v in evaluate(state.params).items():
        rec.setdefault(k, []).append(v)
    elapsed, window, i = 0.0, [], 0
    while i < updates:
        k = jax.random.fold_in(key, i)
        t0 = time.perf_counter()
        state, m = compiled(state, b, k)
        jax.block_until_ready(state)
        elapsed += time.perf_counter() - t0
        i += 1
        window.append(m)
        stop = elapsed > budget
        if i % args.eval_every == 0 or i == updates or stop:
            ms = jax.device_get(window)
            rec["nonfinite"] += sum(1 for x in ms if not bool(x["finite"]))
            rec["train_loss"].append(float(sum(float(x["loss"]) for x in ms) / len(ms)))
            window = []
            rec["updates"].append(i)
            rec["seconds"].append(round(elapsed, 4))
            for k, v in evaluate(state.params).items():
                rec[k].append(v)
        if stop:
            rec["stopped_by_budget"] = i < updates
            break
        b = next(batches)
    rec["updates_done"] = i
    rec["sec_per_update"] = elapsed / max(i, 1)
    return rec


def _learning_lm(args, log, train, val, vocab) -> dict:
    import jrnn
    from . import data

    model = jrnn.language_model(_cell(args, args.lm_hidden), len(vocab))
    opt = jrnn.make_optimizer("adam", args.lm_lr, clip=1.0)
    B, T = args.lm_batch, args.lm_seq_len

    def evaluate(params):
        nll = jrnn.evaluate(model, params, data.batches(val, B, T, "sequential", seed=args.seed),
                            carry_over=True)
        return {"val_loss": nll, "val_ppl": math.exp(min(nll, 700.0))}

    out = {"title": f"char LM ({args.corpus})", "task": f"char LM on {args.corpus} (first {args.lm_chars} chars, last 10% held out, "
                   f"V={len(vocab)})", "model": f"{args.cell}-{args.lm_hidden}", "B": B, "T": T,
           "optimizer": f"adam lr={args.lm_lr} clip=1", "updates": args.lm_updates,
           "partition": "random, fresh carry per batch (carry_over=False)",
           "online_budget_s": args.lm_online_budget, "metric": "val_ppl", "results": {}}
    for spec in args.learn_estimators:
        r = _train_curve(model, opt, spec, _lm_batches(train, B, T, args.seed), evaluate, args,
                         args.lm_updates, B, log, "lm", args.lm_online_budget)
        out["results"][spec] = r
        if "skipped" not in r:
            log(f"learning[lm]: {spec:16s} {r['updates_done']:4d} updates, val ppl {r['val_ppl'][-1]:7.3f}, "
                f"{1e3 * r['sec_per_update']:8.1f} ms/update" + (" (stopped by --online-budget)"
                                                             if r["stopped_by_budget"] else ""))
    return out


def _learning_copy(args, log) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jrnn
    from .data import copy_task

    K, L, D, B = args.copy_symbols, args.copy_len, args.copy_delay, args.copy_batch
    V = K + 2
    model = jrnn.classifier(_cell(args, args.copy_hidden), V, V, tokens=True)
    opt = jrnn.make_optimizer("adam", args.copy_lr, clip=1.0)
    xe, ye, me = copy_task(512, K, L, D, rng=np.random.default_rng([args.seed, 999_999]))
    eb = _batch(xe, ye, me)

    @jax.jit
    def _eval(params):
        hs, _ = jrnn.unroll(model.cell, params["cell"], eb.inputs)
        logits = model.head(params["head"], hs)
        w = eb.mask / eb.mask.sum()
        return jnp.sum(model.loss(logits, eb.targets) * w), jrnn.accuracy(logits, eb.targets, eb.mask)

    def evaluate(params):
        loss, acc = _eval(params)
        return {"val_loss": float(loss), "val_acc": float(acc)}

    def batches():
        i = 0
        while True:
            x, y, m = copy_task(B, K, L, D, rng=np.random.default_rng([args.seed, i]))
            yield _batch(x, y, m)
            i += 1

    out = {"title": f"copy task (delay {D})", "task": f"copy task: remember {L} of {K} symbols over a delay of {D} (T={2 * L + D}); "
                   f"loss and accuracy on the recall window of 512 held-out sequences",
           "model": f"{args.cell}-{args.copy_hidden}", "B": B, "T": 2 * L + D,
           "optimizer": f"adam lr={args.copy_lr} clip=1", "updates": args.copy_updates,
           "chance_loss": math.log(K), "chance_acc": 1.0 / K,
           "online_budget_s": args.copy_online_budget, "metric": "val_acc", "results": {}}
    for spec in args.learn_estimators:
        r = _train_curve(model, opt, spec, batches(), evaluate, args, args.copy_updates, B, log, "copy",
                         args.copy_online_budget)
        out["results"][spec] = r
        if "skipped" not in r:
            log(f"learning[copy]: {spec:16s} {r['updates_done']:4d} updates, recall acc "
                f"{r['val_acc'][-1]:.3f} loss {r['val_loss'][-1]:.3f}, {1e3 * r['sec_per_update']:7.1f} ms/update"
                + (" (stopped by --online-budget)" if r["stopped_by_budget"] else ""))
    return out


# ----------------------------------------------------------------------------
# report: Markdown and plots


def _f(x, fmt=".4f", missing="—"):
    return missing if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def _markdown(res: dict) -> str:
    m, cfg = res["machine"], res["config"]
    L = ["# Gradient estimators: accuracy, cost, learning", "",
         f"Machine: {m['cpu']}, {m['cores']} cores usable, {m['device']}, JAX {m['jax']} (jaxlib "
         f"{m['jaxlib']}), Python {m['python']}; jrnn {m.get('git') or '?'}. Load average at start "
         f"{m.get('loadavg_start')}, at end {m.get('loadavg_end')}"
         + (" -- the CPUs were shared with other jobs, so timings are noisy (compare ratios, not "
            "absolute times)." if (m.get("loadavg_start") or [0])[0] > (m["cores"] or 1) * 0.5 else "."),
         f"Total run time {res['total_seconds']:.0f} s{' (--quick)' if cfg['quick'] else ''}.", ""]
    acc = res.get("accuracy")
    if acc:
        names = [n for n in ("init", "trained") if any(n in r for r in acc["results"].values())]
        L += ["## Gradient accuracy against full BPTT", "",
              f"{acc['model']}, B={acc['B']}, T={acc['T']}, fresh zero carry; 'init' = params at "
              f"initialisation, 'trained' = after {acc['pretrain_updates']} full-BPTT Adam updates. "
              f"{acc['metric_note']}. Stochastic estimators: mean over {acc['keys']} keys; bias = "
              f"|mean - full|/|full| (its Monte-Carlo floor sqrt(var/keys) in brackets), variance = "
              f"mean |g - mean|² / |full|².", ""]
        hdr = "| estimator | " + " | ".join(f"cos ({n}) | rel. err ({n})" for n in names) + \
              " | bias (trained) | variance (trained) |"
        L += [hdr, "|" + "---|" * (hdr.count("|") - 1)]
        for spec, r in acc["results"].items():
            if "skipped" in r:
                L.append(f"| {spec} | skipped: {r['skipped']} |")
                continue
            last = r.get("trained", r.get("init"))
            cells = " | ".join(f"{_f(r[n]['cos'])} | {_f(r[n]['rel_err'], '.3g')}" for n in names)
            bias = f"{_f(last.get('bias'), '.3g')} ({_f(last.get('bias_floor'), '.2g')})" if "bias" in last else "—"
            L.append(f"| {spec} | {cells} | {bias} | {_f(last.get('variance'), '.3g')} |")
        L.append("")
    cost = res.get("cost")
    if cost:
        Ts = [str(T) for T in cost["lengths"]]
        L += ["## Cost per update as T grows", "",
              f"{cost['model']}, B={cost['B']}; the whole jit-compiled train step (estimator + Adam). "
              f"Time: median (min) of {cost['repeats']} calls after compilation, in ms. Memory: "
              f"{cost['memory_note']}.", "",
              "| estimator | " + " | ".join(f"ms T={T}" for T in Ts) + " | " +
              " | ".join(f"MiB T={T}" for T in Ts) + " |",
              "|---|" + "---:|" * (2 * len(Ts))]
        notes = []
        for spec, r in cost["results"].items():
            row = []
            for T in Ts:
                x = r.get(T, {})
                row.append(f"{1e3 * x['seconds']:.2f} ({1e3 * x.get('min_seconds', x['seconds']):.2f})"
                           if "seconds" in x else ("skip" if x else "—"))
                if x.get("note") or x.get("skipped"):
                    notes.append(f"{spec} at T={T}: {x.get('note') or x.get('skipped')}")
            for T in Ts:
                mem = ((r.get(T) or {}).get("memory") or {}).get("peak")
                row.append(_f(None if mem is None else mem / 2**20, ".2f"))
            L.append(f"| {spec} | " + " | ".join(row) + " |")
        if notes:
            L += [""] + [f"- {n}" for n in notes]
        seg = cost.get("segments") or {}
        if seg.get("results"):
            L += ["", f"Checkpointed BPTT at T={seg['T']}: segment length S against full BPTT "
                      f"(peak {_f((seg.get('full_peak') or 0) / 2**20, '.2f')} MiB).", "",
                  "| S | ms/update, median (min) | peak MiB | peak / full's |", "|---:|---:|---:|---:|"]
            for S, r in seg["results"].items():
                L.append(f"| {S} | {_f(1e3 * r['seconds'], '.2f')} ({_f(1e3 * r.get('min_seconds', r['seconds']), '.2f')}) | "
                         f"{_f(((r.get('memory') or {}).get('peak') or 0) / 2**20, '.2f')} | "
                         f"{_f(r.get('ratio_to_full'), '.3f')} |")
        cs = cost.get("checkpoint_summary")
        if cs:
            dflt = ", ".join(f"{v:.3f} of full's for {k}" + (" (default S = round(sqrt(T)))"
                                                               if k == "checkpointed" else "")
                             for k, v in cs["ratio_default"].items())
            L += ["", f"At T={cs['T']} checkpointed BPTT's peak is {dflt or '—'}; the best swept "
                      f"S={cs['best_S']} gives {_f(cs['best_ratio'], '.3f')}; "
                      + (f"S in {cs['S_below_quarter']} is below 1/4." if cs["S_below_quarter"]
                         else "no swept S gets below 1/4.")]
        if cost.get("rss"):
            rs = cost["rss"]
            L += ["", f"Peak RSS (T={rs['T']}; {rs['note']}): " + ", ".join(
                f"{k} +{v['peak_growth'] / 2**20:.1f} MiB" for k, v in rs.items()
                if isinstance(v, dict) and "peak_growth" in v)]
        L.append("")
    lrn = res.get("learning")
    if lrn:
        L += ["## Learning", ""]
        for key, metric, label in (("lm", "val_ppl", "val ppl"), ("copy", "val_acc", "recall acc")):
            t = lrn.get(key)
            if not t:
                continue
            L += [f"**{t['task']}.** {t['model']}, B={t['B']}, T={t['T']}, {t['optimizer']}, up to "
                  f"{t['updates']} updates; online estimators stop after {t['online_budget_s']:g} s of "
                  f"training." + (f" Chance: loss {t['chance_loss']:.3f}, accuracy {t['chance_acc']:.3f}."
                                  if "chance_loss" in t else ""), "",
                  f"| estimator | updates | {label} | val loss | train s | ms/update | note |",
                  "|---|---:|---:|---:|---:|---:|---|"]
            for spec, r in t["results"].items():
                if "skipped" in r:
                    L.append(f"| {spec} | — | — | — | — | — | skipped: {r['skipped']} |")
                    continue
                note = []
                if r["stopped_by_budget"]:
                    note.append("stopped by time budget")
                if r["nonfinite"]:
                    note.append(f"{r['nonfinite']} non-finite steps skipped")
                L.append(f"| {spec} | {r['updates_done']} | {_f(r[metric][-1], '.3f')} | "
                         f"{_f(r['val_loss'][-1], '.3f')} | {_f(r['seconds'][-1], '.1f')} | "
                         f"{_f(1e3 * r['sec_per_update'], '.1f')} | {'; '.join(note)} |")
            L.append("")
    if res.get("plots"):
        L += ["Plots: " + ", ".join(f"`{p}`" for p in res["plots"]), ""]
    return "\n".join(L)


def _plots(res: dict, out_dir: str, log) -> list:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("plots: matplotlib is not installed; skipping the PNGs (pip install 'jrnn[plots]')")
        return []
    files = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, name), dpi=110)
        plt.close(fig)
        files.append(name)

    acc = res.get("accuracy")
    if acc:
        specs = [s for s, r in acc["results"].items() if "skipped" not in r]
        names = [n for n in ("init", "trained") if all(n in acc["results"][s] for s in specs)]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        w = 0.8 / max(len(names), 1)
        for j, n in enumerate(names):
            xs = [i + (j - (len(names) - 1) / 2) * w for i in range(len(specs))]
            gap = [max(1.0 - acc["results"][s][n]["cos"], 1e-8) for s in specs]
            axes[0].bar(xs, gap, w, label=n)
            rel = [max(acc["results"][s][n]["rel_err"], 1e-8) for s in specs]
            axes[1].bar(xs, rel, w, label=n)
        for ax, title in zip(axes, ("1 - cosine with full BPTT (cell params; log; exact = 1e-8)",
                                    "relative L2 error (log; exact = 1e-8)")):
            ax.set_xticks(range(len(specs)), specs, rotation=35, ha="right")
            ax.set_title(title, fontsize=10)
            ax.set_yscale("log")
            ax.grid(True, axis="y", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"gradient accuracy: {acc['model']}, B={acc['B']}, T={acc['T']} "
                     f"(stochastic: mean over {acc['keys']} keys)")
        save(fig, "accuracy.png")

    cost = res.get("cost")
    if cost:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for spec, r in cost["results"].items():
            Ts = [int(T) for T in r if "seconds" in r[T]]
            axes[0].plot(Ts, [1e3 * r[str(T)]["seconds"] for T in Ts], "o-", label=spec)
            Tm = [int(T) for T in r if ((r[T].get("memory") or {}).get("peak"))]
            axes[1].plot(Tm, [r[str(T)]["memory"]["peak"] / 2**20 for T in Tm], "o-", label=spec)
        seg = cost.get("segments") or {}
        for S, r in (seg.get("results") or {}).items():
            if (r.get("memory") or {}).get("peak"):
                axes[1].plot([seg["T"]], [r["memory"]["peak"] / 2**20], "k.", ms=4)
                axes[1].annotate(f"S={S}", (seg["T"], r["memory"]["peak"] / 2**20), fontsize=6,
                                 xytext=(3, 0), textcoords="offset points")
        for ax, yl in zip(axes, ("ms per update", "peak MiB (XLA buffer assignment)")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length T")
            ax.set_ylabel(yl)
            ax.grid(True, which="both", alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"cost per train step: {cost['model']}, B={cost['B']} (dots: checkpointed S sweep)")
        save(fig, "cost.png")

    for key, metric, ylabel, logy in (("lm", "val_ppl", "validation perplexity", True),
                                      ("copy", "val_loss", "recall loss (nats)", False)):
        t = (res.get("learning") or {}).get(key)
        if not t:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for spec, r in t["results"].items():
            if "skipped" in r:
                continue
            axes[0].plot(r["updates"], r[metric], ".-", label=spec)
            axes[1].plot(r["seconds"][1:], r[metric][1:], ".-", label=spec)  # t=0 has no log position
        if "chance_loss" in t:
            for ax in axes:
                ax.axhline(t["chance_loss"], color="gray", ls=":", lw=1, label="chance")
        axes[0].set_xlabel("updates")
        axes[1].set_xlabel("training wall-clock seconds (log)")
        axes[1].set_xscale("log")
        for ax in axes:
            ax.set_ylabel(ylabel)
            if logy:
                ax.set_yscale("log")
            ax.grid(True, alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{t['title']}: {t['model']}, B={t['B']}, T={t['T']}, {t['optimizer']}", fontsize=10)
        save(fig, f"learning_{key}.png")
    return files


# ----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    """Run the resolved configuration; returns the results dict (also written to ``args.out``)."""
    log = _Log()
    t_start = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    res: dict = {"machine": _machine(), "config": {k: v for k, v in vars(args).items()}}
    m = res["machine"]
    log(f"machine: {m['cpu']}, {m['cores']} cores, {m['device']}, jax {m['jax']}, load {m['loadavg_start']}")
    log(f"sections {args.only}; estimators {args.estimators}; out {args.out}")
    train = val = vocab = None
    if {"accuracy", "cost", "lm"} & set(args.only):  # cost needs only the vocabulary size
        train, val, vocab = _lm_data(args)
    if "accuracy" in args.only:
        log(f"accuracy: {args.cell}-{args.hidden}, B={args.batch}, T={args.seq_len}, {args.keys} keys")
        res["accuracy"] = _accuracy(args, log, train, vocab)
    if "cost" in args.only:
        log(f"cost: T in {args.lengths} for {args.cost_estimators}")
        res["cost"] = _cost(args, log, len(vocab))
    if "lm" in args.only:
        log(f"learning[lm]: {args.learn_estimators}, {args.lm_updates} updates each")
        res.setdefault("learning", {})["lm"] = _learning_lm(args, log, train, val, vocab)
    if "copy" in args.only:
        log(f"learning[copy]: delay {args.copy_delay}, {args.copy_updates} updates each")
        res.setdefault("learning", {})["copy"] = _learning_copy(args, log)
    res["machine"]["loadavg_end"] = _loadavg()
    res["total_seconds"] = time.perf_counter() - t_start
    res["plots"] = [] if args.no_plots else _plots(res, args.out, log)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(_markdown(res) + "\n")
    log(f"wrote {args.out}/results.json, results.md" + "".join(f", {p}" for p in res["plots"])
        + f" in {res['total_seconds']:.0f} s")
    return res


def main(argv=None) -> int:
    """Entry point of ``jrnn bench-grads``; returns the exit status."""
    from jrnn.host_memory import reuse_host_memory

    reuse_host_memory(warn=False)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args = _resolve(args)
    except ValueError as e:
        parser.error(str(e))
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
