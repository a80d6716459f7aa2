"""Vanishing and exploding gradients made visible (Goodfellow et al. 10.7; Pascanu et al. 2013).

Two measurements along one trajectory:

- :func:`hidden_grads`: ``dL/dh_t`` for every ``t``, the total derivative of
  the (masked, mean) sequence loss with respect to the carry after step ``t``,
  through the output at ``t`` and every later step. BPTT's error signal
  ``delta_t = dl_t/dh_t + J_{t+1}^T delta_{t+1}``: its norm against ``t`` shows
  whether a late loss still reaches early states.
- :func:`step_jacobians` / :func:`step_singular_values`: ``J_t = dh_t/dh_{t-1}``
  of each step along the trajectory and its singular values. ``delta`` is a
  product of the ``J^T``; singular values below (above) one shrink (grow) it.

How ``dL/dh_t`` is obtained: zero perturbations ``eps_t`` are added to the
carry entering each step (``jrnn.unroll``'s ``before_step`` hook) and
``zeta_t`` to each step's output before the head; one ``jax.grad`` with
respect to both gives ``dL/dc_{t-1}`` (the part flowing back through the
recurrence) and ``dL/dy_t`` (the direct part), and ``dL/dh_t = dL/dy_t +
dL/deps_{t+1}`` placed into the carry field the output is read from.

References: Bengio, Simard & Frasconi 1994, "Learning long-term dependencies
with gradient descent is difficult"; Pascanu, Mikolov & Bengio 2013, "On the
difficulty of training recurrent neural networks".
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from . import scan, validation
from .cells import Cell, LSTMState
from .data.batches import Batch
from .models import Model, loss_weights

__all__ = ["HiddenGrads", "hidden_grads", "step_jacobians", "step_singular_values"]


class HiddenGrads(NamedTuple):
    """What :func:`hidden_grads` returns.

    Attributes:
      carry: ``dL/dh_t``, the carry's pytree with a leading time axis: every
        leaf ``[T, B..., ...]`` (an LSTM's ``LSTMState(h, c)``: both fields).
      norms: ``[T, B...]``, the Euclidean norm of ``carry[t]`` per example
        (over all the carry's leaves).
      loss: the loss ``L`` (scalar), as :func:`jrnn.sequence_loss` gives it.
    """

    carry: Any
    norms: jax.Array
    loss: jax.Array


def _add_output(cell: Cell, dcarry, dy):
    """``dcarry`` with the output's gradient ``dy`` added to the field the output is read from.

    The output of the built cells is their carry (elman, gru, leaky), its ``h``
    (lstm) or, for a stack, the top layer's output.
    """
    if cell.layers is not None:
        return (*dcarry[:-1], _add_output(cell.layers[-1], dcarry[-1], dy))
    if isinstance(dcarry, LSTMState):
        return dcarry._replace(h=dcarry.h + dy)
    if isinstance(dcarry, jax.Array) and dcarry.shape == dy.shape:
        return dcarry + dy
    raise TypeError(f"hidden_grads needs the cell's output to be its carry, the carry's h or a "
                    f"stack's top output; cell {cell.name!r} has a carry of type "
                    f"{type(dcarry).__name__}")


def hidden_grads(model: Model, params, batch: Batch, carry=None) -> HiddenGrads:
    """``dL/dh_t`` for every step ``t`` of one batch, with ``L`` = :func:`jrnn.sequence_loss`.

    Args:
      model: a :class:`~jrnn.models.Model` whose cell's output is its carry
        (or the carry's ``h``; a stack's top layer's).
      params: ``{"cell": ..., "head": ...}``.
      batch: a time-major :class:`~jrnn.models.Batch` (``inputs`` ``[T, B, D]``
        or ids ``[T, B]``; ``mask`` weights the loss as in training).
      carry: the initial carry ``[B, ...]``; zeros if ``None``.

    Returns:
      :class:`HiddenGrads` ``(carry, norms, loss)``; ``carry`` leaves are
      ``[T, B, ...]``, ``norms`` is ``[T, B]``. The loss is a mean over the
      batch, so each example's gradient carries a factor ``1 / sum(mask)``.
    """
    validation.check_batch(model, batch)
    validation.check_model_params(model, params)
    cell = model.cell
    xs, carry, opts = scan._validate(cell, params["cell"], batch.inputs, carry)
    T = int(np.shape(xs)[0])
    # one zero per carry entry and step; eps[t] enters step t, zeta[t] is added to y_t
    eps = jax.tree.map(lambda c: jnp.zeros((T,) + c.shape, c.dtype), carry)
    weights = loss_weights(batch)

    def loss(eps, zeta):
        hook = lambda t, c: jax.tree.map(lambda a, e: a + e[t], c, eps)
        with validation._trusted():  # checked above
            hs, _ = scan._unroll_unchecked(cell, params["cell"], xs, carry,
                                           opts._replace(before_step=hook))
        losses = model.loss(model.head(params["head"], hs + zeta), batch.targets)
        return jnp.sum(losses * weights)

    @jax.jit
    def grads(eps):
        hs_shape = jax.eval_shape(
            lambda: scan._unroll_unchecked(cell, params["cell"], xs, carry, opts)[0])
        zeta = jnp.zeros(hs_shape.shape, hs_shape.dtype)
        value, (g_eps, g_out) = jax.value_and_grad(loss, argnums=(0, 1))(eps, zeta)
        # dL/dh_t gets the recurrent part from the carry entering step t+1 (none after T-1)
        nxt = jax.tree.map(lambda g: jnp.concatenate([g[1:], jnp.zeros_like(g[:1])]), g_eps)
        total = _add_output(cell, nxt, g_out)
        batch_nd = hs_shape.ndim - 1  # [T, B...]
        sq = sum(jnp.sum(jnp.reshape(g, g.shape[:batch_nd] + (-1,)) ** 2, -1)
                 for g in jax.tree.leaves(total))
        return HiddenGrads(total, jnp.sqrt(sq), value)

    return grads(eps)


def step_jacobians(cell: Cell, params, xs, carry=None):
    """The step Jacobians ``J_t = dc_t / dc_{t-1}`` along one unbatched trajectory.

    ``c`` is the whole carry flattened (``jax.flatten_util.ravel_pytree``: an
    LSTM's ``[h, c]``, a stack's layers bottom first), so ``J_t`` is ``[n, n]``
    with ``n`` the carry's size; each is ``jax.jacfwd`` of ``cell.step`` at the
    carry the trajectory reaches.

    Args:
      cell: the cell.
      params: its params.
      xs: ONE sequence: ``[T, D]`` floats or ``[T]`` token ids.
      carry: the unbatched initial carry (zeros if ``None``).

    Returns:
      ``[T, n, n]``: ``J_t[i, j] = d c_t[i] / d c_{t-1}[j]``.
    """
    validation.check_params(cell, params)
    xs = jnp.asarray(xs)
    int_ids = jnp.issubdtype(xs.dtype, jnp.integer)
    if xs.ndim != (1 if int_ids else 2):
        raise ValueError(f"xs must be one sequence, [T] token ids or [T, D] floats; got "
                         f"{xs.dtype} {tuple(xs.shape)} (for a batch, vmap over it)")
    carry = cell.initial_carry(()) if carry is None else carry
    validation.check_carry(cell, carry, ())
    _, unravel = ravel_pytree(carry)

    @jax.jit
    def run(carry, xs):
        xp = cell.project(params, xs)

        def body(c, x):
            flat = lambda v: ravel_pytree(cell.step(params, unravel(v), x)[0])[0]
            return cell.step(params, c, x)[0], jax.jacfwd(flat)(ravel_pytree(c)[0])

        return jax.lax.scan(body, carry, xp)[1]

    return run(carry, xs)


def step_singular_values(cell: Cell, params, xs, carry=None):
    """Singular values of each step Jacobian along the trajectory, largest first.

    Args: as :func:`step_jacobians`.

    Returns:
      ``[T, n]``; ``[:, 0]`` is each step's spectral norm ``||J_t||_2``.
    """
    return jnp.linalg.svd(step_jacobians(cell, params, xs, carry), compute_uv=False)
