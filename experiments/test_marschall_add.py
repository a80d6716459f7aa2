"""Smoke test of ``experiments/marschall_add.py`` (for ``.ci/run``, not the unit suite): a
``--quick`` run into a temporary directory, its files and the alignment matrix's properties;
the Add task generator and the loss constants against an enumeration."""

import itertools
import json
import math
import os

import numpy as np

import marschall_add as ma  # this directory is on sys.path (pytest's rootdir-less import)
from jrnn.data import synthetic


def test_quick_run(tmp_path):
    out = tmp_path / "ma"
    assert ma.main(["--quick", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["methods"]) == set(ma.QUICK_METHODS) & set(ma.available_methods())
    assert (out / "results.md").read_text().startswith("# Marschall et al. 2020 on the Add task")
    assert res["plot"] is None or (out / res["plot"]).stat().st_size > 0
    for name, r in res["methods"].items():
        assert r["status"] == "ok", name
        assert all(0.6 < v < 1.1 for v in r["best_test_norm"]), (name, r["best_test_norm"])
        assert r["steps"] == res["config"]["steps"] and r["updates"] == r["steps"] // r["window"]
    # exact RTRL lowers the loss below the input-blind baseline even in the smoke run
    assert res["methods"]["rtrl"]["best_test_mean"] < 0.99
    a = res["alignment"]
    cos = np.asarray(a["cos"])
    assert a["methods"][0] == "rtrl" and cos.shape == (len(a["methods"]),) * 2
    np.testing.assert_allclose(np.diag(cos), 1.0, atol=1e-5)
    np.testing.assert_allclose(cos, cos.T, atol=1e-5)
    i = {n: k for k, n in enumerate(a["methods"])}
    # 10 steps of BPTT see most of the exact gradient of a tau=2 network's step loss; e-prop's
    # true readout aligns better than RFLO's random feedback
    assert cos[0, i["bptt:10"]] > 0.8
    assert cos[0, i["eprop"]] > cos[0, i["rflo"]]


def test_add_task_against_an_enumeration():
    xs, ys = synthetic.add_task(400, 5, 9, rng=3, batch_size=2)
    assert xs.shape == ys.shape == (400, 2, 2) and xs.dtype == ys.dtype == np.float32
    x = xs[..., 0]
    np.testing.assert_array_equal(xs[..., 1], 1 - x)
    np.testing.assert_array_equal(ys[..., 1], 1 - ys[..., 0])
    for t in range(400):
        for b in range(2):
            y = 0.5 + (0.5 * x[t - 5, b] if t >= 5 else 0) - (0.25 * x[t - 9, b] if t >= 9 else 0)
            assert ys[t, b, 0] == y
    assert 0.45 < x.mean() < 0.55


def test_loss_constants_by_enumeration():
    H = lambda p: 0.0 if p in (0, 1) else -(p * math.log(p) + (1 - p) * math.log(1 - p))
    ce = lambda y, p: -(y * math.log(p) + (1 - y) * math.log(1 - p))
    labels = {(a, b): 0.5 + 0.5 * a - 0.25 * b for a, b in itertools.product((0, 1), (0, 1))}
    mean = np.mean(list(labels.values()))
    assert math.isclose(ma.BASELINE, np.mean([ce(y, mean) for y in labels.values()]), rel_tol=1e-12)
    assert math.isclose(ma.OPTIMUM, np.mean([H(y) for y in labels.values()]), rel_tol=1e-12)
    only_t1 = lambda a: np.mean([labels[(a, b)] for b in (0, 1)])  # the best guess from x_{t-t1}
    assert math.isclose(ma.ONLY_T1, np.mean([ce(y, only_t1(a)) for (a, b), y in labels.items()]),
                        rel_tol=1e-12)


def test_verdict_finds_inversions():
    names = ["rtrl", "a", "b", "c"]
    cos = np.eye(4)
    cos[0, 1:] = cos[1:, 0] = [0.9, 0.5, 0.1]
    res = {"alignment": {"methods": names, "cos": cos.tolist()},
           "methods": {"a": {"best_test_mean": 0.90, "best_test_std": 0.01},
                       "b": {"best_test_mean": 0.80, "best_test_std": 0.01},
                       "c": {"best_test_mean": 0.95, "best_test_std": 0.01}}}
    v = ma.verdict(res)
    assert v["reproduced"] and len(v["inversions"]) == 1 and v["inversions"][0].startswith("a ")
    assert math.isclose(v["spearman"], -0.5)
    res["methods"]["a"]["best_test_mean"] = 0.7  # now alignment ranks them as the loss does
    res["methods"]["c"]["best_test_mean"] = 0.9
    v = ma.verdict(res)
    assert not v["reproduced"] and math.isclose(v["spearman"], -1.0)


def test_default_out_is_beside_the_script():
    here = os.path.dirname(os.path.abspath(ma.__file__))
    assert ma.DEFAULT_OUT == os.path.join(here, "results", "marschall_add")
