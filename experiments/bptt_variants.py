#!/usr/bin/env python
"""Compare jrnn's gradient estimators ("BPTT variants") in one run: accuracy, cost, learning.

Usage::

    JRNN_DATA_DIR=../shared/data python experiments/bptt_variants.py        # full run, ~5 min on 2 cores
    python experiments/bptt_variants.py --quick --corpus pydoc --out /tmp/bv  # CI smoke run (seconds)
    python experiments/bptt_variants_report.py experiments/results/bptt_variants  # re-render md + plots

It measures, for one cell type, in one process:

1. **Accuracy** -- on a small character LM (default GRU-32, ``T = 35``), the
   cosine similarity and relative L2 error of each estimator's gradient against
   full BPTT on the *same* params, batch and initial carry, at initialisation
   and after a few full-BPTT updates (:func:`jrnn.compare.alignment`).
   Stochastic estimators (``STOCHASTIC``: randomized, uoro, kf-rtrl, es, ...) are drawn for ``--keys``
   PRNG keys at once (one vmapped compile per estimator); their *bias*
   ``|mean_k g_k - g_full| / |g_full|`` comes with its Monte-Carlo floor
   ``sqrt(variance / keys)`` and their *variance* is
   ``sum_k |g_k - mean g|^2 / (keys - 1) / |g_full|^2``
   (:func:`jrnn.compare.bias_variance`). Numbers are on the cell's params:
   the readout ("head") gets its exact gradient from every estimator.
2. **Cost** -- wall time per update (median and min of ``--repeats`` calls of
   the compiled train step after a warm-up call, :func:`jrnn.compare.step_time`)
   and the compiled step's memory (XLA's buffer plan: temporaries + arguments +
   outputs - donated/aliased, :func:`jrnn.compare.compiled_memory`; static, not
   a measured RSS) as the sequence length ``T`` grows, plus a sweep of
   checkpointed BPTT's segment length at the largest ``T``. Online estimators
   are timed only while the predicted time per update stays under
   ``--online-max-seconds``.
3. **Learning** -- validation perplexity against updates and against
   training wall-clock (a) on the char LM of *The Time Machine* (first
   ``--lm-chars`` characters) and (b) on the copy task
   (:func:`jrnn.data.copy_task`), whose ``--copy-delay`` exceeds the
   truncation lengths, so truncated BPTT cannot learn it. Every estimator
   trains through the library's one loop, :func:`jrnn.fit` (its step is
   compiled by a one-update warm-up fit first, so the curves' seconds are
   training time without compilation or validation). Online estimators stop
   after ``--lm-online-budget`` / ``--copy-online-budget`` seconds of
   training (``LoopConfig.time_limit``).

It writes ``results.json``, ``results.md`` and PNG plots (``accuracy.png``,
``cost.png``, ``learning_lm.png``, ``learning_copy.png``; matplotlib is
optional) to ``--out`` (default: ``results/bptt_variants`` beside this
script), prints one progress line per stage on stderr, and records the
machine (CPU model, JAX version, device, load average) in both files.
``--quick`` shrinks every size for a CI smoke run.

Seeds: ``--seeds N`` (default 8) repeats the accuracy section per seed (params,
batch and keys from ``seed + i``) and trains the learning section's ``N`` seeds
as one vmapped sweep through :func:`jrnn.fit` (``LoopConfig.seeds``: the same
batches, distinct params and keys); every figure is the seed-mean with its 95%
Student-t half-width (:func:`jrnn.mean_ci`), the per-seed values kept in
``results.json``. The cost section runs once. PES is left out of the default
list: every batch here starts from a fresh carry, where PES equals ES (its
stream behaviour is ``influence_balancing.py``'s subject).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jrnn
from jrnn import compare, data, grads

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the report module beside this file
import bptt_variants_report as report  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "bptt_variants")
SECTIONS = ("accuracy", "cost", "lm", "copy")  # "learning" = lm,copy
CELLS = ("gru", "lstm", "rnn")
# time-budgeted in the learning section: the online rules, and ES/PES (N forward unrolls each)
ONLINE = ("rtrl", "uoro", "snap1", "kf-rtrl", "ok", "rflo", "eprop", "es", "pes")
STOCHASTIC = ("randomized", "uoro", "kf-rtrl", "ok", "es", "pes")  # sampled over --keys

# Full-run defaults and their --quick counterparts (an explicit flag wins over both).
DEFAULTS: dict[str, Any] = dict(
    estimators="full,truncated:5,truncated:17,tbptt:5,randomized:0.8,randomized:0.95,checkpointed,"
               "rtrl,uoro,snap1,kf-rtrl,rflo,eprop,es",  # pes = es here: every batch starts a fresh carry
    seeds=8,
    hidden=32, batch=8, seq_len=35, keys=64, pretrain=100,
    lengths="32,128,512,2048", repeats=5, segments="8,32,128,512", online_max_seconds=4.0,
    lm_chars=50_000, lm_hidden=64, lm_batch=32, lm_seq_len=35, lm_updates=300, lm_lr=0.01,
    copy_hidden=16, copy_batch=32, copy_symbols=8, copy_len=2, copy_delay=30, copy_updates=800,
    copy_lr=0.02, eval_every=25, lm_online_budget=40.0, copy_online_budget=80.0,
)
QUICK: dict[str, Any] = dict(
    hidden=8, batch=4, seq_len=12, keys=8, pretrain=5, seeds=2,
    lengths="16,64", repeats=1, segments="4,16", online_max_seconds=1.0,
    lm_chars=4_000, lm_hidden=8, lm_batch=4, lm_seq_len=12, lm_updates=10, lm_lr=0.01,
    copy_hidden=8, copy_batch=8, copy_symbols=3, copy_len=2, copy_delay=6, copy_updates=10,
    copy_lr=0.02, eval_every=5, lm_online_budget=5.0, copy_online_budget=5.0,
)


# ----------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``experiments/bptt_variants.py``."""

    def d(name):
        return f"(default {DEFAULTS[name]}; --quick {QUICK[name]})" if name in QUICK else \
            f"(default {DEFAULTS[name]})"

    p = argparse.ArgumentParser(
        prog="bptt_variants.py",
        description="Compare jrnn's gradient estimators (the BPTT family, the online rules, ES and "
                    "PES; any --grad spec) on one cell over --seeds seeds: gradient accuracy against "
                    "full BPTT, time and memory per update as T grows, and learning curves on a "
                    "char LM and on the copy task. Writes results.json, results.md and PNG plots.",
        epilog="Example: JRNN_DATA_DIR=../shared/data python experiments/bptt_variants.py   "
               "(CI: python experiments/bptt_variants.py --quick --corpus pydoc --out /tmp/bv)")
    g = p.add_argument_group("run")
    g.add_argument("--out", default=DEFAULT_OUT, help="output directory (default: results/bptt_variants "
                   "beside this script)")
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
    g.add_argument("--cell", default="rnn", choices=CELLS,
                   help="recurrent cell for every section (default rnn: every estimator takes it; "
                        "kf-rtrl, rflo and eprop refuse gru and lstm)")
    g.add_argument("--seeds", type=int, help="seeds of the accuracy and learning sections (params, "
                   "batches, keys), reported as mean and 95%% CI; learning runs them as one "
                   "vmapped sweep " + d("seeds"))
    g.add_argument("--corpus", default="timemachine", choices=("timemachine", "pydoc"),
                   help="char-LM text: 'timemachine' ($JRNN_DATA_DIR, cache or download, sha1 "
                        "checked) or the offline 'pydoc' (default timemachine)")
    g.add_argument("--seed", type=int, default=0, help="first seed of params, data and keys (default 0; --seeds N runs seed .. seed+N-1)")
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
    for name in ("hidden", "batch", "seq_len", "keys", "seeds", "repeats", "lm_chars", "lm_hidden", "lm_batch",
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
        print(f"[bptt-variants {time.perf_counter() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def _family(spec: str) -> str:
    return spec.split(":")[0]


def _sources_sha1() -> dict:
    """sha1 of the library sources the estimators run on (the git tree may be dirty)."""
    pkg = os.path.dirname(os.path.abspath(jrnn.__file__))
    out = {}
    for name in ("grads", "scan", "models", "cells", "step", "loop", "compare"):
        path = os.path.join(pkg, name)
        files = ([os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith(".py")]
                 if os.path.isdir(path) else [path + ".py"] if os.path.exists(path + ".py") else [])
        if files:
            h = hashlib.sha1()
            for f in files:
                with open(f, "rb") as fh:
                    h.update(fh.read())
            out[name + ("/" if os.path.isdir(path) else ".py")] = h.hexdigest()[:12]
    return out


def _machine() -> dict:
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
        commit = subprocess.run(["git", "-C", HERE, "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu": cpu, "cores": cores, "platform": platform.platform(), "python": platform.python_version(),
            "jax": jax.__version__, "jaxlib": jaxlib_version, "device": f"{dev.platform}:{dev.device_kind}",
            "devices": len(jax.devices()), "git": commit, "sources_sha1": _sources_sha1(),
            "loadavg_start": _loadavg()}


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _floats(tree):
    """jnp/np scalars in a nested dict -> Python floats/ints (for JSON)."""
    if isinstance(tree, dict):
        return {k: _floats(v) for k, v in tree.items()}
    if isinstance(tree, (jax.Array, np.ndarray, np.generic)):
        v = np.asarray(tree).item()
        return v
    return tree


def _lm_data(args):
    """Char corpus (first ``lm_chars`` ids), its vocabulary, train/val split."""
    text = data.time_machine() if args.corpus == "timemachine" else data.bundled_text()
    corpus, vocab = data.load_corpus(text, "char", max_tokens=args.lm_chars)
    n_val = max(len(corpus) // 10, 2)
    return corpus[:-n_val], corpus[-n_val:], vocab


def _cell(args, hidden):
    return {"gru": jrnn.gru, "lstm": jrnn.lstm, "rnn": jrnn.elman}[args.cell](hidden)


def _lm_stream(train, B, T, seed):
    """Endless random-partition batches (time-major jrnn.Batch), epoch after epoch."""
    for epoch in itertools.count():
        yield from data.batches(train, B, T, "random", seed=seed, epoch=epoch)


def _quiet_loop(**kw) -> jrnn.LoopConfig:
    return jrnn.LoopConfig(progress=False, quiet=True, **kw)


def _random_batch(rng, vocab_size, T, B):
    return jrnn.Batch(jnp.asarray(rng.integers(0, vocab_size, (T, B), dtype=np.int32)),
                      jnp.asarray(rng.integers(0, vocab_size, (T, B), dtype=np.int32)))


# ----------------------------------------------------------------------------
# 1. accuracy


def _accuracy_seed(args, train, model, seed, specs, grads_of) -> dict:
    """One seed's accuracy records ``{spec: {"init": r, "trained": r}}`` (params, batch from ``seed``)."""
    B, T = args.batch, args.seq_len
    batch = next(data.batches(train, B, T, "random", seed=seed + 1))
    param_sets = {"init": model.init(jax.random.key(seed))}
    if args.pretrain:
        stream = _lm_stream(train, B, T, seed + 2)
        res = jrnn.fit(model, jrnn.make_optimizer("adam", args.lm_lr, clip=1.0),
                       lambda epoch: itertools.islice(stream, args.pretrain), batch_size=B,
                       carry_over=False, config=_quiet_loop(seed=seed, log_every=args.pretrain))
        param_sets["trained"] = jax.device_get(res.state.params)
    keys = jax.random.split(jax.random.key(seed + 3), args.keys)
    fulls = {name: grads_of["full"][0](params, batch, keys[0]) for name, params in param_sets.items()}
    out = {}
    for spec in specs:
        one, sample = grads_of[spec]
        rec = out[spec] = {}
        for name, params in param_sets.items():
            f = fulls[name]
            if sample is not None:
                G = sample(params, batch, keys)
                cell, every = compare.bias_variance(G["cell"], f["cell"]), compare.bias_variance(G, f)
                r = {k: cell[k] for k in ("cos", "rel_err", "cos_std", "cos_of_mean", "bias", "bias_floor",
                                          "bias_ratio", "variance", "n")}
                r.update(grad_norm=cell["norm"], full_norm=cell["ref_norm"])
            else:
                g = one(params, batch, keys[0])
                cell, every = compare.alignment(g["cell"], f["cell"], per_leaf=True), compare.alignment(g, f)
                r = {"cos": cell["cos"], "rel_err": cell["rel_err"], "grad_norm": cell["norm"],
                     "full_norm": cell["ref_norm"], "leaves": cell["leaves"]}
            r.update(cos_all=every["cos"], rel_err_all=every["rel_err"])
            rec[name] = _floats(r)
    return out


def _mean_records(per_seed: list) -> dict:
    """Seed-mean of every numeric field, with ``{field}_ci`` (95% Student-t half-width) beside it."""
    out = {"seeds": len(per_seed)}
    for k, v in per_seed[0].items():
        vals = [r[k] for r in per_seed]
        if isinstance(v, (int, float)) and not isinstance(v, bool) and all(
                isinstance(x, (int, float)) and math.isfinite(x) for x in vals):
            out[k], out[k + "_ci"] = jrnn.mean_ci(vals) if len(vals) > 1 else (float(v), None)
        elif k == "leaves":
            out[k] = v  # per-leaf alignment: the first seed's
    if len(per_seed) > 1:
        out["per_seed"] = [{k: v for k, v in r.items() if k != "leaves"} for r in per_seed]
    return out


def _accuracy(args, log, train, vocab) -> dict:
    model = jrnn.language_model(_cell(args, args.hidden), len(vocab))
    B, T = args.batch, args.seq_len
    seeds = [args.seed + s for s in range(args.seeds)]
    out = {"model": f"{args.cell}-{args.hidden} char LM, V={len(vocab)}", "B": B, "T": T,
           "keys": args.keys, "pretrain_updates": args.pretrain, "seeds": seeds,
           "metric_note": "cosine / relative L2 error on the cell's params (the head is exact for "
                          "every estimator); '_all' = all params", "results": {}}
    params0 = model.init(jax.random.key(args.seed))
    grads_of, specs = {}, ["full"] + [s for s in args.estimators if s != "full"]
    for spec in list(specs):
        est = grads.parse(spec)
        try:
            carry = est.init_carry(model, params0, (B,))
        except ValueError as e:
            out["results"][spec] = {"skipped": str(e)}
            log(f"accuracy: {spec}: skipped ({e})")
            specs.remove(spec)
            continue
        one = lambda p, b, k, est=est, carry=carry: est.value_and_grad(model, p, carry, b, k)[1]
        sample = (jax.jit(jax.vmap(one, in_axes=(None, None, 0))) if _family(spec) in STOCHASTIC
                  else None)  # one compile per estimator, reused by every seed and param set
        grads_of[spec] = (jax.jit(one), sample)
    per_seed = []
    for i, seed in enumerate(seeds):
        t0 = time.perf_counter()
        per_seed.append(_accuracy_seed(args, train, model, seed, specs, grads_of))
        log(f"accuracy: seed {seed} ({i + 1}/{len(seeds)}) in {time.perf_counter() - t0:.1f} s")
    for spec in specs:
        rec = out["results"][spec] = {}
        for name in per_seed[0][spec]:
            rec[name] = _mean_records([r[spec][name] for r in per_seed])
        r = rec.get("trained", rec["init"])
        stochastic = grads_of[spec][1] is not None
        log(f"accuracy: {spec:16s} cos {r['cos']:.4f}  rel err {r['rel_err']:.3g}"
            + (f"  bias {r['bias']:.3g} (floor {r['bias_floor']:.2g})  var {r['variance']:.3g}"
               if stochastic else "") + f"  (mean of {len(seeds)} seeds)")
    return out


# ----------------------------------------------------------------------------
# 2. cost


def _cost(args, log, vocab_size) -> dict:
    model = jrnn.language_model(_cell(args, args.hidden), vocab_size)
    opt = jrnn.make_optimizer("adam", 1e-3, clip=1.0)
    B = args.batch
    rng = np.random.default_rng(args.seed)
    key = jax.random.key(args.seed)
    out = {"model": f"{args.cell}-{args.hidden} char LM, V={vocab_size}", "B": B, "lengths": args.lengths,
           "repeats": args.repeats,
           "memory_note": "total = temp + arguments + outputs - aliased (donated) bytes of the compiled "
                          "train step, from XLA's buffer assignment (jrnn.compare.compiled_memory); a "
                          "static plan, not a measured RSS",
           "results": {}, "segments": {}}

    def measure(spec, batch, timed=True):
        est = grads.parse(spec)
        st = jrnn.init_state(model, opt, est, key, B)
        step = jrnn.train_step(model, opt, est, carry_over=False, check=False)
        t0 = time.perf_counter()
        compiled = step.lower(st, batch, key).compile()
        rec = {"compile_s": round(time.perf_counter() - t0, 2), "memory": compare.compiled_memory(compiled)}
        if timed:
            t = compare.step_time(compiled, st, batch, key, repeats=args.repeats, warmup=1)
            rec.update(seconds=t["median_s"], min_seconds=t["min_s"],
                       all_seconds=[round(x, 5) for x in t["times_s"]])
        return rec

    last = {}  # online spec -> (T, seconds) of its last timed length
    for T in args.lengths:
        batch = _random_batch(rng, vocab_size, T, B)
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
                r = measure(spec, batch, timed)
            except ValueError as e:  # e.g. RTRL over its max_bytes
                rec[str(T)] = {"skipped": str(e)}
                log(f"cost: T={T:5d} {spec:16s} skipped ({e})")
                continue
            if note:
                r["note"] = note
            rec[str(T)] = r
            if timed and _family(spec) in ONLINE:
                last[spec] = (T, r["seconds"])
            mem = r["memory"].get("total")
            log(f"cost: T={T:5d} {spec:16s} "
                + (f"{1e3 * r['seconds']:9.2f} ms/update" if timed else "   (not timed)    ")
                + (f"  memory {mem / 2**20:8.2f} MiB" if mem is not None else ""))

    Tmax = max(args.lengths)
    batch = _random_batch(rng, vocab_size, Tmax, B)
    full_total = ((out["results"].get("full", {}).get(str(Tmax)) or {}).get("memory") or {}).get("total")
    if "full" not in out["results"]:
        full_total = measure("full", batch, timed=False)["memory"].get("total")
    sweep = {}
    for S in [s for s in args.segments if s <= Tmax]:
        r = measure(f"checkpointed:{S}", batch)
        total = r["memory"].get("total")
        if total is not None and full_total:
            r["ratio_to_full"] = total / full_total
        sweep[str(S)] = r
        log(f"cost: T={Tmax} checkpointed:{S:<4d} {1e3 * r['seconds']:9.2f} ms/update  memory "
            f"{(total or 0) / 2**20:8.2f} MiB  ({r.get('ratio_to_full', float('nan')):.3f} of full)")
    out["segments"] = {"T": Tmax, "full_total": full_total, "results": sweep}
    ck = [s for s in args.cost_estimators if _family(s) == "checkpointed"]
    if full_total:
        summary = {}
        for s in ck:
            p = ((out["results"][s].get(str(Tmax)) or {}).get("memory") or {}).get("total")
            if p:
                summary[s] = p / full_total
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
# 3. learning, through jrnn.fit


def _train_curve(model, opt, spec, stream, evaluate, args, updates, batch_size, log, task,
                 budget) -> dict:
    """Train one estimator with :func:`jrnn.fit` over ``args.seeds`` seeds (one vmapped sweep);
    validation points vs updates and training seconds.

    ``stream`` is an endless iterator of batches; the run takes its next ``updates``
    (one "epoch" of fit), the same batches for every seed (seeds differ in params and keys).
    A one-update fit first compiles the step (fit memoises it per model, optimizer,
    estimator and sweep size), so ``train_seconds`` holds no compilation. Every metric
    ``k`` is the seed-mean per point, ``k_ci`` its 95% half-width and ``k_runs`` per seed.
    """
    est = grads.parse(spec)
    try:
        jrnn.init_state(model, opt, est, jax.random.key(args.seed), batch_size)
    except ValueError as e:  # e.g. RTRL's influence over max_bytes, SnAp-1 on an unsupported cell
        log(f"learning[{task}]: {spec}: skipped ({e})")
        return {"skipped": str(e)}
    online = _family(spec) in ONLINE
    first = next(stream)
    t0 = time.perf_counter()
    jrnn.fit(model, opt, lambda epoch: [first], estimator=est, batch_size=batch_size, carry_over=False,
             config=_quiet_loop(seed=args.seed, seeds=args.seeds))
    compile_s = time.perf_counter() - t0
    rec = {"updates": [0], "seconds": [0.0], "compile_s": round(compile_s, 2), "seeds": args.seeds,
           "train_loss": [], "stopped_by_budget": False}
    key = jax.random.key(args.seed)  # fit's initial params: key(seed), or split(key, seeds)[s]
    inits = [model.init(k) for k in ([key] if args.seeds == 1 else jax.random.split(key, args.seeds))]
    at0 = [evaluate(p) for p in inits]  # validated once per seed
    points = [{k: [d[k] for d in at0] for k in at0[0]}]
    cfg = _quiet_loop(seed=args.seed, seeds=args.seeds, log_every=args.eval_every,
                      eval_every=args.eval_every, on_nonfinite="skip", max_skips=updates,
                      time_limit=budget if online else None)
    history = jrnn.fit(model, opt, lambda epoch: itertools.chain([first], itertools.islice(stream, updates - 1)),
                       estimator=est, batch_size=batch_size, carry_over=False, validate=evaluate,
                       config=cfg).history
    for r in history:
        if "train_loss" in r:
            rec["train_loss"].append(float(np.mean(r["train_loss"])))
        if "val_loss" in r:
            rec["updates"].append(r["step"])
            rec["seconds"].append(round(r["train_seconds"], 4))
            points.append({k: np.atleast_1d(r[k]).tolist() for k in _val_keys(r)})
    for k in points[0]:
        stats = [jrnn.mean_ci(p[k]) if np.all(np.isfinite(p[k])) else (float("nan"), float("nan"))
                 for p in points]
        rec[k], rec[k + "_ci"] = [m for m, _ in stats], [h for _, h in stats]
        rec[k + "_runs"] = [p[k] for p in points]
    done = rec["updates"][-1]
    rec["stopped_by_budget"] = history[-1].get("stopped") == "time_limit" and done < updates
    rec["nonfinite"] = int(max([np.max(r["skipped"]) for r in history if "skipped" in r], default=0))
    rec["updates_done"] = done
    rec["sec_per_update"] = rec["seconds"][-1] / max(done, 1)
    return rec


def _val_keys(record: dict) -> list:
    """The validation metrics of a fit record (what ``evaluate`` returned)."""
    return [k for k in record if k.startswith("val_")]


def _learning_lm(args, log, train, val, vocab) -> dict:
    model = jrnn.language_model(_cell(args, args.lm_hidden), len(vocab))
    opt = jrnn.make_optimizer("adam", args.lm_lr, clip=1.0)
    B, T = args.lm_batch, args.lm_seq_len
    evaluate = jrnn.held_out(model, lambda: data.batches(val, B, T, "sequential", seed=args.seed))
    out = {"title": f"char LM ({args.corpus})", "task": f"char LM on {args.corpus} (first {args.lm_chars} chars, last 10% held out, "
                   f"V={len(vocab)})", "model": f"{args.cell}-{args.lm_hidden}", "B": B, "T": T,
           "optimizer": f"adam lr={args.lm_lr} clip=1", "updates": args.lm_updates,
           "partition": "random, fresh carry per batch (carry_over=False)",
           "online_budget_s": args.lm_online_budget, "metric": "val_ppl", "results": {}}
    for spec in args.learn_estimators:
        r = _train_curve(model, opt, spec, _lm_stream(train, B, T, args.seed), evaluate, args,
                         args.lm_updates, B, log, "lm", args.lm_online_budget)
        out["results"][spec] = r
        if "skipped" not in r:
            log(f"learning[lm]: {spec:16s} {r['updates_done']:4d} updates, val ppl {r['val_ppl'][-1]:7.3f}, "
                f"{1e3 * r['sec_per_update']:8.1f} ms/update" + (" (stopped by --online-budget)"
                                                             if r["stopped_by_budget"] else ""))
    return out


def _learning_copy(args, log) -> dict:
    K, L, D, B = args.copy_symbols, args.copy_len, args.copy_delay, args.copy_batch
    V = K + 2
    model = jrnn.classifier(_cell(args, args.copy_hidden), V, V, tokens=True)
    opt = jrnn.make_optimizer("adam", args.copy_lr, clip=1.0)
    eb = jrnn.Batch(*(jnp.asarray(a) for a in data.copy_task(512, K, L, D,
                                                             rng=np.random.default_rng([args.seed, 999_999]))))

    @jax.jit
    def _eval(params):
        hs, _ = jrnn.unroll(model.cell, params["cell"], eb.inputs)
        logits = model.head(params["head"], hs)
        w = eb.mask / eb.mask.sum()
        return jnp.sum(model.loss(logits, eb.targets) * w), jrnn.accuracy(logits, eb.targets, eb.mask)

    def evaluate(params):
        loss, acc = _eval(params)
        return {"val_loss": float(loss), "val_acc": float(acc)}

    def stream():
        for i in itertools.count():
            yield jrnn.Batch(*data.copy_task(B, K, L, D, rng=np.random.default_rng([args.seed, i])))

    out = {"title": f"copy task (delay {D})", "task": f"copy task: remember {L} of {K} symbols over a delay of {D} (T={2 * L + D}); "
                   f"loss and accuracy on the recall window of 512 held-out sequences",
           "model": f"{args.cell}-{args.copy_hidden}", "B": B, "T": 2 * L + D,
           "optimizer": f"adam lr={args.copy_lr} clip=1", "updates": args.copy_updates,
           "chance_loss": math.log(K), "chance_acc": 1.0 / K,
           "online_budget_s": args.copy_online_budget, "metric": "val_acc", "results": {}}
    for spec in args.learn_estimators:
        r = _train_curve(model, opt, spec, stream(), evaluate, args, args.copy_updates, B, log, "copy",
                         args.copy_online_budget)
        out["results"][spec] = r
        if "skipped" not in r:
            log(f"learning[copy]: {spec:16s} {r['updates_done']:4d} updates, recall acc "
                f"{r['val_acc'][-1]:.3f} loss {r['val_loss'][-1]:.3f}, {1e3 * r['sec_per_update']:7.1f} ms/update"
                + (" (stopped by --online-budget)" if r["stopped_by_budget"] else ""))
    return out


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
    res["plots"] = [] if args.no_plots else report.plots(res, args.out, log)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(res, f, indent=1, default=str)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(report.markdown(res) + "\n")
    log(f"wrote {args.out}/results.json, results.md" + "".join(f", {p}" for p in res["plots"])
        + f" in {res['total_seconds']:.0f} s")
    return res


def main(argv=None) -> int:
    """Parse the flags, run, write the results; returns the exit status."""
    jrnn.reuse_host_memory(warn=False)
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
