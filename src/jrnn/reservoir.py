"""Echo-state networks (Goodfellow et al. 10.8): a fixed random reservoir, a ridge readout.

The reservoir is an ordinary cell, :func:`jrnn.elman` (or :func:`jrnn.leaky`
with fixed time constants: a leaky-integrator ESN), whose params come from
:func:`reservoir` -- random input weights and a random recurrent matrix scaled
to a chosen spectral radius -- and are never trained. Only the readout is
fitted, in closed form: ridge regression of the targets on the states that
:func:`jrnn.unroll` collects (:func:`ridge`, :func:`fit_readout`). The readout
is the dense head of :func:`jrnn.regressor` / :func:`jrnn.classifier`, so the
fitted ESN is a plain :class:`~jrnn.models.Model` with params
``{"cell": reservoir, "head": readout}``: :func:`jrnn.evaluate`,
:func:`jrnn.sequence_loss` and :func:`jrnn.gradient_flow.hidden_grads` take it
as they take a trained net.

A spectral radius below one is the usual (neither necessary nor sufficient)
recipe for the echo-state property: the state forgets its initial condition
and becomes a function of the recent inputs.

References: Jaeger 2001, "The 'echo state' approach to analysing and training
recurrent neural networks"; Jaeger, Lukosevicius, Popovici & Siewert 2007
(leaky-integrator ESNs); Lukosevicius 2012, "A practical guide to applying
echo state networks".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import scan, validation
from .cells import Cell
from .data.batches import Batch
from .models import Model

__all__ = ["fit_readout", "reservoir", "ridge", "spectral_radius", "with_spectral_radius"]


def spectral_radius(w) -> float:
    """``max |lambda_i(w)|`` of a square matrix ``[H, H]`` (NumPy's eigenvalues, in float64)."""
    w = np.asarray(w, np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"w must be a square matrix [H, H], got shape {w.shape}")
    return float(np.max(np.abs(np.linalg.eigvals(w))))


def with_spectral_radius(w, rho: float):
    """``w`` rescaled so that its spectral radius is ``rho`` (same dtype; host computation).

    Raises:
      ValueError: ``rho`` is negative or not finite, or ``w`` is nilpotent
        (spectral radius 0: no rescaling reaches ``rho > 0``).
    """
    if isinstance(rho, bool) or not (isinstance(rho, (int, float)) and np.isfinite(rho) and rho >= 0):
        raise ValueError(f"spectral_radius must be a finite number >= 0, got {rho!r}")
    r = spectral_radius(w)
    if r == 0.0 and rho > 0:
        raise ValueError("w has spectral radius 0 (e.g. too sparse): it cannot be rescaled")
    scale = 0.0 if r == 0.0 else rho / r
    return jnp.asarray(np.asarray(w, np.float64) * scale, jnp.asarray(w).dtype)


def reservoir(key, input_size: int, hidden_size: int, *, spectral_radius: float = 0.9,
              input_scale: float = 1.0, density: float = 1.0, bias_scale: float = 0.0,
              dtype=jnp.float32) -> dict:
    """Random fixed params for :func:`jrnn.elman` (or a fixed-``tau`` :func:`jrnn.leaky`).

    ``W_hh [H, H]``: standard normal entries, each kept with probability
    ``density``, rescaled to the spectral radius; ``W_xh [D, H]`` (or a
    ``[V, H]`` table for token ids) ``~ U(-input_scale, input_scale)``;
    ``b_h [H] ~ U(-bias_scale, bias_scale)``. Runs on the host (eigenvalues):
    call it eagerly, not inside ``jit``.

    Args:
      key: a JAX PRNG key.
      input_size: ``D`` (or the vocabulary size for token inputs).
      hidden_size: ``H``.
      spectral_radius: ``max |lambda(W_hh)|`` of the result.
      input_scale: half-width of the input weights' range.
      density: fraction of non-zero recurrent weights, in ``(0, 1]``.
      bias_scale: half-width of the bias range (0: no bias).
      dtype: the params' dtype.

    Returns:
      ``{"W_xh": [D, H], "W_hh": [H, H], "b_h": [H]}``.
    """
    D = validation.check_int("input_size", input_size)
    H = validation.check_int("hidden_size", hidden_size)
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    for name, v in (("input_scale", input_scale), ("bias_scale", bias_scale)):
        if not (np.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    kx, kh, km, kb = jax.random.split(key, 4)
    w = np.asarray(jax.random.normal(kh, (H, H), jnp.float32), np.float64)
    w = w * np.asarray(jax.random.uniform(km, (H, H)) < density)
    return {"W_xh": jax.random.uniform(kx, (D, H), dtype, -input_scale, input_scale),
            "W_hh": with_spectral_radius(w.astype(np.dtype(dtype)), spectral_radius),
            "b_h": jax.random.uniform(kb, (H,), dtype, -bias_scale, bias_scale)}


def ridge(features, targets, alpha: float, weights=None):
    """Closed-form ridge regression with an unpenalised intercept (float64, on the host).

    Minimises ``sum_n w_n ||y_n - x_n W - b||^2 + alpha ||W||_F^2`` by the
    normal equations of the weighted, centred problem.

    Args:
      features: ``X [N, F]``.
      targets: ``Y [N, O]``.
      alpha: the ridge penalty ``>= 0`` (0: least squares; needs ``X`` of full
        column rank).
      weights: optional ``w [N] >= 0`` (default ones).

    Returns:
      ``(W [F, O], b [O])`` as float64 NumPy arrays.
    """
    X, Y = np.asarray(features, np.float64), np.asarray(targets, np.float64)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"features must be [N, F] and targets [N, O] with the same N, got "
                         f"{X.shape} and {Y.shape}")
    if not (np.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    w = np.ones(X.shape[0]) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (X.shape[0],) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError(f"weights must be [N] = ({X.shape[0]},), >= 0, not all 0; got shape "
                         f"{w.shape}")
    mx, my = w @ X / w.sum(), w @ Y / w.sum()  # the intercept absorbs the weighted means
    Xc, Yc = X - mx, Y - my
    A = Xc.T @ (w[:, None] * Xc) + alpha * np.eye(X.shape[1])
    W = np.linalg.solve(A, Xc.T @ (w[:, None] * Yc))
    return W, my - mx @ W


def _states(cell: Cell, params, xs, carry=None):
    """``jrnn.unroll``'s outputs ``[T, B, H]`` as a jitted call (the reservoir is a constant)."""
    return jax.jit(lambda p, x: scan.unroll(cell, p, x, carry)[0])(params, xs)


def fit_readout(model: Model, cell_params, batch: Batch, alpha: float = 1e-6, *,
                washout: int = 0):
    """Fit the model's dense head by ridge regression on the reservoir's states.

    The states ``h_t`` come from :func:`jrnn.unroll` over ``batch.inputs``
    (zeros as initial carry); positions ``t < washout`` and those with mask 0
    are left out, the mask's values weight the rest. Float targets
    (:func:`jrnn.regressor`) are regressed on directly; integer labels
    (:func:`jrnn.classifier`) as one-hot vectors (a least-squares classifier:
    predict the argmax).

    Args:
      model: a regressor or classifier over the reservoir cell (its head is
        ``h @ W_hq + b_q``).
      cell_params: the fixed reservoir params (e.g. from :func:`reservoir`).
      batch: time-major training data (``inputs [T, B, D]`` or ids ``[T, B]``).
      alpha: the ridge penalty.
      washout: initial steps whose states are discarded (the transient).

    Returns:
      ``{"cell": cell_params, "head": {"W_hq": [H, O], "b_q": [O]}}`` in the
      cell's dtype.
    """
    spec = jax.eval_shape(model.init, jax.random.key(0))
    if set(spec["head"]) != {"W_hq", "b_q"}:
        raise TypeError(f"fit_readout fits a dense head {{W_hq, b_q}}; this model's head has "
                        f"{sorted(spec['head'])}")
    validation.check_batch(model, batch)
    validation.check_params(model.cell, cell_params, model.input_size, name="cell_params")
    T = int(np.shape(batch.inputs)[0])
    washout = validation.check_int("washout", washout, minimum=0)
    if washout >= T:
        raise ValueError(f"washout must be < T = {T}, got {washout}")
    hs = np.asarray(_states(model.cell, cell_params, batch.inputs))[washout:]  # [T', B, H]
    y = np.asarray(batch.targets)[washout:]
    O = spec["head"]["b_q"].shape[0]
    if model.labels:
        y = np.eye(O)[y]
    m = np.ones(hs.shape[:2]) if batch.mask is None else np.asarray(batch.mask, np.float64)[washout:]
    keep = m.reshape(-1) > 0
    W, b = ridge(hs.reshape(-1, hs.shape[-1])[keep], y.reshape(-1, O)[keep], alpha,
                 m.reshape(-1)[keep])
    dt = spec["head"]["W_hq"].dtype
    return {"cell": cell_params, "head": {"W_hq": jnp.asarray(W, dt), "b_q": jnp.asarray(b, dt)}}
