"""Smoke tests of benchmarks/snap_cost.py and regularise_cost.py --quick (run by .ci/run)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import regularise_cost  # noqa: E402
import snap_cost  # noqa: E402


def _rows(text):
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and "---" not in line]


def test_snap_cost_quick_times_full_snap1_and_rtrl(capsys):
    assert snap_cost.main(["--quick"]) in (0, None)
    rows = {(r[0], r[1]): r for r in _rows(capsys.readouterr().out)[1:]}
    assert {("gru", "full"), ("gru", "snap1"), ("gru", "rtrl (H=8)")} <= set(rows)
    assert all(float(r[2]) > 0 for r in rows.values())  # a positive time in every row


def test_regularise_cost_quick_has_a_ratio_per_option(capsys):
    assert regularise_cost.main(["--quick"]) == 0
    rows = _rows(capsys.readouterr().out)[1:]
    assert [r[0] for r in rows] == list(regularise_cost.OPTIONS)
    assert rows[0][2] == "1.00" and all(float(r[2]) > 0 for r in rows)
