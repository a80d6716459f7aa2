"""Tests for the element-wise cells of jrnn.lru against independent references.

- the LRU's values: a NumPy loop in complex arithmetic (Orvieto et al.'s equations);
- its init: eigenvalues on the ring, phases in range, gamma = sqrt(1 - |lambda|^2),
  |lambda|^2 uniform on [r_min^2, r_max^2];
- parallel_unroll (associative scan) against jrnn.unroll, values and jax.grad;
- token ids against the one-hot product; IndRNN against a NumPy loop;
- the cells train through jrnn.fit with full BPTT; declarations and bad arguments.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import lru as L
from jrnn.models import Batch

T, B, D, H, N = 6, 3, 4, 5, 7


def _numpy_lru(p, xs, act=lambda y: y, h0=None):
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    gamma = np.exp(p["gamma_log"])
    Bc, Cc = p["B_re"] + 1j * p["B_im"], p["C_re"] + 1j * p["C_im"]
    h = np.zeros((xs.shape[1], lam.size), complex) if h0 is None else h0
    ys = []
    for x in np.asarray(xs, np.float64):
        h = lam * h + gamma * (x @ Bc)
        ys.append(act(np.real(h @ Cc) + x @ p["D"]))
    return np.stack(ys), h


@pytest.mark.parametrize("activation", [None, "tanh"])
def test_lru_equals_a_numpy_loop(activation):
    cell = L.lru(H, state_size=N, r_min=0.4, activation=activation)
    p = cell.init(jax.random.key(0), D)
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(T, B, D)).astype(np.float32)
    h0 = rng.normal(size=(B, N)) + 1j * rng.normal(size=(B, N))
    carry = L.LRUState(jnp.asarray(h0.real, jnp.float32), jnp.asarray(h0.imag, jnp.float32))
    ys, last = jrnn.unroll(cell, p, xs, carry)
    ref, h = _numpy_lru(p, xs, np.tanh if activation else (lambda y: y), h0)
    assert ys.shape == (T, B, H)
    np.testing.assert_allclose(ys, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(last.re, h.real, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(last.im, h.imag, rtol=1e-5, atol=1e-5)


def test_init_puts_the_eigenvalues_on_the_ring():
    r_min, r_max, max_phase = 0.9, 0.999, np.pi / 10
    cell = L.lru(4, state_size=4000, r_min=r_min, r_max=r_max, max_phase=max_phase)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), cell.init(jax.random.key(3), 2))
    mod = np.exp(-np.exp(p["nu_log"]))
    phase = np.exp(p["theta_log"])
    assert r_min <= mod.min() and mod.max() <= r_max
    assert 0 < phase.min() and phase.max() <= max_phase
    np.testing.assert_allclose(np.exp(p["gamma_log"]), np.sqrt(1 - mod ** 2), rtol=1e-5)
    # uniform in area: |lambda|^2 ~ U(r_min^2, r_max^2), phases ~ U(0, max_phase)
    u = (mod ** 2 - r_min ** 2) / (r_max ** 2 - r_min ** 2)
    assert abs(u.mean() - 0.5) < 0.02 and abs(np.mean(u < 0.25) - 0.25) < 0.03
    assert abs(phase.mean() / max_phase - 0.5) < 0.02
    # B ~ N(0, 1/(2D)) per part, C ~ N(0, 1/N)
    assert abs(p["B_re"].std() - np.sqrt(1 / 4)) < 0.02
    assert abs(p["C_im"].std() - np.sqrt(1 / 4000)) < 1e-3


def test_parallel_unroll_equals_the_scan_with_gradients():
    cell = L.lru(H, state_size=N, r_min=0.5, activation="gelu")
    p = cell.init(jax.random.key(1), D)
    rng = np.random.default_rng(1)
    xs = jnp.asarray(rng.normal(size=(T, B, D)), jnp.float32)
    carry = L.LRUState(*(jnp.asarray(rng.normal(size=(B, N)), jnp.float32) for _ in range(2)))
    ys, last = L.parallel_unroll(cell, p, xs, carry)
    ref, ref_last = jrnn.unroll(cell, p, xs, carry)
    np.testing.assert_allclose(ys, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(last.im, ref_last.im, rtol=1e-5, atol=1e-5)
    w = jnp.asarray(rng.normal(size=(T, B, H)), jnp.float32)
    g1 = jax.jit(jax.grad(lambda p: jnp.sum(w * L.parallel_unroll(cell, p, xs, carry)[0])))(p)
    g2 = jax.jit(jax.grad(lambda p: jnp.sum(w * jrnn.unroll(cell, p, xs, carry)[0])))(p)
    for k in g2:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_token_ids_equal_the_one_hot_product():
    cell = L.lru(H, state_size=N)
    p = cell.init(jax.random.key(2), 9)
    ids = np.random.default_rng(2).integers(0, 9, size=(T, B))
    ys, _ = jrnn.unroll(cell, p, ids)
    ref, _ = jrnn.unroll(cell, p, jax.nn.one_hot(ids, 9))
    np.testing.assert_allclose(ys, ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="token id"):
        jrnn.unroll(cell, p, np.full((T, B), 9))


def test_indrnn_equals_a_numpy_loop():
    cell = L.indrnn(H)
    p = cell.init(jax.random.key(4), D)
    xs = np.random.default_rng(4).normal(size=(T, B, D)).astype(np.float32)
    hs, last = jrnn.unroll(cell, p, xs)
    q = {k: np.asarray(v, np.float64) for k, v in p.items()}
    h, ref = np.zeros((B, H)), []
    for x in xs:
        h = np.tanh(q["w"] * h + x @ q["W_x"] + q["b"])
        ref.append(h)
    np.testing.assert_allclose(hs, np.stack(ref), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(last, ref[-1], rtol=1e-5, atol=1e-6)


def test_lru_trains_through_fit_with_full_bptt():
    # regress the input delayed by 3 steps: needs the recurrence
    cell = L.lru(8, state_size=16, r_min=0.5)
    model = jrnn.regressor(cell, 1, 1)
    def batches(epoch):
        for i in range(40):
            x = np.random.default_rng([epoch, i]).normal(size=(12, 8, 1)).astype(np.float32)
            y = np.concatenate([np.zeros((3, 8, 1), np.float32), x[:-3]])
            yield Batch(x, y)

    res = jrnn.fit(model, jrnn.make_optimizer("adam", 0.02), batches, estimator=jrnn.grads.full(),
                   batch_size=8, carry_over=False,
                   config=jrnn.LoopConfig(epochs=1, log_every=10, progress=False, quiet=True))
    losses = [r["train_loss"] for r in res.history if "train_loss" in r]
    assert losses[-1] < 0.5 * losses[0], losses


def test_declarations_follow_the_step():
    cell = L.lru(H, state_size=N)
    spec = L.elementwise_spec(cell)
    assert spec == L.ElementwiseSpec(2, N, ("nu_log", "theta_log", "gamma_log", "B_re", "B_im"))
    assert L.elementwise_spec(cell._replace(step=lambda p, c, x: cell.step(p, c, x))) is None
    assert L.elementwise_spec(jrnn.gru(4)) is None
    assert L.elementwise_spec(L.indrnn(3)).units == 3


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="r_min"):
        L.lru(4, r_min=0.5, r_max=0.4)
    with pytest.raises(ValueError, match="max_phase"):
        L.lru(4, max_phase=7.0)
    with pytest.raises(ValueError, match="activation"):
        L.lru(4, activation="swish")
    with pytest.raises(ValueError, match="parallel_unroll"):
        L.parallel_unroll(jrnn.gru(4), {}, np.zeros((2, 1, 3), np.float32))
    cell = L.lru(H, state_size=N)
    p = cell.init(jax.random.key(0), D)
    with pytest.raises(ValueError):
        jrnn.unroll(cell, p, np.zeros((T, B, D + 1), np.float32))
