"""Bidirectional tagger (jrnn.tagging): per-step outputs against separate forward/backward
passes by hand, padding, a loss that falls; the neighbour-sum task."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jrnn
from jrnn import tagging
from jrnn.data import synthetic


def test_neighbour_sum_tags():
    ids, tags, mask, n = synthetic.neighbour_sum_tags(30, 1, 6, 3, rng=0)
    assert ids.shape == tags.shape == mask.shape == (6, 30)
    for b in range(30):
        x = [0] + ids[: n[b], b].tolist() + [0]
        assert tags[: n[b], b].tolist() == [(x[t] + x[t + 2]) % 3 for t in range(n[b])]
        assert not tags[n[b]:, b].any() and not mask[n[b] - 1:, b].any() and mask[: n[b] - 1, b].all()


@pytest.fixture(scope="module")
def tagger():
    return tagging.bidirectional_tagger([(jrnn.gru(5), jrnn.gru(4)), (jrnn.elman(3), jrnn.elman(3))],
                                        vocab_size=4, num_tags=3)


def _hand(cell, p, xs):
    c, out = cell.initial_carry(()), []
    for x in xs:
        c, h = cell.apply(p, c, x)
        out.append(h)
    return out


def test_outputs_join_a_forward_and_a_backward_pass_within_each_length(tagger):
    params = tagger.init(jax.random.key(0))
    ids, _, _, n = synthetic.neighbour_sum_tags(3, 2, 5, 3, rng=1)
    logits = np.asarray(tagger.apply(params, jnp.asarray(ids), jnp.asarray(n)))
    assert logits.shape == (5, 3, 3)
    for b in range(3):
        x = [jnp.int32(v) for v in ids[: n[b], b]]
        for (f, bw), (pf, pb) in zip([(jrnn.gru(5), jrnn.gru(4)), (jrnn.elman(3), jrnn.elman(3))],
                                     params["layers"]):
            hf = _hand(f, pf, x)
            hb = _hand(bw, pb, x[::-1])[::-1]
            x = [jnp.concatenate([a, c]) for a, c in zip(hf, hb)]
        ref = np.stack([np.asarray(h @ params["head"]["W_hq"] + params["head"]["b_q"]) for h in x])
        np.testing.assert_allclose(logits[: n[b], b], ref, rtol=1e-5, atol=1e-6)


def test_padding_never_reaches_real_positions(tagger):
    params = tagger.init(jax.random.key(1))
    ids, tags, mask, n = synthetic.neighbour_sum_tags(4, 2, 6, 3, rng=2)
    real = np.arange(6)[:, None] < n
    other = np.where(real, ids, 3).astype(np.int32)  # garbage ids on the padding
    a = np.asarray(tagger.apply(params, jnp.asarray(ids), jnp.asarray(n)))
    b = np.asarray(tagger.apply(params, jnp.asarray(other), jnp.asarray(n)))
    np.testing.assert_allclose(a[real], b[real], rtol=1e-6)
    batch = jrnn.Batch(ids, tags, mask)
    noisy = jrnn.Batch(other, np.where(real, tags, 2).astype(np.int32), mask)
    assert float(tagger.loss(params, noisy, n)) == pytest.approx(float(tagger.loss(params, batch, n)))
    ce = optax.softmax_cross_entropy_with_integer_labels(a, tags)
    assert float(tagger.loss(params, batch, n)) == pytest.approx(float((ce * mask).sum() / mask.sum()),
                                                                 rel=1e-5)


def test_loss_falls_with_autodiff_steps():
    tg = tagging.bidirectional_tagger([(jrnn.gru(16), jrnn.gru(16))], 4, 3)
    ids, tags, mask, n = synthetic.neighbour_sum_tags(32, 3, 6, 3, rng=3)
    batch, n = jrnn.Batch(ids, tags, mask), jnp.asarray(n)
    params = tg.init(jax.random.key(0))
    opt = optax.adam(0.03)
    state = opt.init(params)

    @jax.jit
    def step(p, s):
        l, g = jax.value_and_grad(tg.loss)(p, batch, n)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, l

    first = None
    for _ in range(60):
        params, state, l = step(params, state)
        first = float(l) if first is None else first
    assert float(tg.loss(params, batch, n)) < 0.5 * first


def test_errors():
    with pytest.raises(TypeError, match="Cell pairs"):
        tagging.bidirectional_tagger([jrnn.gru(3)], 4, 3)
    tg = tagging.bidirectional_tagger([(jrnn.gru(3), jrnn.gru(3))], 4, 3)
    with pytest.raises(ValueError):
        tg.apply(tg.init(jax.random.key(0)), jnp.full((2, 1), 7, jnp.int32), jnp.array([2]))


def test_the_tagger_model_trains_through_fit_with_full_bptt_and_refuses_causal_estimators():
    layers = [(jrnn.gru(6), jrnn.gru(5))]
    model, tg = tagging.tagger_model(layers, 5, 4), tagging.bidirectional_tagger(layers, 5, 4)
    rng = np.random.default_rng(0)
    T, B = 6, 4
    n = np.array([6, 3, 5, 1])
    mask = (np.arange(T)[:, None] < n).astype(np.float32)
    batch = jrnn.Batch(rng.integers(0, 5, (T, B)).astype(np.int32),
                       rng.integers(0, 4, (T, B)).astype(np.int32), mask, lengths=n)
    p, pt = model.init(jax.random.key(0)), tg.init(jax.random.key(0))
    # the Model's loss is the Tagger's (the same params, the lengths from the batch)
    assert float(jrnn.sequence_loss(model, p, None, batch)[0]) == pytest.approx(
        float(tg.loss(pt, batch, n)), rel=1e-6)
    assert jrnn.evaluate(model, p, [batch]) == pytest.approx(
        float(tg.loss(pt, batch, n)), rel=1e-6)  # evaluation: the same masked mean
    res = jrnn.fit(model, jrnn.make_optimizer("adam", 0.02), lambda e: [batch] * 15, batch_size=B,
                   config=jrnn.LoopConfig(epochs=2, log_every=15, progress=False, quiet=True))
    losses = [r["train_loss"] for r in res.history if "train_loss" in r]
    assert losses[-1] < 0.7 * losses[0]
    opt = jrnn.make_optimizer("sgd", 0.1)
    for spec in ("truncated:2", "tbptt:2", "checkpointed:2", "rtrl", "pes"):
        est = jrnn.grads.parse(spec)
        with pytest.raises(ValueError, match="causal carry"):
            jrnn.train_step(model, opt, est)(jrnn.init_state(model, opt, est, jax.random.key(0), B),
                                             batch, jax.random.key(1))
