"""Minibatches of token subsequences for language models (pure NumPy).

Deterministic versions of d2l 0.17's ``seq_data_iter_random`` and
``seq_data_iter_sequential``. d2l yields batch-major ``[B, T]`` pairs; these
yield the time-major :class:`Batch` the train step takes (``inputs`` and
``targets`` ``[T, B]``, C-contiguous), converted once here so that no caller
transposes again. ``targets`` is ``inputs`` shifted by one token.

:func:`pack` lays whole episodes (documents) end to end into a batch with
``resets`` (each episode's first step) and a loss ``mask`` (zero on padding).
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator, NamedTuple

import numpy as np

__all__ = ["Batch", "KINDS", "batches", "num_batches", "pack", "random_batches",
           "sequential_batches"]


class Batch(NamedTuple):
    """Time-major training batch.

    Attributes:
      inputs: ``[T, B, D]`` floats or ``[T, B]`` int token ids.
      targets: ``[T, B]`` int labels or ``[T, B, O]`` floats.
      mask: optional ``[T, B]`` float weights of each position in the loss.
      resets: optional ``[T, B]`` bool: ``True`` where a new episode starts
        (the carry entering that step is reset, see :func:`jrnn.unroll`'s
        ``resets``); every estimator honours it (:func:`pack` makes it).
      lengths: optional ``[B]`` ints in ``1..T``: each sequence's real length,
        read by whole-sequence models (``Model.forward``, e.g. a bidirectional
        tagger, whose backward pass starts at each sequence's last real step);
        causal models weight padding out with ``mask``.
    """

    inputs: Any
    targets: Any
    mask: Any = None
    resets: Any = None
    lengths: Any = None


def _time_major(x: np.ndarray, y: np.ndarray) -> Batch:
    """Batch-major ``[B, T]`` rows -> a time-major :class:`Batch` (one copy each)."""
    return Batch(np.ascontiguousarray(x.T), np.ascontiguousarray(y.T))

def pack(episodes, batch_size: int, num_steps: int | None = None) -> Batch:
    """Pack whole episodes (documents) into one time-major :class:`Batch` with ``resets``.

    Episodes are laid end to end in ``B`` rows, in order, each going to the
    row that is shortest so far (the first such row on ties); each episode's
    first step is marked in ``resets``, so the carry restarts there and no
    gradient crosses into it (:func:`jrnn.unroll`'s ``resets``). Rows are
    right-padded with zeros to ``T``; ``mask`` is 1 on real steps and 0 on
    padding, so padding weighs nothing in the loss (the carry still runs over
    the zero inputs there: the final carry of a padded row is not an
    episode's).

    Args:
        episodes: a sequence of ``(inputs, targets)`` pairs, each time-major
            without a batch axis: ``inputs`` ``[T_i]`` ids or ``[T_i, D]``
            floats, ``targets`` ``[T_i]`` labels or ``[T_i, O]`` floats, the
            same trailing shape and dtype across episodes, ``T_i >= 1``.
        batch_size: ``B``, the number of rows.
        num_steps: ``T``; ``None``: the longest row. A row longer than
            ``num_steps`` is a ``ValueError``.

    Returns:
        ``Batch(inputs [T, B, ...], targets [T, B, ...], mask [T, B] float32,
        resets [T, B] bool)``.
    """
    batch_size = _check_int("batch_size", batch_size, 1)
    episodes = [(np.asarray(x), np.asarray(y)) for x, y in episodes]
    if not episodes:
        raise ValueError("pack needs at least one episode, got none")
    (x0, y0) = episodes[0]
    for i, (x, y) in enumerate(episodes):
        if x.ndim < 1 or len(x) < 1 or len(y) != len(x):
            raise ValueError(f"episode {i}: inputs and targets must have the same length >= 1 "
                             f"along their first (time) axis, got shapes {x.shape} and {y.shape}")
        if x.shape[1:] != x0.shape[1:] or y.shape[1:] != y0.shape[1:] or (
                x.dtype, y.dtype) != (x0.dtype, y0.dtype):
            raise ValueError(f"episode {i} has inputs {x.dtype} {x.shape} and targets {y.dtype} "
                             f"{y.shape}, but episode 0 has {x0.dtype} {x0.shape} and {y0.dtype} "
                             f"{y0.shape} (only the time axis may differ)")
    rows: list[list[int]] = [[] for _ in range(batch_size)]
    filled = [0] * batch_size
    for i, (x, _) in enumerate(episodes):
        r = int(np.argmin(filled))
        rows[r].append(i)
        filled[r] += len(x)
    T = max(filled) if num_steps is None else _check_int("num_steps", num_steps, 1)
    if max(filled) > T:
        raise ValueError(f"the episodes need {max(filled)} steps in a row of {batch_size}, "
                         f"over num_steps={T}")
    xs = np.zeros((T, batch_size) + x0.shape[1:], x0.dtype)
    ys = np.zeros((T, batch_size) + y0.shape[1:], y0.dtype)
    mask = np.zeros((T, batch_size), np.float32)
    resets = np.zeros((T, batch_size), bool)
    for b, row in enumerate(rows):
        t = 0
        for i in row:
            x, y = episodes[i]
            xs[t:t + len(x), b], ys[t:t + len(x), b] = x, y
            mask[t:t + len(x), b], resets[t, b] = 1.0, True
            t += len(x)
    return Batch(xs, ys, mask, resets)


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
