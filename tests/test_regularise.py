"""Dropout (jrnn.regularise): masks, their application against a NumPy loop, every estimator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import regularise as R

V, H, B, T = 7, 6, 4, 5


def _batch(seed=0, tokens=True, D=3):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, V, (T, B)).astype(np.int32) if tokens else rng.normal(size=(T, B, D)).astype(np.float32)
    return jrnn.Batch(x, rng.integers(0, V, (T, B)).astype(np.int32))


def test_masks_are_inverted_bernoulli_with_the_requested_rate_and_repeat_with_the_key():
    model = jrnn.language_model(jrnn.stack([jrnn.lstm(64), jrnn.gru(64)]), 50)
    rates = R.Dropout(weight_drop=0.5, embedding=0.2, recurrent=0.3, between=0.4, output=0.1)
    m = R.sample_masks(model, rates, jax.random.key(3), 32)
    assert m.weight[0].shape == (64, 256) and m.weight[1].shape == (64, 192)
    assert m.inputs[0] is None and m.inputs[1].shape == (32, 64)  # token model: no inputs mask
    assert m.recurrent[1].shape == (32, 64) and m.output.shape == (32, 64) and m.embedding.shape == (50,)
    for mask, p in [(m.weight[0], 0.5), (m.inputs[1], 0.4), (m.recurrent[0], 0.3), (m.output, 0.1)]:
        a = np.asarray(mask)
        assert set(np.unique(a)) <= {0.0, np.float32(1 / (1 - p))}
        # the dropped fraction within 4 binomial sds of p
        assert abs((a == 0).mean() - p) < 4 * np.sqrt(p * (1 - p) / a.size), (p, (a == 0).mean())
    again = R.sample_masks(model, rates, jax.random.key(3), 32)
    other = R.sample_masks(model, rates, jax.random.key(4), 32)
    assert np.array_equal(again.weight[0], m.weight[0]) and not np.array_equal(other.weight[0], m.weight[0])
    assert R.dropout(model) is model  # all rates 0: nothing changes
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        R.dropout(model, output=1.0)
    with pytest.raises(ValueError, match="embedding dropout needs a token model"):
        R.dropout(jrnn.regressor(jrnn.gru(4), 3, 1), embedding=0.1)


def _numpy_elman_loss(p, m, x, y):
    """Mean CE of an Elman net with the masks applied by hand (inputs, h_{t-1}, W_hh, output)."""
    W_xh, W_hh, b_h = (np.asarray(p["cell"][k], np.float64) for k in ("W_xh", "W_hh", "b_h"))
    W_hq, b_q = np.asarray(p["head"]["W_hq"], np.float64), np.asarray(p["head"]["b_q"], np.float64)
    W_hh = W_hh * np.asarray(m.weight[0])
    h, total = np.zeros((B, H)), 0.0
    for t in range(T):
        h = np.tanh((x[t] * np.asarray(m.inputs[0])) @ W_xh + (h * np.asarray(m.recurrent[0])) @ W_hh + b_h)
        o = (h * np.asarray(m.output)) @ W_hq + b_q
        o = o - o.max(-1, keepdims=True)
        logp = o - np.log(np.exp(o).sum(-1, keepdims=True))
        total -= logp[np.arange(B), y[t]].sum()
    return total / (T * B)


def test_the_trained_loss_applies_every_mask_as_a_numpy_loop_does():
    model = jrnn.classifier(jrnn.elman(H), 3, V)
    rm = R.dropout(model, weight_drop=0.3, inputs=0.2, recurrent=0.25, output=0.15)
    b = _batch(tokens=False)
    params = model.init(jax.random.key(0))
    masks = R.sample_masks(model, rm.regularise.rates, jax.random.key(5), B)
    transform, trained = R.apply_masks(model, masks)
    loss, _ = jrnn.sequence_loss(trained, transform(params), jnp.zeros((B, H)), b)
    assert float(loss) == pytest.approx(_numpy_elman_loss(params, masks, b.inputs, b.targets), rel=1e-5)
    # and the train step uses exactly those masks (fold_in(key, MASK_STREAM)), gradient mapped back
    opt = jrnn.make_optimizer("sgd", 1.0, clip=None)
    state = jrnn.init_state(rm, opt, jrnn.grads.full(), jax.random.key(0), B)
    key = jax.random.key(9)
    masks = R.sample_masks(model, rm.regularise.rates, jax.random.fold_in(key, R.MASK_STREAM), B)
    transform, trained = R.apply_masks(model, masks)
    want = jax.grad(lambda p: jrnn.sequence_loss(trained, transform(p), jnp.zeros((B, H)), b)[0])(params)
    new, met = jrnn.train_step(rm, opt, donate=False)(state, b, key)
    for g, p0, p1 in zip(jax.tree.leaves(want), jax.tree.leaves(state.params), jax.tree.leaves(new.params)):
        np.testing.assert_allclose(np.asarray(p0 - p1), np.asarray(g), rtol=1e-5, atol=1e-7)  # sgd lr 1
    dropped = np.asarray(masks.weight[0]) == 0
    assert dropped.any() and np.all(np.asarray(want["cell"]["W_hh"])[dropped] == 0)  # no grad to dropped weights


def test_online_estimators_see_the_same_per_batch_masks_rtrl_equals_full_bptt():
    model = jrnn.language_model(jrnn.gru(H), V)
    rm = R.dropout(model, weight_drop=0.4, embedding=0.3)
    opt = jrnn.make_optimizer("sgd", 1.0, clip=None)
    b, key = _batch(1), jax.random.key(2)
    out = {}
    for spec in ("full", "rtrl"):
        est = jrnn.grads.parse(spec)
        st = jrnn.init_state(rm, opt, est, jax.random.key(0), B)
        out[spec] = jrnn.train_step(rm, opt, est, donate=False)(st, b, key)[0].params
    for a, c in zip(jax.tree.leaves(out["full"]), jax.tree.leaves(out["rtrl"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=2e-5, atol=1e-6)
    with pytest.raises(ValueError, match="one example at a time.*recurrent"):
        jrnn.train_step(R.dropout(model, recurrent=0.2), opt, jrnn.grads.parse("uoro"))


def test_every_other_estimator_trains_a_stack_with_all_masks_and_evaluation_has_none():
    model = jrnn.language_model(jrnn.stack([jrnn.lstm(H), jrnn.gru(H)]), V)
    rm = R.dropout(model, weight_drop=0.3, embedding=0.1, recurrent=0.2, between=0.3, output=0.2)
    opt = jrnn.make_optimizer("adam", 0.01)
    b = _batch(2)
    losses = {}
    for spec in ("full", "truncated:2", "checkpointed:2", "pes"):
        est = jrnn.grads.parse(spec)
        st = jrnn.init_state(rm, opt, est, jax.random.key(0), B)
        _, met = jrnn.train_step(rm, opt, est)(st, b, jax.random.key(1))
        losses[spec] = float(met["loss"])
    clean = float(jrnn.sequence_loss(model, model.init(jax.random.key(0)), None, b)[0])
    assert losses["full"] == pytest.approx(losses["checkpointed:2"], rel=1e-6)  # same masks
    assert losses["full"] != pytest.approx(clean, rel=1e-4)  # the masks changed the loss...
    params = model.init(jax.random.key(0))
    batches = lambda: [b]
    assert jrnn.held_out(rm, batches)(params) == jrnn.held_out(model, batches)(params)  # ...not evaluation


def test_the_config_builds_the_dropout_it_records_and_refuses_dropout_without_a_stack():
    import argparse

    from jrnn import config as C

    parser = argparse.ArgumentParser()
    C.add_flags(parser)
    cfg = C.from_flags(parser.parse_args(["--layers", "2", "--dropout", "0.25", "--weight-drop", "0.5",
                                          "--recurrent-dropout", "0.1"]))
    model = C.build_model(cfg.model, 11)
    assert model.regularise.rates == R.Dropout(weight_drop=0.5, recurrent=0.1, between=0.25)
    back = C.TrainConfig.from_json(cfg.to_json())
    assert back.model.dropout_rates() == model.regularise.rates
    assert C.build_model(C.ModelConfig(), 11).regularise is None  # no rates: the plain model
    with pytest.raises(ValueError, match="dropout acts between stacked layers"):
        C.ModelConfig(layers=1, dropout=0.2)
    with pytest.raises(ValueError, match=r"weight_drop must be a number in \[0, 1\)"):
        C.ModelConfig(weight_drop=1.5)
