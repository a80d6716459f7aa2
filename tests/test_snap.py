"""SnAp-1 (and SnAp-2) against a dense reference written here.

The reference (``dense_snap``) is the algorithm as the paper states it, one
example and one step at a time with dense matrices: the full carry Jacobian
``J_s [N, N]`` and immediate Jacobian ``J_theta [N, P]`` (``jax.jacfwd``,
``jax.jacrev``), ``M_t = S * (J_s M_{t-1} + J_theta)`` with ``S [N, P]`` the
sparsity pattern (SnAp-1: carry entry ``(k, i)`` x params of unit ``i``;
SnAp-2: also the units one recurrent edge away), the gradient
``sum_t dl_t/dtheta + dl_t/ds_{t-1} M_{t-1}``, resets zeroing ``M`` and
restarting the carry. It shares nothing with ``jrnn.grads.online`` but the
cell and model functions. Checked here:

- the estimator equals the reference (loss, gradient, carried state and
  influence) on two batches in a row (the influence carried across), with
  resets, for rnn, gru, lstm, leaky (fixed tau: fast recurrence; learned tau:
  the dense-Jacobian path), in float64;
- SnAp-1 equals RTRL for T <= 2 and for diagonal recurrent matrices;
- SnAp-2 equals RTRL for T <= 3, and for any T when the pattern is closed
  (two steps reach no further than one); and differs from SnAp-1.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import jrnn
from jrnn import grads as G
from jrnn.grads import online
from jrnn.models import Batch

F64 = jnp.float64
# compiling dominates: XLA's backend optimisation level changes speed, not results
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
H, D, O = 3, 2, 2


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def dense_snap(model, params, pattern):
    """The reference: ``run(carry, dense M [B, N, P], batch) -> (loss, grads, state, M)``."""
    theta, unravel = ravel_pytree(params["cell"])
    s0, unravel_s = ravel_pytree(model.cell.initial_carry(()))

    def f(th, s, x):
        c, h = model.cell.apply(unravel(th), unravel_s(s), x)
        return ravel_pytree(c)[0], h

    def loss_t(th, s, head, x, y, wt):
        s_new, h = f(th, s, x)
        return wt * model.loss(model.head(head, h), y), s_new

    vg = _jit(jax.value_and_grad(loss_t, argnums=(0, 1, 2), has_aux=True))
    jac = _jit(lambda th, s, x: jax.jacfwd(lambda th, s: f(th, s, x)[0], argnums=(0, 1))(th, s))
    return functools.partial(_dense_run, theta, unravel, s0, unravel_s, vg, jac, params, pattern)


def _dense_run(theta, unravel, s0, unravel_s, vg, jac, params, pattern, carry, influence, batch):
    T, B = batch.inputs.shape[:2]
    m = np.ones((T, B)) if batch.mask is None else np.asarray(batch.mask, np.float64)
    w = m / max(m.sum(), 1.0)
    resets = np.zeros((T, B), bool) if batch.resets is None else np.asarray(batch.resets)
    g_th, g_head, total = np.zeros(theta.size), None, 0.0
    states, Ms = [], []
    for b in range(B):
        s = np.asarray(ravel_pytree(jax.tree.map(lambda a, b=b: a[b], carry))[0])
        M = np.asarray(influence[b])
        for t in range(T):
            x, y = batch.inputs[t, b], batch.targets[t, b]
            if resets[t, b]:
                s, M = np.asarray(s0), np.zeros_like(M)
            (l, s_new), (gth, gs, gh) = vg(theta, s, params["head"], x, y, w[t, b])
            J_th, J_s = map(np.asarray, jac(theta, s, x))
            g_th += np.asarray(gth) + np.asarray(gs) @ M
            g_head = gh if g_head is None else jax.tree.map(jnp.add, g_head, gh)
            total += float(l)
            M = pattern * (J_s @ M + J_th)
            s = np.asarray(s_new)
        states.append(s)
        Ms.append(M)
    state = jax.vmap(unravel_s)(jnp.asarray(np.stack(states)))
    return total, {"cell": unravel(jnp.asarray(g_th)), "head": g_head}, state, np.stack(Ms)


def units_of_params(params_cell):
    """``[P]``: the unit each parameter feeds (last-axis index mod H), in ravel order."""
    return np.concatenate([np.broadcast_to(np.arange(np.shape(l)[-1]) % H, np.shape(l)).ravel()
                           for l in jax.tree.leaves(params_cell)])


def snap1_pattern(params_cell, K):
    u = units_of_params(params_cell)
    rows = np.tile(np.arange(H), K)  # carry entry (k, i) -> unit i
    return (rows[:, None] == u[None, :]).astype(np.float64)


def compact(M, K, params_cell):
    """Dense ``[B, N, P]`` on the SnAp-1 pattern -> the estimator's tree of ``[B, K, *shape]``."""
    flat = M.reshape(M.shape[0], K, H, -1).sum(2)  # [B, K, P]
    unravel = ravel_pytree(params_cell)[1]
    return jax.vmap(jax.vmap(unravel))(jnp.asarray(flat))


CELLS = {
    "rnn": (lambda: jrnn.elman(H, dtype=F64), 1),
    "gru": (lambda: jrnn.gru(H, dtype=F64), 1),
    "lstm": (lambda: jrnn.lstm(H, dtype=F64), 2),
    "leaky": (lambda: jrnn.leaky(H, tau=[2.0, 3.0, 4.0], learn_tau=False, dtype=F64), 1),
    "leaky-learned": (lambda: jrnn.leaky(H, tau=[2.0, 3.0, 4.0], dtype=F64), 1),
}


def problem(cell, T, B=2, seed=0, tokens=False, V=4):
    model = jrnn.language_model(cell, V) if tokens else jrnn.regressor(cell, D, O)
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda a: jnp.asarray(rng.uniform(-0.8, 0.8, a.shape), F64),
                          jax.eval_shape(model.init, jax.random.key(0)))
    if tokens:
        xs, ys = (rng.integers(0, V, (T, B)).astype(np.int32) for _ in range(2))
    else:
        xs, ys = rng.normal(size=(T, B, D)), rng.normal(size=(T, B, O))
    # uneven weights summing to a power of two: exact after models.loss_weights' float32 division
    mask = np.resize([1.0, 0.5, 0.75, 1.0, 0.25, 1.0, 0.75, 1.0, 0.5, 1.25], (T, B))
    return model, params, Batch(jnp.asarray(xs), jnp.asarray(ys), jnp.asarray(mask))


def assert_close(a, b, rtol=1e-9, atol=1e-11):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", list(CELLS))
def test_snap1_equals_the_dense_reference_across_batches_and_resets(name):
    make, K = CELLS[name]
    T, B = 5, 2
    model, params, b1 = problem(make(), T, B, seed=1, tokens=name == "lstm")
    b2 = problem(make(), T, B, seed=2, tokens=name == "lstm")[2]
    resets = np.zeros((T, B), bool)
    resets[2, 0] = resets[0, 1] = resets[4, 1] = True
    b2 = b2._replace(resets=jnp.asarray(resets))
    # gru: also in chunks of 2 steps (2 + 2 + 1), which must not change anything
    ests = [G.snap1()] + ([G.snap1(2)] if name == "gru" else [])
    pat = snap1_pattern(params["cell"], K)

    @_jit
    def run(params):
        out = []
        for est in ests:
            c0 = est.init_carry(model, params, (B,))
            c0 = c0._replace(state=jax.tree.map(lambda a: a + 0.3, c0.state))
            l1, g1, c1, _ = est.value_and_grad(model, params, c0, b1, None)
            l2, g2, c2, _ = est.value_and_grad(model, params, c1, b2, None)
            out.append(((l1, g1, c1), (l2, g2, c2), c0))
        return out

    outs = run(params)
    (l1, g1, c1), (l2, g2, c2), c0 = outs[0]
    for other in outs[1:]:
        assert_close(other, outs[0])
    M0 = np.zeros((B, K * H, pat.shape[1]))
    ref = dense_snap(model, params, pat)
    rl1, rg1, rs1, rM1 = ref(c0.state, M0, b1)
    rl2, rg2, rs2, rM2 = ref(rs1, rM1, b2)
    for (l, g, c), (rl, rg, rs, rM) in [((l1, g1, c1), (rl1, rg1, rs1, rM1)),
                                         ((l2, g2, c2), (rl2, rg2, rs2, rM2))]:
        np.testing.assert_allclose(float(l), rl, rtol=1e-12)
        assert_close(g, rg)
        assert_close(c.state, rs)
        assert_close(c.influence, compact(rM, K, params["cell"]))
    # the influence carried in matters (the test sees the M_0 terms), and so do the resets
    assert np.abs(rM1).max() > 1e-2
    rg2_cut = ref(rs1, 0 * rM1, b2._replace(resets=None))[1]
    assert max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
               for a, b in zip(jax.tree.leaves(rg2), jax.tree.leaves(rg2_cut))) > 1e-3


def test_snap1_memory_does_not_grow_with_T():
    """Chunks of 64 steps: the compiled step's temporaries at T=512 stay those of T=128
    (measured: +1%, and +2.5% at T=1024; full BPTT's grow about 4x)."""
    model = jrnn.language_model(jrnn.gru(16), 8)
    params = jax.eval_shape(model.init, jax.random.key(0))
    temp = {}
    for name, est in (("snap1", G.snap1()), ("full", G.full())):
        for T in (128, 512):
            ids = jax.ShapeDtypeStruct((T, 4), jnp.int32)
            carry = jax.eval_shape(lambda p, est=est: est.init_carry(model, p, (4,)), params)
            fn = jax.jit(lambda p, c, b, est=est: est.value_and_grad(model, p, c, b, None)[:2])
            stats = fn.lower(params, carry, Batch(ids, ids)).compile().memory_analysis()
            if stats is None or not hasattr(stats, "temp_size_in_bytes"):
                pytest.skip(f"memory_analysis() unavailable on {jax.default_backend()}")
            temp[name, T] = stats.temp_size_in_bytes
    assert temp["snap1", 512] < 1.1 * temp["snap1", 128], temp
    assert temp["full", 512] > 2.5 * temp["full", 128], temp  # the check can see growth


def test_snap1_chunk_argument():
    assert G.parse("snap1").name == "snap1" and G.parse("snap1:16").name == "snap1:16"
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="chunk"):
            G.snap1(bad)


def _diagonal_recurrence(params):
    name = "W_hh" if "W_hh" in params["cell"] else "W_h"
    W = params["cell"][name]
    keep = np.tile(np.eye(H), (1, W.shape[1] // H))
    return {**params, "cell": {**params["cell"], name: W * keep}}


@pytest.mark.parametrize("name", ["leaky", "leaky-learned"])  # rnn, gru, lstm: test_grads.py
def test_snap1_is_rtrl_for_two_steps_and_diagonal_recurrence(name):
    make, _ = CELLS[name]
    T, B = 5, 2
    model, params, batch = problem(make(), T, B, seed=3)
    first2 = batch._replace(mask=jnp.asarray(np.where(np.arange(T)[:, None] < 2, 1.0, 0.0)
                                             * np.ones((1, B))))
    snap, rtrl = G.snap1(), G.rtrl()

    @_jit
    def run(params, b):
        return [e.value_and_grad(model, params, e.init_carry(model, params, (B,)), b, None)[1]
                for e in (snap, rtrl)]

    s, r = run(params, first2)
    assert_close(s, r)
    s, r = run(_diagonal_recurrence(params), batch)
    assert_close(s, r)
    s, r = run(params, batch)  # the general case is an approximation
    assert np.abs(ravel_pytree(s["cell"])[0] - ravel_pytree(r["cell"])[0]).max() > 1e-4


# --------------------------------------------------------------------------- SnAp-2


def snap2_pattern(params_cell, mask):
    u = units_of_params(params_cell)
    i = np.arange(H)[:, None]
    return ((i == u[None, :]) | mask[u[None, :], i]).astype(np.float64)


CHAIN = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]], bool)  # h_0 -> unit 1 -> unit 2
PAIR = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], bool)  # units {0, 1} and {2}: closed


def masked(params, mask):
    W = params["cell"]["W_hh"]
    return {**params, "cell": {**params["cell"], "W_hh": W * (mask | np.eye(H, dtype=bool))}}


@pytest.mark.parametrize("name,tokens", [("rnn", True), ("leaky", False)])
def test_snap2_equals_the_dense_reference_on_its_pattern(name, tokens):
    """W_hh dense: the pattern (CHAIN) drops where the other entries lead; two batches
    in a row (the influence carried across), resets in the second."""
    T, B = 5, 2
    model, params, b1 = problem(CELLS[name][0](), T, B, seed=4, tokens=tokens)
    b2 = problem(CELLS[name][0](), T, B, seed=5, tokens=tokens)[2]
    resets = np.zeros((T, B), bool)
    resets[3, 0] = resets[1, 1] = True
    b2 = b2._replace(resets=jnp.asarray(resets))
    est = online.snap2(CHAIN)

    @_jit
    def run(params):
        c0 = est.init_carry(model, params, (B,))
        l1, g1, c1, _ = est.value_and_grad(model, params, c0, b1, None)
        l2, g2, c2, _ = est.value_and_grad(model, params, c1, b2, None)
        return (l1, g1, c1.state), (l2, g2, c2.state), c0.state

    (l1, g1, s1), (l2, g2, s2), s0 = run(params)
    pat = snap2_pattern(params["cell"], CHAIN)
    ref = dense_snap(model, params, pat)
    rl1, rg1, rs1, rM1 = ref(s0, np.zeros((B, H, pat.shape[1])), b1)
    rl2, rg2, rs2, _ = ref(rs1, rM1, b2)
    for (l, g, s), (rl, rg, rs) in [((l1, g1, s1), (rl1, rg1, rs1)),
                                    ((l2, g2, s2), (rl2, rg2, rs2))]:
        np.testing.assert_allclose(float(l), rl, rtol=1e-12)
        assert_close(g, rg)
        assert_close(s, rs)
    # the carried influence matters, and the pattern is not SnAp-1's
    rg2_cut = ref(rs1, 0 * rM1, b2)[1]
    assert np.abs(ravel_pytree(rg2["cell"])[0] - ravel_pytree(rg2_cut["cell"])[0]).max() > 1e-3
    rg1_snap1 = dense_snap(model, params, snap1_pattern(params["cell"], 1))(s0, 0 * rM1, b1)[1]
    assert np.abs(ravel_pytree(rg1["cell"])[0] - ravel_pytree(rg1_snap1["cell"])[0]).max() > 1e-4


def test_snap2_is_rtrl_where_its_pattern_holds_the_influence():
    T, B = 5, 2
    model, params, batch = problem(CELLS["rnn"][0](), T, B, seed=6)
    first3 = batch._replace(mask=jnp.asarray(np.where(np.arange(T)[:, None] < 3, 1.0, 0.0)
                                             * np.ones((1, B))))
    rtrl = G.rtrl()

    @_jit
    def run(params, b):
        return [e.value_and_grad(model, params, e.init_carry(model, params, (B,)), b, None)[1]
                for e in (online.snap2(CHAIN), online.snap2(PAIR), G.snap1(), rtrl)]

    chain, _, snap1, r = run(masked(params, CHAIN), first3)  # three steps: exact
    assert_close(chain, r)
    assert np.abs(ravel_pytree(snap1["cell"])[0] - ravel_pytree(r["cell"])[0]).max() > 1e-4
    chain, _, _, r = run(masked(params, CHAIN), batch)  # five: the chain reaches unit 2
    # (a three-edge effect, small: float64 round-off is ~1e-16)
    assert np.abs(ravel_pytree(chain["cell"])[0] - ravel_pytree(r["cell"])[0]).max() > 1e-7
    _, pair, _, r = run(masked(params, PAIR), batch)  # a closed pattern: exact for any T
    assert_close(pair, r)


def test_snap2_refuses_bad_masks_and_cells():
    for bad in (np.ones((3, 2)), np.full((3, 3), 0.5), np.ones(3)):
        with pytest.raises(ValueError, match="mask must be a square"):
            online.snap2(bad)
    model, params, _ = problem(jrnn.elman(4, dtype=F64), 2)
    with pytest.raises(ValueError, match=r"mask has shape \(3, 3\) but the cell has H=4"):
        online.snap2(CHAIN).init_carry(model, params, (2,))
    model, params, _ = problem(jrnn.gru(H, dtype=F64), 2)
    with pytest.raises(ValueError, match="snap2 needs an Elman-type cell"):
        online.snap2(CHAIN).init_carry(model, params, (2,))
