"""Online estimators: forward-mode influence (RTRL, UORO, SnAp-1, SnAp-2).

RTRL, UORO and SnAp-2 walk the batch one step at a time; SnAp-1 computes
``chunk`` steps at once, with the same result (:func:`snap1`).

Resets (``Batch.resets``): where ``resets[t, b]`` is true, example ``b``'s
carry entering step ``t`` is replaced by the cell's initial carry and its
influence by zero (RTRL's ``M``, UORO's ``(s_tilde, theta_tilde)``, SnAp-1's
and SnAp-2's compact ``M``; KF-RTRL's factors, :mod:`jrnn.grads.kf`): the
restarted state does not depend on the params, so no gradient crosses the
reset -- the estimators then compute on a packed stream what they compute on
each episode from a fresh carry.
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

__all__ = ["rtrl", "uoro", "snap1", "snap2"]


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


def _flat_seq(state, lead):
    """A carry with leading dims ``lead`` (e.g. ``(T, B)``) -> ``[*lead, N]`` (ravel order)."""
    return jnp.concatenate([l.reshape(*lead, -1) for l in jax.tree.leaves(state)], axis=-1)


def _online(name: str, init_influence: Callable, update: Callable | None,
            check: Callable | None = None, stochastic: bool = False,
            run: Callable | None = None) -> GradientEstimator:
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
      run: in place of ``update`` (deterministic estimators), the whole batch at
        once: ``(s [B, N], infl, xs, ys, w [T, B], resets [T, B] | None) ->
        (s_T, infl_T, g_cell [P], g_head, loss)``, the same sums as the
        step-by-step scan.
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
        if run is not None:
            s, infl, g_th, g_head, loss = run(s, carry.influence, batch.inputs, batch.targets, w,
                                              resets)
        else:
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


_ELMAN_PARAMS = {"W_xh", "W_hh", "b_h"}


def _elman_sizes(model: Model, params, name: str) -> tuple[int, int]:
    """``(V, H)`` (the rows of ``W_xh``, the width) of an Elman-type cell, else ``ValueError``.

    Elman-type: params exactly ``W_xh [V, H]``, ``W_hh [H, H]``, ``b_h [H]``, and an
    additive fast recurrence on ``W_hh`` with ``unit_blocks=1``, so the step is
    ``s' = F(s, z)`` elementwise with ``z = x W_xh + h W_hh + b_h`` (``rnn``,
    ``rnn-relu``, ``leaky(learn_tau=False)``): ``d s'/d W = diag(dF/dz) (x) [x; h; 1]``.
    """
    cell = model.cell
    fast = cell.fast
    p = params["cell"] if isinstance(params, dict) and "cell" in params else None
    H = cell.hidden_size
    why = None
    if cell.layers is not None:
        why = "a stack (its layers' weights are not one Elman matrix)"
    elif not isinstance(p, dict) or set(p) != _ELMAN_PARAMS:
        why = (f"params {sorted(p) if isinstance(p, dict) else type(p).__name__}, expected exactly "
               f"{sorted(_ELMAN_PARAMS)}")
    elif fast is None or not fast.additive or fast.weight != "W_hh" or cell.unit_blocks != 1:
        why = ("no additive fast recurrence on W_hh with unit_blocks=1 (the step must read "
               "x W_xh + h W_hh + b_h, unit by unit)")
    elif (np.shape(p["W_hh"]) != (H, H) or np.shape(p["b_h"]) != (H,)
          or np.ndim(p["W_xh"]) != 2 or np.shape(p["W_xh"])[1] != H):
        why = (f"W_xh {np.shape(p['W_xh'])}, W_hh {np.shape(p['W_hh'])}, b_h {np.shape(p['b_h'])} "
               f"for H={H}")
    elif _online_parts(model, params)[2] != H:
        why = f"a carry of {_online_parts(model, params)[2]} numbers, not h [H={H}]"
    if why is not None:
        raise ValueError(
            f"{name} needs an Elman-type cell (rnn, rnn-relu, leaky with learn_tau=False: "
            f"d s'/d W = diag(phi') (x) [x; h; 1]), got cell {cell.name!r}: {why}")
    return int(np.shape(p["W_xh"])[0]), H


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


def _sum_rows(a):
    """``a [B, ...] -> [...]``, the sum over the leading axis as a product with ones:
    XLA:CPU's reduction over a major axis is ~10x slower than this matrix-vector product."""
    return (jnp.ones((a.shape[0],), a.dtype) @ a.reshape(a.shape[0], -1)).reshape(a.shape[1:])


def _per_unit(c, shape, H: int):
    """``c [..., H]`` broadcast against a param of ``shape``: each entry gets the value of
    the unit it feeds (last-axis index ``mod H``); ``[..., 1, ..., C]``, no gather where
    ``H`` divides ``C`` (XLA:CPU runs gathers fused into large loops slowly)."""
    if not shape:
        return c[..., 0]
    C = shape[-1]
    col = c if C == H else (jnp.tile(c, C // H) if C % H == 0
                            else jnp.take(c, np.arange(C) % H, axis=-1))
    return col.reshape(c.shape[:-1] + (1,) * (len(shape) - 1) + (C,))


def _diagonal_blocks(model: Model, params, K: int):
    """``(p, prev, xp) -> D [..., K, K, H]``: the diagonal blocks
    ``D[..., k, k', i] = d s'_{k,i} / d s_{k',i}`` of the carry Jacobian of
    every step at once (``prev``: the carries entering the steps, leading dims
    ``[...]``; ``xp``: their projected inputs).

    With a :class:`~jrnn.cells.FastRecurrence` whose weight is ``[H, G*H]``:
    the step is elementwise in the carry given ``zh = read(carry) @ W``, and on
    the one-step pattern unit ``i`` reads ``zh`` only at its gate columns
    ``g H + i``; so column ``k'`` is ONE tangent through ``forward`` (ones on
    carry block ``k'``, ``dzh[g H + i] = W[i, g H + i] d read_i``): ``K``
    tangents in all, no ``N x N`` matrix. Otherwise (e.g. leaky units with
    learned time constants) the dense per-example Jacobian, its diagonal kept.
    """
    cell = model.cell
    fast, H = cell.fast, cell.hidden_size
    _, _, N, unravel_s, _, _ = _online_parts(model, params)
    if not _has_fast_weight(cell, params):
        def dense(p, prev, xp):
            lead = jnp.shape(xp)[:-1]
            flat = lambda c, x: ravel_pytree(cell.step(p, unravel_s(c), x)[0])[0]
            J = jax.vmap(jax.jacfwd(flat))(_flat_seq(prev, lead).reshape(-1, N),
                                           xp.reshape(-1, xp.shape[-1]))
            D = jnp.diagonal(J.reshape(-1, K, H, K, H), axis1=2, axis2=4)  # [L, K, K, H]
            return D.reshape(*lead, K, K, H)
        return dense
    G = jnp.shape(params["cell"][fast.weight])[1] // H
    blocks = np.repeat(np.eye(K, dtype=np.float32), H, axis=1)  # [K, N]: ones on block k

    def diagonal(p, prev, xp):
        lead = jnp.shape(xp)[:-1]
        W = p[fast.weight]
        dW = jnp.diagonal(W.reshape(H, G, H), axis1=0, axis2=2).reshape(G * H)  # W[i, g H + i]
        _, lin = jax.linearize(lambda c, z: _flat_seq(fast.forward(p, c, xp, z)[0], lead),
                               prev, fast.read(prev) @ W)

        def column(e):  # d s' / d s_{k'}: the carry's own path + the one through zh
            dc = jax.tree.map(lambda a, r: jnp.broadcast_to(a.astype(r.dtype), r.shape),
                              unravel_s(e), prev)
            dread = jax.jvp(fast.read, (prev,), (dc,))[1]
            return lin(dc, jnp.tile(dread, G) * dW)

        cols = jax.vmap(column)(jnp.asarray(blocks))  # [K', ..., N]
        return jnp.moveaxis(cols.reshape(K, *lead, K, H), 0, -2)  # [..., k, k', H]

    return diagonal


def _has_fast_weight(cell, params) -> bool:
    fast, H = cell.fast, cell.hidden_size
    if fast is None:
        return False
    W = params["cell"].get(fast.weight) if isinstance(params["cell"], dict) else None
    return W is not None and jnp.ndim(W) == 2 and jnp.shape(W)[0] == H and jnp.shape(W)[1] % H == 0


def _immediate_sums(model: Model, params, K: int):
    """``(p, prev, xs, ct [T, B, K, N]) -> tree of [B, K, ...]``: per example ``b`` and row
    ``k``, ``sum_t ct[t, b, k] . d s_t / d p`` (the immediate Jacobian of each step).

    With a fast recurrence the cotangents go through ``forward``'s elementwise part
    on the whole batch at once; the weight's share is then ONE batched product over
    the steps (``read(c) (x) dzh`` summed over ``t``), ``project``'s and
    ``extra_dzh``'s are their transposes per example. Otherwise a per-example
    vector-Jacobian product of the steps.
    """
    cell = model.cell
    fast = cell.fast
    if not _has_fast_weight(cell, params):
        def generic(p, prev, xs, ct):
            def one(prev_b, xs_b, ct_b):  # [T, ...], [T, K, N] -> [K, ...]
                T = jnp.shape(xs_b)[0]
                _, vjp = jax.vjp(lambda p: _flat_seq(cell.step(p, prev_b, cell.project(p, xs_b))[0],
                                                     (T,)), p)
                return jax.vmap(lambda c: vjp(c)[0], in_axes=1)(ct_b)
            sw = lambda a: jnp.swapaxes(a, 0, 1)
            return jax.vmap(one)(jax.tree.map(sw, prev), sw(xs), sw(ct))
        return generic

    def structured(p, prev, xs, ct):
        T, B = jnp.shape(ct)[:2]
        xp, rd = cell.project(p, xs), fast.read(prev)
        _, vjp = jax.vjp(lambda xp, zh: _flat_seq(fast.forward(p, prev, xp, zh)[0], (T, B)),
                         xp, rd @ p[fast.weight])
        dxp, dzh = jax.vmap(vjp, in_axes=2, out_axes=2)(ct)  # [T, B, K, G H]
        out = jax.vmap(jax.vmap(
            lambda x_b, c: jax.vjp(lambda p: cell.project(p, x_b), p)[1](c)[0], (None, 1)),
            (1, 1))(xs, dxp)
        if fast.extra_dzh is not None:
            extra = jax.vmap(jax.vmap(lambda c: jax.vjp(fast.extra_dzh, p)[1](c)[0]))(dzh.sum(0))
            out = jax.tree.map(jnp.add, out, extra)
        return {**out, fast.weight: out[fast.weight] + jnp.einsum("tbr,tbkg->bkrg", rd, dzh)}

    return structured


def _snap1_run(model: Model, params, K: int, chunk: int):
    """SnAp-1 on a whole batch at a BPTT-like cost (the ``run`` of :func:`_online`).

    Unrolling ``M_t = D_t M_{t-1} + I_t`` (``D_t`` the diagonal blocks, ``I_t``
    the immediate Jacobian on the pattern) in the history terms
    ``sum_t g_t M_{t-1}`` gives ``sum_t lam_t I_t + lam_0 M_0`` with
    ``lam_{t-1} = g_t + lam_t D_t``: BPTT with the carry Jacobian replaced by its
    diagonal blocks. So: a forward scan for the carries, every step's local
    derivatives at once (batched over ``[T, B]``), a backward scan of
    ``[B, K, H]`` vectors, and ONE vector-Jacobian product of all steps for the
    gradient (a single weight GEMM, as in BPTT). The influence carried out,
    ``M_T = rho_0 M_0 + sum_t rho_t I_t`` (``rho_t`` the products of the later
    ``D``'s), is one more pass (:func:`_immediate_sums`). A reset at step ``t``
    zeroes the influence entering it, so it zeroes ``lam`` and ``rho`` across it.
    A batch longer than ``chunk`` steps is run ``chunk`` steps at a time.
    """
    cell = model.cell
    H = cell.hidden_size
    theta, _, N, unravel_s, _, _ = _online_parts(model, params)
    p, head = params["cell"], params["head"]
    diagonal = _diagonal_blocks(model, params, K)
    immediate = _immediate_sums(model, params, K)
    c0 = cell.initial_carry(())

    def run(s, M0, xs, ys, w, resets):
        T, B = jnp.shape(w)
        dt = s.dtype
        keep = (jnp.ones((T, B), dt) if resets is None else 1 - jnp.asarray(resets, dt))
        xp = cell.project(p, xs)

        def forward(c, inp):
            xp_t, keep_t = inp
            if resets is not None:  # an episode starts: the initial carry
                c = jax.tree.map(lambda a, z: jnp.where(keep_t.reshape(-1, *([1] * z.ndim)) > 0,
                                                        a, z), c, c0)
            return cell.step(p, c, xp_t)[0], c

        cT, prev = jax.lax.scan(forward, jax.vmap(unravel_s)(s), (xp, keep))  # prev: [T, B, ...]

        def local(p, head, prev):  # every step at once, from the carries entering it
            new, h = cell.step(p, prev, cell.project(p, xs))
            return jnp.sum(w * model.loss(model.head(head, h), ys)), new

        (loss, new), vjp = jax.vjp(local, p, head, prev)
        zeros_new = jax.tree.map(jnp.zeros_like, new)
        gs = _flat_seq(vjp((jnp.ones_like(loss), zeros_new))[2], (T, B)).reshape(T, B, K, H)
        D = diagonal(p, prev, xp).astype(dt)  # [T, B, K, K, H]

        def backward(carry, inp):
            lam, rho = carry  # for the carry leaving this step: [B, K, H], [B, K, K, H]
            g_t, D_t, k_t = inp
            k_t = k_t[:, None, None]
            # sums over the K <= 2 blocks written out: XLA:CPU runs these tiny contractions
            # (batch dims b, h) as einsums or reductions far slower than as plain products
            lam_prev = k_t * (g_t + sum(lam[:, k, None] * D_t[:, k] for k in range(K)))
            rho_prev = k_t[..., None] * sum(rho[:, :, m, None] * D_t[:, None, m] for m in range(K))
            return (lam_prev, rho_prev), (lam, rho)

        eye = jnp.broadcast_to(jnp.eye(K, dtype=dt)[None, :, :, None], (B, K, K, H))
        (lam0, rho0), (lam, rho) = jax.lax.scan(
            backward, (jnp.zeros((B, K, H), dt), eye), (gs, D, keep), reverse=True)
        gp, gh, _ = vjp((jnp.ones_like(loss), jax.vmap(jax.vmap(unravel_s))(lam.reshape(T, B, N))))
        # the influence brought in: sum_b sum_k lam0[b, k, u] M0[b, k, ...]
        g = jax.tree.map(lambda a, m: a + _sum_rows(sum(
            _per_unit(lam0[:, k], a.shape, H) * m[:, k] for k in range(K))), gp, M0)
        I = immediate(p, prev, xs, rho.reshape(T, B, K, N))
        MT = jax.tree.map(lambda i, m: i + sum(
            _per_unit(rho0[:, :, j], m.shape[2:], H) * m[:, None, j] for j in range(K)), I, M0)
        return _flat_carry(cT, B), MT, ravel_pytree(g)[0], gh, loss

    def chunked(s, M, xs, ys, w, resets):
        """``run`` on ``chunk`` steps at a time, the state and influence carried from one
        to the next (exact: the same recursion), so memory does not grow with ``T``."""
        T = jnp.shape(w)[0]
        n, tail = divmod(T, chunk)
        if n <= 1 and not (n == 1 and tail):
            return run(s, M, xs, ys, w, resets)
        add = lambda a, b: jax.tree.map(jnp.add, a, b)

        def body(acc, part):
            s, M, g, gh, loss = acc
            s, M, g1, gh1, l1 = run(s, M, *part)
            return (s, M, g + g1, add(gh, gh1), loss + l1), None

        parts = jax.tree.map(lambda a: a[:n * chunk].reshape(n, chunk, *a.shape[1:]),
                             (xs, ys, w, resets))
        zeros = (jnp.zeros_like(theta), jax.tree.map(jnp.zeros_like, head),
                 jnp.zeros((), jnp.result_type(w.dtype, theta.dtype)))
        acc, _ = jax.lax.scan(body, (s, M, *zeros), parts)
        if tail:
            s, M, g, gh, loss = acc
            s, M, g1, gh1, l1 = run(s, M, *jax.tree.map(lambda a: a[n * chunk:],
                                                        (xs, ys, w, resets)))
            acc = (s, M, g + g1, add(gh, gh1), loss + l1)
        return acc

    return chunked


def snap1(chunk: int = 64) -> GradientEstimator:
    """SnAp-1: RTRL with the influence kept on the one-step sparsity pattern.

    For the Elman, GRU and LSTM cells a parameter whose column belongs to unit
    ``i`` (last axis index ``mod H``) moves only the ``K`` carry entries of
    unit ``i`` in one step (``K = 1`` for Elman/GRU/leaky, ``K = 2`` for
    LSTM's ``(h, c)``). SnAp-1 keeps exactly those entries:
    ``M_t = D_t M_{t-1} + I_t`` on the pattern, ``D_t`` the ``K x K``
    diagonal blocks of ``J_s`` and ``I_t`` the immediate Jacobian on the
    pattern, stored compactly: the influence is a tree like the cell's params
    with leaves ``[B, K, *shape]`` (entry ``[b, k, ...]`` of a param feeding
    unit ``i``: ``d s_{k,i} / d param``). Biased in general, but exact (equal
    to RTRL) while the influence stays on the pattern: for ``T <= 2`` from a
    fresh carry, and for any ``T`` when ``J_s`` is unit-diagonal (diagonal
    recurrent matrices). The cell declares the pattern with
    ``Cell.unit_blocks = K`` (``rnn``, ``rnn-relu``, ``gru``, ``leaky``: 1;
    ``lstm``: 2); other cells, stacks included, get a ``ValueError``.

    Cost: ``chunk`` steps are computed at once, as BPTT with ``J_s`` replaced
    by its diagonal blocks (:func:`_snap1_run`; the same numbers as the
    step-by-step recursion): time a few full-BPTT passes
    (``benchmarks/snap_cost.py``: 2-7x full on the char LM, against ~70-90x
    per example before); memory the carried influence ``B K P`` plus, for the
    chunk's steps, carries and ``[B, K, K, H]`` diagonals, as BPTT's residuals
    would be: constant in ``T``. ``D_t`` comes from the cell's fast
    recurrence (``K`` tangents); cells without one (leaky units with learned
    time constants) take the dense ``N x N`` Jacobian per example, ``N / K``
    times costlier.

    Args:
      chunk: steps computed at once (>= 1); longer batches are split (the same
        gradient), shorter ones are one chunk.

    References: Menick et al. 2021, "Practical real time recurrent learning
      with a sparse approximation" (ICLR).
    """

    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")

    def init_carry(model, params, batch_shape):
        K = _snap_blocks(model, params)
        zeros = lambda B, N, P, dt: jax.tree.map(lambda l: jnp.zeros((B, K) + jnp.shape(l),
                                                                     jnp.result_type(l)),
                                                 params["cell"])
        return _online("snap1", zeros, None).init_carry(model, params, batch_shape)

    def value_and_grad(model, params, carry, batch, key):
        K = _snap_blocks(model, params)
        est = _online(name, None, None, run=_snap1_run(model, params, K, int(chunk)))
        return est.value_and_grad(model, params, carry, batch, key)

    name = "snap1" if chunk == 64 else f"snap1:{int(chunk)}"
    return GradientEstimator(init_carry, value_and_grad, name)


def _snap2_rows(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows [H, S] int, valid [H, S] bool)``: for the params of unit ``j`` (column ``j``
    of ``W = [W_xh; W_hh; b_h]``), the carry entries they reach in two steps: ``j`` itself
    first, then every ``i`` with ``mask[j, i]`` (``h_j`` feeds ``z_i`` through
    ``W_hh[j, i]``), padded to the longest list (``valid`` false on the padding)."""
    H = mask.shape[0]
    lists = [[j] + [i for i in range(H) if mask[j, i] and i != j] for j in range(H)]
    S = max(len(l) for l in lists)
    rows = np.array([l + [j] * (S - len(l)) for j, l in enumerate(lists)])
    valid = np.array([[a < len(l) for a in range(S)] for l in lists])
    return rows, valid


def snap2(mask) -> GradientEstimator:
    """SnAp-2: RTRL with the influence kept on the two-step pattern of a sparse ``W_hh``.

    For an Elman-type cell (``rnn``, ``rnn-relu``, ``leaky(learn_tau=False)``;
    others get a ``ValueError``) whose recurrent weights ``W_hh`` are
    supported on ``mask`` (``[H, H]`` bool, ``mask[j, i]``: ``h_j`` feeds unit
    ``i``), a parameter of unit ``j`` (column ``j`` of ``W_xh``, ``W_hh``,
    ``b_h``) moves, within two steps, only the units ``S_j = {j} u {i :
    mask[j, i]}``. SnAp-2 keeps exactly those entries of the influence,
    ``M_t = pattern * (J_s M_{t-1} + I_t)``, stored per unit ``j`` as
    ``[S, m]`` (``S = max_j |S_j|``, ``m = D + H + 1`` rows of ``W``), the
    influence a tree ``{"M": [B, H, S, m]}``. Entries of ``W_hh`` outside
    ``mask`` still act in the forward pass but the pattern ignores where they
    lead. Biased in general; exact (equal to RTRL) while the influence stays
    on the pattern: for ``T <= 3`` from a fresh carry when ``W_hh`` is
    supported on ``mask``, and for any ``T`` when the pattern is closed (two
    steps reach no further than one, e.g. disjoint groups of units). With a
    dense mask it is RTRL, at RTRL's cost; it pays when ``W_hh`` is sparse.

    Cost: memory ``B H S m`` (RTRL: ``B H^2 m``); time per step ``O(H S^2 m)``
    per example (the ``[S, S]`` sub-blocks of ``J_s`` times the ``[S, m]``
    influences), one example and one step at a time (no batched shortcut as
    for SnAp-1). Not selectable by ``--grad``: the mask is the model's.

    Args:
      mask: ``[H, H]`` bool (or 0/1), the support of ``W_hh``.

    References: Menick et al. 2021, "Practical real time recurrent learning
      with a sparse approximation" (ICLR), section 3 (SnAp-n).
    """
    m = np.asarray(mask)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or not np.all((m == 0) | (m == 1)):
        raise ValueError(f"mask must be a square [H, H] array of bools (or 0/1), got shape "
                         f"{m.shape} dtype {m.dtype}")
    m = m.astype(bool)
    rows, valid = _snap2_rows(m)

    def sizes(model, params):
        V, H = _elman_sizes(model, params, "snap2")
        if m.shape != (H, H):
            raise ValueError(f"snap2: mask has shape {m.shape} but the cell has H={H}, "
                             f"expected ({H}, {H})")
        return V, H

    def update_factory(model, params):
        V, H = sizes(model, params)
        cell, fast = model.cell, model.cell.fast
        _, unravel_theta, _, unravel_s, _, _ = _online_parts(model, params)
        ok = jnp.asarray(valid)

        def update(f, theta, s, x, infl, gs, key):
            M = infl["M"]  # [H, S, m]: rows(j) x the m rows of column j of W
            p, c = unravel_theta(theta), unravel_s(s)
            W = p["W_hh"]
            xp = cell.project(p, x)
            zh = c @ W
            step = lambda c, zh: fast.forward(p, c, xp, zh)[0]
            # s' = F(h, z) elementwise: E = dF/dh at fixed z, Dz = dF/dz
            E = jax.jvp(lambda c: step(c, zh), (c,), (jnp.ones_like(c),))[1]
            Dz = jax.jvp(lambda z: step(c, z), (zh,), (jnp.ones_like(zh),))[1]
            # g_s M on the pattern: column j of W gets sum_a g[rows[j, a]] M[j, a, :]
            G = jnp.sum(jnp.where(ok, gs[rows], 0.0)[..., None] * M, axis=1)  # [H, m]
            g_hist = ravel_pytree({"W_xh": G[:, :V].T, "W_hh": G[:, V:V + H].T,
                                   "b_h": G[:, V + H]})[0]
            # J_s on the pattern: J[i, l] = E_i delta_il + Dz_i W[l, i], i, l in rows(j)
            Wsub = W[rows[:, None, :], rows[:, :, None]]  # [H, S, S]: W[rows[j, b], rows[j, a]]
            Wsub = jnp.where(ok[:, :, None] & ok[:, None, :], Wsub, 0.0)
            JM = E[rows][..., None] * M + Dz[rows][..., None] * jnp.einsum("jab,jbr->jar", Wsub, M)
            xv = (jax.nn.one_hot(x, V, dtype=s.dtype)
                  if jnp.issubdtype(jnp.result_type(x), jnp.integer) else jnp.asarray(x, s.dtype))
            a = jnp.concatenate([xv, s, jnp.ones((1,), s.dtype)])  # [m]
            M = jnp.where(ok[..., None], JM, 0.0)
            M = M.at[:, 0, :].add(Dz[:, None] * a[None, :])  # I_t: unit j's own row
            return {"M": M}, g_hist

        return update

    def init_influence(model, params):
        V, H = sizes(model, params)
        return lambda B, N, P, dt: {"M": jnp.zeros((B, H, rows.shape[1], V + H + 1), dt)}

    def init_carry(model, params, batch_shape):
        return _online("snap2", init_influence(model, params), None).init_carry(
            model, params, batch_shape)

    def value_and_grad(model, params, carry, batch, key):
        return _online("snap2", None, update_factory(model, params)).value_and_grad(
            model, params, carry, batch, key)

    return GradientEstimator(init_carry, value_and_grad, "snap2")


register("rtrl", rtrl, usage="rtrl")
register("uoro", uoro, usage="uoro")
register("snap1", snap1, arg=int, usage="snap1[:CHUNK]")
