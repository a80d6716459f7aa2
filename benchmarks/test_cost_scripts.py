"""Smoke tests of benchmarks/snap_cost.py, regularise_cost.py and sweep_parts.py --quick (run by
.ci/run)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import regularise_cost  # noqa: E402
import snap_cost  # noqa: E402
import sweep_parts  # noqa: E402


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


def test_sweep_parts_quick_has_every_part_and_a_positive_ratio(capsys):
    assert sweep_parts.main(["--quick"]) == 0
    rows = _rows(capsys.readouterr().out)[1:]
    assert {r[1].split(" ")[0] for r in rows} == {"step", "grad", "forward"}
    assert any("lax.map" in r[1] for r in rows)
    assert all(float(r[4].strip("*x")) > 0 for r in rows)
