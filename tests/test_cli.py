"""``jrnn train`` end to end in separate processes: determinism, SIGTERM with a
checkpoint and an exact ``--resume``, and one-line errors for corrupt or
mismatched checkpoints.

Each process trains a tiny GRU (H=8) on a small temporary text file for two
epochs (~650 steps); the uninterrupted runs are shared by the tests.
"""

import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from jrnn import cli
from jrnn.checkpoint import Checkpointer

CONFIG = ["--hidden", "8", "--num-steps", "5", "--batch-size", "4", "--epochs", "2", "--seed", "1",
          "--log-every", "5", "--save-every", "100", "--optimizer", "adam", "--lr", "0.01",
          "--val-fraction", "0.1", "--sample-length", "8"]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module", autouse=True)
def compile_cache(tmp_path_factory):
    """Processes after the first two load their executables from a persistent
    compilation cache (the same executables: results are unchanged), which
    saves most of their start-up on a busy 2-core machine."""
    ENV.update(JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax-cache")),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def jrnn_cmd(*args):
    return [sys.executable, "-m", "jrnn.cli", *args]


def untimed(path):
    with open(path) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in ("tokens_per_s", "train_seconds")}
                for line in f]


def final_state(run):
    """The whole TrainState of a run's latest checkpoint, and its metadata."""
    import jrnn

    model, _, vocab, cfg = jrnn.load_run(run)
    opt = jrnn.make_optimizer(cfg.optim.optimizer, cfg.optim.lr, cfg.optim.clip)
    template = jrnn.init_state(model, opt, jrnn.grads.parse(cfg.optim.grad), jax.random.key(0),
                               cfg.data.batch_size)
    return Checkpointer(run).restore(template)


def same_bits(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    rng = np.random.default_rng(0)
    words = "the time traveller machine went into future and saw strange things by night".split()
    path = tmp_path_factory.mktemp("text") / "small.txt"
    path.write_text(" ".join(rng.choice(words, 1500)))
    return str(path)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, text):
    """The same config trained twice, in two processes at once."""
    base = tmp_path_factory.mktemp("runs")
    procs = [subprocess.Popen(jrnn_cmd("train", "--text", text, "--out", str(base / n), *CONFIG),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
             for n in ("a", "b")]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-2000:]
    return str(base / "a"), str(base / "b"), outs


def test_same_seed_same_bits_in_two_processes(two_runs):
    a, b, outs = two_runs
    (sa, ma), (sb, mb) = final_state(a), final_state(b)
    assert ma["step"] == mb["step"] > 600
    assert same_bits(sa, sb)  # params, optimizer state, carry: bitwise
    ra, rb = untimed(os.path.join(a, "metrics.jsonl")), untimed(os.path.join(b, "metrics.jsonl"))
    assert ra == rb and len(ra) > 100 and any("val_ppl" in r for r in ra)
    sample = [line for line in outs[0][0].splitlines() if line.startswith(("greedy", "sampled"))]
    assert len(sample) == 2 and sample == [
        line for line in outs[1][0].splitlines() if line.startswith(("greedy", "sampled"))]


def test_sigterm_saves_a_checkpoint_and_resume_is_exact(two_runs, text, tmp_path):
    ref, _, _ = two_runs
    out = str(tmp_path / "c")
    p = subprocess.Popen(jrnn_cmd("train", "--text", text, "--out", out, *CONFIG),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    err = []
    try:
        for line in p.stderr:  # the first progress line: training is under way
            err.append(line)
            if line.startswith("step "):
                p.send_signal(signal.SIGTERM)
                break
        stderr_rest = p.stderr.read()
        p.wait(timeout=120)
    finally:
        p.kill()
    err = "".join(err) + stderr_rest
    assert p.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err
    assert "interrupted by SIGTERM at step" in err and f"jrnn train --resume --out {out}" in err
    step = Checkpointer(out).latest_step()
    n_total = final_state(ref)[1]["step"]
    assert 0 < step < n_total  # stopped mid-run, with a checkpoint
    r = subprocess.run(jrnn_cmd("train", "--resume", "--out", out, "--epochs", "2", "--log-every", "5",
                                "--save-every", "100", "--sample-length", "8"),
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resumed from step {step}" in r.stderr
    (s1, m1), (s0, m0) = final_state(out), final_state(ref)
    assert m1["step"] == m0["step"] and same_bits(s1, s0)
    assert untimed(os.path.join(out, "metrics.jsonl")) == untimed(os.path.join(ref, "metrics.jsonl"))


def _one_line_error(r, pattern):
    import re

    assert r.returncode == 2, r.stderr[-2000:]
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr[-3000:]
    assert re.search(pattern, lines[0]), lines[0]


def test_corrupt_or_mismatched_checkpoint_is_one_line(two_runs, tmp_path, capsys):
    ref, _, _ = two_runs
    bad = str(tmp_path / "corrupt")
    shutil.copytree(ref, bad)
    ck = Checkpointer(bad)
    latest, older = ck.all_steps()[-1], ck.all_steps()[0]
    for root, _, files in os.walk(os.path.join(bad, "checkpoints", str(latest))):
        for f in files:
            with open(os.path.join(root, f), "r+b") as fh:
                fh.truncate(os.path.getsize(os.path.join(root, f)) // 2)
    r = subprocess.run(jrnn_cmd("train", "--resume", "--out", bad, "--epochs", "3", "--no-progress"),
                       capture_output=True, text=True, env=ENV, timeout=300)
    _one_line_error(r, rf"^jrnn train: error: checkpoint at step {latest} in .* is unreadable .*"
                       rf"older checkpoint exists at step {older}")
    # generate takes the same path (load_run -> Checkpointer.restore); in-process to save a start-up
    assert cli.main(["generate", "--run", bad]) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and err[0].startswith(f"jrnn generate: error: checkpoint at step {latest} ")

    other = str(tmp_path / "mismatch")
    shutil.copytree(ref, other)
    cfg_path = os.path.join(other, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["model"]["hidden"] = 16
    json.dump(cfg, open(cfg_path, "w"))
    r = subprocess.run(jrnn_cmd("train", "--resume", "--out", other, "--epochs", "3", "--no-progress"),
                       capture_output=True, text=True, env=ENV, timeout=300)
    _one_line_error(r, r"^jrnn train: error: checkpoint at step \d+ .* was written by a different run: "
                       r"hidden_size=8 there, 16 here")


def test_seeds_run_resumes_to_the_same_bits_in_process(text, tmp_path, capsys):
    """``--seeds 2`` goes through the one loop: checkpointed, resumable, validated."""
    small = ["--text", text, "--hidden", "8", "--num-steps", "5", "--batch-size", "4", "--seed", "1",
             "--seeds", "2", "--log-every", "20", "--save-every", "50", "--sample-length", "4",
             "--max-tokens", "3000", "--no-progress"]
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    assert cli.main(["train", *small, "--out", full, "--epochs", "2"]) == 0
    assert cli.main(["train", *small, "--out", cut, "--epochs", "1"]) == 0
    assert cli.main(["train", "--resume", "--out", cut, "--epochs", "2", "--no-progress"]) == 0
    out = capsys.readouterr()
    assert "2 seeds" in out.out and "resumed from step" in out.err
    (s1, m1), (s0, m0) = final_state_seeds(cut), final_state_seeds(full)
    assert m1["step"] == m0["step"] and same_bits(s1, s0)
    assert untimed(os.path.join(cut, "metrics.jsonl")) == untimed(os.path.join(full, "metrics.jsonl"))
    rec = [r for r in untimed(os.path.join(full, "metrics.jsonl")) if "val_ppl" in r]
    assert len(rec) == 2 and all(len(r["val_ppl"]) == 2 for r in rec)
    # the report: mean and 95% CI of the final validation perplexity over the 2 seeds
    from jrnn.metrics import mean_ci

    mean, half = mean_ci(rec[-1]["val_ppl"])
    assert "validation perplexity over 2 seeds (mean +- 95% CI" in out.out
    assert f"lr 0.005: {mean:.3f} +- {half:.3f}" in out.out
    # resume refuses to change what is trained
    assert cli.main(["train", "--resume", "--out", cut, "--hidden", "16"]) == 2
    assert "cannot change --hidden" in capsys.readouterr().err


def final_state_seeds(run):
    import jrnn

    model, _, vocab, cfg = jrnn.load_run(run)
    opt = jrnn.make_optimizer(cfg.optim.optimizer, cfg.optim.lr, cfg.optim.clip)
    keys = jax.random.split(jax.random.key(0), cfg.loop.seeds)
    template = jrnn.init_states(model, opt, jrnn.grads.parse(cfg.optim.grad), keys, cfg.data.batch_size)
    return Checkpointer(run).restore(template)


# ------------------------------------------------------------------ text as users bring it

UNICODE = "Le café était très animé. 天地玄黄，宇宙洪荒。 Emoji 🙂🎉 1234 The Time Machine.\n"
TINY = ["--hidden", "8", "--num-steps", "5", "--batch-size", "4", "--epochs", "1", "--seed", "0",
        "--val-fraction", "0", "--sample-length", "4", "--log-every", "50", "--no-progress"]


def _saved(run, name):
    with open(os.path.join(run, name), encoding="utf-8") as f:
        return json.load(f)


def test_a_unicode_file_trains_as_raw_chars_and_as_bytes(tmp_path, capsys):
    path = tmp_path / "unicode.txt"
    path.write_text(UNICODE * 20, encoding="utf-8")
    char, byte = str(tmp_path / "char"), str(tmp_path / "byte")
    assert cli.main(["train", "--text", str(path), "--out", char, "--prefix", "☃x", *TINY]) == 0
    assert cli.main(["train", "--text", str(path), "--token", "byte", "--out", byte, *TINY]) == 0
    out = capsys.readouterr().out
    assert f"vocab {len(set(UNICODE)) + 1} (char, raw)" in out and "vocab 256 (byte, raw)" in out
    # --prefix lacks characters of the text: the samples continue the text's first ones
    assert "note: --prefix '☃x' has characters the vocabulary lacks ('☃', 'x')" in out
    assert "greedy : 'Le" in out
    assert _saved(char, "config.json")["data"]["preprocess"] == "raw"  # auto, resolved once
    assert set(_saved(char, "vocab.json")["idx_to_token"][1:]) == set(UNICODE)
    assert _saved(byte, "vocab.json") == {"token": "byte", "preprocess": "raw"}

    assert cli.main(["generate", "--run", char, "--prefix", "天地 The", "--length", "3"]) == 0
    assert capsys.readouterr().out.startswith("天地 The")  # case and CJK kept, no <unk>
    assert cli.main(["generate", "--run", char, "--prefix", "Zq☃ T", "--length", "3"]) == 2
    err = capsys.readouterr().err
    assert "3 character(s) the run's vocabulary of" in err and "lacks: 'Z', 'q', '☃'" in err
    assert cli.main(["generate", "--run", byte, "--prefix", "☃", "--length", "3"]) == 0
    assert capsys.readouterr().out.startswith("☃")  # bytes: any prefix encodes


def test_d2l_words_min_freq_and_the_prefix_read_like_the_text(tmp_path, capsys):
    import collections
    import re

    rng = np.random.default_rng(0)
    vocab_words = ["The", "Time", "Machine,", "went", "INTO", "the", "future!", "rare1", "odd"]
    words = list(rng.choice(vocab_words, 600, p=[.2, .2, .15, .15, .1, .1, .07, .02, .01]))
    path = tmp_path / "words.txt"
    path.write_text(" ".join(words))
    run = str(tmp_path / "w")
    assert cli.main(["train", "--text", str(path), "--token", "word", "--preprocess", "d2l",
                     "--min-freq", "10", "--out", run, *TINY]) == 0
    counts = collections.Counter(re.findall("[a-z]+", " ".join(words).lower()))
    frequent = {w for w, c in counts.items() if c >= 10}
    assert {"the", "time", "machine"} <= frequent and "odd" not in frequent  # the test's premise
    assert set(_saved(run, "vocab.json")["idx_to_token"][1:]) == frequent
    assert _saved(run, "config.json")["data"]["min_freq"] == 10
    capsys.readouterr()

    assert cli.main(["generate", "--run", run, "--prefix", "The Time", "--length", "2"]) == 0
    got = capsys.readouterr()
    assert got.out.startswith("the time ") and "<unk>" not in got.out.split()[:2] and not got.err
    assert cli.main(["generate", "--run", run, "--prefix", "The Zebra odd", "--length", "2"]) == 0
    got = capsys.readouterr()
    assert got.out.startswith("the <unk> <unk> ")
    assert "words not in the vocabulary, read as <unk>: 'zebra', 'odd'" in got.err

    # a run saved before preprocessing was recorded reads its prefix as d2l's, as it trained
    cfg, vocab = _saved(run, "config.json"), _saved(run, "vocab.json")
    del cfg["data"]["preprocess"], cfg["data"]["min_freq"], vocab["preprocess"]
    for name, d in (("config.json", cfg), ("vocab.json", vocab)):
        with open(os.path.join(run, name), "w") as f:
            json.dump(d, f)
    assert cli.main(["generate", "--run", run, "--prefix", "The Time", "--length", "2"]) == 0
    assert capsys.readouterr().out.startswith("the time ")


def _train_args(*argv):
    import argparse

    parser = argparse.ArgumentParser()
    cli._train_parser(parser.add_subparsers())
    return parser.parse_args(["train", *argv])


def test_preprocess_auto_is_resolved_once_and_old_runs_resume_as_d2l(tmp_path):
    from jrnn.config import TrainConfig

    assert cli._config(_train_args()).data.preprocess == "d2l"  # bundled corpus: unchanged
    assert cli._config(_train_args("--text", "f.txt")).data.preprocess == "raw"
    assert cli._config(_train_args("--token", "byte")).data.preprocess == "raw"
    assert cli._config(_train_args("--text", "f", "--preprocess", "d2l")).data.preprocess == "d2l"
    old = tmp_path / "old"
    old.mkdir()
    cfg = json.loads(TrainConfig().to_json())
    cfg["data"]["text"] = "f.txt"
    del cfg["data"]["preprocess"], cfg["data"]["min_freq"]  # written before the fields existed
    (old / "config.json").write_text(json.dumps(cfg))
    resumed = cli._config(_train_args("--resume", "--out", str(old)))
    assert resumed.data.preprocess == "d2l" and resumed.data.text == "f.txt"
    with pytest.raises(ValueError, match="cannot change --preprocess"):
        cli._config(_train_args("--resume", "--out", str(old), "--preprocess", "raw"))
