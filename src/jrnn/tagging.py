"""Aligned sequence to sequence with a bidirectional stack (Goodfellow 10.3): per-step tagging.

Each position's label may depend on the whole sequence, past and future: a
bidirectional layer joins a forward pass (``h^f_t`` after ``x_1..x_t``) and a
backward pass (``h^b_t`` after ``x_T..x_t``, each sequence reversed within its
own length) by :func:`jrnn.scan.bidirectional`; layer ``l + 1`` reads layer
``l``'s ``[h^f_t, h^b_t]``; a dense head maps the top layer to tag logits.

A bidirectional net is not causal, so it is not a :class:`~jrnn.cells.Cell`
and does not fit :class:`~jrnn.models.Model` (whose estimators unroll one
cell over the stream, step by step); :class:`Tagger` carries its own
``loss`` for a plain autodiff step (the BPTT family's full gradient). The
online estimators cannot apply to it at all: the output at step ``t`` needs
inputs after ``t``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from . import scan, validation
from .cells import Cell
from .data.batches import Batch
from .models import _float_dtype, loss_weights

__all__ = ["Tagger", "bidirectional_tagger"]


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

    def apply(params, ids, lengths):
        validation.check_ids("ids", ids, V)
        x = ids
        for (f, b), p in zip(layers, params["layers"]):
            x, _ = scan.bidirectional(f, b, p, x, lengths=lengths)
        return x @ params["head"]["W_hq"] + params["head"]["b_q"]

    def loss(params, batch: Batch, lengths):
        logits = apply(params, batch.inputs, lengths)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch.targets)
        return jnp.sum(ce * loss_weights(batch))

    return Tagger(init, apply, loss, V, C)
