"""Compare jrnn's gradient estimators (BPTT variants): accuracy, cost and learning.

A thin wrapper around ``jrnn bench-grads`` (:mod:`jrnn.bench_grads`) with the
full default configuration: GRU cells; gradient accuracy against full BPTT on a
GRU-32 char LM (T=35); time and memory per update for T = 32 ... 2048; learning
curves on *The Time Machine* (GRU-64, first 50k characters) and on the copy
task (GRU-16, delay 30). About 15 minutes on 2 CPU cores.

Usage::

    JRNN_DATA_DIR=../shared/data python experiments/bptt_variants.py [extra bench-grads flags]

Writes ``experiments/results/bptt_variants/{results.json, results.md, *.png}``
(``--out`` to change); ``python experiments/bptt_variants.py --help`` lists the flags.
"""

from __future__ import annotations

import os
import sys

from jrnn.bench_grads import main

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "results", "bptt_variants")
    sys.exit(main(["--out", out] + sys.argv[1:]))
