"""Interop: torch weights both ways (against torch's forward), Flax linen / nnx and Equinox adapters
(against jrnn.unroll with the same params: values and gradients; small models that train)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrnn
from jrnn.interop import from_torch, to_torch

T, B, D, H = 5, 3, 4, 6
KIND_CELL = {"rnn": jrnn.elman, "lstm": jrnn.lstm, "gru": jrnn.gru}


def _xs(key=0):
    return jax.random.normal(jax.random.PRNGKey(key), (T, B, D))


# ---------------------------------------------------------------------------- torch



def _torch():
    return pytest.importorskip("torch")


def _torch_module(kind, **kw):
    t = _torch()
    t.manual_seed(0)
    cls = {"rnn": t.nn.RNN, "lstm": t.nn.LSTM, "gru": t.nn.GRU}[kind]
    return cls(D, H, **kw)


def _torch_forward(mod, xs):
    t = _torch()
    with t.no_grad():
        out, _ = mod(t.from_numpy(np.asarray(xs)))
    return out.numpy()


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bias", [True, False])
def test_to_torch_forward_matches_unroll_and_round_trips(kind, bias):
    cell = KIND_CELL[kind](H)
    params = cell.init(jax.random.PRNGKey(1), D)
    if not bias:
        params = {k: (jnp.zeros_like(v) if k.startswith("b") else v) for k, v in params.items()}
    mod = _torch_module(kind, bias=bias)
    mod.load_state_dict(to_torch(kind, params, bias=bias))
    xs = _xs()
    hs, _ = jrnn.unroll(cell, params, xs)
    np.testing.assert_allclose(_torch_forward(mod, xs), hs, atol=1e-5)
    back = from_torch(kind, mod)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), back, params)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_two_layer_bidirectional_torch_module(kind):
    mod = _torch_module(kind, num_layers=2, bidirectional=True)
    xs = _xs(2)
    cell = KIND_CELL[kind](H)
    h = xs
    for layer in range(2):
        p = (from_torch(kind, mod, layer), from_torch(kind, mod, layer, direction="reverse"))
        h, _ = jrnn.bidirectional(cell, cell, p, h)
    np.testing.assert_allclose(h, _torch_forward(mod, xs), atol=1e-5)
    sd = {}
    for layer in range(2):
        for d in ("forward", "reverse"):
            sd |= to_torch(kind, from_torch(kind, mod, layer, direction=d), layer, direction=d)
    ref = mod.state_dict()
    assert sorted(sd) == sorted(ref)
    again = _torch_module(kind, num_layers=2, bidirectional=True)
    again.load_state_dict(sd)
    np.testing.assert_allclose(_torch_forward(again, xs), _torch_forward(mod, xs), atol=1e-6)


def test_stacked_module_gives_stack_params_both_ways():
    mod = _torch_module("gru", num_layers=3)
    params = from_torch("gru", mod, layer=None)
    assert isinstance(params, tuple) and len(params) == 3
    assert from_torch("gru", mod, layer=[1])["W_x"].shape == (H, 3 * H)
    cell = jrnn.stack([jrnn.gru(H)] * 3)
    xs = _xs(3)
    hs, _ = jrnn.unroll(cell, params, xs)
    np.testing.assert_allclose(hs, _torch_forward(mod, xs), atol=1e-5)
    sd = to_torch("gru", params)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b),
                 from_torch("gru", sd, layer=None), params)


def test_from_torch_errors_name_the_problem():
    sd = _torch_module("lstm").state_dict()
    with pytest.raises(ValueError, match="weight_ih_l0_reverse"):
        from_torch("lstm", sd, direction="reverse")
    with pytest.raises(ValueError, match="direction"):
        from_torch("lstm", sd, direction="backward")
    with pytest.raises(ValueError, match="layer 1"):
        from_torch("lstm", sd, layer=1)
    with pytest.raises(ValueError, match="kind"):
        to_torch("conv", {})
    with pytest.raises(ValueError, match="W_x"):
        to_torch("lstm", jrnn.elman(H).init(jax.random.PRNGKey(0), D))
    with pytest.raises(ValueError, match="nonzero biases"):
        to_torch("lstm", jrnn.lstm(H).init(jax.random.PRNGKey(0), D), bias=False)
