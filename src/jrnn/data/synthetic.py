"""Synthetic sequence tasks for benchmarking recurrent nets and gradient
estimators (NumPy).

All arrays are **time-major**: ``[T, B, ...]``. Every function takes ``rng``,
a ``np.random.Generator`` or an int seed; the same seed gives the same data.
"""

from __future__ import annotations

import numpy as np

__all__ = ["adding_task", "copy_task", "sine"]


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


def sine(num_examples: int, num_steps: int, rng, *, noise: float = 0.1):
    """Next-value regression on noisy sine waves.

    Each example is ``sin(w * t + phi) + noise * eps`` for ``t = 0..T``, with
    angular frequency ``w ~ U(0.1, 0.5)``, phase ``phi ~ U(0, 2 pi)`` and
    ``eps ~ N(0, 1)``; the input at step ``t`` is the value at ``t`` and the
    target the value at ``t + 1``.

    Args:
        num_examples: ``B``.
        num_steps: ``T``.
        rng: A ``np.random.Generator`` or an int seed.
        noise: Standard deviation of the additive Gaussian noise.

    Returns:
        ``(xs, ys)``: float32 arrays of shape ``[T, B, 1]``;
        ``ys[t] == xs[t + 1]`` for ``t < T - 1``.
    """
    b = _check_int("num_examples", num_examples, 1)
    t = _check_int("num_steps", num_steps, 1)
    rng = _as_rng(rng)
    w = rng.uniform(0.1, 0.5, size=(1, b))
    phi = rng.uniform(0.0, 2 * np.pi, size=(1, b))
    steps = np.arange(t + 1)[:, None]
    wave = np.sin(w * steps + phi) + noise * rng.standard_normal((t + 1, b))
    wave = wave.astype(np.float32)[..., None]
    return wave[:-1], wave[1:]


def copy_task(batch_size: int, num_symbols: int = 8, seq_len: int = 10, delay: int = 50, *, rng):
    """The copy (memory) task: recall a sequence after a delay.

    Vocabulary of ``num_symbols + 2`` ids: 0 is the blank, ``1..num_symbols``
    the symbols, ``num_symbols + 1`` the delimiter. With ``T = seq_len + delay
    + seq_len`` the input is ``seq_len`` random symbols, ``delay - 1`` blanks,
    the delimiter, then ``seq_len`` blanks. The target is blank except in the
    recall window (the last ``seq_len`` steps), where it is the symbols.

    Args:
        batch_size: ``B``.
        num_symbols: Number of distinct symbols.
        seq_len: Length ``S`` of the sequence to remember.
        delay: Steps between the end of the sequence and the recall window
            (the delimiter is the last of them), ``>= 1``.
        rng: A ``np.random.Generator`` or an int seed.

    Returns:
        ``(inputs, targets, mask)``: int32 ``[T, B]``, int32 ``[T, B]`` and
        float32 ``[T, B]`` that is 1 exactly on the recall window.
    """
    b = _check_int("batch_size", batch_size, 1)
    k = _check_int("num_symbols", num_symbols, 1)
    s = _check_int("seq_len", seq_len, 1)
    d = _check_int("delay", delay, 1)
    rng = _as_rng(rng)
    t = s + d + s
    symbols = rng.integers(1, k + 1, size=(s, b), dtype=np.int32)
    inputs = np.zeros((t, b), np.int32)
    inputs[:s] = symbols
    inputs[s + d - 1] = k + 1
    targets = np.zeros((t, b), np.int32)
    targets[s + d :] = symbols
    mask = np.zeros((t, b), np.float32)
    mask[s + d :] = 1.0
    return inputs, targets, mask


def adding_task(batch_size: int, num_steps: int, rng):
    """Hochreiter & Schmidhuber's adding problem.

    Channel 0 holds values ``U(0, 1)``; channel 1 marks exactly two steps, one
    in each half of the sequence. The target is the sum of the two marked
    values, read out at the last step.

    Args:
        batch_size: ``B``.
        num_steps: ``T >= 2``.
        rng: A ``np.random.Generator`` or an int seed.

    Returns:
        ``(xs, ys, targets, mask)``: xs float32 ``[T, B, 2]``; ys float32
        ``[B, 1]``; targets float32 ``[T, B, 1]`` (``ys`` broadcast over time);
        mask float32 ``[T, B]``, 1 at the last step only, so a masked per-step
        loss equals the last-step loss.
    """
    b = _check_int("batch_size", batch_size, 1)
    t = _check_int("num_steps", num_steps, 2)
    rng = _as_rng(rng)
    half = t // 2
    values = rng.uniform(0.0, 1.0, size=(t, b)).astype(np.float32)
    first = rng.integers(0, half, size=b)
    second = rng.integers(half, t, size=b)
    cols = np.arange(b)
    markers = np.zeros((t, b), np.float32)
    markers[first, cols] = 1.0
    markers[second, cols] = 1.0
    xs = np.stack([values, markers], axis=-1)
    ys = (values[first, cols] + values[second, cols])[:, None]
    targets = np.broadcast_to(ys, (t, b, 1)).copy()
    mask = np.zeros((t, b), np.float32)
    mask[-1] = 1.0
    return xs, ys, targets, mask
