"""Smoke test of ``experiments/zucchet_copy.py`` (for ``.ci/run``, not the unit suite): the task's
layout against the paper's definition, and a ``--quick`` run into a temporary directory."""

import json
import math

import numpy as np

import zucchet_copy as zc  # this directory is on sys.path (pytest's rootdir-less import)


def test_copy_batch_is_the_papers_task():
    b = zc.copy_batch(5, 20, 7, np.random.default_rng(0))
    x, y, m = np.asarray(b.inputs), np.asarray(b.targets), np.asarray(b.mask)
    assert x.shape == (48, 5, 8) and y.shape == (48, 5, 7) and m.shape == (48, 5)
    # the pattern is recalled 28 steps later, on the last 20 steps, after the stop token at 27
    np.testing.assert_array_equal(y[28:], x[:20, :, :7])
    assert set(np.unique(x[:20, :, :7])) == {0.0, 1.0} and not x[20:, :, :7].any()
    np.testing.assert_array_equal(x[:, :, 7].sum(0), np.ones(5))
    assert x[27, :, 7].all()
    np.testing.assert_array_equal(m, (np.arange(48) >= 28)[:, None] * np.ones((1, 5)))
    assert not y[:28].any()


def test_quick_run(tmp_path):
    out = tmp_path / "zc"
    assert zc.main(["--quick", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [(r["cell"], r["estimator"]) for r in res["summary"]] == zc.QUICK_ROWS
    assert (out / "results.md").read_text().startswith("# Zucchet et al. 2023's copy task")
    assert res["plot"] is None or (out / res["plot"]).stat().st_size > 0
    for runs in res["runs"].values():
        for r in runs:
            assert r["updates"][-1] == res["config"]["updates"]
            assert 0.0 <= r["final_acc"] <= 1.0 and math.isfinite(r["final_loss"])
            # after a few updates the per-bit loss is still near log 2 (chance)
            assert abs(r["final_loss"] - math.log(2)) < 0.1
