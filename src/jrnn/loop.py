"""The one training loop, :func:`fit`, over small collaborators with one job each.

- :func:`jrnn.train_step` — the compiled step;
- :class:`jrnn.metrics.MetricsWindow` — drains device metrics, averages them,
  enforces the non-finite policy;
- :class:`jrnn.run.RunDir` — the run directory (metrics.jsonl, checkpoints);
- :func:`jrnn.checkpoint.signals_to_checkpoint` — SIGINT/SIGTERM become a
  checkpoint and :class:`~jrnn.checkpoint.Interrupted`;
- ``tqdm`` — the progress bar.

Reproducible and resumable: the key of step ``i`` (the ``i``-th batch of the
run, skipped ones included) is ``fold_in(key(seed), i)`` (split into ``S``
keys for ``S`` seeds); params come from ``key(seed)``. A run resumed from a
checkpoint ends with bitwise the same state and records (timing fields aside)
as the same run left uninterrupted, on the same machine.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import time
from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import parallel, validation
from .checkpoint import Interrupted, signals_to_checkpoint
from .config import LoopConfig
from .data.batches import Batch
from .grads import GradientEstimator, full
from .metrics import MetricsWindow
from .models import Model
from .run import RunDir
from .step import TrainState, init_state, init_states, set_hyperparam, train_step

__all__ = ["fit", "FitResult"]

TIMING = ("tokens_per_s", "train_seconds")  # the record fields that differ between runs


class FitResult(NamedTuple):
    """``state``: the final :class:`~jrnn.step.TrainState`; ``history``: every record,
    including those before a resume (also in ``metrics.jsonl``)."""

    state: TrainState
    history: list


class _Position(NamedTuple):
    """Where the loop is: ``step`` batches consumed; the next is batch ``batch`` of ``epoch``."""

    step: int
    epoch: int
    batch: int


def fit(model: Model, optimizer, train_batches: Callable[[int], Iterable[Batch]], *,
        estimator: GradientEstimator | None = None, batch_size: int, carry_over: bool = True,
        validate: Callable[[Any], dict] | None = None, config: LoopConfig = LoopConfig(),
        run_dir: str | RunDir | None = None, resume: bool = False,
        state: TrainState | None = None) -> FitResult:
    """Train ``model`` for ``config.epochs`` passes; log loss, perplexity, tokens/s, gradient norm.

    Args:
      model, optimizer: what to train and how (see :func:`jrnn.make_optimizer`).
      train_batches: ``epoch -> iterable`` of time-major :class:`Batch`,
        deterministic given the epoch (e.g. :func:`jrnn.data.batches` with
        ``seed`` and ``epoch``) so that a resumed run sees the same data.
        Every batch is validated (layout, dtypes, ``B == batch_size`` when
        ``carry_over``, token ids in the vocabulary).
      estimator: gradient estimator, full BPTT by default.
      batch_size: ``B``.
      carry_over: carry the state across batches (sequential partitioning).
      validate: ``params -> {name: float}`` (e.g. :func:`jrnn.held_out`), run
        every ``config.eval_every`` steps and at each epoch end; its values
        join a record ``{"step", "epoch", "train_seconds", ...}`` (lists of one
        value per run with ``config.seeds > 1`` or ``config.lrs``).
      config: the loop's settings (:class:`jrnn.LoopConfig`): epochs, seed,
        seeds and learning-rate sweeps (``lrs``, with an optimizer from
        ``make_optimizer(..., inject=True)``: ``seeds x len(lrs)`` runs in one
        vmapped program, each with its own metrics and non-finite guard),
        logging, evaluation, saving, the non-finite policy, time limit.
      run_dir: if set, write ``metrics.jsonl`` and checkpoints there (at the
        end, every ``config.save_every`` steps, on SIGINT/SIGTERM). A fresh
        run replaces the checkpoints and metrics of an earlier one.
      resume: continue from the last checkpoint in ``run_dir``; the run's
        fingerprint (cell, sizes, seed(s), batch size, estimator) must match.
      state: start from (a copy of) this state instead of a fresh one (checked).

    Returns:
      :class:`FitResult` ``(state, history)``.

    Raises:
      jrnn.NonFiniteError: a NaN/Inf step under ``on_nonfinite="stop"`` (not
        applied, nothing saved after it), or too many skipped in a row.
      jrnn.checkpoint.Interrupted: after SIGINT/SIGTERM, once the checkpoint is saved.
      jrnn.checkpoint.CheckpointError: ``resume`` met a corrupt or foreign checkpoint.
      ValueError, TypeError: invalid arguments or batches (checked eagerly).
    """
    estimator = estimator or _FULL
    batch_size = _check_args(model, optimizer, train_batches, validate, config, batch_size,
                             run_dir, resume)
    cfg, S = config, _runs(config)
    run = run_dir if isinstance(run_dir, RunDir) or run_dir is None else RunDir(run_dir, cfg.keep)
    loop = _Loop(model, estimator, cfg, run, batch_size, carry_over, validate)
    loop.begin(optimizer, state, resume)
    step_fn = _step_fn(model, optimizer, estimator, bool(carry_over), S, loop.mesh,
                       cfg.runs_per_chunk if S is not None else None)
    with signals_to_checkpoint() as interrupted:
        for epoch in range(loop.pos.epoch, cfg.epochs):
            seen, start = 0, loop.pos.batch if epoch == loop.pos.epoch else 0
            for i, batch in enumerate(train_batches(epoch)):
                seen += 1
                if i < start:
                    continue  # consumed before the checkpoint we resumed from
                loop.save_if_due(_Position(loop.pos.step, epoch, i))
                batch = loop.check(batch)
                loop.state, m = step_fn(loop.state, batch, loop.key_of(loop.pos.step))
                loop.advance(m, batch, epoch, i + 1)
                if interrupted():
                    loop.stop(interrupted())
                if loop.out_of_time():
                    break
            loop.end_epoch(epoch, seen, start)
            if interrupted():  # a signal during validation or the save
                loop.stop(interrupted())
            if loop.stopped:
                break
        loop.finish()
        if interrupted():
            loop.stop(interrupted())
    return FitResult(loop.state, loop.history)


def _rates(model) -> list | None:
    """The dropout rates for the fingerprint; the rates added after the first six (candidate,
    zoneout, zoneout_c) only when set, so runs saved before they existed still resume."""
    rates = list(getattr(model.regularise, "rates", ()))
    while len(rates) > 6 and rates[-1] == 0:
        rates.pop()
    return rates or None


class _Loop:
    """The loop's state between steps, and what happens at records, evaluations and saves."""

    def __init__(self, model, estimator, cfg: LoopConfig, run: RunDir | None, batch_size: int,
                 carry_over: bool, validate):
        self.model, self.estimator, self.cfg, self.run = model, estimator, cfg, run
        self.batch_size, self.carry_over, self.validate = batch_size, carry_over, validate
        self.runs = _runs(cfg)  # the vmapped runs (seeds x lrs), or None for one model
        self.mesh = None if cfg.devices is None else parallel.data_mesh(
            "all" if cfg.devices == "all" else int(cfg.devices))
        self.main = parallel.is_main_process()  # only it logs, writes metrics, draws the bar
        self.local_batch = batch_size  # the columns of each batch this process reads
        if self.mesh is not None and not parallel.splits_runs(self.mesh, self.runs):
            cols = parallel.process_columns(batch_size, self.mesh)
            self.local_batch = cols.stop - cols.start
        self.key = jax.random.key(cfg.seed)
        self.window = MetricsWindow(cfg.on_nonfinite, cfg.max_skips)
        self.history: list = []
        self.saved: _Position | None = None  # the newest checkpoint of this run
        self.save_due, self.stopped, self.evaluated_at = False, None, None
        self.clock = _Stopwatch()
        self.t_record = 0.0  # training seconds at the last record
        quiet = cfg.quiet or not self.main
        self.say = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))

    # -- start

    def begin(self, optimizer, state, resume: bool):
        m, est, B = self.model, self.estimator, self.batch_size
        if state is None:
            state = (init_state(m, optimizer, est, self.key, B) if self.runs is None else
                     _init_runs(m, optimizer, est, self.key, B, self.cfg))
        else:
            if self.runs is None:
                validation.check_state(m, optimizer, est, state, B)
            state = jax.tree.map(jnp.copy, state)  # the step donates its input: keep the caller's
        if self.mesh is not None:
            state = parallel.put_state(state, self.mesh, B, self.runs)
        self.state = state
        self.pos = _Position(int(np.max(jax.device_get(state.step))), 0, 0)
        if self.run is not None and resume:
            self.state, meta = self.run.resume(state, self.fingerprint())
            self.pos = _Position(int(meta["step"]), int(meta["epoch"]), int(meta["batch"]))
            self.history = list(meta["history"])
            self.window.load(meta["window"])
            self.clock.total = self.t_record = float(meta.get("train_seconds", 0.0))
            self.saved = self.pos
            self.say(f"resumed from step {self.pos.step} (epoch {self.pos.epoch}, batch "
                     f"{self.pos.batch}) in {self.run.path}")
        elif self.run is not None:
            old = self.run.start_fresh()
            if old:
                self.say(f"note: fresh run in {self.run.path}: removed the earlier run's checkpoints "
                         f"at steps {old} (resume=True / --resume continues a run instead)")
        if self.run is not None and self.cfg.tensorboard:
            self.run.open_tensorboard(self.pos.step + 1 if resume else 0)
        self.bar = _bar(self.cfg, self.pos) if self.main else None
        self.clock.start()

    def fingerprint(self) -> dict:
        """What a resumed run must share with the run that wrote the checkpoint."""
        m = self.model
        return {"cell": m.cell.name, "hidden_size": int(m.cell.hidden_size),
                "input_size": int(m.input_size), "tokens": bool(m.tokens),
                "estimator": self.estimator.name, "seed": int(self.cfg.seed),
                "seeds": int(self.cfg.seeds), "lrs": None if self.cfg.lrs is None else list(self.cfg.lrs),
                "batch_size": int(self.batch_size),
                "dropout": _rates(m),
                "carry_over": bool(self.carry_over)}

    # -- each step

    def key_of(self, step: int):
        k = jax.random.fold_in(self.key, step)
        return k if self.runs is None else jax.random.split(k, self.runs)

    def check(self, batch):
        """Validate a batch from ``train_batches``; on a mesh, return it placed there."""
        if not isinstance(batch, Batch):
            raise TypeError(f"train_batches must yield time-major jrnn.Batch (jrnn.data.batches "
                            f"does), got {type(batch).__name__}")
        validation.check_batch(self.model, batch, self.local_batch if self.carry_over else None)
        if self.mesh is None:
            return batch
        return parallel.shard_batch(batch, self.mesh, local=jax.process_count() > 1, runs=self.runs)

    def advance(self, metrics, batch, epoch: int, next_batch: int):
        step = self.pos.step
        self.window.add(step, metrics, int(np.prod(np.shape(batch.inputs)[:2])))
        self.pos = _Position(step + 1, epoch, next_batch)
        if self.pos.step % self.cfg.log_every == 0:
            self.record()
        if self.cfg.eval_every and self.pos.step % self.cfg.eval_every == 0:
            self.evaluate()
        if self.run is not None and self.cfg.save_every and self.pos.step % self.cfg.save_every == 0:
            self.save_due = True  # saved before the next batch: one step never has two checkpoints
        if self.bar is not None and self.cfg.steps_per_epoch:
            self.bar.update(1)

    def out_of_time(self) -> bool:
        if self.cfg.time_limit is not None and self.clock.seconds() >= self.cfg.time_limit:
            self.stopped = "time_limit"
        return self.stopped is not None

    # -- records, evaluation, checkpoints

    def log(self, record: dict):
        self.history.append(record)
        if self.run is not None:
            self.run.log(record)

    def record(self):
        self.window.drain(*self.last_checkpoint())
        rec = self.window.record()
        if rec is None:
            return
        now = self.clock.seconds()
        tokens = rec.pop("tokens")
        rec.update(tokens_per_s=tokens / max(now - self.t_record, 1e-9), train_seconds=now)
        self.t_record = now
        self.log({"step": self.pos.step, "epoch": self.pos.epoch, **rec})
        if self.bar is not None and "train_ppl" in rec:
            ppl = np.mean(rec["train_ppl"])
            self.bar.set_postfix_str(f"ppl {ppl:.2f} {rec['tokens_per_s']:.0f} tok/s", refresh=False)

    def evaluate(self):
        if self.validate is None or self.evaluated_at == self.pos.step:
            return
        self.window.drain(*self.last_checkpoint())  # never validate past a non-finite step
        with self.clock.paused():
            p = self.state.params if self.mesh is None else parallel.to_host(self.state.params)
            if self.runs is None:
                vals = self.validate(p)
            else:
                per = [self.validate(jax.tree.map(lambda a: a[s], p)) for s in range(self.runs)]
                vals = {k: [d[k] for d in per] for k in per[0]}
        self.evaluated_at = self.pos.step
        self.log({"step": self.pos.step, "epoch": self.pos.epoch,
                  "train_seconds": self.clock.seconds(), **vals})

    def last_checkpoint(self):
        if self.saved is None:
            return None, ""
        return self.saved.step, self.run.checkpointer.directory

    def save(self, pos: _Position):
        """Checkpoint the state before batch ``pos.batch`` of ``pos.epoch`` (after a finite check)."""
        if self.run is None or self.saved == pos:
            return
        self.window.drain(*self.last_checkpoint())  # raises on a non-finite step under "stop"
        meta = {"step": pos.step, "epoch": pos.epoch, "batch": pos.batch, "history": self.history,
                "window": self.window.state(), "train_seconds": self.clock.seconds(),
                "config": self.fingerprint(),
                "rng": "step i uses jax.random.fold_in(jax.random.key(seed), i)"}
        with self.clock.paused():
            self.run.save(self.state, meta)
        self.saved, self.save_due = pos, False

    def save_if_due(self, pos: _Position):
        if self.save_due:
            self.save(pos)

    def end_epoch(self, epoch: int, seen: int, start: int):
        from .checkpoint import CheckpointError

        if seen == 0:
            raise ValueError(f"train_batches({epoch}) yielded no batches: the corpus is too "
                             "short for this batch size and number of steps")
        if start > seen:
            raise CheckpointError(
                f"the checkpoint resumes at batch {start} of epoch {epoch}, but "
                f"train_batches({epoch}) yields only {seen}: the data changed since it was written")
        self.record()
        self.evaluate()
        if self.stopped is not None:
            if self.history:
                self.history[-1]["stopped"] = self.stopped
            if self.run is not None:
                self.run.write_metrics(self.history)
            self.save(self.pos)
            return
        self.pos = _Position(self.pos.step, epoch + 1, 0)
        if self.bar is not None and not self.cfg.steps_per_epoch:
            self.bar.update(1)
        if self.save_due:
            self.save(self.pos)

    def finish(self):
        if self.bar is not None:
            self.bar.close()
        self.window.drain(*self.last_checkpoint())
        self.save(self.pos)  # a no-op if the last checkpoint is this one
        if self.run is not None:
            self.run.close()

    def stop(self, signum: int):
        name = signal.Signals(signum).name
        if self.bar is not None:
            self.bar.close()
        step = self.pos.step
        if self.run is None:
            print(f"\ninterrupted by {name} at step {step} (no run_dir: nothing saved)",
                  file=sys.stderr, flush=True)
            raise Interrupted(f"interrupted by {name} at step {step}", signum, None)
        self.save(self.pos)
        self.run.close()
        msg = (f"interrupted by {name} at step {step}: checkpoint saved in "
               f"{self.run.checkpointer.directory}; resume with `jrnn train --resume --out "
               f"{self.run.path}` or fit(..., run_dir={self.run.path!r}, resume=True)")
        print("\n" + msg, file=sys.stderr, flush=True)
        raise Interrupted(msg, signum, step)


class _Stopwatch:
    """Training seconds: runs while the loop trains, paused for validation and saves."""

    def __init__(self):
        self.total, self.since = 0.0, None

    def start(self):
        self.since = time.perf_counter()

    def seconds(self) -> float:
        return self.total + (time.perf_counter() - self.since if self.since is not None else 0.0)

    @contextlib.contextmanager
    def paused(self):
        self.total, self.since = self.seconds(), None
        try:
            yield
        finally:
            self.start()


def _bar(cfg: LoopConfig, pos: _Position):
    """A tqdm bar over steps (if ``steps_per_epoch`` is known) or epochs on a terminal;
    plain log lines elsewhere (CI, a log file); ``None`` if off."""
    if not cfg.progress:
        return None
    per = cfg.steps_per_epoch
    total, done = (cfg.epochs * per, pos.epoch * per + pos.batch) if per else (cfg.epochs, pos.epoch)
    if not sys.stderr.isatty():
        return _LogLines(total, done, "step" if per else "epoch")
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit="step" if per else "epoch", file=sys.stderr,
                dynamic_ncols=True)


class _LogLines:
    """tqdm's ``update``/``set_postfix_str``/``close`` as one plain line per 10 s (not a terminal)."""

    def __init__(self, total: int, done: int, unit: str):
        self.total, self.n, self.unit, self.last, self.text = total, done, unit, None, ""

    def update(self, n: int = 1):
        self.n += n
        now = time.perf_counter()
        if self.last is None or now - self.last >= 10.0 or self.n >= self.total:
            self.last = now
            print(f"{self.unit} {self.n}/{self.total} {self.text}".rstrip(), file=sys.stderr, flush=True)

    def set_postfix_str(self, text: str, refresh: bool = False):
        self.text = text

    def close(self):
        pass


def _runs(cfg: LoopConfig) -> int | None:
    """How many runs are vmapped (``seeds`` x ``len(lrs)``), or ``None`` for one model."""
    n = cfg.seeds * (len(cfg.lrs) if cfg.lrs else 1)
    return n if n > 1 else None


def _init_runs(model, optimizer, estimator, key, batch_size: int, cfg: LoopConfig):
    """The stacked states of a sweep: run ``s * len(lrs) + j`` has seed ``s``'s params
    (``key`` itself for one seed, else ``split(key, seeds)[s]``) and learning rate ``lrs[j]``."""
    keys = key[None] if cfg.seeds == 1 else jax.random.split(key, cfg.seeds)
    if cfg.lrs:
        keys = keys[np.repeat(np.arange(cfg.seeds), len(cfg.lrs))]
    state = init_states(model, optimizer, estimator, keys, batch_size)
    if cfg.lrs:
        lrs = np.tile(np.asarray(cfg.lrs, np.float32), cfg.seeds)
        state = state._replace(opt_state=set_hyperparam(state.opt_state, "learning_rate", lrs))
    return state


def _check_args(model, optimizer, train_batches, validate, config, batch_size, run_dir, resume):
    if not isinstance(model, Model):
        raise TypeError(f"model must be a jrnn Model, got {type(model).__name__}")
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(f"optimizer must be an optax GradientTransformation, got {type(optimizer).__name__}")
    if not callable(train_batches):
        raise TypeError("train_batches must be a function epoch -> iterable of batches, got "
                        f"{type(train_batches).__name__}")
    if validate is not None and not callable(validate):
        raise TypeError(f"validate must be a function params -> dict or None, got {type(validate).__name__}")
    if not isinstance(config, LoopConfig):
        raise TypeError(f"config must be a jrnn.LoopConfig, got {type(config).__name__}")
    if resume and run_dir is None:
        raise ValueError("resume=True needs run_dir (the run directory to resume from)")
    return validation.check_int("batch_size", batch_size)


_FULL = full()


@functools.lru_cache(maxsize=16)
def _cached_step(model, optimizer, estimator, carry_over, seeds, mesh, chunk):
    return train_step(model, optimizer, estimator, carry_over=carry_over, seeds=seeds, check=False,
                      mesh=mesh, runs_per_chunk=chunk)


def _step_fn(model, optimizer, estimator, carry_over, seeds, mesh, chunk=None):
    """The compiled step, memoised: several fits of one model compile once. The loop
    validates each batch itself (``check=False``)."""
    try:
        return _cached_step(model, optimizer, estimator, carry_over, seeds, mesh, chunk)
    except TypeError:  # an unhashable custom optimizer/estimator: no memo
        return train_step(model, optimizer, estimator, carry_over=carry_over, seeds=seeds, check=False,
                          mesh=mesh, runs_per_chunk=chunk)
