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

import functools
import json
import math
import os
import signal
import sys
import time
from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import validation
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
    """Training met a NaN/Inf loss or gradient and was asked to stop.

    Attributes:
      step: the global step (batch index in the run) of the non-finite update.
      checkpoint_step: the step of the last checkpoint written before it, or ``None``.
    """

    def __init__(self, message: str, step: int | None = None, checkpoint_step: int | None = None):
        super().__init__(message)
        self.step, self.checkpoint_step = step, checkpoint_step


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
      carry_over: keep the carry across calls (sequential partitioning; for
        the BPTT family no gradient flows across batches, d2l's "detach", while
        RTRL/UORO/SnAp-1 carry their influence on, so theirs does); ``False``
        starts every batch from a fresh carry (random sampling).
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
        gnorm = optax.tree.norm(grads)
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


def _to_batch(model: Model, xy, batch_size: int | None = None) -> Batch:
    """Batch-major ``(X [B, T], Y [B, T])`` host arrays (or a time-major :class:`Batch`)
    -> a validated time-major :class:`Batch`.

    Raises ``ValueError``/``TypeError`` on a wrong layout, dtype, batch size or
    (for host arrays) a token id outside the vocabulary, before it reaches a
    gather (JAX clamps out-of-range indices silently).
    """
    if not isinstance(xy, Batch):
        if not isinstance(xy, (tuple, list)) or len(xy) != 2:
            raise TypeError("train/val batches must be (X [B, T, ...], Y [B, T, ...]) pairs or "
                            f"time-major jrnn.Batch, got {type(xy).__name__}")
        x, y = (np.asarray(a) for a in xy)
        if x.ndim < 2 or y.ndim < 2:
            raise ValueError(f"batch X and Y must be batch-major [B, T, ...], got shapes "
                             f"{x.shape} and {y.shape}")
        xy = Batch(np.ascontiguousarray(np.swapaxes(x, 0, 1)),
                   np.ascontiguousarray(np.swapaxes(y, 0, 1)))
    validation.check_batch(model, xy, batch_size)
    return xy


def evaluate(model: Model, params, batches: Iterable, *, carry_over: bool = True) -> float:
    """Mean per-token loss (nats) over batch-major ``(X, Y)`` batches; ``exp`` it for perplexity."""
    validation.check_model_params(model, params)
    loss_fn = _eval_fn(model)
    carry, total, n = None, 0.0, 0
    for xy in batches:
        b = _to_batch(model, xy)
        if carry is None or not carry_over or jax.tree.leaves(carry)[0].shape[0] != b.inputs.shape[1]:
            carry = model.cell.initial_carry(b.inputs.shape[1:2])
        loss, carry = loss_fn(params, carry, b)
        size = b.inputs.shape[0] * b.inputs.shape[1]
        total, n = total + float(loss) * size, n + size
    if n == 0:
        raise ValueError("evaluate got no batches: the validation corpus is too short")
    return total / n


@functools.lru_cache(maxsize=32)  # one compiled forward per model, bounded
def _eval_fn(model):
    return jax.jit(lambda p, c, b: sequence_loss(model, p, c, b))


class FitResult(NamedTuple):
    state: TrainState
    history: list


class _Progress:
    """A one-line progress bar on a terminal; one plain line per logged record otherwise."""

    def __init__(self, total: int, done: int = 0, enabled: bool = True):
        self.total, self.enabled, self.done0 = total, enabled, done
        self.tty = enabled and sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self.last = None  # when the last non-tty line was printed
        self.open = False

    def update(self, done: int, text: str):
        if not self.enabled:
            return
        frac = min(done / max(self.total, 1), 1.0)
        el = time.perf_counter() - self.t0
        rate = (done - self.done0) / el if el > 0 else 0.0  # this session's speed (resume-safe)
        eta = max(self.total - done, 0) / rate if rate > 0 else 0.0
        bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
        line = f"[{bar}] {done}/{self.total} {text} eta {eta:4.0f}s"
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
            self.open = True
        elif self.last is None or time.perf_counter() - self.last >= 10.0 or done >= self.total:
            # not a terminal (a log file, CI): the first record, then one line every 10 s at most
            self.last = time.perf_counter()
            print(line, file=sys.stderr, flush=True)

    def close(self):
        if self.open:
            print(file=sys.stderr, flush=True)
            self.open = False


_STEPS: dict = {}
_FULL = full()


def _step_fn(model, optimizer, estimator, carry_over):
    """``train_step`` memoised on its (hashable) arguments: a fit resumed in the
    same process, or several fits of one model, compile the step once."""
    k = (model, optimizer, estimator, bool(carry_over))
    try:
        hash(k)
    except TypeError:  # an unhashable custom optimizer/estimator: no memo
        return train_step(model, optimizer, estimator, carry_over=carry_over)
    if k not in _STEPS:
        if len(_STEPS) >= 16:
            _STEPS.pop(next(iter(_STEPS)))
        _STEPS[k] = train_step(model, optimizer, estimator, carry_over=carry_over)
    return _STEPS[k]


def _run_fingerprint(model: Model, estimator, seed, batch_size, carry_over) -> dict:
    """What a resumed run must share with the run that wrote the checkpoint."""
    return {"cell": model.cell.name, "hidden_size": int(model.cell.hidden_size),
            "input_size": int(model.input_size), "tokens": bool(model.tokens),
            "estimator": estimator.name, "seed": int(seed), "batch_size": int(batch_size),
            "carry_over": bool(carry_over)}


def _write_jsonl(path: str, records: list) -> None:
    """Atomically replace ``path`` with ``records``, one JSON object a line."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def fit(model: Model, optimizer, train_batches: Callable[[int], Iterable], *,
        estimator: GradientEstimator | None = None, epochs: int = 1, seed: int = 0,
        batch_size: int, carry_over: bool = True, val_batches: Callable[[], Iterable] | None = None,
        steps_per_epoch: int | None = None, log_every: int = 50, out_dir: str | None = None,
        checkpoint_every: int | None = None, resume: bool = False,
        on_nonfinite: str = "stop", max_skips: int = 10, progress: bool = True,
        state: TrainState | None = None, quiet: bool = False, keep: int = 2) -> FitResult:
    """Train ``model`` for ``epochs`` passes; log perplexity, tokens/s and gradient norm.

    Reproducible and resumable: the key of step ``i`` (the ``i``-th batch of
    the run, counting skipped ones) is ``fold_in(key(seed), i)``; params are
    initialised from ``key(seed)``. A run resumed from a checkpoint ends with
    bitwise the same parameters and metrics (timing fields aside) as the same
    run left uninterrupted, on the same machine.

    Args:
      model, optimizer: what to train and how (see :func:`make_optimizer`).
      train_batches: ``epoch -> iterable`` of batch-major ``(X [B, T], Y [B, T])``
        (or time-major :class:`Batch`), deterministic given the epoch (e.g.
        :func:`jrnn.data.batches` with ``seed`` and ``epoch``) so that a resumed
        run sees the same data. Every batch is validated (layout, dtype,
        ``B == batch_size`` when ``carry_over``, token ids in the vocabulary).
      estimator: gradient estimator, full BPTT by default.
      epochs: number of passes (>= 1).
      seed: seeds params and the per-step keys.
      batch_size: ``B`` (>= 1).
      carry_over: carry hidden state across batches (sequential partitioning).
      val_batches: ``() -> iterable`` for validation perplexity at each epoch end.
      steps_per_epoch: for the progress bar, if known.
      log_every: fetch metrics from the device every this many steps and log a
        record at every multiple of it (and at each epoch end).
      out_dir: if set, write ``metrics.jsonl`` there, and checkpoints to
        ``out_dir/checkpoints``: at the end, every ``checkpoint_every`` steps,
        and on SIGINT/SIGTERM. A fresh (not resumed) run replaces the
        checkpoints and metrics of an earlier run in ``out_dir``.
      checkpoint_every: save a checkpoint every this many steps (>= 1) or
        ``None`` (only at the end and on a signal).
      resume: continue from the last checkpoint in ``out_dir``: params,
        optimizer state, carry, data position, step, metrics so far. The run's
        fingerprint (cell, sizes, seed, batch size, estimator) must match.
      on_nonfinite: ``"stop"`` raises :class:`NonFiniteError` naming the step
        (the update was not applied; no checkpoint is written after it, so the
        last checkpoint is the last good state); ``"skip"`` drops the update
        (params, optimizer state and carry stay bit for bit), counts it in the
        metrics (``skipped``) and raises after ``max_skips`` in a row.
      max_skips: see ``on_nonfinite``.
      progress: show a progress bar (one line per logged record when stderr
        is not a terminal).
      state: start from this state instead of a fresh one (checked against
        the model, optimizer, estimator and ``batch_size``).
      quiet: print nothing but the progress bar and the interruption notice.
      keep: how many checkpoints to keep.

    Returns:
      :class:`FitResult` ``(state, history)``; ``history`` is the list of logged
      records (also in ``metrics.jsonl``), including those before a resume.

    Raises:
      NonFiniteError: see ``on_nonfinite``.
      jrnn.checkpoint.Interrupted: (a ``KeyboardInterrupt``) after SIGINT/SIGTERM,
        once the checkpoint is saved.
      jrnn.checkpoint.CheckpointError: ``resume`` met a corrupt checkpoint or
        one written by another model or run configuration.
      ValueError, TypeError: invalid arguments or batches (checked eagerly).
    """
    from . import checkpoint as ckpt

    # ---- validate everything before anything is compiled
    if not isinstance(model, Model):
        raise TypeError(f"model must be a jrnn Model, got {type(model).__name__}")
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(f"optimizer must be an optax GradientTransformation, got {type(optimizer).__name__}")
    if not callable(train_batches):
        raise TypeError("train_batches must be a function epoch -> iterable of batches, got "
                        f"{type(train_batches).__name__}")
    if val_batches is not None and not callable(val_batches):
        raise TypeError(f"val_batches must be a function () -> iterable of batches or None, got "
                        f"{type(val_batches).__name__}")
    if on_nonfinite not in ("stop", "skip"):
        raise ValueError(f"on_nonfinite must be 'stop' or 'skip', got {on_nonfinite!r}")
    epochs = validation.check_int("epochs", epochs)
    log_every = validation.check_int("log_every", log_every)
    max_skips = validation.check_int("max_skips", max_skips)
    batch_size = validation.check_int("batch_size", batch_size)
    seed = validation.check_int("seed", seed, 0)
    steps_per_epoch = validation.check_int("steps_per_epoch", steps_per_epoch, allow_none=True)
    checkpoint_every = validation.check_int("checkpoint_every", checkpoint_every, allow_none=True)
    keep = validation.check_int("keep", keep)
    if resume and out_dir is None:
        raise ValueError("resume=True needs out_dir (the run directory to resume from)")
    estimator = estimator or _FULL
    if state is not None:
        validation.check_state(model, optimizer, estimator, state, batch_size)

    key = jax.random.key(seed)
    if state is None:
        state = init_state(model, optimizer, estimator, key, batch_size)
    fingerprint = _run_fingerprint(model, estimator, seed, batch_size, carry_over)
    say = (lambda *a: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))

    # ---- where to start: fresh, or the last checkpoint
    step = int(jax.device_get(state.step))  # global step: batches consumed (skipped included)
    start_epoch, start_batch, history = 0, 0, []
    win = {"loss": 0.0, "grad_norm": 0.0, "n": 0, "skipped": 0, "tokens": 0}
    skips, skipped_total = 0, 0
    manager, log_path = None, None
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        log_path = os.path.join(out_dir, "metrics.jsonl")
        manager = ckpt.Checkpointer(out_dir, keep=keep)
        if resume:
            restored = manager.restore(state, expect=fingerprint)
            if restored is None:
                raise FileNotFoundError(f"resume: no checkpoint in {manager.directory!r}")
            state, meta = restored
            try:
                step, start_epoch, start_batch = int(meta["step"]), int(meta["epoch"]), int(meta["batch"])
                history = list(meta["history"])
                win.update(meta["window"])
                skips, skipped_total = int(meta["skips"]), int(meta["skipped_total"])
            except (KeyError, TypeError, ValueError) as e:
                raise ckpt.CheckpointError(
                    f"checkpoint at step {manager.latest_step()} in {manager.directory} has "
                    f"incomplete metadata ({type(e).__name__}: {e}); was it written by jrnn.fit?") from e
            win["tokens"] = 0
            _write_jsonl(log_path, history)  # drop records logged after the checkpoint
            say(f"resumed from step {step} (epoch {start_epoch}, batch {start_batch}) in {out_dir}")
        else:
            old = manager.all_steps()
            if old:
                for s in old:
                    manager.manager.delete(s)
                say(f"note: fresh run in {out_dir}: removed the earlier run's checkpoints at steps "
                    f"{old} (resume=True / --resume continues a run instead)")
            _write_jsonl(log_path, [])
    last_saved = step if resume else None  # step of the newest checkpoint of this run
    saved_pos = (step, start_epoch, start_batch) if resume else None

    step_fn = _step_fn(model, optimizer, estimator, carry_over)
    done0 = start_epoch * steps_per_epoch + start_batch if steps_per_epoch else start_epoch
    bar = _Progress(epochs * steps_per_epoch if steps_per_epoch else epochs, done0, progress)
    done = done0
    pending = []  # (step, device metrics) not yet fetched; fetched every log_every steps
    t_last = time.perf_counter()

    def log(record):
        history.append(record)
        if log_path:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def drain():
        """Fetch pending metrics, enforce the non-finite policy, add them to the window."""
        nonlocal skips, skipped_total
        if not pending:
            return
        fetched = jax.device_get(pending)
        pending.clear()
        for s, m in fetched:
            if not bool(m["finite"]):
                if on_nonfinite == "stop":
                    raise NonFiniteError(
                        f"non-finite loss or gradient at step {s} (loss={float(m['loss'])}, "
                        f"grad_norm={float(m['grad_norm'])}); the update was not applied"
                        + (f"; the last good checkpoint (step {last_saved}) is in "
                           f"{manager.directory}" if last_saved is not None else ""),
                        step=s, checkpoint_step=last_saved)
                skips += 1
                skipped_total += 1
                win["skipped"] += 1
                if skips >= max_skips:
                    raise NonFiniteError(
                        f"{skips} non-finite steps in a row, the last at step {s}; their updates "
                        f"were skipped" + (f"; the last checkpoint (step {last_saved}) is in "
                                           f"{manager.directory}" if last_saved is not None else ""),
                        step=s, checkpoint_step=last_saved)
                continue
            skips = 0
            win["loss"] += float(m["loss"])
            win["grad_norm"] += float(m["grad_norm"])
            win["n"] += 1

    def log_window(epoch):
        nonlocal t_last
        drain()
        if not (win["n"] or win["skipped"]):
            return None
        now = time.perf_counter()
        rec = {"step": step, "epoch": epoch}
        if win["n"]:
            rec.update(train_ppl=perplexity(win["loss"] / win["n"]),
                       grad_norm=win["grad_norm"] / win["n"])
        rec.update(skipped=skipped_total, tokens_per_s=win["tokens"] / max(now - t_last, 1e-9))
        log(rec)
        win.update(loss=0.0, grad_norm=0.0, n=0, skipped=0, tokens=0)
        t_last = now
        if "train_ppl" in rec:
            bar.update(done, f"ppl {rec['train_ppl']:.2f} {rec['tokens_per_s']:.0f} tok/s")
        return rec

    def save(epoch, batch):
        """Checkpoint the state before batch ``batch`` of ``epoch`` (only after a finite check)."""
        nonlocal last_saved, saved_pos
        if saved_pos == (step, epoch, batch):
            return
        drain()  # raises on a non-finite step: never checkpoint past one in 'stop' mode
        meta = {"step": step, "epoch": epoch, "batch": batch, "history": history,
                "window": {k: v for k, v in win.items() if k != "tokens"}, "skips": skips,
                "skipped_total": skipped_total, "config": fingerprint,
                "rng": "step i uses jax.random.fold_in(jax.random.key(seed), i)"}
        manager.save(state, meta, step=step)
        last_saved, saved_pos = step, (step, epoch, batch)

    def stop(signum, epoch, batch):
        name = signal.Signals(signum).name
        bar.close()
        if manager is None:
            print(f"\ninterrupted by {name} at step {step} (no out_dir: nothing saved)",
                  file=sys.stderr, flush=True)
            raise ckpt.Interrupted(f"interrupted by {name} at step {step}", signum, None)
        save(epoch, batch)
        msg = (f"interrupted by {name} at step {step}: checkpoint saved in {manager.directory}; "
               f"resume with `jrnn train --resume --out {out_dir}` or "
               f"fit(..., out_dir={out_dir!r}, resume=True)")
        print("\n" + msg, file=sys.stderr, flush=True)
        raise ckpt.Interrupted(msg, signum, step)

    with ckpt.signals_to_checkpoint() as interrupted:
        save_due = False
        for epoch in range(start_epoch, epochs):
            seen = 0
            for batch_idx, xy in enumerate(train_batches(epoch)):
                seen += 1
                if epoch == start_epoch and batch_idx < start_batch:
                    continue  # consumed before the checkpoint we resumed from
                if save_due:  # deferred so that one step never has two checkpoints
                    save(epoch, batch_idx)
                    save_due = False
                b = _to_batch(model, xy, batch_size if carry_over else None)
                state, m = step_fn(state, b, jax.random.fold_in(key, step))
                pending.append((step, m))
                win["tokens"] += b.inputs.shape[0] * b.inputs.shape[1]
                step += 1
                done += 1
                if step % log_every == 0:
                    log_window(epoch)
                if manager and checkpoint_every and step % checkpoint_every == 0:
                    save_due = True
                if interrupted():
                    stop(interrupted(), epoch, batch_idx + 1)
            if seen == 0:
                raise ValueError(f"train_batches({epoch}) yielded no batches: the corpus is too "
                                 "short for this batch size and number of steps")
            if epoch == start_epoch and start_batch > seen:
                raise ckpt.CheckpointError(
                    f"the checkpoint resumes at batch {start_batch} of epoch {epoch}, but "
                    f"train_batches({epoch}) yields only {seen}: the data changed since it was written")
            rec = log_window(epoch)
            if val_batches is not None:
                vppl = perplexity(evaluate(model, state.params, val_batches(), carry_over=carry_over))
                t_last = time.perf_counter()  # tokens/s counts training time only
                log({"step": step, "epoch": epoch, "val_ppl": vppl})
                rec = dict(rec or {}, val_ppl=vppl)
            if not steps_per_epoch:
                bar.update(epoch + 1, f"ppl {rec['train_ppl']:.2f}" if rec and "train_ppl" in rec else "")
            if manager and (save_due or interrupted()):
                save(epoch + 1, 0)
                save_due = False
            if interrupted():  # a signal during validation
                stop(interrupted(), epoch + 1, 0)
        bar.close()
        drain()
        if manager:
            save(epochs, 0)  # no-op if the last checkpoint is already this one
        if interrupted():  # a signal during the last validation or save: honour it
            stop(interrupted(), epochs, 0)
    return FitResult(state, history)
