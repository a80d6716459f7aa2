"""Encoder-decoder over one stream (jrnn.seq2seq): layout, masking, the decoders, estimators."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrnn
from jrnn import seq2seq as s2s
from jrnn.data import synthetic

K = 2  # symbols 1..2 -> ids 3, 4; V = 5


@pytest.fixture(scope="module")
def ed():
    return s2s.encoder_decoder(jrnn.gru(6), K)


@pytest.fixture(scope="module")
def params(ed):
    p = ed.model.init(jax.random.key(1))
    # larger weights than the default init: peaked, distinct probabilities for the decoders
    return jax.tree.map(lambda a: 3.0 * a, p)


def _pairs():
    src = np.array([[1, 2], [2, 0], [1, 0]], np.int32)  # [S=3, B=2]: lengths 3 and 1
    tgt = np.array([[2, 1], [1, 0]], np.int32)          # lengths 2 and 1
    return src, np.array([3, 1], np.int32), tgt, np.array([2, 1], np.int32)


def test_stream_layout(ed):
    b = s2s.stream(ed, *_pairs())
    V = ed.vocab_size
    # example 0: source 1 2 1, target 2 1 -> ids 3 4 3 | V+BOS V+4 V+3 ; targets 4 3 EOS
    np.testing.assert_array_equal(b.inputs[:, 0], [3, 4, 3, V + 1, V + 4, V + 3])
    np.testing.assert_array_equal(b.targets[:, 0], [0, 0, 0, 4, 3, 2])
    np.testing.assert_array_equal(b.mask[:, 0], [0, 0, 0, 1, 1, 1])
    # example 1: source 2, target 1 -> 4 | V+BOS V+3 | pad...
    np.testing.assert_array_equal(b.inputs[:, 1], [4, V + 1, V + 3, V, V, V])
    np.testing.assert_array_equal(b.targets[:, 1], [0, 3, 2, 0, 0, 0])
    np.testing.assert_array_equal(b.mask[:, 1], [0, 1, 1, 0, 0, 0])


def _loss(ed, params, batch):
    B = batch.inputs.shape[1]
    return float(jrnn.sequence_loss(ed.model, params, ed.model.cell.initial_carry((B,)), batch)[0])


def test_padding_is_masked_and_examples_are_independent(ed, params):
    src, n, tgt, m = _pairs()
    b = s2s.stream(ed, src, n, tgt, m)
    # garbage beyond each length (in the padded sources/targets and the stream's tail) changes nothing
    src2, tgt2 = src.copy(), tgt.copy()
    src2[1:, 1], tgt2[1, 1] = 2, 2
    b2 = s2s.stream(ed, src2, n, tgt2, m)
    np.testing.assert_array_equal(b2.inputs, b.inputs)
    tail = b.mask == 0
    noisy = jrnn.Batch(b.inputs, np.where(tail, 4, b.targets).astype(np.int32), b.mask)
    assert _loss(ed, params, noisy) == pytest.approx(_loss(ed, params, b), rel=1e-6)
    # the batch loss is the token-weighted mean of each example's loss computed alone
    alone = [_loss(ed, params, s2s.stream(ed, src[:, j:j + 1], n[j:j + 1], tgt[:, j:j + 1],
                                          m[j:j + 1])) for j in range(2)]
    w = m + 1
    assert _loss(ed, params, b) == pytest.approx(float(np.dot(alone, w) / w.sum()), rel=1e-5)


def test_stream_loss_equals_encode_then_decode(ed, params):
    """The teacher-forced stream (one cell) against encoder unroll + decoder steps fed the targets."""
    src, n, tgt, m = _pairs()
    b = s2s.stream(ed, src, n, tgt, m)
    ids = np.full((3, 2), s2s.PAD, np.int32)
    for j in range(2):
        ids[: m[j] + 1, j] = list(tgt[: m[j], j] + 2) + [s2s.EOS]
    lp = np.asarray(s2s.log_prob(ed, params, src, n, ids))
    # stream: per-position CE; sum over each example's masked positions = -log p(target, eos)
    hs, _ = jrnn.unroll(ed.model.cell, params["cell"], jnp.asarray(b.inputs))
    ce = optax.softmax_cross_entropy_with_integer_labels(ed.model.head(params["head"], hs), b.targets)
    np.testing.assert_allclose(-(np.asarray(ce) * b.mask).sum(0), lp, rtol=1e-5)
    # and by hand: encoder cell steps over the source, then decoder steps from its final carry
    for j in range(2):
        c = ed.encoder.initial_carry(())
        for t in range(n[j]):
            c, _ = ed.encoder.apply(params["cell"]["enc"], c, jnp.int32(src[t, j] + 2))
        prev, total = s2s.BOS, 0.0
        for y in ids[: m[j] + 1, j]:
            c, h = ed.decoder.apply(params["cell"]["dec"], c, jnp.int32(prev))
            total += float(jax.nn.log_softmax(ed.model.head(params["head"], h))[y])
            prev = y
        assert total == pytest.approx(float(lp[j]), rel=1e-5)


def test_beam_one_is_greedy(ed, params):
    src, n, _, _ = synthetic.reversal(5, 1, 4, K, rng=0)
    g = s2s.greedy(ed, params, src, n, max_len=5)
    b = s2s.beam_search(ed, params, src, n, max_len=5, beam=1)
    np.testing.assert_array_equal(b.symbols, g.symbols)
    np.testing.assert_array_equal(b.lengths, g.lengths)
    np.testing.assert_allclose(b.log_prob, g.log_prob, rtol=1e-6)
    assert g.symbols.shape == (5, 5) and g.lengths.shape == (5,)


def _enumerate(max_len):
    """Every complete output (ids): up to max_len ids, ending at the first EOS or at max_len."""
    out = []
    for L in range(1, max_len + 1):
        for body in itertools.product([3, 4], repeat=L - 1):
            out.append(list(body) + [s2s.EOS])
        if L == max_len:
            out += [list(p) for p in itertools.product([3, 4], repeat=L)]
    return out


def test_wide_beam_finds_the_enumerated_best(ed, params):
    L = 3
    src, n = np.array([[1, 2], [2, 2]], np.int32), np.array([2, 1], np.int32)
    seqs = _enumerate(L)
    assert len(seqs) == 1 + 2 + 4 + 8
    ids = np.full((L, len(seqs)), s2s.PAD, np.int32)
    for i, s in enumerate(seqs):
        ids[: len(s), i] = s
    res = s2s.beam_search(ed, params, src, n, max_len=L, beam=9)  # (K+1)^(L-1) prefixes: no pruning
    narrow = s2s.beam_search(ed, params, src, n, max_len=L, beam=2)
    for j in range(2):
        lp = np.asarray(s2s.log_prob(ed, params, np.repeat(src[:, j:j + 1], len(seqs), 1),
                                     np.repeat(n[j:j + 1], len(seqs)), ids))
        best = seqs[int(np.argmax(lp))]
        sym = [t - 2 for t in best if t != s2s.EOS]
        assert int(res.lengths[j]) == len(sym)
        np.testing.assert_array_equal(np.asarray(res.symbols[: len(sym), j]), sym)
        assert bool(res.ended[j]) == (best[-1] == s2s.EOS)
        assert float(res.log_prob[j]) == pytest.approx(float(lp.max()), rel=1e-5)
        assert float(narrow.log_prob[j]) <= float(lp.max()) + 1e-6


def test_trains_through_fit_and_loss_decreases():
    ed = s2s.encoder_decoder(jrnn.gru(16), 3)
    data = [s2s.stream(ed, *synthetic.reversal(16, 1, 3, 3, rng=i), num_steps=7) for i in range(2)]
    opt = jrnn.make_optimizer("adam", lr=0.03, clip=1.0)
    res = jrnn.fit(ed.model, opt, lambda epoch: iter(data), batch_size=16, carry_over=False,
                   config=jrnn.LoopConfig(epochs=15, progress=False, quiet=True, log_every=30))
    p0 = ed.model.init(jax.random.key(0))
    before = np.mean([_loss(ed, p0, b) for b in data])
    after = np.mean([_loss(ed, res.state.params, b) for b in data])
    assert after < 0.6 * before, (before, after)


def test_estimators_rtrl_equals_full_uoro_runs_snap1_exact_at_two_steps(ed, params):
    b = s2s.stream(ed, *_pairs())
    carry = ed.model.cell.initial_carry((2,))
    key = jax.random.key(0)
    lf, gf, _, _ = jrnn.grads.full().value_and_grad(ed.model, params, carry, b, key)
    rt = jrnn.grads.rtrl()
    lr, gr, _, _ = rt.value_and_grad(ed.model, params, rt.init_carry(ed.model, params, (2,)), b, key)
    assert float(lr) == pytest.approx(float(lf), rel=1e-5)
    jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-3, atol=1e-5), gr, gf)
    uo = jrnn.grads.uoro()
    lu, gu, _, _ = uo.value_and_grad(ed.model, params, uo.init_carry(ed.model, params, (2,)), b, key)
    assert float(lu) == pytest.approx(float(lf), rel=1e-5)
    assert all(np.isfinite(a).all() for a in jax.tree.leaves(gu))
    # SnAp-1 is exact (= RTRL = full BPTT) for T <= 2 from a fresh carry: 1 symbol, empty target
    short = s2s.stream(ed, np.array([[1]], np.int32), np.array([1], np.int32),
                       np.zeros((1, 1), np.int32), np.array([0], np.int32))
    assert short.inputs.shape == (2, 1)
    sn = jrnn.grads.snap1()
    _, gs, _, _ = sn.value_and_grad(ed.model, params, sn.init_carry(ed.model, params, (1,)), short, key)
    _, g1, _, _ = jrnn.grads.full().value_and_grad(ed.model, params, ed.model.cell.initial_carry((1,)),
                                                   short, key)
    jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-6), gs, g1)


def test_errors(ed, params):
    src, n, tgt, m = _pairs()
    with pytest.raises(ValueError, match="symbols must lie in"):
        s2s.stream(ed, src + 5, n, tgt, m)
    with pytest.raises(ValueError, match="num_steps=3 is shorter"):
        s2s.stream(ed, src, n, tgt, m, num_steps=3)
    assert s2s.stream(ed, src, n, tgt, m, num_steps=9).mask.sum() == 5
    with pytest.raises(ValueError, match="lengths must lie in"):
        s2s.stream(ed, src, np.array([0, 1], np.int32), tgt, m)
    with pytest.raises(ValueError, match="decoder's carry must match"):
        s2s.encoder_decoder(jrnn.gru(6), K, decoder=jrnn.lstm(6))
    with pytest.raises(ValueError, match="beam"):
        s2s.beam_search(ed, params, src, n, max_len=3, beam=0)
    with pytest.raises(ValueError, match="out of range|vocabulary|\\[0, 10\\)"):
        jrnn.sequence_loss(ed.model, params, ed.model.cell.initial_carry((2,)),
                           jrnn.Batch(np.full((2, 2), 10, np.int32), np.zeros((2, 2), np.int32)))
