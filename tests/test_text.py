"""Text as users bring it: raw characters, UTF-8 bytes, d2l's preprocessing as an
option, min_freq and <unk>, queries read as the corpus was, and the run directory's
record of it all."""

import collections
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jrnn import data
from jrnn.config import DataConfig
from jrnn.data import ByteVocab, Vocab
from jrnn.run import RunDir

MIXED = "Héllo, Wörld! 1898\n世界和平 🙂🎉\r\n\tTabs & ÅÉÎ — «ok»\n"


# ------------------------------------------------------------- round trips (property)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1))
def test_raw_chars_round_trip_any_unicode(text):
    corpus, vocab = data.load_corpus(text, preprocess="raw")
    assert vocab.decode(corpus) == text and len(corpus) == len(text)
    assert len(vocab) == len(set(text)) + 1  # every code point, plus '<unk>' at 0
    assert corpus.tolist() == [vocab.token_to_idx[c] for c in text] and 0 not in corpus
    saved = Vocab.from_tokens(vocab.idx_to_token, token="char", preprocess="raw")
    assert saved.decode(corpus) == text and np.array_equal(saved.encode(text, strict=True), corpus)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1))
def test_bytes_round_trip_any_unicode(text):
    corpus, vocab = data.load_corpus(text, "byte", preprocess="raw")
    utf8 = text.encode("utf-8")
    assert len(vocab) == 256 and corpus.dtype == np.int32
    assert corpus.tolist() == list(utf8)  # id i is byte i
    assert vocab.decode(corpus) == text and vocab.decode_bytes(corpus) == utf8
    from_bytes, _ = data.load_corpus(utf8, "byte", preprocess="raw")
    assert np.array_equal(from_bytes, corpus)


def test_byte_vocab_decodes_invalid_utf8_with_replacement():
    v = ByteVocab()
    ids = [0xFF, 0x41, 0xE4, 0xB8]  # a stray byte, 'A', a truncated 3-byte sequence
    assert v.decode(ids) == "\ufffdA\ufffd"
    assert v.decode_bytes(ids) == bytes(ids)
    assert v.unknown("anything 🙂") == [] and v.encode("é").tolist() == [0xC3, 0xA9]
    for bad in ([256], [-1]):
        with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 256\)"):
            v.decode(bad)
    with pytest.raises(TypeError, match="str or bytes"):
        v.encode([1, 2])


# ------------------------------------------------------------------- preprocessing


def test_raw_keeps_what_d2l_drops():
    raw, rv = data.load_corpus(MIXED, preprocess="raw")
    d2l, dv = data.load_corpus(MIXED)  # the library default stays d2l's
    assert rv.decode(raw) == MIXED
    assert dv.decode(d2l) == "".join(data.lines(MIXED))  # d2l: lines joined without separator
    assert set(dv.idx_to_token[1:]) <= set("abcdefghijklmnopqrstuvwxyz ")
    for c in "H1世🙂\n\t—«":
        assert c in rv.token_to_idx and c not in dv.token_to_idx
    assert (rv.preprocess, dv.preprocess) == ("raw", "d2l")
    with pytest.raises(ValueError, match="no letters A-Z.*preprocess='raw'"):
        data.load_corpus("世界和平 🙂")
    corpus, v = data.load_corpus("世界和平 🙂", preprocess="raw")
    assert v.decode(corpus) == "世界和平 🙂" and len(v) == 7


def test_raw_words_split_on_whitespace_keeping_case_and_punctuation():
    corpus, v = data.load_corpus("The cat, the Cat.\nthe", "word", preprocess="raw")
    assert v.decode(corpus) == "The cat, the Cat. the"
    assert v.idx_to_token == ["<unk>", "the", "The", "cat,", "Cat."]


def test_prepare_reads_a_query_as_the_corpus_was_read():
    assert data.prepare("The Time ", "d2l") == "the time "  # trailing space kept (not stripped)
    assert data.prepare("The  Time-Machine!", "d2l") == "the time machine "
    line = "It's 1898, The Time"
    assert data.prepare(line, "d2l").strip() == data.lines(line)[0]  # d2l's own line rule
    assert data.prepare(MIXED, "raw") == MIXED
    with pytest.raises(ValueError, match="preprocess must be one of"):
        data.prepare("x", "lower")


def test_byte_tokens_of_d2l_text():
    corpus, v = data.load_corpus(MIXED, "byte", preprocess="d2l")
    assert isinstance(v, ByteVocab) and v.preprocess == "d2l"
    assert v.decode(corpus) == "".join(data.lines(MIXED))


# ------------------------------------------------------------------- min_freq, <unk>


@pytest.mark.parametrize("preprocess", ["raw", "d2l"])
def test_word_min_freq_maps_rare_words_to_unk(preprocess):
    rng = np.random.default_rng(0)
    words = [f"w{i}" if preprocess == "raw" else "w" + "abcdefgh"[i] for i in range(8)]
    seq = list(rng.choice(words, 200, p=[0.4, 0.3, 0.1, 0.1, 0.04, 0.03, 0.02, 0.01]))
    text = " ".join(seq)
    corpus, v = data.load_corpus(text, "word", preprocess=preprocess, min_freq=5)
    counts = collections.Counter(seq)
    kept = {w for w, c in counts.items() if c >= 5}
    assert set(v.idx_to_token[1:]) == kept and len(kept) < len(counts)
    ref = [v.token_to_idx[w] if w in kept else 0 for w in seq]  # independent: from the counts
    assert corpus.tolist() == ref and 0 in corpus


def test_char_min_freq_and_unknown_listing():
    corpus, v = data.load_corpus("aaabbc", preprocess="raw", min_freq=2)
    assert v.idx_to_token == ["<unk>", "a", "b"] and corpus.tolist() == [1, 1, 1, 2, 2, 0]
    assert v.unknown("cabzc") == ["c", "z"]  # distinct, in order of first appearance
    assert v.encode("cz").tolist() == [0, 0]
    with pytest.raises(ValueError, match=r"2 chars not in the vocabulary of 3: 'c', 'z'"):
        v.encode("cabzc", strict=True)


def test_load_corpus_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match="bytes are read only as token='byte'"):
        data.load_corpus(b"abc", "char", preprocess="raw")
    with pytest.raises(ValueError, match="bytes are read only"):
        data.load_corpus(b"abc", "byte", preprocess="d2l")
    with pytest.raises(ValueError, match="byte vocabulary is fixed"):
        data.load_corpus("abc", "byte", preprocess="raw", min_freq=2)
    with pytest.raises(ValueError, match="token must be one of"):
        data.load_corpus("abc", "bpe")
    with pytest.raises(ValueError, match="min_freq must be an integer >= 0"):
        data.load_corpus("abc", min_freq=-1)
    with pytest.raises(ValueError, match="corpus is empty"):
        data.load_corpus("", preprocess="raw")


# ------------------------------------------------------------------------ files


def test_read_text_and_read_bytes(tmp_path):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"not UTF-8 text .* at byte 3.*--token byte"):
        data.read_text(latin1)
    raw = data.read_bytes(latin1)
    corpus, v = data.load_corpus(raw, "byte", preprocess="raw")
    assert v.decode_bytes(corpus) == "café\n".encode("latin-1")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        data.read_bytes(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nope"):
        data.read_bytes(tmp_path / "nope")


# ----------------------------------------------------------- config and run directory


def test_data_config_resolves_auto_once():
    assert DataConfig().resolved().preprocess == "d2l"  # the bundled corpora: d2l's setting
    assert DataConfig(text="f.txt").resolved().preprocess == "raw"
    assert DataConfig(token="byte").resolved().preprocess == "raw"
    assert DataConfig(text="f.txt", preprocess="d2l").resolved().preprocess == "d2l"
    assert DataConfig(preprocess="raw").resolved().preprocess == "raw"
    with pytest.raises(ValueError, match="preprocess must be one of"):
        DataConfig(preprocess="lower")
    with pytest.raises(ValueError, match="byte vocabulary is fixed"):
        DataConfig(token="byte", min_freq=2)
    with pytest.raises(ValueError, match="min_freq"):
        DataConfig(min_freq=-1)


def test_run_dir_records_token_kind_and_preprocessing(tmp_path):
    for i, (text, token, pre) in enumerate([(MIXED, "char", "raw"), (MIXED, "word", "d2l"),
                                            (MIXED, "byte", "raw")]):
        corpus, vocab = data.load_corpus(text, token, preprocess=pre)
        run = RunDir(tmp_path / str(i))
        run.write_vocab(vocab)
        back = run.read_vocab()
        assert (type(back), back.token, back.preprocess, len(back)) == (
            type(vocab), token, pre, len(vocab))
        assert back.decode(corpus) == vocab.decode(corpus)
    # a vocab.json from before preprocessing was recorded: d2l's, as every such run was
    old = RunDir(tmp_path / "old")
    (tmp_path / "old").mkdir()
    with open(old.file(old.VOCAB), "w") as f:
        json.dump({"token": "char", "idx_to_token": ["<unk>", " ", "e", "t"]}, f)
    v = old.read_vocab()
    assert v.preprocess == "d2l" and v.decode(v.encode(data.prepare("Te T", "d2l"))) == "te t"
