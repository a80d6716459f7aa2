"""Smoke test of ``experiments/bptt_variants.py`` (run by ``.ci/run``, not the unit suite):
a ``--quick`` run of every section on the offline corpus, checked for consistency."""

import json
import math
import os

import pytest

import bptt_variants  # this directory is on sys.path (pytest's rootdir-less import of a test file)
import bptt_variants_report


def test_quick_run_writes_consistent_results(tmp_path):
    out = tmp_path / "bv"
    # T=12 in --quick: truncated:64 (K >= T) must equal full BPTT exactly, as must checkpointed.
    rc = bptt_variants.main([
        "--quick", "--corpus", "pydoc", "--out", str(out), "--cell", "gru",
        "--estimators", "full,truncated:64,randomized:0.5,checkpointed,kf-rtrl", "--pretrain", "2",
        "--cost-estimators", "full,checkpointed", "--lengths", "12,24", "--segments", "4",
        "--learn-estimators", "full,truncated:2", "--lm-updates", "4", "--copy-updates", "4",
        "--eval-every", "2"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert {"machine", "config", "accuracy", "cost", "learning", "total_seconds"} <= set(res)
    assert {"cpu", "jax", "device", "sources_sha1"} <= set(res["machine"])
    assert (out / "results.md").read_text().startswith("# Gradient estimators")

    acc = res["accuracy"]["results"]
    assert set(acc) == {"full", "truncated:64", "randomized:0.5", "checkpointed", "kf-rtrl"}
    assert "Elman-type" in acc["kf-rtrl"]["skipped"] or "kf-rtrl" in acc["kf-rtrl"]["skipped"]
    assert res["accuracy"]["seeds"] == [0, 1]  # --quick: 2 seeds, each figure their mean and CI
    for when in ("init", "trained"):
        r = acc["randomized:0.5"][when]
        assert r["seeds"] == 2 and r["cos_ci"] >= 0 and r["variance_ci"] >= 0
    acc.pop("kf-rtrl")
    for spec in ("full", "truncated:64", "checkpointed"):
        for when in ("init", "trained"):
            assert acc[spec][when]["cos"] == pytest.approx(1.0, abs=1e-5), (spec, when)
            assert acc[spec][when]["rel_err"] < 1e-5, (spec, when)
    assert set(acc["full"]["init"]["leaves"]) == {"['W_h']", "['W_x']", "['b_hn']", "['b_x']"}
    rnd = acc["randomized:0.5"]["init"]
    assert rnd["n"] == 8 and rnd["variance"] > 0 and -1 <= rnd["cos"] <= 1
    assert {"bias", "bias_floor", "bias_ratio", "cos_of_mean"} <= set(rnd)
    for r in rnd["per_seed"]:
        assert r["bias_floor"] == pytest.approx(math.sqrt(r["variance"] / 8), rel=1e-5)
    assert rnd["variance"] == pytest.approx(sum(r["variance"] for r in rnd["per_seed"]) / 2)

    cost = res["cost"]["results"]
    for spec in ("full", "checkpointed"):
        for T in ("12", "24"):
            assert cost[spec][T]["seconds"] > 0 and cost[spec][T]["memory"]["total"] > 0
    assert cost["full"]["24"]["memory"]["total"] > cost["full"]["12"]["memory"]["total"]
    assert res["cost"]["segments"]["results"]["4"]["ratio_to_full"] > 0

    for task, metric in (("lm", "val_ppl"), ("copy", "val_acc")):
        for spec in ("full", "truncated:2"):
            r = res["learning"][task]["results"][spec]
            assert r["updates"] == [0, 2, 4] and len(r[metric]) == 3, (task, spec)
            assert r["updates_done"] == 4 and not r["stopped_by_budget"] and r["nonfinite"] == 0
            assert all(math.isfinite(v) for v in r[metric] + r["val_loss"] + r["train_loss"])
            assert r["seconds"][0] == 0.0 and r["seconds"][1] <= r["seconds"][2]
            runs = r[metric + "_runs"]  # the 2 seeds trained as one sweep, their mean and CI
            assert r["seeds"] == 2 and all(len(v) == 2 for v in runs)
            assert r["val_loss_runs"][0][0] != r["val_loss_runs"][0][1]  # distinct initial params
            for m, h, v in zip(r[metric], r[metric + "_ci"], runs):
                assert m == pytest.approx(sum(v) / 2) and h >= 0
    lm = res["learning"]["lm"]["results"]["full"]
    assert lm["val_ppl"][-1] < lm["val_ppl"][0]
    assert set(res["plots"]) <= {"accuracy.png", "cost.png", "learning_lm.png", "learning_copy.png"}

    # the report re-renders from results.json alone
    (out / "results.md").unlink()
    assert bptt_variants_report.main([str(out)]) == 0
    assert (out / "results.md").read_text().startswith("# Gradient estimators")


def test_online_estimator_stops_at_its_time_budget(tmp_path):
    rc = bptt_variants.main([
        "--quick", "--corpus", "pydoc", "--out", str(tmp_path), "--only", "lm", "--no-plots",
        "--learn-estimators", "rtrl", "--lm-updates", "100000", "--eval-every", "50",
        "--lm-online-budget", "0.5"])
    assert rc == 0
    r = json.loads((tmp_path / "results.json").read_text())["learning"]["lm"]["results"]["rtrl"]
    assert r["stopped_by_budget"] and 0 < r["updates_done"] < 100000
    assert r["updates"][-1] == r["updates_done"] and r["seconds"][-1] >= 0.5


def test_default_out_is_beside_the_script_and_bad_flags_are_refused(capsys):
    here = os.path.dirname(os.path.abspath(bptt_variants.__file__))
    assert bptt_variants.DEFAULT_OUT == os.path.join(here, "results", "bptt_variants")
    with pytest.raises(SystemExit):
        bptt_variants.main(["--only", "accuracy,nope"])
    assert "--only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bptt_variants.main(["--estimators", "truncated"])
    assert "truncated needs a parameter" in capsys.readouterr().err
