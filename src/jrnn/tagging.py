"""Aligned sequence to sequence with a bidirectional stack (Goodfellow 10.3): per-step tagging.

Each position's label may depend on the whole sequence, past and future: a
bidirectional layer joins a forward pass (``h^f_t`` after ``x_1..x_t``) and a
backward pass (``h^b_t`` after ``x_T..x_t``, each sequence reversed within its
own length) by :func:`jrnn.scan.bidirectional`; layer ``l + 1`` reads layer
``l``'s ``[h^f_t, h^b_t]``; a dense head maps the top layer to tag logits.

A bidirectional net is not causal, so it has no step to unroll: as a
:class:`~jrnn.models.Model` (:func:`tagger_model`) it is a whole-sequence
model (``Model.forward``), trained by ``jrnn.fit`` with full BPTT (or ES);
truncation, checkpointing, PES and the online estimators refuse it (the
output at step ``t`` needs inputs after ``t``). :class:`Tagger` holds the
same pure functions for use outside the loop.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from . import scan, validation
from .cells import Cell
from .data.batches import Batch
from .models import Model, _float_dtype, loss_weights

__all__ = ["Tagger", "bidirectional_tagger", "tagger_model"]


class Tagger(NamedTuple):
    """A bidirectional tagger: pure functions over a params pytree.

    Attributes:
      init: ``key -> {"layers": ((fwd, bwd), ...), "head": {...}}``.
      apply: ``(params, ids [T, B], lengths [B]) -> logits [T, B, C]``; padded
        positions (``t >= lengths[b]``) hold the head's bias only and never
        influence the real ones.
      loss: ``(params, batch, lengths) -> mean cross-entropy`` over
        ``batch.mask`` (``batch.targets`` int tags ``[T, B]``).
      vocab_size, num_tags: ``V`` and ``C``.
    """

    init: Callable
    apply: Callable
    loss: Callable
    vocab_size: int
    num_tags: int
    features: Callable  # (layer params, ids [T, B], lengths [B]) -> top layer [T, B, width]


def bidirectional_tagger(layers, vocab_size: int, num_tags: int) -> Tagger:
    """Build a bidirectional stack over token ids with a per-step softmax head.

    Args:
      layers: a sequence of ``(forward, backward)`` cell pairs, bottom first
        (e.g. ``[(jrnn.gru(32), jrnn.gru(32))] * 2``; equal cells get their own params).
      vocab_size: ``V``, the input ids' range.
      num_tags: ``C``.
    """
    layers = tuple(tuple(pair) for pair in layers)
    if not layers or not all(len(p) == 2 and all(isinstance(c, Cell) for c in p) for p in layers):
        raise TypeError("layers must be a non-empty sequence of (forward, backward) Cell pairs")
    V = validation.check_int("vocab_size", vocab_size)
    C = validation.check_int("num_tags", num_tags)
    width = layers[-1][0].hidden_size + layers[-1][1].hidden_size

    def init(key):
        keys = jax.random.split(key, 2 * len(layers) + 1)
        ps, d = [], V
        for i, (f, b) in enumerate(layers):
            ps.append((f.init(keys[2 * i], d), b.init(keys[2 * i + 1], d)))
            d = f.hidden_size + b.hidden_size
        dt = _float_dtype(ps)
        s = 1.0 / jnp.sqrt(width)
        head = {"W_hq": jax.random.uniform(keys[-1], (width, C), dt, -s, s),
                "b_q": jnp.zeros((C,), dt)}
        return {"layers": tuple(ps), "head": head}

    def features(layer_params, ids, lengths):  # [T, B, width]
        x = ids
        for (f, b), p in zip(layers, layer_params):
            x, _ = scan.bidirectional(f, b, p, x, lengths=lengths)
        return x

    def apply(params, ids, lengths):
        validation.check_ids("ids", ids, V)
        return features(params["layers"], ids, lengths) @ params["head"]["W_hq"] + params["head"]["b_q"]

    def loss(params, batch: Batch, lengths):
        logits = apply(params, batch.inputs, lengths)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch.targets)
        return jnp.sum(ce * loss_weights(batch))

    return Tagger(init, apply, loss, V, C, features)


def tagger_model(layers, vocab_size: int, num_tags: int) -> Model:
    """The bidirectional tagger as a whole-sequence :class:`~jrnn.models.Model` for ``jrnn.fit``.

    Params ``{"cell": {"layers": ...}, "head": {...}}`` (the :class:`Tagger`'s
    layers and head); ``batch.lengths`` ``[B]`` gives each sequence's real length
    (default ``T``), ``batch.mask`` weights the loss. Its ``cell`` only describes
    the model to the checks (no step: calling one is an error); the carry is a
    ``[B, 1]`` placeholder that passes through unchanged.

    Args: as :func:`bidirectional_tagger`.
    """
    tg = bidirectional_tagger(layers, vocab_size, num_tags)
    top = tuple(tuple(p) for p in layers)[-1]
    width = top[0].hidden_size + top[1].hidden_size
    name = "bi-" + "-".join(f.name for f, _ in tuple(tuple(p) for p in layers))

    def no_step(*_):
        raise TypeError(f"{name} is a bidirectional tagger: a whole-sequence model with no causal "
                        "step (the output at t reads inputs after t); train it with full BPTT")

    def cell_init(key, input_size):
        return {"layers": tg.init(key)["layers"]}

    cell = Cell(cell_init, lambda batch_shape=(): jnp.zeros(tuple(batch_shape) + (1,)), no_step,
                no_step, width, name)

    def init(key):
        p = tg.init(key)
        return {"cell": {"layers": p["layers"]}, "head": p["head"]}

    def head(p, h):
        return h @ p["W_hq"] + p["b_q"]

    def forward(cell_params, batch: Batch):
        T, B = jnp.shape(batch.inputs)[:2]
        lengths = jnp.full((B,), T, jnp.int32) if batch.lengths is None else jnp.asarray(batch.lengths)
        return tg.features(cell_params["layers"], batch.inputs, lengths)

    return Model(cell, init, head, optax.softmax_cross_entropy_with_integer_labels, tg.vocab_size,
                 True, True, forward=forward)
