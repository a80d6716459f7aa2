"""Small models on top of a cell: a readout ("head") and a per-position loss.

A :class:`Model` is what the gradient estimators and the train step consume.
Its params are ``{"cell": cell_params, "head": head_params}``; the head has the
dtype of the cell's params. Its loss is defined per position, so online
estimators (RTRL, UORO, SnAp) can take it one step at a time, while BPTT takes
it over the whole sequence at once.

A batch is a :class:`Batch` of time-major arrays: ``inputs`` ``[T, B, D]`` or
ids ``[T, B]``, ``targets`` ``[T, B]`` (integer labels) or ``[T, B, O]``
(floats), optional ``mask`` ``[T, B]`` (weights of each position in the loss;
e.g. 1 only at the last step for a sequence-to-one classifier) and optional
``resets`` ``[T, B]`` bool (episodes packed into one stream: the carry entering
a step where it is true is reset to the cell's initial carry, so neither
values nor gradients cross it; :func:`sequence_loss` and every estimator
honour it).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from . import scan, validation
from .cells import Cell
from .data.batches import Batch

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
      labels: ``True``: targets are integer labels ``[T, B]`` in ``[0, O)``;
        ``False``: float targets ``[T, B, O]``; ``None``: not declared (only
        the leading ``[T, B]`` is checked).
      regularise: ``None``, or ``(key, batch) -> (transform, model')``: what
        the train step trains with (:mod:`jrnn.regularise`: masks sampled from
        the key, a params transform whose gradient is mapped back, a model with
        the masks inside); evaluation uses the model itself.
      forward: ``None`` (a causal model: the estimators unroll ``cell``), or
        ``(cell_params, batch) -> features [T, B, H]`` for a whole-sequence,
        non-causal model (a bidirectional stack, :func:`jrnn.tagging.tagger_model`):
        the head and loss apply to its features and the carry passes through
        unchanged. Full BPTT and ES train it; truncation, checkpointing, PES
        and the online estimators need a causal carry and refuse it.
    """

    cell: Cell
    init: Callable
    head: Callable
    loss: Callable
    input_size: int
    tokens: bool
    labels: bool | None = None
    regularise: Callable | None = None
    forward: Callable | None = None


def _float_dtype(tree):
    """The dtype of the first float leaf of ``tree`` (float32 if none)."""
    for a in jax.tree.leaves(tree):
        if jnp.issubdtype(a.dtype, jnp.floating):
            return a.dtype
    return jnp.float32


def _dense_head(cell: Cell, input_size: int, out: int, loss, tokens: bool, labels: bool) -> Model:
    input_size = validation.check_int("input size", input_size)
    out = validation.check_int("output size", out)

    def init(key):
        kc, kh = jax.random.split(key)
        H = cell.hidden_size
        p = cell.init(kc, input_size)
        dt = _float_dtype(p)  # the head follows the cell's dtype
        s = 1.0 / jnp.sqrt(H)
        return {"cell": p, "head": {"W_hq": jax.random.uniform(kh, (H, out), dt, -s, s),
                                    "b_q": jnp.zeros((out,), dt)}}

    def head(p, h):
        return h @ p["W_hq"] + p["b_q"]

    return Model(cell, init, head, loss, input_size, tokens, labels)


def language_model(cell: Cell, vocab_size: int) -> Model:
    """Next-token model (d2l 8.5): token ids ``[T, B]`` in, logits ``[T, B, V]`` out.

    The input "one-hot" product is a row gather inside ``cell.project``; the
    loss is softmax cross-entropy (``optax.softmax_cross_entropy_with_integer_labels``)
    on integer targets ``[T, B]``.
    """
    return _dense_head(cell, vocab_size, vocab_size,
                       optax.softmax_cross_entropy_with_integer_labels, tokens=True, labels=True)


def classifier(cell: Cell, input_size: int, num_classes: int, tokens: bool = False) -> Model:
    """Per-position classifier (integer labels ``[T, B]``); with a mask on the last step it is
    sequence-to-one. Inputs are floats ``[T, B, D]``, or token ids ``[T, B]`` if ``tokens``."""
    return _dense_head(cell, input_size, num_classes,
                       optax.softmax_cross_entropy_with_integer_labels, tokens=tokens, labels=True)


def regressor(cell: Cell, input_size: int, output_size: int) -> Model:
    """Per-position regression (floats ``[T, B, D]`` -> ``[T, B, O]``), half squared error
    summed over outputs."""
    return _dense_head(cell, input_size, output_size,
                       lambda o, y: 0.5 * jnp.sum((o - y) ** 2, axis=-1), tokens=False, labels=False)


def loss_weights(batch: Batch):
    """Per-position weights ``[T, B]`` normalised to sum to one (mean loss)."""
    shape = jnp.shape(batch.inputs)[:2]
    w = jnp.ones(shape, jnp.float32) if batch.mask is None else jnp.asarray(batch.mask, jnp.float32)
    return w / jnp.maximum(w.sum(), 1.0)


def sequence_loss(model: Model, params, carry, batch: Batch, **unroll_kwargs):
    """Mean loss over the batch's (masked) positions, by unrolling the whole sequence.

    Validates the batch (:func:`jrnn.validation.check_batch`: layout, dtypes,
    token ids and labels in range when concrete) and the params first.

    Args:
      model: the model.
      params: ``{"cell": ..., "head": ...}``.
      carry: the initial carry ``[B, ...]``.
      batch: a time-major :class:`Batch`.
      **unroll_kwargs: options of :func:`~jrnn.scan.unroll` (``lengths``,
        ``unroll``, ``remat_every``, ``carry_grad_scale``, ``step_mask``,
        ``reset_carry``, ...; the batch is time-major, so not ``time_major``;
        ``resets`` come from ``batch.resets``).

    Returns:
      ``(loss, final_carry)``.
    """
    validation.check_batch(model, batch)
    validation.check_model_params(model, params)
    if "resets" in unroll_kwargs:
        raise TypeError("sequence_loss takes resets from batch.resets, not as an unroll option")
    if model.forward is not None:
        if unroll_kwargs:
            raise ValueError(f"{WHOLE_SEQUENCE} takes no unroll options, got {sorted(unroll_kwargs)}")
        with validation._trusted():
            return _sequence_loss(model, params, carry, batch)
    xs, carry, opts = scan._validate(model.cell, params["cell"], batch.inputs, carry,
                                     resets=batch.resets, **unroll_kwargs)
    with validation._trusted():  # the ids were checked just above
        hs, carry = scan._unroll_unchecked(model.cell, params["cell"], xs, carry, opts)
    losses = model.loss(model.head(params["head"], hs), batch.targets)  # [T, B]
    return jnp.sum(losses * loss_weights(batch)), carry


WHOLE_SEQUENCE = "a whole-sequence model (Model.forward: its output at t reads inputs after t)"


def refuse_whole_sequence(model: Model, estimator: str) -> None:
    """Estimators that need a causal carry call this first."""
    if model.forward is not None:
        raise ValueError(f"{estimator} needs a causal carry, and this is {WHOLE_SEQUENCE}; "
                         "train it with full BPTT (--grad full) or es")


def _check_step_inputs(model: Model, params, carry, batch: Batch) -> None:
    """What an estimator's ``value_and_grad`` checks once: batch, params, the cell's carry."""
    validation.check_batch(model, batch)
    validation.check_model_params(model, params)
    validation.check_carry(model.cell, carry, tuple(jnp.shape(batch.inputs)[1:2]))


def _sequence_loss(model: Model, params, carry, batch: Batch, *, unroll: int = 1, gain=None):
    """:func:`sequence_loss` on validated arguments (estimators; ``gain``: ``carry_grad_scale``)."""
    if model.forward is not None:
        if gain is not None:
            raise ValueError(f"{WHOLE_SEQUENCE}: truncation scales the gradient of a causal "
                             "carry; train it with full BPTT")
        hs = model.forward(params["cell"], batch)  # [T, B, H]
        return jnp.sum(model.loss(model.head(params["head"], hs), batch.targets)
                       * loss_weights(batch)), carry
    resets = None if batch.resets is None else jnp.asarray(batch.resets)
    with validation._trusted():
        hs, carry = scan._unroll_unchecked(model.cell, params["cell"], batch.inputs, carry,
                                           scan._Options(unroll=unroll, gain=gain, resets=resets))
    losses = model.loss(model.head(params["head"], hs), batch.targets)  # [T, B]
    return jnp.sum(losses * loss_weights(batch)), carry
