"""Build jrnn's API reference from its docstrings with pdoc (offline).

    python docs/build_api.py [OUT]        # default: docs/api (git-ignored); open OUT/index.html

Every public module (no leading underscore) is documented; a module whose
optional extra is missing (``jrnn.interop_eqx`` without equinox) is left out
and named. It fails (exit 1) on any pdoc warning but one known pdoc limitation
(below) and on a public name -- one in a module's ``__all__`` -- without a
docstring of its own. ``tests/test_docs.py`` runs it.

The one warning let through: pdoc cannot evaluate the string annotations
(``from __future__ import annotations``) of the ``__init__`` that
``typing.NamedTuple`` generates, because that function's globals are not its
module's ("Error parsing type annotation ... for X.__init__"); the fields
themselves are documented from the class.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
import warnings
from pathlib import Path

NAMEDTUPLE_INIT = re.compile(r"Error parsing type annotation .* for [\w.]+\.__init__\. Import of ")


def public_modules() -> tuple[list[str], list[str]]:
    """``(importable, skipped)`` names of jrnn's public modules."""
    import jrnn

    names = ["jrnn"] + [m.name for m in pkgutil.walk_packages(jrnn.__path__, "jrnn.")
                        if not any(p.startswith("_") for p in m.name.split("."))]
    ok, skipped = [], []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            skipped.append(name)
            continue
        parent, _, leaf = name.rpartition(".")
        if parent and leaf in getattr(sys.modules[parent], "__all__", ()):
            continue  # pdoc documents a submodule its package exports along with the package
        ok.append(name)
    return ok, skipped


def undocumented(modules: list[str]) -> list[str]:
    """Names in the modules' ``__all__`` with no docstring of their own (or a module without one)."""
    bad = []
    for name in modules:
        mod = importlib.import_module(name)
        if not (mod.__doc__ or "").strip():
            bad.append(name)
        for attr in getattr(mod, "__all__", []):
            obj = getattr(mod, attr)
            if inspect.ismodule(obj) or not (callable(obj) or inspect.isclass(obj)):
                continue  # constants and registries are documented in their module
            doc = inspect.getdoc(obj) or ""
            auto = inspect.isclass(obj) and re.fullmatch(rf"{obj.__name__}\(.*\)", doc)
            if not doc.strip() or auto:  # NamedTuple's default "Name(a, b)" is not a docstring
                bad.append(f"{name}.{attr}")
    return bad


def build(out: str | Path = "docs/api") -> dict:
    """Write the HTML reference to ``out``; returns ``{"pages", "skipped", "warnings", "undocumented"}``."""
    import pdoc

    modules, skipped = public_modules()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*modules, output_directory=Path(out))
    real = sorted({str(w.message) for w in caught if not NAMEDTUPLE_INIT.match(str(w.message))})
    return {"pages": sorted(str(p) for p in Path(out).rglob("*.html")), "skipped": skipped,
            "warnings": real, "undocumented": undocumented(modules)}


if __name__ == "__main__":
    report = build(sys.argv[1] if len(sys.argv) > 1 else "docs/api")
    print(f"{len(report['pages'])} pages in {sys.argv[1] if len(sys.argv) > 1 else 'docs/api'}"
          + (f"; skipped (extra not installed): {', '.join(report['skipped'])}" if report["skipped"] else ""))
    for w in report["warnings"]:
        print("warning:", w)
    for n in report["undocumented"]:
        print("no docstring:", n)
    sys.exit(1 if report["warnings"] or report["undocumented"] else 0)
