"""Smoke test of ``experiments/tagging.py`` (for ``.ci/run``): a ``--quick`` run, its files, and
the causal model held near chance while the 2-layer bidirectional stack is not."""

import json
import os

import tagging as exp  # this directory is on sys.path (pytest's rootdir-less import)


def test_quick_run(tmp_path):
    out = tmp_path / "tag"
    assert exp.main(["--quick", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text().startswith("# Per-step tagging")
    assert res["plot"] is None or (out / res["plot"]).stat().st_size > 0
    m, chance = res["models"], 1 / res["config"]["symbols"]
    assert set(m) == {"unidirectional GRU (jrnn.fit)", "bidirectional GRU, 1 layer",
                      "bidirectional GRU, 2 layers"}
    for r in m.values():
        assert r["step"][0] == 0 and r["step"][-1] == res["config"]["steps"]
    assert abs(m["unidirectional GRU (jrnn.fit)"]["final"] - chance) < 0.06  # causal: chance
    assert m["bidirectional GRU, 2 layers"]["final"] > chance + 0.3


def test_default_out_is_beside_the_script():
    here = os.path.dirname(os.path.abspath(exp.__file__))
    assert exp.DEFAULT_OUT == os.path.join(here, "results", "tagging")
