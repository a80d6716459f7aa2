"""Element-wise (diagonal) recurrent cells: the LRU and an independently recurrent tanh cell.

In these cells every state unit has its own recurrence: unit ``i`` of the
carry at ``t`` depends on the carry at ``t - 1`` only through unit ``i``, so
the carry Jacobian ``d s_t / d s_{t-1}`` is (block-)diagonal, and each
parameter that enters the recurrence moves a single unit. That is what makes
exact real-time recurrent learning cost ``O(P)`` memory instead of ``O(N P)``
(:func:`jrnn.grads.diagonal.diag_rtrl`, Zucchet et al. 2023; Irie et al.
2023).

A cell says so with an :class:`ElementwiseSpec`, recorded by
:func:`declare_elementwise` against its ``step`` function (so
``cell._replace(step=other)`` drops the declaration, and an estimator that
needs it refuses the new cell) and read back by :func:`elementwise_spec`. The
constructors here declare their cells; a user's cell may declare itself.

- :func:`lru`: the Linear Recurrent Unit of Orvieto et al. 2023.
- :func:`indrnn`: ``h_t = phi(w * h_{t-1} + x_t W_x + b)``, the independently
  recurrent network of Li et al. 2018 (element-wise and nonlinear).
- :func:`parallel_unroll`: the LRU's recurrence for all steps at once with
  ``jax.lax.associative_scan`` (``O(log T)`` depth), equal to :func:`jrnn.unroll`.

References: Orvieto et al. 2023, "Resurrecting recurrent neural networks for
long sequences" (ICML); Li et al. 2018, "Independently recurrent neural
network (IndRNN)" (CVPR); Zucchet et al. 2023, "Online learning of long-range
dependencies" (NeurIPS).
"""

from __future__ import annotations

import math
import weakref
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import validation
from .cells import Cell

__all__ = ["LRUState", "ElementwiseSpec", "declare_elementwise", "elementwise_spec", "lru",
           "indrnn", "parallel_unroll"]


class LRUState(NamedTuple):
    """The LRU's complex state as two real arrays (so carries stay real pytrees).

    Attributes:
      re: real part ``[..., N]``.
      im: imaginary part ``[..., N]``.
    """

    re: jax.Array
    im: jax.Array


class ElementwiseSpec(NamedTuple):
    """What makes a cell element-wise, as :func:`jrnn.grads.diagonal.diag_rtrl` needs it.

    The flattened carry (``ravel_pytree`` order) is ``blocks`` blocks of
    ``units`` entries; entry ``(k, i)`` of the carry after a step depends on
    the carry before it only through the entries ``(k', i)`` of the same unit
    ``i``, and on a parameter named in ``recurrent`` only if the parameter's
    last-axis index is ``i``. The other parameters do not move the carry at all
    (e.g. a readout).

    Attributes:
      blocks: ``K``, per-unit states (2 for the LRU's real and imaginary parts).
      units: ``N``, the number of units.
      recurrent: keys of the params that move the carry; each has last axis ``N``.
    """

    blocks: int
    units: int
    recurrent: tuple


_SPECS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # cell.step -> spec
_LRU_ACTIVATION: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # lru step -> act name


def declare_elementwise(cell: Cell, blocks: int, units: int, recurrent) -> Cell:
    """Record that ``cell`` is element-wise (see :class:`ElementwiseSpec`); returns ``cell``.

    The declaration is a promise the estimators rely on for exactness; it is
    attached to ``cell.step``, so a cell with another step is undeclared.
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"declare_elementwise needs a Cell, got {type(cell).__name__}")
    spec = ElementwiseSpec(validation.check_int("blocks", blocks),
                           validation.check_int("units", units), tuple(recurrent))
    if not spec.recurrent or not all(isinstance(k, str) for k in spec.recurrent):
        raise ValueError(f"recurrent must name at least one param key, got {recurrent!r}")
    _SPECS[cell.step] = spec
    return cell


def elementwise_spec(cell: Cell) -> ElementwiseSpec | None:
    """The cell's :class:`ElementwiseSpec`, or ``None`` if it has not declared one."""
    try:
        return _SPECS.get(cell.step)
    except TypeError:  # an unhashable or non-weakref-able step: not declared
        return None


_ACTIVATIONS = {None: lambda y: y, "gelu": jax.nn.gelu, "tanh": jnp.tanh, "relu": jax.nn.relu}


def _input_product(params, xs, names):
    """``xs @ params[n]`` for each name (floats ``[..., D]``), or rows ``params[n][ids]``."""
    w = params[names[0]]
    dt = xs.dtype if hasattr(xs, "dtype") else np.asarray(xs).dtype
    if jnp.issubdtype(dt, jnp.integer):
        validation.check_ids("xs", xs, w.shape[0])
        return [jnp.take(params[n], xs, axis=0) for n in names]
    if jnp.ndim(xs) < 1 or xs.shape[-1] != w.shape[0]:
        raise ValueError(f"xs has shape {tuple(jnp.shape(xs))} but the cell was initialised for "
                         f"input_size={w.shape[0]} (float inputs [..., {w.shape[0]}] or ids)")
    return [xs @ params[n] for n in names]


def _ring_init(key, N, r_min, r_max, max_phase, dtype):
    """``nu_log, theta_log`` with ``|lambda|`` uniform on the ring ``[r_min, r_max]``
    (uniform in area) and phase uniform in ``[0, max_phase]`` (Orvieto et al., Lemma 3.2)."""
    k1, k2 = jax.random.split(key)
    u1 = jax.random.uniform(k1, (N,), jnp.float32)
    u2 = jax.random.uniform(k2, (N,), jnp.float32)
    r2 = u1 * (r_max ** 2 - r_min ** 2) + r_min ** 2  # |lambda|^2 = exp(-2 exp(nu_log))
    nu_log = jnp.log(-0.5 * jnp.log(r2))
    theta_log = jnp.log(max_phase * u2)
    return nu_log.astype(dtype), theta_log.astype(dtype)


def lru(hidden_size: int, state_size: int | None = None, r_min: float = 0.0, r_max: float = 1.0,
        max_phase: float = 2 * math.pi, activation: str | None = None,
        dtype=jnp.float32) -> Cell:
    r"""Linear Recurrent Unit (Orvieto et al. 2023): a complex diagonal linear recurrence.

    .. math::
        \lambda &= \exp(-\exp(\nu) + i \exp(\theta)) \\
        h_t &= \lambda \odot h_{t-1} + \gamma \odot (x_t B) \\
        y_t &= \phi(\mathrm{Re}(h_t C) + x_t D)

    with ``gamma = exp(gamma_log)``, initialised to ``sqrt(1 - |lambda|^2)``
    (the normalisation that keeps ``E|h|^2`` of white-noise input at its input
    scale). Params: ``nu_log``, ``theta_log``, ``gamma_log`` ``[N]``; ``B_re``,
    ``B_im`` ``[D, N]`` (init ``N(0, 1/(2D))``); ``C_re``, ``C_im`` ``[N, H]``
    (init ``N(0, 1/N)``); ``D`` ``[D, H]`` (init ``N(0, 1/D)``; Orvieto et al.
    use a diagonal ``D`` when ``D == H``). ``|lambda|`` is drawn uniform (in
    area) on the ring ``[r_min, r_max]`` and its phase in ``[0, max_phase]``.
    Carry :class:`LRUState` ``(re, im)`` ``[..., N]``; output ``y_t`` ``[..., H]``
    (``phi`` = ``activation``, identity by default). Layout: inputs multiply
    from the left, as in :mod:`jrnn.cells`; token ids gather rows of ``B`` and ``D``.

    ``project`` computes ``[gamma * x B_re, gamma * x B_im, x D]`` for all steps
    (``[..., 2N + H]``). The cell is declared element-wise (``blocks=2``:
    real and imaginary parts; recurrent params ``nu_log, theta_log, gamma_log,
    B_re, B_im``), so :func:`jrnn.grads.diagonal.diag_rtrl` trains it online
    with the exact gradient. It has no ``fast`` rule (``unroll`` runs the plain
    scan) and no ``unit_blocks``; :func:`parallel_unroll` is its parallel scan.

    Args:
      hidden_size: ``H``, the output width.
      state_size: ``N``, complex state units (default ``H``).
      r_min, r_max: the ring of ``|lambda|`` at init, ``0 <= r_min < r_max <= 1``.
      max_phase: the largest phase of ``lambda`` at init, in ``(0, 2 pi]``.
      activation: ``None`` (linear output, the LRU itself), ``"gelu"``, ``"tanh"`` or ``"relu"``.
      dtype: parameter and carry dtype.

    Example:
      >>> cell = lru(8, state_size=16)
      >>> p = cell.init(jax.random.key(0), 3)
      >>> hs, last = jrnn.unroll(cell, p, jnp.ones((5, 2, 3)))
      >>> hs.shape, last.re.shape
      ((5, 2, 8), (2, 16))
    """
    H = validation.check_int("hidden_size", hidden_size)
    N = validation.check_int("state_size", state_size if state_size is not None else H)
    if not (0.0 <= r_min < r_max <= 1.0):
        raise ValueError(f"need 0 <= r_min < r_max <= 1, got r_min={r_min!r}, r_max={r_max!r}")
    if not (0.0 < max_phase <= 2 * math.pi):
        raise ValueError(f"max_phase must be in (0, 2 pi], got {max_phase!r}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {list(_ACTIVATIONS)}, got {activation!r}")
    phi = _ACTIVATIONS[activation]

    def init(key, input_size):
        D = validation.check_int("input_size", input_size)
        kl, kb, kc, kd = jax.random.split(key, 4)
        nu_log, theta_log = _ring_init(kl, N, r_min, r_max, max_phase, dtype)
        mod2 = jnp.exp(-2.0 * jnp.exp(nu_log))
        b = jax.random.normal(kb, (2, D, N), dtype) / math.sqrt(2 * D)
        c = jax.random.normal(kc, (2, N, H), dtype) / math.sqrt(N)
        return {"nu_log": nu_log, "theta_log": theta_log,
                "gamma_log": 0.5 * jnp.log1p(-mod2).astype(dtype),
                "B_re": b[0], "B_im": b[1], "C_re": c[0], "C_im": c[1],
                "D": jax.random.normal(kd, (D, H), dtype) / math.sqrt(D)}

    def initial_carry(batch_shape=()):
        shape = (*tuple(batch_shape), N)
        return LRUState(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))

    def project(params, xs):
        bre, bim, dx = _input_product(params, xs, ("B_re", "B_im", "D"))
        g = jnp.exp(params["gamma_log"])
        return jnp.concatenate([g * bre, g * bim, dx], axis=-1)

    def step(params, carry, xp):
        mod = jnp.exp(-jnp.exp(params["nu_log"]))
        ang = jnp.exp(params["theta_log"])
        lr, li = mod * jnp.cos(ang), mod * jnp.sin(ang)
        re = lr * carry.re - li * carry.im + xp[..., :N]
        im = lr * carry.im + li * carry.re + xp[..., N:2 * N]
        y = phi(re @ params["C_re"] - im @ params["C_im"] + xp[..., 2 * N:])
        return LRUState(re, im), y

    cell = Cell(init, initial_carry, project, step, H, "lru")
    _LRU_ACTIVATION[step] = activation
    return declare_elementwise(cell, 2, N, ("nu_log", "theta_log", "gamma_log", "B_re", "B_im"))


def indrnn(hidden_size: int, activation: str = "tanh", w_max: float = 1.0,
           dtype=jnp.float32) -> Cell:
    r"""Independently recurrent cell (Li et al. 2018): an element-wise nonlinear recurrence.

    .. math::
        h_t = \phi(w \odot h_{t-1} + x_t W_x + b)

    Params: ``W_x [D, H]`` (Glorot uniform), ``w [H]`` (uniform in
    ``[0, w_max]``), ``b [H]`` (zeros). Carry and output ``h [..., H]``. Each
    unit sees only its own past, so the cell is declared element-wise
    (``blocks=1``; all params recurrent) for :func:`jrnn.grads.diagonal.diag_rtrl`;
    it also declares ``unit_blocks=1`` (SnAp-1 is exact on it).

    Args:
      hidden_size: ``H``.
      activation: ``"tanh"`` or ``"relu"``.
      w_max: the recurrent weights start uniform in ``[0, w_max]``.
      dtype: parameter and carry dtype.
    """
    H = validation.check_int("hidden_size", hidden_size)
    if activation not in ("tanh", "relu"):
        raise ValueError(f"activation must be 'tanh' or 'relu', got {activation!r}")
    phi = _ACTIVATIONS[activation]

    def init(key, input_size):
        D = validation.check_int("input_size", input_size)
        kx, kw = jax.random.split(key)
        return {"W_x": jax.nn.initializers.glorot_uniform()(kx, (D, H), dtype),
                "w": jax.random.uniform(kw, (H,), dtype, 0.0, w_max),
                "b": jnp.zeros((H,), dtype)}

    def project(params, xs):
        return _input_product(params, xs, ("W_x",))[0] + params["b"]

    def step(params, h, xp):
        h = phi(params["w"] * h + xp)
        return h, h

    def initial_carry(batch_shape=()):
        return jnp.zeros((*tuple(batch_shape), H), dtype)

    cell = Cell(init, initial_carry, project, step, H, "indrnn", unit_blocks=1)
    return declare_elementwise(cell, 1, H, ("W_x", "w", "b"))


def parallel_unroll(cell: Cell, params, xs, carry: LRUState | None = None):
    """An :func:`lru` cell over a whole sequence by ``jax.lax.associative_scan``.

    ``h_t = lambda h_{t-1} + u_t`` is a linear recurrence, so the pairs
    ``(lambda^k, h)`` compose associatively and all ``T`` states come out of a
    scan of depth ``O(log T)`` (Blelloch 1990; as in the LRU paper) instead of
    ``T`` sequential steps. Same values as ``jrnn.unroll(cell, params, xs, carry)``
    (no lengths, resets or masks here).

    Args:
      cell: a cell built by :func:`lru`.
      params: its params.
      xs: inputs ``[T, B..., D]`` (floats) or ids ``[T, B...]``, time-major.
      carry: the :class:`LRUState` before the first step (zeros if ``None``).

    Returns:
      ``(ys [T, B..., H], final LRUState)``.
    """
    act = _LRU_ACTIVATION.get(cell.step, "missing") if isinstance(cell, Cell) else "missing"
    if act == "missing":
        raise ValueError(f"parallel_unroll runs cells built by jrnn.lru.lru, got "
                         f"{getattr(cell, 'name', type(cell).__name__)!r}")
    validation.check_inputs(cell, params, xs)
    N = params["nu_log"].shape[-1]
    xp = cell.project(params, xs)  # [T, B..., 2N + H]
    u = jax.lax.complex(xp[..., :N], xp[..., N:2 * N])
    lam = jnp.exp(jax.lax.complex(-jnp.exp(params["nu_log"]), jnp.exp(params["theta_log"])))
    if carry is not None:
        validation.check_carry(cell, carry, tuple(jnp.shape(u))[1:-1])
        u = u.at[0].add(lam * jax.lax.complex(carry.re, carry.im))
    lams = jnp.broadcast_to(lam, u.shape)

    def combine(a, b):  # (l1, h1) then (l2, h2): h = l2 h1 + h2
        return a[0] * b[0], b[0] * a[1] + b[1]

    _, h = jax.lax.associative_scan(combine, (lams, u))
    re, im = jnp.real(h).astype(xp.dtype), jnp.imag(h).astype(xp.dtype)
    ys = _ACTIVATIONS[act](re @ params["C_re"] - im @ params["C_im"] + xp[..., 2 * N:])
    return ys, LRUState(re[-1], im[-1])
