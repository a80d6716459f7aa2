"""Which kernel runs a recurrence: jrnn's XLA scan, or oneDNN's fused RNN primitive.

A built-in cell's ``backend`` (a :class:`~jrnn.cells.Cell` field, set with
:func:`with_backend` or per call with ``unroll(..., backend=...)``) says who
runs :func:`jrnn.unroll` over it, and so every estimator that unrolls it
(the BPTT family, ``checkpointed``'s segments) and every model built on it:

- ``"xla"`` (the default): jrnn's own ``lax.scan`` / fast recurrence.
- ``"onednn"``: oneDNN's RNN primitive for the whole sequence, forward and
  backward (:mod:`jrnn.onednn`, the optional extra ``jrnn[onednn]``). What it
  cannot run is refused with a ``ValueError`` saying why.
- ``"auto"``: oneDNN where it can run the unroll and where
  ``benchmarks/throughput.py`` measured it faster (:func:`onednn_wins`: LSTM
  from H=64, GRU from 256, Elman from 512), and not when torch is imported
  (see below); otherwise XLA. The choice is logged once per cell and shape on
  the ``"jrnn"`` logger at INFO (the ``jrnn`` command prints it).

oneDNN runs an unroll when the extension is available, JAX's default device
is the CPU, the cell is the tanh Elman (``"rnn"``), ``"lstm"`` or ``"gru"``
in float32 with one batch dim, and the unroll has no ``lengths``,
``step_mask``, ``resets``, ``carry_grad_scale`` (so ``truncated:K`` and
``randomized`` stay on XLA), ``remat_every``, ``before_step`` or
``fast_path=False``. ``reverse`` is supported. Online estimators (RTRL,
UORO, SnAp, ...) step the cell themselves and never use a kernel. Under
``jax.vmap`` (sweeps) the primitive runs once per run, one after another.

torch in the same process: torch's wheel ships its own ``libgomp.so.1`` and
oneDNN's library binds to it, so both share one OpenMP runtime; their
thread teams together outnumber the cores, libgomp throttles its spinning,
and oneDNN's per-step parallel regions each sleep and wake: the LSTM-256
gradient takes ~22 ms instead of 10.7. ``auto`` therefore stays on XLA when
``torch`` is imported; ``"onednn"`` runs regardless.
"""

from __future__ import annotations

import logging
import sys

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["BACKENDS", "with_backend", "onednn_wins"]

BACKENDS = ("xla", "onednn", "auto")
_log = logging.getLogger("jrnn")
_logged: set = set()


def with_backend(cell, backend: str):
    """``cell`` with its unrolls run by ``backend`` (every layer of a stack)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if cell.layers is not None:
        return cell._replace(backend=backend,
                             layers=tuple(with_backend(c, backend) for c in cell.layers))
    return cell._replace(backend=backend)


# the smallest H at which oneDNN's train step measured faster than the XLA fast path
# (benchmarks/README.md, the oneDNN table: 2-core Intel Xeon, B=32, T=35 unless noted):
# LSTM-256 1.15x (B=256 1.17x, T=1024 1.56x), GRU-256 1.08x, Elman-512 1.26x; LSTM-64 1.27x and
# GRU-64 0.94x in a standalone A/B of the train step (Elman below 512 not measured)
_MIN_H = {"lstm": 64, "gru": 256, "rnn": 512}


def onednn_wins(name: str, T: int, B: int, H: int) -> bool:
    """Where ``auto`` picks oneDNN (a fixed rule of the cell and its width, from the measured
    table in ``benchmarks/README.md``; ``T`` and ``B`` are in the signature for future rules)."""
    return H >= _MIN_H.get(name, 1 << 30)


def _why_not(cell, xs, plain: bool, extras) -> str:
    """Why oneDNN cannot run this unroll (``""``: it can)."""
    if plain:
        return "remat_every, before_step or fast_path=False (the step-by-step scan)"
    if extras:
        return f"{', '.join(extras)} (not supported by the oneDNN kernel)"
    if cell.name not in ("rnn", "lstm", "gru"):
        return f"cell {cell.name!r} (only the tanh Elman 'rnn', 'lstm' and 'gru')"
    integer = jnp.issubdtype(jnp.result_type(xs), jnp.integer)
    if np.ndim(xs) != (2 if integer else 3):
        return f"inputs of shape {np.shape(xs)} (one batch dim only)"
    if not integer and jnp.result_type(xs) == jnp.float64:
        return "float64 inputs"
    if jax.default_backend() != "cpu":
        return f"the default device is {jax.default_backend()!r}, not the CPU"
    from . import onednn
    if not onednn.available():
        return f"oneDNN is unavailable: {onednn.unavailable_reason()}"
    return ""


def choose(cell, xs, *, plain: bool, extras=()):
    """The oneDNN recurrence ``(cell, params, xs, carry, reverse=) -> (hs, carry)`` if the cell's
    backend picks it for this unroll, else ``None`` (XLA). ``extras``: names of the options in
    use that oneDNN does not support (``lengths``, ``resets``, ...)."""
    backend = getattr(cell, "backend", "xla")
    if backend == "xla":
        return None
    why = _why_not(cell, xs, plain, extras)
    if backend == "onednn":
        if why:
            raise ValueError(f"backend='onednn' cannot run this unroll: {why}; "
                             "use backend='auto' to fall back to XLA")
        return _onednn
    T, B = np.shape(xs)[:2]
    if not why and "torch" in sys.modules:
        # torch ships its own libgomp.so.1 and libdnnl binds to it: torch's OpenMP team and
        # oneDNN's together outnumber the cores, libgomp throttles their spinning, and the
        # primitive runs about 2x slower (benchmarks/README.md)
        why = "torch is imported: oneDNN would share its OpenMP runtime (about 2x slower)"
    pick = not why and onednn_wins(cell.name, T, B, cell.hidden_size)
    key = (cell.name, cell.hidden_size, T, B, pick)
    if key not in _logged:
        _logged.add(key)
        _log.info("backend='auto': %s-%d at T=%d, B=%d runs on %s%s", cell.name, cell.hidden_size,
                  T, B, "oneDNN" if pick else "XLA", f" ({why})" if why else "")
    return _onednn if pick else None


def _onednn(cell, params, xs, carry, *, reverse):
    """:func:`jrnn.onednn.recurrence` behind ``unroll``, which has checked the token ids."""
    from .onednn import recurrence
    return recurrence(cell, params, xs, carry, reverse=reverse, _ids_checked=True)
