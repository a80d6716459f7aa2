"""Tests for jrnn.data.timeseries against hand-written loops (no JAX needed)."""

import numpy as np
import pytest

from jrnn.data import timeseries as ts


def test_d2l_series_is_the_books_formula_and_deterministic():
    time, x = ts.d2l_series(1000, 0.2, rng=3)
    assert time[0] == 1 and time[-1] == 1000 and x.dtype == np.float32
    ref = np.sin(0.01 * np.arange(1, 1001)) + 0.2 * np.random.default_rng(3).standard_normal(1000)
    np.testing.assert_allclose(x, ref, rtol=1e-6, atol=1e-6)
    noise = x - np.sin(0.01 * time)
    assert abs(noise.std() - 0.2) < 0.02 and abs(noise.mean()) < 0.03
    np.testing.assert_array_equal(ts.d2l_series(1000, 0.2, rng=3)[1], x)


def test_lagged_and_windows_equal_loops():
    x = np.arange(10, dtype=np.float32) ** 2
    f, y = ts.lagged(x, 4)
    assert f.shape == (6, 4)
    for i in range(6):
        np.testing.assert_array_equal(f[i], [x[i], x[i + 1], x[i + 2], x[i + 3]])
        assert y[i] == x[i + 4]
    b = ts.next_value_windows(x, 3)
    assert b.inputs.shape == b.targets.shape == (3, 7, 1)
    for i in range(7):
        for t in range(3):
            assert b.inputs[t, i, 0] == x[i + t] and b.targets[t, i, 0] == x[i + t + 1]


def test_k_step_ahead_feeds_predictions_back():
    # a noiseless AR(2) process and its exact predictor: every k-step prediction is exact
    x = np.zeros(40, np.float32)
    x[:2] = 1.0, 0.5
    for t in range(2, 40):
        x[t] = 0.9 * x[t - 1] - 0.2 * x[t - 2]
    out = ts.k_step_ahead(lambda f: 0.9 * f[:, 1] - 0.2 * f[:, 0], x, 2, 8)
    assert out.shape == (40 - 2 - 8 + 1, 10)
    for k in range(1, 9):
        np.testing.assert_allclose(out[:, 2 + k - 1], x[2 + k - 1: 2 + k - 1 + out.shape[0]],
                                   rtol=1e-5, atol=1e-6)
    # a biased predictor (last value + 1): the k-step error is exactly k
    out = ts.k_step_ahead(lambda f: f[:, -1] + 1.0, x, 2, 8)
    for k in range(1, 9):
        np.testing.assert_allclose(out[:, 2 + k - 1] - x[1: 1 + out.shape[0]], k, rtol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="tau must be < T"):
        ts.lagged(np.zeros(4, np.float32), 4)
    with pytest.raises(ValueError, match="too short"):
        ts.k_step_ahead(lambda f: f[:, 0], np.zeros(10, np.float32), 4, 8)
    with pytest.raises(ValueError, match="float series"):
        ts.next_value_windows(np.zeros((4, 2)), 2)
