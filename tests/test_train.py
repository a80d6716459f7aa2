"""The train step, fit, generation and metrics, checked end to end."""

import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import data

def _norm(tree):
    return np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree.leaves(tree)))


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def time_machine(monkeypatch):
    if "JRNN_DATA_DIR" not in os.environ:
        if not (SHARED / "timemachine.txt").exists():
            pytest.skip("The Time Machine is not available offline")
        monkeypatch.setenv("JRNN_DATA_DIR", str(SHARED))
    return data.time_machine()


def test_training_on_time_machine_beats_uniform_baseline(time_machine):
    corpus, vocab = data.load_corpus(time_machine, max_tokens=30_000)
    train, val = data.split(corpus, 0.1)
    assert len(vocab) == 28
    model = jrnn.language_model(jrnn.gru(64), len(vocab))
    opt = jrnn.make_optimizer("adam", 0.01, 1.0)
    B, T = 32, 35
    val_batches = lambda: data.sequential_batches(val, 16, T, 0)
    params0 = model.init(jax.random.key(0))
    ppl0 = math.exp(jrnn.evaluate(model, params0, val_batches()))
    res = jrnn.fit(model, opt, lambda ep: data.batches(train, B, T, "sequential", seed=0, epoch=ep),
                   batch_size=B, validate=jrnn.held_out(model, val_batches),
                   config=jrnn.LoopConfig(epochs=3, progress=False))
    ppl = [h["val_ppl"] for h in res.history if "val_ppl" in h]
    # an untrained model is about uniform (perplexity ~ vocab size); trained, far below
    assert ppl0 > 0.8 * len(vocab)
    assert ppl[-1] < 0.45 * len(vocab), ppl
    assert ppl[-1] < ppl[0]


def _toy(cell=None, V=7, B=3, T=6, seed=0):
    model = jrnn.language_model(cell or jrnn.gru(8), V)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, V, (T, B)).astype(np.int32)
    y = rng.integers(0, V, (T, B)).astype(np.int32)
    return model, jrnn.Batch(x, y)


def test_train_step_is_one_sgd_step_on_the_full_gradient():
    model, batch = _toy()
    opt = jrnn.make_optimizer("sgd", 0.5, None)
    state = jrnn.init_state(model, opt, jrnn.grads.full(), jax.random.key(1), 3)
    p0 = jax.tree.map(np.asarray, state.params)
    c0 = state.carry
    loss_ref, g = jax.value_and_grad(lambda p: jrnn.sequence_loss(model, p, c0, batch)[0])(p0)
    # independent reference for the loss: softmax cross-entropy by hand in NumPy
    hs, _ = jrnn.unroll(model.cell, p0["cell"], batch.inputs)
    logits = np.asarray(hs) @ p0["head"]["W_hq"] + p0["head"]["b_q"]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, batch.targets[..., None], -1).mean()
    np.testing.assert_allclose(loss_ref, nll, rtol=1e-5)
    step = jrnn.train_step(model, opt)
    state, m = step(state, batch, jax.random.key(0))
    np.testing.assert_allclose(m["loss"], nll, rtol=1e-5)
    expect = jax.tree.map(lambda p, g: p - 0.5 * g, p0, g)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(expect)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m["grad_norm"], _norm(g), rtol=1e-5)
    assert int(state.step) == 1


def test_clipping_is_global_norm():
    model, batch = _toy()
    opt = jrnn.make_optimizer("sgd", 1.0, 1e-3)
    state = jrnn.init_state(model, opt, jrnn.grads.full(), jax.random.key(1), 3)
    p0 = jax.tree.map(np.asarray, state.params)
    state, m = jrnn.train_step(model, opt)(state, batch, jax.random.key(0))
    delta = jax.tree.map(lambda a, b: np.asarray(a) - b, state.params, p0)
    assert float(m["grad_norm"]) > 1e-3
    np.testing.assert_allclose(_norm(delta), 1e-3, rtol=1e-4)


def test_sequential_carry_is_detached_final_carry_and_random_resets():
    model, batch = _toy(jrnn.lstm(5))
    opt = jrnn.make_optimizer("sgd", 1e-9, None)
    state = jrnn.init_state(model, opt, jrnn.grads.full(), jax.random.key(2), 3)
    params = state.params
    _, final = jrnn.unroll(model.cell, params["cell"], batch.inputs)
    s1, _ = jrnn.train_step(model, opt, carry_over=True)(state, batch, jax.random.key(0))
    np.testing.assert_allclose(s1.carry.h, final.h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s1.carry.c, final.c, rtol=1e-5, atol=1e-6)
    # a second sequential step starts from the carried state: its loss differs
    # from a fresh start, and random sampling (carry_over=False) equals a fresh start
    fresh = jrnn.sequence_loss(model, s1.params, model.cell.initial_carry((3,)), batch)[0]
    carried = jrnn.sequence_loss(model, s1.params, s1.carry, batch)[0]
    _, m_seq = jrnn.train_step(model, opt, carry_over=True, donate=False)(s1, batch, jax.random.key(0))
    _, m_rand = jrnn.train_step(model, opt, carry_over=False, donate=False)(s1, batch, jax.random.key(0))
    np.testing.assert_allclose(m_seq["loss"], carried, rtol=1e-5)
    np.testing.assert_allclose(m_rand["loss"], fresh, rtol=1e-5)
    assert abs(float(carried) - float(fresh)) > 1e-6


def test_second_step_does_not_recompile():
    model, batch = _toy()
    opt = jrnn.make_optimizer("adam", 1e-3, 1.0)
    state = jrnn.init_state(model, opt, jrnn.grads.full(), jax.random.key(1), 3)
    step = jrnn.train_step(model, opt)
    for i in range(3):
        state, _ = step(state, batch, jax.random.key(i))
    assert step._cache_size() == 1


def test_nonfinite_update_is_not_applied():
    model = jrnn.regressor(jrnn.elman(4), 2, 1)
    opt = jrnn.make_optimizer("sgd", 0.1, 1.0)
    state = jrnn.init_state(model, opt, jrnn.grads.full(), jax.random.key(0), 2)
    p0 = jax.tree.map(np.asarray, state.params)
    x = np.ones((5, 2, 2), np.float32)
    x[2, 1, 0] = np.nan
    state, m = jrnn.train_step(model, opt)(state, jrnn.Batch(x, np.zeros((5, 2, 1), np.float32)),
                                           jax.random.key(0))
    assert not bool(m["finite"])
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(p0)):
        np.testing.assert_array_equal(a, b)


def test_vmapped_seeds_equal_separate_runs():
    model, batch = _toy()
    opt = jrnn.make_optimizer("sgd", 0.3, 1.0)
    est = jrnn.grads.full()
    keys = jax.random.split(jax.random.key(5), 3)
    states = jrnn.init_states(model, opt, est, keys, 3)
    step_s = jrnn.train_step(model, opt, est, seeds=3)
    step_1 = jrnn.train_step(model, opt, est)
    singles = [jrnn.init_state(model, opt, est, k, 3) for k in keys]
    for i in range(3):
        ks = jax.random.split(jax.random.key(100 + i), 3)
        states, ms = step_s(states, batch, ks)
        for s in range(3):
            singles[s], m = step_1(singles[s], batch, ks[s])
            np.testing.assert_allclose(ms["loss"][s], m["loss"], rtol=1e-5)
    for s in range(3):
        for a, b in zip(jax.tree.leaves(states.params), jax.tree.leaves(singles[s].params)):
            np.testing.assert_allclose(a[s], b, rtol=1e-5, atol=1e-6)


def test_greedy_prediction_matches_hand_loop():
    model, _ = _toy(jrnn.elman(6), V=5)
    params = model.init(jax.random.key(3))
    prefix = np.array([1, 4, 2], np.int32)
    out = jrnn.predict(model, params, prefix, 6)
    # reference: NumPy loop with the one-hot input product and argmax
    p, hp = jax.tree.map(np.asarray, params["cell"]), jax.tree.map(np.asarray, params["head"])
    h, seq = np.zeros(6, np.float32), list(prefix)
    for t in range(len(prefix) + 6 - 1):
        x = np.eye(5, dtype=np.float32)[seq[t]]
        h = np.tanh(x @ p["W_xh"] + h @ p["W_hh"] + p["b_h"])
        if t >= len(prefix) - 1:
            seq.append(int(np.argmax(h @ hp["W_hq"] + hp["b_q"])))
    np.testing.assert_array_equal(out, seq)


def test_sampling_is_deterministic_given_key_and_validated():
    model, _ = _toy(jrnn.gru(6), V=5)
    params = model.init(jax.random.key(3))
    a = jrnn.predict(model, params, np.array([1]), 30, key=jax.random.key(7), temperature=1.0)
    b = jrnn.predict(model, params, np.array([1]), 30, key=jax.random.key(7), temperature=1.0)
    c = jrnn.predict(model, params, np.array([1]), 30, key=jax.random.key(8), temperature=1.0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        jrnn.predict(model, params, np.array([1, 9]), 3)
    with pytest.raises(ValueError, match="key"):
        jrnn.predict(model, params, np.array([1]), 3, temperature=0.5)
    with pytest.raises(ValueError, match="prefix_ids"):
        jrnn.predict(model, params, np.array([], np.int32), 3)


def test_metrics():
    assert jrnn.perplexity(0.0) == 1.0
    np.testing.assert_allclose(jrnn.perplexity(math.log(28)), 28.0)
    np.testing.assert_allclose(jrnn.bits_per_char(math.log(2)), 1.0)
    logits = jnp.array([[0.1, 2.0], [3.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(jrnn.accuracy(logits, jnp.array([1, 1, 1])), 2 / 3, rtol=1e-6)
    np.testing.assert_allclose(jrnn.accuracy(logits, jnp.array([1, 1, 1]), jnp.array([1.0, 0.0, 0.0])), 1.0)


@pytest.mark.parametrize("kw, match", [
    (dict(name="sgdd"), "optimizer"), (dict(lr=0.0), "lr"), (dict(lr=-1.0), "lr"),
    (dict(lr=float("nan")), "lr"), (dict(clip=0.0), "clip"),
])
def test_make_optimizer_rejects_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        jrnn.make_optimizer(**{"name": "sgd", "lr": 1.0, "clip": 1.0, **kw})


def test_fit_rejects_out_of_vocabulary_and_batch_major_batches():
    model, _ = _toy(V=5)
    x = np.full((4, 2), 7, np.int32)
    quiet = jrnn.LoopConfig(progress=False)
    with pytest.raises(ValueError, match="token id 7 .*outside the vocabulary"):
        jrnn.fit(model, jrnn.make_optimizer(), lambda ep: [jrnn.Batch(x, x)], batch_size=2, config=quiet)
    with pytest.raises(TypeError, match="must yield time-major jrnn.Batch"):
        jrnn.fit(model, jrnn.make_optimizer(), lambda ep: [(x.T, x.T)], batch_size=2, config=quiet)
