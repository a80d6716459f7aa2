"""Gradient estimators for recurrent nets ("BPTT variants") behind one interface.

Every estimator is a :class:`GradientEstimator`, a NamedTuple of two pure
functions (in the spirit of ``optax.GradientTransformation``) and a name:

- ``init_carry(model, params, batch_shape) -> carry``: the state an estimator
  carries across steps and minibatches: the cell's carry for the BPTT family,
  an :class:`OnlineCarry` (cell carry + influence) for RTRL, UORO and SnAp.
  Bad configurations (e.g. an RTRL influence matrix over ``max_bytes``, SnAp-1
  on a cell it does not support) raise ``ValueError`` here, eagerly.
- ``value_and_grad(model, params, carry, batch, key) -> (loss, grads, carry, aux)``:
  the mean loss on a time-major :class:`~jrnn.models.Batch`, an estimate of
  its gradient w.r.t. ``params`` (the head always gets its exact gradient),
  the carry after the batch (no gradient flows into it) and a dict of scalars.
  ``key`` is only used by the stochastic estimators (``randomized``, ``uoro``).

Hyper-parameters are closed over by the constructors and checked eagerly:
``full()``, ``truncated(K)``, ``tbptt(k1, k2)``, ``randomized(p)``,
``checkpointed(S)``, ``rtrl()``, ``uoro()``, ``snap1()``, ``snap2(mask)``,
``kf_rtrl()`` and ``ok_rtrl(rank)`` (:mod:`.kf`), ``rflo()`` and ``eprop()`` (:mod:`.local`, leaky
vanilla RNNs), ``diag_rtrl()`` (:mod:`.diagonal`, element-wise recurrences such
as :func:`jrnn.lru.lru`), ``es()`` and ``pes()`` (:mod:`.perturb`);
:func:`parse` reads ``"truncated:35"``.

Every ``value_and_grad`` validates its batch (layout, dtypes, token ids and
labels in range: :func:`jrnn.validation.check_batch`), params and carry once,
at its entry; values are checked when concrete (an eager call, or
``train_step``'s eager check before its ``jit``), not when traced.

The BPTT family differentiates the sequence loss through the ``lax.scan``,
with the gradient through the carry cut (truncated) or rescaled (randomized)
by ``unroll``'s ``carry_grad_scale``, which keeps the fast path;
checkpointed rematerialises whole segments (recurrence, head and loss) in the
backward pass.

The online estimators treat the batch as a stream: they walk it one step at a
time, keeping ``M_t = d s_t / d theta`` (the influence of the cell params on the
flattened carry ``s_t``) exactly (RTRL) or approximately (UORO, SnAp-1), and
accumulate ``g += dl_t/d theta|_immediate + dl_t/d s_{t-1} M_{t-1}``. Their
``mask`` only weights the loss (as for BPTT); they do not take ``lengths``.

Resets (``Batch.resets`` ``[T, B]`` bool, episodes packed into one stream, e.g.
by :func:`jrnn.data.batches.pack`): every estimator but PES honours them --
the BPTT family through ``unroll``'s ``resets`` (the gradient is cut at each
episode start, on the fast path), RTRL/UORO/SnAp-1 by restarting the state and
zeroing the influence, ES by unrolling every particle with them. On a packed
stream each estimator computes what it computes on the episodes run alone
(``tests/test_resets.py``). PES refuses them with a ``ValueError``.

Across minibatches (``train_step(carry_over=True)``) the two families differ:

- BPTT estimators cut the gradient at every batch boundary: the incoming carry
  is a constant (d2l's "detach"), so their gradient is that of the batch's
  loss with the incoming state held fixed.
- Online estimators carry the influence along with the state -- that is what
  makes them online. On a batch that continues an earlier one, RTRL's gradient
  is the gradient of *this* batch's loss through the whole stream so far, i.e.
  full BPTT over the concatenated batches with only the last batch's loss
  counted (exact when the params did not change in between; in training, the
  earlier part of the influence was computed with the earlier params, as in
  Williams & Zipser's online RTRL). On a fresh carry from ``init_carry``
  (zero influence) RTRL's gradient equals :func:`full`'s. To cut the
  influence at batch boundaries, start each batch from ``init_carry``
  (``train_step(carry_over=False)``) or zero ``carry.influence``.
"""

from .base import ESTIMATORS, GradientEstimator, OnlineCarry, parse, register
from .bptt import checkpointed, full, randomized, tbptt, truncated
from .online import rtrl, snap1, snap2, uoro

__all__ = [
    "GradientEstimator", "OnlineCarry", "full", "truncated", "tbptt", "randomized", "checkpointed",
    "rtrl", "uoro", "snap1", "snap2", "parse", "register", "ESTIMATORS",
]
from .perturb import PESCarry, es, pes; __all__ += ["es", "pes", "PESCarry"]  # noqa: E402,E702
from .kf import kf_rtrl, ok_rtrl; __all__ += ["kf_rtrl", "ok_rtrl"]  # noqa: E402,E702
from .local import LocalCarry, eprop, rflo; __all__ += ["rflo", "eprop", "LocalCarry"]  # noqa: E402,E702
from .diagonal import diag_rtrl; __all__ += ["diag_rtrl"]  # noqa: E402,E702
