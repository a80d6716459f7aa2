"""The one estimator interface, its carries, and the registry of estimator names."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

__all__ = ["GradientEstimator", "OnlineCarry", "ESTIMATORS", "register", "parse"]


class GradientEstimator(NamedTuple):
    """One interface for every gradient estimator (see module docstring)."""

    init_carry: Callable[..., Any]
    value_and_grad: Callable[..., tuple]
    name: str


class OnlineCarry(NamedTuple):
    """Carry of an online estimator.

    Attributes:
      state: the cell's carry ``[B, ...]``.
      influence: the estimator's running influence: RTRL ``[B, N, P]``; UORO
        ``(s_tilde [B, N], theta_tilde [B, P])``; SnAp-1 a tree like the cell
        params, ``[B, K, *shape]``; KF-RTRL ``(u [B, m], A [B, H, H])``; OK
        ``(U [B, m, r], A [B, r, H, H])``; SnAp-2 ``{"M": [B, H, S, m]}``
        (``N`` flattened carry size, ``P`` number of cell params, ``m`` the
        width of ``[x; h; 1]``, ``r`` OK's rank, ``S`` SnAp-2's largest
        two-step fan-out).
    """

    state: Any
    influence: Any


def _check_key(name, key):
    if key is None:
        raise ValueError(f"{name} is stochastic and needs a PRNG key, got key=None")


def _cell_carry(model, params, batch_shape):
    return model.cell.initial_carry(tuple(batch_shape))


# ----------------------------------------------------------------------------
# the registry: name -> constructor, and how a CLI spec's parameter is read


class _Spec(NamedTuple):
    make: Callable[..., GradientEstimator]
    arg: Callable | None  # int / float / a parser; None: takes no parameter
    required: bool
    usage: str  # e.g. "truncated:K"


ESTIMATORS: dict[str, _Spec] = {}


def register(name: str, make: Callable[..., GradientEstimator], arg: Callable | None = None,
             required: bool = False, usage: str | None = None) -> None:
    """Make ``parse`` (and so ``--grad``) know an estimator.

    Args:
      name: the spec's name, before any ``:``.
      make: the constructor, called with no argument or with the parsed one.
      arg: how to read the parameter after ``:`` (``int``, ``float``, a
        function), or ``None`` if the estimator takes none.
      required: whether the parameter must be given.
      usage: how the spec is written, for messages (default ``name[:X]``).
    """
    ESTIMATORS[name] = _Spec(make, arg, required, usage or (name if arg is None else f"{name}[:X]"))


def parse(spec: str) -> GradientEstimator:
    """Build an estimator from a CLI spec, e.g. ``full``, ``truncated:35``, ``randomized:0.5``,
    ``checkpointed``, ``checkpointed:16``, ``rtrl``, ``uoro``, ``snap1`` (see :data:`ESTIMATORS`)."""
    name, _, arg = str(spec).partition(":")
    if name not in ESTIMATORS:
        raise ValueError(f"unknown gradient estimator {spec!r}; choose from "
                         + ", ".join(s.usage for s in ESTIMATORS.values()))
    s = ESTIMATORS[name]
    if s.arg is None and arg:
        raise ValueError(f"{name} takes no parameter, got {spec!r}")
    if s.required and not arg:
        raise ValueError(f"{name} needs a parameter, e.g. '{s.usage}'")
    if not arg:
        return s.make()
    try:
        value = s.arg(arg)
    except ValueError:
        raise ValueError(f"bad parameter {arg!r} in gradient estimator spec {spec!r}") from None
    return s.make(value)
