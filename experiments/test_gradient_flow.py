"""Smoke test of ``experiments/gradient_flow.py`` (for ``.ci/run``, not the unit suite): a
``--quick`` run into a temporary directory, its files and the orderings it must show."""

import json

import gradient_flow as gfx  # this directory is on sys.path (pytest's rootdir-less import)
import numpy as np


def test_quick_run(tmp_path):
    out = tmp_path / "gf"
    assert gfx.main(["--quick", "--out", str(out), "--radii", "0.5,1.5"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text().startswith("# Vanishing and exploding")
    assert res["plot"] is None or (out / res["plot"]).stat().st_size > 0
    T = res["config"]["T"]
    small, large = res["radius"]["0.5"], res["radius"]["1.5"]
    assert len(small["grad_norm"]) == len(small["sv_max"]) == T
    # rho 0.5: the backpropagated signal shrinks like 0.5^t (faster: tanh' <= 1); rho 1.5 less
    assert small["ratio_first_last"] < 0.5 ** (T - 1) * 10
    assert small["ratio_first_last"] < large["ratio_first_last"]
    assert small["sv_max_median"] < large["sv_max_median"]
    assert set(res["gating"]) == {"rnn", "gru", "lstm", "leaky"}
    for r in res["clipping"].values():
        assert r["status"] == "ok" or r["clip"] is None
    clipped = res["clipping"]["clip 1"]
    assert clipped["status"] == "ok" and len(clipped["loss"]) == res["config"]["clip_updates"]
    assert np.all(np.isfinite(clipped["loss"]))
