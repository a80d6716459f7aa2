"""The fast recurrence of :func:`jrnn.scan.unroll` (private): a scan with a hand-written tangent.

For a cell that supplies ``Cell.fast`` (a :class:`~jrnn.cells.FastRecurrence`;
the ``elman``, ``lstm`` and ``gru`` cells do) the scan is wrapped in a
``jax.custom_jvp``. Its rule

1. runs the forward scan, keeping only the carries (and, for LSTM/GRU, the
   gate activations);
2. computes every step's local derivatives at once, vectorised over time;
3. computes the weight term ``read(c_{t-1}) @ dW`` of all steps as one
   ``[T*B, H] x [H, G*H]`` product outside the loop;
4. runs a lean linear tangent scan: per step one small product
   ``read(dc_{t-1}) @ W`` and a few elementwise ops.

Reverse mode transposes step 4 into a backward scan with one ``[B, G*H] x
[G*H, H]`` product per step, and step 3 into ONE ``[H, T*B] x [T*B, G*H]``
product for the weight gradient (cuDNN's layout). Compared with autodiff of
the plain scan this drops the residual-recomputing loop and most per-step
residual writes. Forward mode and higher derivatives work (the rule is
differentiable). Values and gradients equal those of the plain scan up to
float rounding (``tests/test_fast_path.py``).

Shapes: ``xp`` ``[T, B..., G*H]`` projected inputs, ``mask`` ``[T, B...]``
(real steps) or ``None``, ``gain`` ``[T]`` carry-gradient factors or ``None``,
``resets`` ``[T, B...]`` bool (the carry entering step ``t`` is replaced by
``reset_to``, a carry of batch shape ``B...`` or ``()``) or ``None``;
returns ``(hs [T, B..., H], final carry)``.

Resets: the forward scan applies ``where(resets[t], reset_to, c)`` before each
step, the local derivatives are taken at those reset carries, and the tangent
scan applies the same ``where`` to the carry's tangent (``reset_to``'s tangent
in, the incoming one dropped). Being linear, it transposes to a backward scan
that stops the carry's cotangent at each reset and hands it to ``reset_to``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

__all__ = ["fast_recurrence"]


def where_batch(m, new, old):
    """``where(m, new, old)`` leaf-wise, ``m [B...]`` broadcast over ``old``'s trailing dims
    (``new`` may be unbatched: a reset carry ``[H]``)."""
    return jax.tree.map(
        lambda n, o: jnp.where(m.reshape(m.shape + (1,) * (o.ndim - m.ndim)), n, o), new, old)


def _select(m, new, old):
    return new if m is None else where_batch(m, new, old)


def _fast_scan(split, unroll, params, carry, xp, mask, resets, reset_to, keep):
    """Forward scan; ``keep`` also returns the stacked carries and residuals."""
    W = params[split.weight]

    def body(c, inp):
        x, m, r = inp
        c = _select(r, reset_to, c) if r is not None else c
        new, h, res = split.forward(params, c, x, split.read(c) @ W)
        new = _select(m, new, c)
        if keep:
            return new, (new, res)
        return new, (h if m is None else jnp.where(m[..., None], h, jnp.zeros_like(h)))

    return jax.lax.scan(body, carry, (xp, mask, resets), unroll=unroll)


def _outputs(split, cs, mask):
    """``hs`` from the stacked carries: ``read(c_t)``, zero on padded steps."""
    hs = split.read(cs)
    return hs if mask is None else jnp.where(mask[..., None], hs, jnp.zeros_like(hs))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _fast_recurrence(split, unroll, params, carry, xp, mask, gain, resets, reset_to):
    carry, hs = _fast_scan(split, unroll, params, carry, xp, mask, resets, reset_to, False)
    return hs, carry


@_fast_recurrence.defjvp
def _fast_recurrence_jvp(split, unroll, primals, tangents):
    # gain: [T] factors on the carry's tangent, or None; resets: [T, B...] bool, or None
    params, carry, xp, mask, gain, resets, reset_to = primals
    dparams, dcarry, dxp, _, _, _, dreset_to = tangents
    carry_T, (cs, res) = _fast_scan(split, unroll, params, carry, xp, mask, resets, reset_to, True)
    prev = jax.tree.map(lambda c0, c: jnp.concatenate([c0[None], c[:-1]]), carry, cs)
    if resets is not None:  # the carries entering each step, after the reset
        prev = where_batch(resets, jax.tree.map(
            lambda z, p: jnp.broadcast_to(z, p.shape[1:]).astype(p.dtype), reset_to, prev), prev)
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
        k_t, dx, du_t, m, g, rs = inp
        if g is not None:  # carry_grad_scale: the carry entering this step, scaled (or cut)
            dc = jax.tree.map(lambda a: a * g.astype(a.dtype), dc)
        if rs is not None:  # a reset: the tangent of the reset carry replaces the incoming one
            dc = where_batch(rs, dreset_to, dc)
        r = split.read(dc)
        dzh = jax.lax.dot_general(r, WT, (((r.ndim - 1,), (1,)), ((), ())))
        dnew, dh = split.tangent(k_t, dc, dx, dzh if du_t is None else dzh + du_t)
        return _select(m, dnew, dc), dh

    dcarry_T, dhs = jax.lax.scan(body, dcarry, (k, dxp, du, mask, gain, resets), unroll=unroll)
    if mask is not None:
        dhs = jnp.where(mask[..., None], dhs, jnp.zeros_like(dhs))
    return (_outputs(split, cs, mask), carry_T), (dhs, dcarry_T)


fast_recurrence = _fast_recurrence  # (split, unroll, params, carry, xp, mask, gain, resets,
#                                     reset_to) -> (hs, carry)
