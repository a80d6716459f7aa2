"""Exact online learning for element-wise recurrences: RTRL at ``O(P)`` memory (``diag-rtrl``).

In an element-wise (diagonal) recurrent cell (:mod:`jrnn.lru`: the LRU, IndRNN,
or any cell declared with :func:`jrnn.lru.declare_elementwise`) unit ``i``'s
``K`` carry entries depend on the previous carry only through unit ``i`` and
on a recurrent parameter only if the parameter's last-axis index is ``i``.
The RTRL influence ``M_t = d s_t / d theta`` then has one non-zero per
parameter and carry block: ``M[k, p] = d s_{k, u(p)} / d theta_p`` (``u(p)``
the parameter's unit), and the recursion ``M_t = J_s M_{t-1} + J_theta``
closes on it exactly:

.. math::
    M_t[k, p] = \\sum_{k'} \\frac{\\partial s_{t, k, u(p)}}{\\partial s_{t-1, k', u(p)}}
                M_{t-1}[k', p] + \\frac{\\partial s_{t, k, u(p)}}{\\partial \\theta_p}

Both factors are computed per step on the whole batch without any Jacobian
matrix: the ``K x K`` per-unit blocks of ``J_s`` come from ``K`` JVPs with
block-ones tangents (one per carry block; exact because ``J_s`` is
block-diagonal), the immediate term from one JVP per row of each recurrent
parameter ``[L..., N]``, with a tangent that is one on that row for every unit
(unit ``i`` moves only through its own column, so the row's tangent gives each
unit's derivative at once). The
gradient is accumulated online as ``g += dl_t/dtheta|_imm + (dl_t/ds_{t-1}) M_{t-1}``
(the same scheme as :func:`jrnn.grads.rtrl`). Memory: ``B K P_rec`` floats
(``P_rec`` the recurrent params; the readout's none), independent of ``T``;
time per step: a few step evaluations. For one element-wise layer the
gradient equals full BPTT's (and RTRL's) to float rounding, with and without
resets.

Stacks (``jrnn.stack`` of element-wise layers, ``diag_rtrl(stack="spatial")``)
get Zucchet et al.'s approximation: each layer keeps its own influence (the
layer's input sequence treated as fixed), and the error at time ``t`` reaches
a lower layer only through the layers above at the same step ("spatial"
backpropagation). It drops every path that crosses layers *and* time, so it
is biased for more than one layer; ``stack="refuse"`` (the default) refuses
stacks. Dense cells (Elman, GRU, LSTM, LN cells) are refused: their ``J_s`` is
not diagonal (use ``rtrl``, ``snap1`` or ``uoro``).

Resets (``Batch.resets``) restart the state and zero the influence, as in
:mod:`jrnn.grads.online`; across batches the influence is carried (online
learning), and a fresh ``init_carry`` gives BPTT's gradient.

References: Zucchet, Meier, Schug, Mujika & Sacramento 2023, "Online learning
of long-range dependencies" (NeurIPS); Irie, Gopalakrishnan & Schmidhuber
2023, "Exploring the promise and limits of real-time recurrent learning";
Williams & Zipser 1989 (RTRL).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import validation
from ..lru import ElementwiseSpec, elementwise_spec
from ..models import Model, loss_weights, refuse_whole_sequence
from .base import GradientEstimator, OnlineCarry, register

__all__ = ["diag_rtrl"]

STACK_MODES = ("refuse", "spatial")


# ----------------------------------------------------------------------------
# the cell's structure: layers, their specs, carries as [B, K, N] blocks


def _layers(model: Model, name: str, stack: str):
    """``(layer cells, their ElementwiseSpecs)``; refuses what the rule cannot train."""
    cell = model.cell
    layers = (cell,) if cell.layers is None else tuple(cell.layers)
    if len(layers) > 1 and stack == "refuse":
        raise ValueError(
            f"{name}: cell {cell.name!r} is a stack of {len(layers)} layers; the exact rule is per "
            f"layer, and across layers only Zucchet et al.'s approximation exists (errors cross "
            f"layers within a step only): ask for it with diag_rtrl(stack='spatial') "
            f"('diag-rtrl:spatial'), or train the stack with full BPTT or rtrl")
    specs = tuple(elementwise_spec(c) for c in layers)
    for c, s in zip(layers, specs):
        if s is None:
            raise ValueError(
                f"{name} needs element-wise cells (a diagonal recurrence: jrnn.lru.lru, "
                f"jrnn.lru.indrnn, or a cell declared with jrnn.lru.declare_elementwise); cell "
                f"{c.name!r} is not declared element-wise (a dense recurrence couples its units: "
                f"use rtrl, snap1 or uoro)")
    return layers, specs


def _check_layer(name, cell, spec: ElementwiseSpec, params, carry_size):
    if carry_size != spec.blocks * spec.units:
        raise ValueError(f"{name}: cell {cell.name!r} declares {spec.blocks} blocks of "
                         f"{spec.units} units but its carry has {carry_size} entries")
    for key in spec.recurrent:
        if key not in params:
            raise ValueError(f"{name}: cell {cell.name!r} declares recurrent param {key!r}, "
                             f"which its params lack (keys {sorted(params)})")
        shape = jnp.shape(params[key])
        if not shape or shape[-1] != spec.units:
            raise ValueError(f"{name}: recurrent param {key!r} of cell {cell.name!r} must have "
                             f"last axis {spec.units} (its units), got shape {shape}")


def _flat(carry, bdims: int):
    """Carry leaves ``[B..., ...]`` -> ``[B..., size]`` (``ravel_pytree`` order)."""
    leaves = jax.tree.leaves(carry)
    return jnp.concatenate([l.reshape(l.shape[:bdims] + (-1,)) for l in leaves], axis=-1)


def _unflat(flat, like, bdims: int):
    """Inverse of :func:`_flat`: ``[B..., size]`` -> a carry shaped like ``like``."""
    leaves, treedef = jax.tree.flatten(like)
    out, i = [], 0
    for l in leaves:
        n = l[(0,) * bdims].size if bdims else l.size
        out.append(flat[..., i:i + n].reshape(l.shape).astype(l.dtype))
        i += n
    return jax.tree.unflatten(treedef, out)


def _split(model: Model, cell_params, carry):
    """Per-layer params and carries (one layer: 1-tuples)."""
    if model.cell.layers is None:
        return (cell_params,), (carry,)
    return tuple(cell_params), tuple(carry)


def _zero_influence(specs, layer_params, B, dtype):
    return tuple({k: jnp.zeros((B, s.blocks) + jnp.shape(p[k]), dtype) for k in s.recurrent}
                 for s, p in zip(specs, layer_params))


# ----------------------------------------------------------------------------
# the estimator


def _layer_traces(cell, spec, p, s, inp, M, B: int) -> dict:
    """One element-wise layer's step: its diagonal ``J_s`` blocks and immediate influence
    -> the new influence ``M`` (``key -> [B, K, *param.shape]``)."""
    K, N = spec.blocks, spec.units
    step = lambda p, s, x: _flat(cell.apply(p, s, x)[0], 1)  # [B, K*N]
    # J_s blocks: tangent ones on carry block j gives, per unit i, d s'_{k,i}/d s_{j,i}
    eye = jnp.eye(K, dtype=_flat(s, 1).dtype)
    tangents = jnp.broadcast_to(jnp.repeat(eye, N, axis=1)[:, None], (K, B, K * N))
    _, lin = jax.linearize(lambda s: step(p, s, inp), s)
    Js = jax.vmap(lambda t: lin(_unflat(t, s, 1)))(tangents)  # [K(j), B, K*N]
    Js = Js.reshape(K, B, K, N).transpose(1, 2, 0, 3)  # [B, k, j, N]

    # immediate influence, on the whole batch: a tangent that is one on row l of a
    # param [L..., N] for every unit i moves unit i only through theta_{l,i}, so one JVP
    # per row gives d s'_{k,i} / d theta_{l,i} for all i (no per-example Jacobians)
    rec = {k: p[k] for k in spec.recurrent}
    _, lin_p = jax.linearize(lambda r: step({**p, **r}, s, inp), rec)
    zero = jax.tree.map(jnp.zeros_like, rec)
    imm = {}
    for k in spec.recurrent:
        shape = jnp.shape(rec[k])
        L = int(np.prod(shape[:-1], dtype=int))
        rows = jnp.broadcast_to(jnp.eye(L, dtype=rec[k].dtype)[:, :, None], (L, L, N))
        out = jax.vmap(lambda t, k=k, shape=shape: lin_p({**zero, k: t.reshape(shape)}))(
            rows)  # [L, B, K*N]
        imm[k] = out.reshape(L, B, K, N).transpose(1, 2, 0, 3).reshape((B, K) + shape)
    new = {}
    for k in spec.recurrent:
        m = M[k].reshape(B, K, -1, N)
        m = jnp.einsum("bkjn,bjln->bkln", Js, m)
        new[k] = m.reshape(M[k].shape) + imm[k]
    return new


def diag_rtrl(stack: str = "refuse") -> GradientEstimator:
    """Exact RTRL for element-wise recurrent cells at ``O(P)`` memory (module docstring).

    Args:
      stack: ``"refuse"`` (default): only single element-wise layers, where
        the gradient is exact. ``"spatial"``: also stacks of element-wise
        layers, with Zucchet et al.'s per-layer approximation (biased).

    Returns:
      A :class:`GradientEstimator` named ``"diag-rtrl"`` (``"diag-rtrl:spatial"``),
      whose carry is an :class:`OnlineCarry` with ``influence`` a tuple (one
      entry per layer) of dicts ``key -> [B, K, *param.shape]``.

    References: Zucchet et al. 2023, "Online learning of long-range dependencies" (NeurIPS).
    """
    if stack not in STACK_MODES:
        raise ValueError(f"stack must be one of {STACK_MODES}, got {stack!r}")
    name = "diag-rtrl" if stack == "refuse" else f"diag-rtrl:{stack}"

    def check(model, params, carry_state, batch_shape):
        refuse_whole_sequence(model, name)
        layers, specs = _layers(model, name, stack)
        lp, lc = _split(model, params["cell"], carry_state)
        for c, s, p, st in zip(layers, specs, lp, lc):
            _check_layer(name, c, s, p, _flat(st, len(batch_shape)).shape[-1])
        return layers, specs, lp

    def init_carry(model, params, batch_shape):
        batch_shape = tuple(batch_shape)
        if len(batch_shape) != 1:
            raise ValueError(f"{name} takes batch_shape (B,), got {batch_shape}")
        state = model.cell.initial_carry(batch_shape)
        _, specs, lp = check(model, params, state, batch_shape)
        dtype = jax.tree.leaves(lp[0])[0].dtype
        return OnlineCarry(state, _zero_influence(specs, lp, batch_shape[0], dtype))

    def value_and_grad(model, params, carry, batch, key):
        if not isinstance(carry, OnlineCarry):
            raise TypeError(f"{name} needs the OnlineCarry made by its init_carry, "
                            f"got {type(carry).__name__}")
        validation.check_batch(model, batch)
        validation.check_model_params(model, params)
        B = jnp.shape(batch.inputs)[1]
        validation.check_carry(model.cell, carry.state, (B,), "carry.state")
        layers, specs, lp = check(model, params, carry.state, (B,))
        dtype = jax.tree.leaves(lp[0])[0].dtype
        validation.check_tree("carry.influence", carry.influence,
                              _zero_influence(specs, lp, B, dtype))
        w = loss_weights(batch)  # [T, B], sums to one
        resets = None if batch.resets is None else jnp.asarray(batch.resets)
        fresh = model.cell.initial_carry((B,))

        def loss_t(cell_params, head, state, x, y, wt):
            state, h = model.cell.apply(cell_params, state, x)
            return jnp.sum(wt * model.loss(model.head(head, h), y)), state

        def body(acc, inp):
            state, M, g_cell, g_head, loss = acc
            x, y, wt, r = inp
            if r is not None:  # an episode starts: fresh state, zero influence
                state = jax.tree.map(lambda f, s: jnp.where(r.reshape((B,) + (1,) * (s.ndim - 1)),
                                                            f, s), fresh, state)
                M = jax.tree.map(lambda a: jnp.where(r.reshape((B,) + (1,) * (a.ndim - 1)),
                                                     jnp.zeros_like(a), a), M)
            # the loss at t, its immediate gradients and g_s = dl_t / ds_{t-1} (the whole stack)
            (lt, new_state), (gc, gh, gs) = jax.value_and_grad(
                loss_t, argnums=(0, 1, 2), has_aux=True)(params["cell"], params["head"], state,
                                                         x, y, wt)
            lgc, lgs = (list(t) for t in _split(model, gc, gs))
            layer_states = _split(model, params["cell"], state)[1]
            new_M, inp_l = [], x
            for l, (c, s, p, m) in enumerate(zip(layers, layer_states, lp, M)):
                # history term (dl_t / ds_{t-1}) M_{t-1}: unit u(p)'s entries only
                K, N = specs[l].blocks, specs[l].units
                e = _flat(lgs[l], 1).reshape(B, K, N)
                hist = {k: jnp.einsum("bkn,bkln->ln", e, m[k].reshape(B, K, -1, N))
                        .reshape(jnp.shape(p[k])) for k in specs[l].recurrent}
                lgc[l] = {**lgc[l], **{k: lgc[l][k] + hist[k] for k in hist}}
                new_M.append(_layer_traces(c, specs[l], p, s, inp_l, m, B))
                if l + 1 < len(layers):  # the next layer reads this one's output of this step
                    inp_l = jax.lax.stop_gradient(c.apply(p, s, inp_l)[1])
            gc = lgc[0] if model.cell.layers is None else tuple(lgc)
            g_cell = jax.tree.map(jnp.add, g_cell, gc)
            g_head = jax.tree.map(jnp.add, g_head, gh)
            return (new_state, tuple(new_M), g_cell, g_head, loss + lt), None

        zeros = lambda t: jax.tree.map(jnp.zeros_like, t)
        loss0 = jnp.zeros((), jnp.result_type(w.dtype, jax.tree.leaves(params)[0].dtype))
        (state, M, g_cell, g_head, loss), _ = jax.lax.scan(
            body, (carry.state, carry.influence, zeros(params["cell"]), zeros(params["head"]),
                   loss0), (batch.inputs, batch.targets, w, resets))
        new = OnlineCarry(jax.lax.stop_gradient(state), jax.lax.stop_gradient(M))
        return loss, {"cell": g_cell, "head": g_head}, new, {}

    return GradientEstimator(init_carry, value_and_grad, name)


def _parse_stack(arg: str) -> str:
    if arg not in STACK_MODES:
        raise ValueError(f"expected one of {STACK_MODES}")
    return arg


register("diag-rtrl", diag_rtrl, arg=_parse_stack, usage="diag-rtrl[:spatial]")
