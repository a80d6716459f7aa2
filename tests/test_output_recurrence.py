"""Output-to-hidden recurrence (jrnn.output_recurrence): a NumPy reference, teacher forcing vs
free running, masking, estimators."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import output_recurrence as orc
from jrnn.data import synthetic


def _numpy_forward(p, xs, prev, flags, feedback):
    """Hand loop of fig. 10.4: h = tanh(x Wx + f Wf + b), o = h Wo + bo; f = target or own output."""
    p = jax.tree.map(np.asarray, p)
    T, B, _ = xs.shape
    carry = np.zeros((B, p["W_o"].shape[1]), np.float32)
    outs = []
    for t in range(T):
        fed = np.where(flags[t][:, None] > 0.5, prev[t], carry)
        o = np.tanh(xs[t] @ p["W_x"] + fed @ p["W_f"] + p["b_h"]) @ p["W_o"] + p["b_o"]
        carry = o if feedback == "value" else np.exp(o) / np.exp(o).sum(-1, keepdims=True)
        outs.append(o)
    return np.stack(outs)


def _outputs(model, params, stream):
    hs, _ = jrnn.unroll(model.cell, params["cell"], jnp.asarray(stream))
    return np.asarray(hs)


@pytest.mark.parametrize("feedback", ["value", "probs"])
def test_matches_numpy_loop_under_mixed_flags(feedback):
    model = orc.output_model(5, 1, 3, feedback)
    params = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(6, 2, 1)).astype(np.float32)
    ys = rng.normal(size=(6, 2, 3)).astype(np.float32)
    flags = orc.schedule(6, 2, 0.5, rng)
    stream = orc.inputs(xs, ys, flags)
    assert stream.shape == (6, 2, 1 + 3 + 1)
    prev = np.concatenate([np.zeros((1, 2, 3), np.float32), ys[:-1]])
    np.testing.assert_allclose(_outputs(model, params, stream),
                               _numpy_forward(params["cell"], xs, prev, flags, feedback),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("feedback", ["value", "probs"])
def test_teacher_forcing_equals_free_running_when_fed_its_own_outputs(feedback):
    model = orc.output_model(5, 1, 3, feedback)
    params = model.init(jax.random.key(1))
    xs = np.random.default_rng(1).normal(size=(7, 2, 1)).astype(np.float32)
    start = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
    zeros = np.zeros((7, 2, 3), np.float32)
    free = _outputs(model, params, orc.inputs(xs, zeros, orc.schedule(7, 2, 0.0, 0), start))
    fed = free if feedback == "value" else np.asarray(jax.nn.softmax(free, -1))
    forced = _outputs(model, params, orc.inputs(xs, fed, 1.0, start))
    np.testing.assert_allclose(forced, free, rtol=1e-6, atol=1e-7)
    # and they differ once the fed targets are not the model's own outputs
    other = _outputs(model, params, orc.inputs(xs, fed + 0.5, 1.0, start))
    assert np.abs(other[1:] - free[1:]).max() > 1e-3


def test_teacher_forcing_needs_no_bptt_free_running_does():
    """Under teacher forcing no gradient flows through the carry: truncated:1 = full BPTT."""
    model = orc.output_model(6, 1, 2, "value")
    params = model.init(jax.random.key(2))
    xs, ys, start = synthetic.rotation(3, 5, rng=0)
    key, carry = jax.random.key(0), model.cell.initial_carry((3,))
    grads = {}
    for mode, p in (("teacher", 1.0), ("free", 0.0)):
        b = jrnn.Batch(orc.inputs(xs, ys, orc.schedule(5, 3, p, 0), start), ys)
        grads[mode] = [jrnn.grads.parse(e).value_and_grad(model, params, carry, b, key)[1]
                       for e in ("full", "truncated:1")]
        if mode == "free":  # RTRL is exact: equals full BPTT
            rt = jrnn.grads.rtrl()
            g = rt.value_and_grad(model, params, rt.init_carry(model, params, (3,)), b, key)[1]
            jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-6),
                         g, grads[mode][0])
    full, trunc = grads["teacher"]
    jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7), full, trunc)
    full, trunc = grads["free"]
    diff = max(float(jnp.abs(a - c).max()) for a, c in zip(jax.tree.leaves(full), jax.tree.leaves(trunc)))
    assert diff > 1e-4


def test_masked_positions_do_not_count():
    model = orc.output_model(4, 1, 2, "value")
    params = model.init(jax.random.key(3))
    xs, ys, start = synthetic.rotation(2, 6, rng=1)
    stream = orc.inputs(xs, ys, 1.0, start)
    mask = np.ones((6, 2), np.float32)
    mask[4:, 1] = 0.0
    carry = model.cell.initial_carry((2,))
    loss = float(jrnn.sequence_loss(model, params, carry, jrnn.Batch(stream, ys, mask))[0])
    ys2 = ys.copy()
    ys2[4:, 1] += 10.0  # changes only the masked targets (teacher-forced inputs are built from ys)
    loss2 = float(jrnn.sequence_loss(model, params, carry, jrnn.Batch(stream, ys2, mask))[0])
    assert loss2 == pytest.approx(loss, rel=1e-6)
    o = _outputs(model, params, stream)
    ref = (0.5 * ((o - ys) ** 2).sum(-1) * mask).sum() / mask.sum()
    assert loss == pytest.approx(float(ref), rel=1e-5)


def test_loss_decreases_through_fit_and_snap1_refuses():
    model = orc.output_model(16, 1, 2, "value")
    xs, ys, start = synthetic.rotation(16, 10, rng=2)
    batch = jrnn.Batch(orc.inputs(xs, ys, 1.0, start), ys)
    opt = jrnn.make_optimizer("adam", lr=0.02, clip=1.0)
    res = jrnn.fit(model, opt, lambda epoch: iter([batch] * 40), batch_size=16, carry_over=False,
                   config=jrnn.LoopConfig(epochs=1, progress=False, quiet=True, log_every=40))
    carry = model.cell.initial_carry((16,))
    before = float(jrnn.sequence_loss(model, model.init(jax.random.key(0)), carry, batch)[0])
    after = float(jrnn.sequence_loss(model, res.state.params, carry, batch)[0])
    assert after < 0.3 * before, (before, after)
    with pytest.raises(ValueError, match="snap1 needs a cell with the one-step sparsity"):
        jrnn.grads.snap1().init_carry(model, res.state.params, (16,))


def test_errors():
    with pytest.raises(ValueError, match="feedback"):
        orc.output_recurrence(4, 2, "sample")
    with pytest.raises(ValueError, match="num_classes"):
        orc.inputs(np.zeros((3, 2, 1)), np.zeros((3, 2), np.int32), 1.0)
    with pytest.raises(ValueError, match="p_teacher"):
        orc.schedule(3, 2, 1.5, 0)
    flags = orc.schedule(50, 40, 0.3, 0)
    assert flags[0].min() == 1.0 and 0.2 < flags[1:].mean() < 0.4
    model = orc.output_model(4, 1, 2)
    with pytest.raises(ValueError, match="D \\+ O \\+ 1"):
        jrnn.unroll(model.cell, model.init(jax.random.key(0))["cell"], jnp.zeros((3, 2, 2)))
