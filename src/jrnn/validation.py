"""The one set of eager checks at jrnn's public boundary.

Every public entry point (``unroll``, a cell's ``project``, an estimator's
``value_and_grad``, ``sequence_loss``, ``predict``, ``train_step``,
``evaluate``, ``fit``) validates what it is given ONCE, here, and then calls
internal functions that do not check again. A wrong carry, params from another
cell or size, a batch of the wrong layout or dtype, or a token id outside the
vocabulary is reported as a ``ValueError`` / ``TypeError`` naming the
argument, the expected and the actual value, before anything is compiled.

Shapes and dtypes are checked on anything, tracers included (they are known
while tracing). Values (token ids, ``lengths``) are checked only when they are
concrete: NumPy arrays, or ``jax.Array`` values (one small jitted reduction and
a one-bool fetch; the array itself is fetched only on failure, to name the
first bad position). Values traced inside a user's ``jit`` (arguments of the
jitted function) cannot be checked eagerly: validate them before the ``jit``
(e.g. with :func:`check_batch`), as ``train_step`` does. Expected shapes come
from the cell itself via ``jax.eval_shape`` (no FLOPs, no memory), cached per
cell.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_int", "check_ids", "check_lengths", "check_steps", "check_inputs", "check_tree",
           "check_carry", "check_params", "check_batch", "check_model_params", "check_state"]


# ----------------------------------------------------------------------------
# scalars


def check_int(name: str, value, minimum: int = 1, *, allow_none: bool = False):
    """``value`` as an ``int >= minimum`` (``None`` passes if ``allow_none``).

    Raises:
      ValueError: naming ``name`` and the value (bools and floats are refused).
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}"
                         f"{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------
# values: token ids, lengths

# set while internal code runs on values already checked at the public boundary
_TRUSTED = contextvars.ContextVar("jrnn_trusted", default=False)


@contextlib.contextmanager
def _trusted():
    """Inside, :func:`check_ids` returns at once (the caller has checked the ids)."""
    token = _TRUSTED.set(True)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


@jax.jit
def _out_of_range(ids, upper):
    return jnp.any((ids < 0) | (ids >= upper))


def _position(index, axes) -> str:
    parts = [f"{axes[k]}={int(i)}" if k < len(axes) else str(int(i)) for k, i in enumerate(index)]
    return "(" + ", ".join(parts) + ")"


def check_ids(name: str, ids, upper: int, what: str = "token id", where: str = "the vocabulary",
              axes: tuple = ("t", "b"), hint: str = "") -> None:
    """Raise ``ValueError`` if concrete integer ``ids`` fall outside ``[0, upper)``.

    JAX clamps out-of-range gather indices silently (a negative id wraps), so
    ids are checked before they reach a gather. Works on NumPy arrays and
    concrete ``jax.Array`` values alike; tracers are skipped (see the module
    docstring).

    Args:
      name: the array's name in the message, e.g. ``"batch.inputs"``.
      ids: integer array, e.g. ``[T, B]``.
      upper: the exclusive upper bound (vocabulary size, number of classes).
      what, where: how the message names one id and the range.
      axes: names of the leading axes in the reported position.
      hint: appended to the message after ``"; "``.

    Raises:
      ValueError: e.g. ``batch.inputs contains token id -1 outside the
        vocabulary [0, 28) at position (t=3, b=0)``.
    """
    if _TRUSTED.get() or isinstance(ids, jax.core.Tracer):
        return
    if isinstance(ids, jax.Array):
        if ids.size == 0:
            return
        with jax.ensure_compile_time_eval():  # evaluates even while a caller is being traced
            bad = _out_of_range(ids, upper)
        if isinstance(bad, jax.core.Tracer) or not bool(bad):
            return
    a = np.asarray(ids)
    if a.size == 0:
        return
    outside = (a < 0) | (a >= upper)
    if not outside.any():
        return
    first = tuple(np.argwhere(outside)[0])
    raise ValueError(f"{name} contains {what} {int(a[first])} outside {where} [0, {upper}) "
                     f"at position {_position(first, axes)}" + (f"; {hint}" if hint else ""))


def check_lengths(lengths, T: int, batch_shape: tuple):
    """``lengths`` ``[B...]`` as an int array, checked to lie in ``[1, T]`` when concrete.

    The value check runs on concrete values only (a NumPy array, or a
    ``jax.Array`` even when it is captured as a constant inside ``jit``,
    ``jax.checkpoint`` or ``lax.scan``); a traced argument is checked for
    dtype and shape only.
    """
    if not hasattr(lengths, "dtype"):
        lengths = np.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths must be integers, got dtype {lengths.dtype}")
    if tuple(np.shape(lengths)) != tuple(batch_shape):
        raise ValueError(f"lengths must have the batch shape {tuple(batch_shape)}, got "
                         f"{tuple(np.shape(lengths))}")
    if not isinstance(lengths, jax.core.Tracer) and np.size(lengths):
        a = np.asarray(lengths)
        lo, hi = int(a.min()), int(a.max())
        if lo < 1 or hi > T:
            raise ValueError(f"lengths must lie in [1, T={T}], got min {lo} and max {hi}")
    return jnp.asarray(lengths)


def check_steps(name: str, steps, T: int, batch_shape: tuple):
    """A per-step flag ``[T, B...]`` (``step_mask``, ``resets``) as a bool array.

    Bool only: a float mask would be ambiguous between weights (that is
    ``Batch.mask``, the loss weights) and flags.
    """
    if not hasattr(steps, "dtype"):
        steps = np.asarray(steps)
    if steps.dtype != jnp.bool_:
        what = "the step is real" if name.endswith("mask") else "reset the carry entering the step"
        raise TypeError(f"{name} must be a bool array [T, B...] (True: {what}), got dtype "
                        f"{steps.dtype}")
    want = (int(T),) + tuple(batch_shape)
    if tuple(np.shape(steps)) != want:
        raise ValueError(f"{name} must have shape [T, B...] = {want}, got {tuple(np.shape(steps))}")
    return jnp.asarray(steps)


# ----------------------------------------------------------------------------
# pytrees against an expected abstract pytree


def _dtype(x):
    return jax.dtypes.canonicalize_dtype(jnp.result_type(x) if not hasattr(x, "dtype") else x.dtype)


def _describe(treedef) -> str:
    s = str(treedef)
    return s if len(s) <= 200 else s[:197] + "..."


def check_tree(name: str, actual, expected, hint: str = "") -> None:
    """Check that ``actual`` has the structure, shapes and dtypes of ``expected``.

    Args:
      name: the argument's name, used as the root of the path in messages
        (``carry.h``, ``params['W_x']``).
      actual: the pytree given.
      expected: a pytree of arrays or ``jax.ShapeDtypeStruct`` (``eval_shape``).
      hint: appended to the message (what the expectation is derived from).

    Raises:
      TypeError: the tree structures differ (e.g. a tuple where an
        ``LSTMState`` is expected).
      ValueError: a leaf has another shape or dtype.
    """
    sep = f" ({hint})" if hint else ""
    a_leaves, a_def = jax.tree_util.tree_flatten_with_path(actual)
    e_leaves, e_def = jax.tree_util.tree_flatten_with_path(expected)
    if a_def != e_def:
        raise TypeError(f"{name} has the wrong structure: expected {_describe(e_def)}, "
                        f"got {_describe(a_def)}{sep}")
    for (path, a), (_, e) in zip(a_leaves, e_leaves):
        where = name + jax.tree_util.keystr(path)
        if not hasattr(a, "shape") and not isinstance(a, (int, float, complex, np.generic)):
            raise TypeError(f"{where} must be an array, got {type(a).__name__}{sep}")
        if tuple(np.shape(a)) != tuple(e.shape):
            raise ValueError(f"{where} has shape {tuple(np.shape(a))}, expected "
                             f"{tuple(e.shape)}{sep}")
        if _dtype(a) != _dtype(e):
            raise ValueError(f"{where} has dtype {_dtype(a)}, expected {_dtype(e)}{sep}")


# ----------------------------------------------------------------------------
# cells: params, carries, inputs


_KEY = None


def _key():
    global _KEY
    if _KEY is None:
        _KEY = jax.random.key(0)
    return _KEY


@functools.lru_cache(maxsize=256)
def _carry_spec(cell, batch_shape: tuple):
    return jax.eval_shape(lambda: cell.initial_carry(batch_shape))


@functools.lru_cache(maxsize=256)
def _param_spec(cell, input_size: int):
    return jax.eval_shape(lambda k: cell.init(k, input_size), _key())


def check_carry(cell, carry, batch_shape, name: str = "carry") -> None:
    """Check a carry against ``cell.initial_carry(batch_shape)`` (structure, shapes, dtypes).

    A carry of another batch size, hidden size, dtype or cell type gives a
    ``ValueError``/``TypeError`` naming ``carry`` and the leaf, instead of a
    scan type error from XLA.
    """
    batch_shape = tuple(int(b) for b in batch_shape)
    expected = _carry_spec(cell, batch_shape)
    check_tree(name, carry, expected,
               f"cell {cell.name} with hidden size {cell.hidden_size} and batch shape {batch_shape}")


def check_params(cell, params, input_size: int | None = None, name: str = "params") -> None:
    """Check params against ``cell.init(key, input_size)`` without running it.

    With ``input_size=None`` (``unroll``, where only the params know the input
    width or vocabulary size), dimensions that depend on the input size are
    not compared, all others are: params from a cell of another type or
    hidden size are reported with the first mismatching leaf.
    """
    hint = f"cell {cell.name} with hidden size {cell.hidden_size}"
    if input_size is not None:
        check_tree(name, params, _param_spec(cell, int(input_size)),
                   f"{hint} and input size {input_size}")
        return
    e2, e3 = _param_spec(cell, 2), _param_spec(cell, 3)
    a_leaves, a_def = jax.tree_util.tree_flatten_with_path(params)
    e_def = jax.tree.structure(e2)
    if a_def != e_def:
        raise TypeError(f"{name} has the wrong structure for {hint}: expected "
                        f"{_describe(e_def)}, got {_describe(a_def)}")
    for (path, a), x2, x3 in zip(a_leaves, jax.tree.leaves(e2), jax.tree.leaves(e3)):
        where = name + jax.tree_util.keystr(path)
        shape = tuple(np.shape(a))
        ok = len(shape) == len(x2.shape) and all(
            d2 != d3 or d == d2 for d, d2, d3 in zip(shape, x2.shape, x3.shape))
        if not ok:
            want = tuple("D" if d2 != d3 else d2 for d2, d3 in zip(x2.shape, x3.shape))
            raise ValueError(f"{where} has shape {shape}, expected {want} (D: input size) "
                             f"for {hint}: params from another cell or size?")
        if _dtype(a) != _dtype(x2):
            raise ValueError(f"{where} has dtype {_dtype(a)}, expected {_dtype(x2)} for {hint}")


def _float_dtypes(tree) -> list:
    return sorted({str(_dtype(a)) for a in jax.tree.leaves(tree)
                   if jnp.issubdtype(_dtype(a), jnp.floating)})


def _check_float_dtype(name: str, dt, params) -> None:
    """Float inputs must not promote the params' dtype (that changes the carry's dtype)."""
    for pd in _float_dtypes(params):
        if jnp.promote_types(dt, pd) != jnp.dtype(pd):
            raise TypeError(f"{name} has dtype {dt} but the cell's params are {pd}: the "
                            f"product would be {jnp.promote_types(dt, pd)} and change the "
                            f"carry's dtype; cast the inputs ({name}.astype(jnp.{pd}))")


def check_inputs(cell, params, xs, name: str = "xs") -> None:
    """Check ``xs`` for :func:`jrnn.unroll`: float ``[T, B..., D]`` or integer ids ``[T, B...]``.

    Float inputs need at least two dims (``[T, D]`` for one sequence) and a
    dtype that does not promote the params' (float32 inputs into a bfloat16
    cell would turn the carry into float32). Token ids are range-checked by
    the cell's ``project`` (only it knows the vocabulary size).
    """
    dt, shape = _dtype(xs), tuple(np.shape(xs))
    if jnp.issubdtype(dt, jnp.integer):
        if len(shape) < 1:
            raise ValueError(f"{name} must be token ids [T, B...], got a scalar")
        return
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"{name} must be float inputs [T, B..., D] or integer token ids "
                        f"[T, B...], got dtype {dt}")
    if len(shape) < 2:
        raise ValueError(f"{name} is a {len(shape)}-D float array of shape {shape}, but float "
                         f"inputs are [T, B..., D] ([T, D] for one sequence; a width-1 "
                         f"series is xs[..., None]); token ids must be an integer array")
    layers = getattr(cell, "layers", None)
    _check_float_dtype(name, dt, params[0] if layers else params)


# ----------------------------------------------------------------------------
# models, batches and train states


@functools.lru_cache(maxsize=64)
def _model_spec(model):
    params = jax.eval_shape(model.init, _key())
    dt = (_float_dtypes(params["cell"]) or ["float32"])[0]
    out = jax.eval_shape(model.head, params["head"],
                         jax.ShapeDtypeStruct((1, model.cell.hidden_size), jnp.dtype(dt)))
    return params, int(out.shape[-1])


def check_batch(model, batch, batch_size: int | None = None) -> None:
    """Validate a time-major :class:`~jrnn.data.batches.Batch` against ``model``.

    Checks layouts (``inputs`` ``[T, B]`` ids or ``[T, B, D]`` floats,
    ``targets`` ``[T, B]`` integer labels or ``[T, B, O]`` floats as the model
    declares, ``mask`` ``[T, B]``, ``resets`` ``[T, B]`` bool), dtypes (float inputs against the cell's
    params), ``T >= 1``, ``B == batch_size`` if given, and, for concrete
    values (NumPy or ``jax.Array``; not tracers), that token ids and integer
    targets lie in the vocabulary / label range (:func:`check_ids`).
    """
    params, n_out = _model_spec(model)
    x, y, mask = batch.inputs, batch.targets, batch.mask
    xs = tuple(np.shape(x))
    _check_batch_inputs(model, params, x)
    T, B = xs[:2]
    if T < 1 or B < 1:
        raise ValueError(f"batch.inputs must have at least one time step and one sequence, "
                         f"got shape {xs}")
    if batch_size is not None and B != batch_size:
        raise ValueError(f"batch has {B} sequences (inputs shape {xs}, time-major [T, B, ...]) "
                         f"but batch_size={batch_size}")
    _check_batch_targets(model, y, T, B, n_out)
    if mask is not None and tuple(np.shape(mask)) != (T, B):
        raise ValueError(f"batch.mask must have shape [T, B] = {(T, B)}, got "
                         f"{tuple(np.shape(mask))}")
    resets = getattr(batch, "resets", None)
    if resets is not None:
        check_steps("batch.resets", resets, T, (B,))
    lengths = getattr(batch, "lengths", None)
    if lengths is not None:
        check_lengths(lengths, T, (B,))


def _check_batch_inputs(model, params, x) -> None:
    xs, xd = tuple(np.shape(x)), _dtype(x)
    if model.tokens:
        if not jnp.issubdtype(xd, jnp.integer):
            raise TypeError(f"batch.inputs must be integer token ids for this model, got dtype {xd}")
        if len(xs) != 2:
            raise ValueError(f"batch.inputs must be token ids of shape [T, B], got shape {xs}")
        check_ids("batch.inputs", x, model.input_size)
        return
    D = model.input_size
    if jnp.issubdtype(xd, jnp.integer):
        raise TypeError(f"batch.inputs are integers (dtype {xd}), but this model takes float "
                        f"inputs [T, B, D={D}]; token ids need a token model (language_model, "
                        f"or classifier(..., tokens=True))")
    if not jnp.issubdtype(xd, jnp.floating):
        raise TypeError(f"batch.inputs must be floats [T, B, D={D}] for this model, got dtype {xd}")
    if len(xs) != 3 or xs[2] != D:
        raise ValueError(f"batch.inputs must have shape [T, B, D={D}], got {xs}")
    _check_float_dtype("batch.inputs", xd, params["cell"])


def _check_batch_targets(model, y, T, B, n_out) -> None:
    ys, yd = tuple(np.shape(y)), _dtype(y)
    if ys[:2] != (T, B):
        raise ValueError(f"batch.targets must start with the inputs' [T, B] = {(T, B)}, got "
                         f"shape {ys}")
    labels = getattr(model, "labels", None)
    if labels is True and (not jnp.issubdtype(yd, jnp.integer) or ys != (T, B)):
        raise TypeError(f"batch.targets must be integer labels [T, B] = {(T, B)} for this "
                        f"model (ids in [0, {n_out})), got dtype {yd} shape {ys}")
    if labels is False and (not jnp.issubdtype(yd, jnp.floating) or ys != (T, B, n_out)):
        raise TypeError(f"batch.targets must be floats [T, B, O] = {(T, B, n_out)} for this "
                        f"model, got dtype {yd} shape {ys}")
    if jnp.issubdtype(yd, jnp.integer):
        if model.tokens and n_out == model.input_size:  # a language model
            check_ids("batch.targets", y, n_out)
        else:
            check_ids("batch.targets", y, n_out, "class id", "the model's outputs")


def check_model_params(model, params, name: str = "params") -> None:
    """``params`` against ``model.init`` (``{"cell": ..., "head": ...}``): structure, shapes, dtypes."""
    check_tree(name, params, _model_spec(model)[0],
               f"model on cell {model.cell.name} with hidden size {model.cell.hidden_size} "
               f"and input size {model.input_size}")


def check_state(model, optimizer, estimator, state, batch_size: int) -> None:
    """A user-given ``TrainState`` against what ``init_state`` would build."""
    params_spec, _ = _model_spec(model)
    check_model_params(model, state.params, "state.params")
    check_tree("state.opt_state", state.opt_state, jax.eval_shape(optimizer.init, params_spec),
               "optimizer.init(params)")
    carry = jax.eval_shape(lambda p: estimator.init_carry(model, p, (batch_size,)), params_spec)
    check_tree("state.carry", state.carry, carry,
               f"estimator {estimator.name} with batch_size {batch_size}")
    if np.shape(state.step) != () or not jnp.issubdtype(_dtype(state.step), jnp.integer):
        raise ValueError(f"state.step must be an integer scalar, got {state.step!r}")
