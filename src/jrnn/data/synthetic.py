"""Synthetic sequence tasks for benchmarking recurrent nets and gradient
estimators (NumPy).

All arrays are **time-major**: ``[T, B, ...]``. Every function takes ``rng``,
a ``np.random.Generator`` or an int seed; the same seed gives the same data.
"""

from __future__ import annotations

import numpy as np

__all__ = ["add_task", "adding_task", "conditional_sines", "copy_task", "neighbour_sum_tags",
           "parity", "reversal", "rotation", "sine", "sorting"]


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


# ----------------------------------------------------------------------------
# tasks of the sequence-modelling patterns (Goodfellow 10.2-10.4): sequence to
# one, aligned and unaligned sequence to sequence


def _lengths(rng, b, min_len, max_len):
    lo = _check_int("min_len", min_len, 1)
    hi = _check_int("max_len", max_len, 1)
    if hi < lo:
        raise ValueError(f"max_len must be >= min_len, got min_len={lo}, max_len={hi}")
    return rng.integers(lo, hi + 1, size=b).astype(np.int32), hi


def _padded_symbols(rng, lengths, max_len, num_symbols):
    t = np.arange(max_len)[:, None]
    seqs = rng.integers(1, num_symbols + 1, size=(max_len, len(lengths)), dtype=np.int32)
    return np.where(t < lengths, seqs, 0).astype(np.int32)


def reversal(batch_size: int, min_len: int, max_len: int, num_symbols: int = 8, *, rng):
    """Unaligned transduction: output the input sequence reversed.

    Args:
        batch_size: ``B``.
        min_len, max_len: each example's length is uniform in ``[min_len, max_len]``.
        num_symbols: ``K``; symbols are ``1..K``, 0 is padding.
        rng: A ``np.random.Generator`` or an int seed.

    Returns:
        ``(sources, lengths, targets, lengths)``: int32 ``[max_len, B]``
        (time-major, zero after each length) and int32 ``[B]``; the target of
        each example is its source reversed within its length.
    """
    b = _check_int("batch_size", batch_size, 1)
    k = _check_int("num_symbols", num_symbols, 1)
    rng = _as_rng(rng)
    n, hi = _lengths(rng, b, min_len, max_len)
    src = _padded_symbols(rng, n, hi, k)
    tgt = np.zeros_like(src)
    for j in range(b):
        tgt[: n[j], j] = src[: n[j], j][::-1]
    return src, n, tgt, n.copy()


def sorting(batch_size: int, min_len: int, max_len: int, num_symbols: int = 8, *, rng):
    """Unaligned transduction: output the input's symbols in ascending order.

    Same layout as :func:`reversal`: ``(sources, lengths, targets, lengths)``.
    """
    b = _check_int("batch_size", batch_size, 1)
    k = _check_int("num_symbols", num_symbols, 1)
    rng = _as_rng(rng)
    n, hi = _lengths(rng, b, min_len, max_len)
    src = _padded_symbols(rng, n, hi, k)
    tgt = np.zeros_like(src)
    for j in range(b):
        tgt[: n[j], j] = np.sort(src[: n[j], j])
    return src, n, tgt, n.copy()


def parity(batch_size: int, num_steps: int, *, rng):
    """Sequence to one: the parity (XOR) of a bit string, read out at the last step.

    Every bit matters: no prefix or suffix predicts the label better than chance.

    Args:
        batch_size: ``B``.
        num_steps: ``T``, the number of bits.
        rng: A ``np.random.Generator`` or an int seed.

    Returns:
        ``(bits, targets, mask)``: int32 ``[T, B]`` in ``{0, 1}`` (token
        ids), int32 ``[T, B]`` (the label ``sum(bits) mod 2`` at every step),
        float32 ``[T, B]`` that is 1 at the last step only.
    """
    b = _check_int("batch_size", batch_size, 1)
    t = _check_int("num_steps", num_steps, 1)
    rng = _as_rng(rng)
    bits = rng.integers(0, 2, size=(t, b), dtype=np.int32)
    targets = np.broadcast_to(bits.sum(0) % 2, (t, b)).astype(np.int32)
    mask = np.zeros((t, b), np.float32)
    mask[-1] = 1.0
    return bits, targets.copy(), mask


def conditional_sines(batch_size: int, num_steps: int, num_classes: int = 4, *, rng,
                      condition: str = "every"):
    """Vector to sequence: generate the wave of a class, given only the class.

    Class ``c`` has the wave ``y_t = sin(w_c (t + 1))``, ``w_c = 0.2 + 0.15 c``
    (no noise, no phase: the sequence is a function of the class alone). The
    input is the class's one-hot vector, at every step (``condition="every"``)
    or at the first step only and zeros afterwards (``"initial"``: the vector
    then sets the state the net runs from).

    Args:
        batch_size: ``B``.
        num_steps: ``T``.
        num_classes: ``C``.
        rng: A ``np.random.Generator`` or an int seed.
        condition: ``"every"`` or ``"initial"``.

    Returns:
        ``(xs, ys, classes)``: float32 ``[T, B, C]``, float32 ``[T, B, 1]``, int32 ``[B]``.
    """
    b = _check_int("batch_size", batch_size, 1)
    t = _check_int("num_steps", num_steps, 1)
    c = _check_int("num_classes", num_classes, 1)
    if condition not in ("every", "initial"):
        raise ValueError(f"condition must be 'every' or 'initial', got {condition!r}")
    rng = _as_rng(rng)
    classes = rng.integers(0, c, size=b).astype(np.int32)
    onehot = np.eye(c, dtype=np.float32)[classes]
    xs = np.broadcast_to(onehot, (t, b, c)).copy()
    if condition == "initial":
        xs[1:] = 0.0
    w = 0.2 + 0.15 * classes
    ys = np.sin(w[None, :] * np.arange(1, t + 1)[:, None]).astype(np.float32)[..., None]
    return xs, ys, classes


def rotation(batch_size: int, num_steps: int, *, rng, base: float = 0.3, gain: float = 0.5):
    """Output-to-hidden task: a point on the unit circle turned by an input-driven angle.

    ``y_t = R(base + gain * x_t) y_{t-1}`` with ``x_t ~ U(-1, 1)`` and ``y_{-1}``
    uniform on the unit circle, ``R`` the 2-D rotation. The next output is a
    function of the input and the previous output alone (what an output-to-hidden
    net can represent); the map is marginally stable, so open-loop errors are not
    damped and accumulate.

    Args:
        batch_size: ``B``.
        num_steps: ``T``.
        rng: A ``np.random.Generator`` or an int seed.
        base, gain: the angle per step is ``base + gain * x_t`` radians.

    Returns:
        ``(xs, ys, start)``: float32 ``[T, B, 1]``, float32 ``[T, B, 2]`` and the
        start ``y_{-1}`` float32 ``[B, 2]``.
    """
    b = _check_int("batch_size", batch_size, 1)
    t = _check_int("num_steps", num_steps, 1)
    rng = _as_rng(rng)
    xs = rng.uniform(-1.0, 1.0, size=(t, b))
    phi0 = rng.uniform(0.0, 2 * np.pi, size=b)
    phi = phi0 + np.cumsum(base + gain * xs, axis=0)
    ys = np.stack([np.cos(phi), np.sin(phi)], axis=-1)
    start = np.stack([np.cos(phi0), np.sin(phi0)], axis=-1)
    return xs.astype(np.float32)[..., None], ys.astype(np.float32), start.astype(np.float32)


def neighbour_sum_tags(batch_size: int, min_len: int, max_len: int, num_symbols: int = 4, *, rng):
    """Aligned tagging that needs both past and future: ``tag_t = (x_{t-1} + x_{t+1}) mod K``.

    Symbols are ``1..K``, 0 is padding; before the start the neighbour counts
    as 0. The last step is not scored (mask 0): its right neighbour is the end,
    which a causal model could guess from the length distribution. On every
    scored step ``x_{t+1}`` is a uniform symbol independent of ``x_0..x_t``, so a
    causal (unidirectional) model can do no better than chance ``1/K``; a
    bidirectional one can be exact.

    Args:
        batch_size: ``B``.
        min_len, max_len: lengths uniform in ``[min_len, max_len]``.
        num_symbols: ``K >= 2``, also the number of tags.
        rng: A ``np.random.Generator`` or an int seed.

    Returns:
        ``(ids, tags, mask, lengths)``: int32 ``[max_len, B]`` (0 after each
        length), int32 ``[max_len, B]`` in ``[0, K)`` (0 on padding), float32
        ``[max_len, B]`` 1 on the scored steps ``t < length - 1``, the lengths int32 ``[B]``.
    """
    b = _check_int("batch_size", batch_size, 1)
    k = _check_int("num_symbols", num_symbols, 2)
    rng = _as_rng(rng)
    n, hi = _lengths(rng, b, min_len, max_len)
    ids = _padded_symbols(rng, n, hi, k)
    padded = np.concatenate([np.zeros((1, b), np.int32), ids, np.zeros((1, b), np.int32)])
    real = np.arange(hi)[:, None] < n
    tags = ((padded[:-2] + padded[2:]) % k * real).astype(np.int32)
    mask = (np.arange(hi)[:, None] < n - 1).astype(np.float32)
    return ids, tags, mask, n


def add_task(num_steps: int, t1: int = 5, t2: int = 9, *, rng, batch_size: int = 1):
    """Pitis 2016's "Add task" (as in Marschall et al. 2020): a Bernoulli stream whose
    next-step label mixes the inputs ``t1`` and ``t2`` steps back.

    ``x_t ~ Bernoulli(0.5)`` and ``y_t = 0.5 + 0.5 x_{t-t1} - 0.25 x_{t-t2}``
    (``x_s = 0`` for ``s < 0``), given as two-class soft labels ``(y, 1 - y)``
    for a softmax cross-entropy, and the input as ``(x, 1 - x)`` -- the
    layout of Marschall et al.'s code (``gen_data/Add_Task.py``, with
    ``deterministic=True``). A model that ignores the inputs reaches at best
    the entropy of the mean label, ``H(0.625) = 0.662`` nats; one that uses
    ``x_{t-t1}`` only ``0.519``; the optimum (both) is ``0.454``.

    Args:
        num_steps: ``T``.
        t1, t2: the two lags, ``1 <= t1 < t2``.
        rng: A ``np.random.Generator`` or an int seed.
        batch_size: ``B`` independent streams.

    Returns:
        ``(xs, targets)``: float32 ``[T, B, 2]`` each; ``targets[..., 0]`` is ``y``.
    """
    t = _check_int("num_steps", num_steps, 1)
    b = _check_int("batch_size", batch_size, 1)
    t1 = _check_int("t1", t1, 1)
    t2 = _check_int("t2", t2, 1)
    if t2 <= t1:
        raise ValueError(f"t2 must be > t1, got t1={t1}, t2={t2}")
    rng = _as_rng(rng)
    x = rng.integers(0, 2, size=(t, b)).astype(np.float32)
    lag = lambda k: np.concatenate([np.zeros((min(k, t), b), np.float32), x[: max(t - k, 0)]])
    y = 0.5 + 0.5 * lag(t1) - 0.25 * lag(t2)
    return np.stack([x, 1 - x], -1), np.stack([y, 1 - y], -1).astype(np.float32)
