"""The loop's collaborators on their own (MetricsWindow, RunDir, the config), and
the loop's modes: ``seeds`` (checkpointed and resumed bitwise), ``eval_every``,
``time_limit``."""

import dataclasses
import json
import math
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
from jrnn import config as C
from jrnn import data
from jrnn.checkpoint import Interrupted
from jrnn.metrics import MetricsWindow, NonFiniteError

# ------------------------------------------------------------------ MetricsWindow


def m(loss, gnorm=1.0, finite=None):
    loss = np.asarray(loss, np.float32)
    fin = np.isfinite(loss) if finite is None else np.asarray(finite)
    return {"loss": jnp.asarray(loss), "grad_norm": jnp.asarray(np.full_like(loss, gnorm)),
            "finite": jnp.asarray(fin)}


def test_window_averages_and_resets():
    w = MetricsWindow()
    for i, l in enumerate([1.0, 2.0, 4.5]):
        w.add(i, m(l, gnorm=i), tokens=10)
    rec = w.record()
    assert rec["train_loss"] == pytest.approx(2.5) and rec["grad_norm"] == pytest.approx(1.0)
    assert rec["train_ppl"] == pytest.approx(math.exp(2.5)) and rec["tokens"] == 30
    assert rec["skipped"] == 0
    assert w.record() is None  # empty after a record
    w.add(3, m(0.5), tokens=5)
    assert w.record()["train_loss"] == pytest.approx(0.5)


def test_window_stop_policy_names_the_step_and_checkpoint():
    w = MetricsWindow("stop")
    w.add(0, m(1.0), 1)
    w.add(1, m(np.nan), 1)
    with pytest.raises(NonFiniteError, match=r"at step 1 \(loss=nan.*last good checkpoint \(step 0\) is in /x") as e:
        w.drain(0, "/x")
    assert (e.value.step, e.value.checkpoint_step) == (1, 0)


def test_window_skip_policy_counts_and_resets_in_a_row():
    w = MetricsWindow("skip", max_skips=3)
    for i, l in enumerate([1.0, np.nan, np.nan, 3.0, np.nan, np.nan]):
        w.add(i, m(l), 1)
    rec = w.record()  # two in a row at most: no error
    assert rec["skipped"] == 4 and rec["train_loss"] == pytest.approx(2.0)
    w.add(6, m(np.inf), 1)  # the third in a row
    with pytest.raises(NonFiniteError, match=r"3 non-finite steps in a row, the last at step 6"):
        w.drain()


def test_window_seeds_are_per_seed_and_state_round_trips():
    w = MetricsWindow("skip", max_skips=2)
    w.add(0, m([1.0, np.nan]), 4)
    w.add(1, m([3.0, 2.0]), 4)
    w.drain()
    saved = json.loads(json.dumps(w.state()))
    w2 = MetricsWindow("skip", max_skips=2)
    w2.load(saved)
    for win in (w, w2):
        win.add(2, m([5.0, np.nan]), 4)
    r1, r2 = w.record(), w2.record()
    assert r1["train_loss"] == pytest.approx([3.0, 2.0]) and r1["skipped"] == [0, 2]
    assert r2 == {**r1, "tokens": 4}  # the resumed window lost only the token count (timing)


# ------------------------------------------------------------------ config


def test_train_config_round_trips_through_json():
    cfg = C.TrainConfig()
    assert C.TrainConfig.from_json(cfg.to_json()) == cfg
    other = dataclasses.replace(cfg, model=C.ModelConfig(cell="lstm", hidden=8, layers=2),
                                optim=C.OptimConfig(lr=(0.1, 0.3)),
                                loop=dataclasses.replace(cfg.loop, seeds=3, save_every=None))
    assert C.TrainConfig.from_json(other.to_json()) == other
    assert C.loop_of(other).lrs == (0.1, 0.3) and C.loop_of(cfg).lrs is None
    assert C.from_flags(_parse("--lr", "0.1,0.3")).optim.lr == (0.1, 0.3)
    d = json.loads(cfg.to_json())
    d["model"]["hiden"] = 3
    with pytest.raises(ValueError, match=r"unknown keys \['hiden'\]"):
        C.TrainConfig.from_json(json.dumps(d))


def _parse(*flags):
    import argparse

    p = argparse.ArgumentParser()
    C.add_flags(p)
    return p.parse_args(list(flags))


def test_every_field_has_a_flag_and_flags_set_fields():
    ns = _parse("--hidden", "16", "--lr", "0.1", "--no-progress", "--save-every", "none",
                "--cell", "lstm", "--seeds", "2", "--clip", "none", "--out", "x")
    cfg = C.from_flags(ns)
    assert (cfg.model.hidden, cfg.optim.lr, cfg.loop.progress, cfg.loop.save_every) == (16, 0.1, False, None)
    assert (cfg.model.cell, cfg.loop.seeds, cfg.optim.clip, cfg.run.out) == ("lstm", 2, None, "x")
    assert cfg.data == C.TrainConfig().data  # untouched sections keep their defaults
    dests = {a.dest for a in _flag_actions()}
    for name, sec in C._sections():
        for f in dataclasses.fields(sec):
            assert (f"{name}.{f.name}" in dests) == f.metadata["flag"], f.name


def _flag_actions():
    import argparse

    p = argparse.ArgumentParser()
    C.add_flags(p)
    return [a for a in p._actions if "." in a.dest]


@pytest.mark.parametrize("flags, match", [
    (("--hidden", "0"), r"hidden must be an integer >= 1, got 0"),
    (("--hidden", "-3"), r"hidden must be an integer >= 1, got -3"),
    (("--lr", "-1"), r"lr must be a finite number > 0"),
    (("--grad", "truncated"), r"truncated needs a parameter"),
    (("--val-fraction", "1.5"), r"val_fraction must be a number in \[0, 1\)"),
    (("--time-limit", "0"), r"time_limit must be a number of seconds > 0"),
])
def test_bad_values_are_one_clear_error(flags, match):
    with pytest.raises(ValueError, match=match):
        C.from_flags(_parse(*flags))


def test_resume_may_change_how_long_not_what():
    saved = C.TrainConfig()
    cfg = C.from_flags(_parse("--epochs", "9", "--log-every", "3"), saved, resumed=True)
    assert (cfg.loop.epochs, cfg.loop.log_every, cfg.model) == (9, 3, saved.model)
    assert C.from_flags(_parse("--hidden", "256"), saved, resumed=True) == saved  # same value: fine
    with pytest.raises(ValueError, match=r"cannot change --hidden, --seed"):
        C.from_flags(_parse("--hidden", "16", "--seed", "4"), saved, resumed=True)


# ------------------------------------------------------------------ RunDir


def test_run_dir_owns_the_format(tmp_path):
    run = jrnn.RunDir(tmp_path / "r")
    with pytest.raises(FileNotFoundError, match="missing config.json"):
        run.read_config()
    cfg = C.TrainConfig()
    run.write_config(cfg)
    assert run.read_config() == cfg
    vocab = data.Vocab(data.tokenize(["abc ab"], "char"))
    run.write_vocab(vocab)
    assert run.read_vocab().idx_to_token == vocab.idx_to_token
    run.log({"step": 1})
    run.log({"step": 2})
    assert run.read_metrics() == [{"step": 1}, {"step": 2}]
    run.write_metrics([{"step": 0}])
    assert run.read_metrics() == [{"step": 0}]
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run.resume(None, {})
    state = jrnn.TrainState({"w": jnp.ones(3)}, (), (), jnp.int32(4))
    run.save(state, {"step": 4})
    assert run.start_fresh() == [4] and run.checkpointer.all_steps() == [] and run.read_metrics() == []


# ------------------------------------------------------------------ the loop's modes

V, H, B, T = 9, 6, 3, 4
CORPUS = np.random.default_rng(1).integers(0, V, 300).astype(np.int32)
LM = jrnn.language_model(jrnn.gru(H), V)
ADAM = jrnn.make_optimizer("adam", 0.02, 1.0)
SEEDS = jrnn.LoopConfig(epochs=2, seed=5, seeds=2, log_every=4, save_every=6, progress=False, quiet=True)


def batches(ep):
    return data.batches(CORPUS, B, T, "sequential", seed=1, epoch=ep)


VALIDATE = jrnn.held_out(LM, lambda: data.sequential_batches(CORPUS[:80], 2, T, 0))


def leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def untimed(rs):
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "train_seconds")} for r in rs]


def test_seeds_mode_trains_distinct_models_and_resumes_bitwise(tmp_path):
    ref = jrnn.fit(LM, ADAM, batches, batch_size=B, validate=VALIDATE, config=SEEDS,
                   run_dir=str(tmp_path / "ref"))
    assert jax.tree.leaves(ref.state.params)[0].shape[0] == 2
    vals = [r["val_ppl"] for r in ref.history if "val_ppl" in r]
    assert len(vals) == 2 and all(len(v) == 2 and v[0] != v[1] for v in vals)  # two different models
    train = [r for r in ref.history if "train_ppl" in r]
    assert all(len(r["train_ppl"]) == 2 for r in train)
    n = int(np.max(ref.state.step))
    assert n > 20
    seen = [0]

    def interrupting(ep):
        for b in batches(ep):
            seen[0] += 1
            if seen[0] == 15:
                os.kill(os.getpid(), signal.SIGINT)
            yield b

    out = str(tmp_path / "cut")
    with pytest.raises(Interrupted, match="at step 15"):
        jrnn.fit(LM, ADAM, interrupting, batch_size=B, validate=VALIDATE, config=SEEDS, run_dir=out)
    res = jrnn.fit(LM, ADAM, batches, batch_size=B, validate=VALIDATE, config=SEEDS, run_dir=out,
                   resume=True)
    assert leaves_equal(res.state, ref.state)
    assert untimed(res.history) == untimed(ref.history)
    with pytest.raises(jrnn.checkpoint.CheckpointError, match=r"seeds=2 there, 3 here"):
        jrnn.fit(LM, ADAM, batches, batch_size=B, config=dataclasses.replace(SEEDS, seeds=3),
                 run_dir=out, resume=True)


def test_seeds_nonfinite_guard_is_per_seed():
    model = jrnn.regressor(jrnn.elman(3), 2, 1)
    rng = np.random.default_rng(0)
    bs = [jrnn.Batch(rng.standard_normal((T, 2, 2)).astype(np.float32),
                     rng.standard_normal((T, 2, 1)).astype(np.float32)) for _ in range(4)]
    state = jrnn.init_states(model, ADAM, jrnn.grads.full(), jax.random.split(jax.random.key(0), 2), 2)
    state = state._replace(params=jax.tree.map(lambda a: a.at[1].set(np.nan), state.params))
    cfg = jrnn.LoopConfig(seeds=2, progress=False, quiet=True, log_every=2)
    with pytest.raises(NonFiniteError, match=r"at step 0 \(seeds \[1\]\)"):
        jrnn.fit(model, ADAM, lambda ep: bs, batch_size=2, config=cfg, state=state)
    res = jrnn.fit(model, ADAM, lambda ep: bs, batch_size=2, state=state,
                   config=dataclasses.replace(cfg, on_nonfinite="skip", max_skips=10))
    assert np.asarray(res.state.step).tolist() == [4, 0]  # seed 0 trained, seed 1 skipped every step
    assert res.history[-1]["skipped"] == [0, 4]


def test_eval_every_and_time_limit():
    cfg = jrnn.LoopConfig(epochs=3, eval_every=5, log_every=100, progress=False, quiet=True)
    res = jrnn.fit(LM, ADAM, batches, batch_size=B, validate=VALIDATE, config=cfg)
    per_epoch = sum(1 for _ in batches(0))
    steps = [r["step"] for r in res.history if "val_ppl" in r]
    expected = sorted(set(range(5, 3 * per_epoch + 1, 5)) | {per_epoch * (e + 1) for e in range(3)})
    assert steps == expected
    secs = [r["train_seconds"] for r in res.history]
    assert secs == sorted(secs) and secs[0] > 0
    # a time limit stops the run early, validates once more and says so
    quick = jrnn.fit(LM, ADAM, batches, batch_size=B, validate=VALIDATE,
                     config=dataclasses.replace(cfg, time_limit=1e-9, epochs=50))
    assert int(quick.state.step) == 1 and quick.history[-1]["stopped"] == "time_limit"
    assert "val_ppl" in quick.history[-1]


# ------------------------------------------------------------------ sweeps over learning rates


def test_changing_the_learning_rate_does_not_recompile():
    model = jrnn.regressor(jrnn.elman(3), 2, 1)
    opt = jrnn.make_optimizer("sgd", 0.1, None, inject=True)
    rng = np.random.default_rng(0)
    batch = jrnn.Batch(rng.standard_normal((T, 2, 2)).astype(np.float32),
                       rng.standard_normal((T, 2, 1)).astype(np.float32))
    step = jrnn.train_step(model, opt, donate=False)
    state = jrnn.init_state(model, opt, jrnn.grads.full(), jax.random.key(0), 2)
    deltas = []
    for lr in (0.1, 0.4):
        s = state._replace(opt_state=jrnn.set_hyperparam(state.opt_state, "learning_rate", lr))
        new, _ = step(s, batch, jax.random.key(0))
        deltas.append(np.asarray(new.params["head"]["W_hq"] - state.params["head"]["W_hq"]))
    assert step._cache_size() == 1
    np.testing.assert_allclose(deltas[1], 4 * deltas[0], rtol=1e-5)  # SGD: the step scales with lr
    with pytest.raises(ValueError, match="no injected hyper-parameter 'learning_rate'"):
        jrnn.set_hyperparam(jrnn.make_optimizer().init(state.params), "learning_rate", 0.1)


def test_a_sweep_equals_its_runs_trained_alone_and_one_nan_run_leaves_the_others():
    lrs, quiet = (0.05, 0.01), dict(progress=False, quiet=True, log_every=5)
    inject = jrnn.make_optimizer("adam", lrs[0], 1.0, inject=True)
    sweep = jrnn.fit(LM, inject, batches, batch_size=B, config=jrnn.LoopConfig(lrs=lrs, **quiet))
    for j, lr in enumerate(lrs):
        alone = jrnn.fit(LM, jrnn.make_optimizer("adam", lr, 1.0), batches, batch_size=B,
                         config=jrnn.LoopConfig(**quiet))
        for a, b in zip(jax.tree.leaves(sweep.state.params), jax.tree.leaves(alone.state.params)):
            np.testing.assert_allclose(a[j], b, rtol=1e-4, atol=2e-5)  # vmapped sums round apart
    # the same sweep with run 1's params poisoned: run 0 is bitwise the same, run 1 never updates
    cfg = jrnn.LoopConfig(lrs=lrs, on_nonfinite="skip", max_skips=1000, **quiet)
    from jrnn.loop import _init_runs

    clean = _init_runs(LM, inject, jrnn.grads.full(), jax.random.key(0), B, cfg)
    bad = clean._replace(params=jax.tree.map(lambda a: a.at[1].set(np.nan), clean.params))
    ref = jrnn.fit(LM, inject, batches, batch_size=B, config=cfg, state=clean)
    res = jrnn.fit(LM, inject, batches, batch_size=B, config=cfg, state=bad)
    assert leaves_equal(jax.tree.map(lambda a: a[0], res.state), jax.tree.map(lambda a: a[0], ref.state))
    assert leaves_equal(ref.state.params, sweep.state.params)
    assert int(res.state.step[1]) == 0 and res.history[-1]["skipped"][1] == int(np.max(res.state.step))


def test_a_sweep_in_chunks_equals_it_all_at_once():
    lrs, quiet = (0.05, 0.01), dict(progress=False, quiet=True, log_every=5)
    inject = jrnn.make_optimizer("adam", lrs[0], 1.0, inject=True)
    cfg = jrnn.LoopConfig(seeds=2, lrs=lrs, **quiet)
    whole = jrnn.fit(LM, inject, batches, batch_size=B, config=cfg)
    chunks = jrnn.fit(LM, inject, batches, batch_size=B,
                      config=dataclasses.replace(cfg, runs_per_chunk=3))  # 4 runs: 3 + 1 (padded)
    for a, b in zip(jax.tree.leaves(chunks.state), jax.tree.leaves(whole.state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-5)
    with pytest.raises(ValueError, match="runs_per_chunk splits a sweep"):
        jrnn.train_step(LM, inject, runs_per_chunk=2)
    with pytest.raises(ValueError, match="runs_per_chunk"):
        jrnn.LoopConfig(runs_per_chunk=0)
