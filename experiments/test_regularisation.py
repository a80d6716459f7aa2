"""Smoke test of ``experiments/regularisation.py`` (for ``.ci/run``): a ``--quick`` run, its files,
its summary against its own curves, and ``--only`` reruns (identical without dropout)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import regularisation as reg  # this directory is on sys.path (pytest's rootdir-less import)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def time_machine(monkeypatch):
    if "JRNN_DATA_DIR" not in os.environ:
        if not (SHARED / "timemachine.txt").exists():
            pytest.skip("The Time Machine is not available offline")
        monkeypatch.setenv("JRNN_DATA_DIR", str(SHARED))


def test_summarise_against_hand_values():
    s = reg.summarise({"val_ppl": [9.0, 4.0, 5.0, 6.0]})
    assert s == {"best_val_ppl": 4.0, "best_epoch": 2, "val_ppl": 6.0, "final_over_best": 1.5}


def test_table_rows_and_a_diverged_run():
    env = {"date": "d", "cpu": "c", "device": "cpu:0", "jax": "j", "data": "x", "epochs": 3}
    ok = {"model": "gru", "hidden": 8, "lr": 1.0, "dropout": {"output": 0.3}, "train_ppl": 2.0,
          "seconds": 1.0, **reg.summarise({"val_ppl": [9.0, 4.0, 5.0]})}
    bad = {"model": "gru", "hidden": 8, "lr": 1.0, "dropout": {"recurrent": 0.25}, "diverged": "nan",
           "diverged_step": 7, "seconds": 2.0}
    rows = reg.table({"a": ok, "b": bad}, env).splitlines()[4:]
    assert rows == ["| a | gru-8 | output 0.3 | 1 | 4.00 (2) | 5.00 | 1.25 | 2.00 | 1 |",
                    "| b | gru-8 | recurrent 0.25 | 1 | diverged (non-finite loss at step 7) | | | | 2 |"]


def test_quick_run(tmp_path):
    out = tmp_path / "reg"
    assert reg.main(["--quick", "--epochs", "2", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    runs = res["runs"]
    assert list(runs) == ["gru", "gru-wd0.5-out0.3"]
    assert runs["gru"]["dropout"] == {} and runs["gru-wd0.5-out0.3"]["dropout"] == {
        "weight_drop": 0.5, "output": 0.3}
    for r in runs.values():
        v = np.asarray(r["curve"]["val_ppl"])
        assert len(v) == 2 and np.all(np.isfinite(v)) and np.all(v < 28.5)  # vocab 28: uniform is 28
        assert r["best_val_ppl"] == pytest.approx(v.min()) and r["val_ppl"] == pytest.approx(v[-1])
        assert r["best_epoch"] == int(np.argmin(v)) + 1
    # dropout changes training (its masks act in the step) ...
    assert runs["gru"]["curve"]["train_ppl"] != runs["gru-wd0.5-out0.3"]["curve"]["train_ppl"]
    md = (out / "results.md").read_text()
    assert "| gru-wd0.5-out0.3 | gru-32 | weight_drop 0.5, output 0.3 |" in md
    assert (out / "validation.png").stat().st_size > 0

    # --only reruns one piece and keeps the other's entry; the unregularised rerun is identical
    assert reg.main(["--quick", "--epochs", "2", "--only", "gru", "--out", str(out)]) == 0
    again = json.loads((out / "results.json").read_text())["runs"]
    assert list(again) == ["gru", "gru-wd0.5-out0.3"]
    assert again["gru"]["curve"]["val_ppl"] == runs["gru"]["curve"]["val_ppl"]
    assert again["gru-wd0.5-out0.3"] == runs["gru-wd0.5-out0.3"]


def test_unknown_run_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="unknown runs"):
        reg.main(["--quick", "--only", "nope", "--out", str(tmp_path)])


def test_full_corpus_table_rows():
    res = {"env": {"date": "d", "data": "x", "hidden": 8, "epochs": 3},
           "machine": {"cpu": "c", "cores": 2, "load": 1.0, "jax": "j", "device": "cpu:0"},
           "total_seconds": 3.0, "runs": {}}
    for name, rates, tps in (("none", {}, 2000.0), ("zoneout", {"zoneout": 0.1}, 500.0)):
        res["runs"][name] = {"dropout": rates, "train_ppl": 2.0, "tokens_per_s": tps, "seconds": 1.0,
                             **reg.summarise({"val_ppl": [9.0, 4.0, 5.0]})}
    lines = reg.full_table(res).splitlines()
    assert lines[4:6] == ["| none | none | 4.00 (2) | 5.00 | 1.25 | 2.00 | 2,000 | 1 |",
                          "| zoneout | zoneout 0.1 | 4.00 (2) | 5.00 | 1.25 | 2.00 | 500 | 1 |"]
    assert lines[-1].startswith("Machine: c, 2 cores (load 1.0 at start)")


def test_full_corpus_quick_run(tmp_path):
    assert reg.main(["--corpus", "full", "--quick", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "full" / "results.json").read_text())
    assert list(res["runs"]) == ["none", "zoneout"] and res["env"]["hidden"] == 16
    for r in res["runs"].values():
        v = np.asarray(r["curve"]["val_ppl"])
        assert len(v) == 2 and np.all(np.isfinite(v)) and r["val_ppl"] == pytest.approx(v[-1])
        assert r["tokens_per_s"] > 0
    # zoneout's masks act in training (its evaluation cell differs from the plain one too)
    assert res["runs"]["none"]["curve"]["train_ppl"] != res["runs"]["zoneout"]["curve"]["train_ppl"]
    assert "| zoneout | zoneout 0.05, zoneout_c 0.5 |" in (tmp_path / "full" / "results.md").read_text()
