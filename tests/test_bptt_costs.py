"""BPTT at its cost frontier. TBPTT(k1, k2): against a hand-written chunked
reference, full BPTT at k2 >= T, its memory (XLA's buffer plan) against full
BPTT's, its errors. Checkpointed BPTT by memory budget: the segment length it
picks plans within the budget and its gradient is full BPTT's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import compare

V, H, B, T = 7, 5, 3, 12


def _setup(cell, mask=False, seed=0):
    model = jrnn.language_model(cell, V)
    params = model.init(jax.random.key(seed))
    rng = np.random.default_rng(seed)
    x = rng.integers(0, V, (T, B)).astype(np.int32)
    y = rng.integers(0, V, (T, B)).astype(np.int32)
    m = rng.uniform(0.2, 1.0, (T, B)).astype(np.float32) if mask else None
    carry = jax.tree.map(lambda a: a + 0.1, model.cell.initial_carry((B,)))
    return model, params, jrnn.Batch(x, y, m), carry


def _reference(model, params, batch, carry, k2):
    """Step by step with cell.apply: the first T - k2 steps without gradient, then the
    gradient of the weighted mean loss over the last k2 steps, from the carry left."""
    n0 = T - min(k2, T)
    w = np.ones((T, B), np.float32) if batch.mask is None else np.asarray(batch.mask)
    @jax.jit
    def forward(p, c):
        for t in range(n0):
            c, _ = model.cell.apply(p["cell"], c, batch.inputs[t])
        return c

    c = forward(params, carry)

    def tail(p):
        cc, total = c, 0.0
        for t in range(n0, T):
            cc, h = model.cell.apply(p["cell"], cc, batch.inputs[t])
            logits = model.head(p["head"], h)
            nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch.targets[t][:, None], 1)[:, 0]
            total = total + jnp.sum(nll * w[t])
        return total / w[n0:].sum()

    return jax.jit(jax.grad(tail))(params)  # traced once: the same arithmetic, compiled


def _close(a, b, tol=2e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


@pytest.mark.parametrize("cell, k2, mask", [
    (jrnn.gru(H), 1, False), (jrnn.gru(H), 5, True), (jrnn.lstm(H), 4, False),
    (jrnn.stack([jrnn.elman(H), jrnn.gru(H)]), 3, True),
])
def test_tbptt_equals_the_chunked_reference(cell, k2, mask):
    model, params, batch, carry = _setup(cell, mask)
    est = jrnn.grads.tbptt(k2, k1=T)
    loss, grads, new_carry, _ = jax.jit(lambda p, c: est.value_and_grad(model, p, c, batch, None))(
        params, carry)
    _close(grads, _reference(model, params, batch, carry, k2))
    # the reported loss is the mean over all T positions, and the carry is the one after T steps
    full_loss, full_carry = jrnn.sequence_loss(model, params, carry, batch)
    np.testing.assert_allclose(loss, full_loss, rtol=1e-5)
    _close(new_carry, full_carry)


def test_tbptt_with_k2_at_least_T_is_full_bptt():
    model, params, batch, carry = _setup(jrnn.gru(H), mask=True)
    g = jrnn.grads.tbptt(T).value_and_grad(model, params, carry, batch, None)[1]
    g_full = jrnn.grads.full().value_and_grad(model, params, carry, batch, None)[1]
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_full)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def test_tbptt_stores_residuals_for_k2_steps_only():
    """XLA's buffer plan of the gradient: tbptt:8 over T=512 needs a fraction of full BPTT's."""
    model = jrnn.language_model(jrnn.gru(64), V)
    params = model.init(jax.random.key(0))
    xs = jnp.zeros((512, 16), jnp.int32)
    batch, carry = jrnn.Batch(xs, xs), model.cell.initial_carry((16,))

    def memory(est):
        return compare.compiled_memory(
            lambda p: est.value_and_grad(model, p, carry, batch, None)[1], params)["temp"]

    full, short = memory(jrnn.grads.full()), memory(jrnn.grads.tbptt(8))
    assert short < 0.2 * full, (short, full)


def test_tbptt_errors_and_spec():
    assert jrnn.grads.parse("tbptt:5").name == "tbptt:5"
    assert jrnn.grads.parse("tbptt:35,5").name == "tbptt:35,5"
    with pytest.raises(ValueError, match=r"tbptt needs k2 <= k1, got k1=3, k2=5"):
        jrnn.grads.tbptt(5, k1=3)
    with pytest.raises(ValueError, match=r"tbptt needs a parameter"):
        jrnn.grads.parse("tbptt")
    model, params, batch, carry = _setup(jrnn.gru(H))
    with pytest.raises(ValueError, match=r"tbptt\(k1=10\) needs batches of T=10 steps, got T=12"):
        jrnn.grads.tbptt(2, k1=10).value_and_grad(model, params, carry, batch, None)


def test_tbptt_trains_through_the_train_step():
    model, params, batch, _ = _setup(jrnn.gru(H))
    opt = jrnn.make_optimizer("adam", 0.05, 1.0)
    est = jrnn.grads.parse("tbptt:4")
    state = jrnn.init_state(model, opt, est, jax.random.key(0), B)
    step = jrnn.train_step(model, opt, est, carry_over=False)
    tail = batch._replace(mask=(np.arange(T) >= T - 4)[:, None].repeat(B, 1).astype(np.float32))
    fresh = model.cell.initial_carry((B,))
    before = float(jrnn.sequence_loss(model, state.params, fresh, tail)[0])
    for i in range(30):
        state, m = step(state, batch, jax.random.key(i))
    # the loss on the back-propagated positions falls
    assert float(jrnn.sequence_loss(model, state.params, fresh, tail)[0]) < 0.7 * before


@pytest.mark.parametrize("budget", ["1MiB", "1GiB"])
def test_checkpointed_by_budget_fits_and_equals_full(budget):
    model = jrnn.language_model(jrnn.gru(32), V)
    params = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    xs = rng.integers(0, V, (256, 8)).astype(np.int32)
    batch, carry = jrnn.Batch(xs, np.roll(xs, -1, 0)), model.cell.initial_carry((8,))
    est = jrnn.grads.parse(f"checkpointed:budget={budget}")
    grad = lambda est: (lambda p: est.value_and_grad(model, p, carry, batch, None)[1])
    temp = compare.compiled_memory(grad(est), params)["temp"]
    full_temp = compare.compiled_memory(grad(jrnn.grads.full()), params)["temp"]
    limit = {"1MiB": 1, "1GiB": 1024}[budget] * 2 ** 20
    assert temp <= limit
    if full_temp > limit:
        assert temp < full_temp  # it had to rematerialise
    else:
        assert temp == full_temp  # it fits: plain full BPTT
    _close(jax.jit(grad(est))(params), jax.jit(grad(jrnn.grads.full()))(params), 2e-5)


def test_checkpointed_budget_errors():
    with pytest.raises(ValueError, match="a segment length S or a memory budget, not both"):
        jrnn.grads.checkpointed(8, budget="1GiB")
    with pytest.raises(ValueError, match="size like '2GiB'"):
        jrnn.grads.parse("checkpointed:budget=lots")
    model, params, batch, carry = _setup(jrnn.gru(H))
    with pytest.raises(ValueError, match=r"no segment length fits the memory budget .* the least found"):
        jrnn.grads.checkpointed(budget=16).value_and_grad(model, params, carry, batch, None)
