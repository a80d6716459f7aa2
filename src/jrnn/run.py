"""The run directory: the one owner of its on-disk format.

A run directory holds::

    config.json     the TrainConfig (runs started by ``jrnn train``)
    tensorboard/    the records as TensorBoard scalars (``LoopConfig(tensorboard=True)``,
                    the ``tensorboard`` extra: tensorboardX)
    vocab.json      the vocabulary (token models): token kind, preprocessing, tokens
    metrics.jsonl   the loop's records, one JSON object a line
    checkpoints/    Orbax checkpoints (:class:`jrnn.checkpoint.Checkpointer`):
                    the whole TrainState and the loop's position and metrics
    perplexity.png  the learning curves (``jrnn train``)

:class:`RunDir` writes and reads all of them, for fresh runs, resumed runs and
:func:`load_run`; nothing else in jrnn knows these file names.
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["RunDir", "load_run"]


def _writes_files() -> bool:
    """Process 0 writes the run's files; every process writes its part of a checkpoint."""
    import jax

    return jax.process_index() == 0


def _scalars(record: dict):
    """``(name, float)`` of a record's numbers; a list (one value per run) as ``name/run_i``."""
    for k, v in record.items():
        if k in ("step", "epoch") or isinstance(v, (str, bool)) or v is None:
            continue
        if isinstance(v, (list, tuple)):
            yield from ((f"{k}/run_{i}", float(x)) for i, x in enumerate(v)
                        if isinstance(x, (int, float)) and not isinstance(x, bool))
        elif isinstance(v, (int, float)):
            yield k, float(v)


class RunDir:
    """A run directory (created on first write).

    Args:
      path: the directory.
      keep: how many checkpoints to keep.
    """

    CONFIG, VOCAB, METRICS, PLOT = "config.json", "vocab.json", "metrics.jsonl", "perplexity.png"
    BOARD = "tensorboard"

    def __init__(self, path: str | os.PathLike, keep: int = 2):
        self.path = os.fspath(path)
        self.keep = keep
        self._ckpt = None
        self._board = None

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def checkpointer(self):
        if self._ckpt is None:
            from .checkpoint import Checkpointer

            os.makedirs(self.path, exist_ok=True)
            self._ckpt = Checkpointer(self.path, keep=self.keep)
        return self._ckpt

    # -- the loop's side: metrics and checkpoints

    def start_fresh(self) -> list:
        """Remove an earlier run's checkpoints and metrics; returns the steps removed."""
        old = self.checkpointer.all_steps()
        for s in old:
            self.checkpointer.manager.delete(s)
        self.write_metrics([])
        return old

    def resume(self, template, fingerprint: dict):
        """``(state, meta)`` of the latest checkpoint; metrics.jsonl is cut back to it.

        Raises:
          FileNotFoundError: no checkpoint.
          jrnn.checkpoint.CheckpointError: corrupt, incomplete, or another run's.
        """
        from .checkpoint import CheckpointError

        restored = self.checkpointer.restore(template, expect=fingerprint)
        if restored is None:
            raise FileNotFoundError(f"resume: no checkpoint in {self.checkpointer.directory!r}")
        state, meta = restored
        missing = [k for k in ("step", "epoch", "batch", "history", "window") if k not in meta]
        if missing:
            raise CheckpointError(
                f"checkpoint at step {self.checkpointer.latest_step()} in "
                f"{self.checkpointer.directory} has incomplete metadata (no {missing}); "
                f"was it written by jrnn.fit?")
        self.write_metrics(meta["history"])  # drop records logged after the checkpoint
        return state, meta

    def save(self, state, meta: dict) -> None:
        self.checkpointer.save(state, meta, step=meta["step"])

    def log(self, record: dict) -> None:
        """Append one record to metrics.jsonl, and to TensorBoard if open (process 0 of a
        multi-process run writes them)."""
        if not _writes_files():
            return
        os.makedirs(self.path, exist_ok=True)
        with open(self.file(self.METRICS), "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._board is not None:
            for name, value in _scalars(record):
                self._board.add_scalar(name, value, record["step"])
            self._board.flush()

    def open_tensorboard(self, from_step: int = 0) -> None:
        """Also write each record's numbers as TensorBoard scalars under ``tensorboard/``
        (a sweep's lists as ``name/run_i``). Events at ``from_step`` and later are purged:
        those of an earlier run in a fresh run (0), those logged after the checkpoint a
        resumed run starts from (it logs them again)."""
        if not _writes_files() or self._board is not None:
            return
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ImportError("TensorBoard logging needs tensorboardX: pip install "
                              "'jrnn[tensorboard]'") from None
        self._board = SummaryWriter(self.file(self.BOARD), purge_step=from_step)

    def close(self) -> None:
        if self._board is not None:
            self._board.close()
            self._board = None

    def write_metrics(self, records: list) -> None:
        """Atomically replace metrics.jsonl with ``records`` (process 0 writes it)."""
        if not _writes_files():
            return
        os.makedirs(self.path, exist_ok=True)
        path = self.file(self.METRICS)
        with open(path + ".tmp", "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        os.replace(path + ".tmp", path)

    def read_metrics(self) -> list:
        with open(self.file(self.METRICS)) as f:
            return [json.loads(line) for line in f]

    # -- the CLI's side: config and vocabulary

    def write_config(self, config) -> None:
        """config.json: the run's :class:`~jrnn.config.TrainConfig` (process 0 writes it)."""
        if not _writes_files():
            return
        os.makedirs(self.path, exist_ok=True)
        with open(self.file(self.CONFIG), "w") as f:
            f.write(config.to_json())

    def read_config(self):
        """The :class:`~jrnn.config.TrainConfig` of the run."""
        from .config import TrainConfig

        path = self.file(self.CONFIG)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{self.path!r} is not a jrnn run directory (missing {self.CONFIG})")
        with open(path) as f:
            try:
                return TrainConfig.from_json(f.read())
            except (ValueError, TypeError) as e:
                raise ValueError(f"{path}: {e}") from e

    def write_vocab(self, vocab) -> None:
        """vocab.json: the token kind, how the text was preprocessed, and (char/word) the tokens."""
        if not _writes_files():
            return
        os.makedirs(self.path, exist_ok=True)
        record = {"token": vocab.token, "preprocess": vocab.preprocess}
        if vocab.token != "byte":  # bytes: always the 256 ids 0..255
            record["idx_to_token"] = vocab.idx_to_token
        with open(self.file(self.VOCAB), "w") as f:
            json.dump(record, f)

    def read_vocab(self):
        """The run's :class:`~jrnn.data.Vocab` or :class:`~jrnn.data.ByteVocab`."""
        from .data import ByteVocab, Vocab

        path = self.file(self.VOCAB)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{self.path!r} is not a jrnn run directory (missing {self.VOCAB})")
        with open(path) as f:
            v = json.load(f)
        # vocab.json written before "preprocess" was recorded: those runs all used d2l's
        preprocess = v.get("preprocess", "d2l")
        if v["token"] == "byte":
            return ByteVocab(preprocess)
        return Vocab.from_tokens(v["idx_to_token"], token=v["token"], preprocess=preprocess)


def load_run(path: str | os.PathLike) -> tuple[Any, Any, Any, Any]:
    """``(model, params, vocab, config)`` from a ``jrnn train`` run's latest checkpoint.

    With ``--seeds S`` (or a swept ``--lr``) the params carry a leading axis, one per run.
    """
    import jax

    from . import config as C
    from .loop import _init_runs, _runs
    from .step import init_state

    run = RunDir(path)
    cfg, vocab = run.read_config(), run.read_vocab()
    model = C.build_model(cfg.model, len(vocab))
    opt, est = C.build_optimizer(cfg.optim), C.build_estimator(cfg.optim)
    loop, key, B = C.loop_of(cfg), jax.random.key(0), cfg.data.batch_size
    template = (init_state(model, opt, est, key, B) if _runs(loop) is None
                else _init_runs(model, opt, est, key, B, loop))
    restored = run.checkpointer.restore(template)
    if restored is None:
        raise FileNotFoundError(f"no checkpoint in {os.fspath(path)!r}")
    return model, restored[0].params, vocab, cfg
