"""Data: text -> tokens -> vocabulary -> batches, and synthetic tasks."""

from jrnn.data.batches import KINDS, batches, num_batches, random_batches, sequential_batches
from jrnn.data.synthetic import adding_task, copy_task, sine
from jrnn.data.text import (
    CORPORA,
    TIME_MACHINE_SHA1,
    TIME_MACHINE_URL,
    Vocab,
    bundled_text,
    fetch,
    lines,
    load_corpus,
    load_text,
    ngram_freqs,
    preprocess,
    read_text,
    split,
    time_machine,
    token_freqs,
    tokenize,
)

__all__ = [
    "CORPORA",
    "KINDS",
    "TIME_MACHINE_SHA1",
    "TIME_MACHINE_URL",
    "Vocab",
    "adding_task",
    "batches",
    "bundled_text",
    "copy_task",
    "fetch",
    "lines",
    "load_corpus",
    "load_text",
    "ngram_freqs",
    "num_batches",
    "preprocess",
    "random_batches",
    "read_text",
    "sequential_batches",
    "sine",
    "split",
    "time_machine",
    "token_freqs",
    "tokenize",
]
