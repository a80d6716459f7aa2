"""The one train step (jit-compiled, Optax) and the fit loop around it.

``train_step(model, optimizer, estimator)`` is the single way jrnn trains: the
CLI, the experiments and the benchmarks all call it. The optimizer (clipping
included) and the estimator are closed over, so changing neither recompiles;
use ``optax.inject_hyperparams`` for schedules.

Non-finite guard: the step never applies an update whose loss or gradient is
NaN/Inf; it returns ``finite=False`` and the state unchanged, and
:func:`fit` then stops (default) or skips, as asked.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .cells import check_token_ids
from .grads import GradientEstimator, full
from .metrics import perplexity
from .models import Batch, Model, sequence_loss

__all__ = ["TrainState", "make_optimizer", "init_state", "train_step", "evaluate", "fit",
           "NonFiniteError", "FitResult"]


class TrainState(NamedTuple):
    """Everything a step needs.

    Attributes:
      params: ``{"cell": ..., "head": ...}``.
      opt_state: the Optax state.
      carry: the estimator's carry ``[B, ...]`` (hidden state, influence).
      step: ``int32`` scalar, updates applied so far.
    """

    params: Any
    opt_state: Any
    carry: Any
    step: Any


class NonFiniteError(FloatingPointError):
    """Training met a NaN/Inf loss or gradient and was asked to stop."""


def make_optimizer(name: str = "sgd", lr: float = 1.0, clip: float | None = 1.0):
    """Optax optimizer with optional global-norm clipping (d2l's ``grad_clipping``).

    Args:
      name: ``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"`` or ``"momentum"``.
      lr: learning rate (> 0).
      clip: max global gradient norm (> 0), or ``None`` for no clipping.

    References: Pascanu, Mikolov & Bengio 2013 (clipping).
    """
    opts = {"sgd": optax.sgd, "adam": optax.adam, "adamw": optax.adamw,
            "rmsprop": optax.rmsprop, "momentum": lambda lr: optax.sgd(lr, momentum=0.9)}
    if name not in opts:
        raise ValueError(f"optimizer must be one of {sorted(opts)}, got {name!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if clip is not None and not (isinstance(clip, (int, float)) and clip > 0):
        raise ValueError(f"clip must be > 0 or None, got {clip!r}")
    opt = opts[name](lr)
    return opt if clip is None else optax.chain(optax.clip_by_global_norm(clip), opt)


def init_state(model: Model, optimizer, estimator: GradientEstimator, key,
               batch_size: int) -> TrainState:
    """Fresh params, optimizer state and carry for a batch of ``batch_size``."""
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    params = model.init(key)
    state = TrainState(params, optimizer.init(params),
                       estimator.init_carry(model, params, (int(batch_size),)),
                       jnp.zeros((), jnp.int32))
    # one buffer per leaf: the train step donates the state, and a buffer shared
    # by two leaves (e.g. equal zero arrays) cannot be donated twice
    return jax.tree.map(jnp.copy, state)


def train_step(model: Model, optimizer, estimator: GradientEstimator | None = None, *,
               carry_over: bool = True, seeds: int | None = None, donate: bool = True):
    """Build the jit-compiled step ``(state, batch, key) -> (state, metrics)``.

    Args:
      model: the model.
      optimizer: an ``optax.GradientTransformation`` (clipping inside it).
      estimator: a gradient estimator; full BPTT if ``None``.
      carry_over: keep the carry across calls (sequential partitioning; no
        gradient flows across batches, d2l's "detach"); ``False`` starts every
        batch from a fresh carry (random sampling).
      seeds: if set, ``S``: the state has a leading axis of ``S`` independent
        models (from :func:`init_states`) trained together with ``jax.vmap``;
        they share the batch and get ``S`` keys.
      donate: donate the state's buffers to the step (in-place update).

    Returns:
      ``step(state, batch, key)``; ``batch`` is a time-major :class:`Batch`.
      ``metrics`` holds device scalars ``loss``, ``grad_norm`` (before
      clipping) and ``finite``: fetch them every few steps, not every step.
    """
    estimator = estimator or full()

    def one(state: TrainState, batch: Batch, key):
        carry = state.carry
        if not carry_over:
            carry = estimator.init_carry(model, state.params, jnp.shape(batch.inputs)[1:2])
        loss, grads, carry, _ = estimator.value_and_grad(model, state.params, carry, batch, key)
        gnorm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(gnorm)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new = TrainState(optax.apply_updates(state.params, updates), opt_state, carry,
                         state.step + 1)
        # never apply a non-finite update: keep the last good state bit for bit
        new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
        return new, {"loss": loss, "grad_norm": gnorm, "finite": finite}

    fn = one if seeds is None else jax.vmap(one, in_axes=(0, None, 0))
    return jax.jit(fn, donate_argnums=(0,) if donate else ())


def init_states(model: Model, optimizer, estimator: GradientEstimator, keys, batch_size: int):
    """``S`` independently initialised states stacked on a leading axis (for ``seeds=S``)."""
    return jax.vmap(lambda k: init_state(model, optimizer, estimator, k, batch_size))(keys)


def _to_batch(model: Model, xy) -> Batch:
    """Batch-major ``(X [B, T], Y [B, T])`` host arrays -> time-major :class:`Batch`."""
    if isinstance(xy, Batch):
        return xy
    x, y = (np.asarray(a) for a in xy)
    if model.tokens:
        check_token_ids(x, model.input_size, "inputs")
        check_token_ids(y, model.input_size, "targets")
    return Batch(np.ascontiguousarray(np.swapaxes(x, 0, 1)), np.ascontiguousarray(np.swapaxes(y, 0, 1)))


def evaluate(model: Model, params, batches: Iterable, *, carry_over: bool = True) -> float:
    """Mean per-token loss (nats) over batch-major ``(X, Y)`` batches; ``exp`` it for perplexity."""
    loss_fn = _eval_fn(model)
    carry, total, n = None, 0.0, 0
    for xy in batches:
        b = _to_batch(model, xy)
        if carry is None or not carry_over:
            carry = model.cell.initial_carry(b.inputs.shape[1:2])
        loss, carry = loss_fn(params, carry, b)
        size = b.inputs.shape[0] * b.inputs.shape[1]
        total, n = total + float(loss) * size, n + size
    if n == 0:
        raise ValueError("evaluate got no batches: the validation corpus is too short")
    return total / n


_EVAL = {}


def _eval_fn(model):
    if model not in _EVAL:
        _EVAL[model] = jax.jit(lambda p, c, b: sequence_loss(model, p, c, b))
    return _EVAL[model]


class FitResult(NamedTuple):
    state: TrainState
    history: list


class _Progress:
    """A one-line progress bar on a terminal; plain log lines otherwise."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.enabled = total, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.t0 = self.last = time.perf_counter()

    def update(self, done: int, text: str):
        if not self.enabled:
            return
        frac = done / max(self.total, 1)
        el = time.perf_counter() - self.t0
        eta = el / frac - el if frac > 0 else 0.0
        bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
        line = f"[{bar}] {done}/{self.total} {text} eta {eta:4.0f}s"
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif time.perf_counter() - self.last >= 10.0 or done >= self.total:
            # not a terminal (a log file, CI): one line every 10 s at most
            self.last = time.perf_counter()
            print(line, file=sys.stderr, flush=True)

    def close(self):
        if self.tty:
            print(file=sys.stderr)


def fit(model: Model, optimizer, train_batches: Callable[[int], Iterable], *,
        estimator: GradientEstimator | None = None, epochs: int = 1, seed: int = 0,
        batch_size: int, carry_over: bool = True, val_batches: Callable[[], Iterable] | None = None,
        steps_per_epoch: int | None = None, log_every: int = 50, out_dir: str | None = None,
        checkpoint_every: int | None = None, resume: bool = False,
        on_nonfinite: str = "stop", max_skips: int = 10, progress: bool = True,
        state: TrainState | None = None, quiet: bool = False) -> FitResult:
    """Train ``model`` for ``epochs`` passes; log perplexity, tokens/s and gradient norm.

    Args:
      model, optimizer: what to train and how (see :func:`make_optimizer`).
      train_batches: ``epoch -> iterable`` of batch-major ``(X [B, T], Y [B, T])``
        (or time-major :class:`Batch`), deterministic given the epoch so a
        resumed run sees the same data.
      estimator: gradient estimator, full BPTT by default.
      epochs: number of passes.
      seed: seeds params and the estimator keys (``fold_in(key, step)``).
      batch_size: ``B``.
      carry_over: carry hidden state across batches (sequential partitioning).
      val_batches: ``() -> iterable`` for validation perplexity at each epoch end.
      steps_per_epoch: for the progress bar, if known.
      log_every: fetch metrics from the device every this many steps.
      out_dir: if set, write ``metrics.jsonl`` there (and checkpoints, plot).
      checkpoint_every: save a checkpoint to ``out_dir`` every this many steps
        (and at the end and on SIGINT/SIGTERM).
      resume: continue from the last checkpoint in ``out_dir``.
      on_nonfinite: ``"stop"`` raises :class:`NonFiniteError` naming the step
        (the last good checkpoint stays); ``"skip"`` drops the update and stops
        after ``max_skips`` in a row.
      progress: show a progress bar.
      state: start from this state instead of a fresh one.
      quiet: print nothing but the progress bar.

    Returns:
      :class:`FitResult` ``(state, history)``; ``history`` is the list of logged
      records (also in ``metrics.jsonl``).
    """
    from . import checkpoint as ckpt

    if on_nonfinite not in ("stop", "skip"):
        raise ValueError(f"on_nonfinite must be 'stop' or 'skip', got {on_nonfinite!r}")
    for name, v in (("epochs", epochs), ("log_every", log_every), ("max_skips", max_skips)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    estimator = estimator or full()
    key = jax.random.key(seed)
    if state is None:
        state = init_state(model, optimizer, estimator, key, batch_size)
    history, start_epoch, start_batch = [], 0, 0
    manager = None
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        if checkpoint_every or resume:
            manager = ckpt.Checkpointer(out_dir)
        if resume:
            restored = manager.restore(state)
            if restored is None:
                raise FileNotFoundError(f"--resume: no checkpoint in {out_dir!r}")
            state, meta = restored
            start_epoch, start_batch, history = meta["epoch"], meta["batch"], meta["history"]
            if not quiet:
                print(f"resumed from step {int(state.step)} (epoch {start_epoch}, batch {start_batch})",
                      file=sys.stderr)
    log_path = os.path.join(out_dir, "metrics.jsonl") if out_dir else None
    if log_path and not resume and os.path.exists(log_path):
        os.remove(log_path)

    step_fn = train_step(model, optimizer, estimator, carry_over=carry_over)
    bar = _Progress(epochs * steps_per_epoch if steps_per_epoch else epochs, progress)
    acc = {"loss": 0.0, "grad_norm": 0.0, "n": 0, "tokens": 0}
    skips, t_last = 0, time.perf_counter()
    pending = []  # device metrics not yet fetched (fetched every log_every steps)

    def log(record):
        history.append(record)
        if log_path:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def flush(epoch):
        nonlocal skips, t_last
        if not pending:
            return
        fetched = jax.device_get(pending)
        for s, m in fetched:
            if not bool(m["finite"]):
                if on_nonfinite == "stop":
                    raise NonFiniteError(
                        f"non-finite loss or gradient at step {s} (loss={float(m['loss'])}); "
                        f"the update was not applied" +
                        (f"; the last good checkpoint is in {out_dir}" if manager else ""))
                skips += 1
                if skips >= max_skips:
                    raise NonFiniteError(f"{skips} non-finite steps in a row, the last at step {s}")
                continue
            skips = 0
            acc["loss"] += float(m["loss"]); acc["grad_norm"] += float(m["grad_norm"]); acc["n"] += 1
        pending.clear()
        if acc["n"]:
            now = time.perf_counter()
            rec = {"step": int(fetched[-1][0]) + 1, "epoch": epoch,
                   "train_ppl": perplexity(acc["loss"] / acc["n"]),
                   "grad_norm": acc["grad_norm"] / acc["n"],
                   "tokens_per_s": acc["tokens"] / max(now - t_last, 1e-9),
                   "skipped": skips}
            log(rec)
            acc.update(loss=0.0, grad_norm=0.0, n=0, tokens=0)
            t_last = now
            return rec

    with ckpt.signals_to_checkpoint() as interrupted:
        step = int(state.step)
        done = start_epoch * (steps_per_epoch or 1) + start_batch
        rec = None
        for epoch in range(start_epoch, epochs):
            batch_idx = -1
            for batch_idx, xy in enumerate(train_batches(epoch)):
                if epoch == start_epoch and batch_idx < start_batch:
                    continue
                b = _to_batch(model, xy)
                state, m = step_fn(state, b, jax.random.fold_in(key, step))
                pending.append((step, m))
                acc["tokens"] += b.inputs.shape[0] * b.inputs.shape[1]
                step += 1
                done += 1
                if len(pending) >= log_every:
                    rec = flush(epoch) or rec
                if rec and steps_per_epoch:
                    bar.update(done, f"ppl {rec['train_ppl']:.2f} {rec['tokens_per_s']:.0f} tok/s")
                if manager and checkpoint_every and step % checkpoint_every == 0:
                    flush(epoch)
                    manager.save(state, {"epoch": epoch, "batch": batch_idx + 1, "history": history})
                if interrupted():
                    flush(epoch)
                    if manager is None and out_dir:
                        manager = ckpt.Checkpointer(out_dir)
                    if manager:
                        manager.save(state, {"epoch": epoch, "batch": batch_idx + 1, "history": history})
                        print(f"\ninterrupted at step {step}: checkpoint saved; continue with "
                              f"--resume {out_dir}", file=sys.stderr)
                    else:
                        print(f"\ninterrupted at step {step} (no --out, nothing saved)", file=sys.stderr)
                    bar.close()
                    raise KeyboardInterrupt
            if batch_idx < 0 and epoch > start_epoch:
                raise ValueError("train_batches yielded no batches: the corpus is too short "
                                 "for this batch size and number of steps")
            rec = flush(epoch) or rec
            if val_batches is not None:
                vppl = perplexity(evaluate(model, state.params, val_batches(), carry_over=carry_over))
                log({"step": step, "epoch": epoch, "val_ppl": vppl})
                rec = dict(rec or {}, val_ppl=vppl)
            if not steps_per_epoch:
                bar.update(epoch + 1, f"ppl {rec['train_ppl']:.2f}" if rec else "")
        bar.close()
        if manager:
            manager.save(state, {"epoch": epochs, "batch": 0, "history": history})
    return FitResult(state, history)
