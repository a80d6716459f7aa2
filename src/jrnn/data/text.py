"""Text preprocessing, vocabularies and corpora (pure NumPy).

Follows *Dive into Deep Learning* (0.17), chapter "Recurrent Neural
Networks": text preprocessing, language models and the dataset. Besides d2l's
preprocessing (letters only, lower-cased) a corpus can keep the text *raw*
(every character: case, punctuation, digits, newlines, any Unicode code point)
or read it as UTF-8 *bytes* (a fixed vocabulary of 256 ids).
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

__all__ = [
    "CORPORA",
    "PREPROCESSING",
    "TIME_MACHINE_SHA1",
    "TIME_MACHINE_URL",
    "TOKEN_KINDS",
    "ByteVocab",
    "Vocab",
    "bundled_text",
    "fetch",
    "lines",
    "load_corpus",
    "load_text",
    "ngram_freqs",
    "prepare",
    "preprocess",
    "read_bytes",
    "read_text",
    "split",
    "time_machine",
    "token_freqs",
    "tokenize",
]

TIME_MACHINE_URL = "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt"
TIME_MACHINE_SHA1 = "090b5e7e70c295757f55df93cb0a180b9691891a"
TOKEN_KINDS = ("char", "word", "byte")  # what a corpus can be made of
PREPROCESSING = ("raw", "d2l")  # raw: the text as it is; d2l: letters only, lower-cased
_SPLIT_KINDS = ("char", "word")  # what tokenize and Vocab split text into


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_token_kind(token: str) -> None:
    _check_choice("token", token, _SPLIT_KINDS)


def _split_lines(text: str) -> list[str]:
    # Same line boundaries as reading a file in text mode with readlines().
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


# ---------------------------------------------------------------------------
# Preprocessing and tokenization
# ---------------------------------------------------------------------------


def lines(text: str) -> list[str]:
    """Applies d2l's time-machine preprocessing line by line.

    Every run of non-letters becomes one space, each line is stripped and
    lower-cased: ``re.sub('[^A-Za-z]+', ' ', line).strip().lower()``.

    Args:
        text: Raw text.

    Returns:
        One preprocessed string per input line (empty lines are kept).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return [re.sub("[^A-Za-z]+", " ", line).strip().lower() for line in _split_lines(text)]


def preprocess(text: str) -> str:
    """Preprocesses raw text into one string of lower-case letters and spaces.

    The non-empty lines of :func:`lines` are joined with a single space, so the
    result char-tokenizes into at most 27 symbols (26 letters and space; with
    ``<unk>`` d2l's 28-symbol vocabulary) and word-tokenizes without gluing
    words across line ends. Note: :func:`load_corpus` reproduces d2l exactly,
    which concatenates lines *without* a separator, so its char corpus is a
    little shorter than ``preprocess(text)``.

    Args:
        text: Raw text.

    Returns:
        The preprocessed text.
    """
    return " ".join(line for line in lines(text) if line)


def prepare(text: str, preprocess: str = "raw") -> str:
    """Reads a query (e.g. a generation prefix) as a corpus built with ``preprocess`` was read.

    ``"raw"`` returns ``text`` unchanged; ``"d2l"`` replaces every run of
    non-letters (newlines included) by one space and lower-cases, as
    :func:`lines` does, but does not strip, so ``"The Time "`` becomes
    ``"the time "`` and a prefix keeps its trailing space.

    Args:
        text: The query.
        preprocess: One of :data:`PREPROCESSING`.

    Returns:
        The text the vocabulary's tokens are looked up in.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    _check_choice("preprocess", preprocess, PREPROCESSING)
    return text if preprocess == "raw" else re.sub("[^A-Za-z]+", " ", text).lower()


def tokenize(lines_or_text: str | Sequence[str], token: str = "char") -> list[list[str]]:
    """Splits lines into tokens, as d2l's ``tokenize``.

    Args:
        lines_or_text: A list of lines, or one string (split on newlines).
        token: ``"char"`` (a list of characters per line) or ``"word"``
            (split on whitespace).

    Returns:
        One list of tokens per line.
    """
    _check_token_kind(token)
    if isinstance(lines_or_text, str):
        lines_or_text = _split_lines(lines_or_text)
    out = []
    for i, line in enumerate(lines_or_text):
        if not isinstance(line, str):
            raise TypeError(
                f"lines_or_text must be a str or a list of str, got element {i} of "
                f"type {type(line).__name__}"
            )
        out.append(list(line) if token == "char" else line.split())
    return out


def _flatten(tokens: Iterable) -> list[str]:
    tokens = list(tokens)
    if tokens and isinstance(tokens[0], list):  # a list of lines, as d2l
        return [t for line in tokens for t in line]
    return tokens


def token_freqs(tokens: Iterable) -> list[tuple[str, int]]:
    """Counts tokens, most frequent first (ties keep first-appearance order).

    Args:
        tokens: A flat list of tokens or a list of token lists.

    Returns:
        ``(token, count)`` pairs sorted by count, descending.
    """
    counter = collections.Counter(_flatten(tokens))
    return sorted(counter.items(), key=lambda kv: kv[1], reverse=True)


def ngram_freqs(tokens: Iterable, n: int) -> list[tuple[tuple[str, ...], int]]:
    """Counts n-grams of consecutive tokens (lines are concatenated, as d2l).

    Args:
        tokens: A flat list of tokens or a list of token lists.
        n: The n-gram order, ``n >= 1``.

    Returns:
        ``(ngram_tuple, count)`` pairs sorted by count, descending.
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    flat = _flatten(tokens)
    counter = collections.Counter(zip(*(flat[i:] for i in range(n))))
    return sorted(counter.items(), key=lambda kv: kv[1], reverse=True)


# ---------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------


def _check_ids(ids, size: int, name: str) -> np.ndarray:
    # JAX gathers clamp out-of-range indices silently: validate before an embedding lookup.
    arr = np.asarray(ids)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
    bad = (arr < 0) | (arr >= size)
    if bad.any():
        raise ValueError(
            f"{name} contains token id {int(arr[bad].flat[0])} outside the "
            f"vocabulary [0, {size})"
        )
    return arr


class Vocab:
    """Token <-> id mapping, as d2l's ``Vocab``.

    Index 0 is ``'<unk>'``, then the reserved tokens, then the tokens with
    frequency ``>= min_freq`` by descending frequency (ties by first
    appearance).

    Attributes:
        idx_to_token: List of tokens by id.
        token_to_idx: Dict from token to id.
        token_freqs: ``(token, count)`` pairs, most frequent first.
        token: ``"char"`` or ``"word"``; decides how text is split and joined.
        preprocess: How the corpus text was read (``"raw"`` or ``"d2l"``, see
            :func:`prepare`), so a query can be read the same way; ``None``
            when unknown (a vocabulary built from tokens directly).
    """

    def __init__(
        self,
        tokens: Iterable = (),
        min_freq: int = 0,
        reserved_tokens: Sequence[str] = (),
        token: str = "char",
        preprocess: str | None = None,
    ):
        _check_token_kind(token)
        if preprocess is not None:
            _check_choice("preprocess", preprocess, PREPROCESSING)
        self.token = token
        self.preprocess = preprocess
        self.token_freqs = token_freqs(tokens)
        self.idx_to_token = ["<unk>"] + list(reserved_tokens)
        self.token_to_idx = {t: i for i, t in enumerate(self.idx_to_token)}
        for tok, freq in self.token_freqs:
            if freq < min_freq:
                break
            if tok not in self.token_to_idx:
                self.token_to_idx[tok] = len(self.idx_to_token)
                self.idx_to_token.append(tok)

    @classmethod
    def from_tokens(
        cls, idx_to_token: Sequence[str], token: str = "char", preprocess: str | None = None
    ) -> "Vocab":
        """Rebuilds a vocabulary from its ``idx_to_token`` list (e.g. saved with a run)."""
        if not idx_to_token or idx_to_token[0] != "<unk>":
            raise ValueError("idx_to_token must start with '<unk>'")
        v = cls((), token=token, preprocess=preprocess)
        v.idx_to_token = list(idx_to_token)
        v.token_to_idx = {t: i for i, t in enumerate(v.idx_to_token)}
        return v

    @property
    def unk(self) -> int:
        """The id of ``'<unk>'`` (0)."""
        return 0

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, token={self.token!r}, preprocess={self.preprocess!r})"

    def __getitem__(self, tokens):
        """Maps a token (or a list/tuple of tokens) to ids; unknown -> 0."""
        if not isinstance(tokens, (list, tuple)):
            return self.token_to_idx.get(tokens, self.unk)
        return [self[t] for t in tokens]

    def check_ids(self, ids, name: str = "ids") -> np.ndarray:
        """Checks that every id is an integer in ``[0, len(self))``.

        JAX gathers clamp out-of-range indices silently, so validate ids
        before they reach an embedding lookup.

        Args:
            ids: Array-like of token ids, any shape.
            name: Argument name used in the error message.

        Returns:
            ``ids`` as a NumPy array.

        Raises:
            ValueError: If ``ids`` is not an integer array or has an id
                outside the vocabulary.
        """
        return _check_ids(ids, len(self), name)

    def to_tokens(self, ids):
        """Maps an id (or a sequence/array of ids) to tokens.

        Raises:
            ValueError: If an id is outside ``[0, len(self))``.
        """
        arr = self.check_ids(ids)
        if arr.ndim == 0:
            return self.idx_to_token[int(arr)]
        return [self.idx_to_token[i] for i in arr.ravel().tolist()]

    def _tokens(self, text_or_tokens) -> list:
        if isinstance(text_or_tokens, str):
            return _flatten(tokenize([text_or_tokens], self.token))
        return _flatten(text_or_tokens)

    def unknown(self, text_or_tokens) -> list[str]:
        """The distinct tokens of ``text_or_tokens`` that the vocabulary lacks.

        Args:
            text_or_tokens: As for :meth:`encode` (text is not preprocessed
                here; see :func:`prepare`).

        Returns:
            The tokens that would be read as ``'<unk>'``, in order of first
            appearance.
        """
        return list(dict.fromkeys(t for t in self._tokens(text_or_tokens)
                                  if t not in self.token_to_idx))

    def encode(self, text_or_tokens, strict: bool = False) -> np.ndarray:
        """Encodes text (split by ``self.token``) or tokens into ids.

        Args:
            text_or_tokens: A string, a flat list of tokens or a list of
                token lists (flattened). Text is taken as it is: read a query
                as the corpus was with :func:`prepare` first.
            strict: Refuse tokens the vocabulary lacks instead of mapping
                them to ``'<unk>'`` (0).

        Returns:
            int32 ids, shape ``[N]``.

        Raises:
            ValueError: With ``strict``, listing the unknown tokens.
        """
        toks = self._tokens(text_or_tokens)
        if strict:
            missing = self.unknown(toks)
            if missing:
                raise ValueError(f"{len(missing)} {self.token}s not in the vocabulary of "
                                 f"{len(self)}: {_listing(missing)}")
        return np.asarray(self[list(toks)], dtype=np.int32).reshape(-1)

    def decode(self, ids) -> str:
        """Decodes ids to a string, joined by ``''`` (char) or ``' '`` (word).

        Args:
            ids: Array-like of token ids, any shape (flattened).
        """
        sep = "" if self.token == "char" else " "
        toks = self.to_tokens(ids)
        return toks if isinstance(toks, str) else sep.join(toks)


def _listing(tokens: Sequence[str], most: int = 20) -> str:
    shown = ", ".join(repr(t) for t in tokens[:most])
    return shown + (f", ... ({len(tokens) - most} more)" if len(tokens) > most else "")


class ByteVocab:
    """UTF-8 bytes as tokens: id ``i`` is the byte ``i``, always 256 ids.

    Every text encodes (there is no ``'<unk>'``), so any file trains with the
    same vocabulary; a multi-byte character is several tokens.

    Attributes:
        token: ``"byte"``.
        preprocess: How the corpus text was read (``"raw"`` or ``"d2l"``).
    """

    token = "byte"

    def __init__(self, preprocess: str = "raw"):
        _check_choice("preprocess", preprocess, PREPROCESSING)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return 256

    def __repr__(self) -> str:
        return f"ByteVocab(size=256, preprocess={self.preprocess!r})"

    def check_ids(self, ids, name: str = "ids") -> np.ndarray:
        """Checks that every id is an integer in ``[0, 256)``; see :meth:`Vocab.check_ids`."""
        return _check_ids(ids, 256, name)

    def unknown(self, text_or_bytes) -> list:
        """Always ``[]``: every text is made of bytes."""
        return []

    def encode(self, text_or_bytes, strict: bool = False) -> np.ndarray:
        """Encodes text (as UTF-8) or bytes into ids.

        Args:
            text_or_bytes: A ``str`` or a bytes-like object.
            strict: Accepted for parity with :meth:`Vocab.encode` (nothing is unknown).

        Returns:
            int32 ids in ``[0, 256)``, shape ``[N]``.
        """
        if isinstance(text_or_bytes, str):
            text_or_bytes = text_or_bytes.encode("utf-8")
        if not isinstance(text_or_bytes, (bytes, bytearray, memoryview)):
            raise TypeError(f"text_or_bytes must be a str or bytes, got "
                            f"{type(text_or_bytes).__name__}")
        return np.frombuffer(bytes(text_or_bytes), dtype=np.uint8).astype(np.int32)

    def decode_bytes(self, ids) -> bytes:
        """The bytes of ``ids`` (any shape, flattened)."""
        return self.check_ids(ids).astype(np.uint8).tobytes()

    def decode(self, ids) -> str:
        """Decodes ids as UTF-8; invalid sequences (a model's output may hold
        them) become U+FFFD, so valid text round-trips exactly."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


def load_corpus(
    text: str | bytes,
    token: str = "char",
    max_tokens: int = -1,
    *,
    preprocess: str = "d2l",
    min_freq: int = 0,
) -> tuple[np.ndarray, Vocab | ByteVocab]:
    """Builds a corpus of token ids and its vocabulary, as d2l's
    ``load_corpus_time_machine``.

    With ``preprocess="d2l"`` (the default, as d2l) lines are preprocessed
    with :func:`lines`, tokenized and concatenated without a separator; for
    *The Time Machine* with ``token="char"`` this gives 170580 ids and 28
    tokens (d2l's RNN chapter uses ``max_tokens=10000``). With
    ``preprocess="raw"`` the text is kept as it is: ``"char"`` tokens are its
    code points (newlines included), ``"word"`` tokens are split on
    whitespace (case and punctuation kept). ``"byte"`` tokens are the UTF-8
    bytes of the (preprocessed) text, in a :class:`ByteVocab`. The vocabulary
    is built on the whole text before truncation and records ``preprocess``.

    Args:
        text: Raw text; bytes (e.g. :func:`read_bytes` of a file in any
            encoding) only for ``token="byte"`` with ``preprocess="raw"``.
        token: One of :data:`TOKEN_KINDS`.
        max_tokens: Keep the first ``max_tokens`` ids if positive.
        preprocess: One of :data:`PREPROCESSING`.
        min_freq: Char/word tokens seen fewer times become ``'<unk>'`` (id 0).

    Returns:
        ``(corpus, vocab)``: corpus is int32 of shape ``[N]``.

    Raises:
        ValueError: If the text has no tokens after preprocessing, or the
            arguments do not fit together.
    """
    _check_choice("token", token, TOKEN_KINDS)
    _check_choice("preprocess", preprocess, PREPROCESSING)
    if isinstance(min_freq, bool) or not isinstance(min_freq, (int, np.integer)) or min_freq < 0:
        raise ValueError(f"min_freq must be an integer >= 0, got {min_freq!r}")
    if isinstance(text, (bytes, bytearray)):
        if token != "byte" or preprocess != "raw":
            raise ValueError("bytes are read only as token='byte' with preprocess='raw'; decode "
                             f"them to str first for token={token!r}, preprocess={preprocess!r}")
    elif not isinstance(text, str):
        raise TypeError(f"text must be a str (or bytes for byte tokens), got {type(text).__name__}")
    if token == "byte":
        if min_freq > 1:
            raise ValueError(f"min_freq={min_freq} needs a char or word vocabulary; the byte "
                             "vocabulary is fixed (256 ids, no '<unk>')")
        vocab = ByteVocab(preprocess)
        corpus = vocab.encode(text if preprocess == "raw" else "".join(lines(text)))
    else:
        if preprocess == "d2l":
            tokens = tokenize(lines(text), token)
        else:
            tokens = [list(text) if token == "char" else text.split()]
        vocab = Vocab(tokens, min_freq=min_freq, token=token, preprocess=preprocess)
        corpus = np.asarray([vocab[t] for line in tokens for t in line], dtype=np.int32)
    if corpus.size == 0:
        raise ValueError("corpus is empty after d2l preprocessing (no letters A-Z in the text; "
                         "preprocess='raw' keeps every character)" if preprocess == "d2l"
                         else "corpus is empty (no tokens in the text)")
    if max_tokens > 0:
        corpus = corpus[:max_tokens]
    return corpus, vocab


def split(corpus, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Splits a corpus into a training head and a contiguous held-out tail.

    Args:
        corpus: Token ids, shape ``[N]``.
        val_fraction: Fraction in ``[0, 1)`` for the tail; with 0 the
            validation part is empty.

    Returns:
        ``(train, val)`` of shapes ``[N - V]`` and ``[V]``,
        ``V = round(N * val_fraction)``.

    Raises:
        ValueError: If the fraction is out of range, or a (non-empty-by-request)
            part would hold fewer than 2 tokens.
    """
    corpus = np.asarray(corpus)
    if corpus.ndim != 1:
        raise ValueError(f"corpus must be 1-D, got shape {corpus.shape}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n_val = int(round(len(corpus) * val_fraction))
    n_train = len(corpus) - n_val
    if n_train < 2 or (val_fraction > 0 and n_val < 2):
        raise ValueError(
            f"corpus of {len(corpus)} tokens is too short for val_fraction={val_fraction}: "
            f"train would have {n_train} and val {n_val} tokens (need >= 2 each)"
        )
    return corpus[:n_train], corpus[n_train:]


# ---------------------------------------------------------------------------
# Corpora
# ---------------------------------------------------------------------------


def _sha1(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def _verify(path: Path, sha1: str) -> None:
    actual = _sha1(path)
    if actual != sha1:
        raise ValueError(f"sha1 mismatch for {path}: expected {sha1}, got {actual}")


def fetch(url: str, sha1: str, path: str | os.PathLike) -> Path:
    """Returns ``path``, downloading ``url`` to it first if it is missing.

    The download goes to a temporary file that is moved into place only once
    its sha1 matches, so a corrupt download never stays in the cache. An
    existing file is verified too.

    Args:
        url: Where to download from.
        sha1: Expected hex sha1 of the file.
        path: Destination file.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: If the sha1 of the file (existing or downloaded) differs.
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
        os.close(fd)
        try:
            urllib.request.urlretrieve(url, tmp)
            actual = _sha1(Path(tmp))
            if actual != sha1:
                raise ValueError(
                    f"sha1 mismatch for {path.name} downloaded from {url}: "
                    f"expected {sha1}, got {actual}"
                )
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    _verify(path, sha1)
    return path


def _cache_dir() -> Path:
    return Path(os.environ.get("JRNN_CACHE_DIR") or Path.home() / ".cache" / "jrnn")


def time_machine() -> str:
    """Returns the raw text of H. G. Wells' *The Time Machine* as d2l uses it.

    Read from ``$JRNN_DATA_DIR/timemachine.txt`` if ``JRNN_DATA_DIR`` is set,
    else from the cache (``$JRNN_CACHE_DIR`` or ``~/.cache/jrnn``), downloaded
    from d2l's URL when missing. The sha1 is always verified.

    Raises:
        FileNotFoundError: If ``JRNN_DATA_DIR`` is set but lacks the file.
        ValueError: On a sha1 mismatch.
    """
    data_dir = os.environ.get("JRNN_DATA_DIR")
    if data_dir:
        path = Path(data_dir) / "timemachine.txt"
        if not path.is_file():
            raise FileNotFoundError(
                f"timemachine.txt not found in JRNN_DATA_DIR={data_dir!r} (looked for {path})"
            )
        _verify(path, TIME_MACHINE_SHA1)
    else:
        path = fetch(TIME_MACHINE_URL, TIME_MACHINE_SHA1, _cache_dir() / "timemachine.txt")
    with open(path, encoding="utf-8") as f:
        return f.read()


def bundled_text() -> str:
    """Returns an offline English corpus shipped with Python (~465 KB).

    The values of ``pydoc_data.topics.topics``, sorted by key, joined by
    newlines.
    """
    from pydoc_data.topics import topics

    return "\n".join(topics[k] for k in sorted(topics))


def _existing_file(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file not found: {path}")
    return path


def read_text(path: str | os.PathLike) -> str:
    """Reads a user's UTF-8 text file (newlines ``\\r\\n`` and ``\\r`` read as ``\\n``).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not UTF-8, or is empty or only whitespace.
    """
    path = _existing_file(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); byte tokens "
                         "(token='byte', --token byte) read any file") from None
    if not text.strip():
        raise ValueError(f"text file is empty: {path}")
    return text


def read_bytes(path: str | os.PathLike) -> bytes:
    """Reads a file's bytes, in any encoding, for byte tokens.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is empty.
    """
    raw = _existing_file(path).read_bytes()
    if not raw:
        raise ValueError(f"text file is empty: {path}")
    return raw


CORPORA: dict[str, Callable[[], str]] = {"timemachine": time_machine, "pydoc": bundled_text}


def load_text(name: str | None = None, path: str | os.PathLike | None = None) -> str:
    """Returns raw text from a named corpus or from a file (exactly one).

    Args:
        name: A key of :data:`CORPORA`.
        path: A text file, see :func:`read_text`.

    Raises:
        ValueError: If both or neither are given, or ``name`` is unknown.
    """
    if (name is None) == (path is None):
        raise ValueError(f"give exactly one of name or path, got name={name!r}, path={path!r}")
    if path is not None:
        return read_text(path)
    if name not in CORPORA:
        raise ValueError(f"unknown corpus name {name!r}; available: {sorted(CORPORA)}")
    return CORPORA[name]()
