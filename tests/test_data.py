"""Tests for jrnn.data: text, vocabulary, corpora, batches, synthetic tasks."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jrnn import data
from jrnn.data import Vocab

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TM_FILE = SHARED_DATA / "timemachine.txt"
needs_tm = pytest.mark.skipif(not TM_FILE.is_file(), reason=f"{TM_FILE} not available")


# --------------------------------------------------------------------------- text


def test_lines_and_preprocess_follow_d2l():
    raw = "The Time-Machine, by H. G. Wells\n\n  It's 1898!\r\nend"
    assert data.lines(raw) == ["the time machine by h g wells", "", "it s", "end"]
    assert data.preprocess(raw) == "the time machine by h g wells it s end"


def test_tokenize():
    assert data.tokenize(["ab c", ""], "char") == [["a", "b", " ", "c"], []]
    assert data.tokenize("the  time\nmachine", "word") == [["the", "time"], ["machine"]]
    with pytest.raises(ValueError, match="'byte'"):
        data.tokenize("abc", "byte")


def test_vocab_order_unk_reserved_min_freq():
    # counts: c=3, b=2, a=2 (a appears first), d=1
    tokens = [list("ab"), list("cbc"), list("acd")]
    v = Vocab(tokens)
    assert v.idx_to_token == ["<unk>", "c", "a", "b", "d"]
    assert v.token_freqs == [("c", 3), ("a", 2), ("b", 2), ("d", 1)]
    assert v["z"] == v.unk == 0 and v[["c", "z", "d"]] == [1, 0, 4]
    v = Vocab(tokens, min_freq=2, reserved_tokens=["<pad>", "<bos>"])
    assert v.idx_to_token == ["<unk>", "<pad>", "<bos>", "c", "a", "b"]
    assert len(v) == 6 and v["d"] == 0 and v.token_to_idx["<bos>"] == 2


def test_vocab_round_trip_char_and_word():
    text = "the time traveller for so it will be convenient"
    v = Vocab(data.tokenize(text, "char"))
    ids = v.encode(text)
    assert ids.dtype == np.int32 and ids.shape == (len(text),)
    assert v.decode(ids) == text
    assert v.to_tokens(list(ids[:3])) == ["t", "h", "e"]
    w = Vocab(data.tokenize(text, "word"), token="word")
    ids = w.encode(text)
    assert ids.shape == (9,) and w.decode(ids) == text
    assert w.decode(w.encode("the unknown time")) == "the <unk> time"
    assert list(w.encode([["the", "time"], ["it"]])) == w[["the", "time", "it"]]


def test_vocab_bad_ids():
    v = Vocab(list("abc"))
    with pytest.raises(ValueError, match=r"token id 57 outside the vocabulary \[0, 4\)"):
        v.to_tokens([1, 57])
    with pytest.raises(ValueError, match="token id -1"):
        v.decode(np.array([[0, -1]]))
    with pytest.raises(ValueError, match="targets contains token id 4"):
        v.check_ids(np.array([4, 1]), name="targets")
    with pytest.raises(ValueError, match="integer"):
        v.check_ids(np.array([1.0, 2.0]))
    assert v.check_ids(np.array([0, 3])).tolist() == [0, 3]


def test_token_and_ngram_freqs():
    words = [["a", "b", "a"], ["b", "a"]]
    assert data.token_freqs(words) == [("a", 3), ("b", 2)]
    # flattened: a b a b a -> bigrams ab, ba, ab, ba ; trigrams aba, bab, aba
    assert data.ngram_freqs(words, 2) == [(("a", "b"), 2), (("b", "a"), 2)]
    assert data.ngram_freqs(words, 3) == [(("a", "b", "a"), 2), (("b", "a", "b"), 1)]


def test_load_corpus_concatenates_lines_like_d2l():
    corpus, v = data.load_corpus("ab\nba!\n\nc")
    assert v.decode(corpus) == "abbac"  # no separator between lines
    corpus, v = data.load_corpus("ab\nba!\n\nc", max_tokens=3)
    assert v.decode(corpus) == "abb" and len(v) == 4
    with pytest.raises(ValueError, match="corpus is empty"):
        data.load_corpus("1234 !!\n")


def test_split():
    train, val = data.split(np.arange(100), 0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))
    train, val = data.split(np.arange(5), 0.0)
    assert len(train) == 5 and len(val) == 0
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="val_fraction"):
            data.split(np.arange(100), bad)
    with pytest.raises(ValueError, match="too short"):
        data.split(np.arange(10), 0.1)


# ------------------------------------------------------------------------ corpora


@needs_tm
def test_time_machine_d2l_facts(monkeypatch):
    monkeypatch.setenv("JRNN_DATA_DIR", str(SHARED_DATA))
    text = data.time_machine()
    assert hashlib.sha1(text.encode()).hexdigest() == data.TIME_MACHINE_SHA1
    assert text.startswith("The Time Machine, by H. G. Wells")
    corpus, vocab = data.load_corpus(text)
    assert (len(corpus), len(vocab)) == (170580, 28)  # d2l: (170580, 28)
    assert [t for t, _ in vocab.token_freqs[:3]] == [" ", "e", "t"]
    assert vocab.idx_to_token[:4] == ["<unk>", " ", "e", "t"]
    assert set(vocab.idx_to_token[1:]) == set("abcdefghijklmnopqrstuvwxyz ")
    short, _ = data.load_corpus(text, max_tokens=10000)
    assert len(short) == 10000 and np.array_equal(short, corpus[:10000])
    words = data.tokenize(data.lines(text), "word")
    assert [t for t, _ in data.token_freqs(words)[:3]] == ["the", "i", "and"]
    assert data.load_text("timemachine") == text


@needs_tm
def test_time_machine_from_cache_without_download(monkeypatch, tmp_path):
    monkeypatch.delenv("JRNN_DATA_DIR", raising=False)
    monkeypatch.setenv("JRNN_CACHE_DIR", str(tmp_path))
    shutil.copy(TM_FILE, tmp_path / "timemachine.txt")
    monkeypatch.setattr("urllib.request.urlretrieve", lambda *a: pytest.fail("downloaded"))
    assert data.time_machine().startswith("The Time Machine")


def test_time_machine_corrupt_or_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("JRNN_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="timemachine.txt"):
        data.time_machine()
    (tmp_path / "timemachine.txt").write_text("not the time machine")
    with pytest.raises(ValueError, match="sha1") as err:
        data.time_machine()
    assert data.TIME_MACHINE_SHA1 in str(err.value) and "timemachine.txt" in str(err.value)


def test_fetch_verifies_and_does_not_keep_corrupt_download(tmp_path):
    src = tmp_path / "src.txt"
    src.write_bytes(b"hello world\n")
    good = hashlib.sha1(b"hello world\n").hexdigest()
    dest = tmp_path / "cache" / "file.txt"
    with pytest.raises(ValueError, match="sha1"):
        data.fetch(src.as_uri(), "0" * 40, dest)
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    assert data.fetch(src.as_uri(), good, dest).read_bytes() == b"hello world\n"


def test_read_text_and_load_text(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        data.read_text(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty"):
        data.read_text(tmp_path / "empty.txt")
    (tmp_path / "t.txt").write_text("Hello\n")
    assert data.load_text(path=tmp_path / "t.txt") == "Hello\n"
    with pytest.raises(ValueError, match="pydoc"):
        data.load_text("gutenberg")
    with pytest.raises(ValueError, match="exactly one"):
        data.load_text()


def test_bundled_text():
    text = data.bundled_text()
    assert len(text) > 400_000 and text == data.bundled_text()
    corpus, vocab = data.load_corpus(text)
    assert len(vocab) == 28 and vocab.idx_to_token[1] == " "


# ------------------------------------------------------------------------ batches


def _rand_reference_count(n, b, t, offset):
    return ((n - offset - 1) // t) // b


def _bm(it):
    """The iterator's time-major Batches, checked, as d2l's batch-major ``(X, Y)`` pairs."""
    out = []
    for b in it:
        assert isinstance(b, data.Batch) and b.mask is None
        assert b.inputs.flags.c_contiguous and b.targets.flags.c_contiguous
        out.append((b.inputs.T, b.targets.T))
    return out


@pytest.mark.parametrize("n,b,t", [(100, 3, 5), (1000, 4, 7), (37, 2, 4)])
def test_random_batches(n, b, t):
    corpus = np.arange(n)
    out = _bm(data.random_batches(corpus, b, t, rng=3))
    starts = []
    for x, y in out:
        assert x.shape == y.shape == (b, t) and x.dtype == y.dtype == np.int32
        assert np.array_equal(y, x + 1)
        assert np.array_equal(x, x[:, :1] + np.arange(t))  # contiguous rows
        starts += x[:, 0].tolist()
    offset = starts[0] % t
    assert offset < t and all(s % t == offset for s in starts)
    assert len(set(starts)) == len(starts)  # no subsequence repeats
    assert len(out) == _rand_reference_count(n, b, t, offset)
    assert len(out) <= data.num_batches(n, b, t, "random")
    assert len(out) == data.num_batches(n, b, t, "random", offset=offset)
    again = _bm(data.random_batches(corpus, b, t, rng=np.random.default_rng(3)))
    assert all(np.array_equal(x1, x2) for (x1, _), (x2, _) in zip(out, again))
    other = _bm(data.random_batches(corpus, b, t, rng=4))
    assert any(not np.array_equal(x1, x2) for (x1, _), (x2, _) in zip(out, other))


def test_random_batches_shuffle_covers_all_subsequences():
    # batch_size 1: every subsequence after the offset appears exactly once.
    n, t = 101, 10
    xs = [x for x, _ in _bm(data.random_batches(np.arange(n), 1, t, rng=0))]
    starts = sorted(int(x[0, 0]) for x in xs)
    offset = starts[0]
    assert starts == list(range(offset, offset + len(starts) * t, t))
    assert len(starts) == (n - offset - 1) // t


def test_sequential_batches_are_contiguous():
    n, b, t = 1000, 4, 7
    out = _bm(data.sequential_batches(np.arange(n), b, t, rng=5))
    for x, y in out:
        assert x.shape == (b, t) and x.dtype == np.int32 and np.array_equal(y, x + 1)
    for (x0, _), (x1, _) in zip(out, out[1:]):
        assert np.array_equal(x1[:, 0], x0[:, -1] + 1)  # row i continues row i
    offset = int(out[0][0][0, 0])
    assert 0 <= offset <= t
    assert len(out) == ((n - offset - 1) // b) // t
    same = _bm(data.sequential_batches(np.arange(n), b, t, rng=5))
    assert all(np.array_equal(a[0], c[0]) for a, c in zip(out, same))


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 6),
    t=st.integers(1, 9),
    extra=st.integers(0, 80),
    seed=st.integers(0, 2**16),
)
def test_sequential_property(b, t, extra, seed):
    n = (b + 1) * t + 1 + extra  # the minimum length plus some
    out = _bm(data.sequential_batches(np.arange(n), b, t, rng=seed))
    x = np.stack([x for x, _ in out], axis=1)  # [B, num_batches, T]
    x = x.reshape(b, -1)
    tokens = x.ravel()
    assert len(set(tokens.tolist())) == tokens.size  # never duplicates a token
    # Independent reference, d2l's layout: B rows of C consecutive tokens after
    # the offset; each row keeps its first (C // T) * T tokens.
    offset = int(x[0, 0])
    cols = (n - offset - 1) // b
    kept = (cols // t) * t
    expected = np.concatenate([offset + i * cols + np.arange(kept) for i in range(b)])
    assert np.array_equal(tokens, expected)
    assert 0 <= offset <= t and len(out) == cols // t >= 1
    # so the dropped tokens are the leading offset, the per-row tails
    # (cols mod T) and the trailing remainder, nothing else:
    dropped = sorted(set(range(n)) - set(tokens.tolist()))
    tails = [offset + i * cols + j for i in range(b) for j in range(kept, cols)]
    assert dropped == sorted([*range(offset), *tails, *range(offset + b * cols, n)])
    if cols % t == 0:  # then the kept tokens are one contiguous range
        assert np.array_equal(np.sort(tokens), np.arange(offset, offset + tokens.size))


def test_batches_resume_and_validation():
    corpus = np.arange(500)
    for kind in data.KINDS:
        full = _bm(data.batches(corpus, 3, 5, kind, seed=7, epoch=2))
        resumed = _bm(data.batches(corpus, 3, 5, kind, seed=7, epoch=2, start=4))
        assert len(resumed) == len(full) - 4
        assert all(np.array_equal(a[0], c[0]) for a, c in zip(full[4:], resumed))
        ref = np.random.default_rng([7, 2])
        fn = data.random_batches if kind == "random" else data.sequential_batches
        assert all(np.array_equal(a[0], c[0]) for a, c in zip(full, _bm(fn(corpus, 3, 5, ref))))
        nxt = _bm(data.batches(corpus, 3, 5, kind, seed=7, epoch=3))
        assert any(not np.array_equal(a[0], c[0]) for a, c in zip(full, nxt))
    with pytest.raises(ValueError, match="batch_size"):
        _bm(data.random_batches(corpus, 0, 5, rng=0))
    with pytest.raises(ValueError, match="num_steps"):
        _bm(data.sequential_batches(corpus, 2, 0, rng=0))
    with pytest.raises(ValueError, match="need at least 36 tokens, got 30"):
        _bm(data.random_batches(np.arange(30), 5, 6, rng=0))
    with pytest.raises(ValueError, match="need at least 37 tokens, got 36"):
        _bm(data.sequential_batches(np.arange(36), 5, 6, rng=0))
    with pytest.raises(ValueError, match="kind"):
        _bm(data.batches(corpus, 2, 2, kind="shuffled"))


def test_minimum_corpus_always_gives_a_batch():
    for seed in range(20):
        assert len(_bm(data.random_batches(np.arange(36), 5, 6, rng=seed))) >= 1
        assert len(_bm(data.sequential_batches(np.arange(37), 5, 6, rng=seed))) >= 1


# ---------------------------------------------------------------------- synthetic


def test_copy_task():
    s, d, b, k = 5, 7, 6, 4
    inputs, targets, mask = data.copy_task(b, num_symbols=k, seq_len=s, delay=d, rng=0)
    t = s + d + s
    assert inputs.shape == targets.shape == mask.shape == (t, b)
    assert inputs.dtype == targets.dtype == np.int32 and mask.dtype == np.float32
    assert ((inputs[:s] >= 1) & (inputs[:s] <= k)).all()
    assert (inputs[s : s + d - 1] == 0).all() and (inputs[s + d - 1] == k + 1).all()
    assert (inputs[s + d :] == 0).all()
    for col in range(b):
        window = [i for i in range(t) if mask[i, col] == 1]
        assert window == list(range(s + d, t))
        assert targets[window, col].tolist() == inputs[:s, col].tolist()
        assert (targets[: s + d, col] == 0).all()
    assert mask.sum() == s * b


def test_adding_task():
    b, t = 8, 20
    xs, ys, targets, mask = data.adding_task(b, t, rng=1)
    assert xs.shape == (t, b, 2) and ys.shape == (b, 1) and targets.shape == (t, b, 1)
    assert mask.shape == (t, b) and mask[-1].tolist() == [1.0] * b and mask.sum() == b
    for col in range(b):
        marked = [i for i in range(t) if xs[i, col, 1] == 1.0]
        assert len(marked) == 2 and marked[0] < t // 2 <= marked[1]
        total = 0.0
        for i in marked:
            total += float(xs[i, col, 0])
        assert ys[col, 0] == pytest.approx(total, rel=1e-6)
        assert (targets[:, col, 0] == ys[col, 0]).all()
    assert ((xs[..., 0] >= 0) & (xs[..., 0] < 1)).all()


def test_sine():
    xs, ys = data.sine(5, 30, rng=2)
    assert xs.shape == ys.shape == (30, 5, 1) and xs.dtype == np.float32
    assert np.array_equal(xs[1:], ys[:-1])  # next-value targets
    clean_xs, _ = data.sine(5, 30, rng=2, noise=0.0)
    assert np.abs(clean_xs).max() <= 1.0
    assert not np.array_equal(xs, data.sine(5, 30, rng=3)[0])
    assert np.array_equal(xs, data.sine(5, 30, rng=np.random.default_rng(2))[0])
