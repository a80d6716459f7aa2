"""The d2l "sequence models" time series and its autoregressive views (NumPy).

d2l 8.1 (0.17; 9.1 in 1.0): ``x_t = sin(0.01 t) + eps_t``, ``eps_t ~ N(0, 0.2^2)``,
``t = 1..1000``. An autoregressive model reads the previous ``tau`` values
(:func:`lagged`); a latent-autoregressive RNN reads the whole past, one value
per step (:func:`next_value_windows`). :func:`k_step_ahead` is the book's
k-step-ahead prediction: every prediction beyond the observed window is fed
back as input, so errors accumulate with ``k``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .batches import Batch
from .synthetic import _as_rng, _check_int

__all__ = ["d2l_series", "k_step_ahead", "lagged", "next_value_windows"]


def d2l_series(num_steps: int = 1000, noise: float = 0.2, rng=0):
    """d2l's noisy sine: ``time = 1..T`` and ``x = sin(0.01 time) + noise * N(0, 1)``.

    Args:
      num_steps: ``T``.
      noise: the noise's standard deviation (d2l: 0.2).
      rng: a ``np.random.Generator`` or an int seed.

    Returns:
      ``(time, x)``: float32 ``[T]`` each.
    """
    T = _check_int("num_steps", num_steps, 1)
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    time = np.arange(1, T + 1, dtype=np.float32)
    x = np.sin(0.01 * time) + noise * _as_rng(rng).standard_normal(T)
    return time, x.astype(np.float32)


def _check_series(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"x must be a float series [T], got {x.dtype} {x.shape}")
    return x


def lagged(x, tau: int):
    """The autoregressive examples: ``features[i] = x[i : i + tau]``, ``labels[i] = x[i + tau]``.

    Args:
      x: the series ``[T]``.
      tau: the number of previous values a prediction reads, ``1 <= tau < T``.

    Returns:
      ``(features [T - tau, tau], labels [T - tau])``.
    """
    x = _check_series(x)
    tau = _check_int("tau", tau, 1)
    if tau >= len(x):
        raise ValueError(f"tau must be < T = {len(x)}, got {tau}")
    idx = np.arange(len(x) - tau)[:, None] + np.arange(tau)
    return x[idx], x[tau:]


def next_value_windows(x, num_steps: int) -> Batch:
    """Every window of ``num_steps`` values and the next value at each step, time-major.

    Window ``i`` reads ``x[i : i + T]`` and its target at step ``t`` is
    ``x[i + t + 1]``: what a latent-autoregressive RNN (:func:`jrnn.regressor`)
    learns. Select columns for minibatches (``batch[:, idx]``).

    Args:
      x: the series ``[T_x]``.
      num_steps: ``T < T_x``.

    Returns:
      A :class:`Batch` with ``inputs`` and ``targets`` ``[T, N, 1]``,
      ``N = T_x - T``.
    """
    x = _check_series(x)
    T = _check_int("num_steps", num_steps, 1)
    if T >= len(x):
        raise ValueError(f"num_steps must be < len(x) = {len(x)}, got {T}")
    idx = np.arange(T)[:, None] + np.arange(len(x) - T)  # [T, N]
    return Batch(x[idx][..., None], x[idx + 1][..., None])


def k_step_ahead(predict: Callable[[np.ndarray], np.ndarray], x, tau: int, max_steps: int):
    """d2l's k-step-ahead predictions of an autoregressive model, for ``k = 1..max_steps``.

    Start ``j`` observes ``x[j : j + tau]``; each next value is predicted from
    the previous ``tau`` entries, predictions included (d2l 8.1's ``features``
    matrix).

    Args:
      predict: ``[N, tau] -> [N]``, the model.
      x: the series ``[T]``.
      tau: the model's lag.
      max_steps: the largest ``k``.

    Returns:
      ``[N, tau + max_steps]`` with ``N = T - tau - max_steps + 1``: the first
      ``tau`` columns are observations, column ``tau + k - 1`` is the k-step
      prediction of ``x[j + tau + k - 1]``.
    """
    x = _check_series(x)
    tau, K = _check_int("tau", tau, 1), _check_int("max_steps", max_steps, 1)
    N = len(x) - tau - K + 1
    if N < 1:
        raise ValueError(f"the series (T = {len(x)}) is too short for tau = {tau} and max_steps "
                         f"= {K}")
    out = np.zeros((N, tau + K), np.float32)
    for i in range(tau):
        out[:, i] = x[i:i + N]
    for i in range(tau, tau + K):
        out[:, i] = np.asarray(predict(out[:, i - tau:i])).reshape(N)
    return out
