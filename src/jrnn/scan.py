"""Unrolling a cell over time with ``jax.lax.scan``.

All arrays are time-major: ``xs`` is ``[T, B, D]`` (floats) or ``[T, B]``
(token ids); the batch may have any number of dims, or none (``[T, D]``).
``time_major=False`` takes and returns ``[B, T, ...]`` instead.

A :func:`~jrnn.cells.stack` is run layer by layer (each layer over the whole
sequence, then the next), which computes the same values as the stacked step
and lets each layer take the fast path below; hooks and checkpointing keep
the step-by-step scan.

Checkpointing (``checkpoint_every=S``) wraps each segment of ``S`` steps in
``jax.checkpoint``: the backward pass stores only the carries at segment
boundaries and recomputes each segment once (Griewank & Walther 2000,
"Algorithm 799: revolve"; Chen et al. 2016, "Training deep nets with sublinear
memory cost"). ``S ~ sqrt(T)`` keeps ``O(sqrt(T))`` carries instead of every
step's residuals, for about one extra forward pass; the projected inputs and
the outputs ``[T, B, ...]`` are still stored (``jrnn.grads.checkpointed`` also
rematerialises them, with the head and loss, per segment). Checkpointed loops
are reverse-mode only.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import validation
from .cells import Cell, _layers_of, _split_of

__all__ = ["unroll", "bidirectional"]


def _check_lengths(lengths, T: int, batch_shape: tuple):
    lengths = jnp.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths must be integers, got dtype {lengths.dtype}")
    if lengths.shape != batch_shape:
        raise ValueError(f"lengths must have the batch shape {batch_shape}, got {lengths.shape}")
    if not isinstance(lengths, jax.core.Tracer) and lengths.size:
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 1 or hi > T:
            raise ValueError(f"lengths must lie in [1, T={T}], got min {lo} and max {hi}")
    return lengths


def _where_batch(m, new, old):
    """``where(m, new, old)`` leaf-wise, ``m [B...]`` broadcast over trailing dims."""
    return jax.tree.map(
        lambda n, o: jnp.where(m.reshape(m.shape + (1,) * (n.ndim - m.ndim)), n, o), new, old)


def _flip_within(x, lengths):
    """Reverse each sequence within its length: ``[T, B...]`` (an involution)."""
    T = x.shape[0]
    t = jnp.arange(T).reshape((T,) + (1,) * lengths.ndim)
    idx = jnp.where(t < lengths, lengths - 1 - t, t)
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - idx.ndim))
    return jnp.take_along_axis(x, jnp.broadcast_to(idx, x.shape), axis=0)


# ----------------------------------------------------------------------------
# fast path: the recurrence with a hand-written tangent rule
#
# For the cells built by ``elman``, ``lstm`` and ``gru`` (see ``cells._Split``)
# the scan is wrapped in a ``jax.custom_jvp``. Its rule
#   1. runs the forward scan, keeping only the carries (and, for LSTM/GRU, the
#      gate activations);
#   2. computes every step's local derivatives at once, vectorised over time;
#   3. computes the weight term ``read(c_{t-1}) @ dW`` of all steps as one
#      [T*B, H] x [H, G*H] product outside the loop;
#   4. runs a lean linear tangent scan: per step one small product
#      ``read(dc_{t-1}) @ W`` and a few elementwise ops.
# Reverse mode transposes step 4 into a backward scan with one [B, G*H] x
# [G*H, H] product per step, and step 3 into ONE [H, T*B] x [T*B, G*H] product
# for the weight gradient (cuDNN's layout). Compared with autodiff of the plain
# scan this drops the residual-recomputing loop and most per-step residual
# writes. Forward mode and higher derivatives work (the rule is differentiable).
# Values and gradients equal those of the plain scan up to float rounding
# (tests/test_fast_path.py).

_FAST_PATH = True  # private switch, for A/B measurements and tests


def _select(m, new, old):
    return new if m is None else _where_batch(m, new, old)


def _fast_scan(split, unroll, params, carry, xp, mask, keep):
    """Forward scan; ``keep`` also returns the stacked carries and residuals."""
    W = params[split.weight]

    def body(c, inp):
        x, m = inp
        new, h, res = split.forward(params, c, x, split.read(c) @ W)
        new = _select(m, new, c)
        if keep:
            return new, (new, res)
        return new, (h if m is None else jnp.where(m[..., None], h, jnp.zeros_like(h)))

    return jax.lax.scan(body, carry, (xp, mask), unroll=unroll)


def _outputs(split, cs, mask):
    """``hs`` from the stacked carries: ``read(c_t)``, zero on padded steps."""
    hs = split.read(cs)
    return hs if mask is None else jnp.where(mask[..., None], hs, jnp.zeros_like(hs))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _fast_recurrence(split, unroll, params, carry, xp, mask, gain):
    carry, hs = _fast_scan(split, unroll, params, carry, xp, mask, False)
    return hs, carry


@_fast_recurrence.defjvp
def _fast_recurrence_jvp(split, unroll, primals, tangents):
    params, carry, xp, mask, gain = primals  # gain: [T] factors on the carry's tangent, or None
    dparams, dcarry, dxp, _, _ = tangents
    carry_T, (cs, res) = _fast_scan(split, unroll, params, carry, xp, mask, True)
    prev = jax.tree.map(lambda c0, c: jnp.concatenate([c0[None], c[:-1]]), carry, cs)
    k = split.coefficients(params, prev, cs, res)  # [T, B..., ...], all steps at once
    # one big product over all steps, on [T*B, H] rows: its transpose (the weight
    # gradient) then has ONE contracting dim, which XLA:CPU feeds to the GEMM as it
    # is; with the two dims (T, B) it first copies [T, B, G*H] into [G*H, T*B]
    r = split.read(prev)
    du = (r.reshape(-1, r.shape[-1]) @ dparams[split.weight]).reshape(r.shape[:-1] + (-1,))
    if split.extra_dzh is not None:
        du = du + split.extra_dzh(dparams)
    if split.additive:  # one scanned input (and one stacked cotangent) instead of two
        dxp, du = dxp + du, None
    # W^T materialised once: reverse mode then runs ``dz_t @ W^T`` per step as a plain
    # product with W^T (the transposed-operand product is ~1.5x slower on CPU)
    WT = jnp.transpose(params[split.weight])

    def body(dc, inp):
        k_t, dx, du_t, m, g = inp
        if g is not None:  # carry_grad_scale: the carry entering this step, scaled (or cut)
            dc = jax.tree.map(lambda a: a * g.astype(a.dtype), dc)
        r = split.read(dc)
        dzh = jax.lax.dot_general(r, WT, (((r.ndim - 1,), (1,)), ((), ())))
        dnew, dh = split.tangent(k_t, dc, dx, dzh if du_t is None else dzh + du_t)
        return _select(m, dnew, dc), dh

    dcarry_T, dhs = jax.lax.scan(body, dcarry, (k, dxp, du, mask, gain), unroll=unroll)
    if mask is not None:
        dhs = jnp.where(mask[..., None], dhs, jnp.zeros_like(dhs))
    return (_outputs(split, cs, mask), carry_T), (dhs, dcarry_T)


def unroll(cell: Cell, params, xs, carry=None, *, lengths=None, reverse: bool = False,
           unroll: int = 1, checkpoint_every: int | None = None,
           before_step: Callable | None = None, carry_grad_scale=None, time_major: bool = True):
    """Run ``cell`` over a sequence; returns all outputs and the final carry.

    Args:
      cell: a :class:`~jrnn.cells.Cell`.
      params: the cell's params.
      xs: inputs ``[T, B..., D]`` (float) or token ids ``[T, B...]`` (int).
      carry: initial carry with batch shape ``B...``; zeros if ``None``.
      lengths: optional int ``[B...]`` in ``[1, T]``. Step ``t`` of sequence
        ``b`` is real iff ``t < lengths[b]``; padded steps leave the carry
        unchanged and output zeros, so the final carry is the carry after the
        last real step and real outputs equal those of the unpadded sequence.
      reverse: run from the last real step to the first. Outputs stay in the
        input order (``hs[t]`` is the state after reading ``xs[t:len]``), and
        with ``lengths`` each sequence is reversed within its own length.
      unroll: ``lax.scan``'s unroll factor.
      checkpoint_every: if set, ``S``: rematerialise segments of ``S`` steps
        in the backward pass (see module docstring).
      before_step: optional ``(t, carry) -> carry`` applied to the carry
        entering step ``t``. A hook runs the step-by-step scan (no fast path).
      carry_grad_scale: optional ``[T]`` factors: the gradient flowing back
        through the carry entering step ``t`` (scan order) is multiplied by
        ``carry_grad_scale[t]``; forward values are unchanged. ``0`` cuts the
        backward flow there (truncated BPTT), ``1/p`` with probability ``p``
        rescales it (randomized truncation). Unlike a ``before_step`` hook
        doing the same, it keeps the fast path.
      time_major: ``False`` takes ``xs`` as ``[B, T, ...]`` and returns ``hs`` so.

    Returns:
      ``(hs, carry)``: outputs ``[T, B..., H]`` and the final carry.
    """
    if not time_major:
        xs = jnp.swapaxes(jnp.asarray(xs), 0, 1)
    validation._check_params(cell, params)
    layers = _layers_of(cell) if _FAST_PATH and checkpoint_every is None and before_step is None else None
    if layers is not None:
        hs, carry = _unroll_layers(layers, params, xs, carry, lengths, reverse, unroll, carry_grad_scale)
        return hs if time_major else jnp.swapaxes(hs, 0, 1), carry
    xp = cell.project(params, xs)  # [T, B..., G*H], one big product for all steps
    T, batch_shape = xp.shape[0], tuple(xp.shape[1:-1])
    if T < 1:
        raise ValueError(f"xs must have at least one time step, got shape {tuple(jnp.shape(xs))}")
    if carry is None:
        carry = cell.initial_carry(batch_shape)
    else:
        validation._check_carry(cell, carry, batch_shape)
    if lengths is not None:
        lengths = _check_lengths(lengths, T, batch_shape)
    gain = None
    if carry_grad_scale is not None:
        gain = jnp.asarray(carry_grad_scale)
        if gain.shape != (T,) or not jnp.issubdtype(gain.dtype, jnp.floating):
            raise ValueError(f"carry_grad_scale must be a float array of shape [T] = ({T},), got "
                             f"{gain.dtype} {tuple(gain.shape)}")
    if reverse:
        xp = xp[::-1] if lengths is None else _flip_within(xp, lengths)

    S = checkpoint_every
    if S is not None:
        if isinstance(S, bool) or not isinstance(S, (int, np.integer)) or S < 1:
            raise ValueError(f"checkpoint_every must be an integer >= 1, got {S!r}")
        S = min(int(S), T)
        n = -(-T // S)
        if n * S != T:  # pad to whole segments; padded steps are masked out
            xp = jnp.concatenate([xp, jnp.zeros((n * S - T,) + xp.shape[1:], xp.dtype)])
            if gain is not None:
                gain = jnp.concatenate([gain, jnp.ones((n * S - T,), gain.dtype)])
            if lengths is None:
                lengths = jnp.full(batch_shape, T, jnp.int32)

    def body(c, inp):
        t, x = inp
        if gain is not None:  # value unchanged, gradient through the carry scaled
            c = jax.tree.map(lambda a: jax.lax.stop_gradient(a)
                             + gain[t].astype(a.dtype) * (a - jax.lax.stop_gradient(a)), c)
        if before_step is not None:
            c = before_step(t, c)
        new, h = cell.step(params, c, x)
        if lengths is not None:
            m = t < lengths
            new = _where_batch(m, new, c)
            h = jnp.where(m[..., None], h, jnp.zeros_like(h))
        return new, h

    ts = jnp.arange(xp.shape[0])
    split = _split_of(cell) if _FAST_PATH and S is None and before_step is None else None
    if split is not None:
        mask = None if lengths is None else ts.reshape((-1,) + (1,) * lengths.ndim) < lengths
        hs, carry = _fast_recurrence(split, unroll, params, carry, xp, mask, gain)
    elif S is None:
        carry, hs = jax.lax.scan(body, carry, (ts, xp), unroll=unroll)
    else:
        seg = jax.checkpoint(lambda c, inp: jax.lax.scan(body, c, inp, unroll=unroll),
                             prevent_cse=False)
        carry, hs = jax.lax.scan(
            seg, carry, (ts.reshape(n, S), xp.reshape((n, S) + xp.shape[1:])))
        hs = hs.reshape((n * S,) + hs.shape[2:])[:T]

    if reverse:
        hs = hs[::-1] if lengths is None else _flip_within(hs, lengths)
    if not time_major:
        hs = jnp.swapaxes(hs, 0, 1)
    return hs, carry


def _unroll_layers(layers, params, xs, carry, lengths, reverse, unroll_factor, carry_grad_scale):
    """A :func:`~jrnn.cells.stack` run layer by layer (cuDNN's order) instead of step by step.

    Layer ``l`` at step ``t`` reads only layer ``l``'s carry and layer ``l-1``'s
    output at ``t``, so running each layer over the whole sequence in turn
    gives the same values. It lets every layer take the fast path and makes
    each higher layer's input product one ``[T*B, H] x [H, G*H]`` product
    instead of one small product per step. Padded steps output zeros from
    every layer and leave every carry unchanged, as in the step-by-step scan.
    """
    carries = (None,) * len(layers) if carry is None else carry
    if carry is not None and (not isinstance(carry, tuple) or len(carry) != len(layers)):
        raise ValueError(f"a stack of {len(layers)} layers needs a tuple of {len(layers)} carries, "
                         f"got {type(carry).__name__}")
    out, finals = xs, []
    for layer, p, c in zip(layers, params, carries):
        out, c = unroll(layer, p, out, c, lengths=lengths, reverse=reverse, unroll=unroll_factor,
                        carry_grad_scale=carry_grad_scale)
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
      **kwargs: passed to :func:`unroll` (``unroll``, ``checkpoint_every``, ``time_major``).

    Returns:
      ``(hs, (carry_f, carry_b))`` with ``hs`` ``[T, B..., H_f + H_b]``;
      ``hs[t]`` joins the forward state after ``xs[:t+1]`` and the backward
      state after ``xs[t:len]``.
    """
    cf, cb = (None, None) if carry is None else carry
    hf, cf = unroll(forward, params[0], xs, cf, lengths=lengths, **kwargs)
    hb, cb = unroll(backward, params[1], xs, cb, lengths=lengths, reverse=True, **kwargs)
    return jnp.concatenate([hf, hb], axis=-1), (cf, cb)
