"""Checkpoints of a whole training run with Orbax, and signal handling.

A checkpoint holds the :class:`~jrnn.train.TrainState` (params, optimizer
state, carried hidden state / influence, step) and JSON metadata (data
position ``epoch``/``batch``, the metrics so far, and the run's config).
RNG keys need no saving: step keys are ``fold_in(key(seed), step)``.

Orbax writes each checkpoint to a temporary directory and renames it when
complete, so a save killed half-way leaves the previous one loadable.
"""

from __future__ import annotations

import contextlib
import os
import signal

import jax
import numpy as np

__all__ = ["Checkpointer", "CheckpointError", "signals_to_checkpoint"]


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not match the model."""


class Checkpointer:
    """Saves and restores ``(state, meta)`` under ``directory/checkpoints``; keeps the last ``keep``."""

    def __init__(self, directory: str, keep: int = 2):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = os.path.abspath(os.path.join(directory, "checkpoints"))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False))

    def save(self, state, meta: dict) -> None:
        ocp = self._ocp
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
        self.manager.wait_until_finished()

    def latest_step(self):
        return self.manager.latest_step()

    def restore(self, template, step: int | None = None):
        """Restore into the structure of ``template``; ``None`` if there is no checkpoint.

        Raises:
          CheckpointError: the checkpoint is unreadable or its arrays do not
            match ``template`` (another cell, size or optimizer).
        """
        ocp = self._ocp
        step = self.manager.latest_step() if step is None else step
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except Exception as e:  # orbax raises many types; report one clear error
            raise CheckpointError(
                f"cannot restore the checkpoint at step {step} in {self.directory}: it is corrupt "
                f"or was written by a different model/optimizer ({type(e).__name__}: {e})"[:2000]
            ) from e
        state = out["state"]
        for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(template)):
            if np.shape(a) != np.shape(b) or np.asarray(a).dtype != np.asarray(b).dtype:
                raise CheckpointError(
                    f"checkpoint at step {step} in {self.directory} does not match the model: "
                    f"array of shape {np.shape(a)} {np.asarray(a).dtype} where the model has "
                    f"{np.shape(b)} {np.asarray(b).dtype}")
        return type(template)(*state) if isinstance(template, tuple) and not isinstance(state, type(template)) else state, out["meta"]


@contextlib.contextmanager
def signals_to_checkpoint():
    """Within the block, SIGINT/SIGTERM set a flag instead of killing the process.

    Yields a function ``interrupted() -> bool`` the training loop polls; it
    then saves a checkpoint and exits cleanly. A second signal is not
    deferred. Only the main thread can install handlers; elsewhere the
    signals keep their defaults.
    """
    hit = []

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
        yield lambda: bool(hit)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
