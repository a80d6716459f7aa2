"""Smoke test of ``experiments/seq_to_one.py`` (for ``.ci/run``): a ``--quick`` run, its files,
and what the quick setting must already show."""

import json
import os

import seq_to_one as s2o  # this directory is on sys.path (pytest's rootdir-less import)


def test_quick_run(tmp_path):
    out = tmp_path / "s2o"
    assert s2o.main(["--quick", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text().startswith("# Sequence to one")
    assert res["plot"] is None or (out / res["plot"]).stat().st_size > 0
    runs = {(r["task"], r["variant"]): r for r in res["runs"]}
    assert set(runs) == {("parity", "rnn"), ("parity", "gru"), ("adding", "rnn"), ("adding", "gru"),
                         ("vector-to-sequence", "gru, every"), ("vector-to-sequence", "gru, initial")}
    for r in runs.values():
        assert r["step"][0] == 0 and r["step"][-1] == res["config"]["steps"]
    # the GRU beats the mean predictor (MSE 1/6) on adding; both conditionings generate the waves
    assert runs[("adding", "gru")]["final"] < 0.05
    assert runs[("vector-to-sequence", "gru, every")]["final"] < 0.05
    assert runs[("vector-to-sequence", "gru, initial")]["final"] < 0.05
    assert 0.0 <= runs[("parity", "gru")]["final"] <= 1.0


def test_default_out_is_beside_the_script():
    here = os.path.dirname(os.path.abspath(s2o.__file__))
    assert s2o.DEFAULT_OUT == os.path.join(here, "results", "seq_to_one")
