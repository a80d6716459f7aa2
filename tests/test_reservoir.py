"""Tests for jrnn.reservoir (echo-state networks) against independent references.

- the spectral radius: NumPy's eigenvalues and Gelfand's formula
  ``rho = lim ||W^k||^(1/k)`` (k = 2000, float64), which uses no eigenvalues;
- the ridge readout: ``numpy.linalg.lstsq`` on the same features, with the
  penalty as extra rows ``sqrt(alpha) I`` and a column of ones for the
  unpenalised intercept (weighted rows ``sqrt(w_n)``);
- an ESN that must recall its input 3 steps back (a task a reservoir with
  spectral radius < 1 solves): small error, and fixed-reservoir states equal
  ``jrnn.unroll``'s.
"""

import jax
import numpy as np
import pytest

import jrnn
from jrnn import reservoir as R
from jrnn.cells import leaky
from jrnn.models import Batch


def _gelfand(w, k=2000):
    w = np.asarray(w, np.float64)
    m, log_norm = np.eye(len(w)), 0.0
    for _ in range(k):  # renormalise each step: log ||W^k|| without overflow
        m = m @ w
        n = np.linalg.norm(m, 2)
        log_norm += np.log(n)
        m /= n
    return np.exp(log_norm / k)


@pytest.mark.parametrize("rho, density", [(0.9, 1.0), (1.5, 0.2)])
def test_reservoir_has_the_requested_spectral_radius(rho, density):
    p = R.reservoir(jax.random.key(0), 2, 40, spectral_radius=rho, density=density)
    w = np.asarray(p["W_hh"], np.float64)
    np.testing.assert_allclose(np.max(np.abs(np.linalg.eigvals(w))), rho, rtol=1e-5)
    np.testing.assert_allclose(_gelfand(w), rho, rtol=0.01)
    assert abs(np.mean(w != 0) - density) < 0.05
    assert p["W_xh"].shape == (2, 40) and p["b_h"].shape == (40,) and not np.any(p["b_h"])


@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_ridge_equals_lstsq_on_the_augmented_system(alpha):
    rng = np.random.default_rng(0)
    N, F, O = 50, 6, 2
    X, Y = rng.normal(size=(N, F)), rng.normal(size=(N, O))
    w = rng.uniform(0.2, 2.0, N)
    W, b = R.ridge(X, Y, alpha, w)
    s = np.sqrt(w)[:, None]
    A = np.block([[s * X, s], [np.sqrt(alpha) * np.eye(F), np.zeros((F, 1))]])
    ref = np.linalg.lstsq(A, np.vstack([s * Y, np.zeros((F, O))]), rcond=None)[0]
    np.testing.assert_allclose(W, ref[:F], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(b, ref[F], rtol=1e-9, atol=1e-10)


def test_fit_readout_equals_lstsq_on_the_reservoir_states_and_recalls_the_past():
    H, T, Bn, delay, washout = 30, 200, 3, 3, 20
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (T, Bn, 1)).astype(np.float32)
    y = np.concatenate([np.zeros((delay, Bn, 1), np.float32), x[:-delay]])
    cell = jrnn.elman(H)
    model = jrnn.regressor(cell, 1, 1)
    res = R.reservoir(jax.random.key(1), 1, H, spectral_radius=0.8)
    mask = np.ones((T, Bn), np.float32)
    mask[50:60, 0] = 0.0  # left out of the fit
    params = R.fit_readout(model, res, Batch(x, y, mask), alpha=1e-4, washout=washout)
    # the reference: the states by a NumPy loop, lstsq on the kept rows
    w_hh, w_xh, b_h = (np.asarray(res[k], np.float64) for k in ("W_hh", "W_xh", "b_h"))
    h, hs = np.zeros((Bn, H)), []
    for t in range(T):
        h = np.tanh(x[t] @ w_xh + h @ w_hh + b_h)
        hs.append(h)
    F = np.stack(hs)[washout:].reshape(-1, H)
    keep = mask[washout:].reshape(-1) > 0
    A = np.block([[F[keep], np.ones((keep.sum(), 1))], [1e-2 * np.eye(H), np.zeros((H, 1))]])
    ref = np.linalg.lstsq(A, np.vstack([y[washout:].reshape(-1, 1)[keep], np.zeros((H, 1))]),
                          rcond=None)[0]
    np.testing.assert_allclose(params["head"]["W_hq"], ref[:H], rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(params["head"]["b_q"], ref[H], rtol=2e-3, atol=2e-4)
    pred = model.head(params["head"], jrnn.unroll(cell, params["cell"], x)[0])
    nrmse = np.sqrt(np.mean((pred[washout:] - y[washout:]) ** 2)) / np.std(y[washout:])
    assert nrmse < 0.3, nrmse  # a fixed random net plus a linear readout remembers 3 steps
    assert params["cell"] is res


def test_fit_readout_classifier_on_token_ids_with_a_leaky_reservoir():
    # fixed-tau leaky cells take an Elman reservoir's params unchanged; labels become one-hot
    V, H, T, Bn = 5, 20, 40, 4
    rng = np.random.default_rng(2)
    ids = rng.integers(0, V, (T, Bn)).astype(np.int32)
    model = jrnn.classifier(leaky(H, tau=2.0, learn_tau=False), V, V, tokens=True)
    res = R.reservoir(jax.random.key(2), V, H, spectral_radius=0.5)
    params = R.fit_readout(model, res, Batch(ids, ids, None), alpha=1e-6)
    logits = model.head(params["head"], jrnn.unroll(model.cell, res, ids)[0])
    assert np.mean(np.argmax(logits, -1) == ids) > 0.95  # the current token is in the state


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="spectral_radius"):
        R.reservoir(jax.random.key(0), 1, 4, spectral_radius=-1.0)
    with pytest.raises(ValueError, match="density"):
        R.reservoir(jax.random.key(0), 1, 4, density=0.0)
    with pytest.raises(ValueError, match="features must be"):
        R.ridge(np.zeros((3, 2)), np.zeros((4, 1)), 1.0)
    with pytest.raises(ValueError, match="washout"):
        model = jrnn.regressor(jrnn.elman(4), 1, 1)
        R.fit_readout(model, R.reservoir(jax.random.key(0), 1, 4),
                      Batch(np.zeros((3, 1, 1), np.float32), np.zeros((3, 1, 1), np.float32), None),
                      washout=3)
