"""Smoke test of ``experiments/influence_balancing.py`` (for ``.ci/run``, not the unit suite):
a ``--quick`` run into a temporary directory, its files and the ordering PES < truncated:1."""

import json
import math
import os

import influence_balancing as ib  # this directory is on sys.path (pytest's rootdir-less import)


def test_quick_run(tmp_path):
    out = tmp_path / "ib"
    assert ib.main(["--quick", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["methods"]) == set(ib.METHODS)
    assert (out / "results.md").read_text().startswith("# Influence balancing")
    assert res["plot"] is None or (out / res["plot"]).stat().st_size > 0
    theta_star = res["theta_star"]
    assert math.isclose(theta_star, ib.optimum()) and math.isclose(theta_star, -1 / 6, rel_tol=1e-5)
    m = res["methods"]
    for r in m.values():
        assert r["updates"][0] == 0 and r["updates"][-1] == res["config"]["updates"]
        assert len(r["updates"]) == len(r["long_loss"]) == len(r["theta"])
    # PES ends closer to the long-unroll optimum than 1-step truncation
    assert abs(m["pes (K=1)"]["final_theta"] - theta_star) < abs(m["truncated:1"]["final_theta"] - theta_star)
    assert m["pes (K=1)"]["final_long_loss"] < 1e-2 < m["truncated:1"]["final_long_loss"]


def test_default_out_is_beside_the_script():
    here = os.path.dirname(os.path.abspath(ib.__file__))
    assert ib.DEFAULT_OUT == os.path.join(here, "results", "influence_balancing")
