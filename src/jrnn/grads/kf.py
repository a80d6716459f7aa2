"""KF-RTRL: the influence of an Elman-type cell kept as one random Kronecker product.

For a cell whose pre-activation is ``z = x W_xh + h W_hh + b_h`` and whose
step is elementwise given ``z`` (``rnn``, ``rnn-relu``, :func:`jrnn.leaky`
with fixed time constants), the immediate Jacobian of the carry with respect
to the stacked weight ``W = [W_xh; W_hh; b_h]`` ``[m, H]`` (``m = D + H + 1``)
is a Kronecker product: ``d s'_i / d W_kj = delta_ij D_i a_k`` with
``a = [x; h_{t-1}; 1]`` ``[m]`` and ``D = d s' / d z`` ``[H]``. KF-RTRL keeps
the influence ``M[i, (k, j)] ~ u_k A_ij`` (``u`` ``[m]``, ``A`` ``[H, H]``)
and each step replaces the sum of two Kronecker products,
``u (x) (J_s A) + a (x) diag(D)``, by one, unbiasedly (random sign ``c``):

``u <- p1 u + c p2 a``, ``A <- J_s A / p1 + c diag(D) / p2``

with ``p1 = sqrt(|J_s A| / |u|)``, ``p2 = sqrt(|D| / |a|)`` (``eps`` added to
each norm), which minimise the variance of the cross terms; their
expectation is zero because ``E[c] = 0``. Token inputs enter as the one-hot
rows of ``x``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .base import GradientEstimator, register
from .online import _elman_sizes, _online

__all__ = ["kf_rtrl", "ok_rtrl"]


def kf_rtrl(eps: float = 1e-7) -> GradientEstimator:
    """Kronecker-factored RTRL: ``M_t ~ u_t (x) A_t``, unbiased (module docstring).

    Cells: the Elman type only (``rnn``, ``rnn-relu``, ``leaky(learn_tau=False)``,
    or a cell of yours with the Elman params ``W_xh``, ``W_hh``, ``b_h``, an
    additive fast recurrence on ``W_hh`` and ``unit_blocks=1``); others get a
    ``ValueError`` in ``init_carry``. Unbiased: ``E[u_t (x) A_t] = M_t``
    (RTRL's influence), so the gradient ``sum_k u_k ((g_s A) (x) e_k)`` is
    unbiased; its variance is lower than UORO's, whose factors are ``[N]``
    and ``[P]`` (tested). Memory ``B (H^2 + m)`` floats, ``m = D + H + 1``
    (``D`` the input width or vocabulary size); time per step ``O(H^3)`` for
    ``J_s A`` (``H`` tangents through the step) plus ``O(m H)`` for the
    gradient, against RTRL's ``O(H^2 P)``. Resets zero ``(u, A)``.

    Args:
      eps: added to the norms in ``p1``, ``p2`` (> 0).

    References: Mujika, Meier & Steger 2018, "Approximating real-time recurrent
      learning with random Kronecker factors" (NeurIPS).
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) or not eps > 0:
        raise ValueError(f"eps must be a number > 0, got {eps!r}")

    def update_factory(model, params):
        V, H = _elman_sizes(model, params, "kf-rtrl")
        p = params["cell"]
        ravel = lambda tree: ravel_pytree(tree)[0]
        zeros = {k: jnp.zeros_like(v) for k, v in p.items()}
        bias_dir = ravel({**zeros, "b_h": jnp.ones_like(p["b_h"])})  # z moves by 1 in every unit

        def update(f, theta, s, x, infl, gs, key):
            u, A = infl  # [m], [H, H]
            gA = gs @ A  # [H]
            g_hist = ravel({"W_xh": jnp.outer(u[:V], gA), "W_hh": jnp.outer(u[V:V + H], gA),
                            "b_h": u[V + H] * gA})
            fs = lambda s: f(theta, s, x)[0]
            _, lin = jax.linearize(fs, s)
            JA = jax.vmap(lin, in_axes=1, out_axes=1)(A)  # J_s A, one tangent per column
            # D = ds'/dz: the bias moves z by one in every unit, and s'_i depends on z_i alone
            D = jax.jvp(lambda th: f(th, s, x)[0], (theta,), (bias_dir.astype(theta.dtype),))[1]
            ids = jnp.issubdtype(jnp.result_type(x), jnp.integer)
            xv = jax.nn.one_hot(x, V, dtype=s.dtype) if ids else jnp.asarray(x, s.dtype)
            a = jnp.concatenate([xv, s, jnp.ones((1,), s.dtype)])
            c = jax.random.rademacher(key, (), s.dtype)
            p1 = jnp.sqrt((jnp.linalg.norm(JA) + eps) / (jnp.linalg.norm(u) + eps))
            p2 = jnp.sqrt((jnp.linalg.norm(D) + eps) / (jnp.linalg.norm(a) + eps))
            return (p1 * u + c * p2 * a, JA / p1 + (c / p2) * jnp.diag(D)), g_hist

        return update

    def init_influence_for(model, params):
        V, H = _elman_sizes(model, params, "kf-rtrl")
        return lambda B, N, P, dt: (jnp.zeros((B, V + H + 1), dt), jnp.zeros((B, H, H), dt))

    def init_carry(model, params, batch_shape):
        return _online("kf-rtrl", init_influence_for(model, params), None).init_carry(
            model, params, batch_shape)

    def value_and_grad(model, params, carry, batch, key):
        est = _online("kf-rtrl", None, update_factory(model, params), stochastic=True)
        return est.value_and_grad(model, params, carry, batch, key)

    return GradientEstimator(init_carry, value_and_grad, "kf-rtrl")


register("kf-rtrl", kf_rtrl, usage="kf-rtrl")


def _unbiased_rank_drop(sigma, signs):
    """``Y [n, n-1]`` with ``E[Y Y^T] = diag(sigma)``, of least variance (Benzing et al. 2019).

    ``sigma`` ``[n]`` sorted descending, >= 0. The largest ``m`` values are kept
    exactly, ``m`` the smallest with ``(k - 1) sigma_{m+1} <= s`` (``k = n - m``,
    ``s`` the sum of the ``k`` others); those others become
    ``s / (k - 1) (I - x x^T)`` with ``x_i = +-sqrt(1 - (k - 1) sigma_i / s)``
    (random signs ``signs``, ``|x| = 1``), a rank ``k - 1`` matrix whose mean over
    the signs is their diagonal.
    """
    n = sigma.shape[0]
    tails = jnp.cumsum(sigma[::-1])[::-1]  # s_m = sum_{i >= m} sigma_i
    ks = n - jnp.arange(n - 1)
    ok = (ks - 1) * sigma[:-1] <= tails[:-1] * (1 + 1e-6)  # m = n - 2 always qualifies
    m = jnp.argmax(ok)
    tail = jnp.arange(n) >= m
    k, s = n - m, tails[m]
    x2 = jnp.where(tail, 1.0 - (k - 1) * sigma / jnp.where(s > 0, s, 1.0), 0.0)
    x = signs * jnp.sqrt(jnp.clip(x2, 0.0, 1.0))
    X = jnp.diag(jnp.where(tail, s / (k - 1), sigma)) - (s / (k - 1)) * jnp.outer(x, x)
    lam, vec = jnp.linalg.eigh(X)  # rank n - 1: drop the smallest (zero) eigenvalue
    return vec[:, 1:] * jnp.sqrt(jnp.clip(lam[1:], 0.0))


def ok_rtrl(rank: int = 2) -> GradientEstimator:
    """OK: the optimal Kronecker-sum approximation, ``M_t ~ sum_{i<=r} u_i (x) A_i``, unbiased.

    The Elman-type cells of :func:`kf_rtrl`. Each step forms the ``r + 1``
    terms ``u_i (x) J_s A_i`` and ``a (x) diag(D)``, writes their sum in
    orthonormal bases of the ``u``'s and the ``A``'s (two QR factorisations)
    as an ``(r + 1) x (r + 1)`` matrix, and replaces its singular values by
    the unbiased rank-``r`` approximation of least variance (keep the
    largest exactly, mix the rest with random signs). Unbiased; exact while
    the influence has rank ``<= r`` (``T <= r + 1`` steps from a fresh carry);
    variance below KF-RTRL's (``rank=1`` is the optimal single Kronecker
    product; tested at ``rank=2``). Memory ``B r (H^2 + m)`` floats; time per
    step ``O(r H^3)`` for ``J_s A_i`` plus the QR of ``[H^2, r + 1]``.

    Args:
      rank: ``r``, the number of Kronecker products kept (>= 1).

    References: Benzing, Gauy, Mujika, Martinsson & Steger 2019, "Optimal
      Kronecker-sum approximation of real time recurrent learning" (ICML).
    """
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"rank must be an int >= 1, got {rank!r}")
    r = int(rank)

    def update_factory(model, params):
        V, H = _elman_sizes(model, params, "ok")
        p = params["cell"]
        ravel = lambda tree: ravel_pytree(tree)[0]
        zeros = {k: jnp.zeros_like(v) for k, v in p.items()}
        bias_dir = ravel({**zeros, "b_h": jnp.ones_like(p["b_h"])})

        def update(f, theta, s, x, infl, gs, key):
            U, A = infl  # [m, r], [r, H, H]
            gA = jnp.einsum("h,rhj->rj", gs, A)  # [r, H]
            G = U @ gA  # [m, H]: the W-shaped history gradient
            g_hist = ravel({"W_xh": G[:V], "W_hh": G[V:V + H], "b_h": G[V + H]})
            _, lin = jax.linearize(lambda s: f(theta, s, x)[0], s)
            JA = jax.vmap(jax.vmap(lin, in_axes=1, out_axes=1))(A)  # [r, H, H]
            D = jax.jvp(lambda th: f(th, s, x)[0], (theta,), (bias_dir.astype(theta.dtype),))[1]
            ids = jnp.issubdtype(jnp.result_type(x), jnp.integer)
            xv = jax.nn.one_hot(x, V, dtype=s.dtype) if ids else jnp.asarray(x, s.dtype)
            a = jnp.concatenate([xv, s, jnp.ones((1,), s.dtype)])
            Ut = jnp.concatenate([U, a[:, None]], axis=1)  # [m, r + 1]
            At = jnp.concatenate([JA, jnp.diag(D)[None]]).reshape(r + 1, H * H).T  # [H^2, r + 1]
            Qu, Ru = jnp.linalg.qr(Ut)
            Qa, Ra = jnp.linalg.qr(At)
            W, sigma, Vt = jnp.linalg.svd(Ru @ Ra.T)
            Y = _unbiased_rank_drop(sigma, jax.random.rademacher(key, (r + 1,), s.dtype))
            U_new = Qu @ (W @ Y)  # [m, r]
            A_new = (Qa @ (Vt.T @ Y)).T.reshape(r, H, H)
            return (U_new, A_new), g_hist

        return update

    def init_influence_for(model, params):
        V, H = _elman_sizes(model, params, "ok")
        return lambda B, N, P, dt: (jnp.zeros((B, V + H + 1, r), dt), jnp.zeros((B, r, H, H), dt))

    name = "ok" if r == 2 else f"ok:{r}"

    def init_carry(model, params, batch_shape):
        return _online(name, init_influence_for(model, params), None).init_carry(
            model, params, batch_shape)

    def value_and_grad(model, params, carry, batch, key):
        est = _online(name, None, update_factory(model, params), stochastic=True)
        return est.value_and_grad(model, params, carry, batch, key)

    return GradientEstimator(init_carry, value_and_grad, name)


register("ok", ok_rtrl, arg=int, usage="ok[:RANK]")
