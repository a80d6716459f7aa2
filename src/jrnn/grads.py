"""Gradient estimators for recurrent nets ("BPTT variants") behind one interface.

Every estimator is a :class:`GradientEstimator`, a NamedTuple of two pure
functions (in the spirit of ``optax.GradientTransformation``):

- ``init_carry(model, params, batch_shape) -> carry``: the state an estimator
  carries across steps and minibatches: the cell's carry for the BPTT family,
  an :class:`OnlineCarry` (cell carry + influence) for RTRL, UORO and SnAp.
- ``value_and_grad(model, params, carry, batch, key) -> (loss, grads, carry, aux)``:
  the mean loss on a time-major :class:`~jrnn.models.Batch`, an estimate of
  its gradient w.r.t. ``params`` (the head always gets its exact gradient),
  the carry after the batch (no gradient flows into it) and a dict of scalars.

Hyper-parameters are closed over by the constructors and checked eagerly:
``full()``, ``truncated(K)``, ``randomized(p)``, ``checkpointed(S)``,
``rtrl()``, ``uoro()``, ``snap1()``; :func:`parse` reads ``"truncated:35"``.

The online estimators treat the batch as a stream: they walk it one step at a
time, keeping ``M_t = d s_t / d theta`` (the influence of the cell params on the
flattened carry ``s_t``) exactly (RTRL) or approximately (UORO, SnAp-1), and
accumulate ``g += dl_t/d theta|_immediate + dl_t/d s_{t-1} M_{t-1}``. Their
``mask`` only weights the loss; they do not take ``lengths``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .models import Batch, Model, loss_weights, sequence_loss

__all__ = [
    "GradientEstimator", "OnlineCarry", "full", "truncated", "randomized", "checkpointed",
    "rtrl", "uoro", "snap1", "parse", "ESTIMATORS",
]


class GradientEstimator(NamedTuple):
    """One interface for every gradient estimator (see module docstring)."""

    init_carry: Callable[..., Any]
    value_and_grad: Callable[..., tuple]
    name: str


class OnlineCarry(NamedTuple):
    """Carry of an online estimator.

    Attributes:
      state: the cell's carry ``[B, ...]``.
      influence: the estimator's running influence: RTRL ``[B, N, P]``; UORO
        ``(s_tilde [B, N], theta_tilde [B, P])``; SnAp-1 ``[B, K, P]``.
    """

    state: Any
    influence: Any


def _cell_carry(model: Model, params, batch_shape):
    return model.cell.initial_carry(tuple(batch_shape))


# ----------------------------------------------------------------------------
# BPTT family: autodiff through the scan, with a hook on the carry


def _bptt(name: str, unroll_kwargs: Callable) -> GradientEstimator:
    """``unroll_kwargs(key, T) -> dict`` of options for :func:`~jrnn.unroll.unroll`."""

    def value_and_grad(model, params, carry, batch, key):
        kw = unroll_kwargs(key, jnp.shape(batch.inputs)[0])
        (loss, new_carry), grads = jax.value_and_grad(
            lambda p: sequence_loss(model, p, carry, batch, **kw), has_aux=True)(params)
        return loss, grads, jax.lax.stop_gradient(new_carry), {}

    return GradientEstimator(_cell_carry, value_and_grad, name)


def _check_int(name, v):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    return int(v)


def full(unroll: int = 1) -> GradientEstimator:
    """Full backpropagation through time: autodiff through the whole ``lax.scan``.

    References: Werbos 1990, "Backpropagation through time: what it does and how to do it".
    """
    return _bptt("full", lambda key, T: {"unroll": unroll})


def truncated(K: int, unroll: int = 1) -> GradientEstimator:
    """Regular truncation (d2l 8.7.1.2): the backward flow is cut every ``K`` steps.

    ``stop_gradient`` is applied to the carry entering steps ``K, 2K, ...``, so
    each loss term back-propagates at most ``K`` steps (to its chunk's start).
    Forward values are unchanged; ``K >= T`` is exactly full BPTT.

    References: Williams & Peng 1990; Jaeger 2002 (d2l's citation).
    """
    K = _check_int("K (truncation length)", K)

    def hook(t, c):
        cut = (t % K == 0)
        return jax.tree.map(lambda x: jnp.where(cut, jax.lax.stop_gradient(x), x), c)

    return _bptt(f"truncated:{K}", lambda key, T: {"before_step": hook, "unroll": unroll})


def randomized(p: float, unroll: int = 1) -> GradientEstimator:
    """Randomized truncation (d2l 8.7.1.3): unbiased, stochastic backward flow.

    The backward flow into the carry entering each step is multiplied by
    ``xi_t``, with ``P(xi_t = 1/p) = p`` and ``P(xi_t = 0) = 1 - p``
    (independent across steps, shared across the batch). Forward values are
    unchanged and ``E[xi] = 1``, so the gradient is unbiased; ``p = 1`` is full BPTT.

    References: Tallec & Ollivier 2017, "Unbiasing truncated backpropagation through time".
    """
    if not isinstance(p, (int, float, np.floating)) or not 0.0 < float(p) <= 1.0:
        raise ValueError(f"p (keep probability) must lie in (0, 1], got {p!r}")
    p = float(p)

    def kwargs(key, T):
        xi = jax.random.bernoulli(key, p, (T,)).astype(jnp.float32) / p

        def hook(t, c):
            return jax.tree.map(
                lambda x: jax.lax.stop_gradient(x) + xi[t] * (x - jax.lax.stop_gradient(x)), c)

        return {"before_step": hook, "unroll": unroll}

    return _bptt(f"randomized:{p:g}", kwargs)


def checkpointed(S: int | None = None, unroll: int = 1) -> GradientEstimator:
    """Full BPTT with ``jax.checkpoint`` over segments of ``S`` steps.

    Same gradient as :func:`full`; memory ``O(T/S + S)`` carries instead of
    ``O(T)`` residuals, for about one extra forward pass. ``S=None`` picks
    ``round(sqrt(T))``.

    References: Chen et al. 2016, "Training deep nets with sublinear memory cost".
    """
    if S is not None:
        S = _check_int("S (segment length)", S)
    return _bptt(f"checkpointed:{S or 'sqrt'}", lambda key, T: {
        "checkpoint_every": S or max(1, int(round(T ** 0.5))), "unroll": unroll})


# ----------------------------------------------------------------------------
# online estimators: forward-mode influence, one step at a time


def _online_parts(model: Model, params):
    """Flattened, unbatched step ``f(theta, s, x) -> (s', h)`` and helpers."""
    cell = model.cell
    theta, unravel_theta = ravel_pytree(params["cell"])
    s0, unravel_s = ravel_pytree(cell.initial_carry(()))

    def f(theta, s, x):
        c, h = cell.apply(unravel_theta(theta), unravel_s(s), x)
        return ravel_pytree(c)[0], h

    def loss_t(theta, s, head, x, y, w):
        _, h = f(theta, s, x)
        return w * model.loss(model.head(head, h), y)

    return theta, unravel_theta, s0.size, unravel_s, f, loss_t


def _flat_carry(state, batch_size):
    leaves = jax.tree.leaves(state)
    return jnp.concatenate([l.reshape(batch_size, -1) for l in leaves], axis=1)


def _online(name: str, init_influence: Callable, update: Callable, check: Callable | None = None):
    """Builds an online estimator from its influence init and per-example update.

    ``update(f, theta, s, x, infl, g_s, key) -> (infl_new, g_theta_from_history)``
    where ``g_s = dl_t/ds_{t-1}`` and the history term is ``g_s M_{t-1}``.
    """

    def init_carry(model, params, batch_shape):
        if len(batch_shape) != 1:
            raise ValueError(f"online estimators take batch_shape (B,), got {tuple(batch_shape)}")
        theta, _, N, _, _, _ = _online_parts(model, params)
        if check is not None:
            check(model, batch_shape[0], N, theta.size)
        return OnlineCarry(model.cell.initial_carry(tuple(batch_shape)),
                           init_influence(batch_shape[0], N, theta.size))

    def value_and_grad(model, params, carry, batch, key):
        if not isinstance(carry, OnlineCarry):
            raise TypeError(f"{name} needs the OnlineCarry made by its init_carry, got {type(carry).__name__}")
        theta, unravel_theta, N, unravel_s, f, loss_t = _online_parts(model, params)
        T, B = jnp.shape(batch.inputs)[:2]
        if check is not None:
            check(model, B, N, theta.size)
        w = loss_weights(batch)  # [T, B]
        s = _flat_carry(carry.state, B)
        grad_l = jax.grad(loss_t, argnums=(0, 1, 2))

        def per_example(s, infl, x, y, wt, k):
            gth, gs, gh = grad_l(theta, s, params["head"], x, y, wt)
            infl, g_hist = update(f, theta, s, x, infl, gs, k)
            s_new, _ = f(theta, s, x)
            return s_new, infl, gth + g_hist, gh, loss_t(theta, s, params["head"], x, y, wt)

        def body(acc, inp):
            s, infl, g_th, g_head, loss = acc
            x, y, wt, k = inp
            s, infl, gth, gh, l = jax.vmap(per_example)(s, infl, x, y, wt, jax.random.split(k, B))
            return (s, infl, g_th + gth.sum(0), jax.tree.map(lambda a, b: a + b.sum(0), g_head, gh),
                    loss + l.sum()), None

        zeros_head = jax.tree.map(jnp.zeros_like, params["head"])
        (s, infl, g_th, g_head, loss), _ = jax.lax.scan(
            body, (s, carry.influence, jnp.zeros_like(theta), zeros_head, 0.0),
            (batch.inputs, batch.targets, w, jax.random.split(key, T)))
        state = jax.vmap(unravel_s)(s)
        grads = {"cell": unravel_theta(g_th), "head": g_head}
        new = OnlineCarry(jax.lax.stop_gradient(state), jax.lax.stop_gradient(infl))
        return loss, grads, new, {}

    return GradientEstimator(init_carry, value_and_grad, name)


def rtrl(max_bytes: float = 2 ** 31) -> GradientEstimator:
    """Real-time recurrent learning: the exact influence ``M_t = J_s M_{t-1} + J_theta``.

    Memory ``B * N * P`` floats (``N`` carry size, ``P`` cell params) and time
    ``O(N^2 P)`` per step; its gradient equals full BPTT's.

    Args:
      max_bytes: refuse (``ValueError``) when the influence matrix would exceed this.

    References: Williams & Zipser 1989, "A learning algorithm for continually
      running fully recurrent neural networks".
    """

    def check(model, B, N, P):
        need = 4 * B * N * P
        if need > max_bytes:
            raise ValueError(
                f"RTRL influence matrix needs B*N*P*4 = {B}*{N}*{P}*4 = {need / 2**30:.2f} GiB, "
                f"over the limit max_bytes={max_bytes / 2**30:.2f} GiB; use a smaller model or "
                f"batch, raise max_bytes, or use uoro/snap1")

    def update(f, theta, s, x, M, gs, key):
        J_th, J_s = jax.jacfwd(lambda th, s: f(th, s, x)[0], argnums=(0, 1))(theta, s)
        return J_s @ M + J_th, gs @ M

    return _online("rtrl", lambda B, N, P: jnp.zeros((B, N, P), jnp.float32), update, check)


def uoro(eps: float = 1e-7) -> GradientEstimator:
    """Unbiased Online Recurrent Optimization: ``M_t ~ s_tilde theta_tilde^T`` (rank one).

    Each step draws random signs ``nu`` and updates
    ``s_tilde <- rho0 J_s s_tilde + rho1 nu``,
    ``theta_tilde <- theta_tilde / rho0 + nu^T J_theta / rho1``, with the
    variance-minimising ``rho0 = sqrt(|theta_tilde| / |J_s s_tilde|)``,
    ``rho1 = sqrt(|nu^T J_theta| / |nu|)``. ``E[s_tilde theta_tilde^T] = M_t``, so
    the gradient is unbiased. Memory ``B (N + P)``; cost a few step evaluations.

    References: Tallec & Ollivier 2018, "Unbiased online recurrent optimization" (ICLR).
    """

    def update(f, theta, s, x, infl, gs, key):
        st, tt = infl
        g_hist = (gs @ st) * tt
        fs = lambda s: f(theta, s, x)[0]
        _, js = jax.jvp(fs, (s,), (st,))
        nu = jax.random.rademacher(key, s.shape, jnp.float32)
        _, vjp = jax.vjp(lambda th: f(th, s, x)[0], theta)
        (nj,) = vjp(nu)
        rho0 = jnp.sqrt((jnp.linalg.norm(tt) + eps) / (jnp.linalg.norm(js) + eps))
        rho1 = jnp.sqrt((jnp.linalg.norm(nj) + eps) / (jnp.linalg.norm(nu) + eps))
        return (rho0 * js + rho1 * nu, tt / rho0 + nj / rho1), g_hist

    init = lambda B, N, P: (jnp.zeros((B, N), jnp.float32), jnp.zeros((B, P), jnp.float32))
    return _online("uoro", init, update)


_SNAP_CELLS = ("elman", "gru", "lstm")


def snap1() -> GradientEstimator:
    """SnAp-1: RTRL with the influence kept on the one-step sparsity pattern.

    For the Elman, GRU and LSTM cells a parameter whose column belongs to unit
    ``i`` (last axis index ``mod H``) moves only the ``K`` carry entries of
    unit ``i`` in one step (``K = 1`` for Elman/GRU, ``K = 2`` for LSTM's
    ``(h, c)``). SnAp-1 keeps exactly those entries: ``M`` is stored compactly
    as ``[K, P]``; each step uses the ``K x K`` diagonal blocks of ``J_s`` and
    the immediate Jacobian on the pattern (``K`` vector-Jacobian products).
    Memory ``B K P``; biased, exact for the immediate term.

    References: Menick et al. 2021, "Practical real time recurrent learning
      with a sparse approximation" (ICLR).
    """
    def check(model):
        base = model.cell.name.split("-")[0]
        if base not in _SNAP_CELLS:
            raise ValueError(f"snap1 supports the cells {_SNAP_CELLS}, got {model.cell.name!r}")

    def update_factory(model, params):
        H = model.cell.hidden_size
        # [P]: the unit each parameter feeds (last-axis index mod H), in ravel order
        u = jnp.asarray(np.concatenate([
            np.broadcast_to(np.arange(l.shape[-1]) % H, l.shape).ravel()
            for l in jax.tree.leaves(params["cell"])]))

        def update(f, theta, s, x, Mc, gs, key):
            K = s.shape[0] // H
            fs = lambda s: f(theta, s, x)[0]
            J_s = jax.jacfwd(fs)(s).reshape(K, H, K, H)
            D = jnp.diagonal(J_s, axis1=1, axis2=3)  # [K, K, H]: d s'_{k,i} / d s_{k',i}
            _, vjp = jax.vjp(lambda th: f(th, s, x)[0], theta)
            I = jnp.stack([vjp(jnp.zeros((K, H)).at[k].set(1.0).ravel())[0] for k in range(K)])
            g_hist = jnp.sum(gs.reshape(K, H)[:, u] * Mc, axis=0)
            Mc = jnp.einsum("abp,bp->ap", D[:, :, u], Mc) + I
            return Mc, g_hist

        return update

    def init_carry(model, params, batch_shape):
        check(model)
        theta, _, N, _, _, _ = _online_parts(model, params)
        K = N // model.cell.hidden_size
        return OnlineCarry(model.cell.initial_carry(tuple(batch_shape)),
                           jnp.zeros((batch_shape[0], K, theta.size), jnp.float32))

    def value_and_grad(model, params, carry, batch, key):
        check(model)
        est = _online("snap1", None, update_factory(model, params))
        return est.value_and_grad(model, params, carry, batch, key)

    return GradientEstimator(init_carry, value_and_grad, "snap1")


# ----------------------------------------------------------------------------

ESTIMATORS = {
    "full": full, "truncated": truncated, "randomized": randomized,
    "checkpointed": checkpointed, "rtrl": rtrl, "uoro": uoro, "snap1": snap1,
}


def parse(spec: str) -> GradientEstimator:
    """Build an estimator from a CLI spec: ``full``, ``truncated:K``,
    ``randomized:P``, ``checkpointed[:S]``, ``rtrl``, ``uoro``, ``snap1``."""
    name, _, arg = str(spec).partition(":")
    if name not in ESTIMATORS:
        raise ValueError(f"unknown gradient estimator {spec!r}; choose from "
                         "full, truncated:K, randomized:P, checkpointed[:S], rtrl, uoro, snap1")
    if name in ("truncated", "randomized") and not arg:
        raise ValueError(f"{name} needs a parameter, e.g. '{name}:{35 if name == 'truncated' else 0.5}'")
    if name in ("full", "rtrl", "uoro", "snap1") and arg:
        raise ValueError(f"{name} takes no parameter, got {spec!r}")
    if not arg:
        return ESTIMATORS[name]()
    try:
        value = float(arg) if name == "randomized" else int(arg)
    except ValueError:
        raise ValueError(f"bad parameter {arg!r} in gradient estimator spec {spec!r}") from None
    return ESTIMATORS[name](value)
