"""Minibatches of token subsequences for language models (pure NumPy).

Deterministic versions of d2l 0.17's ``seq_data_iter_random`` and
``seq_data_iter_sequential``. d2l yields batch-major ``[B, T]`` pairs; these
yield the time-major :class:`Batch` the train step takes (``inputs`` and
``targets`` ``[T, B]``, C-contiguous), converted once here so that no caller
transposes again. ``targets`` is ``inputs`` shifted by one token.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator, NamedTuple

import numpy as np

__all__ = ["Batch", "KINDS", "batches", "num_batches", "random_batches", "sequential_batches"]


class Batch(NamedTuple):
    """Time-major training batch.

    Attributes:
      inputs: ``[T, B, D]`` floats or ``[T, B]`` int token ids.
      targets: ``[T, B]`` int labels or ``[T, B, O]`` floats.
      mask: optional ``[T, B]`` float weights of each position in the loss.
    """

    inputs: Any
    targets: Any
    mask: Any = None


def _time_major(x: np.ndarray, y: np.ndarray) -> Batch:
    """Batch-major ``[B, T]`` rows -> a time-major :class:`Batch` (one copy each)."""
    return Batch(np.ascontiguousarray(x.T), np.ascontiguousarray(y.T))

KINDS = ("random", "sequential")


def _as_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _min_tokens(batch_size: int, num_steps: int, kind: str) -> int:
    # Tokens needed for one batch even with the worst (largest) random offset.
    if kind == "random":  # offset <= T-1, need (L - offset - 1) // T >= B
        return (batch_size + 1) * num_steps
    return (batch_size + 1) * num_steps + 1  # offset <= T, need (L-offset-1)//B >= T


def _check(corpus, batch_size, num_steps, kind) -> np.ndarray:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    batch_size = _check_int("batch_size", batch_size, 1)
    num_steps = _check_int("num_steps", num_steps, 1)
    corpus = np.asarray(corpus)
    if corpus.ndim != 1:
        raise ValueError(f"corpus must be 1-D, got shape {corpus.shape}")
    need = _min_tokens(batch_size, num_steps, kind)
    if len(corpus) < need:
        raise ValueError(
            f"corpus is too short for {kind} batches with batch_size={batch_size}, "
            f"num_steps={num_steps}: need at least {need} tokens, got {len(corpus)}"
        )
    return corpus.astype(np.int32, copy=False)


def num_batches(
    corpus_len: int, batch_size: int, num_steps: int, kind: str = "random", offset: int | None = None
) -> int:
    """Number of batches an epoch yields.

    The random offset changes the count by at most one per epoch. With
    ``offset=None`` the maximum over offsets (``offset=0``) is returned, handy
    as a progress-bar total; with an explicit offset the count is exact.

    Args:
        corpus_len: Number of tokens in the corpus.
        batch_size: Rows per batch, ``B``.
        num_steps: Time steps per batch, ``T``.
        kind: ``"random"`` or ``"sequential"``.
        offset: The epoch's leading offset, or None for the maximum count.

    Returns:
        The number of batches.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    batch_size = _check_int("batch_size", batch_size, 1)
    num_steps = _check_int("num_steps", num_steps, 1)
    usable = max(corpus_len - (offset or 0) - 1, 0)
    if kind == "random":
        return (usable // num_steps) // batch_size
    return (usable // batch_size) // num_steps


def random_batches(
    corpus, batch_size: int, num_steps: int, rng
) -> Iterator[Batch]:
    """Random sampling: batches of non-overlapping subsequences in random order.

    Drops a random offset in ``[0, T - 1]``, cuts the rest into subsequences
    of ``T`` tokens, shuffles them and yields ``B`` of them per batch. Adjacent
    batches are *not* continuations of each other.

    Args:
        corpus: Token ids, shape ``[N]``.
        batch_size: ``B``.
        num_steps: ``T``.
        rng: A ``np.random.Generator`` or an int seed.

    Returns:
        An iterator of time-major :class:`Batch`: int32 ``inputs`` and
        ``targets`` of shape ``[T, B]``, ``targets`` shifted by one token. Arguments are checked (and the epoch's
        offset and order drawn) eagerly, at call time.

    Raises:
        ValueError: On bad sizes or a corpus shorter than ``(B + 1) * T``.
    """
    corpus = _check(corpus, batch_size, num_steps, "random")
    rng = _as_rng(rng)
    offset = int(rng.integers(0, num_steps))  # d2l: random.randint(0, num_steps - 1)
    corpus = corpus[offset:]
    num_subseqs = (len(corpus) - 1) // num_steps
    starts = np.arange(0, num_subseqs * num_steps, num_steps)
    rng.shuffle(starts)
    idx = starts[: (num_subseqs // batch_size) * batch_size].reshape(-1, batch_size, 1)
    idx = idx + np.arange(num_steps)
    return (_time_major(corpus[i], corpus[i + 1]) for i in idx)


def sequential_batches(
    corpus, batch_size: int, num_steps: int, rng
) -> Iterator[Batch]:
    """Sequential partitioning: row ``i`` of batch ``j + 1`` continues row ``i``
    of batch ``j``, so the hidden state can be carried across batches.

    As d2l: drops a random offset in ``[0, T]``, keeps the largest multiple of
    ``B`` tokens that leaves one for the shifted targets, lays them out as
    ``B`` rows of ``C`` consecutive tokens and yields ``C // T`` column blocks
    of width ``T``. The last ``C mod T`` tokens of each row are unused.

    Args:
        corpus: Token ids, shape ``[N]``.
        batch_size: ``B``.
        num_steps: ``T``.
        rng: A ``np.random.Generator`` or an int seed.

    Returns:
        An iterator of time-major :class:`Batch` (``[T, B]`` int32; checked
        and offset drawn eagerly, at call time).

    Raises:
        ValueError: On bad sizes or a corpus shorter than ``(B + 1) * T + 1``.
    """
    corpus = _check(corpus, batch_size, num_steps, "sequential")
    rng = _as_rng(rng)
    offset = int(rng.integers(0, num_steps + 1))  # d2l: random.randint(0, num_steps)
    num_tokens = ((len(corpus) - offset - 1) // batch_size) * batch_size
    xs = corpus[offset : offset + num_tokens].reshape(batch_size, -1)
    ys = corpus[offset + 1 : offset + 1 + num_tokens].reshape(batch_size, -1)
    cols = range(0, (xs.shape[1] // num_steps) * num_steps, num_steps)
    return (_time_major(xs[:, i : i + num_steps], ys[:, i : i + num_steps]) for i in cols)


def batches(
    corpus,
    batch_size: int,
    num_steps: int,
    kind: str = "random",
    seed: int = 0,
    epoch: int = 0,
    start: int = 0,
) -> Iterator[Batch]:
    """One epoch of batches with a generator derived from ``(seed, epoch)``.

    The epoch's generator is ``np.random.default_rng([seed, epoch])``, so a run
    resumed at ``(epoch, start)`` sees exactly the batches it would have seen.

    Args:
        corpus: Token ids, shape ``[N]``.
        batch_size: ``B``.
        num_steps: ``T``.
        kind: ``"random"`` or ``"sequential"``.
        seed: Non-negative run seed.
        epoch: Non-negative epoch index.
        start: Number of leading batches of the epoch to skip (for resuming).

    Returns:
        An iterator of time-major :class:`Batch` (``[T, B]`` int32).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    rng = np.random.default_rng([_check_int("seed", seed, 0), _check_int("epoch", epoch, 0)])
    start = _check_int("start", start, 0)
    fn = random_batches if kind == "random" else sequential_batches
    return itertools.islice(fn(corpus, batch_size, num_steps, rng), start, None)
