"""The API reference builds from the docstrings (docs/build_api.py, pdoc) without warnings."""

import importlib.util
import sys
import types
from pathlib import Path

import pytest

pytest.importorskip("pdoc")
BUILD = Path(__file__).parents[1] / "docs" / "build_api.py"


def _builder():
    spec = importlib.util.spec_from_file_location("build_api", BUILD)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_reference_builds_clean_and_covers_every_public_module(tmp_path):
    report = _builder().build(tmp_path)
    assert report["warnings"] == []
    assert report["undocumented"] == []
    pages = {Path(p).relative_to(tmp_path).as_posix() for p in report["pages"]}
    for name in ("jrnn.html", "jrnn/scan.html", "jrnn/step.html", "jrnn/loop.html",
                 "jrnn/parallel.html", "jrnn/grads/bptt.html", "jrnn/data/text.html"):
        assert name in pages, sorted(pages)
    html = (tmp_path / "jrnn" / "parallel.html").read_text()
    assert "data_mesh" in html and "one-axis mesh" in html  # the docstring, rendered


def test_a_public_name_without_a_docstring_is_reported(monkeypatch):
    mod = types.ModuleType("jrnn_fake", "A module.")
    exec("def documented():\n    'Yes.'\ndef bare():\n    pass\n"
         "from typing import NamedTuple\nclass Pair(NamedTuple):\n    a: int\n", mod.__dict__)
    mod.__all__ = ["documented", "bare", "Pair"]
    monkeypatch.setitem(sys.modules, "jrnn_fake", mod)
    assert _builder().undocumented(["jrnn_fake"]) == ["jrnn_fake.bare", "jrnn_fake.Pair"]
