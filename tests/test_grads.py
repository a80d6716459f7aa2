"""Tests for jrnn.grads: every estimator against an independent reference.

References used here (none of them is grads.py's own output):
- BPTT reference (``_reference``): ``jax.grad`` of a loss built over
  hand-split chunks, the carry entering each chunk ``stop_gradient``-ed (one
  chunk = full BPTT), with hand-normalised loss weights; a chunk is run by
  :func:`jrnn.unroll` or by a Python loop over ``cell.apply``;
- RTRL is compared with the full-BPTT reference; UORO (unbiasedness) with
  RTRL, SnAp-1 with RTRL where it must be exact;
- statistical tests vmap over keys and bound ``|mean - target|`` by
  ``Z * std / sqrt(n)`` per element, with the std measured on the same sample,
  and check that the same bound rejects a biased target (power).

Sizes are tiny (H <= 8, T <= 10, B <= 3; the memory test only compiles a
T=512, H=64 program) and each test compiles one program that computes
everything it compares: compiling is what costs time here.
"""

import functools

import numpy as np
import pytest

import jax
import jax.numpy as jnp

import jrnn
from jrnn import grads as G
from jrnn.grads import OnlineCarry
from jrnn.models import Batch

Z = 5.0  # z-score bound of the statistical tests

# Compiling dominates this file's run time; XLA's backend (LLVM) optimisation
# level changes speed, not results, so the test programs are built at level 0
# (about 40% less compile time). The memory and training tests use the defaults.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


# --------------------------------------------------------------------------- helpers


def _problem(cell, tokens=True, T=5, B=2, seed=0, mask=False, V=4, D=3, O=2):
    """A model, random params and a random time-major batch (host NumPy arrays).

    NumPy, not eager JAX, makes the data: every eager op compiles a kernel.
    """
    model = jrnn.language_model(cell, V) if tokens else jrnn.regressor(cell, D, O)
    rng = np.random.default_rng(seed)
    params = _params(model, rng)
    if tokens:
        x, y = (rng.integers(0, V, (T, B)).astype(np.int32) for _ in range(2))
    else:
        x = rng.normal(size=(T, B, D)).astype(np.float32)
        y = rng.normal(size=(T, B, O)).astype(np.float32)
    m = None
    if mask:
        m = (rng.random((T, B)) < 0.6).astype(np.float32)
        m[-1] = 1.0
    return model, params, Batch(x, y, m)


def _params(model, rng):
    """Params of ``model``'s structure, uniform in [-0.6, 0.6] (NumPy)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    return jax.tree.map(lambda a: rng.uniform(-0.6, 0.6, a.shape).astype(np.float32), shapes)


def _weights(mask, T, B):
    """Hand-normalised loss weights (mean over the unmasked positions)."""
    m = np.ones((T, B), np.float32) if mask is None else np.asarray(mask, np.float32)
    return m / max(m.sum(), 1.0)


def _stack(*trees):
    return jax.tree.map(lambda *a: np.stack(a), *trees)


def _reference(model, params, carry, xs, ys, w, K=None, loop=False):
    """``(loss, grads, final_carry)`` of the weighted loss, BPTT cut every ``K`` steps.

    Built by hand: the sequence is split into chunks of ``K`` steps, each run
    from the ``stop_gradient`` of the carry the previous chunk left;
    ``K=None`` is one chunk (full BPTT). A chunk is run by :func:`jrnn.unroll`,
    or with ``loop=True`` by a Python loop over ``cell.apply`` (independent of
    ``unroll`` and its fast path).
    """
    T = jnp.shape(xs)[0]
    K = K or T
    cell = model.cell

    def chunk(p, xs, c):
        if not loop:
            return jrnn.unroll(cell, p, xs, c)
        hs = []
        for t in range(xs.shape[0]):
            c, h = cell.apply(p, c, xs[t])
            hs.append(h)
        return jnp.stack(hs), c

    def loss(p):
        c, hs = carry, []
        for s in range(0, T, K):
            h, c = chunk(p["cell"], xs[s:s + K], jax.lax.stop_gradient(c))
            hs.append(h)
        out = model.head(p["head"], jnp.concatenate(hs))
        return jnp.sum(model.loss(out, ys) * w), c

    (l, c), g = jax.value_and_grad(loss, has_aux=True)(params)
    return l, g, c


def _flat(tree):
    """All leaves, flattened and concatenated (jnp: works inside jit)."""
    return jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(tree)])


def _nflat(tree):
    return np.concatenate([np.ravel(np.asarray(a)) for a in jax.tree.leaves(tree)])


def _assert_close(a, b, rtol=1e-4, atol=1e-6, what=""):
    """Leaf-wise allclose on two pytrees of the same structure."""
    assert jax.tree.structure(a) == jax.tree.structure(b), what
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol, err_msg=what)


def _differs(a, b, rel=1e-3):
    fa, fb = _nflat(a), _nflat(b)
    return np.linalg.norm(fa - fb) > rel * np.linalg.norm(fb)


def _cos(a, b):
    fa, fb = _nflat(a), _nflat(b)
    return fa @ fb / (np.linalg.norm(fa) * np.linalg.norm(fb))


def _zscores(samples, target):
    """Per-element ``|mean - target| / (std / sqrt(n))``; ``samples`` ``[n, P]``.

    Elements with (almost) no variance are compared with a float tolerance
    instead, through a floor on the standard error.
    """
    n = samples.shape[0]
    mean = samples.mean(0)
    se = samples.std(0) / np.sqrt(n)
    se = np.maximum(se, 1e-5 * (np.abs(target) + 1e-3))
    return np.abs(mean - target) / se


# --------------------------------------------------------------------------- BPTT family


TRUNC_T = 7


@pytest.fixture(scope="module")
def lstm_case():
    """The BPTT family and its references on one masked LSTM problem, in one program.

    The carry entering the batch is nonzero (as in sequential partitioning).
    """
    model, params, batch = _problem(jrnn.lstm(4), tokens=False, T=TRUNC_T, B=2, mask=True)
    carry0 = jrnn.LSTMState(h=np.full((2, 4), 0.3, np.float32), c=np.full((2, 4), -0.2, np.float32))
    ests = [G.full(), G.truncated(TRUNC_T), G.truncated(10), G.truncated(3), G.checkpointed(2),
            G.checkpointed(10), G.checkpointed(), G.randomized(1.0), G.randomized(0.5)]
    w = _weights(batch.mask, TRUNC_T, 2)

    @_jit
    def run(params, carry0, batch, key):
        out = {}
        for e in ests:
            loss, g, new, _ = e.value_and_grad(model, params, carry0, batch, key)
            out[e.name] = (loss, g, new)
        xs, ys = batch.inputs, batch.targets
        out["ref:None"] = _reference(model, params, carry0, xs, ys, w, loop=True)
        out["ref:3"] = _reference(model, params, carry0, xs, ys, w, K=3)
        return out

    return run(params, carry0, batch, jax.random.key(1))


def test_full_matches_reference(lstm_case):
    l, g, c = lstm_case["ref:None"]
    lf, gf, cf = lstm_case["full"]
    np.testing.assert_allclose(lf, l, rtol=1e-6)
    _assert_close(gf, g, rtol=1e-5, atol=1e-7)
    _assert_close(cf, c, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("K", [TRUNC_T, 10])
def test_truncated_K_ge_T_is_full(lstm_case, K):
    lf, gf, cf = lstm_case["full"]
    l, g, c = lstm_case[f"truncated:{K}"]
    np.testing.assert_allclose(l, lf, rtol=1e-6)
    _assert_close(g, gf, rtol=1e-5, atol=1e-7, what=f"truncated:{K}")
    _assert_close(c, cf, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("K", [3])
def test_truncated_matches_chunked_reference(lstm_case, K):
    l, g, c = lstm_case[f"truncated:{K}"]
    lr, gr, cr = lstm_case[f"ref:{K}"]
    np.testing.assert_allclose(l, lr, rtol=1e-6)
    _assert_close(g, gr, rtol=1e-5, atol=1e-7, what=f"truncated:{K}")
    _assert_close(c, cr, rtol=1e-6, atol=1e-7)
    # forward unchanged, gradient really truncated
    np.testing.assert_allclose(l, lstm_case["full"][0], rtol=1e-6)
    assert _differs(g["cell"], lstm_case["full"][1]["cell"])


@pytest.mark.parametrize("S", [2, 10, None])  # T = 7: no S divides it; None -> 3
def test_checkpointed_is_full(lstm_case, S):
    lf, gf, cf = lstm_case["full"]
    l, g, c = lstm_case[f"checkpointed:{S or 'sqrt'}"]
    np.testing.assert_allclose(l, lf, rtol=1e-6)
    _assert_close(g, gf, rtol=1e-5, atol=1e-7, what=f"checkpointed:{S}")
    _assert_close(c, cf, rtol=1e-6, atol=1e-7)


def test_randomized_p1_is_full_and_forward_is_untouched(lstm_case):
    lf, gf, cf = lstm_case["full"]
    l, g, c = lstm_case["randomized:1"]
    _assert_close(g, gf, rtol=1e-5, atol=1e-7, what="randomized:1")
    for p in ("1", "0.5"):
        l, g, c = lstm_case[f"randomized:{p}"]
        # the hook's forward value is sg(x) + xi * (x - sg(x)) = x, bitwise; the
        # carry is compared with a float tolerance only because full() may take
        # unroll's fast path, whose fusion (rounding) can differ
        assert l == lf, (l, lf)
        _assert_close(c, cf, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["truncated:3", "checkpointed:2", "randomized:0.5"])
def test_head_gradient_is_exact(lstm_case, name):
    """(The online estimators' head gradients are checked in their own tests.)"""
    lf, gf, cf = lstm_case["full"]
    l, g, c = lstm_case[name]
    _assert_close(g["head"], gf["head"], rtol=1e-5, atol=1e-7, what=name)


def test_checkpointed_uses_less_memory():
    T, B, H, D = 512, 8, 64, 5
    model = jrnn.regressor(jrnn.lstm(H), D, 2)
    params = jax.eval_shape(model.init, jax.random.key(0))
    batch = Batch(jax.ShapeDtypeStruct((T, B, D), jnp.float32),
                  jax.ShapeDtypeStruct((T, B, 2), jnp.float32))
    carry = jax.eval_shape(lambda: model.cell.initial_carry((B,)))
    temp = {}
    for e in (G.full(), G.checkpointed()):
        fn = jax.jit(lambda p, c, b, e=e: e.value_and_grad(model, p, c, b, None)[:2])
        stats = fn.lower(params, carry, batch).compile().memory_analysis()
        if stats is None or not hasattr(stats, "temp_size_in_bytes"):
            pytest.skip(f"memory_analysis() unavailable on {jax.default_backend()}")
        temp[e.name] = stats.temp_size_in_bytes
    # full keeps T steps of residuals (gates, c, h, projected inputs, outputs);
    # checkpointed keeps sqrt(T) boundary carries and one segment's residuals
    # (measured: ~6% of full's temp memory here)
    assert temp["checkpointed:sqrt"] < 0.25 * temp["full"], temp


# --------------------------------------------------------------------------- randomized


def test_randomized_is_unbiased():
    model, params, batch = _problem(jrnn.gru(4), tokens=False, T=6, B=2, mask=True, seed=3)
    carry = model.cell.initial_carry((2,))
    n, p = 4000, 0.5
    est, ref = G.randomized(p), G.truncated(2)

    @_jit
    def run():
        keys = jax.random.split(jax.random.key(0), n)
        one = lambda k: est.value_and_grad(model, params, carry, batch, k)[:2]
        ls, gs = jax.vmap(one)(keys)
        lf, gf, _, _ = G.full().value_and_grad(model, params, carry, batch, None)
        lt, gt, _, _ = ref.value_and_grad(model, params, carry, batch, None)
        return (ls, jax.vmap(_flat)(gs["cell"]), jax.vmap(_flat)(gs["head"]),
                lf, _flat(gf["cell"]), _flat(gt["cell"]), _flat(gf["head"]))

    ls, gs, heads, lf, gf, gt, head = run()
    np.testing.assert_allclose(ls, lf, rtol=1e-6)
    np.testing.assert_allclose(heads, np.broadcast_to(head, heads.shape), rtol=1e-5, atol=1e-7)
    gs, gf, gt = map(np.asarray, (gs, gf, gt))
    assert np.std(gs, 0).max() > 1e-3  # really stochastic
    z = _zscores(gs, gf)
    assert z.max() < Z, f"randomized:{p} mean is {z.max():.1f} standard errors from full BPTT"
    # the same test rejects a biased estimate (the test has power)
    assert _zscores(gs, gt).max() > 3 * Z


# --------------------------------------------------------------------------- RTRL


RTRL_CELLS = {
    "elman": lambda: jrnn.elman(4),
    "gru": lambda: jrnn.gru(4),
    "lstm": lambda: jrnn.lstm(4),
    "stack": lambda: jrnn.stack([jrnn.elman(3), jrnn.lstm(4)]),
}


@pytest.mark.parametrize("tokens", [True, False], ids=["tokens", "floats"])
@pytest.mark.parametrize("cell", list(RTRL_CELLS))
def test_rtrl_equals_bptt(cell, tokens):
    """RTRL == full BPTT on a fresh carry; across batches it keeps the influence.

    Batch 1 has no mask, batch 2 a mask. On batch 2 (carry passed along)
    RTRL's gradient is that of batch 2's loss through BOTH batches (full BPTT
    over the concatenation, batch 1's positions weighted 0), unlike the BPTT
    estimators, which treat the incoming carry as a constant; zeroing the
    influence gives that BPTT gradient back.
    """
    T, B = 4, 2
    model, params, b1 = _problem(RTRL_CELLS[cell](), tokens, T=T, B=B, seed=1)
    b2 = _problem(RTRL_CELLS[cell](), tokens, T=T, B=B, seed=2, mask=True)[2]
    b1 = b1._replace(mask=None)
    xs = np.concatenate([b1.inputs, b2.inputs])
    ys = np.concatenate([b1.targets, b2.targets])
    zeros = np.zeros((T, B), np.float32)
    w1 = np.concatenate([_weights(None, T, B), zeros])
    w2 = np.concatenate([zeros, _weights(b2.mask, T, B)])
    est, key = G.rtrl(), jax.random.key(0)

    @_jit
    def run(params):
        c0 = est.init_carry(model, params, (B,))
        l1, g1, c1, _ = est.value_and_grad(model, params, c0, b1, key)
        cut = c1._replace(influence=jnp.zeros_like(c1.influence))
        both = jax.tree.map(lambda a, b: jnp.stack([a, b]), c1, cut)
        l2, g2, c2, _ = jax.vmap(lambda c: est.value_and_grad(model, params, c, b2, key))(both)
        zero = model.cell.initial_carry((B,))
        # K=T cuts at the batch boundary: batch 1's reference, and batch 2's with BPTT semantics
        cutref = jax.vmap(lambda w: _reference(model, params, zero, xs, ys, w, K=T, loop=True))(
            np.stack([w1, w2]))
        ref2 = _reference(model, params, zero, xs, ys, w2, loop=True)
        return (l1, g1), (l2, g2, c2.state), cutref, ref2

    (l1, g1), (l2, g2, s2), cutref, ref2 = run(params)
    at = lambda tree, i: jax.tree.map(lambda a: a[i], tree)
    np.testing.assert_allclose(l1, cutref[0][0], rtol=1e-5)
    _assert_close(g1, at(cutref[1], 0), what="batch 1")
    np.testing.assert_allclose(l2, ref2[0], rtol=1e-5)
    _assert_close(at(g2, 0), ref2[1], what="batch 2 (influence carried over)")
    _assert_close(at(s2, 0), ref2[2], rtol=1e-5, what="final state")
    _assert_close(at(g2, 1), at(cutref[1], 1), what="batch 2 with the influence cut")
    assert _differs(at(g2, 0)["cell"], at(g2, 1)["cell"])  # the carried influence matters


# --------------------------------------------------------------------------- UORO


@pytest.mark.parametrize("cell,tokens", [("elman", True), ("lstm", False)])
def test_uoro_is_unbiased(cell, tokens):
    """Mean of UORO over keys == RTRL, on a fresh carry and on the next batch."""
    T, B, n = 4, 1, 4000
    mk = {"elman": lambda: jrnn.elman(3), "lstm": lambda: jrnn.lstm(3)}[cell]
    model, params, b1 = _problem(mk(), tokens, T=T, B=B, seed=4)
    b2 = _problem(mk(), tokens, T=T, B=B, seed=5, mask=True)[2]
    both = _stack(b1._replace(mask=np.ones((T, B), np.float32)), b2)
    uoro, rtrl = G.uoro(), G.rtrl()

    def two(est, key):
        """Batch 1, then batch 2 from its carry: losses [2], cell grads [2, P], head grad [P]."""
        def body(c, inp):
            b, k = inp
            l, g, c, _ = est.value_and_grad(model, params, c, b, k)
            return c, (l, _flat(g["cell"]), _flat(g["head"]))
        c0 = est.init_carry(model, params, (B,))
        c1, (l, g, h) = jax.lax.scan(body, c0, (both, jax.random.split(key)))
        return l, g, h[1], c1

    @_jit
    def run():
        keys = jax.random.split(jax.random.key(0), n)
        l, g, h, _ = jax.vmap(lambda k: two(uoro, k))(keys)
        rl, rg, rh, c = two(rtrl, keys[0])
        # BPTT semantics on batch 2 (incoming state held fixed): what UORO must NOT match
        c0 = rtrl.init_carry(model, params, (B,))
        state1 = rtrl.value_and_grad(model, params, c0, b1, None)[2].state
        g_cut = _flat(G.full().value_and_grad(model, params, state1, b2, None)[1]["cell"])
        return (l, g, h), (rl, rg, rh), g_cut

    (ul, ug, uh), (rl, rg, rh), g_cut = run()
    np.testing.assert_allclose(ul, np.broadcast_to(rl, ul.shape), rtol=1e-5)
    np.testing.assert_allclose(uh, np.broadcast_to(rh, uh.shape), rtol=1e-4, atol=1e-6)
    ug, rg = np.asarray(ug), np.asarray(rg)
    for i in range(2):
        assert ug[:, i].std(0).max() > 1e-4
        z = _zscores(ug[:, i], rg[i])
        assert z.max() < Z, f"batch {i + 1}: UORO mean is {z.max():.1f} standard errors from RTRL"
    # power: the same test rejects the gradient with batch 1's influence dropped
    assert _zscores(ug[:, 1], np.asarray(g_cut)).max() > Z


# --------------------------------------------------------------------------- SnAp-1


def _diagonal_recurrence(params, H):
    """Zero the off-diagonal entries of every gate's block of the recurrent matrix."""
    name = "W_hh" if "W_hh" in params["cell"] else "W_h"
    W = params["cell"][name]
    keep = np.tile(np.eye(H, dtype=np.float32), (1, W.shape[1] // H))
    return {**params, "cell": {**params["cell"], name: W * keep}}


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
def test_snap1(cell):
    H, T, B = 4, 6, 2
    mk = {"elman": jrnn.elman, "gru": jrnn.gru, "lstm": jrnn.lstm}[cell]
    model, params, batch = _problem(mk(H), tokens=cell != "gru", T=T, B=B, seed=6)
    ones = np.ones((T, B), np.float32)
    first2 = np.where(np.arange(T)[:, None] < 2, ones, 0.0)  # loss on steps 1, 2 only
    snap, rtrl = G.snap1(), G.rtrl()

    @_jit
    def run(params, mask):
        b = batch._replace(mask=mask)
        out = []
        for e in (snap, rtrl):
            c = e.init_carry(model, params, (B,))
            out.append(e.value_and_grad(model, params, c, b, None)[1])
        return out

    s, r = run(params, first2)  # T <= 2: SnAp-1 is exact
    _assert_close(s, r, rtol=1e-5, atol=1e-7, what="T=2")
    s, r = run(_diagonal_recurrence(params, H), ones)  # diagonal recurrence: exact for any T
    _assert_close(s, r, rtol=1e-5, atol=1e-7, what="diagonal W_hh")
    # general: an approximation, but a sane one (RTRL == full BPTT, test_rtrl_equals_bptt)
    s, r = run(params, ones)
    assert _differs(s["cell"], r["cell"])
    _assert_close(s["head"], r["head"], rtol=1e-5, atol=1e-7)
    assert _cos(s["cell"], r["cell"]) > 0.5


@pytest.mark.parametrize("cell", [
    jrnn.stack([jrnn.elman(3), jrnn.elman(3)]),
    jrnn.stack([jrnn.elman(3), jrnn.lstm(4)]),  # named "rnnxlstm"
    jrnn.stack([jrnn.gru(3), jrnn.gru(3)]),
])
def test_snap1_rejects_stacked_cells(cell):
    model, params, batch = _problem(cell, T=3)
    with pytest.raises(ValueError, match="snap1"):
        G.snap1().init_carry(model, params, (2,))
    carry = OnlineCarry(cell.initial_carry((2,)), None)
    with pytest.raises(ValueError, match="snap1"):
        G.snap1().value_and_grad(model, params, carry, batch, None)


def test_snap1_asks_the_cell_not_its_name():
    """A cell declares the SnAp-1 pattern with ``unit_blocks``; the name plays no part."""
    T, B = 2, 2
    mine = jrnn.gru(3)._replace(name="my-gru")  # declares unit_blocks=1, an unknown name
    model, params, batch = _problem(mine, T=T, B=B, seed=8)
    snap, rtrl = G.snap1(), G.rtrl()

    @_jit
    def run(params):
        return [e.value_and_grad(model, params, e.init_carry(model, params, (B,)), batch, None)[1]
                for e in (snap, rtrl)]

    s, r = run(params)
    _assert_close(s, r, rtol=1e-5, atol=1e-7, what="T=2: SnAp-1 is exact")
    undeclared = jrnn.language_model(jrnn.gru(3)._replace(unit_blocks=None), 4)
    with pytest.raises(ValueError, match=r"snap1 needs a cell with the one-step sparsity pattern "
                                         r"\(Cell\.unit_blocks"):
        snap.init_carry(undeclared, params, (B,))
    wrong = jrnn.language_model(jrnn.gru(3)._replace(unit_blocks=2), 4)
    with pytest.raises(ValueError, match=r"declares unit_blocks=2 but has carry size 3, expected 2 x 3"):
        snap.init_carry(wrong, params, (B,))


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("spec", ["full", "truncated:3", "randomized:0.5", "checkpointed",
                                  "rtrl", "uoro", "snap1"])
def test_fit_lowers_the_loss(spec):
    corpus, vocab = jrnn.data.load_corpus("hello world " * 40)
    model = jrnn.language_model(jrnn.gru(8), len(vocab))
    B, T = 2, 8
    res = jrnn.fit(model, jrnn.make_optimizer("adam", 0.05),
                   lambda epoch: jrnn.data.batches(corpus, B, T, "sequential", seed=0, epoch=epoch),
                   estimator=G.parse(spec), batch_size=B,
                   config=jrnn.LoopConfig(epochs=2, log_every=10, progress=False, quiet=True))
    ppl = [r["train_ppl"] for r in res.history if "train_ppl" in r]
    assert len(ppl) >= 3 and all(np.isfinite(ppl)), ppl
    assert ppl[-1] < 0.7 * ppl[0], f"{spec}: train perplexity {ppl[0]:.2f} -> {ppl[-1]:.2f}"


# --------------------------------------------------------------------------- bad configuration


@pytest.mark.parametrize("make,match", [
    (lambda: G.truncated(0), "K"),
    (lambda: G.truncated(-3), "K"),
    (lambda: G.truncated(2.5), "K"),
    (lambda: G.truncated(True), "K"),
    (lambda: G.randomized(0), "p"),
    (lambda: G.randomized(1.5), "p"),
    (lambda: G.randomized(-0.1), "p"),
    (lambda: G.randomized(float("nan")), "p"),
    (lambda: G.checkpointed(0), "S"),
    (lambda: G.checkpointed(2.0), "S"),
    (lambda: G.full(unroll=0), "unroll"),
    (lambda: G.rtrl(max_bytes=0), "max_bytes"),
    (lambda: G.uoro(eps=-1.0), "eps"),
    (lambda: G.parse("bogus"), "unknown gradient estimator"),
    (lambda: G.parse("truncated"), "needs a parameter"),
    (lambda: G.parse("randomized"), "needs a parameter"),
    (lambda: G.parse("rtrl:3"), "takes no parameter"),
    (lambda: G.parse("truncated:2.5"), "bad parameter"),
    (lambda: G.parse("randomized:0"), "p"),
    (lambda: G.parse("checkpointed:x"), "bad parameter"),
])
def test_bad_configuration(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_parse():
    for spec, name in [("full", "full"), ("truncated:35", "truncated:35"),
                       ("randomized:0.25", "randomized:0.25"),
                       ("checkpointed", "checkpointed:sqrt"), ("checkpointed:4", "checkpointed:4"),
                       ("rtrl", "rtrl"), ("uoro", "uoro"), ("snap1", "snap1")]:
        assert G.parse(spec).name == name


def test_rtrl_refuses_a_huge_influence_before_compiling():
    model = jrnn.language_model(jrnn.elman(64), 28)
    params = _params(model, np.random.default_rng(0))
    est = G.rtrl(max_bytes=1e6)
    with pytest.raises(ValueError, match=r"RTRL influence matrix \[B, N, P\] = \[32, 64, 5952\]"):
        est.init_carry(model, params, (32,))
    # at trace time too (a carry made for a smaller batch, a bigger batch)
    est = G.rtrl(max_bytes=2e6)
    carry = est.init_carry(model, params, (1,))
    ids = np.zeros((3, 32), np.int32)
    carry = carry._replace(state=np.zeros((32, 64), np.float32))
    with pytest.raises(ValueError, match="max_bytes"):
        jax.jit(lambda p, c, b: est.value_and_grad(model, p, c, b, None)).trace(
            params, carry, Batch(ids, ids))


def test_stochastic_estimators_need_a_key():
    model, params, batch = _problem(jrnn.elman(3), T=2)
    for est in (G.randomized(0.5), G.uoro()):
        with pytest.raises(ValueError, match="key"):
            est.value_and_grad(model, params, est.init_carry(model, params, (2,)), batch, None)


def test_online_estimators_reject_a_plain_carry():
    model, params, batch = _problem(jrnn.elman(3), T=2)
    for est in (G.rtrl(), G.uoro(), G.snap1()):
        with pytest.raises(TypeError, match="OnlineCarry"):
            est.value_and_grad(model, params, model.cell.initial_carry((2,)), batch, None)


def test_token_ids_and_batch_size_are_checked_eagerly():
    """JAX clamps out-of-range gathers silently; the estimators gather inside a scan."""
    model, params, batch = _problem(jrnn.elman(3), T=2)  # vocab 4, B = 2
    bad = batch._replace(inputs=batch.inputs * 0 + 4)
    for est in (G.full(), G.checkpointed(1), G.rtrl(), G.uoro(), G.snap1()):
        carry = est.init_carry(model, params, (2,))
        with pytest.raises(ValueError, match="token id 4 outside the vocabulary"):
            est.value_and_grad(model, params, carry, bad, jax.random.key(0))
    for est in (G.rtrl(), G.uoro(), G.snap1()):
        with pytest.raises(ValueError, match="batch size"):
            est.value_and_grad(model, params, est.init_carry(model, params, (3,)), batch,
                               jax.random.key(0))
