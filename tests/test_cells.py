"""Tests for jrnn.cells: each cell's step against independent references.

References, all written here from the documented equations and never from the
code's own output:

- NumPy (float64) versions of the docstring equations of ``elman`` (tanh and
  relu), ``lstm`` (gates ``i, f, g, o`` fused) and ``gru`` (reset-after,
  ``r, z, n``, ``b_hn`` inside ``r * (...)``);
- ``flax.linen.LSTMCell`` / ``flax.linen.GRUCell`` given the same weights;
- NumPy versions of torch's documented ``nn.RNN/LSTM/GRU`` equations, fed a fake
  torch-style ``state_dict`` through :func:`jrnn.interop.from_torch`, and
  ``torch.nn.RNN/LSTM/GRU`` modules themselves (``bias=False`` included);
- ``jax.test_util.check_grads`` (finite differences, in float64) for gradients;
- ``jax.nn.one_hot(ids, V) @ W + b`` for integer token inputs.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jrnn
from jrnn import LSTMState
from jrnn.cells import CELLS as REGISTRY
from jrnn.cells import by_name
from jrnn.interop import from_torch

D, H, B, V = 3, 5, 4, 7  # input width, hidden width, batch, vocabulary; all distinct
RTOL = ATOL = 1e-5

# registry name -> constructor(hidden_size); the names select the NumPy reference below.
CELLS = {
    "rnn": lambda h: jrnn.elman(h, activation="tanh"),
    "rnn-relu": lambda h: jrnn.elman(h, activation="relu"),
    "lstm": jrnn.lstm,
    "gru": jrnn.gru,
}
# Where each cell keeps its input matrix and the bias added in ``project`` (documented).
INPUT_PARAMS = {"rnn": ("W_xh", "b_h"), "rnn-relu": ("W_xh", "b_h"),
                "lstm": ("W_x", "b"), "gru": ("W_x", "b_x")}


# --------------------------------------------------------------------------- helpers


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def blocks(a, n):
    """Split the last axis of ``a`` into ``n`` equal gate blocks, in order."""
    return np.split(np.asarray(a, np.float64), n, axis=-1)


def np_elman(p, h, x, activation):
    """``H_t = phi(X W_xh + H W_hh + b_h)``."""
    a = x @ p["W_xh"] + h @ p["W_hh"] + p["b_h"]
    h = np.tanh(a) if activation == "tanh" else np.maximum(a, 0.0)
    return h, h


def np_lstm(p, carry, x):
    """LSTM with fused gates in the documented order ``i, f, g, o``; carry ``(h, c)``."""
    h, c = carry
    i, f, g, o = blocks(x @ p["W_x"] + h @ p["W_h"] + p["b"], 4)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
    return (h, c), h


def np_gru(p, h, x):
    """Reset-after GRU, documented order ``r, z, n``, ``b_hn`` inside ``r * (...)``."""
    xr, xz, xn = blocks(x @ p["W_x"] + p["b_x"], 3)
    hr, hz, hn = blocks(h @ p["W_h"], 3)
    r = sigmoid(xr + hr)
    z = sigmoid(xz + hz)
    n = np.tanh(xn + r * (hn + p["b_hn"]))
    h = (1.0 - z) * n + z * h
    return h, h


def np_step(name, p, carry, x):
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    x = np.asarray(x, np.float64)
    carry = jax.tree.map(lambda a: np.asarray(a, np.float64), carry)
    if name.startswith("rnn"):
        return np_elman(p, carry, x, "relu" if name == "rnn-relu" else "tanh")
    return {"lstm": np_lstm, "gru": np_gru}[name](p, carry, x)


def random_params(cell, seed, input_size, scale=0.5):
    """The cell's param structure filled with N(0, scale^2) values (biases non-zero too)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda k: cell.init(k, input_size), jax.random.key(0))
    return jax.tree.map(lambda a: jnp.asarray(scale * rng.normal(size=a.shape), a.dtype), shapes)


def random_carry(cell, seed, batch_shape):
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: cell.initial_carry(batch_shape))
    return jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype), shapes)


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def assert_trees_close(actual, expected, rtol=RTOL, atol=ATOL):
    a_leaves, a_def = jax.tree.flatten(actual)
    e_leaves, e_def = jax.tree.flatten(expected)
    assert len(a_leaves) == len(e_leaves), (a_def, e_def)
    for a, e in zip(a_leaves, e_leaves):
        assert np.shape(a) == np.shape(e)
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)


def to_x64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


# --------------------------------------------------------------------------- 1. NumPy reference


@pytest.mark.parametrize("name", CELLS)
def test_step_matches_numpy_reference(name):
    cell = CELLS[name](H)
    p = random_params(cell, 1, D)
    carry = random_carry(cell, 2, (B,))
    xs = normal(3, (3, B, D))
    ref_carry = carry
    for t in range(3):  # a few steps, feeding each its own previous carry
        carry, h = cell.apply(p, carry, xs[t])
        ref_carry, ref_h = np_step(name, p, ref_carry, xs[t])
        assert_trees_close(h, ref_h)
        assert_trees_close(tuple(carry) if name == "lstm" else carry, ref_carry)
    if name == "lstm":
        assert isinstance(carry, LSTMState)
        np.testing.assert_array_equal(carry.h, h)  # the output is the hidden state


@pytest.mark.parametrize("name", CELLS)
def test_step_is_project_then_step(name):
    cell = CELLS[name](H)
    p = random_params(cell, 2, D)
    carry = random_carry(cell, 3, (B,))
    x = normal(4, (B, D))
    assert_trees_close(cell.apply(p, carry, x), cell.step(p, carry, cell.project(p, x)))


BIG = 30.0  # saturates a sigmoid to 0 or 1 in float32


def gate_bias(values):
    """A fused bias with gate block ``k`` filled with ``values[k]``."""
    return jnp.asarray(np.repeat(np.asarray(values, np.float32), H))


def test_lstm_gate_order_is_i_f_g_o():
    """Forget open, input closed, output open: c is kept and h = tanh(c)."""
    cell = jrnn.lstm(H)
    apply = jax.jit(cell.apply)
    p = {"W_x": jnp.zeros((D, 4 * H)), "W_h": jnp.zeros((H, 4 * H)),
         "b": gate_bias([-BIG, BIG, 0.7, BIG])}  # i closed, f open, g = 0.7, o open
    c0 = normal(1, (B, H))
    h0 = normal(2, (B, H))
    carry, h = apply(p, LSTMState(h=h0, c=c0), jnp.ones((B, D)))
    np.testing.assert_allclose(carry.c, c0, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(h, np.tanh(c0), rtol=RTOL, atol=ATOL)
    # input open, forget closed, output closed: c = tanh(g), h = 0
    p["b"] = gate_bias([BIG, -BIG, 0.7, -BIG])
    carry, h = apply(p, LSTMState(h=h0, c=c0), jnp.ones((B, D)))
    np.testing.assert_allclose(carry.c, np.full((B, H), np.tanh(0.7)), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(h, 0.0, atol=ATOL)


def test_gru_gate_order_is_r_z_n_reset_after():
    cell = jrnn.gru(H)
    apply = jax.jit(cell.apply)
    w_hn = normal(1, (H, H))
    p = {"W_x": jnp.zeros((D, 3 * H)),
         "W_h": jnp.concatenate([jnp.zeros((H, 2 * H)), w_hn], -1),
         "b_x": gate_bias([0.0, BIG, 0.3]), "b_hn": jnp.full((H,), 0.2)}
    h0 = normal(2, (B, H))
    x = jnp.ones((B, D))
    # update gate z (block 1) saturated at 1: the state is kept
    np.testing.assert_allclose(apply(p, h0, x)[1], h0, rtol=RTOL, atol=ATOL)
    # z closed, reset r (block 0) closed: h = n = tanh(b_x_n), independent of h0
    p["b_x"] = gate_bias([-BIG, -BIG, 0.3])
    np.testing.assert_allclose(apply(p, h0, x)[1], np.full((B, H), np.tanh(0.3)),
                               rtol=RTOL, atol=ATOL)
    # z closed, r open: n = tanh(b_x_n + h0 W_hn + b_hn) -- b_hn and W_hn are inside r*(...)
    p["b_x"] = gate_bias([BIG, -BIG, 0.3])
    np.testing.assert_allclose(apply(p, h0, x)[1], np.tanh(0.3 + h0 @ w_hn + 0.2),
                               rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------- 2. flax


def flax_params(name, p):
    """jrnn params -> the param dict of flax.linen.LSTMCell / GRUCell."""
    if name == "lstm":
        wx, wh, b = blocks(p["W_x"], 4), blocks(p["W_h"], 4), blocks(p["b"], 4)
        out = {f"i{g}": {"kernel": wx[k]} for k, g in enumerate("ifgo")}
        out.update({f"h{g}": {"kernel": wh[k], "bias": b[k]} for k, g in enumerate("ifgo")})
    else:
        wx, wh, bx = blocks(p["W_x"], 3), blocks(p["W_h"], 3), blocks(p["b_x"], 3)
        out = {f"i{g}": {"kernel": wx[k], "bias": bx[k]} for k, g in enumerate("rzn")}
        out.update({f"h{g}": {"kernel": wh[k]} for k, g in enumerate("rz")})
        out["hn"] = {"kernel": wh[2], "bias": np.asarray(p["b_hn"], np.float64)}
    return {"params": jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), out)}


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_matches_flax_cell(name):
    cell = CELLS[name](H)
    fcell = nn.LSTMCell(features=H) if name == "lstm" else nn.GRUCell(features=H)
    p = random_params(cell, 5, D)
    fp = flax_params(name, p)
    # the mapping covers exactly flax's own parameter tree (names, shapes, biases)
    flax_shapes = jax.eval_shape(
        lambda k: fcell.init(k, fcell.initialize_carry(k, (B, D)), jnp.ones((B, D))),
        jax.random.key(0))
    assert jax.tree.map(jnp.shape, fp) == jax.tree.map(lambda a: a.shape, flax_shapes)

    carry = random_carry(cell, 6, (B,))
    fcarry = (carry.c, carry.h) if name == "lstm" else carry  # flax's LSTM carry is (c, h)
    xs = normal(7, (3, B, D))
    apply, fapply = jax.jit(cell.apply), jax.jit(fcell.apply)
    for t in range(3):
        carry, h = apply(p, carry, xs[t])
        fcarry, fh = fapply(fp, fcarry, xs[t])
        assert_trees_close(h, fh)
        assert_trees_close((carry.c, carry.h) if name == "lstm" else carry, fcarry)


# --------------------------------------------------------------------------- 3. from_torch


def torch_rnn(sd, h, x, nonlinearity):
    a = x @ sd["weight_ih_l0"].T + sd["bias_ih_l0"] + h @ sd["weight_hh_l0"].T + sd["bias_hh_l0"]
    h = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0.0)
    return h, h


def torch_lstm(sd, carry, x):
    h, c = carry
    gates = x @ sd["weight_ih_l0"].T + sd["bias_ih_l0"] + h @ sd["weight_hh_l0"].T + sd["bias_hh_l0"]
    i, f, g, o = np.split(gates, 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
    return (h, c), h


def torch_gru(sd, h, x):
    """torch.nn.GRU: n = tanh(W_in x + b_in + r * (W_hn h + b_hn))."""
    i_r, i_z, i_n = np.split(x @ sd["weight_ih_l0"].T + sd["bias_ih_l0"], 3, axis=-1)
    h_r, h_z, h_n = np.split(h @ sd["weight_hh_l0"].T + sd["bias_hh_l0"], 3, axis=-1)
    r = sigmoid(i_r + h_r)
    z = sigmoid(i_z + h_z)
    n = np.tanh(i_n + r * h_n)
    h = (1.0 - z) * n + z * h
    return h, h


def torch_state_dict(gates, rng, layers=1):
    sd = {}
    for l in range(layers):
        d = D if l == 0 else H
        sd.update({f"weight_ih_l{l}": rng.normal(size=(gates * H, d)).astype(np.float32) * 0.5,
                   f"weight_hh_l{l}": rng.normal(size=(gates * H, H)).astype(np.float32) * 0.5,
                   f"bias_ih_l{l}": rng.normal(size=(gates * H,)).astype(np.float32) * 0.5,
                   f"bias_hh_l{l}": rng.normal(size=(gates * H,)).astype(np.float32) * 0.5})
    return sd


TORCH = {  # name -> (from_torch kind, gates, reference step)
    "rnn": ("rnn", 1, lambda sd, c, x: torch_rnn(sd, c, x, "tanh")),
    "rnn-relu": ("rnn-relu", 1, lambda sd, c, x: torch_rnn(sd, c, x, "relu")),
    "lstm": ("lstm", 4, torch_lstm),
    "gru": ("gru", 3, torch_gru),
}


@pytest.mark.parametrize("name", CELLS)
def test_from_torch_matches_torch_equations(name):
    kind, gates, ref_step = TORCH[name]
    sd = torch_state_dict(gates, np.random.default_rng(0))
    sd64 = {k: v.astype(np.float64) for k, v in sd.items()}
    cell = CELLS[name](H)
    p = from_torch(kind, sd)
    assert jax.tree.map(jnp.shape, p) == jax.tree.map(jnp.shape, random_params(cell, 0, D))
    carry = random_carry(cell, 8, (B,))
    ref_carry = jax.tree.map(lambda a: np.asarray(a, np.float64), tuple(carry) if name == "lstm"
                             else carry)
    xs = np.random.default_rng(1).normal(size=(3, B, D)).astype(np.float32)
    for t in range(3):
        carry, h = cell.apply(p, carry, xs[t])
        ref_carry, ref_h = ref_step(sd64, ref_carry, xs[t].astype(np.float64))
        assert_trees_close(h, ref_h)
        assert_trees_close(tuple(carry) if name == "lstm" else carry, ref_carry)


def test_from_torch_picks_layer_and_rejects_unknown_kind():
    sd = torch_state_dict(4, np.random.default_rng(0), layers=2)
    p1 = from_torch("lstm", sd, layer=1)
    np.testing.assert_array_equal(p1["W_x"], sd["weight_ih_l1"].T)
    np.testing.assert_array_equal(p1["W_h"], sd["weight_hh_l1"].T)
    np.testing.assert_allclose(p1["b"], sd["bias_ih_l1"] + sd["bias_hh_l1"], rtol=RTOL)
    with pytest.raises(ValueError, match="rnn_tanh"):
        from_torch("rnn_tanh", sd)
    with pytest.raises(ValueError, match=r"kind must be one of rnn, rnn-relu, lstm, gru, got 'elman'"):
        from_torch("elman", sd)  # one name per cell: the registry's
    with pytest.raises(ValueError, match=r"state_dict has no weight_ih_l2, weight_hh_l2 \(layer 2\)"):
        from_torch("lstm", sd, layer=2)
    with pytest.raises(ValueError, match=r"'gru' weights are weight_ih \[3\*H, D\]"):
        from_torch("gru", sd)  # LSTM weights
    assert jrnn.cells.from_torch is from_torch  # the old import path still works


TORCH_MODULES = {"rnn": "RNN", "rnn-relu": "RNN", "lstm": "LSTM", "gru": "GRU"}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("kind", TORCH_MODULES)
def test_from_torch_matches_torch_modules(kind, bias):
    """Two-layer torch modules (``bias=False`` too), read through ``named_parameters()``
    (tensors that require grad) and the module itself, against the module's own outputs."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    kw = {"nonlinearity": "relu"} if kind == "rnn-relu" else {}
    module = getattr(torch.nn, TORCH_MODULES[kind])(D, H, num_layers=2, bias=bias, **kw)
    x = torch.randn(6, B, D)
    with torch.no_grad():
        ref = module(x)[0].numpy()
    assert all(p.requires_grad for p in module.parameters())
    params = tuple(from_torch(kind, module.named_parameters(), layer=l) for l in range(2))
    same = from_torch(kind, module, layer=1)
    assert_trees_close(same, params[1], rtol=0, atol=0)
    if not bias:
        assert all(not np.any(np.asarray(a)) for k, a in params[0].items() if k.startswith("b"))
    cell = jrnn.stack([by_name(kind, H), by_name(kind, H)])
    hs, _ = jrnn.unroll(cell, params, jnp.asarray(x.numpy()))
    assert_trees_close(hs, ref)


# --------------------------------------------------------------------------- 4. gradients# --------------------------------------------------------------------------- 4. gradients


@pytest.mark.parametrize("name", CELLS)
def test_step_grads(name):
    cell = CELLS[name](H)
    with jax.enable_x64(True):
        p = to_x64(random_params(cell, 9, D))
        carry = to_x64(random_carry(cell, 10, (2,)))
        x = to_x64(normal(11, (2, D)))
        check_grads(jax.jit(cell.apply), (p, carry, x), order=1, modes=["fwd", "rev"],
                    eps=1e-3, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- 5. project


@pytest.mark.parametrize("name, vocab", [*[(name, V) for name in CELLS], ("lstm", 300)])
def test_project_token_ids_equal_one_hot_product(name, vocab):
    cell = CELLS[name](H)
    p = random_params(cell, 12, vocab)
    ids = jnp.asarray(np.random.default_rng(13).integers(0, vocab, (6, B)), jnp.int32)
    ids = ids.at[0, 0].set(0).at[-1, -1].set(vocab - 1)  # both ends of the vocabulary
    w, b = INPUT_PARAMS[name]
    one_hot = jax.nn.one_hot(ids, vocab)
    np.testing.assert_allclose(cell.project(p, ids), one_hot @ p[w] + p[b], rtol=RTOL, atol=ATOL)
    # the same derivatives as the one-hot product, in both modes
    g = normal(18, (6, B, p[b].shape[0]))
    grad_ids = jax.grad(lambda p: jnp.sum(cell.project(p, ids) * g))(p)
    grad_one_hot = jax.grad(lambda p: jnp.sum((one_hot @ p[w] + p[b]) * g))(p)
    assert_trees_close(grad_ids, grad_one_hot)
    dp = random_params(cell, 19, vocab)
    np.testing.assert_allclose(jax.jvp(lambda p: cell.project(p, ids), (p,), (dp,))[1],
                               one_hot @ dp[w] + dp[b], rtol=RTOL, atol=ATOL)
    # and a whole step on ids equals the step on the one-hot floats
    carry = random_carry(cell, 14, (B,))
    assert_trees_close(cell.apply(p, carry, ids[0]), cell.apply(p, carry, one_hot[0]))


@pytest.mark.parametrize("bad", [-3, V, V + 5])
@pytest.mark.parametrize("name", CELLS)
def test_project_rejects_out_of_range_ids(name, bad):
    cell = CELLS[name](H)
    p = random_params(cell, 0, V)
    ids = np.zeros((4, B), np.int32)
    ids[2, 1] = bad
    with pytest.raises(ValueError, match=f"token id {bad}") as e:
        cell.project(p, ids)
    assert str(V) in str(e.value)


@pytest.mark.parametrize("name", CELLS)
def test_project_rejects_wrong_float_width(name):
    cell = CELLS[name](H)
    p = random_params(cell, 0, D)
    with pytest.raises(ValueError) as e:
        cell.project(p, jnp.ones((4, B, D + 2)))
    msg = str(e.value)
    assert str(D + 2) in msg and str(D) in msg, msg


# --------------------------------------------------------------------------- 11. bad arguments

CONSTRUCTORS = {"elman": jrnn.elman, "lstm": jrnn.lstm, "gru": jrnn.gru}


@pytest.mark.parametrize("size", [0, -1])
@pytest.mark.parametrize("ctor", CONSTRUCTORS)
def test_rejects_bad_hidden_size(ctor, size):
    with pytest.raises(ValueError, match="hidden_size"):
        CONSTRUCTORS[ctor](size)


@pytest.mark.parametrize("ctor", CONSTRUCTORS)
def test_rejects_unknown_init(ctor):
    with pytest.raises(ValueError, match="xavier"):
        CONSTRUCTORS[ctor](H, init="xavier")


def test_rejects_unknown_activation():
    with pytest.raises(ValueError, match="sigmoid"):
        jrnn.elman(H, activation="sigmoid")


@pytest.mark.parametrize("cells", [[], (), ["lstm"]])
def test_stack_rejects_empty_or_non_cells(cells):
    with pytest.raises(TypeError):
        jrnn.stack(cells)


# --------------------------------------------------------------------------- 11b. registry, capabilities


def test_registry_names_are_the_cells_names():
    assert list(REGISTRY) == ["rnn", "rnn-relu", "lstm", "gru"]
    for name in REGISTRY:
        cell = by_name(name, H)
        assert cell.name == name and cell.hidden_size == H
        assert cell.apply(random_params(cell, 0, D), cell.initial_carry((B,)), jnp.ones((B, D)))[1].shape == (B, H)
    assert by_name("lstm", H, forget_bias=1.0).init(jax.random.key(0), D)["b"][H] > 0.5  # kwargs reach the constructor
    assert by_name("rnn-relu", H).name == jrnn.elman(H, "relu").name == "rnn-relu"
    assert jrnn.stack([by_name("lstm", H), by_name("lstm", H)]).name == "2xlstm"
    assert jrnn.stack([by_name("rnn", H), by_name("gru", H)]).name == "rnnxgru"


def test_unknown_cell_name_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown cell 'elman'; choose from rnn, rnn-relu, lstm, gru"):
        by_name("elman", H)


@pytest.mark.parametrize("name, blocks", [("rnn", 1), ("rnn-relu", 1), ("lstm", 2), ("gru", 1)])
def test_capabilities_are_declared_fields(name, blocks):
    cell = by_name(name, H)
    assert isinstance(cell.fast, jrnn.cells.FastRecurrence) and cell.layers is None
    assert cell.unit_blocks == blocks
    p, carry, x = random_params(cell, 1, D), random_carry(cell, 2, (B,)), normal(3, (B, D))
    xp = cell.project(p, x)
    assert_trees_close(cell.fast.step(p, carry, xp), cell.step(p, carry, xp))  # the rule describes step
    deep = jrnn.stack([cell, by_name("gru", H)])
    assert deep.layers == (cell, deep.layers[1]) and deep.fast is None and deep.unit_blocks is None
    plain = jrnn.Cell(cell.init, cell.initial_carry, cell.project, cell.step, H, "mine")
    assert (plain.fast, plain.layers, plain.unit_blocks) == (None, None, None)  # all optional


# --------------------------------------------------------------------------- 12. unbatched / vmap


@pytest.mark.parametrize("name", [*CELLS, "stack"])
def test_unbatched_step_and_vmap(name):
    cell = jrnn.stack([jrnn.lstm(H), jrnn.gru(4)]) if name == "stack" else CELLS[name](H)
    p = random_params(cell, 15, D)
    c0, cb = cell.initial_carry(()), cell.initial_carry((B,))
    assert jax.tree.structure(c0) == jax.tree.structure(cb)
    for a, b in zip(jax.tree.leaves(c0), jax.tree.leaves(cb)):
        assert a.ndim == 1 and b.shape == (B,) + a.shape
        np.testing.assert_array_equal(a, 0.0)

    carry = random_carry(cell, 16, (B,))
    x = normal(17, (B, D))
    batched = cell.apply(p, carry, x)
    # one unbatched example equals its row of the batched step
    one = cell.apply(p, jax.tree.map(lambda a: a[1], carry), x[1])
    assert one[1].shape == (cell.hidden_size,)
    assert_trees_close(one, jax.tree.map(lambda a: a[1], batched))
    # vmap of the unbatched step equals the batched step
    assert_trees_close(jax.jit(jax.vmap(cell.apply, in_axes=(None, 0, 0)))(p, carry, x), batched)


# --------------------------------------------------------------------------- 14. public API


def test_public_names_exist():
    assert len(set(jrnn.__all__)) == len(jrnn.__all__)
    missing = [n for n in jrnn.__all__ if not hasattr(jrnn, n)]
    assert not missing, missing
    for n in ["Cell", "LSTMState", "elman", "lstm", "gru", "stack", "from_torch",
              "check_token_ids", "unroll", "bidirectional"]:
        assert n in jrnn.__all__
