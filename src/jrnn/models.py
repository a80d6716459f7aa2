"""Small models on top of a cell: a readout ("head") and a per-position loss.

A :class:`Model` is what the gradient estimators and the train step consume.
Its params are ``{"cell": cell_params, "head": head_params}``. Its loss is
defined per position, so online estimators (RTRL, UORO, SnAp) can take it one
step at a time, while BPTT takes it over the whole sequence at once.

A batch is a :class:`Batch` of time-major arrays: ``inputs`` ``[T, B, D]`` or
ids ``[T, B]``, ``targets`` ``[T, B, ...]``, optional ``mask`` ``[T, B]``
(weights of each position in the loss; e.g. 1 only at the last step for a
sequence-to-one classifier).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .cells import Cell
from .data.batches import Batch
from .scan import unroll

__all__ = ["Model", "Batch", "language_model", "regressor", "classifier", "sequence_loss"]


class Model(NamedTuple):
    """A cell, a readout and a loss.

    Attributes:
      cell: the recurrent cell.
      init: ``key -> {"cell": ..., "head": ...}``.
      head: ``(head_params, h[..., H]) -> outputs[..., O]``.
      loss: ``(outputs[..., O], targets[...]) -> losses[...]`` per position.
      input_size: ``D``, or the vocabulary size for token inputs.
      tokens: whether inputs are integer token ids.
    """

    cell: Cell
    init: Callable
    head: Callable
    loss: Callable
    input_size: int
    tokens: bool


def _dense_head(cell: Cell, input_size: int, out: int, loss, tokens: bool) -> Model:
    if not isinstance(out, int) or out < 1:
        raise ValueError(f"output size must be an integer >= 1, got {out!r}")

    def init(key):
        kc, kh = jax.random.split(key)
        H = cell.hidden_size
        s = 1.0 / jnp.sqrt(H)
        return {"cell": cell.init(kc, input_size),
                "head": {"W_hq": jax.random.uniform(kh, (H, out), jnp.float32, -s, s),
                         "b_q": jnp.zeros((out,), jnp.float32)}}

    def head(p, h):
        return h @ p["W_hq"] + p["b_q"]

    return Model(cell, init, head, loss, input_size, tokens)


def language_model(cell: Cell, vocab_size: int) -> Model:
    """Next-token model (d2l 8.5): token ids ``[T, B]`` in, logits ``[T, B, V]`` out.

    The input "one-hot" product is a row gather inside ``cell.project``; the
    loss is softmax cross-entropy (``optax.softmax_cross_entropy_with_integer_labels``).
    """
    return _dense_head(cell, vocab_size, vocab_size,
                       optax.softmax_cross_entropy_with_integer_labels, tokens=True)


def classifier(cell: Cell, input_size: int, num_classes: int, tokens: bool = False) -> Model:
    """Per-position classifier; with a mask on the last step it is sequence-to-one."""
    return _dense_head(cell, input_size, num_classes,
                       optax.softmax_cross_entropy_with_integer_labels, tokens=tokens)


def regressor(cell: Cell, input_size: int, output_size: int) -> Model:
    """Per-position regression with half squared error summed over outputs."""
    return _dense_head(cell, input_size, output_size,
                       lambda o, y: 0.5 * jnp.sum((o - y) ** 2, axis=-1), tokens=False)


def loss_weights(batch: Batch):
    """Per-position weights ``[T, B]`` normalised to sum to one (mean loss)."""
    shape = jnp.shape(batch.inputs)[:2]
    w = jnp.ones(shape, jnp.float32) if batch.mask is None else jnp.asarray(batch.mask, jnp.float32)
    return w / jnp.maximum(w.sum(), 1.0)


def sequence_loss(model: Model, params, carry, batch: Batch, **unroll_kwargs):
    """Mean loss over the batch's (masked) positions, by unrolling the whole sequence.

    Args:
      model: the model.
      params: ``{"cell": ..., "head": ...}``.
      carry: the initial carry ``[B, ...]``.
      batch: a time-major :class:`Batch`.
      **unroll_kwargs: passed to :func:`~jrnn.scan.unroll`.

    Returns:
      ``(loss, final_carry)``.
    """
    hs, carry = unroll(model.cell, params["cell"], batch.inputs, carry, **unroll_kwargs)
    losses = model.loss(model.head(params["head"], hs), batch.targets)  # [T, B]
    return jnp.sum(losses * loss_weights(batch)), carry
