"""Perturbation estimators: evolution strategies over a truncation (ES) and persistent ES (PES).

Neither uses autodiff: each evaluates the loss of ``particles`` perturbed
copies of ALL the params (cell and head), vectorised with ``jax.vmap``, so the
loss may be non-differentiable (a step function, an argmax, a sampled
readout). Perturbations are Gaussian, ``eps ~ N(0, sigma^2 I)`` over the
params flattened by ``jax.flatten_util.ravel_pytree`` (``P`` numbers), drawn
in antithetic pairs ``(+eps, -eps)``: ``particles = N`` unrolls use ``N/2``
draws (``N`` counts the perturbed unrolls, as in the paper's ``N = 1000``).

Both also run the unperturbed params over the batch: its loss is the reported
``loss`` and its final carry is the carry passed on (ES) or kept beside the
particles (PES), so ``train_step``'s metrics mean the same as for BPTT.

Resets (``Batch.resets``): ES unrolls every particle with them, so its
estimate on a packed stream is the sum of its estimates on the episodes (with
the same draws). PES refuses them (``ValueError``): its accumulated
perturbation ``xi`` is shared by all sequences of the batch, so it cannot
restart for one sequence alone.

References: Vicol, Metz & Sohl-Dickstein 2021, "Unbiased gradient estimation
  in unrolled computation graphs with persistent evolution strategies" (ICML);
  the authors' code, google-research ``persistent_es/gradient_estimators.py``
  (``es_grad``, ``pes_grad``), whose estimates these equal.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .. import validation
from ..models import _check_step_inputs, _sequence_loss, refuse_whole_sequence
from .base import GradientEstimator, _cell_carry, _check_key, register

__all__ = ["es", "pes", "PESCarry"]


class PESCarry(NamedTuple):
    """Carry of :func:`pes`.

    Attributes:
      state: the unperturbed cell carry ``[B, ...]`` (advanced with ``theta``).
      particles: the particles' cell carries ``[N, B, ...]``: particle ``i <
        N/2`` runs ``theta + eps_i``, particle ``N/2 + i`` runs ``theta - eps_i``.
      xi: ``[N/2, P]``, each pair's perturbations accumulated since the carry
        was made (``ravel_pytree(params)`` order; the ``-`` particle's is ``-xi``).
    """

    state: Any
    particles: Any
    xi: Any


def _check_sigma_particles(sigma, particles, antithetic=True):
    num = (int, float, np.integer, np.floating)
    if isinstance(sigma, bool) or not isinstance(sigma, num) or not float(sigma) > 0:
        raise ValueError(f"sigma (perturbation scale) must be a number > 0, got {sigma!r}")
    particles = validation.check_int("particles", particles)
    if antithetic and (particles < 2 or particles % 2):
        raise ValueError(f"particles must be an even number >= 2 (antithetic pairs), got {particles}")
    return float(sigma), particles


def _perturbed_losses(model, unravel, batch):
    """``(theta [P], carry) -> (loss, final_carry)`` for flat params (validated inputs)."""
    return lambda th, c: _sequence_loss(model, unravel(th), c, batch)


def _draw(key, pairs, theta, sigma):
    """``eps [pairs, P] ~ N(0, sigma^2 I)`` -- the same draw in :func:`es` and :func:`pes`."""
    return sigma * jax.random.normal(key, (pairs, theta.size), theta.dtype)


def es(sigma: float = 0.1, particles: int = 100, antithetic: bool = True) -> GradientEstimator:
    """Evolution strategies over the truncation (the batch), from the incoming carry.

    Every particle unrolls the batch from the same incoming carry with
    perturbed params ``theta + eps_i``; with antithetic pairs the estimate is

    .. math::
        \\hat g = \\frac{1}{N \\sigma^2} \\sum_{i=1}^{N/2} (L(\\theta + \\epsilon_i) - L(\\theta - \\epsilon_i))\\, \\epsilon_i,

    ``eps_i ~ N(0, sigma^2 I)`` (``N = particles``); without, ``(1 / (N sigma^2))
    sum_i (L(theta + eps_i) - L(theta)) eps_i`` (the unperturbed loss as a
    baseline; still unbiased). It is an unbiased estimate of the gradient of
    the Gaussian-smoothed loss ``E_eps L(theta + eps)`` of this batch with the
    incoming carry held fixed -- equal to the batch gradient for a quadratic
    loss -- so across a stream cut into truncations it has the truncation
    bias of :func:`~jrnn.grads.truncated` (no influence crosses the batch
    boundary). Cost: ``N + 1`` forward unrolls of the batch, no backward pass;
    memory of the ``N`` unrolls at once (``vmap``) plus ``N/2 x P`` draws.

    Carry: the cell's carry, advanced with the unperturbed params.

    Args:
      sigma: perturbation scale, > 0 (CLI: ``es:SIGMA``).
      particles: ``N``, the number of perturbed unrolls (even if antithetic).
      antithetic: draw ``(+eps, -eps)`` pairs.

    References: Vicol, Metz & Sohl-Dickstein 2021 (the "ES" estimator of
      truncated unrolls); Salimans et al. 2017, "Evolution strategies as a
      scalable alternative to reinforcement learning".
    """
    sigma, particles = _check_sigma_particles(sigma, particles, antithetic)
    antithetic = bool(antithetic)
    name = f"es:{sigma:g}"

    def value_and_grad(model, params, carry, batch, key):
        _check_key(name, key)
        _check_step_inputs(model, params, carry, batch)
        theta, unravel = ravel_pytree(params)
        run = _perturbed_losses(model, unravel, batch)
        loss, new_carry = run(theta, carry)
        f = jax.vmap(lambda th: run(th, carry)[0])
        if antithetic:
            eps = _draw(key, particles // 2, theta, sigma)
            diff = f(theta + eps) - f(theta - eps)  # [N/2]
        else:
            eps = _draw(key, particles, theta, sigma)
            diff = f(theta + eps) - loss
        g = (diff @ eps) / (particles * sigma ** 2)
        return loss, jax.lax.stop_gradient(unravel(g)), jax.lax.stop_gradient(new_carry), {}

    return GradientEstimator(_cell_carry, value_and_grad, name)


def pes(sigma: float = 0.1, particles: int = 100) -> GradientEstimator:
    """Persistent evolution strategies: ES whose particles persist across truncations.

    Each particle keeps its own cell state and the sum ``xi`` of the
    perturbations it has run with since its carry was made. Per batch
    (truncation), following Vicol et al.'s PES algorithm with antithetic
    sampling (the authors' ``pes_grad``):

    1. draw ``eps_i ~ N(0, sigma^2 I)``, ``i = 1..N/2``; ``xi_i <- xi_i + eps_i``;
    2. particle ``i`` unrolls the batch from its own state with
       ``theta + eps_i`` (loss ``L_i^+``), particle ``N/2 + i`` with
       ``theta - eps_i`` (``L_i^-``); both keep their final states;
    3. :math:`\\hat g = \\frac{1}{N \\sigma^2} \\sum_{i=1}^{N/2} (L_i^+ - L_i^-)\\, \\xi_i`.

    The unperturbed state is advanced too (the reported loss and ``carry.state``).

    When it is unbiased: with the params held fixed over a stream of
    truncations started from :meth:`init_carry`, the estimate at truncation
    ``t`` is unbiased for the gradient of (the Gaussian smoothing of) this
    truncation's loss through the WHOLE stream so far -- every earlier
    truncation's params included -- so the sum over the stream is unbiased
    for the gradient of the total loss (for linear-quadratic systems the
    smoothing changes nothing). Truncated ES, in contrast, only sees the
    current batch. In training the params change between truncations, so the
    accumulated ``xi`` mixes perturbations of older params (as RTRL's online
    influence does). On a fresh carry (``train_step(carry_over=False)``, or the
    first batch) PES equals :func:`es` with the same key. Its variance grows
    with the length of the stream (``xi`` is a sum of ``t`` draws); reset it
    by starting from ``init_carry`` again.

    Cost: ``N + 1`` forward unrolls of the batch per update, no backward pass;
    memory ``N + 1`` cell carries (``[N, B, ...]``) plus ``N/2 x P``
    accumulators (``P`` = all params), and ``N/2 x P`` draws per step.

    Args:
      sigma: perturbation scale, > 0 (CLI: ``pes:SIGMA``).
      particles: ``N``, the number of perturbed unrolls (even, >= 2).

    Returns:
      an estimator whose carry is a :class:`PESCarry`; ``init_carry`` takes
      ``batch_shape=(B,)``.

    References: Vicol, Metz & Sohl-Dickstein 2021, "Unbiased gradient
      estimation in unrolled computation graphs with persistent evolution
      strategies" (ICML), PES with antithetic sampling.
    """
    sigma, particles = _check_sigma_particles(sigma, particles)
    pairs = particles // 2
    name = f"pes:{sigma:g}"

    def init_carry(model, params, batch_shape):
        batch_shape = tuple(batch_shape)
        if len(batch_shape) != 1:
            raise ValueError(f"{name} takes batch_shape (B,), got {batch_shape}")
        theta, _ = ravel_pytree(params)
        state = model.cell.initial_carry(batch_shape)
        parts = jax.tree.map(lambda a: jnp.broadcast_to(a, (particles,) + a.shape), state)
        return PESCarry(state, parts, jnp.zeros((pairs, theta.size), theta.dtype))

    def value_and_grad(model, params, carry, batch, key):
        if not isinstance(carry, PESCarry):
            raise TypeError(f"{name} needs the PESCarry made by its init_carry, "
                            f"got {type(carry).__name__}")
        _check_key(name, key)
        refuse_whole_sequence(model, name)
        if batch.resets is not None:
            raise ValueError(f"{name} does not take batch.resets: its accumulated perturbation xi "
                             f"[N/2, P] is shared by the whole batch and cannot restart for one "
                             f"sequence; use es, or start episodes on batch boundaries with a fresh "
                             f"carry (train_step(carry_over=False))")
        _check_step_inputs(model, params, carry.state, batch)
        B = int(jnp.shape(batch.inputs)[1])
        validation.check_carry(model.cell, carry.particles, (particles, B), "carry.particles")
        theta, unravel = ravel_pytree(params)
        if tuple(jnp.shape(carry.xi)) != (pairs, theta.size):
            raise ValueError(f"{name}: carry.xi must have shape [N/2, P] = {(pairs, theta.size)}, "
                             f"got {tuple(jnp.shape(carry.xi))}")
        run = _perturbed_losses(model, unravel, batch)
        loss, state = run(theta, carry.state)
        eps = _draw(key, pairs, theta, sigma)
        xi = carry.xi + eps
        half = lambda a, lo: a[lo * pairs:(lo + 1) * pairs]
        sp = jax.tree.map(lambda a: half(a, 0), carry.particles)
        sm = jax.tree.map(lambda a: half(a, 1), carry.particles)
        lp, cp = jax.vmap(run)(theta + eps, sp)
        lm, cm = jax.vmap(run)(theta - eps, sm)
        g = ((lp - lm) @ xi) / (particles * sigma ** 2)
        parts = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), cp, cm)
        new = jax.lax.stop_gradient(PESCarry(state, parts, xi))
        return loss, jax.lax.stop_gradient(unravel(g)), new, {}

    return GradientEstimator(init_carry, value_and_grad, name)


register("es", es, float, usage="es[:SIGMA]")
register("pes", pes, float, usage="pes[:SIGMA]")
