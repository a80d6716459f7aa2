"""Online estimators: forward-mode influence, one step at a time (RTRL, UORO, SnAp-1).

Resets (``Batch.resets``): where ``resets[t, b]`` is true, example ``b``'s
carry entering step ``t`` is replaced by the cell's initial carry and its
influence by zero (RTRL's ``M``, UORO's ``(s_tilde, theta_tilde)``, SnAp-1's
compact ``M``): the restarted state does not depend on the params, so no
gradient crosses the reset -- the estimators then compute on a packed stream
what they compute on each episode from a fresh carry.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .. import validation
from ..models import Model, loss_weights, refuse_whole_sequence
from .base import GradientEstimator, OnlineCarry, _check_key, register

__all__ = ["rtrl", "uoro", "snap1"]


# ----------------------------------------------------------------------------
# online estimators: forward-mode influence, one step at a time


def _online_parts(model: Model, params):
    """Flattened, unbatched step ``f(theta, s, x) -> (s', h)`` and helpers.

    Returns ``(theta [P], unravel_theta, N, unravel_s, f, loss_t)`` where
    ``loss_t(theta, s, head, x, y, w) -> (w * loss_t, s')``.
    """
    cell = model.cell
    theta, unravel_theta = ravel_pytree(params["cell"])
    s0, unravel_s = ravel_pytree(cell.initial_carry(()))

    def f(theta, s, x):
        c, h = cell.apply(unravel_theta(theta), unravel_s(s), x)
        return ravel_pytree(c)[0], h

    def loss_t(theta, s, head, x, y, w):
        s_new, h = f(theta, s, x)
        return w * model.loss(model.head(head, h), y), s_new

    return theta, unravel_theta, s0.size, unravel_s, f, loss_t


def _flat_carry(state, batch_size):
    """Cell carry ``[B, ...]`` -> ``[B, N]``, in ``ravel_pytree``'s leaf order."""
    leaves = jax.tree.leaves(state)
    return jnp.concatenate([l.reshape(batch_size, -1) for l in leaves], axis=1)


def _online(name: str, init_influence: Callable, update: Callable, check: Callable | None = None,
            stochastic: bool = False) -> GradientEstimator:
    """Builds an online estimator from its influence init and per-example update.

    Args:
      init_influence: ``(B, N, P, dtype) -> influence`` (zero influence).
      update: ``(f, theta, s, x, infl, g_s, key) -> (infl_new, g_hist)`` for
        one example, where ``s = s_{t-1}``, ``g_s = dl_t/ds_{t-1}`` and the
        history term is ``g_hist = g_s M_{t-1}`` ``[P]``.
      check: ``(model, B, N, P) -> None``, raising ``ValueError`` on a bad
        configuration; called in ``init_carry`` and (at trace time) in
        ``value_and_grad``.
      stochastic: whether ``update`` uses its key (then ``key`` must not be None).
    """

    def init_carry(model, params, batch_shape):
        batch_shape = tuple(batch_shape)
        if len(batch_shape) != 1:
            raise ValueError(f"{name} takes batch_shape (B,), got {batch_shape}")
        theta, _, N, _, _, _ = _online_parts(model, params)
        if check is not None:
            check(model, batch_shape[0], N, theta.size)
        return OnlineCarry(model.cell.initial_carry(batch_shape),
                           init_influence(batch_shape[0], N, theta.size, theta.dtype))

    def value_and_grad(model, params, carry, batch, key):
        refuse_whole_sequence(model, name)
        if not isinstance(carry, OnlineCarry):
            raise TypeError(f"{name} needs the OnlineCarry made by its init_carry, "
                            f"got {type(carry).__name__}")
        if stochastic:
            _check_key(name, key)
        validation.check_batch(model, batch)  # ids too: the per-step gathers below run traced
        theta, unravel_theta, N, unravel_s, f, loss_t = _online_parts(model, params)
        T, B = jnp.shape(batch.inputs)[:2]
        if check is not None:
            check(model, B, N, theta.size)
        carry_b = {jnp.shape(l)[0] if jnp.ndim(l) else None for l in jax.tree.leaves(carry.state)}
        if carry_b != {B}:
            raise ValueError(f"{name}: the carry has batch size {sorted(carry_b, key=str)} but "
                             f"batch.inputs {tuple(jnp.shape(batch.inputs))} has B={B}")
        validation.check_model_params(model, params)
        validation.check_carry(model.cell, carry.state, (B,), "carry.state")
        w = loss_weights(batch)  # [T, B], sums to one
        s = _flat_carry(carry.state, B)
        keys = jax.random.split(key, (T, B)) if stochastic else jnp.zeros((T, B))
        resets = None if batch.resets is None else jnp.asarray(batch.resets)  # [T, B] bool
        s0 = ravel_pytree(model.cell.initial_carry(()))[0].astype(s.dtype)
        vg = jax.value_and_grad(loss_t, argnums=(0, 1, 2), has_aux=True)

        def per_example(s, infl, x, y, wt, k, r):
            if r is not None:  # an episode starts: fresh state, zero influence (nothing
                s = jnp.where(r, s0, s)  # depends on theta yet)
                infl = jax.tree.map(lambda a: jnp.where(r, jnp.zeros_like(a), a), infl)
            (l, s_new), (gth, gs, gh) = vg(theta, s, params["head"], x, y, wt)
            infl, g_hist = update(f, theta, s, x, infl, gs, k)
            return s_new, infl, gth + g_hist, gh, l

        def body(acc, inp):
            s, infl, g_th, g_head, loss = acc
            s, infl, gth, gh, l = jax.vmap(per_example)(s, infl, *inp)
            return (s, infl, g_th + gth.sum(0), jax.tree.map(lambda a, b: a + b.sum(0), g_head, gh),
                    loss + l.sum()), None

        zeros_head = jax.tree.map(jnp.zeros_like, params["head"])
        (s, infl, g_th, g_head, loss), _ = jax.lax.scan(
            body, (s, carry.influence, jnp.zeros_like(theta), zeros_head,
                   jnp.zeros((), jnp.result_type(w.dtype, theta.dtype))),
            (batch.inputs, batch.targets, w, keys, resets))
        state = jax.vmap(unravel_s)(s)
        grads = {"cell": unravel_theta(g_th), "head": g_head}
        new = OnlineCarry(jax.lax.stop_gradient(state), jax.lax.stop_gradient(infl))
        return loss, grads, new, {}

    return GradientEstimator(init_carry, value_and_grad, name)


def _fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.4g} {unit}"
        n /= 1024


def rtrl(max_bytes: float = 2 ** 31) -> GradientEstimator:
    """Real-time recurrent learning: the exact influence ``M_t = J_s M_{t-1} + J_theta``.

    ``J_s = ds_t/ds_{t-1}`` and ``J_theta = ds_t/dtheta`` come from the same
    ``N`` vector-Jacobian products (``jax.jacrev``). Memory ``B * N * P`` floats
    (``N`` carry size, ``P`` cell params) and time ``O(N^2 P)`` per step. On a
    fresh carry its gradient equals full BPTT's; across batches it keeps the
    influence (see the module docstring).

    Args:
      max_bytes: refuse (``ValueError``, in ``init_carry`` and at trace time)
        when the influence matrix would exceed this many bytes.

    References: Williams & Zipser 1989, "A learning algorithm for continually
      running fully recurrent neural networks".
    """
    numeric = (int, float, np.integer, np.floating)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, numeric) or not max_bytes > 0:
        raise ValueError(f"max_bytes must be a number > 0, got {max_bytes!r}")

    def check(model, B, N, P):
        need = 4 * B * N * P
        if need > max_bytes:
            raise ValueError(
                f"RTRL influence matrix [B, N, P] = [{B}, {N}, {P}] needs {_fmt_bytes(need)} "
                f"(float32), over max_bytes={_fmt_bytes(max_bytes)}; use a smaller model or "
                f"batch, raise max_bytes, or use uoro/snap1")

    def update(f, theta, s, x, M, gs, key):
        # both Jacobians from the same N reverse-mode passes: [N, P] and [N, N]
        J_th, J_s = jax.jacrev(lambda th, s: f(th, s, x)[0], argnums=(0, 1))(theta, s)
        return J_s @ M + J_th, gs @ M

    return _online("rtrl", lambda B, N, P, dt: jnp.zeros((B, N, P), dt), update, check)


def uoro(eps: float = 1e-7) -> GradientEstimator:
    """Unbiased Online Recurrent Optimization: ``M_t ~ s_tilde theta_tilde^T`` (rank one).

    Each step draws random signs ``nu`` (per example) and updates
    ``s_tilde <- rho0 J_s s_tilde + rho1 nu``,
    ``theta_tilde <- theta_tilde / rho0 + nu^T J_theta / rho1``, with the
    variance-minimising ``rho0 = sqrt(|theta_tilde| / |J_s s_tilde|)``,
    ``rho1 = sqrt(|nu^T J_theta| / |nu|)`` (``eps`` added to each norm). The
    ``rho0`` factors cancel in the product and ``rho1`` is even in ``nu``, so
    ``E[s_tilde theta_tilde^T] = M_t`` given ``E[nu nu^T] = I``, and the
    gradient ``(g_s . s_tilde) theta_tilde`` is unbiased. From the zero
    influence the first step gives ``nu nu^T J_theta``. Memory ``B (N + P)``;
    cost about three step evaluations.

    Args:
      eps: added to the norms in ``rho0``, ``rho1`` (> 0).

    References: Tallec & Ollivier 2018, "Unbiased online recurrent optimization" (ICLR).
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) or not eps > 0:
        raise ValueError(f"eps must be a number > 0, got {eps!r}")

    def update(f, theta, s, x, infl, gs, key):
        st, tt = infl
        g_hist = (gs @ st) * tt
        _, js = jax.jvp(lambda s: f(theta, s, x)[0], (s,), (st,))
        nu = jax.random.rademacher(key, s.shape, s.dtype)
        _, vjp = jax.vjp(lambda th: f(th, s, x)[0], theta)
        (nj,) = vjp(nu)
        rho0 = jnp.sqrt((jnp.linalg.norm(tt) + eps) / (jnp.linalg.norm(js) + eps))
        rho1 = jnp.sqrt((jnp.linalg.norm(nj) + eps) / (jnp.linalg.norm(nu) + eps))
        return (rho0 * js + rho1 * nu, tt / rho0 + nj / rho1), g_hist

    init = lambda B, N, P, dt: (jnp.zeros((B, N), dt), jnp.zeros((B, P), dt))
    return _online("uoro", init, update, stochastic=True)


def _snap_blocks(model: Model, params) -> int:
    """``K``, the cell's ``unit_blocks`` (its declared one-step sparsity pattern)."""
    cell = model.cell
    K, H = cell.unit_blocks, cell.hidden_size
    if K is None:
        raise ValueError(
            f"snap1 needs a cell with the one-step sparsity pattern (Cell.unit_blocks: rnn, "
            f"rnn-relu, lstm, gru, or a cell of yours that declares it), got cell {cell.name!r}"
            + (" (a stack: its layers couple the units)" if cell.layers is not None else ""))
    N = _online_parts(model, params)[2]
    if N != K * H:
        raise ValueError(f"snap1: cell {cell.name!r} declares unit_blocks={K} but has carry size "
                         f"{N}, expected {K} x {H}")
    return K


def snap1() -> GradientEstimator:
    """SnAp-1: RTRL with the influence kept on the one-step sparsity pattern.

    For the Elman, GRU and LSTM cells a parameter whose column belongs to unit
    ``i`` (last axis index ``mod H``) moves only the ``K`` carry entries of
    unit ``i`` in one step (``K = 1`` for Elman/GRU, ``K = 2`` for LSTM's
    ``(h, c)``). SnAp-1 keeps exactly those entries: ``M`` is stored compactly
    as ``[K, P]``; each step uses the ``K x K`` diagonal blocks of ``J_s`` and
    the immediate Jacobian on the pattern (``K`` vector-Jacobian products).
    Memory ``B K P``. Biased in general, but exact (equal to RTRL) while the
    influence stays on the pattern: for ``T <= 2`` from a fresh carry, and for
    any ``T`` when ``J_s`` is unit-diagonal (diagonal recurrent matrices).
    The cell declares the pattern with ``Cell.unit_blocks = K`` (``rnn``,
    ``rnn-relu``, ``gru``: 1; ``lstm``: 2); other cells, stacks included, get
    a ``ValueError``.

    References: Menick et al. 2021, "Practical real time recurrent learning
      with a sparse approximation" (ICLR).
    """

    def update_factory(model, params, K):
        H = model.cell.hidden_size
        # [P]: the unit each parameter feeds (last-axis index mod H), in ravel order
        u = jnp.asarray(np.concatenate([
            np.broadcast_to(np.arange(l.shape[-1]) % H, l.shape).ravel()
            for l in jax.tree.leaves(params["cell"])]))

        def update(f, theta, s, x, Mc, gs, key):
            fs = lambda s: f(theta, s, x)[0]
            J_s = jax.jacfwd(fs)(s).reshape(K, H, K, H)
            D = jnp.diagonal(J_s, axis1=1, axis2=3)  # [K, K, H]: d s'_{k,i} / d s_{k',i}
            _, vjp = jax.vjp(lambda th: f(th, s, x)[0], theta)
            # row k: sum_i d s'_{k,i}/d theta_p, = d s'_{k,u[p]}/d theta_p on the pattern
            imm = jax.vmap(lambda e: vjp(e)[0])(jnp.repeat(jnp.eye(K, dtype=s.dtype), H, axis=1))
            g_hist = jnp.sum(gs.reshape(K, H)[:, u] * Mc, axis=0)
            Mc = jnp.einsum("abp,bp->ap", D[:, :, u], Mc) + imm
            return Mc, g_hist

        return update

    def init_carry(model, params, batch_shape):
        K = _snap_blocks(model, params)
        return _online("snap1", lambda B, N, P, dt: jnp.zeros((B, K, P), dt),
                       None).init_carry(model, params, batch_shape)

    def value_and_grad(model, params, carry, batch, key):
        K = _snap_blocks(model, params)
        est = _online("snap1", None, update_factory(model, params, K))
        return est.value_and_grad(model, params, carry, batch, key)

    return GradientEstimator(init_carry, value_and_grad, "snap1")


register("rtrl", rtrl, usage="rtrl")
register("uoro", uoro, usage="uoro")
register("snap1", snap1, usage="snap1")
