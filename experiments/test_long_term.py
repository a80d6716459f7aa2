"""Smoke test of ``experiments/long_term.py`` (for ``.ci/run``, not the unit suite): a
``--quick`` run into a temporary directory, its files and what each entry must hold."""

import json
import math

import long_term as lt  # this directory is on sys.path (pytest's rootdir-less import)


def test_quick_run(tmp_path):
    out = tmp_path / "lt"
    assert lt.main(["--quick", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [(r["task"], r["delay"]) for r in res["runs"]] == [("copy", 5), ("adding", 10)]
    assert (out / "results.md").read_text().startswith("# Long-term dependencies")
    assert res["plot"] is None or (out / res["plot"]).stat().st_size > 0
    for r in res["runs"]:
        assert set(r["models"]) == set(lt.CELLS) | {"esn"}
        for name in lt.CELLS:
            m = r["models"][name]
            assert m["updates"][-1] == res["config"]["updates"] and math.isfinite(m["final"])
            assert len(m["updates"]) == len(m["score"]) >= 2
        esn = r["models"]["esn"]["final"]
        if r["task"] == "copy":  # 64 reservoir units recall 2 symbols over 5 steps
            assert esn > 0.8 and all(0.0 <= r["models"][n]["final"] <= 1.0 for n in lt.CELLS)
        else:  # the ridge readout beats always answering 1 (MSE 1/6)
            assert esn < r["baseline"]


def test_tasks_have_the_documented_lengths():
    assert lt.Task("copy", 30).batch(2, 0).inputs.shape == (30 + 2 * lt.SEQ_LEN, 2)
    assert lt.Task("adding", 30).batch(2, 0).inputs.shape == (30, 2, 2)
