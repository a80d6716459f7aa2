"""Layer-normalised LSTM and GRU (``lstm(H, layer_norm=True)``, ``gru(H, layer_norm=True)``).

References, written here from the docstring equations (Ba, Kiros & Hinton 2016),
never from the code's output: a float64 NumPy loop with its own layer norm;
``jax.test_util.check_grads`` (finite differences, float64); full BPTT for RTRL;
the layers of a stack unrolled one by one; ``jax.grad`` through the masks of
:func:`jrnn.regularise.apply_masks` for the train step with dropout.
"""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jrnn
from jrnn import regularise as R
from jrnn.config import ModelConfig, TrainConfig, add_flags, build_model, from_flags

D, H, B, T, V = 3, 5, 4, 6, 7
EPS = 1e-5


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_ln(a, g):
    """LN over the last axis: ``g * (a - mean) / sqrt(var + eps)`` (biased variance)."""
    mu = a.mean(-1, keepdims=True)
    return g * (a - mu) / np.sqrt(((a - mu) ** 2).mean(-1, keepdims=True) + EPS)


def np_ln_lstm(p, carry, x):
    h, c = carry
    a = np_ln(x @ p["W_x"], p["g_x"]) + np_ln(h @ p["W_h"], p["g_h"]) + p["b"]
    i, f, g, o = np.split(a, 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(np_ln(c, p["g_c"]) + p["b_c"])
    return (h, c), h


def np_ln_gru(p, h, x):
    xr, xz, xn = np.split(np_ln(x @ p["W_x"], p["g_x"]) + p["b_x"], 3, axis=-1)
    hr, hz, hn = np.split(np_ln(h @ p["W_h"], p["g_h"]), 3, axis=-1)
    r, z = sigmoid(xr + hr), sigmoid(xz + hz)
    n = np.tanh(xn + r * (hn + p["b_hn"]))
    h = (1.0 - z) * n + z * h
    return h, h


CELLS = {"ln-lstm": (lambda h, **kw: jrnn.lstm(h, layer_norm=True, **kw), np_ln_lstm),
         "ln-gru": (lambda h, **kw: jrnn.gru(h, layer_norm=True, **kw), np_ln_gru)}


def random_params(cell, seed, input_size=D, scale=0.5):
    """Every param N(0, scale^2), gains around 1 (so a wrong gain or shift shows)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: cell.init(jax.random.key(0), input_size))
    return {k: jnp.asarray((1.0 if k.startswith("g_") else 0.0) + scale * rng.normal(size=a.shape),
                           a.dtype) for k, a in shapes.items()}


def random_carry(cell, seed):
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: cell.initial_carry((B,)))
    return jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype), shapes)


def np_loop(ref, p, carry, xs):
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    carry = jax.tree.map(lambda a: np.asarray(a, np.float64), tuple(carry) if isinstance(
        carry, jrnn.LSTMState) else carry)
    hs = []
    for x in np.asarray(xs, np.float64):
        carry, h = ref(p, carry, x)
        hs.append(h)
    return np.stack(hs), carry


@pytest.mark.parametrize("name", CELLS)
def test_unroll_matches_a_numpy_loop_of_the_equations_and_differs_from_the_plain_cell(name):
    make, ref = CELLS[name]
    cell = make(H)
    assert cell.name == name and cell.fast is None and cell.unit_blocks is None
    p, carry = random_params(cell, 0), random_carry(cell, 1)
    xs = np.random.default_rng(2).normal(size=(T, B, D)).astype(np.float32)
    hs, last = jrnn.unroll(cell, p, xs, carry)
    want_hs, want_last = np_loop(ref, p, carry, xs)
    np.testing.assert_allclose(np.asarray(hs), want_hs, rtol=1e-5, atol=1e-5)
    for a, e in zip(jax.tree.leaves(last), jax.tree.leaves(want_last)):
        np.testing.assert_allclose(np.asarray(a), e, rtol=1e-5, atol=1e-5)
    # the plain cell on the shared params computes something else: LN is really applied
    plain = {"ln-lstm": jrnn.lstm, "ln-gru": jrnn.gru}[name](H)
    shared = {k: p[k] for k in jax.eval_shape(lambda: plain.init(jax.random.key(0), D))}
    assert np.abs(np.asarray(jrnn.unroll(plain, shared, xs, carry)[0]) - want_hs).max() > 1e-2
    # token ids: LN of the gathered row, as of the one-hot product
    ids = np.random.default_rng(3).integers(0, V, (T, B)).astype(np.int32)
    pv = random_params(cell, 4, V)
    got = jrnn.unroll(cell, pv, ids, carry)[0]
    want = np_loop(ref, pv, carry, np.eye(V)[ids])[0]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", CELLS)
def test_init_gains_one_and_shifts_as_documented(name):
    cell = CELLS[name][0](H)
    p = jax.jit(cell.init, static_argnums=1)(jax.random.key(0), D)  # one compile, not one per op
    G = 4 if name == "ln-lstm" else 3
    assert p["g_x"].shape == p["g_h"].shape == (G * H,) and p["W_h"].shape == (H, G * H)
    assert np.all(np.asarray(p["g_x"]) == 1) and np.all(np.asarray(p["g_h"]) == 1)
    if name == "ln-lstm":
        assert np.all(np.asarray(p["g_c"]) == 1) and np.all(np.asarray(p["b_c"]) == 0)
        b = jrnn.lstm(H, layer_norm=True, forget_bias=1.0, init="d2l").init(jax.random.key(0), D)["b"]
        np.testing.assert_array_equal(np.asarray(b), np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)])
    assert jrnn.by_name(name[3:], H, layer_norm=True).name == name
    assert jrnn.by_name(name[3:], H, layer_norm=False).name == name[3:]
    with pytest.raises(ValueError, match="layer_norm is implemented for the lstm and gru cells, not 'rnn'"):
        jrnn.by_name("rnn", H, layer_norm=True)


@pytest.mark.parametrize("name", CELLS)
def test_gradients_match_finite_differences(name):
    with jax.enable_x64(True):
        cell = CELLS[name][0](H, dtype=jnp.float64)
        p, carry = random_params(cell, 5), random_carry(cell, 6)
        xs = jnp.asarray(np.random.default_rng(7).normal(size=(3, B, D)))  # [T, B, D]

        @jax.jit  # one compile for the many evaluations of the finite differences
        def loss(p, carry, xs):
            hs, last = jrnn.unroll(cell, p, xs, carry)
            return jnp.sum(jnp.sin(hs)) + sum(jnp.sum(c ** 2) for c in jax.tree.leaves(last))

        check_grads(loss, (p, carry, xs), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)


def _batch(seed, tokens=True):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, V, (T, B)).astype(np.int32)
    return jrnn.Batch(x, rng.integers(0, V, (T, B)).astype(np.int32))


def test_rtrl_equals_full_bptt_under_weight_drop_which_finds_W_h_and_snap1_refuses():
    model = jrnn.language_model(jrnn.lstm(H, layer_norm=True), V)
    rm = R.dropout(model, weight_drop=0.4, embedding=0.3)
    opt = jrnn.make_optimizer("sgd", 1.0, clip=None)
    b, key = _batch(1), jax.random.key(2)
    out = {}
    for spec in ("full", "rtrl"):
        est = jrnn.grads.parse(spec)
        st = jrnn.init_state(rm, opt, est, jax.random.key(0), B)
        out[spec] = jrnn.train_step(rm, opt, est, donate=False)(st, b, key)[0].params
    for a, c in zip(jax.tree.leaves(out["full"]), jax.tree.leaves(out["rtrl"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=2e-5, atol=1e-6)
    masks = jax.jit(lambda k: R.sample_masks(model, rm.regularise.rates, k, B))(
        jax.random.fold_in(key, R.MASK_STREAM))  # the step's masks
    dropped = np.asarray(masks.weight[0]) == 0
    assert masks.weight[0].shape == (H, 4 * H) and dropped.any()
    step = np.asarray(st.params["cell"]["W_h"] - out["full"]["cell"]["W_h"])  # sgd lr 1: the gradient
    assert np.all(step[dropped] == 0) and np.abs(step[~dropped]).max() > 0
    with pytest.raises(ValueError, match="snap1 needs a cell with the one-step sparsity pattern"):
        jrnn.init_state(model, opt, jrnn.grads.parse("snap1"), jax.random.key(0), B)


def test_a_stack_matches_the_numpy_layers_and_trains_with_dropout_as_jax_grad_says():
    cell = jrnn.stack([jrnn.lstm(H, layer_norm=True), jrnn.gru(H, layer_norm=True)])
    assert cell.name == "ln-lstmxln-gru"
    p = (random_params(cell.layers[0], 8, V), random_params(cell.layers[1], 9, H))
    ids = _batch(3).inputs
    carry = (random_carry(cell.layers[0], 10), random_carry(cell.layers[1], 11))
    hs, _ = jrnn.unroll(cell, p, ids, carry)
    h0, _ = np_loop(np_ln_lstm, p[0], carry[0], np.eye(V)[ids])  # layer 1 reads layer 0's h_t
    h1, _ = np_loop(np_ln_gru, p[1], carry[1], h0)
    np.testing.assert_allclose(np.asarray(hs), h1, rtol=1e-5, atol=1e-5)

    model = jrnn.language_model(cell, V)
    rm = R.dropout(model, weight_drop=0.3, recurrent=0.2, between=0.3, output=0.2)
    opt = jrnn.make_optimizer("sgd", 1.0, clip=None)
    b, key = _batch(4), jax.random.key(9)
    state = jrnn.init_state(rm, opt, jrnn.grads.full(), jax.random.key(0), B)
    masks = jax.jit(lambda k: R.sample_masks(model, rm.regularise.rates, k, B))(
        jax.random.fold_in(key, R.MASK_STREAM))  # the step's masks; jit: one compile, not one per op
    transform, trained = R.apply_masks(model, masks)
    want = jax.jit(jax.grad(lambda q: jrnn.sequence_loss(trained, transform(q), None, b)[0]))(state.params)
    new, met = jrnn.train_step(rm, opt, donate=False)(state, b, key)
    for g, p0, p1 in zip(jax.tree.leaves(want), jax.tree.leaves(state.params), jax.tree.leaves(new.params)):
        np.testing.assert_allclose(np.asarray(p0 - p1), np.asarray(g), rtol=1e-4, atol=1e-6)
    assert all(m is not None and (np.asarray(m) == 0).any() for m in [*masks.weight, masks.inputs[1],
                                                                       *masks.recurrent, masks.output])
    assert np.isfinite(float(met["loss"]))
    assert np.abs(np.asarray(want["cell"][1]["g_h"])).max() > 0  # the gains are trained


def test_the_config_flag_builds_the_layer_normalised_cells():
    parser = argparse.ArgumentParser()
    add_flags(parser)
    cfg = from_flags(parser.parse_args(["--cell", "lstm", "--layer-norm"]))
    assert cfg.model.layer_norm is True and TrainConfig.from_json(cfg.to_json()).model.layer_norm is True
    old = json.loads(TrainConfig().to_json())
    del old["model"]["layer_norm"]  # a run written before the field existed resumes without it
    assert TrainConfig.from_json(json.dumps(old)).model.layer_norm is False
    m = build_model(ModelConfig(cell="lstm", hidden=H, layers=2, layer_norm=True), V)
    assert m.cell.name == "2xln-lstm" and "g_c" in m.init(jax.random.key(0))["cell"][0]
    assert build_model(ModelConfig(cell="gru", hidden=H), V).cell.name == "gru"  # default off
    with pytest.raises(ValueError, match="not 'rnn'"):
        build_model(ModelConfig(cell="rnn", hidden=H, layer_norm=True), V)
