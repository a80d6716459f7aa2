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
- ``candidate``: recurrent dropout without memory loss (Semeniuta, Severyn &
  Barth 2016, "Recurrent dropout without memory loss", sec. 3): the candidate
  update is dropped, LSTM's ``c_t = f c_{t-1} + i d(g)``, GRU's ``h_t = (1 - z)
  d(n) + z h_{t-1}``, so the memory ``c_{t-1}`` / ``h_{t-1}`` is never
  dropped (unlike ``recurrent``, which drops ``h_{t-1}`` itself: GRU's
  carry-through included). The paper uses a mask per step or per sequence;
  jrnn samples one per sequence ``[B, H]`` (as Gal's), so the truncating and
  checkpointed BPTT estimators take it. LSTM and GRU cells only (it reads
  their gates through their fast rule); no fast recurrence.
- ``zoneout`` (``h``), ``zoneout_c`` (an LSTM's ``c``): zoneout (Krueger et
  al. 2017, "Zoneout: regularizing RNNs by randomly preserving hidden
  activations", sec. 3, eq. for the LSTM): each unit keeps its previous value
  with probability ``p``, ``s_t = d s_{t-1} + (1 - d) s_new``, a fresh mask
  ``d`` ``[T, B, H]`` at every step and for every sequence, separately for
  ``c`` and ``h`` (both from the step's un-zoned ``c``, as in the paper). At
  evaluation the expectation, ``s_t = p s_{t-1} + (1 - p) s_new``: the model
  :func:`dropout` returns has that cell (its ``regularise`` the masked one), so
  evaluation, validation and generation use it. The per-step masks travel with
  the projected inputs (``project`` appends them to ``xp``, ``step`` splits
  them off), so they are exact under every estimator that unrolls the whole
  batch in one scan (full, truncated, randomized, ES, PES); tbptt and
  checkpointed (which split the sequence) and RTRL, UORO, SnAp-1 (one step,
  one example at a time) refuse it. No fast recurrence (train or evaluation).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .cells import Cell, LSTMState, stack
from .models import Model

__all__ = ["Dropout", "Masks", "dropout", "sample_masks", "apply_masks", "check_estimator",
           "zoneout_cell", "MASK_STREAM"]

MASK_STREAM = 0x6D61736B  # fold_in(step_key, MASK_STREAM) seeds the masks: the estimator's key is untouched


class Dropout(NamedTuple):
    """Dropout rates, each in ``[0, 1)`` (see the module docstring for where each acts)."""

    weight_drop: float = 0.0
    embedding: float = 0.0
    inputs: float = 0.0
    recurrent: float = 0.0
    between: float = 0.0
    output: float = 0.0
    candidate: float = 0.0
    zoneout: float = 0.0
    zoneout_c: float = 0.0

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


def _candidate_step(cell: Cell, m):
    """``cell.step`` with the candidate update multiplied by ``m`` ``[B, H]`` (Semeniuta et
    al. 2016): LSTM ``c = f c_prev + i (g m)``, GRU ``h = (1 - z) (n m) + z h_prev``.

    The gates are the cell's own: its fast rule's ``forward`` returns them
    (LSTM: the activations ``[i, f, g, o]``; GRU: ``(rz, n, .)``).
    """
    fast, H = cell.fast, cell.hidden_size

    def gates(p, carry, xp):
        return fast.forward(p, carry, xp, fast.read(carry) @ p[fast.weight])[2]

    if cell.name == "lstm":
        def step(p, carry, xp):
            i, f, g, o = jnp.split(gates(p, carry, xp), 4, axis=-1)
            c = f * carry.c + i * (g * m)
            h = o * jnp.tanh(c)
            return LSTMState(h=h, c=c), h
    else:
        def step(p, h, xp):
            rz, n, _ = gates(p, h, xp)
            z = rz[..., H:]
            h = (1.0 - z) * (n * m) + z * h
            return h, h
    return step


def _check_candidate(cell: Cell) -> None:
    if cell.name not in ("lstm", "gru") or cell.fast is None:
        raise ValueError(f"candidate dropout (Semeniuta et al.) acts on the candidate of an lstm "
                         f"or gru cell; cell {cell.name!r} has none jrnn can reach (use "
                         f"recurrent= or zoneout= with it)")


def _zone(old, new, d_h, d_c):
    """``d old + (1 - d) new`` per unit: ``d`` ``0/1`` (train) or ``p`` (evaluation)."""
    mix = lambda a, b, d: b if d is None else d * a + (1.0 - d) * b  # noqa: E731  (d = 1: a exactly)
    if isinstance(new, LSTMState):
        return LSTMState(h=mix(old.h, new.h, d_h), c=mix(old.c, new.c, d_c))
    if d_c is not None:
        raise ValueError("zoneout_c acts on an LSTM's memory c; this cell's carry has none")
    if isinstance(new, jax.Array) or hasattr(new, "shape"):
        return mix(old, new, d_h)
    raise TypeError(f"zoneout needs a carry that is h or an LSTMState, got {type(new).__name__}")


def _has_c(cell: Cell) -> bool:
    return isinstance(jax.eval_shape(lambda: cell.initial_carry(())), LSTMState)


def _zoneout_rates(cell: Cell, rates: Dropout):
    """``(p_h, p_c)`` of one layer: ``zoneout_c`` acts on the layers that have a memory ``c``."""
    return rates.zoneout, rates.zoneout_c if _has_c(cell) else 0.0


def _output(carry):
    return carry.h if isinstance(carry, LSTMState) else carry


def zoneout_cell(cell: Cell, p_h: float = 0.0, p_c: float = 0.0) -> Cell:
    """``cell`` at zoneout's evaluation: ``s_t = p s_{t-1} + (1 - p) s_new`` per unit
    (``p_h`` on ``h``, ``p_c`` on an LSTM's ``c``; Krueger et al. 2017), the expectation
    of the trained update. A layer at a time (not a stack); no fast recurrence."""
    d_h, d_c = (None if not p else p for p in (p_h, p_c))
    if d_h is None and d_c is None:
        return cell

    def step(p, c, xp):
        new, _ = cell.step(p, c, xp)
        new = _zone(c, new, d_h, d_c)
        return new, _output(new)

    return cell._replace(step=step, fast=None)


def _zoned_cell(cell: Cell, d_h, d_c) -> Cell:
    """``cell`` trained with per-step zoneout masks ``d_h``, ``d_c`` ``[T, B, H]`` (1: keep the
    previous value): ``project`` appends them to ``xp`` so the scan hands each step its own."""
    ds = [d for d in (d_h, d_c) if d is not None]
    lead, H = ds[0].shape[:-1], cell.hidden_size

    def project(p, xs):
        xp = cell.project(p, xs)
        if tuple(xp.shape[:-1]) != tuple(lead):
            raise ValueError(
                f"zoneout's per-step masks cover [T, B] = {tuple(lead)} but the cell projects "
                f"inputs of shape {tuple(jnp.shape(xs))}: the whole batch must be unrolled in one "
                f"scan (full, truncated, randomized, es, pes; not tbptt, checkpointed or the "
                f"online estimators, nor a stack run step by step)")
        return jnp.concatenate([xp] + [d.astype(xp.dtype) for d in ds], axis=-1)

    def step(p, c, xp):
        k = len(ds) * H
        masks = iter(jnp.split(xp[..., -k:], len(ds), axis=-1))
        new, _ = cell.step(p, c, xp[..., :-k])
        new = _zone(c, new, next(masks) if d_h is not None else None,
                    next(masks) if d_c is not None else None)
        return new, _output(new)

    return cell._replace(project=project, step=step, fast=None)


def _masked_cell(cell: Cell, m_x, m_h, m_g=None, zone=(None, None)) -> Cell:
    """``cell`` with its input (``m_x`` ``[B, D]``), its recurrent input (``m_h`` ``[B, H]``)
    and its candidate (``m_g`` ``[B, H]``) multiplied by per-sequence masks, and zoned by the
    per-step masks ``zone = (d_h, d_c)`` ``[T, B, H]`` (``None``: none)."""
    zoned = any(d is not None for d in zone)
    if m_x is None and m_h is None and m_g is None and not zoned:
        return cell
    inner = cell.step if m_g is None else _candidate_step(cell, m_g)

    def project(p, xs):
        return cell.project(p, xs if m_x is None else xs * m_x)

    def step(p, c, xp):
        return inner(p, c if m_h is None else _mask_h(c, m_h), xp)

    plain = m_h is None and m_g is None
    out = cell._replace(project=project, step=step, fast=cell.fast if plain else None)
    # zoneout outermost: a unit keeps its true previous value, not the dropped h_{t-1}
    return _zoned_cell(out, *zone) if zoned else out


class Masks(NamedTuple):
    """One batch's dropout masks (``None`` where a rate is 0); lists hold one entry per layer.

    Attributes:
      weight: per layer, the hidden-to-hidden matrix's mask (its shape).
      embedding: ``[V]``, rows of a token model's input matrix.
      inputs: per layer, ``[B, D_l]``: the float inputs (layer 0) or the layer
        below's output (``between``).
      recurrent: per layer, ``[B, H_l]`` on ``h_{t-1}``.
      output: ``[B, H]`` on the top layer's output, before the head.
      candidate: per layer, ``[B, H_l]`` on the candidate update (inverted).
      zoneout: per layer, ``(d_h, d_c)``, each ``[T, B, H_l]`` or ``None``: 1 where a
        unit keeps its previous value (not inverted).
    """

    weight: list
    embedding: jax.Array | None
    inputs: list
    recurrent: list
    output: jax.Array | None
    candidate: list | None = None
    zoneout: list | None = None


ZONEOUT_STREAM, CANDIDATE_STREAM = 1, 2  # fold_in(key, .): the earlier masks keep their keys


def sample_masks(model: Model, rates: Dropout, key, batch_size: int,
                 num_steps: int | None = None) -> Masks:
    """The masks of one batch of ``batch_size`` sequences of ``num_steps`` steps (``num_steps``
    only for zoneout's per-step masks), from ``key`` (float32)."""
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
    k_g = jax.random.split(jax.random.fold_in(key, CANDIDATE_STREAM), len(layers))
    candidate = [_keep(k, rates.candidate, (B, c.hidden_size), dtype) if rates.candidate else None
                 for k, c in zip(k_g, layers)]
    zoneout = [(None, None)] * len(layers)
    if rates.zoneout or rates.zoneout_c:
        if num_steps is None:
            raise ValueError("zoneout samples a mask per step: give num_steps (the batch's T)")
        k_z = jax.random.split(jax.random.fold_in(key, ZONEOUT_STREAM), (len(layers), 2))
        zoneout = [tuple(jax.random.bernoulli(k, p, (num_steps, B, c.hidden_size)).astype(dtype)
                         if p else None for k, p in zip(kl, _zoneout_rates(c, rates)))
                   for kl, c in zip(k_z, layers)]
    return Masks(weight, embedding, inputs, recurrent, output, candidate, zoneout)


def apply_masks(model: Model, masks: Masks):
    """``(transform, model')``: the params transform (weight and embedding masks) and the
    model with the per-sequence and per-step masks inside its cell and head.

    ``model`` is the plain model (not the one :func:`dropout` returns, whose cell
    may be zoneout's evaluation cell)."""
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

    n = len(layers)
    wrapped = [_masked_cell(c, masks.inputs[l], masks.recurrent[l], (masks.candidate or [None] * n)[l],
                            (masks.zoneout or [(None, None)] * n)[l]) for l, c in enumerate(layers)]
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
        matrix in each layer's params, ``embedding`` a token model's input matrix,
        ``candidate`` lstm or gru layers; ``zoneout_c`` acts on the layers with a
        memory ``c`` and needs one).
      rates: a :class:`Dropout`, or its fields as keywords.

    Returns:
      the same model with ``regularise`` set (the train step samples the masks;
      evaluation ignores it), and with zoneout its cell replaced by zoneout's
      evaluation cell (:func:`zoneout_cell`, layer by layer). All rates 0
      returns ``model`` unchanged.
    """
    if rates is None:
        rates = Dropout(**kw)
    elif kw:
        raise TypeError("give either rates or keyword rates, not both")
    rates = Dropout(*rates).check()
    if not any(rates):
        return model
    cell = model.cell
    layers = cell.layers or (cell,)
    if rates.weight_drop:
        for c in layers:
            _weight_key(c)  # raises if a layer has no hidden-to-hidden matrix
    if rates.embedding and not model.tokens:
        raise ValueError("embedding dropout needs a token model (its inputs are ids)")
    if rates.embedding:
        _input_key(layers[0])
    if rates.inputs and model.tokens:
        raise ValueError("inputs dropout is for float inputs; a token model takes embedding=")
    if rates.candidate:
        for c in layers:
            _check_candidate(c)
    if rates.zoneout_c and not any(_has_c(c) for c in layers):
        raise ValueError(f"zoneout_c acts on an LSTM's memory c; cell {cell.name!r} has none "
                         f"(zoneout= acts on h)")

    def regularise(key, batch):
        T, B = jnp.shape(batch.inputs)[:2]
        return apply_masks(model, sample_masks(model, rates, key, B, T))

    regularise.rates = rates
    evaluated = cell
    if rates.zoneout or rates.zoneout_c:
        zoned = [zoneout_cell(c, *_zoneout_rates(c, rates)) for c in layers]
        evaluated = stack(zoned) if cell.layers else zoned[0]
    return model._replace(cell=evaluated, regularise=regularise)


# estimators known to unroll the whole batch at once: every mask (zoneout's per-step ones too)
WHOLE_BATCH = ("full", "truncated", "randomized", "es", "pes")
SPLIT = ("tbptt", "checkpointed")  # the batch in pieces along T: not zoneout's per-step masks
# every other estimator (rtrl, uoro, snap1, kf-rtrl, ..., a user's) is taken to run the cell one
# example at a time, under vmap: only the per-batch masks (weight_drop, embedding)


def check_estimator(model: Model, estimator) -> None:
    """Refuse masks an estimator cannot apply as they were sampled: per-sequence masks with one
    that runs the cell per example (under ``vmap``, a ``[B, ...]`` mask cannot be told which
    example it belongs to), zoneout's per-step masks with one that does not unroll the whole
    batch in one scan."""
    rates = getattr(model.regularise, "rates", None)
    if rates is None:
        return
    name = estimator.name.partition(":")[0]
    if name in WHOLE_BATCH:
        return
    per_example = name not in SPLIT
    if rates.zoneout or rates.zoneout_c:
        raise ValueError(
            f"{estimator.name} {'runs one step at a time' if per_example else 'splits the sequence'}"
            f", so it cannot take zoneout's per-step masks (they travel with the whole batch's "
            f"projected inputs); use {', '.join(WHOLE_BATCH)} with zoneout")
    per_sequence = [n for n in ("inputs", "recurrent", "between", "output", "candidate")
                    if getattr(rates, n)]
    if per_example and per_sequence:
        raise ValueError(
            f"{estimator.name} runs the cell one example at a time, so it cannot take the "
            f"per-sequence (variational) dropout masks {per_sequence}; use weight_drop / "
            f"embedding dropout (one mask per batch) with it, or a BPTT-family estimator")
