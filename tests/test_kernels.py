"""``unroll``'s backend switch (``jrnn.kernels``): oneDNN through ``unroll``, models and estimators
equals the XLA path; ``auto`` is deterministic and falls back where oneDNN cannot run.

The oneDNN tests skip, with the reason, when the extension is not available
(``pip install -e '.[onednn]'``); the selection logic without it is tested either way.
"""

import logging
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import kernels, onednn

HAVE = onednn.available()
needs_onednn = pytest.mark.skipif(not HAVE, reason=f"oneDNN unavailable: "
                                  f"{onednn.unavailable_reason() if not HAVE else ''}")
TOL = {"rtol": 2e-5, "atol": 2e-5}
V, H, T, B = 7, 8, 12, 3


def assert_close(a, b, tol=TOL):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return jrnn.Batch(*(jnp.asarray(rng.integers(0, V, (T, B)), jnp.int32) for _ in range(2)))


def test_with_backend_sets_every_layer_and_refuses_unknown_names():
    st = kernels.with_backend(jrnn.stack([jrnn.lstm(4), jrnn.gru(4)]), "onednn")
    assert st.backend == "onednn" and [c.backend for c in st.layers] == ["onednn", "onednn"]
    assert jrnn.lstm(4).backend == "xla"  # the default changes nothing
    with pytest.raises(ValueError, match="backend must be one of"):
        kernels.with_backend(jrnn.lstm(4), "cudnn")


@pytest.mark.parametrize("kw, why", [
    ({"lengths": jnp.array([12, 5, 1])}, "lengths"),
    ({"step_mask": jnp.ones((T, B), bool)}, "step_mask"),
    ({"resets": jnp.zeros((T, B), bool)}, "resets"),
    ({"carry_grad_scale": jnp.ones((T,))}, "carry_grad_scale"),
    ({"remat_every": 4}, "remat_every"),
    ({"fast_path": False}, "fast_path=False"),
])
def test_onednn_refuses_what_it_cannot_run_and_auto_falls_back(kw, why):
    cell = jrnn.lstm(H)
    params = cell.init(jax.random.key(0), V)
    xs = _batch().inputs
    with pytest.raises(ValueError, match=why):
        jrnn.unroll(cell, params, xs, backend="onednn", **kw)
    assert_close(jrnn.unroll(cell, params, xs, backend="auto", **kw),
           jrnn.unroll(cell, params, xs, **kw), {"rtol": 0, "atol": 0})  # auto: XLA, bitwise


def test_other_cells_are_refused_by_name():
    for cell in (jrnn.elman(H, activation="relu"), jrnn.lstm(H, layer_norm=True)):
        params = cell.init(jax.random.key(0), V)
        with pytest.raises(ValueError, match=f"cell '{cell.name}'"):
            jrnn.unroll(cell, params, _batch().inputs, backend="onednn")


def test_without_onednn_auto_runs_xla_and_onednn_says_why(monkeypatch):
    monkeypatch.setattr(onednn, "available", lambda: False)
    monkeypatch.setattr(onednn, "unavailable_reason", lambda: "not built (test)")
    cell = jrnn.lstm(64)
    params = cell.init(jax.random.key(0), V)
    xs = _batch().inputs
    assert_close(jrnn.unroll(cell, params, xs, backend="auto"), jrnn.unroll(cell, params, xs),
           {"rtol": 0, "atol": 0})
    with pytest.raises(ValueError, match="not built"):
        jrnn.unroll(cell, params, xs, backend="onednn")


def test_auto_choice_is_a_fixed_rule_of_cell_and_shape():
    picks = {(n, h): kernels.onednn_wins(n, 35, 32, h) for n in ("rnn", "lstm", "gru")
             for h in (16, 64, 256, 512)}
    assert picks == {(n, h): kernels.onednn_wins(n, 35, 32, h) for n, h in picks}  # repeatable
    assert picks["lstm", 256] and not picks["rnn", 16]


@needs_onednn
def test_auto_logs_its_choice_once_and_avoids_onednn_beside_torch(caplog, monkeypatch):
    cell = kernels.with_backend(jrnn.lstm(64), "auto")
    params = cell.init(jax.random.key(0), V)
    kernels._logged.clear()
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # another test may have imported it
    with caplog.at_level(logging.INFO, logger="jrnn"):
        for _ in range(2):
            jrnn.unroll(cell, params, _batch().inputs)
        monkeypatch.setitem(sys.modules, "torch", object())
        jrnn.unroll(cell, params, _batch().inputs)
    msgs = [r.getMessage() for r in caplog.records if "backend='auto'" in r.getMessage()]
    assert msgs == ["backend='auto': lstm-64 at T=12, B=3 runs on oneDNN",
                    "backend='auto': lstm-64 at T=12, B=3 runs on XLA (torch is imported: oneDNN "
                    "would share its OpenMP runtime (about 2x slower))"]


@needs_onednn
@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_unroll_on_onednn_equals_xla_values_and_gradients(name, reverse):
    cell = jrnn.by_name(name, H)
    params = cell.init(jax.random.key(1), V)
    xs = _batch().inputs
    carry = jax.tree.map(lambda a: a + 0.3, cell.initial_carry((B,)))

    def loss(p, c, backend):
        hs, final = jrnn.unroll(cell, p, xs, c, reverse=reverse, backend=backend)
        return jnp.sum(jnp.sin(hs) * jnp.arange(hs.size).reshape(hs.shape) / hs.size) + sum(
            jnp.sum(jnp.cos(f)) for f in jax.tree.leaves(final))

    vg = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
    assert_close(vg(params, carry, "onednn"), vg(params, carry, "xla"))


@needs_onednn
def test_a_stack_runs_each_layer_on_onednn():
    cell = jrnn.stack([jrnn.lstm(H), jrnn.gru(H)])
    params = cell.init(jax.random.key(2), V)
    xs = _batch().inputs
    loss = lambda p, b: jnp.sum(jnp.tanh(jrnn.unroll(cell, p, xs, backend=b)[0]))
    g = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    assert_close(g(params, "onednn"), g(params, "xla"))


FULL_LIKE = ["full", "checkpointed:4", "tbptt:12,4"]  # the BPTT family that unrolls on oneDNN
OWN_STEP = ["rtrl", "uoro", "snap1", "es"]  # online / perturbation: unchanged by the backend


@needs_onednn
@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_every_estimator_through_an_onednn_model_equals_xla(name):
    batch, key = _batch(3), jax.random.key(3)
    ref_model = jrnn.language_model(jrnn.by_name(name, H), V)
    od_model = jrnn.language_model(kernels.with_backend(jrnn.by_name(name, H), "onednn"), V)
    params = ref_model.init(jax.random.key(0))
    full = jrnn.grads.full()
    _, g_full, _, _ = full.value_and_grad(ref_model, params, full.init_carry(ref_model, params, (B,)),
                                          batch, key)
    for spec in FULL_LIKE + OWN_STEP:
        est = jrnn.grads.parse(spec)
        run = jax.jit(lambda m, p, c: est.value_and_grad(m, p, c, batch, key)[:2],
                      static_argnums=0)
        c = est.init_carry(ref_model, params, (B,))
        got, ref = run(od_model, params, c), run(ref_model, params, c)
        assert_close(got, ref, {"rtol": 1e-4, "atol": 1e-5} if spec == "es" else TOL)
        if spec in ("full", "checkpointed:4"):
            assert_close(got[1], g_full)  # the exact gradient, on either backend
    for spec in ("truncated:3", "randomized:0.9"):  # a gradient gain per step: XLA only
        est = jrnn.grads.parse(spec)
        with pytest.raises(ValueError, match="carry_grad_scale"):
            est.value_and_grad(od_model, params, est.init_carry(od_model, params, (B,)), batch, key)


@needs_onednn
def test_train_step_on_onednn_follows_xla():
    batch = _batch(4)
    opt = jrnn.make_optimizer("sgd", 0.5, 1.0)
    states, losses = {}, {}
    for be in ("xla", "onednn"):
        model = jrnn.language_model(kernels.with_backend(jrnn.lstm(H), be), V)
        est = jrnn.grads.full()
        state = jrnn.init_state(model, opt, est, jax.random.key(0), B)
        step = jrnn.train_step(model, opt, est)
        losses[be] = []
        for _ in range(3):
            state, m = step(state, batch, jax.random.key(1))
            losses[be].append(float(m["loss"]))
        states[be] = state.params
    np.testing.assert_allclose(losses["onednn"], losses["xla"], rtol=1e-5)
    assert_close(states["onednn"], states["xla"])
