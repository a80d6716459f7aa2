"""The synthetic tasks of the sequence-modelling patterns (jrnn.data.synthetic): layouts,
determinism, and each target against a direct computation."""

import numpy as np
import pytest

from jrnn.data import synthetic


@pytest.mark.parametrize("task", [synthetic.reversal, synthetic.sorting])
def test_transduction_tasks(task):
    src, n, tgt, m = task(50, 2, 6, 4, rng=0)
    assert src.shape == tgt.shape == (6, 50) and src.dtype == np.int32
    np.testing.assert_array_equal(n, m)
    assert n.min() >= 2 and n.max() <= 6 and len(set(n.tolist())) > 1
    for b in range(50):
        s = src[: n[b], b].tolist()
        assert all(1 <= v <= 4 for v in s) and not src[n[b]:, b].any() and not tgt[n[b]:, b].any()
        assert tgt[: n[b], b].tolist() == (s[::-1] if task is synthetic.reversal else sorted(s))
    again = task(50, 2, 6, 4, rng=0)
    np.testing.assert_array_equal(again[0], src)
    with pytest.raises(ValueError, match="max_len must be >= min_len"):
        task(2, 5, 3, rng=0)


def test_parity():
    bits, y, mask = synthetic.parity(64, 7, rng=1)
    assert bits.shape == y.shape == mask.shape == (7, 64)
    for b in range(64):
        assert y[-1, b] == sum(bits[:, b].tolist()) % 2
    np.testing.assert_array_equal(mask.sum(0), 1.0)
    assert mask[-1].all()
    assert 0.3 < y[-1].mean() < 0.7


def test_conditional_sines():
    xs, ys, c = synthetic.conditional_sines(10, 5, 3, rng=2, condition="every")
    xi, yi, ci = synthetic.conditional_sines(10, 5, 3, rng=2, condition="initial")
    np.testing.assert_array_equal(c, ci)
    np.testing.assert_array_equal(ys, yi)
    np.testing.assert_array_equal(xs[:, 0], np.tile(np.eye(3)[c[0]], (5, 1)))
    np.testing.assert_array_equal(xi[0], xs[0])
    assert not xi[1:].any()
    t = np.arange(1, 6)
    np.testing.assert_allclose(ys[:, 3, 0], np.sin((0.2 + 0.15 * c[3]) * t), rtol=1e-6)
    with pytest.raises(ValueError, match="condition"):
        synthetic.conditional_sines(2, 3, rng=0, condition="both")


def test_rotation_follows_the_map():
    xs, ys, start = synthetic.rotation(4, 9, rng=3)
    assert xs.shape == (9, 4, 1) and ys.shape == (9, 4, 2) and start.shape == (4, 2)
    prev = start.astype(np.float64)
    for t in range(9):
        a = 0.3 + 0.5 * xs[t, :, 0].astype(np.float64)
        rot = np.stack([prev[:, 0] * np.cos(a) - prev[:, 1] * np.sin(a),
                        prev[:, 0] * np.sin(a) + prev[:, 1] * np.cos(a)], -1)
        np.testing.assert_allclose(ys[t], rot, atol=1e-5)
        prev = ys[t].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(ys, axis=-1), 1.0, rtol=1e-5)
