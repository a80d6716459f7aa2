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

from ..models import Model
from .base import GradientEstimator, register
from .online import _elman_sizes, _online

__all__ = ["kf_rtrl"]

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
            xv = (jax.nn.one_hot(x, V, dtype=s.dtype) if jnp.issubdtype(jnp.result_type(x), jnp.integer)
                  else jnp.asarray(x, s.dtype))
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
