"""KF-RTRL (jrnn.grads.kf) against RTRL's exact influence gradient.

- exact where no random combination has been used yet: on two steps from a
  fresh carry the Kronecker factors hold the influence exactly, for any key;
- unbiased: the mean over many keys equals RTRL's gradient (z-score per
  element, on a fresh carry and on the next batch, whose influence is carried
  over), and the same bound rejects the gradient with that influence dropped;
- variance lower than UORO's on the same net and the same batches;
- resets: nothing crosses a reset (the estimate on the second episode ignores
  the first episode's inputs when a reset separates them, and does not
  without it), and on a packed stream the mean still equals RTRL's;
- other cells are refused in ``init_carry``.

Sizes are tiny (H = 3, T <= 6); each test compiles one program.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import grads as G
from jrnn.grads import kf
from jrnn.models import Batch

Z = 5.0
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _problem(cell, tokens, T, B, seed, mask=False, V=4, D=3, O=2):
    model = jrnn.language_model(cell, V) if tokens else jrnn.regressor(cell, D, O)
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    params = jax.tree.map(lambda a: rng.uniform(-0.6, 0.6, a.shape).astype(np.float32), shapes)
    if tokens:
        x, y = (rng.integers(0, V, (T, B)).astype(np.int32) for _ in range(2))
    else:
        x = rng.normal(size=(T, B, D)).astype(np.float32)
        y = rng.normal(size=(T, B, O)).astype(np.float32)
    m = (rng.random((T, B)) < 0.6).astype(np.float32) if mask else np.ones((T, B), np.float32)
    m[-1] = 1.0
    return model, params, Batch(x, y, m)


def _flat(tree):
    return jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(tree)])


def _zscores(samples, target):
    n = samples.shape[0]
    se = np.maximum(samples.std(0) / np.sqrt(n), 1e-5 * (np.abs(target) + 1e-3))
    return np.abs(samples.mean(0) - target) / se


CELLS = {"rnn": (lambda: jrnn.elman(3), True),
         "leaky": (lambda: jrnn.leaky(3, tau=[2.0, 3.0, 5.0], learn_tau=False), False)}


@pytest.mark.parametrize("cell", list(CELLS))
def test_kf_rtrl_is_exact_on_two_steps_unbiased_after_and_beats_uoro(cell):
    T, B, n = 4, 1, 4000
    mk, tokens = CELLS[cell]
    model, params, b1 = _problem(mk(), tokens, T, B, seed=4)
    b2 = _problem(mk(), tokens, T, B, seed=5, mask=True)[2]
    both = jax.tree.map(lambda a, b: np.stack([a, b]), b1, b2)
    first2 = b1._replace(mask=np.where(np.arange(T)[:, None] < 2, 1.0, 0.0).astype(np.float32))
    est, uoro, rtrl = kf.kf_rtrl(), G.uoro(), G.rtrl()

    def two(e, key):
        """Batch 1, then batch 2 from its carry: losses [2], cell grads [2, P], head grad [P]."""
        def body(c, inp):
            b, k = inp
            l, g, c, _ = e.value_and_grad(model, params, c, b, k)
            return c, (l, _flat(g["cell"]), _flat(g["head"]))
        _, (l, g, h) = jax.lax.scan(body, e.init_carry(model, params, (B,)),
                                     (both, jax.random.split(key)))
        return l, g, h[1]

    def fresh(e, b, key):
        c = e.init_carry(model, params, (B,))
        return _flat(e.value_and_grad(model, params, c, b, key)[1]["cell"])

    @_jit
    def run():
        keys = jax.random.split(jax.random.key(0), n)
        kl, kg, kh = jax.vmap(lambda k: two(est, k))(keys)
        ug = jax.vmap(lambda k: two(uoro, k)[1])(keys)
        rl, rg, rh = two(rtrl, keys[0])
        k2 = jax.vmap(lambda k: fresh(est, first2, k))(keys[:8])
        r2 = fresh(rtrl, first2, None)
        # BPTT semantics on batch 2 (incoming state held fixed): what KF-RTRL must NOT match
        state1 = rtrl.value_and_grad(model, params, rtrl.init_carry(model, params, (B,)), b1,
                                     None)[2].state
        g_cut = _flat(G.full().value_and_grad(model, params, state1, b2, None)[1]["cell"])
        return (kl, kg, kh), ug, (rl, rg, rh), (k2, r2), g_cut

    (kl, kg, kh), ug, (rl, rg, rh), (k2, r2), g_cut = run()
    np.testing.assert_allclose(kl, np.broadcast_to(rl, kl.shape), rtol=1e-5)
    np.testing.assert_allclose(kh, np.broadcast_to(rh, kh.shape), rtol=1e-4, atol=1e-6)
    # two steps from a fresh carry: the first combination is a (x) diag(D) exactly, whatever c
    np.testing.assert_allclose(k2, np.broadcast_to(r2, k2.shape), rtol=1e-4, atol=1e-6)
    kg, ug, rg = np.asarray(kg), np.asarray(ug), np.asarray(rg)
    for i in range(2):
        assert kg[:, i].std(0).max() > 1e-4  # really stochastic after step 2
        z = _zscores(kg[:, i], rg[i])
        assert z.max() < Z, f"batch {i + 1}: KF-RTRL mean {z.max():.1f} standard errors from RTRL"
        var_kf, var_uoro = kg[:, i].var(0).sum(), ug[:, i].var(0).sum()
        assert var_kf < 0.5 * var_uoro, f"batch {i + 1}: variance {var_kf:.3g}, UORO {var_uoro:.3g}"
    # power: the same test rejects the gradient with batch 1's influence dropped
    assert _zscores(kg[:, 1], np.asarray(g_cut)).max() > Z


def test_kf_rtrl_honours_resets():
    """Row b's stream has episodes [0, 3) and [3, 6); only the second one's loss counts."""
    T, B, n = 6, 2, 2000
    model, params, b = _problem(jrnn.elman(3, activation="relu"), False, T, B, seed=7)
    resets = np.zeros((T, B), bool)
    resets[3] = True
    second = ((np.arange(T) >= 3)[:, None] * np.ones((1, B))).astype(np.float32)
    b = b._replace(mask=second, resets=resets)
    first = np.arange(T)[:, None, None] < 3
    other = b._replace(inputs=np.where(first, 3.0, b.inputs).astype(np.float32))
    # the second episode alone, from a fresh carry: RTRL's reference gradient
    alone = Batch(b.inputs[3:], b.targets[3:], second[3:])
    est, rtrl, key = kf.kf_rtrl(), G.rtrl(), jax.random.key(0)
    carry = jax.tree.map(lambda a: a + 0.5, est.init_carry(model, params, (B,)))

    def g(batch, k):
        return _flat(est.value_and_grad(model, params, carry, batch, k)[1]["cell"])

    @_jit
    def run():
        same = (g(b, key), g(other, key), g(b._replace(resets=None), key),
                g(other._replace(resets=None), key))
        samples = jax.vmap(lambda k: g(b, k))(jax.random.split(key, n))
        ref = _flat(rtrl.value_and_grad(model, params, rtrl.init_carry(model, params, (B,)), alone,
                                        None)[1]["cell"])
        rc = rtrl.init_carry(model, params, (B,))
        uncut = _flat(rtrl.value_and_grad(model, params, rc._replace(state=carry.state),
                                          b._replace(resets=None), None)[1]["cell"])
        return same, samples, ref, uncut

    (g1, g2, c1, c2), samples, ref, uncut = run()
    np.testing.assert_allclose(g1, g2, rtol=1e-6, atol=1e-8)  # the first episode plays no part
    assert np.abs(np.asarray(c1) - np.asarray(c2)).max() > 1e-3  # ... unless no reset cuts it
    samples = np.asarray(samples)
    assert samples.std(0).max() > 1e-4
    z = _zscores(samples, np.asarray(ref))
    assert z.max() < Z, f"KF-RTRL on the packed stream: {z.max():.1f} standard errors from RTRL"
    # power: the exact gradient of the same stream without the reset is rejected
    assert _zscores(samples, np.asarray(uncut)).max() > Z


@pytest.mark.parametrize("cell", [
    jrnn.gru(3), jrnn.lstm(3), jrnn.leaky(3, tau=4.0),  # learned tau: not Kronecker
    jrnn.elman(3)._replace(fast=None), jrnn.stack([jrnn.elman(3), jrnn.elman(3)]),
], ids=["gru", "lstm", "leaky-learned-tau", "rnn-without-fast", "stack"])
def test_kf_rtrl_refuses_other_cells(cell):
    model = jrnn.language_model(cell, 4)
    params = model.init(jax.random.key(0))
    with pytest.raises(ValueError, match=rf"kf-rtrl needs an Elman-type cell .* got cell "
                                         rf"{cell.name!r}"):
        kf.kf_rtrl().init_carry(model, params, (2,))


def test_kf_rtrl_parse_and_bad_arguments():
    assert G.parse("kf-rtrl").name == "kf-rtrl"
    for eps in (0, -1.0, True, "x"):
        with pytest.raises(ValueError, match="eps"):
            kf.kf_rtrl(eps)
    model, params, batch = _problem(jrnn.elman(3), True, 2, 2, seed=0)
    est = kf.kf_rtrl()
    with pytest.raises(ValueError, match="key"):
        est.value_and_grad(model, params, est.init_carry(model, params, (2,)), batch, None)
    with pytest.raises(TypeError, match="OnlineCarry"):
        est.value_and_grad(model, params, model.cell.initial_carry((2,)), batch, jax.random.key(0))


def test_fit_with_kf_rtrl_lowers_the_loss():
    corpus, vocab = jrnn.data.load_corpus("hello world " * 40)
    model = jrnn.language_model(jrnn.elman(8), len(vocab))
    res = jrnn.fit(model, jrnn.make_optimizer("adam", 0.05),
                   lambda epoch: jrnn.data.batches(corpus, 2, 8, "sequential", seed=0, epoch=epoch),
                   estimator=G.parse("kf-rtrl"), batch_size=2,
                   config=jrnn.LoopConfig(epochs=2, log_every=10, progress=False, quiet=True))
    ppl = [r["train_ppl"] for r in res.history if "train_ppl" in r]
    assert len(ppl) >= 3 and all(np.isfinite(ppl)), ppl
    assert ppl[-1] < 0.7 * ppl[0], f"train perplexity {ppl[0]:.2f} -> {ppl[-1]:.2f}"


# --------------------------------------------------------------------------- OK


@pytest.mark.parametrize("sigma", [[3.0, 2.0, 1.0], [5.0, 1.0, 0.5], [1.0, 1.0, 1.0],
                                   [2.0, 1.0, 0.0], [4.0, 3.0, 2.0, 1.0]])
def test_ok_rank_drop_is_unbiased_by_enumeration(sigma):
    """Over all sign vectors: the mean of Y Y^T is diag(sigma), each Y has one column fewer;
    when the last value is zero nothing is random (exact)."""
    n = len(sigma)
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=n)))
    drop = jax.jit(jax.vmap(lambda c: kf._unbiased_rank_drop(jnp.asarray(sigma), c)))
    Ys = np.asarray(drop(signs))
    assert Ys.shape == (2 ** n, n, n - 1)
    mean = np.einsum("sij,skj->ik", Ys, Ys) / 2 ** n
    np.testing.assert_allclose(mean, np.diag(sigma), atol=1e-5)
    spread = np.einsum("sij,skj->sik", Ys, Ys).std(0).max()
    assert (spread < 1e-5) == (sigma[-1] == 0.0), spread


def test_ok_is_exact_on_three_steps_unbiased_after_and_beats_kf_rtrl():
    T, B, n = 4, 1, 2000
    model, params, b1 = _problem(jrnn.elman(3), True, T, B, seed=4)
    b2 = _problem(jrnn.elman(3), True, T, B, seed=5, mask=True)[2]
    both = jax.tree.map(lambda a, b: np.stack([a, b]), b1, b2)
    first3 = b1._replace(mask=np.where(np.arange(T)[:, None] < 3, 1.0, 0.0).astype(np.float32))
    ok, kfr, rtrl = kf.ok_rtrl(2), kf.kf_rtrl(), G.rtrl()

    def two(e, key):
        def body(c, inp):
            b, k = inp
            _, g, c, _ = e.value_and_grad(model, params, c, b, k)
            return c, _flat(g["cell"])
        return jax.lax.scan(body, e.init_carry(model, params, (B,)),
                            (both, jax.random.split(key)))[1]

    @_jit
    def run():
        keys = jax.random.split(jax.random.key(1), n)
        og = jax.vmap(lambda k: two(ok, k))(keys)
        kg = jax.vmap(lambda k: two(kfr, k))(keys)
        rg = two(rtrl, keys[0])
        o3 = jax.vmap(lambda k: _flat(ok.value_and_grad(
            model, params, ok.init_carry(model, params, (B,)), first3, k)[1]["cell"]))(keys[:8])
        r3 = _flat(rtrl.value_and_grad(model, params, rtrl.init_carry(model, params, (B,)), first3,
                                       None)[1]["cell"])
        return og, kg, rg, o3, r3

    og, kg, rg, o3, r3 = map(np.asarray, run())
    # rank <= 2 until the third step's influence: exact, whatever the signs (to float32
    # round-off through the QR / SVD / eigh; float64 agrees to 1e-15)
    np.testing.assert_allclose(o3, np.broadcast_to(r3, o3.shape), atol=5e-4 * np.abs(r3).max())
    for i in range(2):
        assert og[:, i].std(0).max() > 1e-4
        z = _zscores(og[:, i], rg[i])
        assert z.max() < Z, f"batch {i + 1}: OK mean {z.max():.1f} standard errors from RTRL"
        var_ok, var_kf = og[:, i].var(0).sum(), kg[:, i].var(0).sum()
        assert var_ok < 0.5 * var_kf, f"batch {i + 1}: variance {var_ok:.3g}, KF-RTRL {var_kf:.3g}"
    # power: a target off by 5% of the gradient's scale is rejected
    assert _zscores(og[:, 1], rg[1] + 0.05 * np.abs(rg[1]).max()).max() > Z


def test_ok_parse_and_refusals():
    assert G.parse("ok").name == "ok" and G.parse("ok:3").name == "ok:3"
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="rank"):
            kf.ok_rtrl(bad)
    model = jrnn.language_model(jrnn.gru(3), 4)
    with pytest.raises(ValueError, match="ok needs an Elman-type cell"):
        kf.ok_rtrl().init_carry(model, model.init(jax.random.key(0)), (2,))
