"""Unrolling a cell over time with ``jax.lax.scan``.

All arrays are time-major: ``xs`` is ``[T, B, D]`` (floats) or ``[T, B]``
(token ids); the batch may have any number of dims, or none (``[T, D]``).
``time_major=False`` takes and returns ``[B, T, ...]`` instead.

Paths. A cell that supplies a fast recurrence (``Cell.fast``, see
:class:`~jrnn.cells.FastRecurrence` and ``jrnn._fast``) runs through it; a
:func:`~jrnn.cells.stack` (``Cell.layers``) is run layer by layer (each layer
over the whole sequence, then the next), which computes the same values as
the stacked step and lets each layer take its fast path. Hooks
(``before_step``), rematerialisation (``remat_every``) and ``fast_path=False``
keep the step-by-step ``lax.scan`` over ``cell.step``.

Padding (``lengths``) and interior step masks (``step_mask``): a step that is
not real leaves the carry unchanged and outputs zeros, and its inputs are
zeroed before the cell projects them, so NaN/Inf there reaches neither the
outputs nor any gradient. ``lengths`` says "the first ``lengths[b]`` steps";
``step_mask`` says "these steps" (any pattern); both may be given (a step is
real iff both say so). ``Batch.mask`` is another thing: it weights the loss.

Resets (``resets``): episodes or documents packed into one stream. Where
``resets[t, b]`` is true the carry entering step ``t`` of sequence ``b`` is
replaced by the reset carry (``reset_carry``; the cell's zero
``initial_carry`` by default, or e.g. a learned initial carry), as haiku's
``ResetCore`` and memax's ``sequence_starts`` do. The replacement is a
``where``, so no value and no gradient crosses a reset: every BPTT estimator
is cut there, and the gradient w.r.t. ``reset_carry`` sums over the episodes
it starts. Resets work on the fast recurrence (the tangent scan resets the
carry's tangent to ``reset_carry``'s), on the plain scan, in every layer of a
stack, and in reverse: the reversed pass resets the carry entering step
``t`` when ``t + 1`` starts an episode (the last step of each episode), so
``bidirectional`` over a packed stream equals it over each episode alone.
Resets on steps beyond ``lengths`` are ignored; a reset on a masked step
(``step_mask``) still applies (the carry after it is the reset carry).

Rematerialisation (``remat_every=S``) wraps each segment of ``S`` steps in
``jax.checkpoint``: the backward pass stores only the carries at segment
boundaries and recomputes each segment once (Griewank & Walther 2000,
"Algorithm 799: revolve"; Chen et al. 2016, "Training deep nets with sublinear
memory cost"). ``S ~ sqrt(T)`` keeps ``O(sqrt(T))`` carries instead of every
step's residuals, for about one extra forward pass; the projected inputs and
the outputs ``[T, B, ...]`` are still stored (``jrnn.grads.checkpointed`` also
rematerialises them, with the head and loss, per segment). Rematerialised
loops are reverse-mode only.

Validation runs once, in :func:`unroll` (the public entry); nested calls (a
stack's layers, estimators' segments) use :func:`_unroll_unchecked`.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import kernels, validation
from ._fast import fast_recurrence, where_batch
from .cells import Cell

__all__ = ["unroll", "bidirectional"]


def _flip_within(x, lengths):
    """Reverse each sequence within its length: ``[T, B...]`` (an involution)."""
    T = x.shape[0]
    t = jnp.arange(T).reshape((T,) + (1,) * lengths.ndim)
    idx = jnp.where(t < lengths, lengths - 1 - t, t)
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - idx.ndim))
    return jnp.take_along_axis(x, jnp.broadcast_to(idx, x.shape), axis=0)


class _Options(NamedTuple):
    """Validated options of one unroll (internal)."""

    lengths: jax.Array | None = None  # int [B...]
    reverse: bool = False
    unroll: int = 1
    remat_every: int | None = None
    before_step: Callable | None = None
    gain: jax.Array | None = None  # float [T]: carry_grad_scale
    fast_path: bool = True
    step_mask: jax.Array | None = None  # bool [T, B...]: real steps (with lengths)
    resets: jax.Array | None = None  # bool [T, B...]: the carry entering step t is reset
    reset_carry: object = None  # carry of batch shape B... or (); None: cell.initial_carry


def unroll(cell: Cell, params, xs, carry=None, *, lengths=None, reverse: bool = False,
           unroll: int = 1, remat_every: int | None = None, before_step: Callable | None = None,
           carry_grad_scale=None, time_major: bool = True, fast_path: bool = True,
           step_mask=None, resets=None, reset_carry=None, backend: str | None = None):
    """Run ``cell`` over a sequence; returns all outputs and the final carry.

    Args:
      cell: a :class:`~jrnn.cells.Cell`.
      params: the cell's params.
      xs: inputs ``[T, B..., D]`` (float, the params' dtype or narrower) or
        token ids ``[T, B...]`` (int; the cell's ``project`` refuses ids outside
        its vocabulary when they are concrete -- NumPy or ``jax.Array`` -- and
        cannot check ids traced inside a user's ``jit``).
      carry: initial carry with batch shape ``B...``; zeros if ``None``.
      lengths: optional int ``[B...]`` in ``[1, T]``. Step ``t`` of sequence
        ``b`` is real iff ``t < lengths[b]``; padded steps leave the carry
        unchanged and output zeros, so the final carry is the carry after the
        last real step and real outputs equal those of the unpadded sequence.
        Padded inputs never reach the step (NaN there is harmless). The range
        is checked when ``lengths`` is concrete (also as a constant inside
        ``jit``); a traced argument is not.
      reverse: run from the last real step to the first. Outputs stay in the
        input order (``hs[t]`` is the state after reading ``xs[t:len]``), and
        with ``lengths`` each sequence is reversed within its own length.
      unroll: ``lax.scan``'s unroll factor.
      remat_every: if set, ``S``: rematerialise segments of ``S`` steps in the
        backward pass (see module docstring; reverse mode only).
      before_step: optional ``(t, carry) -> carry`` applied to the carry
        entering step ``t``. A hook runs the step-by-step scan (no fast path).
      carry_grad_scale: optional ``[T]`` factors: the gradient flowing back
        through the carry entering step ``t`` (scan order) is multiplied by
        ``carry_grad_scale[t]``; forward values are unchanged. ``0`` cuts the
        backward flow there (truncated BPTT), ``1/p`` with probability ``p``
        rescales it (randomized truncation). Unlike a ``before_step`` hook
        doing the same, it keeps the fast path.
      time_major: ``False`` takes ``xs`` as ``[B, T, ...]`` and returns ``hs`` so.
      fast_path: ``False`` runs the step-by-step ``lax.scan`` over
        ``cell.step`` even where the cell supplies a fast recurrence or
        layers (same values; for A/B measurements and tests).
      step_mask: optional bool ``[T, B...]`` (``[B, T, ...]`` if not
        ``time_major``): ``False`` marks a step that does not happen -- the
        carry passes it unchanged, its output is zero and its input never
        reaches the step (NaN there is harmless). Any pattern, interior steps
        included; with ``lengths``, a step is real iff both say so.
      resets: optional bool ``[T, B...]`` (``[B, T, ...]`` if not
        ``time_major``): ``True`` replaces the carry entering step ``t`` by
        ``reset_carry`` (an episode starts at ``t``; ``resets[0]`` replaces
        ``carry``). Neither values nor gradients cross a reset. With
        ``reverse`` the reversed pass resets after each episode's end, so it
        too stays within episodes (module docstring).
      reset_carry: the carry a reset restores: batch shape ``B...`` or
        unbatched (``()``, broadcast over the batch), e.g. a learned initial
        carry (it gets the gradient of every episode it starts). Default: the
        cell's ``initial_carry`` (zeros). Only with ``resets``.
      backend: ``"xla"``, ``"onednn"`` or ``"auto"``: who runs this unroll
        (:mod:`jrnn.kernels`); ``None``: the cell's ``backend`` (``"xla"``
        unless set with :func:`jrnn.kernels.with_backend`).

    Returns:
      ``(hs, carry)``: outputs ``[T, B..., H]`` (``[B, T..., H]`` if not
      ``time_major``) and the final carry.
    """
    if not time_major:
        xs = jnp.swapaxes(jnp.asarray(xs), 0, 1)
        step_mask, resets = (None if a is None else jnp.swapaxes(jnp.asarray(a), 0, 1)
                             for a in (step_mask, resets))
    if backend is not None:
        cell = kernels.with_backend(cell, backend)
    validation.check_params(cell, params)
    xs, carry, opts = _validate(cell, params, xs, carry, lengths=lengths, reverse=reverse,
                                unroll=unroll, remat_every=remat_every, before_step=before_step,
                                carry_grad_scale=carry_grad_scale, fast_path=fast_path,
                                step_mask=step_mask, resets=resets, reset_carry=reset_carry)
    hs, carry = _unroll_unchecked(cell, params, xs, carry, opts)
    return (hs if time_major else jnp.swapaxes(hs, 0, 1)), carry


def _validate(cell: Cell, params, xs, carry, *, lengths=None, reverse=False, unroll=1,
              remat_every=None, before_step=None, carry_grad_scale=None, fast_path=True,
              step_mask=None, resets=None, reset_carry=None):
    """:func:`unroll`'s checks on time-major ``xs`` (params checked by the caller).

    Returns ``(xs, carry, opts)``: the carry (zeros if ``None``) and the
    validated :class:`_Options` for :func:`_unroll_unchecked`.
    """
    n = len(cell.layers or ())
    if carry is not None and n and (not isinstance(carry, tuple) or len(carry) != n):
        raise ValueError(f"a stack of {n} layers needs a tuple of {n} carries, got "
                         f"{type(carry).__name__}")
    validation.check_inputs(cell, params, xs)
    shape = tuple(np.shape(xs))
    if shape[0] < 1:
        raise ValueError(f"xs must have at least one time step, got shape {shape}")
    T = shape[0]
    batch_shape = shape[1:] if jnp.issubdtype(validation._dtype(xs), jnp.integer) else shape[1:-1]
    if carry is None:
        carry = cell.initial_carry(batch_shape)
    else:
        validation.check_carry(cell, carry, batch_shape)
    opts = _Options(
        lengths=None if lengths is None else validation.check_lengths(lengths, T, batch_shape),
        reverse=bool(reverse), unroll=validation.check_int("unroll", unroll),
        remat_every=validation.check_int("remat_every", remat_every, allow_none=True),
        before_step=before_step, gain=_check_gain(carry_grad_scale, T), fast_path=bool(fast_path),
        step_mask=None if step_mask is None else validation.check_steps(
            "step_mask", step_mask, T, batch_shape),
        resets=None if resets is None else validation.check_steps("resets", resets, T, batch_shape),
        reset_carry=_check_reset_carry(cell, reset_carry, resets, batch_shape))
    return xs, carry, opts


def _check_reset_carry(cell: Cell, reset_carry, resets, batch_shape):
    """``reset_carry`` checked against the cell's carry (batch shape ``B...`` or ``()``)."""
    if reset_carry is None:
        return None
    if resets is None:
        raise ValueError("reset_carry is only used with resets; got reset_carry but resets=None")
    n = len(cell.layers or ())
    if n and (not isinstance(reset_carry, tuple) or len(reset_carry) != n):
        raise ValueError(f"a stack of {n} layers needs a tuple of {n} reset carries, got "
                         f"{type(reset_carry).__name__}")
    unbatched = jax.tree.leaves(validation._carry_spec(cell, ()))
    flat = all(np.ndim(a) == len(u.shape) for a, u in zip(jax.tree.leaves(reset_carry), unbatched))
    validation.check_carry(cell, reset_carry, () if flat else tuple(batch_shape), "reset_carry")
    return reset_carry


def _check_gain(carry_grad_scale, T: int):
    if carry_grad_scale is None:
        return None
    gain = jnp.asarray(carry_grad_scale)
    if gain.shape != (T,) or not jnp.issubdtype(gain.dtype, jnp.floating):
        raise ValueError(f"carry_grad_scale must be a float array of shape [T] = ({T},), got "
                         f"{gain.dtype} {tuple(gain.shape)}")
    return gain


def _real_steps(T: int, opts: _Options):
    """``[T, B...]`` bool, the real steps (``lengths`` and ``step_mask``), or ``None``: all."""
    m = opts.step_mask
    if opts.lengths is not None:
        within = jnp.arange(T).reshape((-1,) + (1,) * opts.lengths.ndim) < opts.lengths
        m = within if m is None else m & within
    return m


def _reset_steps(T: int, opts: _Options):
    """``[T, B...]`` bool in scan order (before any flip): where the carry entering a step is reset.

    Forward: ``resets`` within ``lengths``. Reverse: the step before each
    episode start (``resets[t + 1]``), so the reversed pass restarts at every
    episode's last step.
    """
    r = opts.resets
    if r is None:
        return None
    if opts.lengths is not None:
        r = r & (jnp.arange(T).reshape((-1,) + (1,) * opts.lengths.ndim) < opts.lengths)
    if opts.reverse:
        r = jnp.concatenate([r[1:], jnp.zeros_like(r[:1])])
    return r


def _zero_masked(xs, mask):
    """Float inputs ``[T, B..., D]`` with the steps that are not real set to zero (ids pass)."""
    if mask is None or not jnp.issubdtype(jnp.result_type(xs), jnp.floating):
        return xs
    xs = jnp.asarray(xs)
    return jnp.where(mask.reshape(mask.shape + (1,) * (xs.ndim - mask.ndim)), xs,
                     jnp.zeros((), xs.dtype))


def _reset_value(cell: Cell, opts: _Options, carry):
    """The carry a reset restores, in the carry's dtypes (``cell.initial_carry(())`` by default)."""
    rc = cell.initial_carry(()) if opts.reset_carry is None else opts.reset_carry
    return jax.tree.map(lambda z, c: jnp.asarray(z).astype(c.dtype), rc, carry)


def _unroll_unchecked(cell: Cell, params, xs, carry, opts: _Options = _Options(),
                      zeroed: bool = False):
    """:func:`unroll` on validated arguments: time-major ``xs``, a carry, :class:`_Options`.

    For nested calls (a stack's layers, an estimator's segments): nothing is
    checked again. ``zeroed``: the padded inputs are already zero.
    """
    T = np.shape(xs)[0]
    mask = _real_steps(T, opts)
    if not zeroed:
        xs = _zero_masked(xs, mask)
    plain = not opts.fast_path or opts.remat_every is not None or opts.before_step is not None
    if cell.layers is not None and not plain:
        return _unroll_layers(cell.layers, params, xs, carry, opts)
    if cell.backend != "xla":  # a fused kernel for the whole sequence (jrnn.kernels)
        extras = [k for k, v in (("lengths", opts.lengths), ("step_mask", opts.step_mask),
                                 ("resets", opts.resets), ("carry_grad_scale", opts.gain))
                  if v is not None]
        kernel = kernels.choose(cell, xs, plain=plain, extras=extras)
        if kernel is not None:
            return kernel(cell, params, xs, carry, reverse=opts.reverse)
    xp = cell.project(params, xs)  # [T, B..., G*H], one big product for all steps
    lengths = opts.lengths
    resets = _reset_steps(T, opts)
    reset_to = None if resets is None else _reset_value(cell, opts, carry)
    if opts.reverse:
        flip = (lambda a: a[::-1]) if lengths is None else (lambda a: _flip_within(a, lengths))
        xp, mask, resets = (None if a is None else flip(a) for a in (xp, mask, resets))
    if cell.fast is not None and not plain:
        hs, carry = fast_recurrence(cell.fast, opts.unroll, params, carry, xp, mask, opts.gain,
                                    resets, reset_to)
    else:
        hs, carry = _scan_steps(cell, params, carry, xp, mask, resets, reset_to, opts)
    if opts.reverse:
        hs = flip(hs)
    return hs, carry


def _scan_steps(cell: Cell, params, carry, xp, mask, resets, reset_to, opts: _Options):
    """The step-by-step ``lax.scan`` over ``cell.step`` (hooks, remat, gains, masks, resets).

    ``mask``/``resets``: ``[T, B...]`` bool in scan order, or ``None``.
    """
    gain, S, T = opts.gain, opts.remat_every, xp.shape[0]
    if S is not None:
        S = min(S, T)
        n = -(-T // S)
        if n * S != T:  # pad to whole segments; padded steps are masked out
            pad = lambda a, v: jnp.concatenate([a, jnp.full((n * S - T,) + a.shape[1:], v, a.dtype)])
            xp = pad(xp, 0)
            gain = None if gain is None else pad(gain, 1)
            resets = None if resets is None else pad(resets, False)
            mask = pad(jnp.ones(xp.shape[1:-1], bool)[None].repeat(T, 0) if mask is None else mask,
                       False)

    def body(c, inp):
        t, x, m, r = inp
        if gain is not None:  # value unchanged, gradient through the carry scaled
            c = jax.tree.map(lambda a: jax.lax.stop_gradient(a)
                             + gain[t].astype(a.dtype) * (a - jax.lax.stop_gradient(a)), c)
        if r is not None:  # an episode starts here: nothing of the carry crosses
            c = where_batch(r, reset_to, c)
        if opts.before_step is not None:
            c = opts.before_step(t, c)
        new, h = cell.step(params, c, x)
        if m is not None:
            new = where_batch(m, new, c)
            h = jnp.where(m[..., None], h, jnp.zeros_like(h))
        return new, h

    ts = jnp.arange(xp.shape[0])
    if S is None:
        carry, hs = jax.lax.scan(body, carry, (ts, xp, mask, resets), unroll=opts.unroll)
        return hs, carry
    seg = jax.checkpoint(lambda c, inp: jax.lax.scan(body, c, inp, unroll=opts.unroll),
                         prevent_cse=False)
    whole = lambda a: None if a is None else a.reshape((n, S) + a.shape[1:])
    carry, hs = jax.lax.scan(seg, carry, (ts.reshape(n, S), whole(xp), whole(mask), whole(resets)))
    return hs.reshape((n * S,) + hs.shape[2:])[:T], carry


def _unroll_layers(layers, params, xs, carry, opts: _Options):
    """A :func:`~jrnn.cells.stack` run layer by layer (cuDNN's order) instead of step by step.

    Layer ``l`` at step ``t`` reads only layer ``l``'s carry and layer ``l-1``'s
    output at ``t``, so running each layer over the whole sequence in turn
    gives the same values. It lets every layer take the fast path and makes
    each higher layer's input product one ``[T*B, H] x [H, G*H]`` product
    instead of one small product per step. Padded steps output zeros from
    every layer and leave every carry unchanged, as in the step-by-step scan.
    """
    out, finals = xs, []
    rcs = opts.reset_carry or (None,) * len(layers)
    for layer, p, c, rc in zip(layers, params, carry, rcs):
        # every layer's padded inputs are zero: layer 0's were zeroed, higher layers read outputs;
        # every layer resets at the same steps, to its own part of the reset carry
        out, c = _unroll_unchecked(layer, p, out, c, opts._replace(reset_carry=rc), zeroed=True)
        finals.append(c)
    return out, tuple(finals)


def bidirectional(forward: Cell, backward: Cell, params, xs, carry=None, *, lengths=None,
                  **kwargs):
    """Bidirectional RNN (Goodfellow 10.3): a forward and a reversed pass, outputs concatenated.

    Args:
      forward, backward: the two cells.
      params: ``(forward_params, backward_params)``.
      xs: ``[T, B..., D]`` or ids ``[T, B...]``.
      carry: ``(forward_carry, backward_carry)`` or ``None``.
      lengths: optional ``[B...]``; the backward pass starts at each sequence's
        last real step.
      **kwargs: passed to :func:`unroll` (``unroll``, ``remat_every``,
        ``time_major``, ``fast_path``, ``step_mask``, ``resets``, ...). With
        ``resets`` both passes stay within each episode; ``reset_carry``, if
        given, is ``(forward_reset_carry, backward_reset_carry)``.

    Returns:
      ``(hs, (carry_f, carry_b))`` with ``hs`` ``[T, B..., H_f + H_b]``;
      ``hs[t]`` joins the forward state after ``xs[:t+1]`` and the backward
      state after ``xs[t:len]``.
    """
    cf, cb = (None, None) if carry is None else carry
    rf, rb = kwargs.pop("reset_carry", None) or (None, None)
    hf, cf = unroll(forward, params[0], xs, cf, lengths=lengths, reset_carry=rf, **kwargs)
    hb, cb = unroll(backward, params[1], xs, cb, lengths=lengths, reverse=True, reset_carry=rb,
                    **kwargs)
    return jnp.concatenate([hf, hb], axis=-1), (cf, cb)
