"""Smoke test of the gradient-estimator benchmark harness (jrnn bench-grads --quick)."""

import json
import math

import pytest

from jrnn import bench_grads


def test_bench_grads_quick_writes_consistent_results(tmp_path):
    out = tmp_path / "bg"
    # T=12 in --quick: truncated:64 (K >= T) must equal full BPTT exactly.
    rc = bench_grads.main([
        "--quick", "--corpus", "pydoc", "--out", str(out), "--only", "accuracy,cost,lm",
        "--estimators", "full,truncated:64,randomized:0.5", "--pretrain", "0",
        "--cost-estimators", "full", "--lengths", "12", "--segments", "none",
        "--learn-estimators", "full", "--lm-updates", "4", "--eval-every", "2", "--no-plots"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert {"machine", "config", "accuracy", "cost", "learning", "total_seconds"} <= set(res)
    assert {"cpu", "jax", "device"} <= set(res["machine"])
    assert (out / "results.md").read_text().startswith("# Gradient estimators")

    acc = res["accuracy"]["results"]
    assert set(acc) == {"full", "truncated:64", "randomized:0.5"}
    for spec in ("full", "truncated:64"):
        assert acc[spec]["init"]["cos"] == pytest.approx(1.0, abs=1e-5), spec
        assert acc[spec]["init"]["rel_err"] < 1e-5, spec
    rnd = acc["randomized:0.5"]["init"]
    assert rnd["n"] == 8 and rnd["variance"] > 0 and -1 <= rnd["cos"] <= 1
    assert {"bias", "bias_floor", "cos_of_mean"} <= set(rnd)

    cost = res["cost"]
    assert cost["results"]["full"]["12"]["seconds"] > 0
    assert cost["results"]["full"]["12"]["memory"]["peak"] > 0

    lm = res["learning"]["lm"]["results"]["full"]
    assert lm["updates"] == [0, 2, 4] and len(lm["val_ppl"]) == 3
    assert all(math.isfinite(v) for v in lm["val_ppl"]) and lm["nonfinite"] == 0
    assert lm["val_ppl"][-1] < lm["val_ppl"][0]


def test_bench_grads_rejects_bad_flags(capsys):
    with pytest.raises(SystemExit):
        bench_grads.main(["--only", "accuracy,nope"])
    assert "--only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_grads.main(["--estimators", "truncated"])
