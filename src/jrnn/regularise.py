"""Dropout for recurrent nets, as masks sampled once per batch from the step's key.

Randomness enters the pure-function protocol in one place. A regularised
:class:`~jrnn.models.Model` carries ``regularise(key, batch) -> (transform,
model')``: the train step samples it from its key (a stream of its own, so the
estimator's key is unchanged), runs the estimator on ``model'`` at the params
``transform(params)``, and maps the gradient back through ``transform`` with
``jax.vjp``. Every mask is a constant of that step, so

- every estimator sees the same masks in its forward pass as in its gradient
  (RTRL still equals full BPTT); RTRL, UORO and SnAp-1 run the cell one
  example at a time, so they take the per-batch masks (``weight_drop``,
  ``embedding``) and refuse the per-sequence ones (:func:`check_estimator`),
- the same key gives the same masks (exact resume and determinism hold),
- evaluation, validation and generation use the model itself: no dropout.

Masks are "inverted" (kept units scaled by ``1 / (1 - p)``), so nothing
changes at evaluation in expectation. What each rate drops:

- ``weight_drop``: entries of every hidden-to-hidden matrix (``W_hh``, ``W_h``), one mask
  per batch (DropConnect on ``W_hh``: Wan et al. 2013; AWD-LSTM, Merity, Keskar
  & Socher 2018). A params transform, so the fast recurrence still applies.
- ``embedding``: whole rows of a token model's input matrix (``W_xh``, ``W_x``) (word
  types), one mask per batch (Gal & Ghahramani 2016; Merity et al. 2018).
- ``inputs``, ``recurrent``, ``between``, ``output``: variational dropout (Gal &
  Ghahramani 2016, "A theoretically grounded application of dropout in
  recurrent neural networks"): one mask per sequence ``[B, ...]``, the same at
  every step, on the float inputs, on the recurrent input ``h_{t-1}`` of each
  layer, on each layer's output that feeds the next layer (where torch's
  ``nn.LSTM(dropout=p)`` drops, though torch samples a mask per step), and on
  the top layer's output before the head. ``recurrent`` masks the carry's
  ``h`` before each step: for an LSTM that is exactly Gal's (the memory ``c``
  is untouched); for Elman and GRU it also drops the GRU's ``z * h_{t-1}``
  carry-through (use ``weight_drop`` to keep the memory intact), and it turns
  the fast recurrence off.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .cells import Cell, LSTMState, stack
from .models import Model

__all__ = ["Dropout", "Masks", "dropout", "sample_masks", "apply_masks", "check_estimator",
           "MASK_STREAM"]

MASK_STREAM = 0x6D61736B  # fold_in(step_key, MASK_STREAM) seeds the masks: the estimator's key is untouched


class Dropout(NamedTuple):
    """Dropout rates, each in ``[0, 1)`` (see the module docstring for where each acts)."""

    weight_drop: float = 0.0
    embedding: float = 0.0
    inputs: float = 0.0
    recurrent: float = 0.0
    between: float = 0.0
    output: float = 0.0

    def check(self) -> "Dropout":
        for name, p in self._asdict().items():
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
                raise ValueError(f"dropout rate {name} must be a number in [0, 1), got {p!r}")
        return self


def _param_shapes(cell: Cell) -> dict:
    return jax.eval_shape(lambda: cell.init(jax.random.key(0), 1))


def _weight_key(cell: Cell, names=("W_hh", "W_h")) -> str:
    """The key of a cell's hidden-to-hidden matrix (its fast recurrence's, or by name)."""
    if cell.fast is not None and names[0] == "W_hh":
        return cell.fast.weight
    shapes = _param_shapes(cell)
    for n in names:
        if n in shapes:
            return n
    raise ValueError(f"cell {cell.name!r} has none of the params {list(names)} "
                     f"(it has {sorted(shapes)})")


def _input_key(cell: Cell) -> str:
    return _weight_key(cell, ("W_xh", "W_x"))


def _keep(key, p: float, shape, dtype):
    """An inverted-dropout mask: 0 with probability ``p``, else ``1 / (1 - p)``."""
    return jax.random.bernoulli(key, 1.0 - p, shape).astype(dtype) / (1.0 - p)


def _mask_h(carry, m):
    if isinstance(carry, LSTMState):
        return carry._replace(h=carry.h * m)
    if isinstance(carry, jax.Array) or hasattr(carry, "shape"):
        return carry * m
    raise TypeError(f"recurrent dropout needs a carry that is h or an LSTMState, got "
                    f"{type(carry).__name__}")


def _masked_cell(cell: Cell, m_x, m_h) -> Cell:
    """``cell`` with its input (``m_x`` ``[B, D]``) and recurrent input (``m_h`` ``[B, H]``)
    multiplied by per-sequence masks (``None``: none)."""
    if m_x is None and m_h is None:
        return cell

    def project(p, xs):
        return cell.project(p, xs if m_x is None else xs * m_x)

    def step(p, c, xp):
        return cell.step(p, c if m_h is None else _mask_h(c, m_h), xp)

    return cell._replace(project=project, step=step, fast=cell.fast if m_h is None else None)


class Masks(NamedTuple):
    """One batch's dropout masks (``None`` where a rate is 0); lists hold one entry per layer.

    Attributes:
      weight: per layer, the hidden-to-hidden matrix's mask (its shape).
      embedding: ``[V]``, rows of a token model's input matrix.
      inputs: per layer, ``[B, D_l]``: the float inputs (layer 0) or the layer
        below's output (``between``).
      recurrent: per layer, ``[B, H_l]`` on ``h_{t-1}``.
      output: ``[B, H]`` on the top layer's output, before the head.
    """

    weight: list
    embedding: jax.Array | None
    inputs: list
    recurrent: list
    output: jax.Array | None


def sample_masks(model: Model, rates: Dropout, key, batch_size: int) -> Masks:
    """The masks of one batch of ``batch_size`` sequences, from ``key`` (float32)."""
    cell, dtype = model.cell, jnp.float32
    layers = cell.layers or (cell,)
    keys = iter(jax.random.split(key, 3 * len(layers) + 2))
    B = batch_size
    weight, inputs, recurrent = [], [], []
    for l, c in enumerate(layers):
        k_w, k_x, k_h = next(keys), next(keys), next(keys)
        weight.append(_keep(k_w, rates.weight_drop, _param_shapes(c)[_weight_key(c)].shape, dtype)
                      if rates.weight_drop else None)
        p_in = rates.inputs if l == 0 else rates.between
        D = model.input_size if l == 0 else layers[l - 1].hidden_size
        inputs.append(_keep(k_x, p_in, (B, D), dtype) if p_in and not (l == 0 and model.tokens)
                      else None)
        recurrent.append(_keep(k_h, rates.recurrent, (B, c.hidden_size), dtype)
                         if rates.recurrent else None)
    k_e, k_o = next(keys), next(keys)
    embedding = (_keep(k_e, rates.embedding, (model.input_size,), dtype)
                 if rates.embedding and model.tokens else None)
    output = _keep(k_o, rates.output, (B, cell.hidden_size), dtype) if rates.output else None
    return Masks(weight, embedding, inputs, recurrent, output)


def apply_masks(model: Model, masks: Masks):
    """``(transform, model')``: the params transform (weight and embedding masks) and the
    model with the per-sequence masks inside its cell and head."""
    cell = model.cell
    layers = cell.layers or (cell,)

    def transform(params):
        ps = params["cell"] if cell.layers else (params["cell"],)
        out = []
        for l, p in enumerate(ps):
            if masks.weight[l] is not None:
                k = _weight_key(layers[l])
                p = {**p, k: p[k] * masks.weight[l].astype(p[k].dtype)}
            if l == 0 and masks.embedding is not None:
                k = _input_key(layers[0])
                p = {**p, k: p[k] * masks.embedding[:, None].astype(p[k].dtype)}
            out.append(p)
        return {**params, "cell": tuple(out) if cell.layers else out[0]}

    wrapped = [_masked_cell(c, masks.inputs[l], masks.recurrent[l]) for l, c in enumerate(layers)]
    head = model.head
    if masks.output is not None:
        head = lambda p, h: model.head(p, h * masks.output)  # noqa: E731  [T, B, H] or [B, H]
    return transform, model._replace(cell=stack(wrapped) if cell.layers else wrapped[0], head=head,
                                     regularise=None)


def dropout(model: Model, rates: Dropout | None = None, **kw) -> Model:
    """``model`` trained with dropout: ``dropout(model, weight_drop=0.5, output=0.2)``.

    Args:
      model: a :class:`~jrnn.models.Model` whose cell is a built-in cell or a
        :func:`~jrnn.cells.stack` of them (``weight_drop`` needs a hidden-to-hidden
        matrix in each layer's params, ``embedding`` a token model's input matrix).
      rates: a :class:`Dropout`, or its fields as keywords.

    Returns:
      the same model with ``regularise`` set (the train step samples the masks;
      evaluation ignores it). All rates 0 returns ``model`` unchanged.
    """
    if rates is None:
        rates = Dropout(**kw)
    elif kw:
        raise TypeError("give either rates or keyword rates, not both")
    rates = Dropout(*rates).check()
    if not any(rates):
        return model
    cell = model.cell
    if rates.weight_drop:
        for c in cell.layers or (cell,):
            _weight_key(c)  # raises if a layer has no hidden-to-hidden matrix
    if rates.embedding and not model.tokens:
        raise ValueError("embedding dropout needs a token model (its inputs are ids)")
    if rates.embedding:
        _input_key((cell.layers or (cell,))[0])
    if rates.inputs and model.tokens:
        raise ValueError("inputs dropout is for float inputs; a token model takes embedding=")

    def regularise(key, batch):
        return apply_masks(model, sample_masks(model, rates, key, jnp.shape(batch.inputs)[1]))

    regularise.rates = rates
    return model._replace(regularise=regularise)


PER_EXAMPLE = ("rtrl", "uoro", "snap1")  # estimators that run the cell one example at a time


def check_estimator(model: Model, estimator) -> None:
    """Refuse per-sequence masks with an estimator that runs the cell per example (under
    ``vmap``, where a ``[B, ...]`` mask cannot be told which example it belongs to)."""
    rates = getattr(model.regularise, "rates", None)
    if rates is None or estimator.name.partition(":")[0] not in PER_EXAMPLE:
        return
    per_sequence = [n for n in ("inputs", "recurrent", "between", "output") if getattr(rates, n)]
    if per_sequence:
        raise ValueError(
            f"{estimator.name} runs the cell one example at a time, so it cannot take the "
            f"per-sequence (variational) dropout masks {per_sequence}; use weight_drop / "
            f"embedding dropout (one mask per batch) with it, or a BPTT-family estimator")
