"""Output-to-hidden recurrence (Goodfellow fig. 10.4): teacher forcing, free running, scheduled sampling.

The only recurrence is through the previous output: with ``o_{t-1}`` the
previous output fed back,

.. math::
    h_t = \\tanh(x_t W_x + f_{t-1} W_f + b_h), \\qquad o_t = h_t W_o + b_o

where the fed-back ``f_{t-1}`` is the previous *target* ``y_{t-1}`` under
teacher forcing and the model's own previous output under free running
(open loop): ``o_{t-1}`` for values, ``softmax(o_{t-1})`` for classes. The
hidden layer is not carried: the carry is the fed-back output ``[..., O]``.

Which one is fed is chosen per step and per example by a flag in the input,
so the cell stays pure and one model serves all three regimes: flags all 1
(teacher forcing: the carry is unused, every step is independent given the
targets, and training needs no back-propagation through time), all 0 after
step 0 (free running), or Bernoulli(p) drawn on the host per batch
(scheduled sampling, Bengio et al. 2015). The stream's input at step ``t``
is ``[x_t (D), y_{t-1} (O), flag_t (1)]``, built by :func:`inputs`; step 0
reads ``y_{-1}``, the given start (zeros by default), under its flag.

The cell is a plain :class:`~jrnn.cells.Cell`: ``jrnn.fit``, every BPTT
variant, RTRL and UORO train it; SnAp-1 refuses it (its output feedback
couples all units in one step: no ``unit_blocks`` pattern).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import validation
from .cells import Cell
from .models import Model

__all__ = ["FEEDBACKS", "inputs", "output_model", "output_recurrence", "schedule"]

FEEDBACKS = ("value", "probs")


def output_recurrence(hidden_size: int, output_size: int, feedback: str = "value",
                      dtype=jnp.float32) -> Cell:
    """The fig. 10.4 cell; its output ``h_t`` is the output ``o_t`` ``[..., O]``.

    Args:
      hidden_size: ``H``, the width of the (non-recurrent) hidden layer.
      output_size: ``O``.
      feedback: ``"value"`` (feed back ``o_t``: regression) or ``"probs"``
        (feed back ``softmax(o_t)``: classes, one-hot targets when teacher-forced).
      dtype: parameter dtype.

    The cell's ``init(key, D)`` takes the task's input width ``D``; its inputs
    are the stream ``[..., D + O + 1]`` of :func:`inputs`.
    Params: ``W_x [D, H]``, ``W_f [O, H]``, ``b_h [H]``, ``W_o [H, O]``, ``b_o [O]``.
    """
    H = validation.check_int("hidden_size", hidden_size)
    O = validation.check_int("output_size", output_size)
    if feedback not in FEEDBACKS:
        raise ValueError(f"feedback must be one of {FEEDBACKS}, got {feedback!r}")

    def init(key, input_size):
        D = validation.check_int("input_size", input_size, minimum=0)
        kx, kf, ko = jax.random.split(key, 3)
        s, so = 1.0 / np.sqrt(max(D + O, 1)), 1.0 / np.sqrt(H)
        return {"W_x": jax.random.uniform(kx, (D, H), dtype, -s, s),
                "W_f": jax.random.uniform(kf, (O, H), dtype, -s, s),
                "b_h": jnp.zeros((H,), dtype),
                "W_o": jax.random.uniform(ko, (H, O), dtype, -so, so),
                "b_o": jnp.zeros((O,), dtype)}

    def project(params, xs):
        D = params["W_x"].shape[0]
        if jnp.issubdtype(jnp.result_type(xs), jnp.integer) or xs.shape[-1] != D + O + 1:
            raise ValueError(f"output_recurrence takes float inputs [..., D + O + 1 = {D + O + 1}] "
                             f"(jrnn.output_recurrence.inputs), got {jnp.result_type(xs)} "
                             f"{tuple(jnp.shape(xs))}")
        # the input product for all steps at once; the teacher part and flag pass through
        return jnp.concatenate([xs[..., :D] @ params["W_x"] + params["b_h"], xs[..., D:]], -1)

    def step(params, carry, xp):
        a, teacher, flag = xp[..., :H], xp[..., H:H + O], xp[..., -1:]
        fed = jnp.where(flag > 0.5, teacher, carry)
        o = jnp.tanh(a + fed @ params["W_f"]) @ params["W_o"] + params["b_o"]
        return (o if feedback == "value" else jax.nn.softmax(o, axis=-1)), o

    def initial_carry(batch_shape=()):
        return jnp.zeros((*tuple(batch_shape), O), dtype)

    return Cell(init, initial_carry, project, step, O, f"output-recurrence-{feedback}")


def output_model(hidden_size: int, input_size: int, output_size: int,
                 feedback: str = "value") -> Model:
    """The cell as a :class:`~jrnn.models.Model`: identity head, per-step loss on ``o_t``.

    ``feedback="value"``: half squared error against float targets ``[T, B, O]``;
    ``"probs"``: softmax cross-entropy against integer labels ``[T, B]`` in ``[0, O)``.
    ``input_size`` is ``D`` (the task's inputs); the model's is ``D + O + 1``.
    """
    D = validation.check_int("input_size", input_size, minimum=0)
    cell = output_recurrence(hidden_size, output_size, feedback)
    width = D + output_size + 1
    if feedback == "value":
        loss, labels = (lambda o, y: 0.5 * jnp.sum((o - y) ** 2, axis=-1)), False
    else:
        loss, labels = optax.softmax_cross_entropy_with_integer_labels, True
    return Model(cell, lambda key: {"cell": cell.init(key, D), "head": {}},
                 lambda p, h: h, loss, width, False, labels)


def inputs(xs, targets, flags, start=None, num_classes: int | None = None) -> np.ndarray:
    """The stream ``[x_t, y_{t-1}, flag_t]`` ``[T, B, D + O + 1]`` (NumPy, on the host).

    Args:
      xs: float ``[T, B, D]`` (``D`` may be 0).
      targets: float ``[T, B, O]``, or int labels ``[T, B]`` with ``num_classes`` (one-hot).
      flags: ``[T, B]`` (or broadcastable, e.g. a scalar): 1 feeds the previous
        target, 0 the model's own previous output.
      start: ``y_{-1}`` ``[B, O]``, what step 0 is fed under flag 1 (default zeros).
      num_classes: ``O`` for integer labels.

    Returns:
      float32 ``[T, B, D + O + 1]``.
    """
    xs = np.asarray(xs, np.float32)
    if xs.ndim != 3:
        raise ValueError(f"xs must be [T, B, D], got shape {xs.shape}")
    T, B = xs.shape[:2]
    y = np.asarray(targets)
    if np.issubdtype(y.dtype, np.integer):
        if num_classes is None:
            raise ValueError("integer targets need num_classes (they are fed back one-hot)")
        y = np.eye(num_classes, dtype=np.float32)[y]
    y = y.astype(np.float32)
    if y.ndim != 3 or y.shape[:2] != (T, B):
        raise ValueError(f"targets must be [T, B, O] floats or [T, B] labels with T, B = {(T, B)}, "
                         f"got shape {np.shape(targets)}")
    O = y.shape[-1]
    start = np.zeros((B, O), np.float32) if start is None else np.asarray(start, np.float32)
    if start.shape != (B, O):
        raise ValueError(f"start must be [B, O] = {(B, O)}, got {start.shape}")
    prev = np.concatenate([start[None], y[:-1]], axis=0)
    f = np.broadcast_to(np.asarray(flags, np.float32), (T, B))[..., None]
    return np.concatenate([xs, prev, f], axis=-1)


def schedule(num_steps: int, batch_size: int, p_teacher: float, rng) -> np.ndarray:
    """Scheduled-sampling flags ``[T, B]``: step 0 is teacher-forced, later steps with prob. ``p``.

    ``p_teacher=1`` is teacher forcing, ``0`` free running from the given start.

    Args:
      num_steps, batch_size: ``T``, ``B``.
      p_teacher: probability of feeding the target, in ``[0, 1]``.
      rng: a ``np.random.Generator`` or an int seed.
    """
    T, B = validation.check_int("num_steps", num_steps), validation.check_int("batch_size", batch_size)
    if not 0.0 <= float(p_teacher) <= 1.0:
        raise ValueError(f"p_teacher must lie in [0, 1], got {p_teacher!r}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    flags = (rng.random((T, B)) < p_teacher).astype(np.float32)
    flags[0] = 1.0
    return flags
