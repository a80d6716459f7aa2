"""Tests for diag-RTRL (jrnn.grads.diagonal) against independent references, in float64.

- one element-wise layer (LRU, IndRNN): gradient = full BPTT's (jax.grad through the
  scan), with and without resets and a loss mask;
- an influence carried over two batches = dense RTRL's (jrnn.grads.rtrl) on the same stream;
- a stack with stack="spatial" = a hand-written reference of Zucchet et al.'s rule (autodiff
  with the upper layer's carry cut for the lower layer's params), and != BPTT for that layer;
- its memory plan does not grow with T (BPTT's does);
- refusals: dense cells, undeclared steps, stacks by default; the registry names.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import compare, grads as G
from jrnn import lru as L
from jrnn.grads import diagonal as DG
from jrnn.models import Batch

T, B, D, H, N = 7, 3, 2, 4, 5
F64 = jnp.float64


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _batch(seed, T=T, resets=False, mask=False):
    rng = np.random.default_rng(seed)
    r = None
    if resets:
        r = np.zeros((T, B), bool)
        r[3, 1] = r[5, 0] = True
    m = (rng.uniform(size=(T, B)) < 0.6).astype(np.float32) if mask else None
    return Batch(rng.normal(size=(T, B, D)), rng.normal(size=(T, B, 2)), m, resets=r)


def _init(model, seed=0):
    """Params by one compiled init (eager init dispatches and compiles op by op)."""
    return jax.jit(model.init)(jax.random.key(seed))


def _grads(est, model, params, batch, carry=None):
    carry = est.init_carry(model, params, (B,)) if carry is None else carry
    return est.value_and_grad(model, params, carry, batch, None)


def _max_diff(a, b):
    return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(jnp.max(jnp.abs(x - y))), a, b)))


CELLS = {"lru": lambda: L.lru(H, state_size=N, r_min=0.5, activation="tanh", dtype=F64),
         "indrnn": lambda: L.indrnn(H, dtype=F64)}


@pytest.mark.parametrize("cell,resets,mask", [("lru", False, False), ("lru", True, True),
                                               ("indrnn", True, True)])
def test_one_layer_equals_full_bptt(cell, resets, mask):
    model = jrnn.regressor(CELLS[cell](), D, 2)
    params = _init(model, 0)
    batch = _batch(1, resets=resets, mask=mask)
    loss, g, carry, _ = _grads(DG.diag_rtrl(), model, params, batch)
    ref_loss, ref, ref_carry, _ = _grads(G.full(), model, params, batch)
    assert abs(float(loss - ref_loss)) < 1e-12
    assert _max_diff(g, ref) < 1e-12, _max_diff(g, ref)
    assert _max_diff(carry.state, ref_carry) < 1e-12
    assert max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(ref["cell"])) > 1e-3


def test_carried_influence_equals_dense_rtrl_over_two_batches():
    model = jrnn.regressor(CELLS["lru"](), D, 2)
    params = _init(model, 2)
    b1, b2 = _batch(3), _batch(4)
    out = {}
    for est in (DG.diag_rtrl(), G.rtrl(), G.full()):
        vg = jax.jit(est.value_and_grad, static_argnums=0)  # one compile for both batches
        _, g1, carry, _ = vg(model, params, est.init_carry(model, params, (B,)), b1, None)
        out[est.name] = g1, vg(model, params, carry, b2, None)[1]
    assert _max_diff(out["diag-rtrl"], out["rtrl"]) < 1e-12
    assert _max_diff(out["diag-rtrl"][0], out["full"][0]) < 1e-12  # fresh carry: BPTT's
    # the second batch's gradient sees the first batch (full BPTT's cuts at the boundary)
    assert _max_diff(out["rtrl"][1], out["full"][1]) > 1e-3


def _spatial_reference(model, params, batch):
    """Zucchet et al.'s rule for a 2-layer stack by autodiff: the bottom layer's params see the
    top layer only within each step (its carry cut), the top layer's and the head are exact.
    Also returns full BPTT's gradient of the bottom layer (nothing cut)."""
    (c0, c1), (p0, p1) = model.cell.layers, params["cell"]
    w = jrnn.models.loss_weights(batch)

    def loss(p0, p1, head, cut):
        s0, s1 = c0.initial_carry((B,)), c1.initial_carry((B,))
        total = 0.0
        for t in range(batch.inputs.shape[0]):
            s0, h0 = c0.apply(p0, s0, batch.inputs[t])
            s1, h1 = c1.apply(p1, jax.lax.stop_gradient(s1) if cut else s1, h0)
            total += jnp.sum(w[t] * model.loss(model.head(head, h1), batch.targets[t]))
        return total

    @jax.jit
    def both(p0, p1, head):
        g0 = jax.grad(loss)(p0, p1, head, True)
        full0, g1, gh = jax.grad(loss, argnums=(0, 1, 2))(p0, p1, head, False)
        return {"cell": (g0, g1), "head": gh}, full0

    return both(p0, p1, params["head"])


def test_stack_spatial_equals_zucchets_rule_and_is_not_bptt():
    cell = jrnn.stack([L.lru(H, state_size=N, r_min=0.5, activation="tanh", dtype=F64),
                       L.lru(3, state_size=4, r_min=0.5, activation="tanh", dtype=F64)])
    model = jrnn.regressor(cell, D, 2)
    params = _init(model, 5)
    batch = _batch(6, T=4)
    _, g, _, _ = _grads(DG.diag_rtrl(stack="spatial"), model, params, batch)
    ref, full0 = _spatial_reference(model, params, batch)
    assert _max_diff(g, ref) < 1e-12, _max_diff(g, ref)
    assert _max_diff(g["cell"][0], full0) > 1e-4  # the bottom layer's is not BPTT's


def test_memory_does_not_grow_with_T():
    model = jrnn.regressor(L.lru(H, state_size=N, dtype=F64), D, 2)
    params = _init(model, 0)
    temp = {}
    for est in (DG.diag_rtrl(), G.full()):
        for t in (8, 64):
            batch = _batch(0, T=t)
            carry = est.init_carry(model, params, (B,))
            fn = lambda c, b, est=est: est.value_and_grad(model, params, c, b, None)[:2]
            temp[est.name, t] = compare.compiled_memory(fn, carry, batch)["temp"]
    assert temp["diag-rtrl", 64] <= temp["diag-rtrl", 8] + 4096, temp
    assert temp["full", 64] > 4 * temp["full", 8], temp


def test_refuses_what_it_cannot_train_exactly():
    est = DG.diag_rtrl()
    gru = jrnn.regressor(jrnn.gru(H), D, 2)
    with pytest.raises(ValueError, match="element-wise"):
        est.init_carry(gru, jax.eval_shape(gru.init, jax.random.key(0)), (B,))
    cell = L.lru(H, state_size=N)
    other = jrnn.regressor(cell._replace(step=lambda p, c, x: cell.step(p, c, x)), D, 2)
    with pytest.raises(ValueError, match="not declared element-wise"):
        est.init_carry(other, jax.eval_shape(other.init, jax.random.key(0)), (B,))
    deep = jrnn.regressor(jrnn.stack([L.lru(H), L.lru(H)]), D, 2)
    with pytest.raises(ValueError, match="stack='spatial'"):
        est.init_carry(deep, jax.eval_shape(deep.init, jax.random.key(0)), (B,))
    mixed = jrnn.regressor(jrnn.stack([L.lru(H), jrnn.gru(H)]), D, 2)
    with pytest.raises(ValueError, match="'gru' is not declared"):
        DG.diag_rtrl("spatial").init_carry(mixed, jax.eval_shape(mixed.init, jax.random.key(0)),
                                          (B,))
    model = jrnn.regressor(cell, D, 2)
    params = jax.eval_shape(model.init, jax.random.key(0))
    with pytest.raises(TypeError, match="OnlineCarry"):
        est.value_and_grad(model, params, cell.initial_carry((B,)), _batch(0), None)
    with pytest.raises(ValueError, match="stack must be one of"):
        DG.diag_rtrl("deep")


def test_registry_names_and_a_train_step():
    assert G.parse("diag-rtrl").name == "diag-rtrl"
    assert G.parse("diag-rtrl:spatial").name == "diag-rtrl:spatial"
    with pytest.raises(ValueError, match="bad parameter"):
        G.parse("diag-rtrl:exact")
    model = jrnn.regressor(L.lru(H, state_size=N, dtype=F64), D, 2)
    opt = jrnn.make_optimizer("sgd", 0.1, clip=None)
    est = G.parse("diag-rtrl")
    state = jrnn.init_state(model, opt, est, jax.random.key(0), B)
    batch = _batch(7)
    _, g, _, _ = _grads(G.full(), model, state.params, batch)
    before = jax.tree.map(np.array, state.params)  # the step donates the state
    new, _ = jrnn.train_step(model, opt, est)(state, batch, jax.random.key(1))
    # plain SGD: the update is -lr times BPTT's gradient
    step = jax.tree.map(lambda a, b: a - b, new.params, before)
    assert _max_diff(step, jax.tree.map(lambda x: -0.1 * x, g)) < 1e-10
