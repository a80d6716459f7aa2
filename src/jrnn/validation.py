"""Eager validation of what the public entry points are given (private).

Everything here runs outside ``jit`` on shapes and dtypes only (values only
where they are concrete host arrays), so a wrong carry, params from another
cell or size, or a batch of the wrong layout is reported as a ``ValueError`` /
``TypeError`` naming the argument, the expected and the actual value, before
anything is traced or compiled. Expected shapes come from the cell itself via
``jax.eval_shape`` (no FLOPs, no memory), cached per cell.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["_check_carry", "_check_params", "check_tree", "check_batch", "check_state",
           "check_model_params", "check_int"]


# ----------------------------------------------------------------------------
# scalars


def check_int(name: str, value, minimum: int = 1, *, allow_none: bool = False):
    """``value`` as an ``int >= minimum`` (``None`` passes if ``allow_none``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}"
                         f"{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


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
# cells


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


def _check_carry(cell, carry, batch_shape) -> None:
    """Check a carry against ``cell.initial_carry(batch_shape)`` (structure, shapes, dtypes).

    Call it wherever a user-given carry enters a scan (``unroll``), with the
    batch shape of the inputs: a carry of another batch size, hidden size,
    dtype or cell type then gives a ``ValueError``/``TypeError`` naming
    ``carry`` and the leaf, instead of a scan type error from XLA.
    """
    batch_shape = tuple(int(b) for b in batch_shape)
    expected = _carry_spec(cell, batch_shape)
    check_tree("carry", carry, expected,
               f"cell {cell.name} with hidden size {cell.hidden_size} and batch shape {batch_shape}")


def _check_params(cell, params, input_size: int | None = None, name: str = "params") -> None:
    """Check params against ``cell.init(key, input_size)`` without running it.

    With ``input_size=None`` (token inputs, where only the params know the
    vocabulary size), dimensions that depend on the input size are not
    compared, all others are: params from a cell of another type or hidden
    size are reported with the first mismatching leaf.
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


# ----------------------------------------------------------------------------
# models, batches and train states


@functools.lru_cache(maxsize=64)
def _model_spec(model):
    params = jax.eval_shape(model.init, _key())
    out = jax.eval_shape(model.head, params["head"],
                         jax.ShapeDtypeStruct((1, model.cell.hidden_size), jnp.float32))
    return params, int(out.shape[-1])


def _is_host(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic, list, tuple, int, float))


def _check_ids(name, a, hi, what="token id", where="the vocabulary"):
    if not _is_host(a):
        return  # device arrays: values are not fetched (that would sync every step)
    a = np.asarray(a)
    if a.size and (a.min() < 0 or a.max() >= hi):
        bad = a.min() if a.min() < 0 else a.max()
        raise ValueError(f"{name} contains {what} {int(bad)} outside {where} [0, {hi})")


def check_batch(model, batch, batch_size: int | None = None) -> None:
    """Validate a time-major :class:`~jrnn.models.Batch` against ``model``.

    Checks layouts (``inputs`` ``[T, B]`` ids or ``[T, B, D]`` floats,
    ``targets`` ``[T, B, ...]``, ``mask`` ``[T, B]``), dtypes, ``T >= 1``,
    ``B == batch_size`` if given, and, for host (NumPy) arrays, that token ids
    and integer targets lie in the vocabulary / label range.
    """
    _, n_out = _model_spec(model)
    x, y, mask = batch.inputs, batch.targets, batch.mask
    xs, ys = tuple(np.shape(x)), tuple(np.shape(y))
    xd = _dtype(x)
    if model.tokens:
        if not jnp.issubdtype(xd, jnp.integer):
            raise TypeError(f"inputs must be integer token ids for this model, got dtype {xd}")
        if len(xs) != 2:
            raise ValueError(f"inputs must be token ids of shape [T, B], got shape {xs}")
        _check_ids("inputs", x, model.input_size)
    else:
        if not jnp.issubdtype(xd, jnp.floating):
            raise TypeError(f"inputs must be floats [T, B, D] for this model, got dtype {xd}")
        if len(xs) != 3 or xs[2] != model.input_size:
            raise ValueError(f"inputs must have shape [T, B, D={model.input_size}], got {xs}")
    T, B = xs[:2]
    if T < 1 or B < 1:
        raise ValueError(f"inputs must have at least one time step and one sequence, got shape {xs}")
    if batch_size is not None and B != batch_size:
        raise ValueError(f"batch has {B} sequences (inputs shape {xs}, time-major [T, B, ...]) "
                         f"but batch_size={batch_size}")
    if ys[:2] != (T, B):
        raise ValueError(f"targets must start with the inputs' [T, B] = {(T, B)}, got shape {ys}")
    if jnp.issubdtype(_dtype(y), jnp.integer):
        if model.tokens and n_out == model.input_size:  # a language model
            _check_ids("targets", y, n_out)
        else:
            _check_ids("targets", y, n_out, "class id", "the model's outputs")
    if mask is not None and tuple(np.shape(mask)) != (T, B):
        raise ValueError(f"mask must have shape [T, B] = {(T, B)}, got {tuple(np.shape(mask))}")


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
