"""Smoke test of ``experiments/timeseries_ar.py`` (for ``.ci/run``, not the unit suite): a
``--quick`` run into a temporary directory, its files, and the k-step errors it must show."""

import json
import math

import numpy as np
import timeseries_ar as ta  # this directory is on sys.path (pytest's rootdir-less import)


def test_quick_run(tmp_path):
    out = tmp_path / "ts"
    assert ta.main(["--quick", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["models"]) == {"linear", "linear (least squares)", "mlp", "gru"}
    assert (out / "results.md").read_text().startswith("# Autoregressive models")
    assert res["plot"] is None or (out / res["plot"]).stat().st_size > 0
    for name, r in res["models"].items():
        mse = [r["mse"][str(k)]["all"] for k in ta.STEPS]
        assert all(math.isfinite(v) for v in mse), name
        assert mse[0] < mse[-1], name  # errors accumulate with k
    assert len(res["models"]["gru"]["train_mse_curve"]) >= 1  # jrnn.fit logged its loss
    # the closed-form linear fit: its 1-step error is near the noise floor 0.04, and no
    # trained linear model has a lower training error than least squares
    ls = res["models"]["linear (least squares)"]["mse"]["1"]["all"]
    assert 0.03 < ls < 0.06 and ls <= res["models"]["linear"]["mse"]["1"]["all"] + 1e-3


def test_rnn_k_step_equals_a_python_loop():
    import jax

    import jrnn
    from jrnn.data import timeseries as ts
    model = jrnn.regressor(jrnn.gru(3), 1, 1)
    params = model.init(jax.random.key(0))
    x = ts.d2l_series(20, 0.2, rng=1)[1]
    out = ta.rnn_k_step(model, params, x, 4, 3)
    cell, pc, ph = model.cell, params["cell"], params["head"]
    for j in (0, out.shape[0] - 1):  # observe x[: j + 4], then feed predictions back
        c = cell.initial_carry((1,))
        for v in x[:j + 4]:
            c, h = cell.apply(pc, c, np.full((1, 1), v, np.float32))
        for k in range(3):
            y = model.head(ph, h)
            np.testing.assert_allclose(out[j, 4 + k], y[0, 0], rtol=1e-5, atol=1e-6)
            c, h = cell.apply(pc, c, y)
