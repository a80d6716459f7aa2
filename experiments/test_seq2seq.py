"""Smoke test of ``experiments/seq2seq.py`` (for ``.ci/run``): a ``--quick`` run, its files, the
accuracy table's shape, and what the quick setting already learns."""

import json
import os

import numpy as np
import seq2seq as exp  # this directory is on sys.path (pytest's rootdir-less import)

from jrnn import seq2seq as s2s


def test_accuracy_by_length_by_hand():
    d = s2s.Decoded(symbols=np.array([[1, 2, 3], [2, 1, 0], [0, 0, 0]]), lengths=np.array([2, 2, 1]),
                    log_prob=np.zeros(3), ended=np.ones(3, bool))
    targets = np.array([[1, 2, 3], [2, 2, 1], [0, 0, 0]])
    acc = exp.accuracy_by_length(d, targets, np.array([2, 2, 2]))
    assert acc == {2: (1 / 3, 4 / 6)}  # column 0 exact; 1 + 1 + 2 hits... per token: 4 of 6


def test_quick_run(tmp_path):
    out = tmp_path / "s2s"
    assert exp.main(["--quick", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text().startswith("# Encoder-decoder on reversal")
    assert res["plot"] is None or (out / res["plot"]).stat().st_size > 0
    c = res["config"]
    assert set(res["by_length"]) == {"greedy", f"beam {c['beam']}"}
    for table in res["by_length"].values():
        assert [int(L) for L in table] == list(range(c["min_len"], c["test_max_len"] + 1))
        for exact, per_token in table.values():
            assert 0.0 <= exact <= per_token <= 1.0
    # the trained lengths are reversed well; teacher-forced validation loss fell
    short = res["by_length"]["greedy"][str(c["min_len"])]
    assert short[0] > 0.9
    assert res["curve"][-1][1] < 0.5 * res["curve"][0][1]
    assert res["mean_log_prob"][f"beam {c['beam']}"] >= res["mean_log_prob"]["greedy"] - 1e-5


def test_default_out_is_beside_the_script():
    here = os.path.dirname(os.path.abspath(exp.__file__))
    assert exp.DEFAULT_OUT == os.path.join(here, "results", "seq2seq")
