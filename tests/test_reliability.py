"""Nothing lost, nothing silent: exact resume, the non-finite guard, checkpoints
that survive SIGKILL, clear errors for corrupt or mismatched checkpoints.

Bitwise comparisons are on CPU (same machine, same process or not). Tiny models
(GRU 8, V=11) so that the whole file runs in well under a minute on 2 cores;
the model, optimizer and estimator objects are shared so that ``fit`` compiles
each train step once (it memoises them).

Not duplicated here: the batch iterators' never-drop/never-duplicate property
is ``tests/test_data.py::test_sequential_property``; padding never changing real
outputs is covered in ``tests/test_unroll.py``.
"""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jrnn
from jrnn import data
from jrnn.checkpoint import Checkpointer, CheckpointError, Interrupted

V, H, B, T = 11, 8, 4, 5
CORPUS = np.random.default_rng(0).integers(0, V, 700).astype(np.int32)
LM = jrnn.language_model(jrnn.gru(H), V)
ADAM = jrnn.make_optimizer("adam", 0.01, 1.0)
RANDOMIZED = jrnn.grads.randomized(0.5)  # draws from the step keys: checks their derivation


def batches(ep):
    return data.batches(CORPUS, B, T, "sequential", seed=3, epoch=ep)


def val_batches():
    return data.sequential_batches(CORPUS[:200], 2, T, 0)


LOOP = jrnn.LoopConfig(epochs=2, seed=3, log_every=7, save_every=10, progress=False, quiet=True)
RUN = dict(estimator=RANDOMIZED, batch_size=B, validate=jrnn.held_out(LM, val_batches), config=LOOP)


def loop(**kw):
    return dataclasses.replace(LOOP, **kw)


def leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(la, lb))


def untimed(records):
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "train_seconds")} for r in records]


def jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: ``(result, out_dir)``."""
    out = tmp_path_factory.mktemp("ref")
    return jrnn.fit(LM, ADAM, batches, run_dir=str(out), **RUN), out


# --------------------------------------------------------------------- exact resume


def test_resume_after_sigint_and_after_a_crash_is_bitwise_identical(reference, tmp_path):
    ref, ref_dir = reference
    n = sum(1 for _ in batches(0)) + sum(1 for _ in batches(1))
    assert int(ref.state.step) == n > 40  # two epochs, every update applied

    # (a) SIGINT arrives mid-epoch (batch 33, in epoch 1): fit saves and stops
    seen = [0]

    def interrupting(ep):
        for xy in batches(ep):
            seen[0] += 1
            if seen[0] == 34:
                os.kill(os.getpid(), signal.SIGINT)
            yield xy

    out = str(tmp_path / "sigint")
    with pytest.raises(Interrupted, match=r"interrupted by SIGINT at step 34: checkpoint saved.*resume") as e:
        jrnn.fit(LM, ADAM, interrupting, run_dir=out, **RUN)
    assert e.value.step == 34 and Checkpointer(out).latest_step() == 34
    res = jrnn.fit(LM, ADAM, batches, run_dir=out, resume=True, **RUN)
    assert leaves_equal(res.state, ref.state)  # params, optimizer state, carry, step
    assert untimed(res.history) == untimed(ref.history)
    assert untimed(jsonl(f"{out}/metrics.jsonl")) == untimed(jsonl(f"{ref_dir}/metrics.jsonl"))

    # (b) a crash (no chance to save) at batch 46: resume from the step-40 checkpoint; the
    # records logged after it (step 42) are dropped from metrics.jsonl, then logged again
    seen[0] = 0

    def crashing(ep):
        for xy in batches(ep):
            seen[0] += 1
            if seen[0] == 47:
                raise RuntimeError("power cut")
            yield xy

    out = str(tmp_path / "crash")
    with pytest.raises(RuntimeError, match="power cut"):
        jrnn.fit(LM, ADAM, crashing, run_dir=out, **RUN)
    assert Checkpointer(out).latest_step() == 40
    assert jsonl(f"{out}/metrics.jsonl")[-1]["step"] == 42
    res = jrnn.fit(LM, ADAM, batches, run_dir=out, resume=True, **RUN)
    assert leaves_equal(res.state, ref.state)
    assert untimed(jsonl(f"{out}/metrics.jsonl")) == untimed(jsonl(f"{ref_dir}/metrics.jsonl"))


def test_checkpoint_holds_the_whole_run_state(reference):
    ref, ref_dir = reference
    ck = Checkpointer(str(ref_dir))
    assert len(ck.all_steps()) == 2  # keep=2
    template = jrnn.init_state(LM, ADAM, RANDOMIZED, jax.random.key(0), B)
    state, meta = ck.restore(template)
    assert leaves_equal(state, ref.state)
    assert (meta["step"], meta["epoch"], meta["batch"]) == (int(ref.state.step), 2, 0)
    assert untimed(meta["history"]) == untimed(ref.history)
    assert meta["config"]["seed"] == 3 and "fold_in" in meta["rng"]


def test_resume_twice_and_extending_epochs(reference, tmp_path):
    """A finished run resumed with more epochs equals a run with that many epochs from the start."""
    ref, _ = reference
    out = str(tmp_path / "short")
    jrnn.fit(LM, ADAM, batches, run_dir=out, **{**RUN, "config": loop(epochs=1)})
    again = jrnn.fit(LM, ADAM, batches, run_dir=out, resume=True, **{**RUN, "config": loop(epochs=1)})  # no-op
    assert int(again.state.step) == sum(1 for _ in batches(0))
    res = jrnn.fit(LM, ADAM, batches, run_dir=out, resume=True, **RUN)
    assert leaves_equal(res.state, ref.state)
    assert untimed(res.history) == untimed(ref.history)


def test_a_fresh_run_replaces_an_old_one_and_resume_needs_a_checkpoint(reference, tmp_path):
    ref, ref_dir = reference
    out = str(tmp_path / "reuse")
    shutil.copytree(ref_dir, out)
    res = jrnn.fit(LM, ADAM, batches, run_dir=out, **{**RUN, "config": loop(epochs=1)})  # not resume: fresh
    assert Checkpointer(out).latest_step() == int(res.state.step) < int(ref.state.step)
    assert untimed(jsonl(f"{out}/metrics.jsonl")) == untimed(res.history)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        jrnn.fit(LM, ADAM, batches, run_dir=str(tmp_path / "empty"), resume=True, **RUN)


# ------------------------------------------------------------------ non-finite guard


REG = jrnn.regressor(jrnn.gru(4), 2, 1)
SGD = jrnn.make_optimizer("momentum", 0.05, 1.0)


def reg_batches(n, nan_at=()):
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        x = rng.standard_normal((T, 3, 2)).astype(np.float32)
        if i in nan_at:
            x[2, 1, 0] = np.nan
        out.append(jrnn.Batch(x, rng.standard_normal((T, 3, 1)).astype(np.float32)))
    return out


def reg_fit(bs, state=None, run_dir=None, **kw):
    cfg = jrnn.LoopConfig(**{"progress": False, "quiet": True, **kw})
    return jrnn.fit(REG, SGD, lambda ep: bs, batch_size=3, config=cfg, state=state, run_dir=run_dir)


@pytest.mark.parametrize("log_every", [1, 50])
def test_stop_on_nonfinite_keeps_the_last_good_checkpoint(tmp_path, log_every):
    bs = reg_batches(9, nan_at={5})
    out = str(tmp_path / "nan")
    with pytest.raises(jrnn.NonFiniteError, match=r"non-finite loss or gradient at step 5 \(loss=nan.*"
                                                   r"not applied; the last good checkpoint \(step 4\)") as e:
        reg_fit(bs, run_dir=out, save_every=2, log_every=log_every)
    assert (e.value.step, e.value.checkpoint_step) == (5, 4)
    ck = Checkpointer(out)
    assert ck.latest_step() == 4  # nothing written after the bad step
    template = jrnn.init_state(REG, SGD, jrnn.grads.full(), jax.random.key(0), 3)
    saved, _ = ck.restore(template)
    clean = reg_fit(bs[:4])  # the same run, stopped after the 4 good steps
    assert leaves_equal(saved, clean.state)


def test_skip_on_nonfinite_leaves_the_state_bit_for_bit():
    bs = reg_batches(8, nan_at={3})
    res = reg_fit(bs, on_nonfinite="skip", log_every=4)
    without = reg_fit(bs[:3] + bs[4:])  # the same run without the bad batch
    # params, optimizer state (momentum, count), carry and update count all as if it never came
    assert leaves_equal(res.state, without.state) and int(res.state.step) == 7
    assert [r["skipped"] for r in res.history] == [1, 1]
    with pytest.raises(jrnn.NonFiniteError, match=r"3 non-finite steps in a row, the last at step 4"):
        reg_fit(reg_batches(8, nan_at={2, 3, 4, 5}), on_nonfinite="skip", max_skips=3)


def test_nonfinite_params_are_caught_too():
    state = jrnn.init_state(REG, SGD, jrnn.grads.full(), jax.random.key(0), 3)
    state = state._replace(params=jax.tree.map(lambda a: a.at[0].set(np.inf), state.params))
    with pytest.raises(jrnn.NonFiniteError, match="at step 0"):
        reg_fit(reg_batches(2), state=state)


# ------------------------------------------------------------- checkpoint integrity


KILL_SCRIPT = """
import sys, numpy as np, jax.numpy as jnp, jrnn
from jrnn.checkpoint import Checkpointer
ck = Checkpointer(sys.argv[1], keep=3)
state = lambda s, n: jrnn.TrainState({"w": jnp.full((n,), float(s))}, (), (), jnp.int32(s))
ck.save(state(1, 4_000_000), {"step": 1})
print("saved 1", flush=True)
for s in range(2, 1000):  # then keep saving 16 MB checkpoints until killed
    ck.save(state(s, 4_000_000), {"step": s})
"""


def _kill_during_a_save(script, out):
    """Run the saver; SIGKILL it while a checkpoint directory is being written."""
    p = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "saved 1"
        ckdir = out / "checkpoints"
        deadline = time.time() + 60
        while not any(".orbax-checkpoint-tmp" in n for n in os.listdir(ckdir)):  # a save under way
            assert time.time() < deadline and p.poll() is None
            time.sleep(0.002)
        p.send_signal(signal.SIGKILL)
    finally:
        p.kill()
        p.wait()
    return [n for n in os.listdir(ckdir) if ".orbax-checkpoint-tmp" in n]


def test_a_save_killed_half_way_leaves_the_previous_checkpoint(tmp_path):
    script = tmp_path / "saver.py"
    script.write_text(KILL_SCRIPT)
    for attempt in range(3):  # the kill may land just after a save completed: then again
        out = tmp_path / f"run{attempt}"
        partial = _kill_during_a_save(script, out)
        if partial:
            break
    assert partial, "never caught a save half-way"
    ckdir = out / "checkpoints"
    ck = Checkpointer(str(out), keep=3)
    steps = ck.all_steps()
    assert steps and all(f"{s}.orbax" not in "".join(partial) for s in steps)
    template = jrnn.TrainState({"w": np.zeros(4_000_000, np.float32)}, (), (), np.int32(0))
    state, meta = ck.restore(template)  # the latest complete one, intact
    assert meta["step"] == steps[-1] == int(state.step)
    assert np.all(np.asarray(state.params["w"]) == steps[-1])
    # and the directory stays usable: the next save succeeds, the partial one is cleaned up
    ck.save(template._replace(step=np.int32(5000)), {"step": 5000})
    assert ck.latest_step() == 5000
    assert not [n for n in os.listdir(ckdir) if ".orbax-checkpoint-tmp" in n]


def _corrupt(step_dir, how):
    files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs]
    if how == "truncate":
        for f in files:
            with open(f, "r+b") as fh:
                fh.truncate(os.path.getsize(f) // 2)
    elif how == "garbage":
        for f in files:
            if f"{os.sep}d{os.sep}" in f:
                with open(f, "r+b") as fh:
                    fh.seek(os.path.getsize(f) // 2)
                    fh.write(b"\x00\xff" * 16)
    elif how == "meta-edit":  # still valid JSON, but not what was written
        f = os.path.join(step_dir, "meta", "metadata")
        with open(f) as fh:
            text = fh.read()
        with open(f, "w") as fh:
            fh.write(text.replace('"batch": 0', '"batch": 7', 1))
    elif how == "missing":
        shutil.rmtree(os.path.join(step_dir, "state"))


@pytest.mark.parametrize("how", ["truncate", "garbage", "meta-edit", "missing"])
def test_a_corrupt_checkpoint_is_one_clear_error(reference, tmp_path, how):
    ref, ref_dir = reference
    out = str(tmp_path / how)
    shutil.copytree(ref_dir, out)
    steps = Checkpointer(out).all_steps()
    _corrupt(os.path.join(out, "checkpoints", str(steps[-1])), how)
    with pytest.raises(CheckpointError, match=rf"checkpoint at step {steps[-1]} .* is unreadable "
                                              rf".*an older checkpoint exists at step {steps[0]}") as e:
        jrnn.fit(LM, ADAM, batches, run_dir=out, resume=True, **RUN)
    assert "\n" not in str(e.value) and len(str(e.value)) < 700


@pytest.mark.parametrize("model, match", [
    (jrnn.language_model(jrnn.gru(6), V), r"hidden_size=8 there, 6 here"),
    (jrnn.language_model(jrnn.lstm(H), V), r"cell='gru' there, 'lstm' here"),
    (jrnn.language_model(jrnn.gru(H), V + 1), r"input_size=11 there, 12 here"),
])
def test_a_checkpoint_of_another_model_is_one_clear_error(reference, model, match):
    _, ref_dir = reference
    with pytest.raises(CheckpointError, match=rf"written by a different run: {match}"):
        jrnn.fit(model, ADAM, batches, run_dir=str(ref_dir), resume=True, **RUN)
    # without the run fingerprint (a bare Checkpointer), the arrays still name the difference
    template = jrnn.init_state(model, ADAM, RANDOMIZED, jax.random.key(0), B)
    with pytest.raises(CheckpointError, match=r"does not match the model/optimizer: state\.params"):
        Checkpointer(str(ref_dir)).restore(template)


def test_resume_with_another_seed_or_batch_size_is_refused(reference):
    _, ref_dir = reference
    with pytest.raises(CheckpointError, match=r"seed=3 there, 4 here"):
        jrnn.fit(LM, ADAM, batches, run_dir=str(ref_dir), resume=True, **{**RUN, "config": loop(seed=4)})


# ------------------------------------------------------------------ property tests


ALPHABET = "abcdefghij \n.,'"


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=ALPHABET, min_size=1, max_size=200))
def test_char_vocab_round_trips_any_text_over_its_alphabet(text):
    vocab = data.Vocab(data.tokenize([ALPHABET], "char"))
    ids = vocab.encode(text)
    assert ids.dtype == np.int32 and ids.shape == (len(text),)
    assert ids.min() >= 1  # nothing is <unk>
    assert vocab.decode(ids) == text
    assert data.Vocab(data.tokenize([text], "char")).decode(
        data.Vocab(data.tokenize([text], "char")).encode(text)) == text  # built from the text itself


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet="abcxyz", min_size=1, max_size=6), min_size=1, max_size=30))
def test_word_vocab_round_trips_single_spaced_text(words):
    text = " ".join(words)
    vocab = data.Vocab(data.tokenize(text, "word"), token="word")
    assert vocab.decode(vocab.encode(text)) == text
    assert len(vocab) == len(set(words)) + 1
