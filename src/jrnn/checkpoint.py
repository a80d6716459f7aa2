"""Checkpoints of a whole training run with Orbax, and signal handling.

A checkpoint holds the :class:`~jrnn.train.TrainState` (params, optimizer
state, carried hidden state / influence, number of updates applied) and JSON
metadata written by :func:`~jrnn.train.fit`: the data position (``epoch`` and
the index of the next ``batch`` in it), the global ``step`` (batches consumed,
skipped ones included), the metrics logged so far plus the partial sums of the
current logging window, the non-finite skip counters, and a fingerprint of the
run (cell, sizes, seed, batch size, estimator) checked on resume. RNG keys need
no saving: the key of step ``i`` is ``fold_in(key(seed), i)``, so a resumed run
draws exactly the keys the uninterrupted run would have.

Each checkpoint lives in ``<out>/checkpoints/<step>``. Orbax writes it to
``<step>.orbax-checkpoint-tmp`` and renames it only once it is complete, so a
save killed half-way (even by SIGKILL) leaves the previous checkpoints
loadable; the leftover temporary directory is ignored and cleaned up by the
next save. The last ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Checkpointer", "CheckpointError", "Interrupted", "signals_to_checkpoint", "state_spec",
           "state_digest"]

FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not match the model/run."""


class Interrupted(KeyboardInterrupt):
    """Training was stopped by SIGINT/SIGTERM after saving a checkpoint.

    Attributes:
      signum: the signal number.
      step: the global step the checkpoint was taken at (``None`` if nothing was saved).
    """

    def __init__(self, message: str, signum: int = signal.SIGINT, step: int | None = None):
        super().__init__(message)
        self.signum, self.step = signum, step


def state_spec(tree) -> dict:
    """``{path: [shape, dtype]}`` of a pytree's leaves (stored with each checkpoint)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out[jax.tree_util.keystr(path)] = [list(np.shape(leaf)), str(np.dtype(leaf.dtype))]
    return out


def state_digest(tree) -> dict:
    """``{path: crc32}`` of a pytree's leaves' bytes (stored with each checkpoint).

    Orbax's storage does not checksum array payloads: a flipped bit in a data
    file restores silently. The digest makes :meth:`Checkpointer.restore` catch it.
    """
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out[jax.tree_util.keystr(path)] = f"{zlib.crc32(_global_bytes(leaf)):08x}"
    return out


def _global_bytes(leaf) -> bytes:
    """A leaf's bytes; an array split over processes is gathered first (every process
    computes the same digest)."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        from jax.experimental import multihost_utils

        leaf = multihost_utils.process_allgather(leaf, tiled=True)
    return np.ascontiguousarray(jax.device_get(leaf)).tobytes()


def _meta_crc(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "meta_crc"}
    return f"{zlib.crc32(json.dumps(body, sort_keys=True).encode()):08x}"


_NOISE_FILTER = []


def _silence_closed_loop_noise() -> None:
    """After a failed read, tensorstore callbacks land on orbax's already closed
    asyncio loop and print ``RuntimeError: Event loop is closed`` tracebacks
    through ``sys.unraisablehook``, possibly later. Drop exactly those (once
    installed, the filter stays; every other unraisable goes to the old hook),
    so that a corrupt checkpoint reports one clear error and nothing else."""
    import sys

    if _NOISE_FILTER:
        return
    old = sys.unraisablehook

    def hook(u):
        if isinstance(u.exc_value, RuntimeError) and "Event loop is closed" in str(u.exc_value):
            return
        old(u)

    sys.unraisablehook = hook
    _NOISE_FILTER.append(hook)


@contextlib.contextmanager
def _orbax_quiet():
    """Orbax logs (absl) an ERROR line for each unreadable file before raising;
    we turn the exception into one :class:`CheckpointError`, so mute the log."""
    import logging

    log = logging.getLogger("absl")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0][:300] if msg else ''}"


class Checkpointer:
    """Saves and restores ``(state, meta)`` under ``directory/checkpoints``; keeps the last ``keep``.

    Args:
      directory: the run directory.
      keep: how many checkpoints to keep (>= 1); older ones are deleted after
        a newer one is complete.
    """

    def __init__(self, directory: str, keep: int = 2):
        import orbax.checkpoint as ocp

        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an integer >= 1, got {keep!r}")
        self._ocp = ocp
        self.run_directory = os.path.abspath(directory)
        self.directory = os.path.join(self.run_directory, "checkpoints")
        try:
            with _orbax_quiet():
                self.manager = ocp.CheckpointManager(
                    self.directory,
                    options=ocp.CheckpointManagerOptions(
                        max_to_keep=keep, enable_async_checkpointing=False, create=True,
                        cleanup_tmp_directories=True))
        except Exception as e:
            raise CheckpointError(f"cannot open the checkpoint directory {self.directory}: "
                                  f"{_short(e)}") from e

    def all_steps(self) -> list:
        """Steps of the complete checkpoints, oldest first."""
        return sorted(self.manager.all_steps())

    def latest_step(self):
        """The newest complete checkpoint's step, or ``None``."""
        return self.manager.latest_step()

    def save(self, state, meta: dict, step: int | None = None) -> int:
        """Write a checkpoint; returns its step.

        Args:
          state: the pytree to save (a ``TrainState``).
          meta: JSON-serialisable metadata; ``format`` and ``spec`` (shapes
            and dtypes of ``state``) are added.
          step: the checkpoint's number (``meta["step"]``, else ``state.step``).
            A checkpoint already at that step is replaced.
        """
        ocp = self._ocp
        if step is None:
            step = meta.get("step", None)
        step = int(jax.device_get(state.step) if step is None else step)
        meta = dict(meta, format=FORMAT, spec=state_spec(state), digest=state_digest(state))
        meta = json.loads(json.dumps(meta))  # exactly what will be read back
        meta["meta_crc"] = _meta_crc(meta)
        if step in self.manager.all_steps():
            self.manager.delete(step)
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
        self.manager.wait_until_finished()
        return step

    def read_meta(self, step: int | None = None):
        """The metadata of checkpoint ``step`` (default: latest), or ``None`` if there is none."""
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        try:
            with _orbax_quiet():
                out = self.manager.restore(step, args=self._ocp.args.Composite(
                    meta=self._ocp.args.JsonRestore()))
            meta = out["meta"]
            if not isinstance(meta, dict):
                raise ValueError(f"metadata is a {type(meta).__name__}, not a dict")
            if "meta_crc" in meta and meta["meta_crc"] != _meta_crc(meta):
                raise ValueError("the metadata fails its checksum")
        except Exception as e:
            raise CheckpointError(self._unreadable(step, e)) from e
        return meta

    def _unreadable(self, step, e) -> str:
        _silence_closed_loop_noise()
        older = [s for s in self.all_steps() if s < step]
        tip = (f"; an older checkpoint exists at step {older[-1]}: delete "
               f"{os.path.join(self.directory, str(step))} to resume from it" if older else "")
        return (f"checkpoint at step {step} in {self.directory} is unreadable (corrupt or "
                f"incomplete: {_short(e)}){tip}")

    def restore(self, template, step: int | None = None, expect: dict | None = None):
        """Restore into the structure of ``template``; ``None`` if there is no checkpoint.

        Args:
          template: a state of the right structure, shapes and dtypes (e.g.
            a freshly initialised ``TrainState``).
          step: which checkpoint (default: the latest).
          expect: if given, ``meta["config"]`` must agree with it on every key
            both have (the run fingerprint written by ``fit``).

        Returns:
          ``(state, meta)`` or ``None``.

        Raises:
          CheckpointError: the checkpoint is unreadable, or was written by
            another model (cell, sizes), optimizer or run configuration. The
            message says which array or setting differs.
        """
        ocp = self._ocp
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        meta = self.read_meta(step)
        where = f"checkpoint at step {step} in {self.directory}"
        if expect is not None:
            saved = meta.get("config") or {}
            diff = [f"{k}={saved[k]!r} there, {v!r} here" for k, v in expect.items()
                    if k in saved and saved[k] != v]
            if diff:
                raise CheckpointError(f"{where} was written by a different run: {'; '.join(diff)}")
        want = state_spec(template)
        have = meta.get("spec")
        if isinstance(have, dict) and have != want:
            bad = [k for k in [*want, *(k for k in have if k not in want)]  # params first
                   if want.get(k) != have.get(k)]
            k = bad[0]
            fmt = lambda v: "absent" if v is None else f"shape {tuple(v[0])} {v[1]}"
            raise CheckpointError(
                f"{where} does not match the model/optimizer: state{k} is {fmt(have.get(k))} "
                f"there, {fmt(want.get(k))} here ({len(bad)} array(s) differ; another cell, "
                f"hidden size, vocabulary, batch size or optimizer?)")
        abstract = jax.tree.map(
            lambda x: ocp.utils.to_shape_dtype_struct(x if isinstance(x, jax.Array) else jnp.asarray(x)),
            template)
        try:
            with _orbax_quiet():
                out = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract)))
            state = out["state"]
        except Exception as e:  # orbax raises many types; report one clear error
            raise CheckpointError(self._unreadable(step, e)) from e
        if jax.tree.structure(state) != jax.tree.structure(template):
            try:
                state = jax.tree.unflatten(jax.tree.structure(template), jax.tree.leaves(state))
            except Exception as e:
                raise CheckpointError(f"{where} does not match the structure of the state "
                                      f"({_short(e)})") from e
        for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(template)):
            if np.shape(a) != np.shape(b) or np.dtype(a.dtype) != np.dtype(b.dtype):
                raise CheckpointError(
                    f"{where} does not match the model: array of shape {np.shape(a)} {a.dtype} "
                    f"where the model has {np.shape(b)} {b.dtype}")
        digest = meta.get("digest")
        if isinstance(digest, dict):
            got = state_digest(state)
            bad = [k for k in got if digest.get(k) != got[k]]
            if bad:
                raise CheckpointError(self._unreadable(step, ValueError(
                    f"state{bad[0]} fails its checksum ({len(bad)} array(s) differ)")))
        return state, meta


@contextlib.contextmanager
def signals_to_checkpoint():
    """Within the block, SIGINT/SIGTERM set a flag instead of killing the process.

    Yields a function ``interrupted() -> int`` (the first signal's number, or
    0) that the training loop polls after each step; it then saves a
    checkpoint and raises :class:`Interrupted`. A second signal is not
    deferred: it raises ``KeyboardInterrupt`` at once (a checkpoint being
    written then stays incomplete and is ignored; the previous one is intact).
    Only the main thread can install handlers; elsewhere the signals keep
    their defaults.
    """
    hit: list[Any] = []

    def handler(signum, frame):
        if hit:
            raise KeyboardInterrupt
        hit.append(signum)

    old = {}
    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            old[s] = signal.signal(s, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield lambda: hit[0] if hit else 0
    finally:
        for s, h in old.items():
            signal.signal(s, h)
