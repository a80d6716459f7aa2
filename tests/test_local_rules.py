"""Tests for jrnn.grads.local: RFLO and e-prop against independent references.

- a hand-written NumPy loop of each rule (Murray 2019's and Marschall et al.
  2020's equations, one example and one step at a time, the trace of the
  stacked weight ``[x; h; 1] -> H`` as one matrix), float64, T=5, H=3;
- where the rule must be exact: e-prop with a diagonal ``W_hh`` and RFLO with
  ``W_hh = 0`` and the readout as feedback equal full BPTT (``jax.grad``
  through the unroll) and RTRL; with a dense ``W_hh`` they do not (power);
- a packed stream with resets equals its episodes run alone.
"""

import functools

import numpy as np
import pytest

import jax
import jax.numpy as jnp

import jrnn
from jrnn import grads as G
from jrnn.grads.local import LocalCarry, eprop, rflo  # registers 'rflo' and 'eprop'
from jrnn.models import Batch

F64 = jnp.float64
T, B, D, H, O = 5, 2, 2, 3, 2
TAUS = np.array([2.0, 3.0, 5.0])  # per-unit time constants: alpha = 0.5, 1/3, 0.2
TOL = {"rtol": 1e-9, "atol": 1e-11}
# compiling dominates; XLA's backend optimisation level changes speed, not results
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def model_for(cell_name):
    cell = (jrnn.leaky(H, tau=TAUS, learn_tau=False, dtype=F64) if cell_name == "leaky"
            else jrnn.elman(H, dtype=F64))
    return jrnn.regressor(cell, D, O)


def rand_params(seed, diag_only=False, zero_rec=False):
    rng = np.random.default_rng(seed)
    Wh = 0.8 * rng.normal(size=(H, H))
    if diag_only:
        Wh = np.diag(np.diag(Wh))
    if zero_rec:
        Wh = np.zeros((H, H))
    cell = {"W_xh": 0.8 * rng.normal(size=(D, H)), "W_hh": Wh, "b_h": 0.3 * rng.normal(size=H)}
    head = {"W_hq": 0.7 * rng.normal(size=(H, O)), "b_q": 0.2 * rng.normal(size=O)}
    return jax.tree.map(lambda a: jnp.asarray(a, F64), {"cell": cell, "head": head})


def rand_batch(seed, resets=None):
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.2, 1.0, size=(T, B))
    # sums to at most one and exact in float32 (loss_weights works in float32): left as it is
    w = np.floor(256 * w / w.sum()) / 256
    return Batch(jnp.asarray(rng.normal(size=(T, B, D))), jnp.asarray(rng.normal(size=(T, B, O))),
                 jnp.asarray(w), None if resets is None else jnp.asarray(resets))


def numpy_rule(rule, alpha, params, feedback, batch, h, trace):
    """The rule in NumPy, example by example: returns ``(loss, grads, h_T, trace_T)``.

    ``trace`` ``[B, D + H + 1, H]`` is the eligibility trace of the stacked
    weight ``[W_xh; W_hh; b_h]``, updated as ``E <- decay * E + outer(xhat, k)``
    with ``k = alpha phi'(u)``, ``decay = 1 - alpha`` (RFLO) or ``1 - alpha +
    k * diag(W_hh)`` (e-prop); the gradient is ``q * E`` summed over steps
    with ``q = W_hq e`` (e-prop) or ``feedback e`` (RFLO), ``e`` the weighted
    output error of the half squared loss.
    """
    c = {k: np.asarray(v, np.float64) for k, v in params["cell"].items()}
    hd = {k: np.asarray(v, np.float64) for k, v in params["head"].items()}
    x, y, w = (np.asarray(a, np.float64) for a in (batch.inputs, batch.targets, batch.mask))
    resets = np.zeros((T, B), bool) if batch.resets is None else np.asarray(batch.resets)
    h, E = np.array(h, np.float64), np.array(trace, np.float64)
    G_rec, gq, gbq, loss = np.zeros((D + H + 1, H)), np.zeros((H, O)), np.zeros(O), 0.0
    for t in range(T):
        for b in range(B):
            if resets[t, b]:
                h[b], E[b] = 0.0, 0.0
            u = x[t, b] @ c["W_xh"] + h[b] @ c["W_hh"] + c["b_h"]
            v = np.tanh(u)
            k = alpha * (1.0 - v ** 2)
            decay = (1.0 - alpha) + (k * np.diag(c["W_hh"]) if rule == "eprop" else 0.0)
            xhat = np.concatenate([x[t, b], h[b], [1.0]])
            E[b] = decay[None, :] * E[b] + np.outer(xhat, k)
            h[b] = (1.0 - alpha) * h[b] + alpha * v
            out = h[b] @ hd["W_hq"] + hd["b_q"]
            err = w[t, b] * (out - y[t, b])
            loss += w[t, b] * 0.5 * np.sum((out - y[t, b]) ** 2)
            q = (hd["W_hq"] if rule == "eprop" else feedback) @ err
            G_rec += q[None, :] * E[b]
            gq += np.outer(h[b], err)
            gbq += err
    grads = {"cell": {"W_xh": G_rec[:D], "W_hh": G_rec[D:D + H], "b_h": G_rec[D + H]},
             "head": {"W_hq": gq, "b_q": gbq}}
    return loss, grads, h, E


def stacked(trace):
    return np.concatenate([np.asarray(trace["W_xh"]), np.asarray(trace["W_hh"]),
                           np.asarray(trace["b_h"])[:, None]], axis=1)


def assert_tree_close(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **(tol or TOL))


def max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("rule, cell_name", [("rflo", "leaky"), ("eprop", "leaky"),
                                             ("rflo", "rnn"), ("eprop", "rnn")])
def test_matches_the_numpy_reference(rule, cell_name):
    """Two batches in a row (the carry goes on), from a nonzero state and trace."""
    model, est = model_for(cell_name), G.parse(rule)
    alpha = 1.0 / TAUS if cell_name == "leaky" else np.ones(H)
    params = rand_params(0)
    rng = np.random.default_rng(7)
    carry = est.init_carry(model, params, (B,))
    carry = carry._replace(state=jnp.asarray(0.5 * rng.normal(size=(B, H))),
                           trace=jax.tree.map(lambda a: jnp.asarray(0.3 * rng.normal(size=a.shape)),
                                              carry.trace))
    vg = _jit(lambda c, b: est.value_and_grad(model, params, c, b, None)[:3])
    h, E = np.asarray(carry.state), stacked(carry.trace)
    fb = None if carry.feedback is None else np.asarray(carry.feedback)
    for seed in (1, 2):
        batch = rand_batch(seed)
        loss, grads, carry = vg(carry, batch)
        ref_loss, ref_grads, h, E = numpy_rule(rule, alpha, params, fb, batch, h, E)
        np.testing.assert_allclose(float(loss), ref_loss, **TOL)
        assert_tree_close(grads, ref_grads)
        np.testing.assert_allclose(np.asarray(carry.state), h, **TOL)
        np.testing.assert_allclose(stacked(carry.trace), E, **TOL)
    if rule == "rflo":  # fixed: the carry passes the same matrix on; N(0, 1/O) entries
        np.testing.assert_array_equal(np.asarray(carry.feedback), fb)
        assert fb.shape == (H, O) and 0.2 < fb.std() * np.sqrt(O) < 2.5


def _fresh(est, model, params, batch):
    """``est``'s gradient from a fresh carry."""
    return est.value_and_grad(model, params, est.init_carry(model, params, (B,)), batch, None)[1]


def test_eprop_is_exact_when_W_hh_is_diagonal():
    model, est = model_for("leaky"), eprop()
    batch = rand_batch(3)
    run = _jit(lambda p: tuple(_fresh(e, model, p, batch) for e in (est, G.full(), G.rtrl())))
    g, full, rtrl = run(rand_params(4, diag_only=True))
    assert_tree_close(g, full)
    assert_tree_close(g, rtrl)
    # power: with a dense W_hh the paths through the other units are missing
    g, full, rtrl = run(rand_params(4))
    assert_tree_close(full, rtrl)
    assert max_diff(g["cell"], full["cell"]) > 1e-3
    assert_tree_close(g["head"], full["head"])  # the head's gradient is always exact


def test_rflo_is_exact_without_recurrence_and_with_the_readout_as_feedback():
    model, est = model_for("leaky"), rflo()
    batch = rand_batch(5)

    def run(p, symmetric):
        c = est.init_carry(model, p, (B,))
        if symmetric:
            c = c._replace(feedback=p["head"]["W_hq"])
        return est.value_and_grad(model, p, c, batch, None)[1], _fresh(G.full(), model, p, batch)

    run = _jit(run, static_argnums=1)
    g, full = run(rand_params(6, zero_rec=True), True)
    assert_tree_close(g, full)
    # power: the random feedback, or a recurrence beyond the leak, makes it differ
    g, full = run(rand_params(6, zero_rec=True), False)
    assert max_diff(g["cell"], full["cell"]) > 1e-3
    assert_tree_close(g["head"], full["head"])
    g, full = run(rand_params(6), True)
    assert max_diff(g["cell"], full["cell"]) > 1e-3


RESETS = np.array([[1, 1], [0, 1], [1, 0], [0, 0], [0, 1]], bool)  # t=0: the junk carry goes


@pytest.mark.parametrize("rule", ["rflo", "eprop"])
def test_a_packed_stream_equals_its_episodes_alone(rule):
    """Reference: the 5 episodes as one batch of 5 sequences from a fresh carry, right-padded
    with zero weight (the examples are independent, so this is each episode run alone)."""
    model, est = model_for("leaky"), G.parse(rule)
    params, batch = rand_params(8), rand_batch(9, RESETS)
    spans = [(b, a, z) for b in range(B) for a, z in
             (lambda s: zip(s, s[1:] + [T]))(sorted({0, *np.nonzero(RESETS[:, b])[0].tolist()}))]
    assert len(spans) == 5
    L = max(z - a for _, a, z in spans)
    t_idx = np.array([[min(a + t, z - 1) for _, a, z in spans] for t in range(L)])
    b_idx = np.array([b for b, _, _ in spans])
    real = np.arange(L)[:, None] < np.array([z - a for _, a, z in spans])
    pieces = Batch(batch.inputs[t_idx, b_idx], batch.targets[t_idx, b_idx],
                   batch.mask[t_idx, b_idx] * real)

    def run(p):
        c0 = est.init_carry(model, p, (B,))
        junk = c0._replace(state=c0.state + 0.7)  # the reset at t=0 wipes it
        loss, g = est.value_and_grad(model, p, junk, batch, None)[:2]
        ref = est.value_and_grad(model, p, est.init_carry(model, p, (len(spans),)), pieces, None)
        return loss, g, ref[0], ref[1], est.value_and_grad(model, p, c0, batch._replace(resets=None), None)[1]

    loss, g, ref_loss, ref_g, no_reset = _jit(run)(params)
    np.testing.assert_allclose(float(loss), float(ref_loss), **TOL)
    assert_tree_close(g, ref_g)
    assert max_diff(no_reset["cell"], ref_g["cell"]) > 1e-3  # power: the resets matter


@pytest.mark.parametrize("make_cell, why", [
    (lambda: jrnn.lstm(H), "'lstm'"),
    (lambda: jrnn.gru(H), "'gru'"),
    (lambda: jrnn.leaky(H, tau=3.0), "learn_tau=False"),
    (lambda: jrnn.stack([jrnn.elman(H), jrnn.elman(H)]), "a stack"),
])
@pytest.mark.parametrize("rule", ["rflo", "eprop"])
def test_other_cells_are_refused(make_cell, why, rule):
    model = jrnn.regressor(make_cell(), D, O)
    params = jax.eval_shape(model.init, jax.random.key(0))
    with pytest.raises(ValueError, match="leaky vanilla RNN") as e:
        G.parse(rule).init_carry(model, params, (B,))
    assert why in str(e.value)


def test_parse_carry_and_argument_checks():
    model = model_for("rnn")
    params = rand_params(0)
    f1 = G.parse("rflo").init_carry(model, params, (B,)).feedback
    f2 = G.parse("rflo:0").init_carry(model, params, (B,)).feedback
    f3 = G.parse("rflo:3").init_carry(model, params, (B,)).feedback
    np.testing.assert_array_equal(np.asarray(f1), np.asarray(f2))
    assert not np.allclose(np.asarray(f1), np.asarray(f3))
    assert G.parse("eprop").init_carry(model, params, (B,)).feedback is None
    with pytest.raises(ValueError, match="takes no parameter"):
        G.parse("eprop:1")
    with pytest.raises(ValueError, match="feedback_std"):
        rflo(feedback_std=0.0)
    with pytest.raises(ValueError, match="seed"):
        rflo(seed=1.5)
    batch = rand_batch(0)
    est = eprop()
    with pytest.raises(TypeError, match="LocalCarry"):
        est.value_and_grad(model, params, jnp.zeros((B, H), F64), batch, None)
    bad = est.init_carry(model, params, (B + 1,))
    with pytest.raises(ValueError, match="batch"):
        est.value_and_grad(model, params, bad, batch, None)
    assert isinstance(est.init_carry(model, params, (B,)), LocalCarry)


def test_eprop_trace_is_snap1_influence():
    """The docstring's claim: e-prop's trace follows SnAp-1's influence for this cell (both keep
    diag(J) and the immediate Jacobian on the one-step pattern; snap1's is ``[B, K=1, *shape]``)."""
    model, params, batch = model_for("leaky"), rand_params(10), rand_batch(11)

    def run(p):
        ep, sn = eprop(), G.snap1()
        le, ge, c_e, _ = ep.value_and_grad(model, p, ep.init_carry(model, p, (B,)), batch, None)
        ls, gs, c_s, _ = sn.value_and_grad(model, p, sn.init_carry(model, p, (B,)), batch, None)
        return c_e.trace, jax.tree.map(lambda a: a[:, 0], c_s.influence), ge, gs

    trace, influence, ge, gs = _jit(run)(params)
    assert_tree_close(trace, influence)
    assert float(jnp.abs(influence["W_hh"]).max()) > 1e-2
    # ...while the gradients differ: snap1 reads its history term through the full J_t
    assert max_diff(ge["cell"], gs["cell"]) > 1e-3
    assert_tree_close(ge["head"], gs["head"])


def test_token_inputs_enter_as_one_hot_rows():
    """A language model (token ids, vocabulary V): with a diagonal W_hh e-prop still equals
    full BPTT, so the ids' one-hot rows are the trace's input part."""
    V = 5
    model = jrnn.language_model(jrnn.elman(H, dtype=F64), V)
    p = jax.tree.map(lambda a: jnp.asarray(a, F64), model.init(jax.random.key(1)))
    p["cell"]["W_hh"] = jnp.diag(jnp.diag(p["cell"]["W_hh"]) + 0.5)
    rng = np.random.default_rng(12)
    batch = Batch(rng.integers(0, V, (T, B)).astype(np.int32), rng.integers(0, V, (T, B)).astype(np.int32))
    g, full = _jit(lambda p: (_fresh(eprop(), model, p, batch), _fresh(G.full(), model, p, batch)))(p)
    assert_tree_close(g, full)
    assert float(jnp.abs(g["cell"]["W_xh"]).max()) > 1e-3
