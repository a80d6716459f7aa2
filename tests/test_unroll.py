"""Tests for jrnn.scan: unroll / bidirectional / stacked cells against hand-written loops.

The reference everywhere is a plain Python loop over ``cell.apply`` (one step at
a time, no ``lax.scan``), run on each sequence alone at its own length and
flipped by hand for the reversed direction. Gradients are checked with
``jax.test_util.check_grads`` (finite differences, float64) and by comparing
autodiff through ``unroll`` with autodiff through the hand loop.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import jrnn
from jrnn.scan import _flip_within

T, B, D, H = 12, 4, 3, 5  # T long enough for remat segments 4 (divisor) and 5 (not)
LENGTHS = np.array([5, 1, 12, 9])  # includes 1 and T, not sorted
RTOL = ATOL = 1e-5

CELLS = {  # name -> constructor(hidden_size)
    "elman": jrnn.elman,
    "lstm": jrnn.lstm,
    "gru": jrnn.gru,
    "stack": lambda h: jrnn.stack([jrnn.lstm(h + 1), jrnn.gru(h)]),  # mixed carries
}


# --------------------------------------------------------------------------- helpers


@functools.cache
def make(name, hidden=H):
    """The cell and its jitted one-step ``apply`` (cached so references compile once)."""
    cell = CELLS[name](hidden)
    return cell, jax.jit(cell.apply)


def random_params(cell, seed, input_size=D, scale=0.5):
    """The cell's param structure filled with N(0, scale^2) values."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda k: cell.init(k, input_size), jax.random.key(0))
    return jax.tree.map(lambda a: jnp.asarray(scale * rng.normal(size=a.shape), a.dtype), shapes)


def random_carry(cell, seed, batch_shape=(B,)):
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: cell.initial_carry(batch_shape))
    return jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype), shapes)


def normal(seed, shape, scale=1.0):
    return jnp.asarray(scale * np.random.default_rng(seed).normal(size=shape), jnp.float32)


def padded_inputs(seed, lengths, shape=(T, B, D)):
    """Random inputs whose padded steps hold large garbage (they must not matter)."""
    xs = np.random.default_rng(seed).normal(size=shape)
    pad = np.arange(shape[0])[:, None] >= np.asarray(lengths)[None, :]
    xs[pad] = 1e3
    return jnp.asarray(xs, jnp.float32)


def row(tree, b):
    return jax.tree.map(lambda a: a[b], tree)


def tree_dot_with(tree, weights):
    """``sum(tree * weights)`` over all leaves: a scalar 'loss'."""
    return sum(jnp.sum(a * w) for a, w in zip(jax.tree.leaves(tree), jax.tree.leaves(weights)))


def tree_dot(tree, seed):
    """A fixed random linear functional of a pytree."""
    rng = np.random.default_rng(seed)
    return tree_dot_with(tree, jax.tree.map(
        lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype), tree))


def assert_trees_close(actual, expected, rtol=RTOL, atol=ATOL):
    a_leaves, a_def = jax.tree.flatten(actual)
    e_leaves, e_def = jax.tree.flatten(expected)
    assert a_def == e_def, (a_def, e_def)
    for a, e in zip(a_leaves, e_leaves):
        assert np.shape(a) == np.shape(e), (np.shape(a), np.shape(e))
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)


def loop(apply, params, xs, carry, stack=jnp.stack):
    """Reference: a Python loop over ``apply`` on time-major ``xs``; returns (hs, carry).

    ``stack=np.stack`` keeps the bookkeeping in NumPy (no compilation) when the
    loop is not differentiated.
    """
    hs = []
    for t in range(xs.shape[0]):
        carry, h = apply(params, carry, xs[t])
        hs.append(h)
    return stack(hs), carry


def per_sequence(apply, params, xs, lengths, carry0, reverse=False):
    """Reference for a padded batch: each sequence run alone, by hand, at its own length.

    Returns ``(hs [T, B, H] with zeros at padded steps, final carry [B, ...])``.
    With ``reverse`` each sequence is read from its last real step back, and its
    outputs are put back in input order.
    """
    xs = np.asarray(xs)
    carry0 = jax.tree.map(np.asarray, carry0)
    hs, finals = None, []
    for b, L in enumerate(lengths):
        x = xs[:L, b]
        h_b, c_b = loop(apply, params, x[::-1] if reverse else x, row(carry0, b), np.stack)
        if hs is None:
            hs = np.zeros((xs.shape[0], len(lengths), h_b.shape[-1]), np.float32)
        hs[:L, b] = h_b[::-1] if reverse else h_b
        finals.append(jax.tree.map(np.asarray, c_b))
    return hs, jax.tree.map(lambda *a: np.stack(a), *finals)


# --------------------------------------------------------------------------- 6. unroll vs loop


@pytest.mark.parametrize("unroll", [1, 3])
@pytest.mark.parametrize("name", CELLS)
def test_unroll_matches_hand_loop(name, unroll):
    cell, apply = make(name)
    p, c0, xs = random_params(cell, 0), random_carry(cell, 1), normal(2, (T, B, D))
    hs, carry = jrnn.unroll(cell, p, xs, c0, unroll=unroll)
    ref_hs, ref_carry = loop(apply, p, np.asarray(xs), c0, np.stack)
    assert hs.shape == (T, B, cell.hidden_size)
    assert_trees_close((hs, carry), (ref_hs, ref_carry))


@pytest.mark.parametrize("name", ["lstm", "stack"])
def test_unroll_default_carry_is_zeros(name):
    cell, apply = make(name)
    p, xs = random_params(cell, 0), normal(2, (T, B, D))
    hs, carry = jrnn.unroll(cell, p, xs)
    zeros = jax.tree.map(jnp.zeros_like, random_carry(cell, 1))
    assert_trees_close((hs, carry), loop(apply, p, np.asarray(xs), zeros, np.stack))


def loss_and_outputs(cell, **opts):
    """``(params, xs, carry) -> (scalar loss, (hs, carry))`` through ``unroll``."""
    def f(*args):
        outs = jrnn.unroll(cell, *args, **opts)
        return tree_dot(outs, 3), outs
    return jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True)


@functools.cache
def plain_values_and_grads(name):
    """Outputs and gradients (w.r.t. params, inputs, initial carry) of the plain unroll."""
    cell, apply = make(name)
    args = (random_params(cell, 0), normal(2, (T, B, D)), random_carry(cell, 1))
    (_, outs), grads = loss_and_outputs(cell)(*args)
    assert_trees_close(outs, loop(apply, args[0], np.asarray(args[1]), args[2], np.stack))
    return outs, grads, args


@pytest.mark.parametrize("name, every, unroll", [
    ("lstm", 1, 1), ("lstm", 4, 1), ("lstm", 5, 1),  # 4 divides T = 12, 5 does not
    ("gru", 5, 1), ("elman", 5, 2),
])
def test_rematerialised_unroll_matches_plain(name, every, unroll):
    cell, _ = make(name)
    ref_outs, ref_grads, args = plain_values_and_grads(name)
    (_, outs), grads = loss_and_outputs(cell, remat_every=every, unroll=unroll)(*args)
    assert_trees_close(outs, ref_outs)
    assert_trees_close(grads, ref_grads)


# --------------------------------------------------------------------------- 4. check_grads


GRAD_OPTS = {
    "plain": {},
    "lengths-reverse": {"lengths": np.array([3, 1]), "reverse": True},
    "lengths-remat": {"lengths": np.array([2, 3]), "remat_every": 2},
}


@pytest.mark.parametrize("name, opts", [
    ("gru", "lengths-reverse"), ("lstm", "plain"), ("elman", "lengths-remat")])
def test_unroll_check_grads(name, opts):
    opts = GRAD_OPTS[opts]
    # rematerialised loops are documented reverse-mode only
    modes = ["rev"] if "remat_every" in opts else ["fwd", "rev"]
    with jax.enable_x64(True):
        cell = CELLS[name](H, dtype=jnp.float64)  # unroll checks params/carry against the cell's dtype
        to64 = functools.partial(jax.tree.map, lambda a: jnp.asarray(a, jnp.float64))
        p = random_params(cell, 4)
        c0 = random_carry(cell, 5, (2,))
        xs = to64(normal(6, (3, 2, D)))
        f = jax.jit(lambda p, c, x: jrnn.unroll(cell, p, x, c, **opts))
        check_grads(f, (p, c0, xs), order=1, modes=modes, eps=1e-3, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- 7. masking

MASK_OPTS = {
    "forward": {},
    "reverse": {"reverse": True},
    "remat5": {"remat_every": 5},
    "reverse-remat5-unroll2": {"reverse": True, "remat_every": 5, "unroll": 2},
}
MASK_CASES = ([(name, opts) for name in CELLS for opts in ("forward", "reverse")]
              + [("lstm", "remat5"), ("gru", "reverse-remat5-unroll2"),
                 ("stack", "reverse-remat5-unroll2")])


@pytest.mark.parametrize("name, opts", MASK_CASES)
def test_padding_matches_each_sequence_alone(name, opts):
    opts = MASK_OPTS[opts]
    cell, apply = make(name)
    p, c0 = random_params(cell, 0), random_carry(cell, 1)
    xs = padded_inputs(2, LENGTHS)
    hs, carry = jrnn.unroll(cell, p, xs, c0, lengths=LENGTHS, **opts)
    ref_hs, ref_carry = per_sequence(apply, p, xs, LENGTHS, c0, reverse=opts.get("reverse", False))
    assert_trees_close((hs, carry), (ref_hs, ref_carry))
    pad = np.arange(T)[:, None] >= LENGTHS[None, :]
    np.testing.assert_array_equal(np.asarray(hs)[pad], 0.0)  # padded outputs are exactly zero


@pytest.mark.parametrize("name, reverse", [("elman", False), ("lstm", True), ("gru", False)])
def test_masked_grads_equal_sum_of_per_sequence_grads(name, reverse):
    cell, apply = make(name)
    p, c0 = random_params(cell, 0), random_carry(cell, 1)
    xs = padded_inputs(2, LENGTHS)
    w = normal(3, (T, B, cell.hidden_size))  # weights of every (real or padded) output
    wc = random_carry(cell, 4)               # weights of the final carry
    xs_np, w_np = np.asarray(xs), np.asarray(w)
    c0_np, wc_np = jax.tree.map(np.asarray, c0), jax.tree.map(np.asarray, wc)

    def batched_loss(p):
        hs, carry = jrnn.unroll(cell, p, xs, c0, lengths=LENGTHS, reverse=reverse)
        return jnp.sum(hs * w) + tree_dot_with(carry, wc)

    def sequence_loss(p, b):
        L = LENGTHS[b]
        x = xs_np[:L, b][::-1] if reverse else xs_np[:L, b]
        hs, carry = loop(apply, p, x, row(c0_np, b))
        hs = hs[::-1] if reverse else hs
        return jnp.sum(hs * w_np[:L, b]) + tree_dot_with(carry, row(wc_np, b))

    loss, grads = jax.value_and_grad(batched_loss)(p)
    per_seq = [jax.value_and_grad(sequence_loss)(p, b) for b in range(B)]
    np.testing.assert_allclose(loss, sum(v for v, _ in per_seq), rtol=1e-4, atol=1e-5)
    ref = jax.tree.map(lambda *g: sum(g), *[g for _, g in per_seq])
    assert_trees_close(grads, ref, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- 8. reverse / bidirectional


@pytest.mark.parametrize("name, every", [*[(name, None) for name in CELLS], ("lstm", 5)])
def test_reverse_without_lengths_is_flipped_unroll(name, every):
    cell, apply = make(name)
    p, c0, xs = random_params(cell, 0), random_carry(cell, 1), normal(2, (T, B, D))
    hs, carry = jrnn.unroll(cell, p, xs, c0, reverse=True, remat_every=every)
    ref_hs, ref_carry = loop(apply, p, np.asarray(xs)[::-1], c0, np.stack)
    assert_trees_close((hs, carry), (ref_hs[::-1], ref_carry))


@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("name", ["elman", "stack"])
def test_bidirectional_is_forward_and_flipped_backward(name, with_lengths):
    fwd, fapply = make(name)
    bwd, bapply = make(name, H - 2)  # different widths: the concatenation order shows
    pf, pb = random_params(fwd, 0), random_params(bwd, 1)
    cf, cb = random_carry(fwd, 2), random_carry(bwd, 3)
    lengths = LENGTHS if with_lengths else np.full(B, T)
    xs = padded_inputs(4, lengths)
    hs, (out_cf, out_cb) = jrnn.bidirectional(
        fwd, bwd, (pf, pb), xs, (cf, cb), lengths=LENGTHS if with_lengths else None)
    ref_hf, ref_cf = per_sequence(fapply, pf, xs, lengths, cf)
    ref_hb, ref_cb = per_sequence(bapply, pb, xs, lengths, cb, reverse=True)
    assert hs.shape == (T, B, fwd.hidden_size + bwd.hidden_size)
    assert_trees_close((hs, out_cf, out_cb),
                       (jnp.concatenate([ref_hf, ref_hb], -1), ref_cf, ref_cb))


# --------------------------------------------------------------------------- 9. layout, unbatched, ids


@pytest.mark.parametrize("name, opts", [
    ("elman", {}), ("lstm", {"lengths": LENGTHS, "reverse": True, "unroll": 2})],
    ids=["elman-plain", "lstm-lengths-reverse"])
def test_batch_major_equals_transposed_time_major(name, opts):
    cell, _ = make(name)
    p, c0, xs = random_params(cell, 0), random_carry(cell, 1), normal(2, (T, B, D))
    hs_bm, carry_bm = jrnn.unroll(cell, p, jnp.swapaxes(xs, 0, 1), c0, time_major=False, **opts)
    hs_tm, carry_tm = jrnn.unroll(cell, p, xs, c0, **opts)
    assert hs_bm.shape == (B, T, cell.hidden_size)
    assert_trees_close((hs_bm, carry_bm), (jnp.swapaxes(hs_tm, 0, 1), carry_tm))


@pytest.mark.parametrize("name", ["stack"])
def test_unbatched_unroll_equals_batch_row(name):
    cell, _ = make(name)
    p, c0, xs = random_params(cell, 0), random_carry(cell, 1), padded_inputs(2, LENGTHS)
    hs, carry = jrnn.unroll(cell, p, xs, c0, lengths=LENGTHS)
    b = 0  # length 5 < T: the scalar length masks too
    hs_b, carry_b = jrnn.unroll(cell, p, xs[:, b], row(c0, b), lengths=LENGTHS[b])
    assert hs_b.shape == (T, cell.hidden_size)
    assert_trees_close((hs_b, carry_b), (hs[:, b], row(carry, b)))


@pytest.mark.parametrize("reverse", [False, True])
def test_two_batch_dims_equal_flat_batch(reverse):
    cell, apply = make("lstm")
    p, c0, xs = random_params(cell, 0), random_carry(cell, 1), padded_inputs(2, LENGTHS)
    hs, carry = jrnn.unroll(cell, p, xs.reshape(T, 2, 2, D),
                            jax.tree.map(lambda a: a.reshape(2, 2, -1), c0),
                            lengths=LENGTHS.reshape(2, 2), reverse=reverse)
    assert hs.shape == (T, 2, 2, H)
    ref_hs, ref_carry = per_sequence(apply, p, xs, LENGTHS, c0, reverse=reverse)
    assert_trees_close((hs.reshape(T, B, H), jax.tree.map(lambda a: a.reshape(B, H), carry)),
                       (ref_hs, ref_carry))


@pytest.mark.parametrize("name", ["gru"])
def test_unroll_token_ids_equals_one_hot(name):
    V = 7
    cell, _ = make(name)
    p, c0 = random_params(cell, 0, input_size=V), random_carry(cell, 1)
    ids = jnp.asarray(np.random.default_rng(2).integers(0, V, (T, B)), jnp.int32)

    def loss(p, xs):
        outs = jrnn.unroll(cell, p, xs, c0, lengths=LENGTHS)
        return tree_dot(outs, 3), outs

    (_, outs), grads = jax.value_and_grad(loss, has_aux=True)(p, ids)
    (_, ref_outs), ref_grads = jax.value_and_grad(loss, has_aux=True)(p, jax.nn.one_hot(ids, V))
    assert_trees_close((outs, grads), (ref_outs, ref_grads))
    with pytest.raises(ValueError, match="token id 9"):
        jrnn.unroll(cell, p, ids.at[3, 2].set(9), c0)


# --------------------------------------------------------------------------- 10. stack


@pytest.mark.parametrize("with_lengths, unroll", [(False, 1), (True, 3)])
def test_stack_equals_layer_by_layer(with_lengths, unroll):
    l1, l2 = jrnn.lstm(H), jrnn.gru(H - 1)
    cell = jrnn.stack([l1, l2])
    assert cell.hidden_size == H - 1
    p = random_params(cell, 0)
    c0 = random_carry(cell, 1)
    assert isinstance(p, tuple) and len(p) == 2 and isinstance(c0, tuple) and len(c0) == 2
    lengths = LENGTHS if with_lengths else np.full(B, T)
    xs = padded_inputs(2, lengths)
    hs, carry = jrnn.unroll(cell, p, xs, c0, lengths=LENGTHS if with_lengths else None,
                            unroll=unroll)
    # layer 1 over the whole sequence, then layer 2 over layer 1's outputs, per sequence
    a1, a2 = jax.jit(l1.apply), jax.jit(l2.apply)
    h1, c1 = per_sequence(a1, p[0], xs, lengths, c0[0])
    h2, c2 = per_sequence(a2, p[1], h1, lengths, c0[1])
    assert_trees_close((hs, carry), (h2, (c1, c2)))


# --------------------------------------------------------------------------- 11. bad input


def _small():
    cell, _ = make("gru")
    return cell, random_params(cell, 0), normal(2, (T, B, D))


@pytest.mark.parametrize("bad", [0, T + 1, -2])
def test_lengths_out_of_range(bad):
    cell, p, xs = _small()
    lengths = np.array([3, bad, T, 1])
    with pytest.raises(ValueError, match="lengths") as e:
        jrnn.unroll(cell, p, xs, lengths=lengths)
    msg = str(e.value)
    assert str(bad) in msg and str(T) in msg, msg


@pytest.mark.parametrize("lengths", [np.array([3, 4, 5]), np.array(3), np.full((B, 1), 3),
                                     np.full((1, B), 3)])
def test_lengths_wrong_shape(lengths):
    cell, p, xs = _small()
    with pytest.raises(ValueError, match="lengths") as e:
        jrnn.unroll(cell, p, xs, lengths=lengths)
    assert str(lengths.shape) in str(e.value)


@pytest.mark.parametrize("lengths", [np.full(B, 3.0), np.full(B, 3.0, np.float32),
                                     np.ones(B, bool)])
def test_lengths_non_integer(lengths):
    cell, p, xs = _small()
    with pytest.raises(TypeError, match="lengths"):
        jrnn.unroll(cell, p, xs, lengths=lengths)


@pytest.mark.parametrize("every", [0, -1, 2.5])
def test_bad_remat_every(every):
    cell, p, xs = _small()
    with pytest.raises(ValueError, match="remat_every must be an integer >= 1"):
        jrnn.unroll(cell, p, xs, remat_every=every)


@pytest.mark.parametrize("ids", ["numpy", "device"])
def test_integer_data_into_a_float_cell_says_what_the_cell_expects(ids):
    cell, p, _ = _small()  # initialised for float inputs of width D = 3
    xs = np.zeros((T, B), np.int32)
    xs[4, 1] = 5
    xs = xs if ids == "numpy" else jnp.asarray(xs)
    with pytest.raises(ValueError, match=r"xs contains token id 5 outside the vocabulary \[0, 3\) at "
                                         r"position \(t=4, b=1\); the cell's params were initialised "
                                         r"for input_size=3.*float inputs \[\.\.\., 3\]"):
        jrnn.unroll(cell, p, xs)


def test_negative_token_ids_are_refused_with_their_position():
    V = 6
    cell, _ = make("gru")
    p = random_params(cell, 0, input_size=V)
    ids = np.ones((T, B), np.int32)
    ids[7, 2] = -1  # would wrap to V - 1 in the gather
    for xs in (ids, jnp.asarray(ids)):
        with pytest.raises(ValueError, match=r"xs contains token id -1 outside the vocabulary "
                                             r"\[0, 6\) at position \(t=7, b=2\)"):
            jrnn.unroll(cell, p, xs)


def test_float_inputs_into_a_bfloat16_cell_are_named():
    cell = jrnn.gru(H, dtype=jnp.bfloat16)
    p = cell.init(jax.random.key(0), D)
    xs = normal(2, (T, B, D))  # float32
    with pytest.raises(TypeError, match=r"xs has dtype float32 but the cell's params are bfloat16.*"
                                        r"xs\.astype\(jnp\.bfloat16\)"):
        jrnn.unroll(cell, p, xs)
    hs, _ = jrnn.unroll(cell, p, xs.astype(jnp.bfloat16))  # the cast the message suggests works
    assert hs.dtype == jnp.bfloat16


def test_a_1d_float_input_is_named():
    cell, p, _ = _small()
    with pytest.raises(ValueError, match=r"xs is a 1-D float array of shape \(12,\), but float inputs "
                                         r"are \[T, B\.\.\., D\]"):
        jrnn.unroll(cell, p, jnp.ones((T,)))


def test_lengths_captured_as_a_constant_inside_jit_checkpoint_and_scan():
    """A concrete ``jnp`` lengths array closed over by traced code: no ConcretizationTypeError."""
    cell, p, _ = _small()
    xs = padded_inputs(2, LENGTHS)
    L = jnp.asarray(LENGTHS)
    f = lambda p, xs: jrnn.unroll(cell, p, xs, lengths=L)[0]
    ref = f(p, xs)
    assert_trees_close(jax.jit(f)(p, xs), ref)
    assert_trees_close(jax.checkpoint(f)(p, xs), ref)
    _, hs = jax.lax.scan(lambda c, x: (c, f(p, x)), 0, xs[None])
    assert_trees_close(hs[0], ref)
    # the range is still checked on the captured constant
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T=12\], got min 0"):
        bad = jnp.asarray([0, 1, 2, 3])
        jax.jit(lambda p, xs: jrnn.unroll(cell, p, xs, lengths=bad)[0])(p, xs)


NAN_CASES = [("elman", False, True), ("lstm", True, True), ("gru", False, False), ("stack", True, True),
             ("stack", False, False), ("lstm", True, False)]


@pytest.mark.parametrize("name, reverse, fast", NAN_CASES,
                         ids=[f"{n}-{'rev' if r else 'fwd'}-{'fast' if f else 'plain'}" for n, r, f in NAN_CASES])
def test_nan_in_padded_inputs_gives_finite_gradients_equal_to_zero_padding(name, reverse, fast):
    cell, _ = make(name)
    p, c0 = random_params(cell, 0), random_carry(cell, 1)
    xs = np.asarray(padded_inputs(2, LENGTHS))
    pad = np.arange(T)[:, None] >= LENGTHS[None, :]
    nan, zero = xs.copy(), xs.copy()
    nan[pad] = np.nan
    nan[pad & (np.arange(B)[None, :] == 1)] = np.inf
    zero[pad] = 0.0
    w = normal(3, (T, B, cell.hidden_size))

    def loss(p, c, xs):
        hs, carry = jrnn.unroll(cell, p, xs, c, lengths=LENGTHS, reverse=reverse, fast_path=fast)
        return jnp.sum(hs * w) + tree_dot(carry, 4)

    g = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    v_nan, (gp, gc, gx) = g(p, c0, jnp.asarray(nan))
    v_zero, (gp0, gc0, gx0) = g(p, c0, jnp.asarray(zero))
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves((v_nan, gp, gc, gx)))
    assert_trees_close((v_nan, gp, gc), (v_zero, gp0, gc0), rtol=0, atol=0)
    np.testing.assert_array_equal(np.asarray(gx)[pad], 0.0)
    assert_trees_close(gx, gx0, rtol=0, atol=0)


# --------------------------------------------------------------------------- 13. properties

_PROP_CELL = jrnn.gru(4)
_PROP_PARAMS = random_params(_PROP_CELL, 7, input_size=2)
_PROP_APPLY = jax.jit(_PROP_CELL.apply)


@functools.cache
def _jitted_unroll(reverse):
    # jitted so that equal shapes compile once; lengths are then traced (not validated)
    return jax.jit(lambda p, xs, lengths: jrnn.unroll(_PROP_CELL, p, xs, lengths=lengths,
                                                      reverse=reverse))


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_property_padding_never_changes_real_outputs(data):
    nb = data.draw(st.integers(1, 3), label="B")
    nt = data.draw(st.integers(1, 6), label="T")
    lengths = np.array(data.draw(st.lists(st.integers(1, nt), min_size=nb, max_size=nb),
                                 label="lengths"))
    reverse = data.draw(st.booleans(), label="reverse")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(nt, nb, 2)).astype(np.float32)
    pad = np.arange(nt)[:, None] >= lengths[None, :]
    xs_other = xs.copy()
    xs_other[pad] = rng.normal(size=xs_other[pad].shape) * 100.0  # different padding
    run = _jitted_unroll(reverse)
    hs, carry = run(_PROP_PARAMS, jnp.asarray(xs), jnp.asarray(lengths))
    hs2, carry2 = run(_PROP_PARAMS, jnp.asarray(xs_other), jnp.asarray(lengths))
    assert_trees_close((hs, carry), (hs2, carry2), rtol=0, atol=0)
    ref = per_sequence(_PROP_APPLY, _PROP_PARAMS, jnp.asarray(xs), lengths,
                       _PROP_CELL.initial_carry((nb,)), reverse=reverse)
    assert_trees_close((hs, carry), ref)


_FLIP = jax.jit(_flip_within)


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_property_flip_within_is_per_sequence_reversal_and_involution(data):
    nb = data.draw(st.integers(1, 4), label="B")
    nt = data.draw(st.integers(1, 6), label="T")
    lengths = np.array(data.draw(st.lists(st.integers(1, nt), min_size=nb, max_size=nb),
                                 label="lengths"))
    x = np.arange(nt * nb * 2, dtype=np.float32).reshape(nt, nb, 2)
    once = np.asarray(_FLIP(x, lengths))
    expected = x.copy()
    for b, L in enumerate(lengths):
        expected[:L, b] = x[:L, b][::-1]  # padding stays in place
    np.testing.assert_array_equal(once, expected)
    twice = _FLIP(once, lengths)
    np.testing.assert_array_equal(np.asarray(twice), x)
