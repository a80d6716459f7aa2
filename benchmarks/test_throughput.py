"""Smoke test of ``benchmarks/throughput.py`` (run by ``.ci/run``, not the unit suite):
a ``--quick`` run on tiny configs.

It checks the plumbing, not the speed: every implementation trains the same
model (identical first-step loss from identical weights and batch) and the
machine-readable ``ratio`` lines parse. torch is optional (skipped if absent).
"""

import importlib.util
import math
import re

import pytest

import throughput  # this directory is on sys.path (pytest's rootdir-less import of a test file)

HAS_TORCH = importlib.util.find_spec("torch") is not None
RATIO = re.compile(r"^ratio (\S+) vs_torch=(\S+) vs_flax=(\S+) of_roofline=(\S+) of_sequential=(\S+)$")


def test_quick_run_prints_parseable_ratio_lines(capsys):
    impls = "jrnn,flax,torch" if HAS_TORCH else "jrnn,flax"
    rc = throughput.main(["--quick", "--configs", "gru8-b2-t3,rnn8-b2-t3", "--impls", impls,
                          "--torch-threads", "1", "--compile-reps", "1", "--seeds", "2", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    ratios = [RATIO.match(line) for line in lines[-2:]]
    assert all(ratios), lines[-2:]
    assert [m.group(1) for m in ratios] == ["gru8-b2-t3", "rnn8-b2-t3"]
    for m in ratios:
        vs_torch, vs_flax, roof, seq = (float(m.group(i)) for i in range(2, 6))
        assert vs_flax > 0 and roof > 0 and seq > 0
        assert (vs_torch > 0) if HAS_TORCH else math.isnan(vs_torch)
    # same weights and batch in every implementation: the same loss before the first update
    first = [line for line in lines if line.startswith("gru8-b2-t3: first-step loss")][0]
    losses = [float(x) for x in re.findall(r"(?:jrnn|flax|torch\S*) (\d+\.\d+)", first.split(";")[0])]
    assert len(losses) == (3 if HAS_TORCH else 2)
    assert max(losses) - min(losses) < 1e-3
    assert re.search(r"^compile gru8-b2-t3 jrnn_wall=\S+s flax_wall=", out, re.M)
    assert re.search(r"^seeds gru8-b2-t3 S=2 vmapped_tok_s=\d+ sequential_tok_s=\d+ speedup=", out, re.M)


def test_config_names_and_help():
    assert throughput.parse_config("lstm256-b256-t1024") == {
        "name": "lstm256-b256-t1024", "cell": "lstm", "H": 256, "B": 256, "T": 1024, "V": 28, "G": 4}
    with pytest.raises(ValueError, match="bad config"):
        throughput.parse_config("transformer512")
    assert "--quick" in throughput.build_parser().format_help()
    with pytest.raises(SystemExit, match="unknown --impls"):
        throughput.main(["--quick", "--impls", "jrnn,mxnet"])
