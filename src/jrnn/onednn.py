"""oneDNN's fused RNN primitives on CPU, called from JAX through ``jax.ffi`` (issue #18, first slice).

:func:`recurrence` runs a whole single-layer recurrence of the built-in tanh
Elman cell (:func:`jrnn.elman`), :func:`jrnn.lstm` or :func:`jrnn.gru`, forward
and backward, with oneDNN 3.2's ``vanilla_rnn``, ``lstm`` and ``lbr_gru``
(linear-before-reset GRU: torch's and jrnn's GRU) primitives, wrapped in a
``jax.custom_vjp``. Values and gradients equal :func:`jrnn.unroll`'s (the XLA
path) to float32 rounding.

oneDNN is optional: ``pip install jrnn[onednn]`` (the CPU-only, OpenMP wheels
``onednn-cpu-gomp`` / ``onednn-devel-cpu-gomp`` 2023.2.0: ``<prefix>/lib/libdnnl.so.3``
and ``<prefix>/include/oneapi/dnnl/``). The C++ handlers
(``jrnn/csrc/onednn_rnn.cc``) are compiled with ``g++`` (or ``$CXX``) on first use
into a cache directory (``$JRNN_ONEDNN_CACHE``, else
``~/.cache/jrnn/onednn-<hash of the source, jax's version and the prefix>``);
``python -m jrnn.onednn`` builds and prints where. :func:`available` is
``False`` (with :func:`unavailable_reason`) when headers, library or compiler
are missing; jrnn itself never needs this module.

Layout mapping (done here, with slices and concats, so autodiff maps the
gradients back): oneDNN's ``ldigo`` weights ``[C, G, H]`` are jrnn's ``[D, G*H]``
input and recurrent matrices as they are. Gate orders: oneDNN's LSTM is
``(i, f, c~, o)`` = jrnn's ``(i, f, g, o)``; oneDNN's lbr-GRU is ``(u, r, o)``
= jrnn's ``(z, r, n)`` (the first two blocks swapped), with four biases
``[b_u, b_r, b_o, b_u']`` = ``[b_x_z, b_x_r, b_x_n, b_hn]`` (the extra one is
the recurrent bias of the candidate, inside ``r * (...)``). Token ids
``[T, B]`` are one-hot encoded to ``[T, B, V]``: jrnn's ``project`` gathers
rows of the input matrix, oneDNN multiplies by it.

Threads: every primitive runs on one dedicated thread of the extension (the
XLA worker that calls a handler sleeps until it is done), with one OpenMP
(libgomp) team of ``OMP_NUM_THREADS`` threads (default: the cores). Without
it, each XLA worker that called a handler grew its own team, there were more
threads than cores, and libgomp throttled its spinning: each of the
primitive's per-step parallel regions then paid a sleep and a wake-up
(LSTM-256, B=32, T=35, forward and backward: 25 ms, against 10.7 ms now and
18 ms on the XLA path; measured on a quiet 2-core Intel Xeon). On a machine
shared with other busy processes ``OMP_WAIT_POLICY=passive`` or
``OMP_NUM_THREADS=1`` (read when libgomp loads: set them before starting
Python) keep oneDNN's spinning threads from stalling behind them.

The handlers use user-managed scratchpads (a per-thread buffer) and one
stream per thread: XLA runs a cached primitive on any of its worker threads,
and oneDNN's default global scratchpad belongs to the thread that created
the primitive.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["available", "build", "library_path", "recurrence", "unavailable_reason"]

_SOURCE = Path(__file__).with_name("csrc") / "onednn_rnn.cc"
_KINDS = {"rnn": 0, "lstm": 1, "gru": 2}
_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
_TARGETS = {  # jax.ffi target name -> exported handler symbol
    "jrnn_onednn_fwd": "JrnnOnednnFwd",
    "jrnn_onednn_lstm_fwd": "JrnnOnednnLstmFwd",
    "jrnn_onednn_bwd": "JrnnOnednnBwd",
    "jrnn_onednn_lstm_bwd": "JrnnOnednnLstmBwd",
}

_lock = threading.Lock()
_state: dict = {}  # "lib": ctypes.CDLL, "path": Path, "error": str


def _prefix() -> Path:
    return Path(os.environ.get("JRNN_ONEDNN_PREFIX", sys.prefix))


def _cache_dir() -> Path:
    env = os.environ.get("JRNN_ONEDNN_CACHE")
    if env:
        return Path(env)
    h = hashlib.sha256()
    h.update(_SOURCE.read_bytes())
    h.update(jax.__version__.encode())
    h.update(str(_prefix()).encode())  # the .so's rpath points into the prefix
    return Path.home() / ".cache" / "jrnn" / f"onednn-{h.hexdigest()[:16]}"


def library_path() -> Path:
    """Where the built extension is (or will be) cached."""
    return _cache_dir() / "jrnn_onednn_rnn.so"


def _find_inputs():
    """``(cxx, include_dirs, link_flags)`` or raises ``RuntimeError`` naming what is missing."""
    prefix = _prefix()
    if not _SOURCE.is_file():
        raise RuntimeError(f"the extension's source {_SOURCE} is missing from the installation")
    header = prefix / "include" / "oneapi" / "dnnl" / "dnnl.hpp"
    if not header.is_file():
        raise RuntimeError(
            f"oneDNN headers not found ({header}); install them with "
            "`pip install onednn-devel-cpu-gomp==2023.2.0` (or `pip install jrnn[onednn]`)")
    libdir = prefix / "lib"
    if (libdir / "libdnnl.so").exists():
        lib_flag = "-ldnnl"
    elif (libdir / "libdnnl.so.3").exists():
        lib_flag = "-l:libdnnl.so.3"
    else:
        raise RuntimeError(
            f"oneDNN library not found ({libdir}/libdnnl.so.3); install it with "
            "`pip install onednn-cpu-gomp==2023.2.0` (or `pip install jrnn[onednn]`)")
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise RuntimeError(f"no C++ compiler: {cxx!r} is not on PATH (set $CXX)")
    includes = [jax.ffi.include_dir(), str(prefix / "include")]
    links = [f"-L{libdir}", lib_flag, f"-Wl,-rpath,{libdir}"]
    return cxx, includes, links


def build(force: bool = False) -> Path:
    """Compile the extension into the cache directory (if not there yet); returns its path.

    Raises ``RuntimeError`` when oneDNN or a compiler is missing or the compile fails.
    """
    out = library_path()
    if out.is_file() and not force:
        return out
    cxx, includes, links = _find_inputs()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [cxx, "-O2", "-shared", "-fPIC", "-std=c++17", "-w",
           *(f"-I{d}" for d in includes), str(_SOURCE), "-o", tmp, *links]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"compiling the oneDNN extension failed:\n{' '.join(cmd)}\n"
                               f"{res.stderr[-4000:]}")
        os.replace(tmp, out)  # atomic: concurrent builders (test workers) do not clash
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _load():
    """Build (once), load and register the targets; returns the ``ctypes.CDLL`` or raises."""
    with _lock:
        if "lib" in _state:
            return _state["lib"]
        if "error" in _state:
            raise RuntimeError(_state["error"])
        try:
            path = build()
            lib = ctypes.CDLL(str(path))
            lib.jrnn_onednn_workspace_size.restype = ctypes.c_int64
            lib.jrnn_onednn_workspace_size.argtypes = [ctypes.c_int64] * 6 + [
                ctypes.c_char_p, ctypes.c_int64]
            lib.jrnn_onednn_version.restype = ctypes.c_char_p
            for name, sym in _TARGETS.items():
                jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, sym)),
                                            platform="cpu")
        except (RuntimeError, OSError, AttributeError) as e:
            _state["error"] = str(e)
            raise RuntimeError(str(e)) from None
        _state["lib"], _state["path"] = lib, path
        return lib


def available() -> bool:
    """Whether oneDNN's RNN primitives can run (builds the extension on first call)."""
    try:
        _load()
        return True
    except RuntimeError:
        return False


def unavailable_reason() -> str:
    """Why :func:`available` is ``False`` (``""`` when it is ``True``)."""
    try:
        _load()
        return ""
    except RuntimeError as e:
        return str(e)


def _workspace_bytes(kind: int, T: int, B: int, C: int, H: int, reverse: bool) -> int:
    lib = _load()
    err = ctypes.create_string_buffer(512)
    n = lib.jrnn_onednn_workspace_size(kind, T, B, C, H, int(reverse), err, 512)
    if n < 0:
        raise RuntimeError(f"oneDNN refused the recurrence: {err.value.decode()}")
    return int(n)


# ----------------------------------------------------------------------------
# the raw recurrence in oneDNN's layout, with its VJP

def _fwd_call(kind, reverse, x, h0, c0, wl, wi, b):
    T, B, C = x.shape
    H = h0.shape[-1]
    ws = jax.ShapeDtypeStruct((_workspace_bytes(kind, T, B, C, H, reverse),), jnp.uint8)
    f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
    rev = np.int64(reverse)
    if kind == _KINDS["lstm"]:
        hs, hT, cT, w = jax.ffi.ffi_call(
            "jrnn_onednn_lstm_fwd", (f32(T, B, H), f32(B, H), f32(B, H), ws),
            vmap_method="sequential")(x, h0, c0, wl, wi, b, reverse=rev)
        return (hs, hT, cT), w
    hs, hT, w = jax.ffi.ffi_call(
        "jrnn_onednn_fwd", (f32(T, B, H), f32(B, H), ws),
        vmap_method="sequential")(x, h0, wl, wi, b, kind=np.int64(kind), reverse=rev)
    return (hs, hT, None), w


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _rnn(kind, reverse, x, h0, c0, wl, wi, b):
    return _fwd_call(kind, reverse, x, h0, c0, wl, wi, b)[0]


def _rnn_fwd(kind, reverse, x, h0, c0, wl, wi, b):
    outs, ws = _fwd_call(kind, reverse, x, h0, c0, wl, wi, b)
    return outs, (x, h0, c0, wl, wi, b, outs, ws)


def _rnn_bwd(kind, reverse, res, cts):
    x, h0, c0, wl, wi, b, (hs, hT, cT), ws = res
    dhs, dhT, dcT = cts
    shapes = tuple(jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in (x, h0))
    wshapes = tuple(jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in (wl, wi, b))
    rev = np.int64(reverse)
    if kind == _KINDS["lstm"]:
        dx, dh0, dc0, dwl, dwi, db = jax.ffi.ffi_call(
            "jrnn_onednn_lstm_bwd", (*shapes, shapes[1], *wshapes), vmap_method="sequential")(
                x, h0, c0, wl, wi, b, hs, hT, cT, ws, dhs, dhT, dcT, reverse=rev)
    else:
        dx, dh0, dwl, dwi, db = jax.ffi.ffi_call(
            "jrnn_onednn_bwd", (*shapes, *wshapes), vmap_method="sequential")(
                x, h0, wl, wi, b, hs, hT, ws, dhs, dhT, kind=np.int64(kind), reverse=rev)
        dc0 = None
    return dx, dh0, dc0, dwl, dwi, db


_rnn.defvjp(_rnn_fwd, _rnn_bwd)


# ----------------------------------------------------------------------------
# jrnn's cells <-> oneDNN's layout

def _gru_swap(a, H):
    """jrnn ``(r, z, n)`` <-> oneDNN ``(u=z, r, o=n)`` along the last axis (an involution)."""
    return jnp.concatenate([a[..., H:2 * H], a[..., :H], a[..., 2 * H:]], axis=-1)


def _to_onednn(name, params, H):
    """``(weights_layer [C, G*H], weights_iter [H, G*H], bias [Gb*H])`` from jrnn's params."""
    if name == "rnn":
        return params["W_xh"], params["W_hh"], params["b_h"]
    if name == "lstm":  # oneDNN (i, f, c~, o) == jrnn (i, f, g, o)
        return params["W_x"], params["W_h"], params["b"]
    return (_gru_swap(params["W_x"], H), _gru_swap(params["W_h"], H),
            jnp.concatenate([_gru_swap(params["b_x"], H), params["b_hn"]]))


_PARAM_KEYS = {"rnn": {"W_xh", "W_hh", "b_h"}, "lstm": {"W_x", "W_h", "b"},
               "gru": {"W_x", "W_h", "b_x", "b_hn"}}


def _refuse(msg):
    raise ValueError(f"jrnn.onednn.recurrence: {msg}")


def _inputs(xs, V: int, check_ids: bool = True):
    """``xs`` as oneDNN's ``src_layer`` ``[T, B, V]`` float32 (token ids one-hot encoded)."""
    xs_dt = jnp.result_type(xs)
    if jnp.issubdtype(xs_dt, jnp.integer):
        if jnp.ndim(xs) != 2:
            _refuse(f"token ids must be [T, B] (one batch dim), got shape {jnp.shape(xs)}")
        from . import validation
        if check_ids:  # jrnn.unroll checked them already at its boundary
            validation.check_ids("xs", xs, V)
        x = jax.nn.one_hot(xs, V, dtype=jnp.float32)
    elif jnp.issubdtype(xs_dt, jnp.floating):
        if xs_dt == jnp.float64:
            _refuse("float64 inputs are not supported (oneDNN's RNN primitives here are f32)")
        if jnp.ndim(xs) != 3:
            _refuse(f"xs must be time-major [T, B, D] with exactly one batch dim, got shape "
                    f"{jnp.shape(xs)}")
        if xs.shape[-1] != V:
            _refuse(f"xs has width {xs.shape[-1]} but the cell was initialised for "
                    f"input_size={V}")
        x = jnp.asarray(xs, jnp.float32)
    else:
        _refuse(f"xs must be float or int token ids, got dtype {xs_dt}")
    T, B = x.shape[0], x.shape[1]
    if T < 1 or B < 1:
        _refuse(f"need at least one step and one sequence, got T={T}, B={B}")
    return x


def _initial(name: str, carry, B: int, H: int):
    """``(h0, c0)`` ``[B, H]`` float32 from jrnn's carry (``c0`` ``None`` but for the LSTM)."""
    from .cells import LSTMState  # local: keeps this module importable on its own

    if carry is None:
        h0 = jnp.zeros((B, H), jnp.float32)
        c0 = jnp.zeros((B, H), jnp.float32) if name == "lstm" else None
    elif name == "lstm":
        if not isinstance(carry, LSTMState):
            _refuse("the LSTM carry must be a jrnn.LSTMState(h=..., c=...)")
        h0, c0 = carry.h, carry.c
    else:
        h0, c0 = carry, None
    for what, a in (("carry.h" if name == "lstm" else "carry", h0), ("carry.c", c0)):
        if a is None:
            continue
        if jnp.result_type(a) != jnp.float32:
            _refuse(f"{what} must be float32, got {jnp.result_type(a)}")
        if jnp.shape(a) != (B, H):
            _refuse(f"{what} must have shape {(B, H)} (batch shape (B,)), got {jnp.shape(a)}")
    return h0, c0


def recurrence(cell, params, xs, carry=None, *, reverse: bool = False, lengths=None,
               _ids_checked: bool = False):
    """Run ``cell`` over ``xs`` with oneDNN's fused RNN primitive; ``jax.grad`` works through it.

    The same values and gradients as ``jrnn.unroll(cell, params, xs, carry, reverse=reverse)``
    (float32 rounding aside), for the built-in cells only.

    Args:
      cell: :func:`jrnn.elman` with tanh (name ``"rnn"``), :func:`jrnn.lstm` or
        :func:`jrnn.gru` (no layer norm, not a stack).
      params: the cell's params (float32).
      xs: time-major inputs ``[T, B, D]`` (float32; float16/bfloat16 are cast
        exactly) or int token ids ``[T, B]`` (one-hot encoded to ``[T, B, V]``,
        ``V`` the input matrix's rows).
      carry: initial carry with batch shape ``(B,)`` (:class:`jrnn.LSTMState`
        for the LSTM); zeros if ``None``.
      reverse: run from the last step to the first (oneDNN's ``right2left``);
        outputs stay in input order, as ``jrnn.unroll``'s.
      lengths: not supported (refused unless ``None``).
      _ids_checked: internal (``jrnn.kernels``): the caller has range-checked the token ids.

    Returns:
      ``(hs [T, B, H], final_carry)``, the carry in jrnn's format.

    Raises:
      ValueError: an unsupported cell, params, dtype, shape or option.
      RuntimeError: oneDNN is not available (:func:`unavailable_reason`).
    """
    from .cells import LSTMState  # local: keeps this module importable on its own

    name = getattr(cell, "name", None)
    if getattr(cell, "layers", None):
        _refuse(f"stacks are not supported (cell {name!r} has {len(cell.layers)} layers); "
                "run one recurrence per layer")
    if name not in _KINDS:
        _refuse(f"cell {name!r} is not supported; only jrnn.elman (tanh, 'rnn'), jrnn.lstm "
                "('lstm') and jrnn.gru ('gru') without layer norm are")
    if lengths is not None:
        _refuse("lengths are not supported (pad-free sequences only)")
    if not isinstance(params, dict) or set(params) != _PARAM_KEYS[name]:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        _refuse(f"params for {name!r} must have keys {sorted(_PARAM_KEYS[name])}, got {got}")
    for k, v in params.items():
        if jnp.result_type(v) != jnp.float32:
            _refuse(f"params must be float32 (oneDNN f32 primitives); {k} is "
                    f"{jnp.result_type(v)}")
    H = cell.hidden_size
    wx = params["W_xh" if name == "rnn" else "W_x"]
    G = _GATES[name]
    if wx.ndim != 2 or wx.shape[1] != G * H:
        _refuse(f"input matrix has shape {wx.shape}, expected [D, {G * H}]")
    V = wx.shape[0]

    x = _inputs(xs, V, check_ids=not _ids_checked)
    h0, c0 = _initial(name, carry, x.shape[1], H)
    wl, wi, b = _to_onednn(name, params, H)
    hs, hT, cT = _rnn(_KINDS[name], bool(reverse), x, h0, c0, wl, wi, b)
    final = LSTMState(h=hT, c=cT) if name == "lstm" else hT
    return hs, final


def _omp_threads() -> int | None:
    try:
        gomp = ctypes.CDLL("libgomp.so.1")
        return int(gomp.omp_get_max_threads())
    except (OSError, AttributeError):
        return None


def main() -> int:
    """``python -m jrnn.onednn``: build (if needed) and print where the extension is."""
    t0 = time.perf_counter()
    try:
        path = build()
    except RuntimeError as e:
        print(f"jrnn.onednn: unavailable: {e}", file=sys.stderr)
        return 1
    dt = time.perf_counter() - t0
    if not available():
        print(f"jrnn.onednn: built {path} but it does not load: {unavailable_reason()}",
              file=sys.stderr)
        return 1
    ver = _state["lib"].jrnn_onednn_version().decode()
    print(f"jrnn.onednn: {path} (oneDNN {ver}, {dt:.1f} s, OpenMP threads "
          f"{_omp_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
