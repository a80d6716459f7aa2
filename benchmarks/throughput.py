#!/usr/bin/env python
"""Training throughput of jrnn vs torch.nn and flax.linen, interleaved in one run.

A thin wrapper around ``jrnn bench-speed`` (``jrnn.bench_speed.main``); see
``benchmarks/README.md`` for the measured tables and ``--help`` for options::

    python benchmarks/throughput.py            # full run, a few minutes
    python benchmarks/throughput.py --quick    # smoke run
"""

import sys

from jrnn.bench_speed import main

if __name__ == "__main__":
    sys.exit(main())
