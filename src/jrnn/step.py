"""The one train step (jit-compiled, Optax), the optimizer registry, and evaluation.

``train_step(model, optimizer, estimator)`` is the single way jrnn trains: the
loop (:func:`jrnn.fit`), the CLI, the experiments and the benchmarks all call
it. The optimizer (clipping included) and the estimator are closed over, so
changing neither recompiles; use ``optax.inject_hyperparams`` for schedules.

Non-finite guard: the step never applies an update whose loss or gradient is
NaN/Inf; it returns ``finite=False`` and the state unchanged, and the loop
then stops (default) or skips, as asked (:class:`jrnn.metrics.MetricsWindow`).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from . import parallel, validation
from .data.batches import Batch
from .grads import GradientEstimator, full
from .metrics import perplexity
from .models import Model, sequence_loss

__all__ = ["TrainState", "OPTIMIZERS", "make_optimizer", "set_hyperparam", "init_state",
           "init_states", "train_step", "evaluate", "held_out"]


class TrainState(NamedTuple):
    """Everything a step needs.

    Attributes:
      params: ``{"cell": ..., "head": ...}``.
      opt_state: the Optax state.
      carry: the estimator's carry ``[B, ...]`` (hidden state, influence).
      step: ``int32`` scalar, updates applied so far.
    """

    params: Any
    opt_state: Any
    carry: Any
    step: Any


# one registry of optimizer names -> ``lr -> optax.GradientTransformation``
OPTIMIZERS: dict[str, Callable[[float], optax.GradientTransformation]] = {
    "sgd": optax.sgd, "momentum": lambda learning_rate: optax.sgd(learning_rate, momentum=0.9),
    "adam": optax.adam, "adamw": optax.adamw, "rmsprop": optax.rmsprop,
}


def make_optimizer(name: str = "sgd", lr: float = 1.0, clip: float | None = 1.0, *,
                   inject: bool = False):
    """Optax optimizer with optional global-norm clipping (d2l's ``grad_clipping``).

    Args:
      name: a key of :data:`OPTIMIZERS` (``"sgd"``, ``"momentum"``, ``"adam"``,
        ``"adamw"``, ``"rmsprop"``).
      lr: learning rate (> 0).
      clip: max global gradient norm (> 0), or ``None`` for no clipping.
      inject: keep the learning rate in the optimizer state as an array
        (``optax.inject_hyperparams``), so :func:`set_hyperparam` changes it
        without recompiling the step, and a vmapped sweep gives each run its own.

    References: Pascanu, Mikolov & Bengio 2013 (clipping).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if clip is not None and not (isinstance(clip, (int, float)) and clip > 0):
        raise ValueError(f"clip must be > 0 or None, got {clip!r}")
    make = optax.inject_hyperparams(OPTIMIZERS[name]) if inject else OPTIMIZERS[name]
    opt = make(learning_rate=lr)
    return opt if clip is None else optax.chain(optax.clip_by_global_norm(clip), opt)


def _injected(x) -> bool:
    return hasattr(x, "hyperparams") and hasattr(x, "inner_state")


def set_hyperparam(opt_state, name: str, value):
    """``opt_state`` with the injected hyper-parameter ``name`` set to ``value``.

    For optimizers built with ``make_optimizer(..., inject=True)``. ``value``
    is a scalar, or ``[S]`` for the state of ``S`` vmapped runs (one per run).

    Raises:
      ValueError: the state holds no injected ``name``.
    """
    found = []

    def put(x):
        if _injected(x) and name in x.hyperparams:
            found.append(x)
            old = x.hyperparams[name]
            new = jnp.broadcast_to(jnp.asarray(value, old.dtype), jnp.shape(old))
            return x._replace(hyperparams={**x.hyperparams, name: new})
        return x

    out = jax.tree.map(put, opt_state, is_leaf=_injected)
    if not found:
        raise ValueError(f"the optimizer state has no injected hyper-parameter {name!r}; build "
                         f"the optimizer with make_optimizer(..., inject=True)")
    return out


def init_state(model: Model, optimizer, estimator: GradientEstimator, key,
               batch_size: int) -> TrainState:
    """Fresh params, optimizer state and carry for a batch of ``batch_size``."""
    batch_size = validation.check_int("batch_size", batch_size)
    params = model.init(key)
    state = TrainState(params, optimizer.init(params),
                       estimator.init_carry(model, params, (int(batch_size),)),
                       jnp.zeros((), jnp.int32))
    # one buffer per leaf: the train step donates the state, and a buffer shared
    # by two leaves (e.g. equal zero arrays) cannot be donated twice
    return jax.tree.map(jnp.copy, state)


def train_step(model: Model, optimizer, estimator: GradientEstimator | None = None, *,
               carry_over: bool = True, seeds: int | None = None, donate: bool = True,
               check: bool = True, mesh=None, runs_per_chunk: int | None = None):
    """Build the jit-compiled step ``(state, batch, key) -> (state, metrics)``.

    Args:
      model: the model.
      optimizer: an ``optax.GradientTransformation`` (clipping inside it).
      estimator: a gradient estimator; full BPTT if ``None``.
      carry_over: keep the carry across calls (sequential partitioning; for
        the BPTT family no gradient flows across batches, d2l's "detach", while
        RTRL/UORO/SnAp-1 carry their influence on, so theirs does); ``False``
        starts every batch from a fresh carry (random sampling).
      seeds: if set, ``S``: the state has a leading axis of ``S`` independent
        models (from :func:`init_states`) trained together with ``jax.vmap``;
        they share the batch and get ``S`` keys.
      donate: donate the state's buffers to the step (in-place update).
      check: validate each batch eagerly before the compiled step
        (:func:`jrnn.validation.check_batch`: layout, dtypes, token ids and
        integer targets in range, for NumPy and device arrays alike; JAX
        would silently wrap or clamp a bad id). It costs a few microseconds
        on host arrays and one tiny device reduction plus a sync on device
        arrays (measured in ``benchmarks/README.md``); ``False`` skips it.
      runs_per_chunk: with ``seeds``, ``C``: run the ``S`` models as ``S / C``
        chunks of ``C`` vmapped models, one chunk after another
        (``jax.lax.map(..., batch_size=C)``; the same values). A chunk's
        working set stays in cache where all ``S`` at once would not: on a
        2-core CPU the 64-run GRU-256 step ran 1.4x faster in chunks of 16
        (``benchmarks/sweep_parts.py``). ``None``: all at once. Not with ``mesh``.
      mesh: a :func:`jrnn.parallel.data_mesh`: data parallelism over its
        devices -- the batch (placed with :func:`jrnn.parallel.shard_batch`
        when it comes from the host) and the carry are split along ``B``,
        params and optimizer state replicated (the state placed with
        :func:`jrnn.parallel.put_state`); the same values as one device up to
        the order of float sums.

    Returns:
      ``step(state, batch, key)``; ``batch`` is a time-major :class:`Batch`.
      ``metrics`` holds device scalars ``loss``, ``grad_norm`` (before
      clipping) and ``finite`` (``[S]`` with ``seeds``): fetch them every few
      steps, not every step. ``step.jitted`` is the compiled function without
      the check (``.lower(...)`` for ahead-of-time compilation).
    """
    estimator = estimator or full()
    if model.regularise is not None:
        from .regularise import check_estimator

        check_estimator(model, estimator)

    def one(state: TrainState, batch: Batch, key):
        carry = state.carry
        if not carry_over:
            carry = estimator.init_carry(model, state.params, jnp.shape(batch.inputs)[1:2])
        loss, grads, carry = _value_and_grad(model, estimator, state.params, carry, batch, key)
        gnorm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(gnorm)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new = TrainState(optax.apply_updates(state.params, updates), opt_state, carry,
                         state.step + 1)
        # never apply a non-finite update: keep the last good state bit for bit
        new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
        return new, {"loss": loss, "grad_norm": gnorm, "finite": finite}

    fn = one if seeds is None else jax.vmap(one, in_axes=(0, None, 0))
    if runs_per_chunk is not None:
        C = validation.check_int("runs_per_chunk", runs_per_chunk)
        if seeds is None or mesh is not None:
            raise ValueError("runs_per_chunk splits a sweep (seeds=S) on one device; got "
                             f"seeds={seeds}, mesh={'set' if mesh is not None else None}")
        if C < seeds:
            fn = lambda state, batch, keys: jax.lax.map(  # noqa: E731
                lambda a: one(a[0], batch, a[1]), (state, keys), batch_size=C)
    if mesh is not None:
        fn = _data_parallel(fn, mesh, seeds)
    jitted = jax.jit(fn, donate_argnums=(0,) if donate else ())
    if not check:
        return jitted

    @functools.wraps(fn)
    def step(state, batch, key):
        if not isinstance(batch, Batch):
            raise TypeError(f"batch must be a time-major jrnn.Batch, got {type(batch).__name__}")
        validation.check_batch(model, batch)
        if mesh is not None:
            if not parallel.splits_runs(mesh, seeds):
                parallel.check_batch_size(mesh, int(jnp.shape(batch.inputs)[1]))
            if not isinstance(batch.inputs, jax.Array):
                batch = parallel.shard_batch(batch, mesh, runs=seeds)
        return jitted(state, batch, key)

    step.jitted, step.lower, step._cache_size = jitted, jitted.lower, jitted._cache_size
    return step


def _value_and_grad(model: Model, estimator, params, carry, batch, key):
    """The estimator's loss and gradient; for a regularised model (:mod:`jrnn.regularise`)
    at this step's masks, the gradient mapped back through the params transform."""
    if model.regularise is None:
        loss, grads, carry, _ = estimator.value_and_grad(model, params, carry, batch, key)
        return loss, grads, carry
    from .regularise import MASK_STREAM

    transform, trained = model.regularise(jax.random.fold_in(key, MASK_STREAM), batch)
    used, back = jax.vjp(transform, params)
    loss, grads, carry, _ = estimator.value_and_grad(trained, used, carry, batch, key)
    (grads,) = back(grads)
    return loss, grads, carry


def _data_parallel(fn, mesh, seeds):
    """``fn`` with its batch split along ``B`` over ``mesh`` and its new state laid out
    as :func:`jrnn.parallel.state_shardings` (params replicated, carry split), or a sweep
    split by run (:func:`jrnn.parallel.splits_runs`)."""

    def sharded(state, batch, key):
        batch = jax.lax.with_sharding_constraint(batch, parallel.batch_shardings(batch, mesh, seeds))
        new, metrics = fn(state, batch, key)
        return parallel.constrain_state(new, mesh, jnp.shape(batch.inputs)[1], seeds), metrics

    return sharded


def init_states(model: Model, optimizer, estimator: GradientEstimator, keys, batch_size: int):
    """``S`` independently initialised states stacked on a leading axis (for ``seeds=S``)."""
    return jax.vmap(lambda k: init_state(model, optimizer, estimator, k, batch_size))(keys)


def evaluate(model: Model, params, batches: Iterable, *, carry_over: bool = True) -> float:
    """Mean per-token loss (nats) over time-major :class:`Batch` es; ``exp`` it for perplexity.

    Args:
      model, params: the model and its params ``{"cell": ..., "head": ...}``.
      batches: an iterable of :class:`Batch` (e.g. :func:`jrnn.data.sequential_batches`),
        each validated like the train step's.
      carry_over: carry the state from batch to batch (sequential partitioning).
    """
    validation.check_model_params(model, params)
    loss_fn = _eval_fn(model)
    carry, total, n = None, 0.0, 0
    for b in batches:
        if not isinstance(b, Batch):
            raise TypeError(f"evaluate takes time-major jrnn.Batch es, got {type(b).__name__}")
        validation.check_batch(model, b)
        B = b.inputs.shape[1]
        if carry is None or not carry_over or jax.tree.leaves(carry)[0].shape[0] != B:
            carry = model.cell.initial_carry((B,))
        loss, carry = loss_fn(params, carry, b)
        size = b.inputs.shape[0] * B
        total, n = total + float(loss) * size, n + size
    if n == 0:
        raise ValueError("evaluate got no batches: the validation corpus is too short")
    return total / n


def held_out(model: Model, batches: Callable[[], Iterable], *, carry_over: bool = True):
    """A ``validate`` function for :func:`jrnn.fit`: ``params -> {"val_loss", "val_ppl"}``.

    Args:
      model: the model.
      batches: ``() -> iterable`` of time-major :class:`Batch` (called afresh each time).
      carry_over: see :func:`evaluate`.
    """
    if not callable(batches):
        raise TypeError(f"batches must be a function () -> iterable of Batch, got {type(batches).__name__}")

    def validate(params) -> dict:
        nll = evaluate(model, params, batches(), carry_over=carry_over)
        return {"val_loss": nll, "val_ppl": perplexity(nll)}

    return validate


@functools.lru_cache(maxsize=32)  # one compiled forward per model, bounded
def _eval_fn(model):
    return jax.jit(lambda p, c, b: sequence_loss(model, p, c, b))


