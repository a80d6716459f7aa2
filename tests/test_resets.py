"""Resets and interior step masks inside a stream (``unroll(resets=, step_mask=)``, ``Batch.resets``).

The reference throughout is the same stream cut into its pieces, each run
separately from a fresh carry:

- ``unroll``: a packed stream's outputs, final carry and gradients (params,
  reset carry) equal a hand-written Python loop over ``cell.apply`` on each
  episode alone -- fast path and ``fast_path=False``, elman/lstm/gru and a
  stack, forward, reverse, bidirectional, with ``lengths`` and with
  rematerialisation;
- ``step_mask``: equals the loop with the masked steps deleted (NaN there harmless);
- estimators on a :class:`~jrnn.Batch` with ``resets``: full, truncated,
  tbptt, checkpointed, RTRL and SnAp-1 equal the reference gradient on the
  pieces (BPTT on each piece with the stream's truncation cuts, via
  ``carry_grad_scale``; the online estimators run on each piece from
  ``init_carry``); ES equals the sum of its estimates on the pieces (same
  draws); randomized and UORO do not carry anything across a reset (the
  gradient of the second episode's loss ignores the first episode's inputs,
  and does not without the reset); PES refuses resets;
- ``pack`` lays episodes out as documented, and ``train_step`` takes the packed batch.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrnn
from jrnn.data.batches import Batch, pack

T, B, D, H, O = 7, 2, 3, 4, 2
F64 = jnp.float64
# episode starts per row: row 0 has episodes [0, 3) and [3, 7); row 1 [0, 2), [2, 4), [4, 7)
RESETS = np.zeros((T, B), bool)
RESETS[[0, 3], 0] = True
RESETS[[0, 2, 4], 1] = True
CELLS = {
    "rnn": lambda: jrnn.elman(H, dtype=F64),
    "lstm": lambda: jrnn.lstm(H, dtype=F64),
    "gru": lambda: jrnn.gru(H, dtype=F64),
    "stack": lambda: jrnn.stack([jrnn.lstm(H, dtype=F64), jrnn.gru(H + 1, dtype=F64)]),
}
TOL = {"rtol": 1e-9, "atol": 1e-11}


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@functools.cache
def make(name):
    cell = CELLS[name]()
    return cell, jax.jit(cell.apply)


def rand_tree(shapes, seed, scale=0.6):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(scale * rng.normal(size=a.shape), F64), shapes)


def setup(name, seed=0):
    cell, apply = make(name)
    params = rand_tree(jax.eval_shape(lambda k: cell.init(k, D), jax.random.key(0)), seed)
    xs = jnp.asarray(np.random.default_rng(seed + 1).normal(size=(T, B, D)))
    return cell, apply, params, xs


def spans(resets, b, T=T):
    """``[(a, z), ...]``: the episodes of row ``b`` (a start at 0 whether or not flagged)."""
    starts = sorted({0, *np.nonzero(np.asarray(resets)[:, b])[0].tolist()})
    return list(zip(starts, starts[1:] + [T]))


def hand_loop(apply, params, xs, carry, reverse=False):
    """Python loop over ``cell.apply`` on one sequence ``[L, D]``; outputs in input order."""
    order = range(len(xs) - 1, -1, -1) if reverse else range(len(xs))
    out = [None] * len(xs)
    for t in order:
        carry, out[t] = apply(params, carry, xs[t])
    return jnp.stack(out), carry


def piece_index(resets):
    """The episodes of a ``[T, B]`` stream as a padded batch of ``n`` sequences.

    Returns ``(sp, lengths [n], t_idx [L, n], b_idx [n], back [T, B])``: ``sp``
    the ``(b, a, z)`` of each episode, ``xs[t_idx, b_idx]`` the episodes
    right-padded (the padding repeats the last step; ``lengths`` masks it), and
    ``back[t, b] = (t - a) * n + i`` the position of packed step ``(t, b)`` in
    the flattened ``[L * n]`` piece layout.
    """
    T_, B_ = np.shape(resets)
    sp = [(b, a, z) for b in range(B_) for a, z in spans(resets, b, T_)]
    L, n = max(z - a for _, a, z in sp), len(sp)
    t_idx = np.array([[min(a + t, z - 1) for _, a, z in sp] for t in range(L)])
    back = np.zeros((T_, B_), int)
    for i, (b, a, z) in enumerate(sp):
        back[a:z, b] = np.arange(z - a) * n + i
    return sp, np.array([z - a for _, a, z in sp]), t_idx, np.array([b for b, _, _ in sp]), back


def pieces(cell, params, xs, resets, carry=None, reset_carry=None, reverse=False):
    """Reference: every episode run alone, as one padded batch without resets (the plain
    ``lax.scan`` with ``lengths``, which ``tests/test_unroll.py`` checks against hand loops).

    An episode starts from ``reset_carry`` (zeros by default) where it is
    flagged; otherwise (a row start without a flag; reversed: the last episode
    of a row, which the reversed pass reads first) from the incoming ``carry``
    (zeros by default). Returns ``(hs [T, B, H], final carry [B, ...])``.
    """
    T_, B_ = np.shape(resets)
    rc = cell.initial_carry(()) if reset_carry is None else reset_carry
    carry = cell.initial_carry((B_,)) if carry is None else carry
    sp, lengths, t_idx, b_idx, back = piece_index(resets)
    starts = [jax.tree.map(lambda x, b=b: x[b], carry)
              if not ((z < T_) if reverse else bool(resets[a, b])) else rc for b, a, z in sp]
    c0 = jax.tree.map(lambda *a: jnp.stack(a), *starts)
    hp, cp = jrnn.unroll(cell, params, xs[t_idx, b_idx[None]], c0, lengths=lengths,
                         reverse=reverse, fast_path=False)
    hs = hp.reshape((-1,) + hp.shape[2:])[back]
    last = [max(i for i, (b, _, _) in enumerate(sp) if b == r) if not reverse else
            min(i for i, (b, _, _) in enumerate(sp) if b == r) for r in range(B_)]
    return hs, jax.tree.map(lambda a: a[np.array(last)], cp)


def values_and_grads(fn, w, *args, argnums=0):
    """``fn(*args)`` and the gradient of ``dot(fn(*args), w)``, in one compiled program."""
    return jax.jit(lambda *a: (fn(*a), jax.grad(lambda *b: dot(fn(*b), w), argnums)(*a)))(*args)


def weights_like(tree, seed):
    return jax.tree.map(lambda a: jnp.asarray(np.random.default_rng(seed).normal(size=a.shape)), tree)


def dot(tree, w):
    return sum(jnp.sum(a * b) for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(w)))


def assert_close(actual, expected, **tol):
    a, e = jax.tree.leaves(actual), jax.tree.leaves(expected)
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for x, y in zip(a, e):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **(tol or TOL))


# --------------------------------------------------------------------------- unroll


# every cell on both paths across this file: rnn plain and gru plain in the step_mask and
# reset_carry tests below
UNROLL_CASES = [("rnn", True, False), ("lstm", True, False), ("lstm", False, True),
                ("gru", True, True), ("stack", True, False), ("stack", False, True)]


@pytest.mark.parametrize("name, fast, reverse", UNROLL_CASES)
def test_packed_unroll_equals_each_episode_alone(name, fast, reverse):
    """Outputs, final carry and gradients (params, incoming carry) of a packed stream equal
    those of its episodes run alone. Forward, the incoming carry is reset at ``t = 0`` in every
    row (no gradient reaches it); reversed, it enters the last episode (read first)."""
    cell, _, params, xs = setup(name)
    carry = rand_tree(jax.eval_shape(lambda: cell.initial_carry((B,))), 5)
    run = lambda p, c: jrnn.unroll(cell, p, xs, c, resets=RESETS, reverse=reverse, fast_path=fast)
    ref = lambda p, c: pieces(cell, p, xs, RESETS, c, reverse=reverse)
    w = weights_like(jax.eval_shape(run, params, carry), 1)
    out, (g, g_c) = values_and_grads(run, w, params, carry, argnums=(0, 1))
    ref_out, ref_g = values_and_grads(ref, w, params, carry, argnums=(0, 1))
    assert_close(out, ref_out)
    assert_close(g, ref_g[0])
    assert_close(g_c, ref_g[1])
    assert (max(float(jnp.abs(a).max()) for a in jax.tree.leaves(g_c)) > 0) == reverse


def test_resets_and_step_masks_keep_the_fast_path():
    """The packed stream runs through the fast recurrence's custom JVP (every layer of a stack)."""
    cell, _, params, xs = setup("stack")
    jaxpr = str(jax.make_jaxpr(lambda p: jrnn.unroll(cell, p, xs, resets=RESETS,
                                                      step_mask=~RESETS)[0])(params))
    assert jaxpr.count("jvp=_fast_recurrence_jvp") == 2


def test_forward_mode_through_resets_matches_the_plain_scan():
    """The fast rule's JVP (tangents of params, incoming and reset carry) equals the plain
    scan's autodiff on a packed stream."""
    cell, _, params, xs = setup("lstm")
    rc = rand_tree(jax.eval_shape(lambda: cell.initial_carry(())), 3, 0.5)
    carry = rand_tree(jax.eval_shape(lambda: cell.initial_carry((B,))), 4, 0.5)
    resets = RESETS.copy()
    resets[0, 1] = False
    tangents = tuple(rand_tree(a, 9) for a in (params, rc, carry))
    jvp = lambda fast: jax.jit(lambda *a: jax.jvp(lambda p, r, c: jrnn.unroll(
        cell, p, xs, c, resets=resets, reset_carry=r, fast_path=fast), a, tangents))(
        params, rc, carry)
    assert_close(jvp(True), jvp(False))


@pytest.mark.parametrize("name, fast", [("lstm", True), ("gru", False), ("stack", True)])
def test_reset_carry_gets_the_gradient_of_every_episode_it_starts(name, fast):
    """A learned initial carry: values from it at each reset, its gradient summed over episodes;
    with ``resets[0]`` off, the first episode starts from the incoming carry instead."""
    cell, _, params, xs = setup(name)
    rc = rand_tree(jax.eval_shape(lambda: cell.initial_carry(())), 3, 0.5)  # unbatched: broadcast
    carry = rand_tree(jax.eval_shape(lambda: cell.initial_carry((B,))), 4, 0.5)
    resets = RESETS.copy()
    resets[0, 1] = False  # row 1's first episode continues the incoming carry
    run = lambda p, rc, c: jrnn.unroll(cell, p, xs, c, resets=resets, reset_carry=rc, fast_path=fast)
    ref = lambda p, rc, c: pieces(cell, p, xs, resets, c, rc)
    w = weights_like(jax.eval_shape(run, params, rc, carry), 7)
    out, g = values_and_grads(run, w, params, rc, carry, argnums=(0, 1, 2))
    ref_out, ref_g = values_and_grads(ref, w, params, rc, carry, argnums=(0, 1, 2))
    assert_close(out, ref_out)
    assert_close(g, ref_g)
    g_carry = jax.tree.leaves(g[2])
    assert max(float(jnp.abs(a[1]).max()) for a in g_carry) > 0  # row 1 reads the incoming carry
    assert max(float(jnp.abs(a[0]).max()) for a in g_carry) == 0  # row 0 resets it


@pytest.mark.parametrize("fast", [True, False])
def test_bidirectional_with_resets_and_lengths_equals_each_episode_alone(fast):
    """Both directions stay within each episode; padding beyond ``lengths`` (and its resets)
    is ignored."""
    (f, apply_f, pf, xs), (b, apply_b, pb, _) = setup("gru"), setup("rnn", 1)
    lengths = np.array([T, 5])
    resets = RESETS.copy()
    resets[5, 1] = True  # beyond row 1's length: ignored
    xs = xs.at[5:, 1].set(jnp.nan)  # padded inputs never reach a step
    hs, (cf, cb) = jrnn.bidirectional(f, b, (pf, pb), xs, lengths=lengths, resets=resets,
                                      fast_path=fast)
    cut = resets.copy()
    cut[5:, 1] = False
    for r in range(B):
        L = int(lengths[r])
        z = f.initial_carry(())
        fw = [hand_loop(apply_f, pf, xs[a:e, r], z) for a, e in spans(cut[:L], r, L)]
        bw = [hand_loop(apply_b, pb, xs[a:e, r], z, reverse=True) for a, e in spans(cut[:L], r, L)]
        assert_close(hs[:L, r], jnp.concatenate([jnp.concatenate([h for h, _ in fw]),
                                                 jnp.concatenate([h for h, _ in bw])], -1))
        np.testing.assert_array_equal(np.asarray(hs[L:, r]), 0.0)
        assert_close(cf[r], fw[-1][1])
        assert_close(cb[r], bw[0][1])  # the reversed pass ends at the first episode


@pytest.mark.parametrize("every", [3])  # segments that do not divide T
def test_rematerialised_unroll_with_resets_equals_each_episode_alone(every):
    cell, _, params, xs = setup("lstm")
    w = weights_like(jnp.zeros((T, B, H)), 3)
    run = lambda p: jrnn.unroll(cell, p, xs, resets=RESETS, remat_every=every)[0]
    ref = lambda p: pieces(cell, p, xs, RESETS)[0]
    assert_close(values_and_grads(run, w, params), values_and_grads(ref, w, params))


# --------------------------------------------------------------------------- step_mask


@pytest.mark.parametrize("name, fast", [("rnn", False), ("lstm", True), ("gru", True),
                                        ("stack", False)])
def test_step_mask_equals_deleting_the_masked_steps(name, fast):
    cell, _, params, xs = setup(name)
    mask = np.ones((T, B), bool)
    mask[[1, 4], 0] = False  # interior steps
    mask[[0, 5, 6], 1] = False  # first and last steps
    xs = jnp.where(jnp.asarray(mask)[..., None], xs, jnp.nan)  # never reaches a step
    carry = rand_tree(jax.eval_shape(lambda: cell.initial_carry((B,))), 5)

    def run(p):
        return jrnn.unroll(cell, p, xs, carry, step_mask=mask, fast_path=fast)

    # reference: each row's real steps alone, compacted and right-padded (``lengths``), zeros at
    # the masked steps
    keep = [np.nonzero(mask[:, b])[0] for b in range(B)]
    lengths = np.array([len(k) for k in keep])
    t_idx = np.stack([np.concatenate([k, np.full(T - len(k), k[-1])]) for k in keep], 1)

    def ref(p):
        h, c = jrnn.unroll(cell, p, xs[t_idx, np.arange(B)], carry, lengths=lengths, fast_path=False)
        hs = jnp.zeros((T, B, h.shape[-1]), F64)
        for b in range(B):
            hs = hs.at[keep[b], b].set(h[:len(keep[b]), b])
        return hs, c

    w = weights_like(jax.eval_shape(run, params), 2)
    out, g = values_and_grads(run, w, params)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(g))
    assert_close((out, g), values_and_grads(ref, w, params))


def test_step_mask_with_lengths_and_a_reset_on_a_masked_step():
    """A step is real iff ``lengths`` and ``step_mask`` both say so; a reset on a masked step
    still applies (the next real step starts from the reset carry)."""
    cell, apply, params, xs = setup("gru")
    mask = np.ones((T, B), bool)
    mask[3, 0] = False
    resets = np.zeros((T, B), bool)
    resets[3, 0] = True  # masked and reset: episode [4, 7) starts fresh
    lengths = np.array([T, 4])
    hs, c = jrnn.unroll(cell, params, xs, step_mask=mask, resets=resets, lengths=lengths)
    z = cell.initial_carry(())
    h0a, _ = hand_loop(apply, params, xs[:3, 0], z)
    h0b, c0 = hand_loop(apply, params, xs[4:, 0], z)
    h1, c1 = hand_loop(apply, params, xs[:4, 1], z)
    assert_close(hs[:, 0], jnp.concatenate([h0a, jnp.zeros((1, H)), h0b]))
    assert_close(hs[:, 1], jnp.concatenate([h1, jnp.zeros((3, H))]))
    assert_close(c, jnp.stack([c0, c1]))


def test_bad_resets_and_step_masks_are_named():
    cell, _, params, xs = setup("rnn")
    with pytest.raises(TypeError, match="resets must be a bool array"):
        jrnn.unroll(cell, params, xs, resets=RESETS.astype(np.float32))
    with pytest.raises(ValueError, match=r"step_mask must have shape \[T, B...\] = \(7, 2\)"):
        jrnn.unroll(cell, params, xs, step_mask=np.ones((T, B + 1), bool))
    with pytest.raises(ValueError, match="reset_carry is only used with resets"):
        jrnn.unroll(cell, params, xs, reset_carry=cell.initial_carry(()))
    with pytest.raises(ValueError, match="reset_carry has shape"):
        jrnn.unroll(cell, params, xs, resets=RESETS, reset_carry=jnp.zeros((H + 1,), F64))


# --------------------------------------------------------------------------- estimators


def model_for(name, plain=False):
    cell = CELLS[name]()
    if plain:  # the step-by-step scan inside every estimator
        cell = cell._replace(fast=None) if cell.layers is None else cell._replace(
            layers=tuple(c._replace(fast=None) for c in cell.layers))
    return jrnn.regressor(cell, D, O)


def packed_batch(seed=0):
    rng = np.random.default_rng(seed)
    # uneven weights summing to one, exact in float32 (models.loss_weights works in float32)
    w = np.array([[1, 3], [2, 2], [3, 1], [2, 3], [4, 1], [1, 2], [2, 5]]) / 32
    return Batch(jnp.asarray(rng.normal(size=(T, B, D))), jnp.asarray(rng.normal(size=(T, B, O))),
                 jnp.asarray(w), jnp.asarray(RESETS))


def piece_batch(batch):
    """The batch's episodes as one right-padded batch of ``n`` sequences without resets, with
    the packed batch's weights (zero on the padding, which follows every real step)."""
    _, lengths, t_idx, b_idx, _ = piece_index(batch.resets)
    real = np.arange(len(t_idx))[:, None] < lengths
    return Batch(batch.inputs[t_idx, b_idx], batch.targets[t_idx, b_idx],
                 batch.mask[t_idx, b_idx] * real)


def bptt_reference(model, params, batch, gain=None, from_step=0):
    """Loss and gradient of the episodes run separately (``sequence_loss``, no resets).

    ``gain``: the stream's ``carry_grad_scale`` cuts, applied to each episode at
    the positions where it lies in the stream (one episode at a time); only
    positions ``>= from_step`` differentiated, renormalised (tbptt).
    """
    if gain is None:  # all episodes at once, as one padded batch
        pb = piece_batch(batch)
        return jax.value_and_grad(lambda p: jrnn.sequence_loss(
            model, p, model.cell.initial_carry((pb.inputs.shape[1],)), pb)[0])(params)
    tail = (np.arange(T) >= from_step)[:, None]
    scale = 1.0 / jnp.sum(batch.mask * tail)

    def total(p, differentiated):
        out = 0.0
        for b in range(B):
            for a, z in spans(batch.resets, b):
                piece = Batch(batch.inputs[a:z, b:b + 1], batch.targets[a:z, b:b + 1],
                              batch.mask[a:z, b:b + 1] * (tail[a:z] * scale if differentiated else 1))
                out = out + jrnn.sequence_loss(model, p, model.cell.initial_carry((1,)), piece,
                                               carry_grad_scale=gain[a:z])[0]
        return out

    return total(params, False), jax.grad(lambda p: total(p, True))(params)


def online_reference(est, model, params, batch):
    """The online estimator on all episodes at once (a padded batch) from a fresh ``init_carry``:
    its examples are independent, so this is the sum over the episodes run alone."""
    pb = piece_batch(batch)
    return est.value_and_grad(model, params, est.init_carry(model, params, pb.inputs.shape[1:2]),
                              pb, None)[:2]


K, K2 = 3, 4  # truncation length; tbptt's depth: T - K2 = 3 steps forward only
ESTIMATORS = {
    "full": (lambda: jrnn.grads.full(), lambda m, p, b: bptt_reference(m, p, b)),
    "truncated": (lambda: jrnn.grads.truncated(K),
                  lambda m, p, b: bptt_reference(m, p, b, (np.arange(T) % K != 0) * 1.0)),
    "tbptt": (lambda: jrnn.grads.tbptt(K2),
              lambda m, p, b: bptt_reference(m, p, b, (np.arange(T) != T - K2) * 1.0, T - K2)),
    "checkpointed": (lambda: jrnn.grads.checkpointed(3), lambda m, p, b: bptt_reference(m, p, b)),
    "rtrl": (lambda: jrnn.grads.rtrl(), None),
    "snap1": (lambda: jrnn.grads.snap1(), None),
}
# each estimator on a fast and a plain (``fast=None``) cell, the cells rotated (unroll's own
# tests above cover every cell on both paths)
EST_CASES = [("full", "stack", False), ("full", "lstm", True), ("truncated", "gru", False),
             ("tbptt", "lstm", True), ("checkpointed", "rnn", False), ("rtrl", "lstm", False),
             ("rtrl", "gru", True), ("snap1", "lstm", True)]


@pytest.mark.parametrize("est_name, name, plain", EST_CASES)
def test_estimator_on_a_packed_stream_equals_the_episodes_alone(est_name, name, plain):
    make_est, ref = ESTIMATORS[est_name]
    model, est = model_for(name, plain), make_est()
    params = rand_tree(jax.eval_shape(model.init, jax.random.key(0)), 1)
    batch = packed_batch()
    carry = jax.tree.map(lambda a: a + 0.7, est.init_carry(model, params, (B,)))  # reset at t=0
    loss, grads = jax.jit(lambda p: est.value_and_grad(model, p, carry, batch, None)[:2])(params)
    ref_loss, ref_grads = jax.jit(
        lambda p: ref(model, p, batch) if ref is not None
        else online_reference(est, model, p, batch))(params)
    # tbptt normalises its tail's float32 loss weights (models.loss_weights) in float32
    tol = {"rtol": 1e-5, "atol": 1e-9} if est_name == "tbptt" else TOL
    np.testing.assert_allclose(float(loss), float(ref_loss), **tol)
    assert_close(grads, ref_grads, **tol)


@pytest.mark.parametrize("est_name", ["full"])
def test_without_the_resets_the_gradient_differs(est_name):
    """The power check of the test above: the packed stream's gradient is not the same
    without its resets (the episodes do influence each other then)."""
    model, est = model_for("gru"), ESTIMATORS[est_name][0]()
    params = rand_tree(jax.eval_shape(model.init, jax.random.key(0)), 1)
    batch, carry = packed_batch(), est.init_carry(model, params, (B,))
    g = jax.jit(lambda b: est.value_and_grad(model, params, carry, b, None)[1])
    ref = jax.jit(lambda p: bptt_reference(model, p, batch)[1])(params)
    assert_close(g(batch), ref)
    assert max(float(jnp.abs(a - b).max()) for a, b in zip(
        jax.tree.leaves(g(batch._replace(resets=None))), jax.tree.leaves(ref))) > 1e-3


@pytest.mark.parametrize("est", [jrnn.grads.uoro(), jrnn.grads.randomized(0.5)],
                         ids=["uoro", "randomized"])
def test_stochastic_estimators_carry_nothing_across_a_reset(est):
    """Only the second episode's loss counts: its gradient estimate (same key) ignores the
    first episode's inputs when a reset separates them, and does not without the reset."""
    model = model_for("gru")
    params = rand_tree(jax.eval_shape(model.init, jax.random.key(0)), 1)
    b = packed_batch()
    resets = np.zeros((T, B), bool)
    resets[3] = True
    second = jnp.asarray((np.arange(T) >= 3)[:, None] * np.ones((1, B)))
    b = b._replace(mask=second, resets=jnp.asarray(resets))
    other = b._replace(inputs=b.inputs.at[:3].set(3.0))  # a different first episode
    key = jax.random.key(0)
    carry = est.init_carry(model, params, (B,))
    g = lambda batch: est.value_and_grad(model, params, carry, batch, key)[1]
    (g1, g2), (c1, c2) = jax.jit(lambda b, o: ((g(b), g(o)), (g(b._replace(resets=None)),
                                                            g(o._replace(resets=None)))))(b, other)
    assert_close(g1, g2)
    assert max(float(jnp.abs(x - y).max()) for x, y in zip(jax.tree.leaves(c1),
                                                          jax.tree.leaves(c2))) > 1e-3


def test_es_on_a_packed_stream_is_the_sum_over_its_episodes():
    model = model_for("rnn")
    params = rand_tree(jax.eval_shape(model.init, jax.random.key(0)), 1)
    batch, key = packed_batch(), jax.random.key(3)
    est = jrnn.grads.es(0.1, particles=4)
    carry = est.init_carry(model, params, (B,))

    def ref(params):  # the same draws: the same key, the same number of params
        pb = piece_batch(batch)
        return est.value_and_grad(model, params, est.init_carry(model, params, (pb.inputs.shape[1],)),
                                  pb, key)[:2]

    loss, g = jax.jit(lambda p: est.value_and_grad(model, p, carry, batch, key)[:2])(params)
    ref_loss, ref_g = jax.jit(ref)(params)
    np.testing.assert_allclose(float(loss), float(ref_loss), **TOL)
    assert_close(g, ref_g, rtol=1e-7, atol=1e-9)  # differences of perturbed losses / sigma^2


def test_pes_refuses_resets():
    model = model_for("rnn")
    params = model.init(jax.random.key(0))
    est = jrnn.grads.pes(0.1, particles=2)
    with pytest.raises(ValueError, match="pes:0.1 does not take batch.resets"):
        est.value_and_grad(model, params, est.init_carry(model, params, (B,)), packed_batch(),
                           jax.random.key(0))


def test_batch_resets_are_validated():
    model = model_for("rnn")
    params = model.init(jax.random.key(0))
    bad = packed_batch()._replace(resets=jnp.ones((T, B)))
    with pytest.raises(TypeError, match="batch.resets must be a bool array"):
        jrnn.grads.full().value_and_grad(model, params, model.cell.initial_carry((B,)), bad, None)
    with pytest.raises(TypeError, match="resets from batch.resets"):
        jrnn.sequence_loss(model, params, model.cell.initial_carry((B,)), packed_batch(),
                           resets=RESETS)


# --------------------------------------------------------------------------- pack and train_step


def test_pack_lays_out_episodes_and_train_step_takes_them():
    rng = np.random.default_rng(0)
    lens = [3, 2, 4, 2]
    eps = [(rng.normal(size=(n, D)), rng.normal(size=(n, O))) for n in lens]
    batch = pack(eps, 2, num_steps=T)
    # rows by "shortest so far": row 0 gets episodes 0, 3 (3 + 2); row 1 gets 1, 2 (2 + 4)
    assert batch.inputs.shape == (T, 2, D) and batch.targets.shape == (T, 2, O)
    np.testing.assert_array_equal(batch.resets[:, 0], [1, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(batch.resets[:, 1], [1, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(batch.mask[:, 0], [1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(batch.mask[:, 1], [1, 1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(batch.inputs[2:6, 1], eps[2][0])
    np.testing.assert_array_equal(batch.targets[3:5, 0], eps[3][1])
    np.testing.assert_array_equal(batch.inputs[5:, 0], 0.0)
    assert pack(eps, 2).inputs.shape == (6, 2, D)  # num_steps=None: the longest row
    with pytest.raises(ValueError, match="over num_steps=5"):
        pack(eps, 2, num_steps=5)
    with pytest.raises(ValueError, match="only the time axis may differ"):
        pack([eps[0], (eps[1][0][:, :2], eps[1][1])], 2)
    # one SGD step on the packed batch = one step with the episodes' gradient
    model = jrnn.regressor(jrnn.gru(H, dtype=F64), D, O)
    params = rand_tree(jax.eval_shape(model.init, jax.random.key(0)), 2)
    opt = optax.sgd(0.5)
    state = jrnn.TrainState(params, opt.init(params), model.cell.initial_carry((2,)), jnp.int32(0))
    step = jrnn.train_step(model, opt, donate=False)
    new, metrics = step(state, jax.tree.map(jnp.asarray, batch), jax.random.key(0))
    w = batch.mask / batch.mask.sum()
    full_batch = Batch(*(jnp.asarray(a) for a in (batch.inputs, batch.targets, w, batch.resets)))
    ref_loss, ref_g = jax.jit(lambda p: bptt_reference(model, p, full_batch))(params)
    tol = {"rtol": 1e-6, "atol": 1e-9}  # weights 1/11 rounded to float32 (models.loss_weights)
    np.testing.assert_allclose(float(metrics["loss"]), float(ref_loss), **tol)
    assert_close(new.params, jax.tree.map(lambda p, g: p - 0.5 * g, params, ref_g), **tol)
