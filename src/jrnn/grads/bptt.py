"""The BPTT family: autodiff through the scan (full, truncated, tbptt, randomized, checkpointed).

Resets (``Batch.resets``): every member unrolls with them (``unroll``'s
``resets``, on the fast path), so the gradient is cut at each episode start
and the carry restarts from the cell's initial carry: a packed stream gets
the gradient of its episodes run separately (with truncation's cuts, tbptt's
split and checkpointed's segments where they fall in the stream).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .. import scan, validation
from ..models import _check_step_inputs, _sequence_loss, loss_weights, refuse_whole_sequence
from .base import GradientEstimator, _cell_carry, _check_key, register

__all__ = ["full", "truncated", "tbptt", "randomized", "checkpointed"]


# ----------------------------------------------------------------------------
# BPTT family: autodiff through the scan; truncation scales the carry's gradient
# (``unroll(carry_grad_scale=...)``), which keeps unroll's fast path


def _bptt(name: str, unroll_kwargs: Callable) -> GradientEstimator:
    """``unroll_kwargs(key, T) -> dict`` of ``unroll`` / ``gain`` (``carry_grad_scale``)."""

    def value_and_grad(model, params, carry, batch, key):
        _check_step_inputs(model, params, carry, batch)
        kw = unroll_kwargs(key, jnp.shape(batch.inputs)[0])
        (loss, new_carry), grads = jax.value_and_grad(
            lambda p: _sequence_loss(model, p, carry, batch, **kw), has_aux=True)(params)
        return loss, grads, jax.lax.stop_gradient(new_carry), {}

    return GradientEstimator(_cell_carry, value_and_grad, name)


def full(unroll: int = 1) -> GradientEstimator:
    """Full backpropagation through time: autodiff through the whole ``lax.scan``.

    Args:
      unroll: ``lax.scan``'s unroll factor (speed only; same gradient).

    References: Werbos 1990, "Backpropagation through time: what it does and how to do it".
    """
    unroll = validation.check_int("unroll", unroll)
    return _bptt("full", lambda key, T: {"unroll": unroll})


def truncated(K: int, unroll: int = 1) -> GradientEstimator:
    """Regular truncation (d2l 8.7.1.2): the backward flow is cut every ``K`` steps.

    The gradient through the carry entering steps ``0, K, 2K, ...`` is cut
    (``unroll(carry_grad_scale=...)``, on unroll's fast path), so
    each loss term back-propagates at most ``K`` steps (to its chunk's start):
    the gradient is the sum over chunks of each chunk's gradient with its
    incoming carry held fixed (TBPTT(K, K)). Forward values and the head's
    gradient are unchanged; ``K >= T`` is exactly full BPTT.

    Args:
      K: truncation length, an integer >= 1.
      unroll: ``lax.scan``'s unroll factor.

    References: Williams & Peng 1990, "An efficient gradient-based algorithm
      for on-line training of recurrent network trajectories"; Jaeger 2002 (d2l's citation).
    """
    K = validation.check_int("K (truncation length)", K)
    unroll = validation.check_int("unroll", unroll)

    def kwargs(key, T):  # 0 at steps 0, K, 2K, ...: the backward flow stops there
        return {"gain": (jnp.arange(T) % K != 0).astype(jnp.float32), "unroll": unroll}

    return _bptt(f"truncated:{K}", kwargs)


def tbptt(k2: int, k1: int | None = None, unroll: int = 1) -> GradientEstimator:
    """TBPTT(k1, k2) (Williams & Peng 1990; Sutskever 2013, sec. 2.8.6): one update per
    ``k1`` steps, back-propagating only the last ``k2`` of them.

    A batch of ``T = k1`` steps is run forward in two parts: the first
    ``T - k2`` steps outside autodiff (they store no residuals: no memory, no
    backward work), then the last ``k2`` steps differentiated, from the carry
    the first part left (held constant). The gradient is that of the mean
    loss over those last ``k2`` positions; the reported loss is the mean over
    all ``T``. Cost per update: ``T`` forward steps and ``k2`` backward steps,
    residual memory ``O(k2)`` instead of ``O(T)``. ``k2 >= T`` is exactly
    full BPTT.

    When to use which: ``truncated:K`` keeps every position's loss and cuts
    the gradient every ``K`` steps inside one scan (it costs what full BPTT
    costs); ``tbptt:k2`` drops the gradient of the first ``T - k2`` positions
    and saves their backward pass and memory (a long stream updated every
    ``k1`` steps with a short look-back).

    Args:
      k2: back-propagation depth, an integer >= 1.
      k1: the update interval; if given, every batch must have ``T == k1``
        steps (``--num-steps`` sets ``T``).
      unroll: ``lax.scan``'s unroll factor.
    """
    k2 = validation.check_int("k2 (back-propagation depth)", k2)
    k1 = validation.check_int("k1 (update interval)", k1, allow_none=True)
    unroll = validation.check_int("unroll", unroll)
    if k1 is not None and k2 > k1:
        raise ValueError(f"tbptt needs k2 <= k1, got k1={k1}, k2={k2} (use full or truncated)")

    def value_and_grad(model, params, carry, batch, key):
        refuse_whole_sequence(model, f"tbptt:{k1},{k2}" if k1 else f"tbptt:{k2}")
        _check_step_inputs(model, params, carry, batch)
        T = jnp.shape(batch.inputs)[0]
        if k1 is not None and T != k1:
            raise ValueError(f"tbptt(k1={k1}) needs batches of T={k1} steps, got T={T}")
        n0 = T - min(k2, T)
        w = loss_weights(batch)  # [T, B], sums to one over the whole batch
        loss0, mid = jnp.zeros((), w.dtype), carry
        if n0 > 0:  # forward only: nothing of it is differentiated, so nothing is stored
            loss0, mid = _sequence_loss(model, params, carry, _piece(batch, w, 0, n0), unroll=unroll)
        w_tail = w[n0:]
        scale = 1.0 / jnp.maximum(w_tail.sum(), 1e-30)  # the mean over the last k2 positions

        def tail(p):
            l, c = _sequence_loss(model, p, mid, _piece(batch, w, n0, T), unroll=unroll)
            return l * scale, (l, c)

        (_, (loss1, new_carry)), grads = jax.value_and_grad(tail, has_aux=True)(params)
        return loss0 + loss1, grads, jax.lax.stop_gradient(new_carry), {}

    name = f"tbptt:{k2}" if k1 is None else f"tbptt:{k1},{k2}"
    return GradientEstimator(_cell_carry, value_and_grad, name)


def _piece(batch, w, lo: int, hi: int):
    """Steps ``lo:hi`` of ``batch`` weighted by the whole batch's ``w`` (they sum to at most one,
    so ``loss_weights`` keeps them as they are: ``_sequence_loss`` is ``sum(loss_t * w_t)``)."""
    from ..data.batches import Batch

    resets = None if batch.resets is None else batch.resets[lo:hi]
    return Batch(batch.inputs[lo:hi], batch.targets[lo:hi], w[lo:hi], resets)


def _tbptt_spec(arg: str):
    """``"K2"`` or ``"K1,K2"`` -> tbptt's arguments."""
    parts = [int(a) for a in arg.split(",")]
    if len(parts) == 1:
        return {"k2": parts[0]}
    if len(parts) == 2:
        return {"k1": parts[0], "k2": parts[1]}
    raise ValueError(arg)


def randomized(p: float, unroll: int = 1) -> GradientEstimator:
    """Randomized truncation (d2l 8.7.1.3): unbiased, stochastic backward flow.

    The backward flow into the carry entering each step is multiplied by
    ``xi_t``, with ``P(xi_t = 1/p) = p`` and ``P(xi_t = 0) = 1 - p``
    (independent across steps, shared across the batch, drawn from ``key``).
    A path from a loss term back ``k`` steps is scaled by a product of ``k``
    independent ``xi`` with mean one, so the gradient is unbiased; its
    variance grows like ``p^-k``. Forward values are unchanged; ``p = 1`` is
    exactly full BPTT.

    Args:
      p: keep probability in ``(0, 1]``.
      unroll: ``lax.scan``'s unroll factor.

    References: Tallec & Ollivier 2017, "Unbiasing truncated backpropagation through time".
    """
    if (isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating))
            or not 0.0 < float(p) <= 1.0):
        raise ValueError(f"p (keep probability) must lie in (0, 1], got {p!r}")
    p = float(p)
    unroll = validation.check_int("unroll", unroll)

    def kwargs(key, T):
        _check_key(f"randomized:{p:g}", key)
        xi = jax.random.bernoulli(key, p, (T,)).astype(jnp.float32) / p
        return {"gain": xi, "unroll": unroll}

    return _bptt(f"randomized:{p:g}", kwargs)


def checkpointed(S: int | None = None, unroll: int = 1, budget: float | str | None = None
                 ) -> GradientEstimator:
    """Full BPTT with ``jax.checkpoint`` over segments of ``S`` steps.

    Same gradient as :func:`full` (up to float rounding). Each segment -- the
    input projection, the recurrence, the head and the loss of its ``S``
    steps -- is one ``jax.checkpoint``-ed function of the carry entering it,
    so the backward pass keeps only the ``ceil(T/S)`` segment-boundary carries
    (plus the inputs) and recomputes one segment at a time: memory ``O(T/S +
    S)`` steps instead of ``O(T)``, for about one extra forward pass.
    ``S=None`` picks ``round(sqrt(T))``; ``S`` need not divide ``T`` (the
    remainder is a shorter last segment).

    With a memory ``budget`` (bytes, or a string such as ``"2GiB"``), ``S``
    is chosen per batch shape: the largest segment length whose gradient
    computation XLA plans within the budget (its temporary buffers: what the
    backward pass keeps, not params or optimizer state), found by compiling
    the candidates ``T, T/2, T/4, ...`` down to ``sqrt(T)`` abstractly once per
    shape (``memory_analysis``, no FLOPs run); ``S = T`` is plain full BPTT.
    No candidate within the budget raises ``ValueError`` naming the smallest.

    Args:
      S: segment length, an integer >= 1, or ``None``.
      unroll: ``lax.scan``'s unroll factor.
      budget: bytes (> 0) or a size string (``"512MiB"``, ``"2GiB"``, ``"1.5GB"``);
        excludes ``S``.

    References: Chen et al. 2016, "Training deep nets with sublinear memory cost";
      Griewank & Walther 2000, "Algorithm 799: revolve".
    """
    if S is not None:
        S = validation.check_int("S (segment length)", S)
    unroll = validation.check_int("unroll", unroll)
    if budget is not None:
        if S is not None:
            raise ValueError("checkpointed takes a segment length S or a memory budget, not both")
        budget = _bytes(budget)
    chosen: dict = {}  # (shapes) -> S picked for the budget

    def segments(T, model, params, carry, batch):
        if budget is None:
            return min(S or max(1, int(round(T ** 0.5))), T)
        sig = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)),
                           (params, carry, batch))
        k = (model, str(jax.tree.structure(sig)), str(jax.tree.leaves(sig)))
        if k not in chosen:
            chosen[k] = _segment_for_budget(model, sig, T, budget, unroll, grad_fn)
        return chosen[k]

    def value_and_grad(model, params, carry, batch, key):
        refuse_whole_sequence(model, "checkpointed")
        _check_step_inputs(model, params, carry, batch)  # ids too: the segments gather traced
        T = jnp.shape(batch.inputs)[0]
        L = segments(T, model, params, carry, batch)
        return grad_fn(model, params, carry, batch, L)

    def grad_fn(model, params, carry, batch, L):
        T = jnp.shape(batch.inputs)[0]
        if L >= T and budget is not None:  # the whole sequence fits: plain full BPTT, no recompute
            (loss_value, new_carry), grads = jax.value_and_grad(
                lambda p: _sequence_loss(model, p, carry, batch, unroll=unroll), has_aux=True)(params)
            return loss_value, grads, jax.lax.stop_gradient(new_carry), {}
        n = T // L
        w = loss_weights(batch)

        resets = None if batch.resets is None else jnp.asarray(batch.resets)

        def segment(p, c, xs, ys, ws, rs):
            hs, c = scan._unroll_unchecked(model.cell, p["cell"], xs, c,
                                           scan._Options(unroll=unroll, resets=rs))
            return c, jnp.sum(model.loss(model.head(p["head"], hs), ys) * ws)

        in_scan = jax.checkpoint(segment, prevent_cse=False)  # scan already blocks CSE

        def loss(p):
            whole = lambda a: None if a is None else jnp.reshape(a[:n * L], (n, L) + jnp.shape(a)[1:])
            rest = lambda a: None if a is None else a[n * L:]
            c, ls = jax.lax.scan(lambda c, seg: in_scan(p, c, *seg), carry,
                                 (whole(batch.inputs), whole(batch.targets), whole(w), whole(resets)))
            total = jnp.sum(ls)
            if n * L < T:  # the remainder: one shorter segment
                c, l = jax.checkpoint(segment)(p, c, rest(batch.inputs), rest(batch.targets),
                                               rest(w), rest(resets))
                total = total + l
            return total, c

        with validation._trusted():  # checked above
            (loss_value, new_carry), grads = jax.value_and_grad(loss, has_aux=True)(params)
        return loss_value, grads, jax.lax.stop_gradient(new_carry), {}

    name = f"checkpointed:{S or 'sqrt'}" if budget is None else f"checkpointed:budget={budget / 2 ** 20:g}MiB"
    return GradientEstimator(_cell_carry, value_and_grad, name)


_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2 ** 10, "mib": 2 ** 20,
          "gib": 2 ** 30}


def _bytes(size) -> float:
    """``2 ** 31``, ``"2GiB"``, ``"1.5 GB"`` -> bytes (> 0)."""
    import re

    if isinstance(size, str):
        m = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", size)
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"budget must be a number of bytes or a size like '2GiB', got {size!r}")
        size = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)) or not size > 0:
        raise ValueError(f"budget must be > 0 bytes, got {size!r}")
    return float(size)


def _segment_for_budget(model, sig, T: int, budget: float, unroll: int, grad_fn) -> int:
    """The largest candidate segment length whose gradient's temporaries fit ``budget``."""
    params, carry, batch = sig
    # memory falls with S down to about sqrt(T) (fewer residuals per segment), then rises
    # again (more boundary carries): the candidates stop at sqrt(T)
    root = max(1, int(round(T ** 0.5)))
    cands = sorted({T // 2 ** i for i in range(int(np.log2(T)) + 1) if T // 2 ** i > root} | {root},
                   reverse=True)
    seen = []
    for L in cands:
        f = jax.jit(lambda p, c, b: grad_fn(model, p, c, b, L)[:2])
        temp = f.lower(params, carry, batch).compile().memory_analysis().temp_size_in_bytes
        if temp <= budget:
            return L
        seen.append((temp, L))
    temp, L = min(seen)
    raise ValueError(f"checkpointed: no segment length fits the memory budget of {budget / 2 ** 20:.4g} "
                     f"MiB for T={T}; the least found needs {temp / 2 ** 20:.4g} MiB (S={L})")


register("full", full, usage="full")
register("truncated", truncated, int, required=True, usage="truncated:K")
register("tbptt", lambda kw: tbptt(**kw), _tbptt_spec, required=True, usage="tbptt:K2 | tbptt:K1,K2")
register("randomized", randomized, float, required=True, usage="randomized:P")
def _checkpointed_spec(arg: str):
    """``"16"`` -> ``{"S": 16}``; ``"budget=2GiB"`` -> ``{"budget": "2GiB"}``."""
    if arg.startswith("budget="):
        return {"budget": arg[len("budget="):]}
    return {"S": int(arg)}


register("checkpointed", lambda kw=None: checkpointed(**(kw or {})), _checkpointed_spec,
         usage="checkpointed[:S | :budget=SIZE]")
