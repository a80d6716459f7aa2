"""Weights from other frameworks: ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` -> jrnn params.

jrnn's layout (``jrnn.cells``): ``x @ W_x`` with ``W_x = weight_ih.T`` ``[D, G*H]``,
``W_h = weight_hh.T`` ``[H, G*H]``, gates fused in torch's order (LSTM
``i, f, g, o``; GRU ``r, z, n``). torch's two biases add, except GRU's
``bias_hh_n``, which the reset gate multiplies (``b_hn``).

torch is not imported here: tensors are read through ``.detach()`` /
``.cpu()`` / ``numpy``, so NumPy arrays work as well.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = ["from_torch", "KINDS"]

KINDS = ("rnn", "rnn-relu", "lstm", "gru")  # the cell registry's names (jrnn.cells.CELLS)
_GATES = {"rnn": 1, "rnn-relu": 1, "lstm": 4, "gru": 3}


def _array(v) -> np.ndarray:
    """A torch tensor (even one that requires grad, or on a GPU) or an array -> NumPy."""
    if hasattr(v, "detach"):  # torch.Tensor
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def from_torch(kind: str, state_dict, layer: int = 0) -> dict:
    """Convert one layer of ``torch.nn.RNN/LSTM/GRU`` weights to jrnn params.

    Args:
      kind: the cell's registry name: ``"rnn"`` / ``"rnn-relu"`` (both give
        :func:`~jrnn.cells.elman` params), ``"lstm"`` or ``"gru"``.
      state_dict: ``module.state_dict()``, ``module.named_parameters()``, the
        module itself, or a dict of NumPy arrays: maps ``weight_ih_l{layer}``
        ``[G*H, D]``, ``weight_hh_l{layer}`` ``[G*H, H]`` and (unless the module
        was built with ``bias=False``, then they are zeros)
        ``bias_ih_l{layer}``, ``bias_hh_l{layer}`` ``[G*H]``.
      layer: which layer to take (``0`` is the bottom one).

    Returns:
      The params dict of the cell named ``kind`` (input size ``D``, hidden size ``H``).

    Raises:
      ValueError: an unknown ``kind``, a missing layer, weights whose shapes do
        not fit ``kind``, or a projected LSTM (``proj_size > 0``).
    """
    if kind not in _GATES:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if hasattr(state_dict, "state_dict"):  # the module itself
        state_dict = state_dict.state_dict()
    sd = dict(state_dict)  # a dict, or (name, tensor) pairs from named_parameters()
    key = lambda n: f"{n}_l{layer}"
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
