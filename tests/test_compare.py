"""jrnn.compare against independent references: NumPy for alignment, synthetic
estimators of known mean and variance for bias/variance (including a biased one
that must be flagged), known buffer sizes for the compiled memory, and the
README's snippet run as written."""

import math
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jrnn import compare

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _tree(rng, scale=1.0):
    return {"cell": {"W": scale * rng.standard_normal((7, 5)), "b": scale * rng.standard_normal(5)},
            "head": scale * rng.standard_normal((3,))}


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in jax.tree.leaves(tree)])


def _f32(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)


# ----------------------------------------------------------------------------
# alignment


def test_alignment_matches_numpy_overall_and_per_leaf():
    rng = np.random.default_rng(0)
    ref, est = _tree(rng), _tree(rng)
    est["head"] = ref["head"] * 2.0  # one leaf exactly aligned
    out = compare.alignment(_f32(est), _f32(ref), per_leaf=True)
    g, r = _flat(_f32(est)), _flat(_f32(ref))
    assert float(out["cos"]) == pytest.approx(g @ r / (np.linalg.norm(g) * np.linalg.norm(r)), rel=1e-5)
    assert float(out["rel_err"]) == pytest.approx(np.linalg.norm(g - r) / np.linalg.norm(r), rel=1e-5)
    assert float(out["norm"]) == pytest.approx(np.linalg.norm(g), rel=1e-5)
    assert float(out["ref_norm"]) == pytest.approx(np.linalg.norm(r), rel=1e-5)
    assert set(out["leaves"]) == {"['cell']['W']", "['cell']['b']", "['head']"}
    for path, (gl, rl) in {"['cell']['W']": (est["cell"]["W"], ref["cell"]["W"]),
                           "['head']": (est["head"], ref["head"])}.items():
        gl, rl = np.ravel(gl), np.ravel(rl)
        assert float(out["leaves"][path]["cos"]) == pytest.approx(
            gl @ rl / (np.linalg.norm(gl) * np.linalg.norm(rl)), rel=1e-5, abs=1e-6)
        assert float(out["leaves"][path]["rel_err"]) == pytest.approx(
            np.linalg.norm(gl - rl) / np.linalg.norm(rl), rel=1e-5, abs=1e-6)
    assert float(out["leaves"]["['head']"]["cos"]) == pytest.approx(1.0, abs=1e-6)
    assert float(out["leaves"]["['head']"]["rel_err"]) == pytest.approx(1.0, abs=1e-6)


def test_alignment_of_equal_and_opposite_gradients():
    ref = _f32(_tree(np.random.default_rng(1)))
    same = compare.alignment(ref, ref)
    assert float(same["cos"]) == pytest.approx(1.0, abs=1e-6) and float(same["rel_err"]) == 0.0
    neg = compare.alignment(jax.tree.map(lambda a: -a, ref), ref)
    assert float(neg["cos"]) == pytest.approx(-1.0, abs=1e-6)
    assert float(neg["rel_err"]) == pytest.approx(2.0, abs=1e-6)


def test_alignment_works_under_jit_and_upcasts_bfloat16():
    rng = np.random.default_rng(2)
    ref, est = _f32(_tree(rng)), _f32(_tree(rng))
    eager = compare.alignment(est, ref)
    jitted = jax.jit(compare.alignment)(est, ref)
    assert float(jitted["cos"]) == pytest.approx(float(eager["cos"]), rel=1e-6)
    bf = jax.tree.map(lambda a: a.astype(jnp.bfloat16), ref)
    out = compare.alignment(bf, bf)
    assert out["cos"].dtype == jnp.float32 and float(out["cos"]) == pytest.approx(1.0, abs=1e-5)


def test_alignment_rejects_mismatched_trees():
    rng = np.random.default_rng(3)
    ref = _f32(_tree(rng))
    with pytest.raises(TypeError, match="estimate has the wrong structure"):
        compare.alignment({"cell": ref["cell"]}, ref)
    bad = dict(ref, head=jnp.zeros(4))
    with pytest.raises(ValueError, match=r"estimate\['head'\] has shape \(4,\), expected \(3,\)"):
        compare.alignment(bad, ref)


# ----------------------------------------------------------------------------
# bias and variance


def _noisy(ref, s, seed, n, offset=None):
    """``n`` draws of ``ref + offset + N(0, s^2)`` per coordinate, stacked on a leading axis."""
    rng = np.random.default_rng([seed, 12345])
    off = offset if offset is not None else jax.tree.map(np.zeros_like, ref)
    return jax.tree.map(lambda r, o: jnp.asarray(np.asarray(r) + np.asarray(o)
                                                 + s * rng.standard_normal((n,) + r.shape), jnp.float32),
                        ref, off)


def test_bias_variance_matches_numpy_on_the_same_draws():
    rng = np.random.default_rng(4)
    ref = _f32(_tree(rng))
    samples = _noisy(ref, 0.3, 0, 50)
    st = compare.bias_variance(samples, ref)
    G = np.stack([np.concatenate([np.ravel(np.asarray(l[i], np.float64)) for l in jax.tree.leaves(samples)])
                  for i in range(50)])
    r = _flat(ref)
    m = G.mean(0)
    var = ((G - m) ** 2).sum() / 49 / (r @ r)
    assert st["n"] == 50
    assert float(st["bias"]) == pytest.approx(np.linalg.norm(m - r) / np.linalg.norm(r), rel=1e-4)
    assert float(st["variance"]) == pytest.approx(var, rel=1e-4)
    assert float(st["bias_floor"]) == pytest.approx(math.sqrt(var / 50), rel=1e-4)
    cos = G @ r / (np.linalg.norm(G, axis=1) * np.linalg.norm(r))
    assert float(st["cos"]) == pytest.approx(cos.mean(), rel=1e-4)
    assert float(st["cos_std"]) == pytest.approx(cos.std(), rel=1e-3)
    assert float(st["rel_err"]) == pytest.approx(
        (np.linalg.norm(G - r, axis=1) / np.linalg.norm(r)).mean(), rel=1e-4)
    assert float(st["norm"]) == pytest.approx(np.linalg.norm(G, axis=1).mean(), rel=1e-4)
    assert float(st["cos_of_mean"]) == pytest.approx(m @ r / (np.linalg.norm(m) * np.linalg.norm(r)), rel=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_unbiased_estimator_is_within_its_floor_and_variance_is_recovered(seed):
    rng = np.random.default_rng(100 + seed)
    ref = _f32(_tree(rng))
    P, s, N = len(_flat(ref)), 0.2, 400
    st = compare.bias_variance(_noisy(ref, s, seed, N), ref)
    known = P * s**2 / float(_flat(ref) @ _flat(ref))
    assert float(st["variance"]) == pytest.approx(known, rel=0.05)  # N*P = 22,000 squared terms
    assert float(st["bias_floor"]) == pytest.approx(math.sqrt(known / N), rel=0.05)
    assert float(st["bias_ratio"]) < 3.0, st


@pytest.mark.parametrize("seed", range(5))
def test_biased_estimator_is_flagged(seed):
    """Power: a relative bias of 10% with a floor of ~2.5% must stand out (ratio > 3)."""
    rng = np.random.default_rng(200 + seed)
    ref = _f32(_tree(rng))
    r = _flat(ref)
    direction = _f32(_tree(rng))
    scale = 0.1 * np.linalg.norm(r) / np.linalg.norm(_flat(direction))
    offset = jax.tree.map(lambda a: scale * a, direction)
    P, N = len(r), 400
    s = math.sqrt(0.25 * (r @ r) / P)  # relative variance 0.25 -> floor sqrt(0.25 / 400) = 0.025
    st = compare.bias_variance(_noisy(ref, s, seed, N, offset), ref)
    assert float(st["bias"]) == pytest.approx(math.sqrt(0.1**2 + 0.25 / N), abs=0.02)
    assert float(st["bias_ratio"]) > 3.0, st
    # and the same noise without the offset passes
    assert float(compare.bias_variance(_noisy(ref, s, seed, N), ref)["bias_ratio"]) < 3.0


def test_draws_in_chunks_equals_vmapped():
    fn = lambda k: {"a": jax.random.normal(k, (3,)), "b": jax.random.uniform(k)}
    keys = jax.random.split(jax.random.key(5), 10)
    a, b = compare.draws(fn, keys), compare.draws(fn, keys, batch_size=4)
    assert a["a"].shape == (10, 3) and a["b"].shape == (10,)
    np.testing.assert_allclose(a["a"], b["a"], rtol=1e-6)
    np.testing.assert_allclose(a["b"], b["b"], rtol=1e-6)


def test_bias_variance_rejects_bad_samples():
    ref = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="N >= 2"):
        compare.bias_variance({"w": jnp.ones((1, 3))}, ref)
    with pytest.raises(ValueError, match=r"samples\['w'\] has shape \(4, 2\), expected \(4, 3\)"):
        compare.bias_variance({"w": jnp.ones((4, 2))}, ref)


# ----------------------------------------------------------------------------
# compiled memory and time


@pytest.mark.parametrize("n", [1_000, 50_000])
def test_compiled_memory_counts_known_buffers(n):
    x = jnp.ones((n,), jnp.float32)
    m = compare.compiled_memory(lambda a: a * 2.0, x)
    assert m["argument"] == 4 * n and m["output"] == 4 * n and m["alias"] == 0
    assert m["total"] == m["temp"] + 8 * n
    donated = compare.compiled_memory(jax.jit(lambda a: a * 2.0, donate_argnums=0), x)
    assert donated["alias"] == 4 * n and donated["total"] == donated["temp"] + 4 * n
    # an [n', n'] intermediate that two matrix products must materialise
    k = int(math.sqrt(n))
    y = jnp.ones((k, 8), jnp.float32)
    mm = compare.compiled_memory(lambda a: (a @ a.T) @ a, y)
    assert mm["temp"] >= 4 * k * k


def test_compiled_memory_grows_with_the_buffer():
    f = lambda a: jnp.sin(a).sum()
    small, big = (compare.compiled_memory(f, jax.ShapeDtypeStruct((n,), jnp.float32))
                  for n in (1_000, 101_000))
    assert big["argument"] - small["argument"] == 4 * 100_000
    assert big["total"] - small["total"] >= 4 * 100_000


def test_step_time_is_positive_and_finite_and_survives_donation():
    state = {"w": jnp.ones((64,))}
    step = jax.jit(lambda s, x: ({"w": s["w"] * x}, s["w"].sum()), donate_argnums=0)
    t = compare.step_time(step, state, 2.0, repeats=3)
    assert len(t["times_s"]) == 3 and t["compile_s"] > 0
    assert all(math.isfinite(v) and v > 0 for v in t["times_s"])
    assert 0 < t["min_s"] <= t["median_s"] < math.inf
    assert not state["w"].is_deleted()  # the caller's donated buffer was copied, not consumed
    compiled = step.lower(state, 2.0).compile()
    t2 = compare.step_time(compiled, state, 2.0, repeats=2, warmup=0)
    assert t2["compile_s"] is None and len(t2["times_s"]) == 2
    assert compare.compiled_memory(compiled)["argument"] > 0
    with pytest.raises(ValueError, match="repeats"):
        compare.step_time(step, state, 2.0, repeats=0)


# ----------------------------------------------------------------------------
# the README's snippet, as written


def _readme_snippet() -> str:
    text = README.read_text()
    i = text.index("### Comparing your own estimator to full()")
    m = re.search(r"```python\n(.*?)```", text[i:], re.S)
    assert m, "no python block in the README's 'Comparing your own estimator to full()'"
    return m.group(1)


def test_readme_compare_snippet_runs(capsys):
    code = _readme_snippet()
    assert 6 <= len([l for l in code.splitlines() if l.strip()]) <= 14
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    assert float(ns["stats"]["bias_ratio"]) < 3
    assert "cos" in capsys.readouterr().out
