"""Tests for jrnn.grads.perturb (ES, PES) against independent references.

References (none of them is perturb.py's output):
- on linear cells with a param-free readout the loss is quadratic in the
  params, so the Gaussian-smoothed gradient that ES/PES estimate equals the
  exact gradient, computed here by ``jax.grad`` of a hand-written loop;
- PES's stream target is ``jax.grad`` of the last truncation's loss through
  the whole stream (a hand loop over every step); truncated ES's is the same
  loss with the incoming state held fixed;
- statistical tests average over many keys and bound ``|mean - target|`` by
  ``Z * std / sqrt(n)`` per element, and check that the same bound rejects a
  biased target (power).
"""

import functools

import numpy as np
import pytest

import jax
import jax.numpy as jnp

import jrnn
from jrnn import grads as G
from jrnn.cells import Cell
from jrnn.grads import PESCarry
from jrnn.models import Batch, Model

Z = 5.0
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _zscores(samples, target):
    n = samples.shape[0]
    se = samples.std(0) / np.sqrt(n)
    se = np.maximum(se, 1e-6 * (np.abs(target) + 1e-3))
    return np.abs(samples.mean(0) - target) / se


def _linear_model(n=4, D=2, O=2, scalar_theta=False):
    """``s' = A s + U x + b`` (A fixed: 0.5 I + 0.5 superdiagonal), readout ``s[:O]``, half
    squared error. With ``scalar_theta``: ``s' = A s + theta * signs`` (influence balancing)."""
    A = jnp.asarray(0.5 * np.eye(n) + 0.5 * np.eye(n, k=1), jnp.float32)
    signs = jnp.asarray([1.0] * (n // 2) + [-1.0] * (n - n // 2), jnp.float32)

    def init(key, input_size):
        if scalar_theta:
            return {"theta": jnp.full((1,), 0.5, jnp.float32)}
        k1, k2 = jax.random.split(key)
        return {"U": jax.random.normal(k1, (input_size, n)) * 0.5,
                "b": jax.random.normal(k2, (n,)) * 0.5}

    def initial_carry(batch_shape=()):
        return jnp.ones(tuple(batch_shape) + (n,), jnp.float32)

    def project(p, xs):
        return xs if scalar_theta else xs @ p["U"] + p["b"]

    def step(p, s, xp):
        drive = p["theta"] * signs if scalar_theta else xp
        s = s @ A.T + drive
        return s, s

    cell = Cell(init, initial_carry, project, step, n, "linear-test")
    model = Model(cell, lambda key: {"cell": init(key, D), "head": {}}, lambda p, h: h[..., :O],
                  lambda o, y: 0.5 * jnp.sum((o - y) ** 2, -1), D, False, False)
    return model


def _hand_loss(model, params, s, xs, ys, w):
    """Weighted loss by a Python loop over ``cell.apply`` (the independent reference)."""
    total = 0.0
    for t in range(xs.shape[0]):
        s, h = model.cell.apply(params["cell"], s, xs[t])
        total = total + jnp.sum(model.loss(model.head(params["head"], h), ys[t]) * w[t])
    return total, s


def _flat(tree):
    return jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(tree)])


def test_es_is_unbiased_and_a_biased_target_is_detected():
    model = _linear_model()
    T, B, D, O = 4, 3, 2, 2
    rng = np.random.default_rng(0)
    params = model.init(jax.random.key(1))
    batch = Batch(rng.normal(size=(T, B, D)).astype(np.float32),
                  rng.normal(size=(T, B, O)).astype(np.float32))
    carry = jnp.asarray(rng.normal(size=(B, 4)).astype(np.float32))
    w = np.full((T, B), 1.0 / (T * B), np.float32)
    exact = jax.grad(lambda p: _hand_loss(model, p, carry, batch.inputs, batch.targets, w)[0])(params)
    ests = [G.es(0.3, particles=4), G.es(0.3, particles=4, antithetic=False)]

    @_jit
    def run(keys):
        out = []
        for est in ests:
            one = lambda k: _flat(est.value_and_grad(model, params, carry, batch, k)[1])
            out.append(jax.vmap(one)(keys))
        l, _, c, _ = ests[0].value_and_grad(model, params, carry, batch, keys[0])
        return out, l, c

    (anti, plain), loss, new_carry = run(jax.random.split(jax.random.key(0), 8000))
    target = np.asarray(_flat(exact))
    ref_loss, ref_carry = _hand_loss(model, params, carry, batch.inputs, batch.targets, w)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)  # the unperturbed loss and carry
    np.testing.assert_allclose(new_carry, ref_carry, rtol=1e-5)
    for name, s in (("antithetic", np.asarray(anti)), ("plain", np.asarray(plain))):
        assert _zscores(s, target).max() < Z, (name, _zscores(s, target))
        biased = target + 0.1 * np.abs(target).max()  # power: a 10% shift is detected
        assert _zscores(s, biased).max() > Z, name


def test_pes_equals_es_on_a_fresh_carry():
    model = _linear_model()
    T, B, D, O = 3, 2, 2, 2
    rng = np.random.default_rng(1)
    params = model.init(jax.random.key(2))
    batch = Batch(rng.normal(size=(T, B, D)).astype(np.float32),
                  rng.normal(size=(T, B, O)).astype(np.float32))
    es, pes = G.es(0.2, particles=6), G.pes(0.2, particles=6)
    key = jax.random.key(3)
    le, ge, ce, _ = es.value_and_grad(model, params, es.init_carry(model, params, (B,)), batch, key)
    pc = pes.init_carry(model, params, (B,))
    assert isinstance(pc, PESCarry) and pc.xi.shape == (3, 12) and pc.particles.shape == (6, B, 4)
    lp, gp, cp, _ = pes.value_and_grad(model, params, pc, batch, key)
    np.testing.assert_allclose(lp, le, rtol=1e-6)
    np.testing.assert_allclose(cp.state, ce, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(gp), jax.tree.leaves(ge)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert np.abs(_flat(ge)).max() > 0
    assert not np.allclose(cp.particles[0], cp.particles[3])  # +eps and -eps particles differ


def test_pes_is_unbiased_over_a_stream_where_truncated_es_is_not():
    """Influence balancing (n=6, K=1): the loss after each step, theta fixed over 5 truncations;
    means and variances against their closed forms.

    Target at the last truncation: d L_5 / d theta through all 5 steps (PES);
    truncated ES estimates the same loss with the state entering step 5 held fixed.
    """
    n, steps = 6, 5
    model = _linear_model(n=n, D=1, O=1, scalar_theta=True)
    params = model.init(jax.random.key(0))
    x = np.zeros((1, 1, 1), np.float32)
    y = np.ones((1, 1, 1), np.float32)
    batch = Batch(x, y)
    w = np.ones((1, 1), np.float32)
    s0 = model.cell.initial_carry((1,))

    def through(p):  # the last step's loss through the whole stream
        s = s0
        for _ in range(steps - 1):
            s = model.cell.apply(p["cell"], s, x[0])[0]
        return _hand_loss(model, p, s, x, y, w)[0]

    def cut(p):
        s = s0
        for _ in range(steps - 1):
            s = model.cell.apply(params["cell"], s, x[0])[0]
        return _hand_loss(model, p, s, x, y, w)[0]

    g_full = float(jax.grad(through)(params)["cell"]["theta"][0])
    g_cut = float(jax.grad(cut)(params)["cell"]["theta"][0])
    assert abs(g_full - g_cut) > 0.3 * abs(g_full)  # the toy has a real truncation bias

    def stream(est, key):
        c = est.init_carry(model, params, (1,))
        for t in range(steps):
            _, g, c, _ = est.value_and_grad(model, params, c, batch, jax.random.fold_in(key, t))
        return g["cell"]["theta"]

    keys = jax.random.split(jax.random.key(1), 4000)
    run = _jit(lambda keys: [jax.vmap(functools.partial(stream, e))(keys)
                             for e in (G.pes(0.1, 2), G.es(0.1, 2))])
    pes_g, es_g = (np.asarray(a) for a in run(keys))
    assert _zscores(pes_g, np.array([g_full])).max() < Z, (pes_g.mean(), g_full)
    assert _zscores(pes_g, np.array([g_cut])).max() > Z  # power
    assert _zscores(es_g, np.array([g_cut])).max() < Z, (es_g.mean(), g_cut)
    assert _zscores(es_g, np.array([g_full])).max() > Z  # truncated ES is biased here

    # variance, closed form: the loss is quadratic in the per-step perturbations e = sigma z
    # (z in R^steps), so L+ - L- = 2 sigma a.z with a_tau = dL_5/d theta_tau (theta of step tau),
    # and one pair's PES estimate is (a.z)(1.z): variance steps |a|^2 + (a.1)^2; ES's: 2 a_5^2
    def per_step(thetas):
        s = s0
        for t in range(steps - 1):
            s = model.cell.apply({"theta": thetas[t:t + 1]}, s, x[0])[0]
        return _hand_loss(model, {"cell": {"theta": thetas[-1:]}, "head": {}}, s, x, y, w)[0]

    a = np.asarray(jax.grad(per_step)(jnp.full((steps,), 0.5, jnp.float32)), np.float64)
    np.testing.assert_allclose(a.sum(), g_full, rtol=1e-5)
    np.testing.assert_allclose(a[-1], g_cut, rtol=1e-5)
    for name, sample, var in (("pes", pes_g, steps * a @ a + a.sum() ** 2),
                              ("es", es_g, 2 * a[-1] ** 2)):
        d = sample[:, 0].astype(np.float64) - sample[:, 0].mean()
        v, se = d.var(), np.sqrt(((d ** 2 - d.var()) ** 2).mean() / d.size)
        assert abs(v - var) < Z * se, (name, v, var, se)
    other = 2 * a[-1] ** 2  # power: PES's sample variance is not ES's closed form
    d = pes_g[:, 0] - pes_g[:, 0].mean()
    assert abs(d.var() - other) > Z * np.sqrt(((d ** 2 - d.var()) ** 2).mean() / d.size)


@pytest.mark.parametrize("spec", ["es:0.05", "pes:0.05"])
def test_train_step_lowers_the_loss(spec):
    V, B, T = 5, 2, 6
    model = jrnn.language_model(jrnn.gru(8), V)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, (T + 1, B)).astype(np.int32)
    batch = Batch(ids[:-1], ids[1:])
    est = G.parse(spec)
    opt = jrnn.make_optimizer("adam", 0.03)
    state = jrnn.init_state(model, opt, est, jax.random.key(0), B)
    fresh = model.cell.initial_carry((B,))
    loss0 = float(jrnn.sequence_loss(model, state.params, fresh, batch)[0])
    step = jrnn.train_step(model, opt, est, carry_over=spec.startswith("pes"))
    for i in range(60):
        state, m = step(state, batch, jax.random.key(i))
    assert bool(m["finite"]) and step._cache_size() == 1
    loss1 = float(jrnn.sequence_loss(model, state.params, fresh, batch)[0])
    assert loss1 < 0.8 * loss0, (spec, loss0, loss1)


def test_es_handles_a_non_differentiable_loss():
    """A 0/1 loss: autodiff's gradient is zero, ES's smoothed one is not."""
    model = _linear_model(n=2, D=1, O=1)
    model = model._replace(loss=lambda o, y: (o[..., 0] > y[..., 0]).astype(jnp.float32))
    params = model.init(jax.random.key(0))
    batch = Batch(np.ones((2, 1, 1), np.float32), np.full((2, 1, 1), 1.5, np.float32))
    g = np.stack([_flat(G.es(0.5, 200).value_and_grad(model, params, jnp.ones((1, 2)), batch,
                                                      jax.random.key(k))[1]) for k in range(2)])
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0


@pytest.mark.parametrize("make,match", [
    (lambda: G.es(0.0), "sigma"), (lambda: G.es(-1.0), "sigma"), (lambda: G.es(True), "sigma"),
    (lambda: G.es(0.1, particles=3), "even"), (lambda: G.pes(0.1, particles=0), "particles"),
    (lambda: G.pes(0.1, particles=2.5), "particles"), (lambda: G.parse("pes:x"), "bad parameter"),
])
def test_bad_configuration(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_parse_key_and_carry_checks():
    assert G.parse("es").name == "es:0.1" and G.parse("pes:0.02").name == "pes:0.02"
    assert G.es(0.1, particles=3, antithetic=False).name == "es:0.1"
    model = _linear_model()
    params = model.init(jax.random.key(0))
    batch = Batch(np.zeros((2, 1, 2), np.float32), np.zeros((2, 1, 2), np.float32))
    for est in (G.es(), G.pes()):
        with pytest.raises(ValueError, match="key"):
            est.value_and_grad(model, params, est.init_carry(model, params, (1,)), batch, None)
    with pytest.raises(TypeError, match="PESCarry"):
        G.pes().value_and_grad(model, params, jnp.ones((1, 4)), batch, jax.random.key(0))
    c = G.pes(particles=4).init_carry(model, params, (1,))
    with pytest.raises(ValueError, match="carry.particles"):
        G.pes(particles=6).value_and_grad(model, params, c, batch, jax.random.key(0))
