"""oneDNN's fused RNN primitives (``jrnn.onednn``) equal jrnn's XLA path: values and gradients.

Skipped, with the reason, when oneDNN (``pip install jrnn[onednn]``) or a C++
compiler is missing.
"""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn

onednn = pytest.importorskip("jrnn.onednn")
if not onednn.available():
    pytest.skip(f"oneDNN unavailable: {onednn.unavailable_reason()}", allow_module_level=True)

TOL = {"rtol": 1e-5, "atol": 1e-5}
H, D, V = 8, 5, 7
CELLS = {"rnn": jrnn.elman, "lstm": jrnn.lstm, "gru": jrnn.gru}


def _setup(name, T, B, ids=False, seed=0):
    cell = CELLS[name](H)
    k = jax.random.split(jax.random.key(seed), 4)
    params = cell.init(k[0], V if ids else D)
    if ids:
        xs = jax.random.randint(k[1], (T, B), 0, V)
    else:
        xs = jax.random.normal(k[1], (T, B, D), jnp.float32)
    leaves, tree = jax.tree.flatten(cell.initial_carry((B,)))
    carry = jax.tree.unflatten(tree, [0.5 * jax.random.normal(kk, a.shape, a.dtype) for kk, a
                                      in zip(jax.random.split(k[2], len(leaves)), leaves)])
    return cell, params, xs, carry


def _loss(run, cell, reverse):
    def loss(params, xs, carry):
        hs, final = run(cell, params, xs, carry, reverse=reverse)
        w = jnp.linspace(-1.0, 1.0, hs.size).reshape(hs.shape)  # distinct weight per output
        out = jnp.sum(w * jnp.sin(hs))
        for i, leaf in enumerate(jax.tree.leaves(final)):
            out = out + (0.3 + 0.2 * i) * jnp.sum(jnp.cos(leaf))
        return out
    return loss


def assert_close(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **TOL)


def assert_matches_xla(name, T, B, reverse, ids=False, jit=False):
    cell, params, xs, carry = _setup(name, T, B, ids=ids)
    fwd_o = lambda p, x, c: onednn.recurrence(cell, p, x, c, reverse=reverse)
    fwd_x = lambda p, x, c: jrnn.unroll(cell, p, x, c, reverse=reverse)
    argnums = (0, 2) if ids else (0, 1, 2)  # ids have no gradient
    g_o = jax.grad(_loss(onednn.recurrence, cell, reverse), argnums=argnums)
    g_x = jax.grad(_loss(jrnn.unroll, cell, reverse), argnums=argnums)
    if jit:
        fwd_o, g_o = jax.jit(fwd_o), jax.jit(g_o)
    assert_close(fwd_o(params, xs, carry), fwd_x(params, xs, carry))
    assert_close(g_o(params, xs, carry), g_x(params, xs, carry))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("T,B", [(6, 3), (1, 3), (5, 1)])
def test_values_and_gradients_equal_the_xla_path(name, T, B, reverse):
    assert_matches_xla(name, T, B, reverse)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", list(CELLS))
def test_token_ids_equal_the_xla_path(name, reverse):
    assert_matches_xla(name, 4, 2, reverse, ids=True)


@pytest.mark.parametrize("name", list(CELLS))
def test_under_jit(name):
    assert_matches_xla(name, 6, 2, reverse=False, jit=True)
    assert_matches_xla(name, 1, 1, reverse=True, ids=True, jit=True)


def test_carry_format_and_default_carry():
    cell, params, xs, _ = _setup("lstm", 4, 2)
    hs, final = onednn.recurrence(cell, params, xs)
    assert isinstance(final, jrnn.LSTMState) and hs.shape == (4, 2, H)
    assert_close((hs, final), jrnn.unroll(cell, params, xs))
    np.testing.assert_allclose(np.asarray(final.h), np.asarray(hs[-1]), **TOL)


def test_repeated_calls_reuse_and_stay_equal():
    cell, params, xs, carry = _setup("gru", 5, 2)
    first = onednn.recurrence(cell, params, xs, carry)
    for _ in range(3):
        assert_close(onednn.recurrence(cell, params, xs, carry), first)


def test_vmap_runs_sequentially_and_matches():
    cell, params, _, carry = _setup("lstm", 4, 2)
    xss = jax.random.normal(jax.random.key(5), (3, 4, 2, D))
    got = jax.vmap(lambda x: onednn.recurrence(cell, params, x, carry))(xss)
    want = jax.vmap(lambda x: jrnn.unroll(cell, params, x, carry))(xss)
    assert_close(got, want)


def assert_refused(cell, params, xs, match, **kw):
    with pytest.raises(ValueError, match=match):
        onednn.recurrence(cell, params, xs, **kw)


def test_unsupported_cases_are_refused():
    xs = jnp.ones((3, 2, D))
    for cell in (jrnn.lstm(H, layer_norm=True), jrnn.gru(H, layer_norm=True),
                 jrnn.elman(H, activation="relu"), jrnn.leaky(H)):
        assert_refused(cell, cell.init(jax.random.key(0), D), xs, "not supported")
    st = jrnn.stack([jrnn.lstm(H), jrnn.lstm(H)])
    assert_refused(st, st.init(jax.random.key(0), D), xs, "stacks")
    cell = jrnn.lstm(H)
    p = cell.init(jax.random.key(0), D)
    assert_refused(cell, p, xs, "lengths", lengths=jnp.array([3, 2]))
    assert_refused(cell, p, jnp.ones((3, D)), "one batch dim")
    assert_refused(cell, p, jnp.ones((3, 2, 2, D)), "one batch dim")
    assert_refused(cell, p, jnp.ones((3, 2, D + 1)), "input_size")
    assert_refused(cell, p, xs, "LSTMState", carry=(jnp.zeros((2, H)), jnp.zeros((2, H))))
    assert_refused(cell, p, xs, "shape", carry=jrnn.LSTMState(jnp.zeros((3, H)), jnp.zeros((3, H))))
    with pytest.raises(ValueError, match="outside"):
        onednn.recurrence(cell, cell.init(jax.random.key(0), V), jnp.array([[0, V]]))


def test_float64_is_refused():
    cell = jrnn.elman(H)
    with jax.enable_x64(True):
        p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), cell.init(jax.random.key(0), D))
        assert_refused(cell, p, jnp.ones((3, 2, D), jnp.float32), "float32")
        p32 = cell.init(jax.random.key(0), D)
        assert_refused(cell, p32, jnp.ones((3, 2, D), jnp.float64), "float64")


def test_module_entry_point_builds_and_says_where():
    out = subprocess.run([sys.executable, "-m", "jrnn.onednn"], capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert str(onednn.library_path()) in out.stdout


def test_calls_from_several_threads_agree():
    """XLA runs the handlers on any worker thread; primitives are created on another one."""
    from concurrent.futures import ThreadPoolExecutor

    cell, params, xs, carry = _setup("lstm", 5, 2)
    want = jrnn.unroll(cell, params, xs, carry)
    grad = jax.grad(_loss(onednn.recurrence, cell, False))
    g_want = jax.grad(_loss(jrnn.unroll, cell, False))(params, xs, carry)
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: (onednn.recurrence(cell, params, xs, carry),
                                        grad(params, xs, carry)), range(8)))
    for got, g in outs:
        assert_close(got, want)
        assert_close(g, g_want)


def test_the_backward_leaves_its_residuals_intact():
    """One forward, its VJP applied twice: the workspace is read, not overwritten."""
    cell, params, xs, carry = _setup("gru", 4, 2)
    out, vjp = jax.vjp(lambda p: onednn.recurrence(cell, p, xs, carry), params)
    ct = jax.tree.map(jnp.ones_like, out)
    assert_close(vjp(ct), vjp(ct))
    assert_close(vjp(ct), jax.vjp(lambda p: jrnn.unroll(cell, p, xs, carry), params)[1](ct))
