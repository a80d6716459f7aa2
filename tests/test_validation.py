"""Bad input gets a clear ValueError/TypeError naming the argument, the expected
and the actual value, before anything is compiled (DESIGN.md, "Conventions").

One test per case; each asserts the error type and that the message names the
problem. None of these tests compiles a train step (they fail before it).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import validation, cli, data
from jrnn.models import Batch

V, H, B, T = 7, 4, 2, 5


@pytest.fixture(scope="module")
def lm():
    return jrnn.language_model(jrnn.gru(H), V)


@pytest.fixture(scope="module")
def opt():
    return jrnn.make_optimizer("sgd", 0.1, 1.0)


def ids(shape, hi=V, seed=0):
    return np.random.default_rng(seed).integers(0, hi, shape).astype(np.int32)


def fit(model, opt, batches, *, batch_size=B, estimator=None, state=None, run_dir=None,
        resume=False, **loop):
    """``jrnn.fit`` on a list of batches; batch-major ``(X [B, T], Y [B, T])`` pairs become the
    time-major :class:`Batch` fit takes, ``**loop`` the fields of its ``LoopConfig``."""
    batches = [b if isinstance(b, Batch) or not isinstance(b, tuple) else
               Batch(np.swapaxes(b[0], 0, 1), np.swapaxes(b[1], 0, 1))
               for b in batches]
    config = jrnn.LoopConfig(**{"progress": False, "quiet": True, **loop})
    return jrnn.fit(model, opt, lambda ep: batches, batch_size=batch_size, estimator=estimator,
                    state=state, run_dir=run_dir, resume=resume, config=config)


# --------------------------------------------------------------------------- carries


def test_carry_of_wrong_batch_size_is_named():
    cell = jrnn.lstm(H)
    with pytest.raises(ValueError, match=r"carry\.h has shape \(3, 4\), expected \(2, 4\)"):
        validation.check_carry(cell, cell.initial_carry((3,)), (2,))


def test_carry_of_wrong_hidden_size_dtype_or_structure():
    cell = jrnn.lstm(H)
    with pytest.raises(ValueError, match=r"carry\.c has shape \(2, 6\), expected \(2, 4\)"):
        validation.check_carry(cell, jrnn.LSTMState(jnp.zeros((2, 4)), jnp.zeros((2, 6))), (2,))
    with pytest.raises(ValueError, match=r"carry\.h has dtype int32, expected float32"):
        validation.check_carry(cell, jrnn.LSTMState(jnp.zeros((2, 4), jnp.int32), jnp.zeros((2, 4))), (2,))
    with pytest.raises(TypeError, match=r"carry has the wrong structure.*LSTMState"):
        validation.check_carry(cell, (jnp.zeros((2, 4)), jnp.zeros((2, 4))), (2,))
    validation.check_carry(cell, cell.initial_carry((2,)), (2,))  # the right one passes


def test_unroll_rejects_a_wrong_carry_and_foreign_params_eagerly():
    cell = jrnn.gru(H)
    p = cell.init(jax.random.key(0), 3)
    xs = jnp.ones((T, B, 3))
    with pytest.raises(ValueError, match=r"carry has shape \(3, 4\), expected \(2, 4\)"):
        jrnn.unroll(cell, p, xs, jnp.zeros((3, H)))
    with pytest.raises(ValueError, match=r"params\['W_h'\] has shape \(4, 12\), expected \(6, 18\)"):
        jrnn.unroll(jrnn.gru(6), p, xs)


# ---------------------------------------------------------------------------- params


def test_params_from_another_hidden_size_are_named():
    p = jrnn.gru(8).init(jax.random.key(0), 3)
    with pytest.raises(ValueError, match=r"params\['W_h'\] has shape \(8, 24\), expected \(4, 12\)"
                                         r".*another cell or size"):
        validation.check_params(jrnn.gru(H), p)
    with pytest.raises(ValueError, match=r"params\['W_x'\] has shape \(3, 24\), expected \(5, 24\)"):
        validation.check_params(jrnn.gru(8), p, input_size=5)


def test_params_from_another_cell_type_are_named():
    p = jrnn.gru(H).init(jax.random.key(0), 3)
    with pytest.raises(TypeError, match=r"params has the wrong structure for cell lstm"):
        validation.check_params(jrnn.lstm(H), p)


def test_evaluate_rejects_params_of_another_model(lm):
    other = jrnn.language_model(jrnn.gru(6), V).init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"params\['cell'\]\['W_h'\] has shape \(6, 18\), expected \(4, 12\)"):
        jrnn.evaluate(lm, other, [Batch(ids((T, B)), ids((T, B)))])


def test_fit_rejects_a_state_of_another_model_or_batch_size(lm, opt):
    est = jrnn.grads.full()
    other = jrnn.language_model(jrnn.gru(6), V)
    state = jrnn.init_state(other, opt, est, jax.random.key(0), B)
    with pytest.raises(ValueError, match=r"state\.params\['cell'\]\['W_h'\] has shape \(6, 18\)"):
        fit(lm, opt, [], state=state, estimator=est)
    state = jrnn.init_state(lm, opt, est, jax.random.key(0), 3)
    with pytest.raises(ValueError, match=r"state\.carry has shape \(3, 4\), expected \(2, 4\)"):
        fit(lm, opt, [], state=state, estimator=est)
    adam_state = jrnn.init_state(lm, jrnn.make_optimizer("adam", 0.1, 1.0), est, jax.random.key(0), B)
    with pytest.raises(TypeError, match=r"state\.opt_state has the wrong structure"):
        fit(lm, opt, [], state=adam_state, estimator=est)


# ------------------------------------------------------------------- token ids everywhere


def bad_ids(value, t=3, b=0):
    x = ids((T, B))
    x[t, b] = value
    return x


@pytest.mark.parametrize("kind", ["numpy", "device"])
@pytest.mark.parametrize("value", [-1, V, V + 20])
def test_check_ids_names_array_position_and_range(kind, value):
    x = bad_ids(value, t=3, b=1)
    x = x if kind == "numpy" else jnp.asarray(x)
    with pytest.raises(ValueError, match=rf"^batch\.inputs contains token id {value} outside the "
                                         rf"vocabulary \[0, {V}\) at position \(t=3, b=1\)$"):
        validation.check_ids("batch.inputs", x, V)
    validation.check_ids("batch.inputs", ids((T, B)), V)  # in range: passes
    validation.check_ids("batch.inputs", jnp.asarray(ids((T, B))), V)
    # traced values cannot be checked eagerly: skipped (documented)
    jax.jit(lambda a: validation.check_ids("batch.inputs", a, V) or a)(jnp.asarray(x))


@pytest.mark.parametrize("kind", ["numpy", "device"])
@pytest.mark.parametrize("where", ["inputs", "targets"])
def test_estimators_and_sequence_loss_refuse_bad_ids(lm, kind, where):
    params = lm.init(jax.random.key(0))
    arr = (lambda a: a) if kind == "numpy" else jnp.asarray
    good, bad = arr(ids((T, B))), arr(bad_ids(-1))
    batch = Batch(bad, good) if where == "inputs" else Batch(good, bad)
    msg = rf"batch\.{where} contains token id -1 outside the vocabulary \[0, {V}\) at position \(t=3, b=0\)"
    for est in (jrnn.grads.full(), jrnn.grads.truncated(2), jrnn.grads.checkpointed(2), jrnn.grads.rtrl()):
        with pytest.raises(ValueError, match=msg):
            est.value_and_grad(lm, params, est.init_carry(lm, params, (B,)), batch, jax.random.key(0))
    with pytest.raises(ValueError, match=msg):
        jrnn.sequence_loss(lm, params, lm.cell.initial_carry((B,)), batch)


@pytest.mark.parametrize("kind", ["numpy", "device"])
def test_predict_refuses_bad_prefix_ids(lm, kind):
    params = lm.init(jax.random.key(0))
    prefix = np.array([1, 2, V, 3], np.int32)
    with pytest.raises(ValueError, match=rf"prefix_ids contains token id {V} outside the vocabulary "
                                         rf"\[0, {V}\) at position \(t=2\)"):
        jrnn.predict(lm, params, prefix if kind == "numpy" else jnp.asarray(prefix), 3)
    with pytest.raises(ValueError, match=r"prefix_ids contains token id -1"):
        jrnn.predict(lm, params, np.array([-1]), 3)


def test_check_batch_is_what_a_train_step_calls(lm):
    validation.check_batch(lm, Batch(ids((T, B)), ids((T, B))), B)
    with pytest.raises(ValueError, match=r"batch\.targets contains token id 7 .* at position \(t=3, b=0\)"):
        validation.check_batch(lm, Batch(jnp.asarray(ids((T, B))), jnp.asarray(bad_ids(V))), B)


def test_targets_of_the_wrong_length_or_dtype(lm):
    with pytest.raises(ValueError, match=r"batch\.targets must start with the inputs' \[T, B\] = \(5, 2\), "
                                         r"got shape \(4, 2\)"):
        validation.check_batch(lm, Batch(ids((T, B)), ids((T - 1, B))))
    with pytest.raises(TypeError, match=r"batch\.targets must be integer labels \[T, B\] = \(5, 2\) for "
                                        r"this model \(ids in \[0, 7\)\), got dtype float32 shape \(5, 2\)"):
        validation.check_batch(lm, Batch(ids((T, B)), np.zeros((T, B), np.float32)))
    reg = jrnn.regressor(jrnn.gru(H), 3, 2)
    x = np.zeros((T, B, 3), np.float32)
    with pytest.raises(TypeError, match=r"batch\.targets must be floats \[T, B, O\] = \(5, 2, 2\) for this "
                                        r"model, got dtype float32 shape \(5, 2, 1\)"):
        validation.check_batch(reg, Batch(x, np.zeros((T, B, 1), np.float32)))  # would broadcast
    with pytest.raises(TypeError, match=r"batch\.targets must be floats .* got dtype int32"):
        validation.check_batch(reg, Batch(x, np.zeros((T, B, 2), np.int32)))


def test_integer_data_into_a_float_model_says_so():
    reg = jrnn.regressor(jrnn.gru(H), 3, 1)
    params = reg.init(jax.random.key(0))
    batch = Batch(np.full((T, B), 5, np.int32), np.zeros((T, B, 1), np.float32))
    msg = (r"batch\.inputs are integers \(dtype int32\), but this model takes float inputs "
           r"\[T, B, D=3\]; token ids need a token model")
    with pytest.raises(TypeError, match=msg):
        validation.check_batch(reg, batch)
    with pytest.raises(TypeError, match=msg):
        jrnn.grads.full().value_and_grad(reg, params, reg.cell.initial_carry((B,)), batch, None)


def test_float_inputs_into_a_bfloat16_model_are_named():
    reg = jrnn.regressor(jrnn.gru(H, dtype=jnp.bfloat16), 3, 1)
    params = reg.init(jax.random.key(0))
    assert params["head"]["W_hq"].dtype == jnp.bfloat16
    batch = Batch(np.zeros((T, B, 3), np.float32), np.zeros((T, B, 1), np.float32))
    with pytest.raises(TypeError, match=r"batch\.inputs has dtype float32 but the cell's params are "
                                        r"bfloat16"):
        jrnn.grads.full().value_and_grad(reg, params, reg.cell.initial_carry((B,)), batch, None)


def test_head_dtype_follows_the_cell():
    with jax.enable_x64(True):
        model = jrnn.language_model(jrnn.lstm(H, dtype=jnp.float64), V)
        params = model.init(jax.random.key(0))
        assert {a.dtype for a in jax.tree.leaves(params)} == {jnp.dtype(jnp.float64)}
        loss, _ = jrnn.sequence_loss(model, params, model.cell.initial_carry((B,)),
                                     Batch(ids((T, B)), ids((T, B))))
        assert loss.dtype == jnp.float64
    assert jrnn.classifier(jrnn.gru(H), 3, 4).init(jax.random.key(0))["head"]["b_q"].dtype == jnp.float32


def test_estimators_check_the_carry_once_at_the_boundary(lm):
    params = lm.init(jax.random.key(0))
    batch = Batch(ids((T, B)), ids((T, B)))
    with pytest.raises(ValueError, match=r"carry has shape \(3, 4\), expected \(2, 4\)"):
        jrnn.grads.full().value_and_grad(lm, params, lm.cell.initial_carry((3,)), batch, None)


# ----------------------------------------------------------------------------- batches


def test_token_ids_outside_the_vocabulary(lm, opt):
    bad = ids((B, T))
    bad[1, 2] = V
    with pytest.raises(ValueError, match=rf"inputs contains token id {V} outside the vocabulary \[0, {V}\)"):
        fit(lm, opt, [(bad, ids((B, T)))])
    with pytest.raises(ValueError, match=r"targets contains token id -1 outside the vocabulary"):
        fit(lm, opt, [(ids((B, T)), np.full((B, T), -1, np.int32))])
    with pytest.raises(ValueError, match=r"inputs contains token id 7"):
        jrnn.evaluate(lm, lm.init(jax.random.key(0)), [Batch(bad.T, ids((T, B)))])
    with pytest.raises(ValueError, match=r"token id 7 outside the vocabulary \[0, 7\)"):
        data.Vocab(list("abcdef")).decode([1, 7])


def test_classifier_labels_outside_the_classes(opt):
    model = jrnn.classifier(jrnn.gru(H), 3, 4)
    x = np.zeros((B, T, 3), np.float32)
    with pytest.raises(ValueError, match=r"targets contains class id 4 outside the model's outputs \[0, 4\)"):
        fit(model, opt, [(x, np.full((B, T), 4, np.int32))])


def test_batch_layout_dtype_and_size(lm, opt):
    with pytest.raises(TypeError, match=r"inputs must be integer token ids.*got dtype float32"):
        fit(lm, opt, [(np.zeros((B, T), np.float32), ids((B, T)))])
    with pytest.raises(ValueError, match=r"batch has 3 sequences .* but batch_size=2"):
        fit(lm, opt, [(ids((3, T)), ids((3, T)))])
    with pytest.raises(ValueError, match=r"targets must start with the inputs' \[T, B\] = \(5, 2\), got shape \(4, 2\)"):
        fit(lm, opt, [(ids((B, T)), ids((B, T - 1)))])
    reg = jrnn.regressor(jrnn.gru(H), 3, 1)
    with pytest.raises(ValueError, match=r"inputs must have shape \[T, B, D=3\], got \(5, 2, 2\)"):
        fit(reg, opt, [Batch(np.zeros((T, B, 2), np.float32), np.zeros((T, B, 1), np.float32))])
    with pytest.raises(ValueError, match=r"mask must have shape \[T, B\] = \(5, 2\), got \(5,\)"):
        fit(reg, opt, [Batch(np.zeros((T, B, 3), np.float32), np.zeros((T, B, 1), np.float32),
                             np.ones((T,), np.float32))])
    with pytest.raises(TypeError, match=r"time-major jrnn.Batch.*got ndarray"):
        fit(lm, opt, [ids((B, T))])


def test_lengths_must_lie_in_1_to_T():
    cell = jrnn.gru(H)
    p = cell.init(jax.random.key(0), 3)
    xs = jnp.ones((T, B, 3))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T=5\], got min 0"):
        jrnn.unroll(cell, p, xs, lengths=np.array([0, 3]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T=5\], got min 2 and max 6"):
        jrnn.unroll(cell, p, xs, lengths=np.array([2, 6]))
    with pytest.raises(TypeError, match=r"lengths must be integers"):
        jrnn.unroll(cell, p, xs, lengths=np.array([2.0, 3.0]))


# ---------------------------------------------------------------------------- corpora


def test_empty_corpora(lm, opt, tmp_path):
    with pytest.raises(ValueError, match=r"corpus is empty"):
        data.load_corpus("1234 !!\n")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match=r"text file is empty"):
        data.read_text(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match=r"need at least 31 tokens, got 5"):
        data.batches(np.arange(5), 2, 10, "sequential")
    with pytest.raises(ValueError, match=r"train_batches\(0\) yielded no batches.*too short"):
        fit(lm, opt, [])


# ------------------------------------------------------------------- hyper-parameters


@pytest.mark.parametrize("make, match", [
    (lambda: jrnn.gru(0), r"hidden_size must be an integer >= 1, got 0"),
    (lambda: jrnn.lstm(-3), r"hidden_size must be an integer >= 1, got -3"),
    (lambda: jrnn.elman(2.5), r"hidden_size must be an integer >= 1, got 2.5"),
    (lambda: jrnn.make_optimizer("adam", lr=0.0), r"lr must be a finite number > 0, got 0.0"),
    (lambda: jrnn.make_optimizer("adam", lr=float("inf")), r"lr must be a finite number > 0"),
    (lambda: jrnn.make_optimizer("adam", clip=-1.0), r"clip must be > 0 or None, got -1.0"),
    (lambda: data.batches(np.arange(100), 2, 0), r"num_steps must be an integer >= 1, got 0"),
    (lambda: data.batches(np.arange(100), 0, 5), r"batch_size must be an integer >= 1, got 0"),
])
def test_hyper_parameters_out_of_range(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("kw, match", [
    (dict(epochs=0), r"epochs must be an integer >= 1, got 0"),
    (dict(batch_size=0), r"batch_size must be an integer >= 1, got 0"),
    (dict(log_every=0), r"log_every must be an integer >= 1, got 0"),
    (dict(save_every=-5), r"save_every must be an integer >= 1 or None, got -5"),
    (dict(max_skips=0), r"max_skips must be an integer >= 1, got 0"),
    (dict(seed=-1), r"seed must be an integer >= 0, got -1"),
    (dict(on_nonfinite="ignore"), r"on_nonfinite must be one of \['stop', 'skip'\], got 'ignore'"),
    (dict(resume=True), r"resume=True needs run_dir"),
])
def test_fit_hyper_parameters_out_of_range(lm, opt, kw, match):
    with pytest.raises(ValueError, match=match):
        fit(lm, opt, [(ids((B, T)), ids((B, T)))], **kw)


@pytest.mark.parametrize("flags, message", [
    (["--hidden", "0"], "hidden must be an integer >= 1, got 0"),
    (["--lr", "-1"], "lr must be a finite number > 0, got -1.0"),
    (["--save-every", "-3"], "save_every must be an integer >= 1 or None, got -3"),
])
def test_cli_rejects_bad_settings_in_one_line(tmp_path, capsys, flags, message):
    """Every bad setting is one 'error:' line and exit status 2, no traceback."""
    text = tmp_path / "t.txt"
    text.write_text("the time machine " * 40)
    rc = cli.main(["train", "--text", str(text), "--hidden", "4", "--num-steps", "4", "--batch-size", "2",
                   "--out", str(tmp_path / "run"), "--no-progress", *flags])
    assert rc == 2 and capsys.readouterr().err.strip() == f"jrnn train: error: {message}"


def test_mean_ci_matches_the_t_table_and_covers_the_mean_95_percent_of_the_time():
    import numpy as np

    from jrnn.metrics import mean_ci

    # t_{0.975, 7} = 2.364624 (any t table); s = sd of 1..8 = 2.449490
    m, h = mean_ci(np.arange(1.0, 9.0))
    assert m == 4.5 and abs(h - 2.364624 * 2.449490 / np.sqrt(8)) < 1e-5
    rng = np.random.default_rng(0)
    hits = np.mean([abs(a) <= b for a, b in (mean_ci(rng.normal(size=8)) for _ in range(4000))])
    assert 0.935 < hits < 0.965  # binomial sd at 4000 draws: 0.0034
    hits50 = np.mean([abs(a) <= b for a, b in (mean_ci(rng.normal(size=8), 0.5) for _ in range(4000))])
    assert 0.47 < hits50 < 0.53  # and a 50% interval covers half the time: the level matters
    assert np.isnan(mean_ci([3.0])[1])
    with pytest.raises(ValueError, match="finite"):
        mean_ci([1.0, float("nan")])
