"""Weights from and to ``torch.nn.RNN`` / ``LSTM`` / ``GRU``: :func:`from_torch`, :func:`to_torch`.

jrnn's layout (``jrnn.cells``): ``x @ W_x`` with ``W_x = weight_ih.T`` ``[D, G*H]``,
``W_h = weight_hh.T`` ``[H, G*H]``, gates fused in torch's order (LSTM
``i, f, g, o``; GRU ``r, z, n``). torch's two biases add, except GRU's
``bias_hh_n``, which the reset gate multiplies (``b_hn``).

torch's names: ``weight_ih_l{layer}{suffix}`` etc., ``suffix`` ``""`` for the
forward direction and ``"_reverse"`` for the backward one of a bidirectional
module. A stacked module's layers map to :func:`jrnn.stack` params (a tuple,
bottom first); a bidirectional one maps to :func:`jrnn.bidirectional` params,
one direction per call (layer ``l > 0`` of a bidirectional module reads both
directions of layer ``l - 1``, ``D = 2 * H``).

torch is imported only by :func:`to_torch` (for tensors): tensors are read
through ``.detach()`` / ``.cpu()`` / ``numpy``, so NumPy arrays work as well.

Flax and Equinox adapters live in :mod:`jrnn.interop_flax` and
:mod:`jrnn.interop_eqx`.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = ["DIRECTIONS", "KINDS", "from_torch", "to_torch"]

KINDS = ("rnn", "rnn-relu", "lstm", "gru")  # the cell registry's names (jrnn.cells.CELLS)
_GATES = {"rnn": 1, "rnn-relu": 1, "lstm": 4, "gru": 3}
DIRECTIONS = {"forward": "", "reverse": "_reverse"}  # direction -> torch name suffix


def _array(v) -> np.ndarray:
    """A torch tensor (even one that requires grad, or on a GPU) or an array -> NumPy."""
    if hasattr(v, "detach"):  # torch.Tensor
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def _check_kind(kind: str) -> None:
    if kind not in _GATES:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")


def _suffix(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    return DIRECTIONS[direction]


def _num_layers(sd: dict, sfx: str) -> int:
    """How many layers ``weight_ih_l0{sfx}``, ``weight_ih_l1{sfx}``, ... the dict holds."""
    n = 0
    while f"weight_ih_l{n}{sfx}" in sd:
        n += 1
    return n


def from_torch(kind: str, state_dict, layer: int | tuple | list | None = 0, *,
               direction: str = "forward"):
    """Convert ``torch.nn.RNN/LSTM/GRU`` weights to jrnn params.

    Args:
      kind: the cell's registry name: ``"rnn"`` / ``"rnn-relu"`` (both give
        :func:`~jrnn.cells.elman` params), ``"lstm"`` or ``"gru"``.
      state_dict: ``module.state_dict()``, ``module.named_parameters()``, the
        module itself, or a dict of NumPy arrays: maps ``weight_ih_l{layer}``
        ``[G*H, D]``, ``weight_hh_l{layer}`` ``[G*H, H]`` and (unless the module
        was built with ``bias=False``, then they are zeros)
        ``bias_ih_l{layer}``, ``bias_hh_l{layer}`` ``[G*H]`` (with the suffix
        ``_reverse`` for ``direction="reverse"``).
      layer: which layer to take (``0`` is the bottom one) -> one cell's dict;
        a sequence of layers, or ``None`` for all of them -> the params of
        ``jrnn.stack([cell] * n)``: a tuple bottom first (a dict if ``n == 1``,
        as :func:`jrnn.stack` returns a single cell unchanged).
      direction: ``"forward"``, or ``"reverse"`` for the backward direction of
        a ``bidirectional=True`` module (the second params of
        :func:`jrnn.bidirectional`).

    Returns:
      The params of the cell named ``kind`` (input size ``D``, hidden size
      ``H``), or a tuple of them (see ``layer``).

    Raises:
      ValueError: an unknown ``kind`` or ``direction``, a missing layer or
        direction, weights whose shapes do not fit ``kind``, or a projected LSTM
        (``proj_size > 0``).
    """
    _check_kind(kind)
    sfx = _suffix(direction)
    if hasattr(state_dict, "state_dict"):  # the module itself
        state_dict = state_dict.state_dict()
    sd = dict(state_dict)  # a dict, or (name, tensor) pairs from named_parameters()
    if layer is None or isinstance(layer, (tuple, list)):
        layers = range(_num_layers(sd, sfx)) if layer is None else layer
        if not layers:
            raise ValueError(f"state_dict has no weight_ih_l0{sfx}; it has {sorted(sd)}")
        params = tuple(_layer_from_torch(kind, sd, l, sfx) for l in layers)
        return params[0] if len(params) == 1 else params
    return _layer_from_torch(kind, sd, layer, sfx)


def _layer_from_torch(kind: str, sd: dict, layer: int, sfx: str) -> dict:
    """One layer and direction of a state dict -> one cell's params."""
    key = lambda n: f"{n}_l{layer}{sfx}"
    if key("weight_hr") in sd:
        raise ValueError("from_torch does not support LSTMs with proj_size > 0 (weight_hr)")
    missing = [key(n) for n in ("weight_ih", "weight_hh") if key(n) not in sd]
    if missing:
        raise ValueError(f"state_dict has no {', '.join(missing)} (layer {layer}); it has "
                         f"{sorted(sd)}")
    w_ih, w_hh = _array(sd[key("weight_ih")]), _array(sd[key("weight_hh")])
    G, H = _GATES[kind], w_hh.shape[-1]
    if w_hh.shape != (G * H, H) or w_ih.ndim != 2 or w_ih.shape[0] != G * H:
        raise ValueError(f"{kind!r} weights are weight_ih [{G}*H, D], weight_hh [{G}*H, H]; got "
                         f"{w_ih.shape} and {w_hh.shape}")
    zeros = np.zeros((G * H,), w_hh.dtype)  # bias=False: torch adds no bias at all
    b_ih = _array(sd[key("bias_ih")]) if key("bias_ih") in sd else zeros
    b_hh = _array(sd[key("bias_hh")]) if key("bias_hh") in sd else zeros
    w_x, w_h = jnp.asarray(w_ih.T), jnp.asarray(w_hh.T)
    if kind in ("rnn", "rnn-relu"):
        return {"W_xh": w_x, "W_hh": w_h, "b_h": jnp.asarray(b_ih + b_hh)}
    if kind == "lstm":
        return {"W_x": w_x, "W_h": w_h, "b": jnp.asarray(b_ih + b_hh)}
    b_x = b_ih + np.concatenate([b_hh[:2 * H], np.zeros((H,), b_hh.dtype)])
    return {"W_x": w_x, "W_h": w_h, "b_x": jnp.asarray(b_x), "b_hn": jnp.asarray(b_hh[2 * H:])}


_NAMES = {"rnn": ("W_xh", "W_hh", "b_h"), "rnn-relu": ("W_xh", "W_hh", "b_h"),
          "lstm": ("W_x", "W_h", "b"), "gru": ("W_x", "W_h", "b_x")}


def to_torch(kind: str, params, layer: int = 0, *, direction: str = "forward",
             bias: bool = True, tensors: bool = True) -> dict:
    """Export jrnn params as (part of) a ``torch.nn.RNN/LSTM/GRU`` state dict.

    torch has two biases where jrnn has one: the combined bias goes to
    ``bias_ih`` and zeros to ``bias_hh``, except GRU's ``b_hn`` (inside the
    reset product), which goes to the ``n`` block of ``bias_hh``. So
    ``from_torch(kind, to_torch(kind, p)) == p`` exactly.

    Merge the dicts of several calls for a bidirectional module::

        sd = to_torch("lstm", p_fwd) | to_torch("lstm", p_bwd, direction="reverse")
        torch.nn.LSTM(D, H, bidirectional=True).load_state_dict(sd)

    Args:
      kind: ``"rnn"``, ``"rnn-relu"``, ``"lstm"`` or ``"gru"``.
      params: one cell's params (float inputs: ``W_x`` ``[D, G*H]``), or a
        tuple of them (:func:`jrnn.stack` params) -> layers ``layer``,
        ``layer + 1``, ...
      layer: the torch layer index of the (first) params.
      direction: ``"forward"`` or ``"reverse"`` (names get ``_reverse``).
      bias: ``False`` for a module built with ``bias=False``: no bias entries
        (then the params' biases must be zero).
      tensors: ``True`` gives ``torch.Tensor`` values (imports torch, which
        ``load_state_dict`` needs); ``False`` gives NumPy arrays.

    Returns:
      ``{"weight_ih_l{layer}{sfx}": [G*H, D], "weight_hh_l{layer}{sfx}": [G*H, H],
      "bias_ih_l{layer}{sfx}": [G*H], "bias_hh_l{layer}{sfx}": [G*H], ...}``.

    Raises:
      ValueError: an unknown ``kind`` or ``direction``, params of another
        kind, or nonzero biases with ``bias=False``.
    """
    _check_kind(kind)
    sfx = _suffix(direction)
    layers = params if isinstance(params, (tuple, list)) else (params,)
    sd = {}
    for i, p in enumerate(layers):
        sd.update(_layer_to_torch(kind, p, f"_l{layer + i}{sfx}", bias))
    return _as_tensors(sd) if tensors else sd


def _layer_to_torch(kind: str, params, name_sfx: str, bias: bool) -> dict:
    """One cell's params -> torch's four entries, names ending in ``name_sfx``."""
    wx, wh, b = _NAMES[kind]
    if not isinstance(params, dict) or set(_NAMES[kind]) - set(params):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{kind!r} params need {', '.join(_NAMES[kind])}"
                         f"{' and b_hn' if kind == 'gru' else ''}; got {got}")
    extra = set(params) - set(_NAMES[kind]) - ({"b_hn"} if kind == "gru" else set())
    if extra:  # e.g. a layer-normalised cell's gains: torch's modules have nothing to hold them
        raise ValueError(f"{kind!r} params have entries torch.nn's {kind} has no place for: "
                         f"{sorted(extra)} (a layer-normalised cell cannot be exported)")
    w_x, w_h, b_ih = (np.asarray(params[k]) for k in (wx, wh, b))
    b_hh = np.zeros_like(b_ih)
    if kind == "gru":
        H = w_h.shape[0]
        b_hh[2 * H:] = np.asarray(params["b_hn"])
    sd = {f"weight_ih{name_sfx}": w_x.T, f"weight_hh{name_sfx}": w_h.T}
    if bias:
        return sd | {f"bias_ih{name_sfx}": b_ih, f"bias_hh{name_sfx}": b_hh}
    if np.any(b_ih) or np.any(b_hh):
        raise ValueError(f"bias=False, but the {kind!r} params have nonzero biases")
    return sd


def _as_tensors(sd: dict) -> dict:
    try:
        import torch
    except ImportError as e:
        raise ImportError("to_torch(..., tensors=True) needs torch; pass tensors=False for "
                          "NumPy arrays") from e
    return {k: torch.from_numpy(np.array(v, order="C")) for k, v in sd.items()}  # writable copies
