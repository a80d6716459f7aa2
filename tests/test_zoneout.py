"""Zoneout and candidate dropout (jrnn.regularise): rate 0 = the plain cell, mask rates, the
evaluation update = the mean trained update, a NumPy loop, the estimators, the config; and torch
parity of nn.LSTM(dropout=p, num_layers=2) (evaluation, and its per-layer mask placement)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import regularise as R

V, H, B, T = 7, 5, 3, 4


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return jrnn.Batch(rng.integers(0, V, (T, B)).astype(np.int32),
                      rng.integers(0, V, (T, B)).astype(np.int32))


def _masks(n_layers, zoneout=None, candidate=None, recurrent=None, output=None):
    """A :class:`jrnn.regularise.Masks` with only the given per-layer entries."""
    none = [None] * n_layers
    return R.Masks(none, None, none, recurrent or none, output, candidate or none,
                   zoneout or [(None, None)] * n_layers)


def test_at_rate_zero_the_masked_cells_equal_the_plain_cell_values_and_gradients():
    xs = np.random.default_rng(0).normal(size=(T, B, 2)).astype(np.float32)
    for cell in (jrnn.lstm(H), jrnn.gru(H)):
        model = jrnn.regressor(cell, 2, 1)
        params = model.init(jax.random.key(1))["cell"]
        zero = jnp.zeros((T, B, H))  # zoneout 0: no unit keeps its value; candidate 0: all kept
        c_mask = zero if cell.name == "lstm" else None
        _, trained = R.apply_masks(model, _masks(1, [(zero, c_mask)], [jnp.ones((B, H))]))
        assert trained.cell.fast is None  # the masked path, not the plain cell itself

        def run(c, p):
            hs, carry = jrnn.unroll(c, p, xs, fast_path=False)
            return jnp.sum(hs ** 2) + sum(jnp.sum(a) for a in jax.tree.leaves(carry)), (hs, carry)

        (l0, out0), g0 = jax.value_and_grad(lambda p: run(cell, p), has_aux=True)(params)
        (l1, out1), g1 = jax.value_and_grad(lambda p: run(trained.cell, p), has_aux=True)(params)
        for a, b in zip(jax.tree.leaves((l0, out0)), jax.tree.leaves((l1, out1))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # values: bit for bit
        for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):  # gradients: XLA sums them in
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9)  # its order
        assert R.zoneout_cell(cell, 0.0, 0.0) is cell


def test_masks_have_the_requested_rates_zoneout_per_step_candidate_per_sequence():
    model = jrnn.language_model(jrnn.stack([jrnn.lstm(32), jrnn.gru(32)]), V)
    rates = R.Dropout(zoneout=0.3, zoneout_c=0.6, candidate=0.25)
    m = R.sample_masks(model, rates, jax.random.key(3), 16, num_steps=20)
    (zh0, zc0), (zh1, zc1) = m.zoneout
    assert zh0.shape == zc0.shape == zh1.shape == (20, 16, 32) and zc1 is None  # the gru has no c
    assert m.candidate[0].shape == m.candidate[1].shape == (16, 32)
    for mask, p in [(zh0, 0.3), (zc0, 0.6), (zh1, 0.3)]:
        a = np.asarray(mask)
        assert set(np.unique(a)) <= {0.0, 1.0}  # 1: keep the previous value (not inverted)
        assert abs(a.mean() - p) < 4 * np.sqrt(p * (1 - p) / a.size), (p, a.mean())
        assert not np.array_equal(a[0], a[1])  # a fresh mask at every step
    assert not np.array_equal(np.asarray(zh0), np.asarray(zh1))  # and per layer
    for g in m.candidate:
        a = np.asarray(g)
        assert set(np.unique(a)) <= {0.0, np.float32(1 / 0.75)}
        assert abs((a == 0).mean() - 0.25) < 4 * np.sqrt(0.25 * 0.75 / a.size)
    again = R.sample_masks(model, rates, jax.random.key(3), 16, num_steps=20)
    assert np.array_equal(again.zoneout[0][0], zh0)  # the same key, the same masks
    # the earlier masks keep their keys: adding zoneout changes neither the weight-drop mask
    # nor the recurrent one; another key changes zoneout's
    r0 = R.Dropout(weight_drop=0.5, recurrent=0.2)
    wd = R.sample_masks(model, r0, jax.random.key(4), 16)
    both = R.sample_masks(model, r0._replace(zoneout=0.2), jax.random.key(4), 16, 20)
    assert np.array_equal(wd.weight[1], both.weight[1]) and np.array_equal(wd.recurrent[0], both.recurrent[0])
    assert not np.array_equal(both.zoneout[0][0], zh0)
    with pytest.raises(ValueError, match="num_steps"):
        R.sample_masks(model, rates, jax.random.key(3), 16)


def test_the_evaluation_update_is_the_mean_of_the_trained_update():
    """One step from a fixed carry, N copies with independent masks: the mean trained update
    is zoneout's evaluation update (and, for candidate dropout, the plain cell's c / GRU h),
    within 5 standard errors per unit."""
    N, p_h, p_c, p_g = 2000, 0.3, 0.6, 0.4
    rng = np.random.default_rng(0)
    x = np.broadcast_to(rng.normal(size=(1, 1, 2)), (1, N, 2)).astype(np.float32)
    key = jax.random.key(7)
    for cell in (jrnn.lstm(H), jrnn.gru(H)):
        model = jrnn.regressor(cell, 2, 1)
        lstm = cell.name == "lstm"
        params = model.init(jax.random.key(2))["cell"]
        h0 = rng.normal(size=(1, H)).astype(np.float32)
        c1 = jrnn.LSTMState(h=h0, c=2 * h0[:, ::-1].copy()) if lstm else h0  # one example
        carry = jax.tree.map(lambda a: np.broadcast_to(a, (N, H)), c1)  # N copies
        old = [c1.h, c1.c] if lstm else [c1]
        p_zc = p_c if lstm else 0.0
        _, plain = jrnn.unroll(cell, params, x[:, :1], c1)
        _, evaluated = jrnn.unroll(R.zoneout_cell(cell, p_h, p_zc), params, x[:, :1], c1)
        fresh, want = jax.tree.leaves(plain), jax.tree.leaves(evaluated)  # [h, c] or [h]
        for r in (R.Dropout(zoneout=p_h, zoneout_c=p_zc), R.Dropout(candidate=p_g)):
            _, trained = R.apply_masks(model, R.sample_masks(model, r, key, N, 1))
            _, new = jrnn.unroll(trained.cell, params, x, carry)
            got = jax.tree.leaves(new)
            for i, p in enumerate([p_h, p_c] if lstm else [p_h]):
                g = np.asarray(got[i], np.float64)
                if r.zoneout:  # each unit is old or fresh: sd sqrt(p(1-p)) |old - fresh|
                    w, sd = want[i], np.sqrt(p * (1 - p)) * np.abs(old[i] - fresh[i])
                elif lstm and i == 0:
                    continue  # candidate dropout: LSTM's c = f c_prev + i g m is linear in m, h is not
                else:  # the plain cell's value, within the sample's own sd
                    w, sd = fresh[i], g.std(0)
                assert np.all(np.abs(g.mean(0) - np.asarray(w)[0]) <= 5 * sd / np.sqrt(N) + 1e-6), \
                    (cell.name, r, i)
                assert np.all(g.std(0) > 0)  # the masks did act


def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def _numpy_stack_loss(params, x, y, keep, cand, rec):
    """Mean CE of an [lstm, gru] token LM, zoned and candidate-dropped by hand.

    keep[l] = (d_h, d_c): ``[T, B, H]`` masks (train) or rates (evaluation); cand[l]: ``[B, H]``
    or 1; rec: the LSTM layer's ``h_{t-1}`` mask or 1."""
    P = [{k: np.asarray(v, np.float64) for k, v in p.items()} for p in params["cell"]]
    at = lambda d, t: d[t] if np.ndim(d) == 3 else d  # noqa: E731
    h0, c0, h1 = np.zeros((B, H)), np.zeros((B, H)), np.zeros((B, H))
    total = 0.0
    for t in range(T):
        p = P[0]  # lstm: gates i, f, g, o
        z = p["W_x"][x[t]] + p["b"] + (h0 * rec) @ p["W_h"]
        i, f, g, o = np.split(z, 4, axis=-1)
        c_new = _sig(f) * c0 + _sig(i) * (np.tanh(g) * cand[0])
        h_new = _sig(o) * np.tanh(c_new)
        (d_h, d_c) = keep[0]
        c0 = at(d_c, t) * c0 + (1 - at(d_c, t)) * c_new
        h0 = at(d_h, t) * h0 + (1 - at(d_h, t)) * h_new
        p = P[1]  # gru: gates r, z, n; reset after the product
        xp, hh = h0 @ p["W_x"] + p["b_x"], h1 @ p["W_h"]
        r, zz = _sig(xp[:, :H] + hh[:, :H]), _sig(xp[:, H:2 * H] + hh[:, H:2 * H])
        n = np.tanh(xp[:, 2 * H:] + r * (hh[:, 2 * H:] + p["b_hn"]))
        h_new = (1 - zz) * (n * cand[1]) + zz * h1
        d_h = keep[1][0]
        h1 = at(d_h, t) * h1 + (1 - at(d_h, t)) * h_new
        q = h1 @ np.asarray(params["head"]["W_hq"], np.float64) + np.asarray(params["head"]["b_q"])
        q = q - q.max(-1, keepdims=True)
        total -= (q - np.log(np.exp(q).sum(-1, keepdims=True)))[np.arange(B), y[t]].sum()
    return total / (T * B)


def test_a_stack_trains_and_evaluates_as_a_numpy_loop():
    model = jrnn.language_model(jrnn.stack([jrnn.lstm(H), jrnn.gru(H)]), V)
    rm = R.dropout(model, zoneout=0.3, zoneout_c=0.5, candidate=0.4)
    params, b = model.init(jax.random.key(0)), _batch(1)
    m = R.sample_masks(model, rm.regularise.rates, jax.random.key(5), B, T)
    rec = np.asarray(jax.random.bernoulli(jax.random.key(6), 0.7, (B, H)), np.float32) / 0.7
    m = m._replace(recurrent=[jnp.asarray(rec), None])  # Gal's h_{t-1} mask too: zoneout keeps the true h
    transform, trained = R.apply_masks(model, m)
    loss, _ = jrnn.sequence_loss(trained, transform(params), None, b)
    keep = [tuple(None if d is None else np.asarray(d, np.float64) for d in z) for z in m.zoneout]
    want = _numpy_stack_loss(params, b.inputs, b.targets, keep, [np.asarray(g) for g in m.candidate], rec)
    assert float(loss) == pytest.approx(want, rel=1e-5)
    # evaluation: rm's own cell is zoneout's expectation (p s_prev + (1 - p) s_new), no candidate mask
    ev, _ = jrnn.sequence_loss(rm, params, None, b)
    want_ev = _numpy_stack_loss(params, b.inputs, b.targets, [(0.3, 0.5), (0.3, None)], [1.0, 1.0], 1.0)
    assert float(ev) == pytest.approx(want_ev, rel=1e-5)
    assert want_ev != pytest.approx(_numpy_stack_loss(params, b.inputs, b.targets, [(0, 0), (0, None)],
                                                      [1.0, 1.0], 1.0), rel=1e-4)  # not the plain net


def test_estimators_with_fixed_masks_give_full_bptts_gradient_and_the_others_refuse():
    opt = jrnn.make_optimizer("sgd", 1.0, clip=None)
    b, key = _batch(2), jax.random.key(9)
    # zoneout: full BPTT (truncated / randomized differ from it by design, ES / PES are noisy);
    # candidate dropout: full and checkpointed (its segments, the same gradient)
    for cell, rates, specs in [(jrnn.lstm(H), {"zoneout": 0.3, "zoneout_c": 0.5}, ("full",)),
                               (jrnn.gru(H), {"candidate": 0.4}, ("full", "checkpointed:2"))]:
        model = jrnn.language_model(cell, V)
        params = model.init(jax.random.key(0))
        rm = R.dropout(model, **rates)
        masks = R.sample_masks(model, rm.regularise.rates, jax.random.fold_in(key, R.MASK_STREAM), B, T)
        transform, trained = R.apply_masks(model, masks)
        # the reference: jax.grad of the loss at those masks, by hand
        want = jax.grad(lambda p: jrnn.sequence_loss(trained, transform(p), None, b)[0])(params)
        for spec in specs:
            est = jrnn.grads.parse(spec)
            st = jrnn.init_state(rm, opt, est, jax.random.key(0), B)
            new, _ = jrnn.train_step(rm, opt, est, donate=False)(st, b, key)
            for g, p0, p1 in zip(jax.tree.leaves(want), jax.tree.leaves(st.params),
                                 jax.tree.leaves(new.params)):
                np.testing.assert_allclose(np.asarray(p0 - p1), np.asarray(g), rtol=2e-5, atol=1e-7,
                                           err_msg=f"{rates} {spec}")
    zo, cand = R.dropout(model, zoneout=0.2), R.dropout(model, candidate=0.2)  # model: the gru LM
    for spec in ("tbptt:2", "checkpointed:2", "rtrl", "uoro"):
        with pytest.raises(ValueError, match="zoneout's per-step masks"):
            jrnn.train_step(zo, opt, jrnn.grads.parse(spec))
    with pytest.raises(ValueError, match="one example at a time.*candidate"):
        jrnn.train_step(cand, opt, jrnn.grads.parse("rtrl"))
    with pytest.raises(ValueError, match="candidate of an lstm or gru"):
        R.dropout(jrnn.language_model(jrnn.elman(H), V), candidate=0.2)
    with pytest.raises(ValueError, match="memory c"):
        R.dropout(jrnn.language_model(jrnn.gru(H), V), zoneout_c=0.2)


def test_the_config_builds_and_records_zoneout_and_candidate_dropout():
    import argparse

    from jrnn import config as C

    parser = argparse.ArgumentParser()
    C.add_flags(parser)
    cfg = C.from_flags(parser.parse_args(["--cell", "lstm", "--zoneout", "0.1", "--zoneout-c", "0.5",
                                          "--candidate-dropout", "0.25"]))
    model = C.build_model(cfg.model, 11)
    assert model.regularise.rates == R.Dropout(candidate=0.25, zoneout=0.1, zoneout_c=0.5)
    assert C.TrainConfig.from_json(cfg.to_json()).model.dropout_rates() == model.regularise.rates
    same = C.from_flags(parser.parse_args(["--cell", "lstm", "--zoneout", "0.1"]))
    assert same.model.dropout_rates().zoneout_c == 0.1  # --zoneout alone: c too
    gru = C.from_flags(parser.parse_args(["--cell", "gru", "--zoneout", "0.1"]))
    assert gru.model.dropout_rates() == R.Dropout(zoneout=0.1)
    with pytest.raises(ValueError, match="no c"):
        C.ModelConfig(cell="gru", zoneout_c=0.2)
    with pytest.raises(ValueError, match=r"zoneout must be a number in \[0, 1\)"):
        C.ModelConfig(zoneout=1.0)


# ---------------------------------------------------------------------------- torch parity


def _torch_lstm(p, D, seed=0):
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    return torch, torch.nn.LSTM(D, H, num_layers=2, dropout=p)


def test_torch_lstm_with_dropout_in_eval_mode_equals_jrnns_stack_at_evaluation():
    D, p = 3, 0.4
    torch, mod = _torch_lstm(p, D)
    mod.eval()
    xs = np.random.default_rng(0).normal(size=(T, B, D)).astype(np.float32)
    with torch.no_grad():
        want = mod(torch.from_numpy(xs))[0].numpy()
    rm = R.dropout(jrnn.regressor(jrnn.stack([jrnn.lstm(H), jrnn.lstm(H)]), D, 1), between=p)
    hs, _ = jrnn.unroll(rm.cell, jrnn.from_torch("lstm", mod, None), xs)  # what evaluation runs
    np.testing.assert_allclose(np.asarray(hs), want, atol=1e-5)


def test_torch_lstm_mask_placement_given_the_same_masks():
    """nn.LSTM(num_layers=2, dropout=p) drops layer 0's output, the input of layer 1, and not the
    last layer's: run torch layer by layer with that multiply (as nn.LSTM does inside) and jrnn
    with the same mask as its between-layer mask."""
    D, p = 3, 0.4
    torch, mod = _torch_lstm(p, D, seed=1)
    xs = np.random.default_rng(1).normal(size=(T, B, D)).astype(np.float32)
    keep = np.asarray(jax.random.bernoulli(jax.random.key(0), 1 - p, (B, H)), np.float32) / (1 - p)
    layers = []
    for l, d in enumerate((D, H)):
        one = torch.nn.LSTM(d, H)
        one.load_state_dict({f"{k}_l0": v for k, v in
                             ((n[:-3], t) for n, t in mod.state_dict().items() if n.endswith(f"_l{l}"))})
        layers.append(one)
    with torch.no_grad():
        mid = layers[0](torch.from_numpy(xs))[0] * torch.from_numpy(keep)  # [T, B, H] * [B, H]
        want = layers[1](mid)[0].numpy()
    model = jrnn.regressor(jrnn.stack([jrnn.lstm(H), jrnn.lstm(H)]), D, 1)
    masks = R.Masks([None, None], None, [None, jnp.asarray(keep)], [None, None], None)
    _, trained = R.apply_masks(model, masks)
    hs, _ = jrnn.unroll(trained.cell, jrnn.from_torch("lstm", mod, None), xs)
    np.testing.assert_allclose(np.asarray(hs), want, atol=1e-5)
    plain, _ = jrnn.unroll(model.cell, jrnn.from_torch("lstm", mod, None), xs)
    assert not np.allclose(np.asarray(plain), want, atol=1e-3)  # the mask mattered
