"""The fast recurrence path of ``unroll`` (``jrnn._fast``) against plain references.

``unroll`` runs every cell that supplies ``Cell.fast`` (a
:class:`jrnn.cells.FastRecurrence`: the ``elman``/``lstm``/``gru`` cells, and a
user-defined leaky cell written below) through a ``jax.custom_jvp`` with a
hand-written tangent rule (weight term of all steps as one product, a lean
tangent scan). These tests check that it computes exactly what plain
autodiff computes:

- against a plain Python loop over ``cell.step`` on each sequence alone (its
  own length, flipped by hand for ``reverse``), differentiated with
  ``jax.grad`` / ``jax.jvp`` -- values, reverse-mode and forward-mode
  derivatives w.r.t. params, initial carry and inputs, in float64;
- against the plain ``lax.scan`` path (``unroll(..., fast_path=False)``);
- stacks, which ``unroll`` runs layer by layer (each layer on the fast path),
  in every test over ``CELLS``: a 3-layer lstm/gru/elman stack against the Python loop
  over the stacked step;
- second derivatives (``check_grads`` order 2), vmapped params (``seeds``),
  token-id inputs (against one-hot float inputs), and that hooks and
  checkpointing fall back to the plain path.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jrnn
from jrnn.cells import Cell, FastRecurrence

T, B, D, H = 7, 3, 4, 5
LENGTHS = np.array([7, 2, 5])
F64 = jnp.float64  # the tests run in float64 (x64 fixture); the cells are built for it
CELLS = {
    "rnn": lambda: jrnn.elman(H, "tanh", dtype=F64),
    "rnn-relu": lambda: jrnn.elman(H, "relu", dtype=F64),
    "lstm": lambda: jrnn.lstm(H, dtype=F64),
    "gru": lambda: jrnn.gru(H, dtype=F64),
    # a stack runs layer by layer, each layer on the fast path (unroll._unroll_layers)
    "stack": lambda: jrnn.stack([jrnn.lstm(H, dtype=F64), jrnn.gru(H, dtype=F64), jrnn.elman(H, dtype=F64)]),
}
OPTS = [{}, {"reverse": True}, {"lengths": LENGTHS}, {"lengths": LENGTHS, "reverse": True}]
OPT_IDS = ["plain", "reverse", "lengths", "lengths-reverse"]


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def f64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


def setup(name, seed=0, batch=(B,)):
    cell = CELLS[name]()
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda a: jnp.asarray(0.6 * rng.normal(size=a.shape)),
                          jax.eval_shape(lambda k: cell.init(k, D), jax.random.key(0)))
    carry = jax.tree.map(lambda a: jnp.asarray(0.5 * rng.normal(size=a.shape)),
                         jax.eval_shape(lambda: cell.initial_carry(batch)))
    xs = jnp.asarray(rng.normal(size=(T, *batch, D)))
    return cell, f64(params), f64(carry), xs


def reference(cell, params, xs, carry, lengths=None, reverse=False):
    """Python loop over ``cell.step`` on each sequence alone; the documented semantics of unroll."""
    n = xs.shape[1]
    lengths = np.full(n, xs.shape[0]) if lengths is None else np.asarray(lengths)
    hs, finals = [], []
    for b in range(n):
        c = jax.tree.map(lambda a: a[b], carry)
        L = int(lengths[b])
        order = range(L - 1, -1, -1) if reverse else range(L)
        out = [None] * xs.shape[0]
        for t in order:
            c, h = cell.step(params, c, cell.project(params, xs[t, b]))
            out[t] = h
        zero = jnp.zeros_like(out[order[0]])
        hs.append(jnp.stack([o if o is not None else zero for o in out]))
        finals.append(c)
    return jnp.stack(hs, 1), jax.tree.map(lambda *a: jnp.stack(a), *finals)


def objective(run, w):
    """A scalar that weighs every output and every carry leaf differently."""
    def f(params, carry, xs):
        hs, c = run(params, carry, xs)
        return jnp.sum(jnp.sin(hs) * w) + sum(jnp.sum(jnp.cos(l) * (i + 1))
                                              for i, l in enumerate(jax.tree.leaves(c)))
    return f


def assert_close(a, b, tol=1e-10):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol),
                 a, b)


# the eager Python loop is slow: plain and lengths+reverse here; every option of the four
# against the (compiled) plain scan below. rnn-relu is the rnn's code with another activation:
# plain only
@pytest.mark.parametrize("name,opts", [(n, o) for n in CELLS for o in (OPTS[0], OPTS[3])
                                       if n != "rnn-relu" or o is OPTS[0]],
                         ids=[f"{n}-{i}" for n in CELLS for i in (OPT_IDS[0], OPT_IDS[3])
                              if n != "rnn-relu" or i == OPT_IDS[0]])
def test_values_and_gradients_match_python_loop(name, opts):
    cell, params, carry, xs = setup(name)
    assert cell.fast is not None or cell.layers is not None  # the fast path is taken
    w = jnp.asarray(np.random.default_rng(9).normal(size=(T, B, H)))
    fast = objective(lambda p, c, x: jrnn.unroll(cell, p, x, c, **opts), w)
    ref = objective(lambda p, c, x: reference(cell, p, x, c, **opts), w)
    hs, c = jrnn.unroll(cell, params, xs, carry, **opts)
    hs_r, c_r = reference(cell, params, xs, carry, **opts)
    assert_close((hs, c), (hs_r, c_r))
    assert_close(fast(params, carry, xs), ref(params, carry, xs))
    assert_close(jax.grad(fast, argnums=(0, 1, 2))(params, carry, xs),
          jax.grad(ref, argnums=(0, 1, 2))(params, carry, xs))
    tangents = setup(name, seed=1)[1:]
    assert_close(jax.jvp(fast, (params, carry, xs), tangents), jax.jvp(ref, (params, carry, xs), tangents))


@pytest.mark.parametrize("name,opts", [(n, o) for n in CELLS for o in OPTS
                                       if n != "rnn-relu" or o is OPTS[3]],
                         ids=[f"{n}-{i}" for n in CELLS for i in OPT_IDS
                              if n != "rnn-relu" or i == OPT_IDS[3]])
def test_fast_path_equals_plain_scan(name, opts):
    cell, params, carry, xs = setup(name, seed=3)
    w = jnp.asarray(np.random.default_rng(4).normal(size=(T, B, H)))
    f = lambda fp: objective(lambda p, c, x: jrnn.unroll(cell, p, x, c, fast_path=fp, **opts), w)
    fast = jax.jit(jax.value_and_grad(f(True), argnums=(0, 1, 2)))(params, carry, xs)
    plain = jax.jit(jax.value_and_grad(f(False), argnums=(0, 1, 2)))(params, carry, xs)
    assert_close(fast, plain)


# not rnn-relu: finite differences straddle relu's kink (the plain scan fails this check as well);
# its first derivatives are covered above against the Python loop
@pytest.mark.parametrize("name", ["lstm"])  # one cell: second order is slow to compile (~12 s per cell)
def test_second_order_check_grads(name):
    cell, params, carry, xs = setup(name, seed=5)
    f = lambda p, c, x: jnp.sum(jnp.tanh(jrnn.unroll(cell, p, x, c, lengths=LENGTHS)[0]))
    # reverse over reverse transposes the rule's own JVP: the rule is differentiable
    check_grads(f, (params, carry, xs), order=2, modes=("rev",), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", CELLS)
def test_unbatched_and_two_batch_dims(name):
    cell, params, carry, xs = setup(name, seed=6, batch=(2, 3))
    hs, c = jrnn.unroll(cell, params, xs, carry)
    flat = jrnn.unroll(cell, params, xs.reshape(T, 6, D), jax.tree.map(lambda a: a.reshape(6, H), carry))
    assert_close((hs.reshape(T, 6, H), jax.tree.map(lambda a: a.reshape(6, H), c)), flat)
    one = jax.tree.map(lambda a: a[0, 0], carry)
    hs1, c1 = jrnn.unroll(cell, params, xs[:, 0, 0], one)
    assert_close((hs1, c1), (hs[:, 0, 0], jax.tree.map(lambda a: a[0, 0], c)))
    g = jax.grad(lambda p: jnp.sum(jnp.sin(jrnn.unroll(cell, p, xs[:, 0, 0], one)[0])))(params)
    g_ref = jax.grad(lambda p: jnp.sum(jnp.sin(reference(cell, p, xs[:, 0, 0][:, None],
                                                         jax.tree.map(lambda a: a[None], one))[0])))(params)
    assert_close(g, g_ref)


@pytest.mark.parametrize("name", CELLS)
def test_vmapped_params_equal_per_model_gradients(name):
    cell, _, carry, xs = setup(name, seed=7)
    ps = [setup(name, seed=s)[1] for s in (10, 11, 12)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *ps)
    loss = lambda p: jnp.sum(jnp.sin(jrnn.unroll(cell, p, xs, carry, lengths=LENGTHS)[0]))
    got = jax.vmap(jax.grad(loss))(stacked)
    for i, p in enumerate(ps):
        assert_close(jax.tree.map(lambda a: a[i], got), jax.grad(loss)(p))


@pytest.mark.parametrize("name,vocab", [(n, 7) for n in CELLS] + [("gru", 200)])
def test_token_ids_gradients_equal_one_hot_inputs(name, vocab):
    cell = CELLS[name]()
    rng = np.random.default_rng(8)
    params = f64(cell.init(jax.random.key(1), vocab))
    ids = jnp.asarray(rng.integers(0, vocab, (T, B)), jnp.int32)
    carry = f64(cell.initial_carry((B,)))

    def loss(p, x):
        return jnp.sum(jnp.sin(jrnn.unroll(cell, p, x, carry, lengths=LENGTHS)[0]))

    assert_close(jax.grad(loss)(params, ids), jax.grad(loss)(params, jax.nn.one_hot(ids, vocab, dtype=jnp.float64)))
    assert_close(jax.vmap(jax.grad(loss), in_axes=(0, None))(jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params), ids),
          jax.tree.map(lambda a, b: jnp.stack([a, b]), jax.grad(loss)(params, ids),
                       jax.grad(loss)(jax.tree.map(lambda a: 2 * a, params), ids)))
    tangent = jax.tree.map(jnp.ones_like, params)
    assert_close(jax.jvp(lambda p: loss(p, ids), (params,), (tangent,)),
          jax.jvp(lambda p: loss(p, jax.nn.one_hot(ids, vocab, dtype=jnp.float64)), (params,), (tangent,)))


def _uses_fast_path(fn, *args):
    return "_fast_recurrence" in str(jax.make_jaxpr(fn)(*args))


@pytest.mark.parametrize("name", CELLS)
def test_hooks_and_checkpointing_fall_back_to_plain_scan(name):
    cell, params, carry, xs = setup(name, seed=13)
    run = lambda **kw: (lambda p: jrnn.unroll(cell, p, xs, carry, **kw)[0])
    assert _uses_fast_path(run(), params)
    assert _uses_fast_path(run(lengths=LENGTHS, reverse=True), params)
    hook = lambda t, c: jax.tree.map(lambda a: jnp.where(t % 3 == 0, jax.lax.stop_gradient(a), a), c)
    assert not _uses_fast_path(run(before_step=hook), params)
    assert not _uses_fast_path(run(remat_every=3), params)
    assert not _uses_fast_path(run(fast_path=False), params)
    # and they still compute the same values as the fast path
    assert_close(run(before_step=hook)(params), run()(params))
    assert_close(jax.grad(lambda p: jnp.sum(jnp.sin(run(remat_every=3)(p))))(params),
          jax.grad(lambda p: jnp.sum(jnp.sin(run()(p))))(params))


def test_custom_cells_and_stacks_of_them_use_the_plain_path():
    g = jrnn.gru(H, dtype=F64)
    # same math, another step function, no fast rule declared
    custom = g._replace(step=lambda p, c, x: g.step(p, c, x), fast=None)
    assert custom.fast is None
    params = g.init(jax.random.key(0), D)
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(T, B, D)))
    assert_close(jrnn.unroll(custom, params, xs), jrnn.unroll(g, params, xs))
    # a stack of a custom cell over a gru: layer by layer, the custom layer on the plain scan
    deep = jrnn.stack([custom, g])
    p2 = deep.init(jax.random.key(1), D)
    fn = lambda p: jrnn.unroll(deep, p, xs, lengths=LENGTHS)
    assert str(jax.make_jaxpr(fn)(p2)).count("jvp=_fast_recurrence_jvp") == 1  # the gru layer only
    slow = lambda p: jrnn.unroll(deep, p, xs, lengths=LENGTHS, fast_path=False)
    plain = slow(p2), jax.grad(lambda p: jnp.sum(jnp.sin(slow(p)[0])))(p2)
    assert_close((fn(p2), jax.grad(lambda p: jnp.sum(jnp.sin(fn(p)[0])))(p2)), plain)


def leaky(hidden, a=0.3):
    """A cell written by a user, with its own fast rule: ``h' = (1-a) h + a tanh(x W_x + b + h W_h)``.

    The tangent is derived by hand here: ``dh' = (1-a) dh + a (1 - u^2) (dxp + dzh)``
    with ``u = tanh(xp + zh)``.
    """
    def init(key, d):
        kx, kh, kb = jax.random.split(key, 3)
        return {"W_x": 0.5 * jax.random.normal(kx, (d, hidden), F64),
                "W_h": 0.5 * jax.random.normal(kh, (hidden, hidden), F64),
                "b": 0.1 * jax.random.normal(kb, (hidden,), F64)}

    def initial_carry(batch_shape=()):
        return jnp.zeros((*batch_shape, hidden), F64)

    def project(p, xs):
        return xs @ p["W_x"] + p["b"]

    def step(p, h, xp):
        h = (1 - a) * h + a * jnp.tanh(xp + h @ p["W_h"])
        return h, h

    def forward(p, h, xp, zh):
        u = jnp.tanh(xp + zh)
        h = (1 - a) * h + a * u
        return h, h, u

    def coefficients(p, prev, new, u):
        return a * (1 - u * u)

    def tangent(k, dh, dxp, dzh):
        dh = (1 - a) * dh + k * (dxp + dzh)
        return dh, dh

    fast = FastRecurrence("W_h", lambda h: h, forward, coefficients, tangent, additive=True)
    return Cell(init, initial_carry, project, step, hidden, "leaky", fast=fast, unit_blocks=1)


@pytest.mark.parametrize("opts", [OPTS[0], OPTS[3]], ids=[OPT_IDS[0], OPT_IDS[3]])
@pytest.mark.parametrize("deep", [False, True], ids=["cell", "stack"])
def test_user_defined_cell_on_the_fast_path_equals_the_plain_scan(deep, opts):
    cell = jrnn.stack([leaky(H), leaky(H, a=0.7)]) if deep else leaky(H)
    params = cell.init(jax.random.key(3), D)
    rng = np.random.default_rng(17)
    carry = f64(jax.tree.map(lambda a: 0.5 * rng.normal(size=a.shape), cell.initial_carry((B,))))
    xs = jnp.asarray(rng.normal(size=(T, B, D)))
    run = lambda fp: (lambda p, c, x: jrnn.unroll(cell, p, x, c, fast_path=fp, **opts))
    assert _uses_fast_path(lambda p: run(True)(p, carry, xs)[0], params)
    assert not _uses_fast_path(lambda p: run(False)(p, carry, xs)[0], params)
    w = jnp.asarray(rng.normal(size=(T, B, H)))
    fast, plain = objective(run(True), w), objective(run(False), w)
    assert_close(run(True)(params, carry, xs), run(False)(params, carry, xs))
    assert_close(run(True)(params, carry, xs), reference(cell, params, xs, carry, **opts))
    assert_close(jax.value_and_grad(fast, argnums=(0, 1, 2))(params, carry, xs),
                 jax.value_and_grad(plain, argnums=(0, 1, 2))(params, carry, xs))
    tangents = (jax.tree.map(jnp.ones_like, params), jax.tree.map(jnp.ones_like, carry), jnp.ones_like(xs))
    assert_close(jax.jvp(fast, (params, carry, xs), tangents), jax.jvp(plain, (params, carry, xs), tangents))
    check_grads(fast, (params, carry, xs), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)
    if not deep:  # the rule's own step helper is the cell's step
        xp = cell.project(params, xs[0])
        assert_close(cell.fast.step(params, carry, xp), cell.step(params, carry, xp))


def test_stack_rejects_a_carry_that_is_not_one_per_layer():
    deep = jrnn.stack([jrnn.gru(H), jrnn.gru(H)])
    p = deep.init(jax.random.key(0), D)
    with pytest.raises(ValueError, match="tuple of 2 carries"):
        jrnn.unroll(deep, p, jnp.ones((T, B, D)), jnp.zeros((B, H)))


def test_train_step_same_updates_on_both_paths():
    cell = jrnn.lstm(8)
    opt, est = jrnn.make_optimizer("sgd", 1.0, 1.0), jrnn.grads.full()
    rng = np.random.default_rng(0)
    batches = [jrnn.Batch(jnp.asarray(rng.integers(0, 11, (6, 4)), jnp.int32),
                          jnp.asarray(rng.integers(0, 11, (6, 4)), jnp.int32)) for _ in range(3)]

    def train(cell):
        model = jrnn.language_model(cell, 11)
        state = jrnn.init_state(model, opt, est, jax.random.key(0), 4)
        step = jrnn.train_step(model, opt, est)
        for b in batches:
            state, m = step(state, b, jax.random.key(1))
        return state.params, m["loss"]

    fast, plain = train(cell), train(cell._replace(fast=None))  # without the capability: plain scan
    assert_close(fast, plain, tol=2e-5)  # float32 model


@pytest.mark.parametrize("name,opts", [(n, OPTS[0]) for n in CELLS] + [("stack", OPTS[3])],
                         ids=[f"{n}-plain" for n in CELLS] + ["stack-lengths-reverse"])  # compile time
def test_carry_grad_scale_equals_the_same_scaling_done_by_a_hook(name, opts):
    """``carry_grad_scale`` on the fast path == a ``before_step`` hook on the plain scan."""
    cell, params, carry, xs = setup(name, seed=14)
    w = jnp.asarray(np.random.default_rng(15).normal(size=(T, B, H)))
    g = jnp.asarray([0.0, 1.0, 2.5, 0.0, 1.0, -0.5, 1.0])  # cuts, keeps, rescales

    def hook(t, c):
        return jax.tree.map(lambda a: jax.lax.stop_gradient(a) + g[t] * (a - jax.lax.stop_gradient(a)), c)

    scaled = objective(lambda p, c, x: jrnn.unroll(cell, p, x, c, carry_grad_scale=g, **opts), w)
    hooked = objective(lambda p, c, x: jrnn.unroll(cell, p, x, c, before_step=hook, **opts), w)
    assert _uses_fast_path(lambda p: jrnn.unroll(cell, p, xs, carry, carry_grad_scale=g, **opts)[0], params)
    assert_close(jax.value_and_grad(scaled, argnums=(0, 1, 2))(params, carry, xs),
                 jax.value_and_grad(hooked, argnums=(0, 1, 2))(params, carry, xs))
    tangents = setup(name, seed=16)[1:]
    assert_close(jax.jvp(scaled, (params, carry, xs), tangents), jax.jvp(hooked, (params, carry, xs), tangents))
    # ones change nothing; checkpointed segments (7 = 3 + 3 + 1, padded) scale the same way
    full = objective(lambda p, c, x: jrnn.unroll(cell, p, x, c, **opts), w)
    assert_close(jax.grad(objective(lambda p, c, x: jrnn.unroll(cell, p, x, c, carry_grad_scale=jnp.ones(T),
                                                                **opts), w))(params, carry, xs),
                 jax.grad(full)(params, carry, xs))
    ckpt = objective(lambda p, c, x: jrnn.unroll(cell, p, x, c, carry_grad_scale=g, remat_every=3, **opts), w)
    assert_close(jax.grad(ckpt, argnums=(0, 1))(params, carry, xs), jax.grad(scaled, argnums=(0, 1))(params, carry, xs))


def test_carry_grad_scale_is_validated():
    cell, params, carry, xs = setup("gru")
    for bad in (jnp.ones(T + 1), jnp.ones((T, 1)), jnp.ones(T, jnp.int32)):
        with pytest.raises(ValueError, match="carry_grad_scale must be a float array of shape"):
            jrnn.unroll(cell, params, xs, carry, carry_grad_scale=bad)
