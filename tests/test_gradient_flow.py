"""Tests for jrnn.gradient_flow against independent references.

- ``hidden_grads``: for each ``t``, ``jax.grad`` of the loss written as a
  function of the carry ``h_t`` alone (the prefix run separately to reach
  ``h_t``, then the loss at ``t`` read from ``h_t`` plus the suffix unrolled
  from ``h_t``), with hand-normalised mask weights;
- ``step_jacobians``: the Elman Jacobian in closed form,
  ``diag(1 - h_t^2) W_hh^T``, and a central finite difference for the LSTM;
  singular values against ``numpy.linalg.svd``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import gradient_flow as gf
from jrnn.cells import LSTMState
from jrnn.models import Batch

T, B, D, O, H = 6, 2, 3, 2, 4


def _problem(cell, seed=0):
    rng = np.random.default_rng(seed)
    model = jrnn.regressor(cell, D, O)
    params = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape) * 0.7, a.dtype),
                          model.init(jax.random.key(seed)))
    x = rng.normal(size=(T, B, D)).astype(np.float32)
    y = rng.normal(size=(T, B, O)).astype(np.float32)
    m = (rng.random((T, B)) < 0.6).astype(np.float32)
    m[-1] = 1.0
    return model, params, Batch(x, y, m)


def _output_of(cell, c):
    """The output the built cells read from their carry."""
    if cell.layers is not None:
        return _output_of(cell.layers[-1], c[-1])
    return c.h if isinstance(c, LSTMState) else c


def _reference(model, params, batch, ts):
    """``dL/dh_t`` for each ``t`` in ``ts`` by ``jax.grad`` of ``L(h_t)``: the prefix is a constant,
    the loss at ``t`` is read from ``h_t`` and the rest unrolled from it (one compile for all ``ts``)."""
    cell = model.cell
    w = batch.mask / batch.mask.sum()

    @jax.jit
    def run(params, xs, ys):
        pc, ph = params["cell"], params["head"]
        out = []
        for t in ts:
            _, c_t = jrnn.unroll(cell, pc, xs[:t + 1])

            def later_loss(c, t=t):
                y_t = model.head(ph, _output_of(cell, c))
                total = jnp.sum(model.loss(y_t, ys[t]) * w[t])
                if t + 1 < T:
                    hs, _ = jrnn.unroll(cell, pc, xs[t + 1:], c)
                    total += jnp.sum(model.loss(model.head(ph, hs), ys[t + 1:]) * w[t + 1:])
                return total

            out.append(jax.grad(later_loss)(c_t))
        full = jrnn.sequence_loss(model, params, cell.initial_carry((B,)), Batch(xs, ys, batch.mask))
        return out, full[0]

    return run(params, batch.inputs, batch.targets)


CELLS = {
    "rnn": lambda: jrnn.elman(H),
    "lstm": lambda: jrnn.lstm(H),
    "stack": lambda: jrnn.stack([jrnn.lstm(H), jrnn.elman(3)]),
}


@pytest.mark.parametrize("name", CELLS)
def test_hidden_grads_equal_grad_of_the_loss_as_a_function_of_h_t(name):
    model, params, batch = _problem(CELLS[name]())
    out = gf.hidden_grads(model, params, batch)
    ts = (0, 2, T - 1)
    refs, loss = _reference(model, params, batch, ts)
    np.testing.assert_allclose(out.loss, loss, rtol=1e-6)
    for t, ref in zip(ts, refs):
        got = jax.tree.map(lambda g: g[t], out.carry)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7), got, ref)
        norm = np.sqrt(sum(np.sum(np.reshape(r, (B, -1)) ** 2, -1) for r in jax.tree.leaves(ref)))
        np.testing.assert_allclose(out.norms[t], norm, rtol=2e-5, atol=1e-7)
    assert out.norms.shape == (T, B)


def test_hidden_grads_vanish_for_a_contracting_elman_net():
    # W_hh = 0.1 I: each step back multiplies dL/dh by at most 0.1 (tanh' <= 1)
    cell = jrnn.elman(H)
    model = jrnn.regressor(cell, D, O)
    params = model.init(jax.random.key(1))
    params["cell"]["W_hh"] = 0.1 * jnp.eye(H)
    x = np.random.default_rng(1).normal(size=(T, B, D)).astype(np.float32)
    mask = np.zeros((T, B), np.float32)
    mask[-1] = 1.0
    out = gf.hidden_grads(model, params, Batch(x, np.ones((T, B, O), np.float32), mask))
    n = np.asarray(out.norms)
    assert np.all(n[:-1] <= 0.1 * n[1:] + 1e-12) and np.all(n[-1] > 0)


def test_hidden_grads_refuse_a_cell_whose_output_is_not_its_carry():
    base = jrnn.elman(H)
    cell = base._replace(step=lambda p, c, x: (base.step(p, c, x)[0], base.step(p, c, x)[0][..., :2]),
                         hidden_size=2, fast=None)
    model = jrnn.regressor(cell, D, O)
    _, params, batch = _problem(base)
    params = model.init(jax.random.key(0))
    with pytest.raises(TypeError, match="output to be its carry"):
        gf.hidden_grads(model, params, batch)


def test_elman_step_jacobians_are_diag_tanh_prime_times_w_hh_transposed():
    cell = jrnn.elman(H)
    rng = np.random.default_rng(2)
    p = cell.init(jax.random.key(2), D)
    xs = rng.normal(size=(T, D)).astype(np.float32)
    J = np.asarray(gf.step_jacobians(cell, p, xs))
    hs = np.asarray(jrnn.unroll(cell, p, xs)[0])  # [T, H]
    W = np.asarray(p["W_hh"])
    ref = np.stack([np.diag(1 - hs[t] ** 2) @ W.T for t in range(T)])
    np.testing.assert_allclose(J, ref, rtol=1e-5, atol=1e-6)
    s = np.asarray(gf.step_singular_values(cell, p, xs))
    np.testing.assert_allclose(s, np.linalg.svd(ref, compute_uv=False), rtol=1e-4, atol=1e-6)
    assert np.all(np.diff(s, axis=1) <= 0)  # largest first


def test_lstm_step_jacobians_match_finite_differences():
    cell = jrnn.lstm(3, dtype=jnp.float64)
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), cell.init(jax.random.key(3), D))
        xs = rng.normal(size=(3, D))
        J = np.asarray(gf.step_jacobians(cell, p, xs, LSTMState(jnp.zeros(3), jnp.zeros(3))))
        carries = [np.zeros(6)]
        for t in range(3):  # the trajectory by hand
            c = LSTMState(jnp.asarray(carries[-1][:3]), jnp.asarray(carries[-1][3:]))
            n = cell.apply(p, c, xs[t])[0]
            carries.append(np.concatenate([n.h, n.c]))
        for t in range(3):
            f = lambda v: np.concatenate(cell.apply(p, LSTMState(jnp.asarray(v[:3]), jnp.asarray(v[3:])),
                                                    xs[t])[0])
            e, c0 = 1e-6, carries[t]
            fd = np.stack([(f(c0 + e * np.eye(6)[j]) - f(c0 - e * np.eye(6)[j])) / (2 * e)
                           for j in range(6)], axis=1)
            np.testing.assert_allclose(J[t], fd, rtol=1e-6, atol=1e-8)


def test_step_jacobians_refuse_a_batch():
    cell = jrnn.elman(H)
    with pytest.raises(ValueError, match="one sequence"):
        gf.step_jacobians(cell, cell.init(jax.random.key(0), D), np.zeros((T, B, D), np.float32))
