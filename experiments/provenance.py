"""Where a result was measured, for every experiment's JSON and Markdown (not a test module).

``machine()`` names the CPU (its model, not just ``x86_64``), the cores, the
load when the run started, JAX and the device; ``footer(res)`` is the line each
``results.md`` ends with; ``pyplot()`` is matplotlib's pyplot on the Agg
backend, or ``None`` where matplotlib is not installed (the plot is skipped).
"""

from __future__ import annotations

import json
import os
import platform

import jax

__all__ = ["machine", "footer", "pyplot", "save"]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine() -> dict:
    """``{"cpu", "cores", "load", "jax", "device"}`` of this run."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "load": load, "jax": jax.__version__,
            "device": str(jax.devices()[0])}


def footer(res: dict, note: str = "") -> str:
    """``Machine: CPU, N cores (load L), JAX v on device; total S s{note}.``"""
    m = res["machine"]
    load = f" (load {m['load']:.1f} at start)" if m.get("load") is not None else ""
    return (f"Machine: {m['cpu']}, {m['cores']} cores{load}, JAX {m['jax']} on {m['device']}; "
            f"total {res['total_seconds']:.1f} s{note}.")


def save(res: dict, out: str, png: str, plot, write_md) -> None:
    """Draw ``plot(res, out/png)`` (``res["plot"]`` is ``png``, or ``None`` without
    matplotlib), then write ``out/results.json`` and ``write_md(res, out/results.md)``."""
    res["plot"] = png if plot(res, os.path.join(out, png)) else None
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    write_md(res, os.path.join(out, "results.md"))


def pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
