"""Host memory on CPU: keep large freed blocks for reuse instead of page-faulting them back.

XLA:CPU allocates the temporaries of each execution as one block and frees it
when the execution ends: ~550 MB for one training step of an LSTM-256 language
model at ``T=1024, B=32``. glibc's ``malloc`` serves such a block with a fresh
``mmap`` and returns it with ``munmap`` (always above 32 MB, and above 64 MB for
any thread with its own arena), so every step faults its whole working set
back in, page by page: 133k minor faults per step in that example.
:func:`reuse_host_memory` switches glibc to serve large blocks from the heap
and never trim it, so the blocks freed by one step serve the next: 0 faults
per step, and the step takes 335 ms instead of 420-530 ms (GRU-256 at batch
256: 92 -> 63 ms). Steps whose temporaries are small, like d2l's shapes
(``B=32, T=35``), are unchanged. Measured in ``benchmarks/README.md``.

The price is memory. The heap grows to a few times the per-step working set
over the first ~10 steps (fragmentation: a freed block does not always fit
the next request), then stays flat and is never returned to the OS until the
process exits: peak RSS 1.9 GB instead of 0.9 GB in the LSTM example above.
The settings are process-wide (every library in the process gets them, torch
included) and belong at the start of a script, before JAX starts its CPU
client. The ``jrnn`` command line, the benchmarks and the experiments call it;
the library never does so on its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import warnings

__all__ = ["reuse_host_memory"]

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8

_applied = False


def _jax_backend_started() -> bool:
    mod = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(mod, "_backends", None)) if mod is not None else False


def reuse_host_memory(warn: bool = True) -> bool:
    """Let glibc reuse large freed blocks (one arena, no ``mmap``, no trimming).

    Call before the first JAX computation. Returns ``True`` if the settings
    are in force, ``False`` where they cannot apply: not glibc (macOS,
    Windows, musl), or JAX's CPU client already started (a warning says so;
    nothing is changed then, because the client's threads keep the arenas
    they bound to). Calling it again is harmless.

    Args:
      warn: warn when JAX has already started. Entry points that may also be
        called in-process after JAX started (``jrnn.cli.main``, the benchmark
        mains) pass ``False``: for them the setting is best effort.
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only
    except (OSError, AttributeError):
        return False
    if _jax_backend_started():
        if warn:
            warnings.warn("jrnn.reuse_host_memory() must run before the first JAX computation "
                          "(JAX's CPU threads already hold their malloc arenas); nothing changed",
                          RuntimeWarning, stacklevel=2)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # one arena: a thread's own arena cannot hold blocks above 64 MB and mmaps them
    # whatever the settings; no mmap: large blocks come from the heap; no trim: the
    # heap keeps its size, so the next step's block is already mapped
    ok = (mallopt(_M_ARENA_MAX, 1) and mallopt(_M_MMAP_MAX, 0)
          and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))  # int: trims only past 2 GB free
    _applied = bool(ok)
    return _applied
