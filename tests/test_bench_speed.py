"""Smoke test of ``jrnn bench-speed`` (src/jrnn/bench_speed.py): a --quick run on a tiny config.

It checks the plumbing, not the speed: every implementation trains the same
model (identical first-step loss from identical weights and batch) and the
machine-readable ``ratio`` lines parse. torch is optional (skipped if absent).
"""

import importlib.util
import math
import re

import pytest

from jrnn import bench_speed

HAS_TORCH = importlib.util.find_spec("torch") is not None
RATIO = re.compile(r"^ratio (\S+) vs_torch=(\S+) vs_flax=(\S+) of_roofline=(\S+) of_sequential=(\S+)$")


def test_quick_run_prints_parseable_ratio_lines(capsys):
    impls = "jrnn,flax,torch" if HAS_TORCH else "jrnn,flax"
    rc = bench_speed.main(["--quick", "--configs", "gru8-b2-t3,rnn8-b2-t3", "--impls", impls,
                           "--torch-threads", "1", "--compile-reps", "0", "--seeds", "0", "--quiet"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    ratios = [RATIO.match(l) for l in lines[-2:]]
    assert all(ratios), lines[-2:]
    assert [m.group(1) for m in ratios] == ["gru8-b2-t3", "rnn8-b2-t3"]
    for m in ratios:
        vs_torch, vs_flax, roof, seq = (float(m.group(i)) for i in range(2, 6))
        assert vs_flax > 0 and roof > 0 and seq > 0
        assert (vs_torch > 0) if HAS_TORCH else math.isnan(vs_torch)
    # same weights and batch in every implementation: the same loss before the first update
    first = [l for l in lines if l.startswith("gru8-b2-t3: first-step loss")][0]
    losses = [float(x) for x in re.findall(r"(?:jrnn|flax|torch\S*) (\d+\.\d+)", first.split(";")[0])]
    assert len(losses) == (3 if HAS_TORCH else 2)
    assert max(losses) - min(losses) < 1e-3


def test_config_names_and_help():
    assert bench_speed.parse_config("lstm256-b256-t1024") == {
        "name": "lstm256-b256-t1024", "cell": "lstm", "H": 256, "B": 256, "T": 1024, "V": 28, "G": 4}
    with pytest.raises(ValueError, match="bad config"):
        bench_speed.parse_config("transformer512")
    assert "--quick" in bench_speed.build_parser().format_help()
