"""Smoke test of ``experiments/teacher_forcing.py`` (for ``.ci/run``): a ``--quick`` run, its
files, and the train/test mismatch of teacher forcing."""

import json
import os

import teacher_forcing as tf  # this directory is on sys.path (pytest's rootdir-less import)


def test_schedule_of_p():
    assert tf.p_teacher("teacher forcing", 7, 100) == 1.0
    assert tf.p_teacher("free running", 0, 100) == 0.0
    assert tf.p_teacher("scheduled sampling", 0, 100) == 1.0
    assert tf.p_teacher("scheduled sampling", 30, 100) == 0.6
    assert tf.p_teacher("scheduled sampling", 90, 100) == 0.0


def test_quick_run(tmp_path):
    out = tmp_path / "tf"
    assert tf.main(["--quick", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text().startswith("# Teacher forcing vs free running")
    assert res["plot"] is None or (out / res["plot"]).stat().st_size > 0
    runs = {(r["noise"], r["mode"]): r for r in res["runs"]}
    assert set(runs) == {(n, m) for n in res["config"]["noise"] for m in tf.MODES}
    T = res["config"]["T"]
    for r in runs.values():
        assert len(r["err_by_step"]) == 4 * T
        assert r["tf_mse"] < 0.1  # far below predicting zeros (MSE 1): every mode learned the map
    t = runs[(0.0, "teacher forcing")]
    # the mismatch: open-loop error well above the one-step error it was trained on, and growing
    assert t["fr_mse"] > 3 * t["tf_mse"]
    assert t["fr_mse_long"] > t["fr_mse"]


def test_default_out_is_beside_the_script():
    here = os.path.dirname(os.path.abspath(tf.__file__))
    assert tf.DEFAULT_OUT == os.path.join(here, "results", "teacher_forcing")
