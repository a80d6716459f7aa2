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
        out, _ = mod(t.from_numpy(np.array(xs)))
    return out.numpy()


@pytest.mark.parametrize("kind, bias", [("rnn", True), ("lstm", True), ("gru", True),
                                        ("gru", False)])
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


@pytest.mark.parametrize("kind", ["lstm"])  # gru: the stacked test
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


# ---------------------------------------------------------------------------- flax

CELLS = {"lstm": lambda: jrnn.lstm(H), "gru": lambda: jrnn.gru(H), "rnn": lambda: jrnn.elman(H),
         "stack": lambda: jrnn.stack([jrnn.gru(H), jrnn.lstm(H)])}


def _loss_of_hs(hs):
    return jnp.sum(jnp.sin(hs) ** 2)


def _unroll_loss(cell, params, xs):
    return _loss_of_hs(jrnn.unroll(cell, params, xs)[0])


def _assert_trees_close(a, b, atol=1e-5):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=atol, rtol=1e-5), a, b)


@pytest.mark.parametrize("name", ["lstm", "stack"])  # gru: the token-id test; rnn: torch's
def test_linen_rnn_equals_unroll_values_and_grads(name):
    import flax.linen as nn

    from jrnn.interop_flax import LinenCell
    cell, xs = CELLS[name](), _xs(4)
    rnn = nn.RNN(LinenCell(cell), time_major=True)
    variables = rnn.init(jax.random.PRNGKey(0), xs)
    params = variables["params"]["cell"]["cell"]
    assert jax.tree.structure(params) == jax.tree.structure(cell.init(jax.random.PRNGKey(0), D))
    _assert_trees_close(rnn.apply(variables, xs), jrnn.unroll(cell, params, xs)[0])
    g_linen = jax.grad(lambda v: _loss_of_hs(rnn.apply(v, xs)))(variables)
    _assert_trees_close(g_linen["params"]["cell"]["cell"],
                        jax.grad(lambda p: _unroll_loss(cell, p, xs))(params))


def test_linen_cell_takes_token_ids():
    import flax.linen as nn

    from jrnn.interop_flax import LinenCell
    cell, ids = jrnn.gru(H), jax.random.randint(jax.random.PRNGKey(0), (B, T), 0, 7)
    rnn = nn.RNN(LinenCell(cell, vocab_size=7))  # batch-major [B, T]
    v = rnn.init(jax.random.PRNGKey(1), ids)
    hs, _ = jrnn.unroll(cell, v["params"]["cell"]["cell"], ids, time_major=False)
    _assert_trees_close(rnn.apply(v, ids), hs)


def _sine_task(n=16):
    t = jnp.linspace(0, 4 * jnp.pi, T + 1)
    phase = jax.random.uniform(jax.random.PRNGKey(5), (n, 1)) * 2 * jnp.pi
    s = jnp.sin(t[None, :] + phase)[..., None]  # [n, T+1, 1]
    return s[:, :-1], s[:, 1:]  # predict the next value, batch-major


def _train(loss_fn, params, steps=60):
    opt = optax.adam(3e-2)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        loss, g = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(g, state, params)
        return optax.apply_updates(params, updates), state, loss

    first = None
    for _ in range(steps):
        params, state, loss = step(params, state)
        first = loss if first is None else first
    return float(first), float(loss_fn(params))


def test_flax_model_with_linen_cell_trains():
    import flax.linen as nn

    from jrnn.interop_flax import LinenCell

    class Model(nn.Module):  # as one would write with nn.LSTMCell
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(nn.RNN(LinenCell(jrnn.lstm(8)))(x))

    x, y = _sine_task()
    model = Model()
    variables = model.init(jax.random.PRNGKey(0), x)
    first, last = _train(lambda v: jnp.mean((model.apply(v, x) - y) ** 2), variables)
    assert last < 0.5 * first


@pytest.mark.parametrize("name", ["stack"])  # a tuple of gru and lstm params
def test_nnx_cell_equals_pure_cell_values_and_grads(name):
    from flax import nnx

    from jrnn.interop_flax import NnxCell
    cell, xs = CELLS[name](), _xs(6)
    mod = NnxCell(cell, D, rngs=nnx.Rngs(0))
    params = mod.cell_params()
    assert jax.tree.structure(params) == jax.tree.structure(cell.init(jax.random.PRNGKey(0), D))
    _assert_trees_close(mod.unroll(xs)[0], jrnn.unroll(cell, params, xs)[0])
    carry, h = mod(mod.initial_carry((B,)), xs[0])
    _assert_trees_close((carry, h), cell.apply(params, cell.initial_carry((B,)), xs[0]))
    g = nnx.grad(lambda m: _loss_of_hs(m.unroll(xs)[0]))(mod)
    g_ref = jax.grad(lambda p: _unroll_loss(cell, p, xs))(params)
    _assert_trees_close(jax.tree.leaves(g["params"]), jax.tree.leaves(g_ref))  # same key order


def test_adapters_refuse_a_non_cell():
    import flax.linen as nn

    from jrnn.interop_flax import LinenCell
    with pytest.raises(TypeError, match="jrnn Cell"):
        nn.RNN(LinenCell("lstm"))


# ---------------------------------------------------------------------------- equinox

def test_interop_eqx_without_equinox_names_the_extra(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "equinox", None)  # import equinox -> ImportError
    monkeypatch.delitem(sys.modules, "jrnn.interop_eqx", raising=False)
    with pytest.raises(ImportError, match=r"jrnn\[equinox\]"):
        import jrnn.interop_eqx  # noqa: F401


def test_eqx_cell_equals_pure_cell_values_and_grads():
    eqx = pytest.importorskip("equinox")
    from jrnn.interop_eqx import EqxCell
    cell, xs = CELLS["lstm"](), _xs(7)
    mod = EqxCell(cell, D, key=jax.random.PRNGKey(0))
    params = mod.params
    _assert_trees_close(params, cell.init(jax.random.PRNGKey(0), D))
    _assert_trees_close(mod.unroll(xs)[0], jrnn.unroll(cell, params, xs)[0])
    _assert_trees_close(mod(mod.initial_carry((B,)), xs[0]),
                        cell.apply(params, cell.initial_carry((B,)), xs[0]))
    g = eqx.filter_grad(lambda m: _loss_of_hs(m.unroll(xs)[0]))(mod)
    _assert_trees_close(g.params, jax.grad(lambda p: _unroll_loss(cell, p, xs))(params))
    with pytest.raises(TypeError, match="jrnn Cell"):
        EqxCell(jrnn.lstm, D, key=jax.random.PRNGKey(0))  # the constructor, not a cell


def test_equinox_model_with_jrnn_cell_trains():
    eqx = pytest.importorskip("equinox")
    from jrnn.interop_eqx import EqxCell

    class Model(eqx.Module):
        rnn: EqxCell
        head: eqx.nn.Linear

        def __init__(self, key):
            k1, k2 = jax.random.split(key)
            self.rnn, self.head = EqxCell(jrnn.gru(8), 1, key=k1), eqx.nn.Linear(8, 1, key=k2)

        def __call__(self, x):  # [B, T, 1] -> [B, T, 1]
            hs, _ = self.rnn.unroll(x, time_major=False)
            return hs @ self.head.weight.T + self.head.bias

    x, y = _sine_task()
    model = Model(jax.random.PRNGKey(0))
    first, last = _train(lambda m: jnp.mean((m(x) - y) ** 2), model)
    assert last < 0.5 * first


def test_readme_flax_example_runs_and_learns():
    """The README's "Compose it yourself" block, run as written in a fresh interpreter."""
    import pathlib
    import re
    import subprocess
    import sys

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme[readme.index("Compose it yourself"):], re.S).group(1)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split()[-1]) < 0.01, out.stdout


def test_to_torch_refuses_a_layer_normalised_cell_instead_of_dropping_its_gains():
    p = jrnn.lstm(4, layer_norm=True).init(jax.random.key(0), 3)
    with pytest.raises(ValueError, match=r"no place for: \['b_c', 'g_c', 'g_h', 'g_x'\]"):
        to_torch("lstm", p, tensors=False)
    assert set(to_torch("lstm", jrnn.lstm(4).init(jax.random.key(0), 3), tensors=False)) == {
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"}
