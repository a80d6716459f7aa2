"""Smoke test of benchmarks/memory_curve.py --quick (run by .ci/run)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import memory_curve  # noqa: E402


def test_quick_curve_reports_checkpointed_below_full(tmp_path, capsys):
    out = tmp_path / "curve.json"
    memory_curve.main(["--quick", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    by = {(r["T"], r["spec"].split(":")[0] if "budget" not in r["spec"] else "budget"): r for r in rows}
    for T in (100, 300):
        assert by[(T, "checkpointed")]["temp_gib"] < 0.5 * by[(T, "full")]["temp_gib"]
        assert all(by[(T, k)]["ran"] for k in ("full", "checkpointed", "budget"))
    assert by[(300, "full")]["temp_gib"] > 2 * by[(100, "full")]["temp_gib"]  # full grows with T
    assert "| 300 | checkpointed:17 |" in capsys.readouterr().out
