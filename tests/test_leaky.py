"""Tests for the leaky-unit cell (jrnn.cells.leaky) against independent references.

- values: a NumPy loop of Goodfellow et al.'s eq. (10.9.2) form,
  ``h <- (1 - 1/tau) h + (1/tau) tanh(x W_xh + h W_hh + b)``;
- the fast recurrence (fixed tau) against ``jax.grad`` through the plain scan;
- RTRL against ``jax.grad`` through a Python loop over ``cell.apply``, with
  learnable time constants;
- the time constant itself: with no input drive a unit decays as ``(1-1/tau)^t``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import grads as G
from jrnn.cells import leaky
from jrnn.models import Batch

T, B, D, H = 5, 2, 3, 4
TAUS = np.array([1.5, 3.0, 10.0, 40.0])


def _numpy_leaky(p, xs, taus):
    a = 1.0 / taus
    h, hs = np.zeros((xs.shape[1], H)), []
    for x in np.asarray(xs, np.float64):
        v = np.tanh(x @ p["W_xh"] + h @ p["W_hh"] + p["b_h"])
        h = (1 - a) * h + a * v
        hs.append(h)
    return np.stack(hs)


@pytest.mark.parametrize("learn_tau", [True, False])
def test_values_equal_a_numpy_loop(learn_tau):
    cell = leaky(H, tau=TAUS, learn_tau=learn_tau)
    p = cell.init(jax.random.key(0), D)
    assert ("log_tau_m1" in p) == learn_tau and (cell.fast is None) == learn_tau
    if learn_tau:
        np.testing.assert_allclose(1 + np.exp(p["log_tau_m1"]), TAUS, rtol=1e-5)
    xs = np.random.default_rng(0).normal(size=(T, B, D)).astype(np.float32)
    hs, last = jrnn.unroll(cell, p, xs)
    ref = _numpy_leaky({k: np.asarray(v, np.float64) for k, v in p.items()}, xs, TAUS)
    np.testing.assert_allclose(hs, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(last, ref[-1], rtol=1e-5, atol=1e-6)


def test_a_unit_without_drive_decays_with_its_time_constant():
    cell = leaky(H, tau=TAUS, learn_tau=False)
    p = {"W_xh": jnp.zeros((D, H)), "W_hh": jnp.zeros((H, H)), "b_h": jnp.zeros((H,))}
    h0 = jnp.ones((1, H))
    hs, _ = jrnn.unroll(cell, p, np.zeros((T, 1, D), np.float32), h0)
    t = np.arange(1, T + 1)[:, None]
    np.testing.assert_allclose(hs[:, 0], (1 - 1 / TAUS) ** t, rtol=1e-5)


def test_fixed_tau_fast_path_equals_the_plain_scan_with_gradients():
    cell = leaky(H, tau=TAUS, learn_tau=False)
    p = cell.init(jax.random.key(1), D)
    xs = np.random.default_rng(1).normal(size=(T, B, D)).astype(np.float32)

    @jax.jit
    def both(p):
        loss = lambda p, fast: jnp.sum(jnp.sin(jrnn.unroll(cell, p, xs, fast_path=fast)[0]))
        return [jax.value_and_grad(loss)(p, f) for f in (True, False)]

    (lf, gf), (ls, gs) = both(p)
    np.testing.assert_allclose(lf, ls, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), gf, gs)


def test_rtrl_equals_full_bptt_with_learned_time_constants():
    model = jrnn.regressor(leaky(H, tau=TAUS), D, 2)
    params = model.init(jax.random.key(2))
    rng = np.random.default_rng(2)
    batch = Batch(rng.normal(size=(T, B, D)).astype(np.float32),
                  rng.normal(size=(T, B, 2)).astype(np.float32), None)

    @jax.jit
    def run(params):
        c0 = G.rtrl().init_carry(model, params, (B,))
        l, g = G.rtrl().value_and_grad(model, params, c0, batch, jax.random.key(0))[:2]

        def ref(p):  # jax.grad of the mean loss through a Python loop over cell.apply
            c, out = model.cell.initial_carry((B,)), 0.0
            for t in range(T):
                c, h = model.cell.apply(p["cell"], c, batch.inputs[t])
                out += jnp.sum(model.loss(model.head(p["head"], h), batch.targets[t]))
            return out / (T * B)

        return (l, g), jax.value_and_grad(ref)(params)

    (l, g), (lr, gr) = run(params)
    np.testing.assert_allclose(l, lr, rtol=1e-5)
    assert float(jnp.abs(gr["cell"]["log_tau_m1"]).max()) > 0  # the time constants learn
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g, gr)


@pytest.mark.parametrize("tau", [1.0, 0.5, [2.0, 3.0], float("nan")])
def test_bad_time_constants_are_refused(tau):
    with pytest.raises(ValueError, match="tau must be"):
        leaky(H, tau=tau)
