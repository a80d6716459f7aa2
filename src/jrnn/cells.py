"""Recurrent cells as NamedTuples of pure functions, and the registry of their names.

A :class:`Cell` follows the protocol of ``DESIGN.md``:

- ``init(key, input_size) -> params``: a dict of arrays. ``input_size`` is the
  width ``D`` of float inputs, or the vocabulary size ``V`` when the inputs are
  integer token ids (the input matrix is then a ``[V, ...]`` embedding table).
- ``initial_carry(batch_shape=()) -> carry``: zeros; ``batch_shape=()`` is the
  unbatched case, ``(B,)`` a batch.
- ``project(params, xs) -> xp``: the input half of the step for ALL time steps
  at once, ``xs`` of shape ``[..., D]`` (float) or ``[...]`` (int token ids,
  gathered: exactly the one-hot product, without the product).
- ``step(params, carry, xp_t) -> (carry, h_t)``: the recurrent half only.

and may declare optional capabilities (trailing fields, ``None`` when absent):

- ``fast``: a :class:`FastRecurrence`, the step split at its recurrent product
  with a hand-written tangent rule; :func:`jrnn.scan.unroll` then runs the
  recurrence through it (one big weight product for all steps, a lean tangent
  scan). Any cell, including one written by a user, opts in by supplying it.
- ``layers``: the cells of a :func:`stack`, bottom first; ``unroll`` then runs
  the stack layer by layer.
- ``unit_blocks``: ``K`` when the carry is ``K`` blocks of ``H`` per-unit
  states and one step moves unit ``i``'s entries only through the params whose
  last-axis index is ``i mod H`` (the one-step sparsity pattern of SnAp-1,
  :func:`jrnn.grads.snap1`).

Fields are independent: ``cell._replace(step=other)`` keeps ``fast``; drop it
(``fast=None``) unless ``other`` computes the same step.

Weight layout (documented so that weights port from ``torch.nn``): inputs
multiply from the left, ``x @ W_x`` with ``W_x`` of shape ``[D, G*H]``, the
transpose of torch's ``weight_ih_l0``. Gates are fused along the last axis in
torch's order (LSTM ``i, f, g, o``; GRU ``r, z, n``), so
``W_x = weight_ih_l0.T``, ``W_h = weight_hh_l0.T``. See
:func:`jrnn.interop.from_torch`.

:func:`leaky` (leaky units with per-unit time constants, Goodfellow et al.
10.9) is built by its constructor only; it is not in the registry.

Names: :data:`CELLS` maps ``"rnn"`` (tanh Elman), ``"rnn-relu"``, ``"lstm"`` and
``"gru"`` to their constructors, :func:`by_name` builds one, and each built
cell's ``name`` is its registry name (a stack's is derived from its layers).
``lstm(H, layer_norm=True)`` and ``gru(H, layer_norm=True)`` (Ba et al. 2016;
also ``by_name("lstm", H, layer_norm=True)``) are named ``"ln-lstm"`` and
``"ln-gru"``; they are not separate registry entries.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import validation

Params = dict
Carry = Any

__all__ = [
    "Cell", "FastRecurrence", "LSTMState", "elman", "lstm", "gru", "leaky", "stack", "CELLS",
    "by_name",
    "INITS", "from_torch", "check_token_ids",
]

INITS = ("uniform", "d2l", "orthogonal")


class LSTMState(NamedTuple):
    """LSTM carry with named fields (flax orders ``(c, h)``, equinox ``(h, c)``).

    Attributes:
      h: hidden state ``[..., H]`` (also the cell's output).
      c: memory cell ``[..., H]``.
    """

    h: jax.Array
    c: jax.Array


class FastRecurrence(NamedTuple):
    """A cell step split at its recurrent product, with its tangent rule.

    Supplying it as ``Cell.fast`` lets :func:`jrnn.scan.unroll` compute the
    weight term ``read(c_{t-1}) @ dW`` of all steps as one large product and
    keep one small product per step in the backward pass (see
    ``jrnn._fast``). For ``zh = read(carry) @ params[weight]`` (``[..., G*H]``):

    Attributes:
      weight: the key of the recurrent matrix ``W`` ``[H, G*H]`` in the params.
      read: ``carry -> [..., H]``, the part of the carry that multiplies ``W``
        (``h``; ``carry.h`` for an LSTM). Applied to stacked carries too.
      forward: ``(params, carry, xp, zh) -> (carry', h, res)``, the step:
        ``step(params, carry, xp) == forward(params, carry, xp, zh)[:2]``;
        ``res`` holds what ``coefficients`` needs beyond the carries (or ``()``).
      coefficients: ``(params, prev, new, res) -> K``: the step's local
        derivatives for ALL time steps at once (leading ``[T, B...]``), from the
        carries before (``prev``) and after (``new``) each step.
      tangent: ``(K_t, dcarry, dxp, dzh) -> (dcarry', dh)``: the step's JVP,
        linear in ``(dcarry, dxp, dzh)``.
      extra_dzh: ``dparams -> [G*H]`` or ``None``: tangents of params used
        inside the step other than ``weight`` (e.g. GRU's ``b_hn``), folded
        into ``dzh``.
      additive: the step reads ``xp + zh`` only, so ``tangent(K, dc, dxp + dzh,
        0)`` equals ``tangent(K, dc, dxp, dzh)`` (one scanned input fewer).

    Values and derivatives must equal those of autodiff through ``step``; a
    test against ``unroll(..., fast_path=False)`` checks a new rule.
    """

    weight: str
    read: Callable[[Carry], jax.Array]
    forward: Callable[..., tuple]
    coefficients: Callable[..., Any]
    tangent: Callable[..., tuple]
    extra_dzh: Callable[[Params], jax.Array] | None = None
    additive: bool = False

    def step(self, params, carry, xp):
        """The step this rule describes: ``forward(params, carry, xp, read(carry) @ W)[:2]``."""
        return self.forward(params, carry, xp, self.read(carry) @ params[self.weight])[:2]


class Cell(NamedTuple):
    """A recurrent cell: pure functions, its static sizes, optional capabilities.

    Attributes:
      init: ``(key, input_size) -> params``.
      initial_carry: ``(batch_shape=()) -> carry`` of zeros.
      project: ``(params, xs[..., D] | ids[...]) -> xp[..., G*H]``.
      step: ``(params, carry, xp_t) -> (carry, h_t[..., H])``.
      hidden_size: ``H``, the width of ``h_t``.
      name: a short name, e.g. ``"lstm"`` (the registry name for built cells).
      fast: a :class:`FastRecurrence` for ``step``, or ``None`` (plain scan).
      layers: a stack's cells, bottom first, or ``None``.
      unit_blocks: ``K`` if the carry is ``K`` blocks of ``H`` per-unit states
        with the one-step sparsity pattern SnAp-1 needs (module docstring), or
        ``None``.
      backend: who runs :func:`jrnn.unroll` over it: ``"xla"`` (jrnn's scan),
        ``"onednn"`` or ``"auto"`` (:mod:`jrnn.kernels`; set it with
        :func:`jrnn.kernels.with_backend`).
    """

    init: Callable[..., Params]
    initial_carry: Callable[..., Carry]
    project: Callable[[Params, jax.Array], jax.Array]
    step: Callable[[Params, Carry, jax.Array], tuple]
    hidden_size: int
    name: str
    fast: FastRecurrence | None = None
    layers: tuple | None = None
    unit_blocks: int | None = None
    backend: str = "xla"

    def apply(self, params: Params, carry: Carry, x: jax.Array):
        """One step on a raw input ``x`` ``[..., D]`` or ids ``[...]``: ``step(project(x))``."""
        return self.step(params, carry, self.project(params, x))


def _dsigmoid(s):
    """``sigma'(a)`` from ``s = sigma(a)``."""
    return s * (1.0 - s)


# ----------------------------------------------------------------------------
# shared pieces


def _check_init(init):
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")


def check_token_ids(ids, vocab_size: int, name: str = "xs"):
    """Raise ``ValueError`` if concrete ``ids`` fall outside ``[0, vocab_size)``.

    The same check as :func:`jrnn.validation.check_ids` (kept under this name
    for code written against earlier versions).
    """
    validation.check_ids(name, ids, vocab_size)


def _project(params: Params, xs: jax.Array, wname: str, bname: str | None) -> jax.Array:
    """``xs @ W + b`` for floats ``[..., D]``; a row gather ``W[ids] + b`` for int ids ``[...]``."""
    w = params[wname]
    dt = xs.dtype if hasattr(xs, "dtype") else np.asarray(xs).dtype
    if jnp.issubdtype(dt, jnp.integer):
        n = w.shape[0]
        validation.check_ids("xs", xs, n, hint=(
            f"the cell's params were initialised for input_size={n}: a vocabulary of {n} ids, "
            f"or float inputs [..., {n}] (then pass floats, not integers)"))
        out = jnp.take(w, xs, axis=0)
    else:
        if jnp.ndim(xs) < 1 or xs.shape[-1] != w.shape[0]:
            raise ValueError(
                f"xs has width {xs.shape[-1] if jnp.ndim(xs) else None} (shape "
                f"{tuple(jnp.shape(xs))}) but the cell was initialised for input_size={w.shape[0]}")
        out = xs @ w
    return out + params[bname] if bname is not None else out


def _init_weights(key, input_size: int, hidden_size: int, gates: int, init: str, dtype):
    """Returns ``(W_x [D, G*H], W_h [H, G*H])``."""
    input_size = validation.check_int("input_size", input_size)
    kx, kh = jax.random.split(key)
    gh = gates * hidden_size
    if init == "d2l":  # d2l: normal(0, 1) * 0.01
        w_x = 0.01 * jax.random.normal(kx, (input_size, gh), dtype)
        w_h = 0.01 * jax.random.normal(kh, (hidden_size, gh), dtype)
    elif init == "uniform":  # torch.nn.RNN/LSTM/GRU default: U(-1/sqrt(H), 1/sqrt(H))
        s = 1.0 / math.sqrt(hidden_size)
        w_x = jax.random.uniform(kx, (input_size, gh), dtype, -s, s)
        w_h = jax.random.uniform(kh, (hidden_size, gh), dtype, -s, s)
    else:  # orthogonal recurrent blocks (one per gate), Glorot-uniform input
        w_x = jax.nn.initializers.glorot_uniform()(kx, (input_size, gh), dtype)
        ortho = jax.nn.initializers.orthogonal()
        w_h = jnp.concatenate(
            [ortho(k, (hidden_size, hidden_size), dtype) for k in jax.random.split(kh, gates)], -1)
    return w_x, w_h


def _bias(key, shape, hidden_size, init, dtype):
    if init == "uniform":
        s = 1.0 / math.sqrt(hidden_size)
        return jax.random.uniform(key, shape, dtype, -s, s)
    return jnp.zeros(shape, dtype)


def _zeros(hidden_size, dtype):
    def initial_carry(batch_shape=()):
        return jnp.zeros((*tuple(batch_shape), hidden_size), dtype)
    return initial_carry


LN_EPS = 1e-5  # inside the square root, as torch.nn.LayerNorm


def _layer_norm(a: jax.Array, gain: jax.Array) -> jax.Array:
    """``gain * (a - mean) / sqrt(var + LN_EPS)``, the statistics over the last axis of ``a``.

    ``a`` ``[..., N]``, ``gain`` ``[N]``: one mean and (biased) variance per
    example and time step (Ba, Kiros & Hinton 2016, section 3); the shift is left to
    the caller, whose bias is added right after.
    """
    mu = jnp.mean(a, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(a - mu), axis=-1, keepdims=True)
    return gain * ((a - mu) * jax.lax.rsqrt(var + LN_EPS))


def _ln_project(params: Params, xs: jax.Array, bname: str) -> jax.Array:
    """``LN(xs @ W_x; g_x) + b`` for all positions at once (ids: ``LN(W_x[ids]; g_x) + b``)."""
    return _layer_norm(_project(params, xs, "W_x", None), params["g_x"]) + params[bname]


# ----------------------------------------------------------------------------
# cells


def elman(hidden_size: int, activation: str = "tanh", init: str = "uniform",
          dtype=jnp.float32) -> Cell:
    r"""Elman (vanilla) RNN cell, d2l eq. (8.4.5).

    .. math::
        H_t = \phi(X_t W_{xh} + H_{t-1} W_{hh} + b_h)

    Params: ``W_xh [D, H]``, ``W_hh [H, H]``, ``b_h [H]``. The carry is ``h [..., H]``
    and the output is ``h_t``. torch's two biases add: ``b_h = bias_ih + bias_hh``.
    The cell's name (its registry name) is ``"rnn"`` for tanh, ``"rnn-relu"`` for relu;
    it supplies a fast recurrence and ``unit_blocks=1``.

    Args:
      hidden_size: ``H``.
      activation: ``"tanh"`` or ``"relu"``.
      init: ``"uniform"`` (torch default, ``U(±1/sqrt(H))``), ``"d2l"``
        (``N(0, 0.01²)`` weights, zero bias), or ``"orthogonal"`` (orthogonal
        ``W_hh``, Glorot ``W_xh``, zero bias).
      dtype: parameter and carry dtype.

    Example:
      >>> cell = elman(8)
      >>> p = cell.init(jax.random.key(0), 3)
      >>> h, y = cell.apply(p, cell.initial_carry((2,)), jnp.ones((2, 3)))
      >>> y.shape
      (2, 8)
    """
    H = validation.check_int("hidden_size", hidden_size)
    _check_init(init)
    acts = {"tanh": jnp.tanh, "relu": jax.nn.relu}
    if activation not in acts:
        raise ValueError(f"activation must be 'tanh' or 'relu', got {activation!r}")
    phi = acts[activation]

    def init_fn(key, input_size):
        k, kb = jax.random.split(key)
        w_x, w_h = _init_weights(k, input_size, H, 1, init, dtype)
        return {"W_xh": w_x, "W_hh": w_h, "b_h": _bias(kb, (H,), H, init, dtype)}

    def project(params, xs):
        return _project(params, xs, "W_xh", "b_h")

    def step(params, h, xp):
        h = phi(xp + h @ params["W_hh"])
        return h, h

    def forward(params, h, xp, zh):
        h = phi(xp + zh)
        return h, h, ()

    def coefficients(params, prev, new, res):  # phi'(a) from h = phi(a)
        return 1.0 - new * new if activation == "tanh" else (new > 0).astype(new.dtype)

    def tangent(k, dh, dxp, dzh):
        dh = k * (dxp + dzh)
        return dh, dh

    fast = FastRecurrence("W_hh", lambda h: h, forward, coefficients, tangent, additive=True)
    name = "rnn" if activation == "tanh" else f"rnn-{activation}"
    return Cell(init_fn, _zeros(H, dtype), project, step, H, name, fast=fast, unit_blocks=1)


def lstm(hidden_size: int, init: str = "uniform", forget_bias: float = 0.0,
         dtype=jnp.float32, layer_norm: bool = False) -> Cell:
    r"""LSTM cell (Hochreiter & Schmidhuber 1997; d2l 9.2), torch's gate order.

    .. math::
        [i, f, g, o] &= X_t W_x + H_{t-1} W_h + b \\
        C_t &= \sigma(f) \odot C_{t-1} + \sigma(i) \odot \tanh(g) \\
        H_t &= \sigma(o) \odot \tanh(C_t)

    Params: ``W_x [D, 4H]``, ``W_h [H, 4H]``, ``b [4H]``, gates fused in the order
    ``i, f, g, o`` (input, forget, candidate, output) — torch's order, so
    ``W_x = weight_ih_l0.T`` and ``b = bias_ih_l0 + bias_hh_l0``. Carry:
    :class:`LSTMState` ``(h, c)``; output ``h_t``. Supplies a fast recurrence and
    ``unit_blocks=2`` (``h`` and ``c`` per unit).

    With ``layer_norm=True`` it is the layer-normalised LSTM of Ba, Kiros &
    Hinton 2016, named ``"ln-lstm"``, without a fast recurrence or
    ``unit_blocks`` (its equations and params: :func:`_ln_lstm`).

    Args:
      hidden_size: ``H``.
      init: see :func:`elman` (the gains start at 1 whatever ``init``).
      forget_bias: added to the forget-gate bias at init (1.0 is a common choice).
      dtype: parameter and carry dtype.
      layer_norm: build the layer-normalised cell above.
    """
    H = validation.check_int("hidden_size", hidden_size)
    _check_init(init)

    def init_fn(key, input_size):
        k, kb = jax.random.split(key)
        w_x, w_h = _init_weights(k, input_size, H, 4, init, dtype)
        b = _bias(kb, (4 * H,), H, init, dtype).at[H:2 * H].add(forget_bias)
        return {"W_x": w_x, "W_h": w_h, "b": b}

    def initial_carry(batch_shape=()):
        shape = (*tuple(batch_shape), H)
        # two distinct buffers: a donating train step may not see one buffer twice
        return LSTMState(h=jnp.zeros(shape, dtype), c=jnp.zeros(shape, dtype))

    def project(params, xs):
        return _project(params, xs, "W_x", "b")

    # per gate column: 1/2 for the sigmoid gates i, f, o; 1 for the tanh candidate g
    half = np.where(np.arange(4 * H) // H == 2, 1.0, 0.5)

    def activations(z):
        """``[sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)]`` as ONE elementwise op over ``[..., 4H]``.

        ``sigmoid(x) = (1 + tanh(x / 2)) / 2``: one ``tanh`` per element, fused by
        XLA into a single kernel (separate sigmoids become separate kernels).
        """
        s = jnp.asarray(half, z.dtype)
        return jnp.tanh(z * s) * s + (1.0 - s)

    def forward(params, carry, xp, zh):
        act = activations(xp + zh)
        i, f, g, o = jnp.split(act, 4, axis=-1)
        c = f * carry.c + i * g
        h = o * jnp.tanh(c)
        return LSTMState(h=h, c=c), h, act

    def step(params, carry, xp):
        return forward(params, carry, xp, carry.h @ params["W_h"])[:2]

    def coefficients(params, prev, new, act):
        i, f, g, o = jnp.split(act, 4, axis=-1)
        tc = jnp.tanh(new.c)
        # d(c) = f dc_prev + [g i', c_prev f', i g'] . [di, df, dg];  d(h) = o tanh'(c) dc + tanh(c) o' do
        kz = jnp.concatenate([g * _dsigmoid(i), prev.c * _dsigmoid(f), i * (1.0 - g * g),
                              tc * _dsigmoid(o)], axis=-1)
        return kz, f, o * (1.0 - tc * tc)

    def tangent(k, dcarry, dxp, dzh):
        kz, f, kh = k
        di, df, dg, do = jnp.split(kz * (dxp + dzh), 4, axis=-1)
        dc = f * dcarry.c + di + df + dg
        dh = kh * dc + do
        return LSTMState(h=dh, c=dc), dh

    if layer_norm:
        return _ln_lstm(H, dtype, init_fn, initial_carry, activations)
    fast = FastRecurrence("W_h", lambda carry: carry.h, forward, coefficients, tangent,
                          additive=True)
    return Cell(init_fn, initial_carry, project, step, H, "lstm", fast=fast, unit_blocks=2)


def _ln_lstm(H: int, dtype, init_fn, initial_carry, activations) -> Cell:
    r"""The layer-normalised LSTM (``lstm(H, layer_norm=True)``), on the plain LSTM's
    ``init_fn``, ``initial_carry`` and fused gate ``activations``.

    Ba, Kiros & Hinton 2016 ("Layer normalization", arXiv:1607.06450, the LN-LSTM
    equations of section 3.1 / the supplementary), named ``"ln-lstm"``:

    .. math::
        [i, f, g, o] &= \mathrm{LN}(X_t W_x; g_x) + \mathrm{LN}(H_{t-1} W_h; g_h) + b \\
        C_t &= \sigma(f) \odot C_{t-1} + \sigma(i) \odot \tanh(g) \\
        H_t &= \sigma(o) \odot \tanh(\mathrm{LN}(C_t; g_c) + b_c)

    with :math:`\mathrm{LN}(a; g) = g \odot (a - \mu(a)) / \sqrt{\sigma^2(a) + 10^{-5}}`,
    the mean and (biased) variance taken per example and time step over the
    whole fused ``4H`` pre-activation (as the paper writes it; not per gate)
    for the two projections, and over the ``H`` units for the memory. Three
    normalisations, each with its own gain (``g_x``, ``g_h`` ``[4H]``,
    ``g_c`` ``[H]``, init 1); the paper's shifts of the two projections and
    its gate bias are summed, so they are one param ``b`` ``[4H]`` (it holds
    ``forget_bias``), and ``b_c`` ``[H]`` (init 0) shifts the normalised
    memory. The carry keeps the un-normalised ``C_t``. ``LN(X_t W_x)`` is done
    in ``project`` (per position, for all steps at once), the rest in the
    step. The step is no longer ``xp + h @ W_h``-additive and LN couples the
    units of a layer, so this cell has no fast recurrence (``fast=None``:
    plain scan) and no ``unit_blocks`` (SnAp-1 refuses it; RTRL, UORO and
    the BPTT family work). ``W_h`` keeps its name, so
    :func:`jrnn.regularise.dropout`'s ``weight_drop`` finds it.
    """

    def ln_init(key, input_size):
        return {**init_fn(key, input_size), "g_x": jnp.ones((4 * H,), dtype),
                "g_h": jnp.ones((4 * H,), dtype), "g_c": jnp.ones((H,), dtype),
                "b_c": jnp.zeros((H,), dtype)}

    def ln_step(params, carry, xp):
        i, f, g, o = jnp.split(activations(xp + _layer_norm(carry.h @ params["W_h"],
                                                            params["g_h"])), 4, axis=-1)
        c = f * carry.c + i * g
        h = o * jnp.tanh(_layer_norm(c, params["g_c"]) + params["b_c"])
        return LSTMState(h=h, c=c), h

    return Cell(ln_init, initial_carry, lambda params, xs: _ln_project(params, xs, "b"),
                ln_step, H, "ln-lstm")


def gru(hidden_size: int, init: str = "uniform", dtype=jnp.float32,
        layer_norm: bool = False) -> Cell:
    r"""GRU cell (Cho et al. 2014), the "reset after" variant of cuDNN/torch/flax.

    .. math::
        [r, z]_t &= \sigma(X_t W_{x,rz} + b_{x,rz} + H_{t-1} W_{h,rz}) \\
        n_t &= \tanh(X_t W_{x,n} + b_{x,n} + r_t \odot (H_{t-1} W_{h,n} + b_{hn})) \\
        H_t &= (1 - z_t) \odot n_t + z_t \odot H_{t-1}

    The reset gate multiplies ``H W_hn + b_hn`` (after the product), as in
    ``torch.nn.GRU`` and ``flax.linen.GRUCell``; d2l's from-scratch GRU resets
    before the product instead. Params: ``W_x [D, 3H]``, ``W_h [H, 3H]``,
    ``b_x [3H]``, ``b_hn [H]``; gates fused in torch's order ``r, z, n``. From
    torch: ``b_x = bias_ih + [bias_hh_r, bias_hh_z, 0]``, ``b_hn = bias_hh_n``.
    Supplies a fast recurrence and ``unit_blocks=1``.

    With ``layer_norm=True`` it is a layer-normalised GRU after Ba, Kiros &
    Hinton 2016 ("Layer normalization", arXiv:1607.06450, section 3.1: LN of
    the input and of the recurrent projection, separately), named
    ``"ln-gru"``:

    .. math::
        a^x_t &= \mathrm{LN}(X_t W_x; g_x) + b_x, \quad
        a^h_t = \mathrm{LN}(H_{t-1} W_h; g_h) \\
        [r, z]_t &= \sigma(a^x_{rz} + a^h_{rz}) \\
        n_t &= \tanh(a^x_n + r_t \odot (a^h_n + b_{hn})) \\
        H_t &= (1 - z_t) \odot n_t + z_t \odot H_{t-1}

    ``LN`` as in :func:`lstm` (mean and variance over the whole fused ``3H``
    vector, per example and time step; gains ``g_x``, ``g_h`` ``[3H]`` init
    1). Two normalisations; the state itself is not normalised (it is the
    output and is carried through ``z``). The shifts are the plain cell's
    biases: ``b_x`` (it also stands for the recurrent shift of ``r, z``,
    which adds to it) and ``b_hn`` (inside ``r * (...)``, so not
    redundant). Like the LN-LSTM: ``fast=None``, ``unit_blocks=None``, the
    recurrent matrix named ``W_h``.

    Args:
      hidden_size: ``H``.
      init: see :func:`elman` (the gains start at 1 whatever ``init``).
      dtype: parameter and carry dtype.
      layer_norm: build the layer-normalised cell above.
    """
    H = validation.check_int("hidden_size", hidden_size)
    _check_init(init)

    def init_fn(key, input_size):
        k, kb, kn = jax.random.split(key, 3)
        w_x, w_h = _init_weights(k, input_size, H, 3, init, dtype)
        return {"W_x": w_x, "W_h": w_h, "b_x": _bias(kb, (3 * H,), H, init, dtype),
                "b_hn": _bias(kn, (H,), H, init, dtype)}

    def project(params, xs):
        return _project(params, xs, "W_x", "b_x")

    def forward(params, h, xp, hh):
        # both sigmoid gates as ONE elementwise op, sigmoid(x) = (1 + tanh(x / 2)) / 2 (one kernel)
        rz = 0.5 * jnp.tanh(0.5 * (xp[..., :2 * H] + hh[..., :2 * H])) + 0.5
        r, z = rz[..., :H], rz[..., H:]
        hnb = hh[..., 2 * H:] + params["b_hn"]
        n = jnp.tanh(xp[..., 2 * H:] + r * hnb)
        h = (1.0 - z) * n + z * h
        return h, h, (rz, n, hnb)

    def step(params, h, xp):
        return forward(params, h, xp, h @ params["W_h"])[:2]

    def coefficients(params, prev, new, res):
        rz, n, hnb = res
        r, z = rz[..., :H], rz[..., H:]
        # d(a_n) = dxn + r' hnb d(a_r) + r d(hn);  d(h) = (1-z) n' d(a_n) + (h_prev - n) z' d(a_z) + z dh_prev
        return _dsigmoid(r) * hnb, r, (1.0 - z) * (1.0 - n * n), (prev - n) * _dsigmoid(z), z

    def tangent(k, dh, dxp, dzh):
        kr, r, kn, kz, z = k
        xr, xz, xn = jnp.split(dxp, 3, axis=-1)
        hr, hz, hn = jnp.split(dzh, 3, axis=-1)
        dan = xn + kr * (xr + hr) + r * hn
        dh = kn * dan + kz * (xz + hz) + z * dh
        return dh, dh

    def extra_dzh(dparams):  # b_hn is added to hn: its tangent joins d(hn)
        return jnp.concatenate([jnp.zeros((2 * H,), dparams["b_hn"].dtype), dparams["b_hn"]])

    if layer_norm:
        def ln_init(key, input_size):
            return {**init_fn(key, input_size), "g_x": jnp.ones((3 * H,), dtype),
                    "g_h": jnp.ones((3 * H,), dtype)}

        def ln_step(params, h, xp):  # the plain step, on the normalised recurrent product
            return forward(params, h, xp, _layer_norm(h @ params["W_h"], params["g_h"]))[:2]

        return Cell(ln_init, _zeros(H, dtype), lambda params, xs: _ln_project(params, xs, "b_x"),
                    ln_step, H, "ln-gru")

    fast = FastRecurrence("W_h", lambda h: h, forward, coefficients, tangent, extra_dzh)
    return Cell(init_fn, _zeros(H, dtype), project, step, H, "gru", fast=fast, unit_blocks=1)


def _check_tau(tau, H: int) -> np.ndarray:
    """Per-unit time constants ``[H]`` from a number or ``H`` numbers, each finite and > 1."""
    arr = np.asarray(tau, np.float64)
    if arr.ndim == 0:
        arr = np.full((H,), float(arr))
    if arr.shape != (H,) or not np.all(np.isfinite(arr)) or not np.all(arr > 1.0):
        raise ValueError(f"tau must be a number > 1 or {H} numbers > 1 (one per unit; tau = 1 is "
                         f"the Elman cell), got {tau!r}")
    return arr


def leaky(hidden_size: int, tau=10.0, learn_tau: bool = True, init: str = "uniform",
          dtype=jnp.float32) -> Cell:
    r"""Leaky units (Goodfellow et al. 10.9.2): an Elman cell whose units integrate over time.

    .. math::
        V_t &= \tanh(X_t W_{xh} + H_{t-1} W_{hh} + b_h) \\
        H_t &= (1 - \alpha) \odot H_{t-1} + \alpha \odot V_t, \quad \alpha = 1 / \tau

    Unit ``i`` forgets with time constant ``tau_i`` steps: with ``V = 0`` its
    state decays as ``(1 - 1/tau_i)^t``, so long time constants carry
    information over long delays and let gradients flow back through them
    (the self-loop's derivative is ``1 - 1/tau_i``, close to one).

    Params: ``W_xh [D, H]``, ``W_hh [H, H]``, ``b_h [H]`` (the Elman cell's
    names and layout) and, when ``learn_tau``, ``log_tau_m1 [H]`` with
    ``tau = 1 + exp(log_tau_m1)`` (so every ``tau > 1`` during training, and
    ``alpha = sigmoid(-log_tau_m1)``). With fixed time constants ``tau`` is
    closed over, the params are exactly an Elman cell's, and the cell
    supplies a fast recurrence. Carry ``h [..., H]``, output ``h_t``;
    ``unit_blocks=1``.

    Args:
      hidden_size: ``H``.
      tau: the time constants (in steps) at init: a number for all units, or
        ``H`` numbers (e.g. ``np.geomspace(2, 100, H)``); each ``> 1``.
      learn_tau: make the time constants params (trained with the rest).
      init: see :func:`elman`.
      dtype: parameter and carry dtype.

    Example:
      >>> cell = leaky(8, tau=np.geomspace(2, 50, 8))
      >>> p = cell.init(jax.random.key(0), 3)
      >>> sorted(p)
      ['W_hh', 'W_xh', 'b_h', 'log_tau_m1']
    """
    H = validation.check_int("hidden_size", hidden_size)
    _check_init(init)
    taus = _check_tau(tau, H)

    def init_fn(key, input_size):
        k, kb = jax.random.split(key)
        w_x, w_h = _init_weights(k, input_size, H, 1, init, dtype)
        p = {"W_xh": w_x, "W_hh": w_h, "b_h": _bias(kb, (H,), H, init, dtype)}
        if learn_tau:
            p["log_tau_m1"] = jnp.asarray(np.log(taus - 1.0), dtype)
        return p

    def project(params, xs):
        return _project(params, xs, "W_xh", "b_h")

    fixed_alpha = (1.0 / taus).astype(np.dtype(dtype))

    def alpha(params):
        return jax.nn.sigmoid(-params["log_tau_m1"]) if learn_tau else fixed_alpha

    def forward(params, h, xp, zh):
        v = jnp.tanh(xp + zh)
        a = alpha(params)
        h = (1.0 - a) * h + a * v
        return h, h, v

    def step(params, h, xp):
        return forward(params, h, xp, h @ params["W_hh"])[:2]

    if learn_tau:  # the time constants' tangent is not of FastRecurrence's form: plain scan
        return Cell(init_fn, _zeros(H, dtype), project, step, H, "leaky", unit_blocks=1)

    def coefficients(params, prev, new, v):
        return fixed_alpha * (1.0 - v * v)

    def tangent(k, dh, dxp, dzh):
        dh = (1.0 - fixed_alpha) * dh + k * (dxp + dzh)
        return dh, dh

    fast = FastRecurrence("W_hh", lambda h: h, forward, coefficients, tangent, additive=True)
    return Cell(init_fn, _zeros(H, dtype), project, step, H, "leaky", fast=fast, unit_blocks=1)


def stack(cells) -> Cell:
    """Deep RNN (Goodfellow 10.5, d2l 9.3): layer ``l+1`` reads layer ``l``'s ``h_t``.

    The stacked cell is itself a :class:`Cell`, so unroll, models and every
    gradient estimator work on it unchanged. Params and carry are tuples, one
    entry per layer; ``project`` is layer 0's, and each higher layer projects
    its input inside the step. The output is the top layer's ``h_t``
    ``[..., H_top]``. Its ``layers`` field holds the cells, so
    :func:`jrnn.scan.unroll` runs it layer by layer; its name joins the
    layers' (``"2xlstm"``, ``"lstmxgru"``).

    Args:
      cells: a sequence of cells, bottom first. A single cell is returned
        unchanged (its params stay a dict, not a 1-tuple).
    """
    cells = tuple(cells)
    if not cells or not all(isinstance(c, Cell) for c in cells):
        raise TypeError(f"stack needs a non-empty sequence of Cells, got {cells!r}")
    if len(cells) == 1:
        return cells[0]

    def init_fn(key, input_size):
        keys = jax.random.split(key, len(cells))
        sizes = [input_size] + [c.hidden_size for c in cells[:-1]]
        return tuple(c.init(k, d) for c, k, d in zip(cells, keys, sizes))

    def initial_carry(batch_shape=()):
        return tuple(c.initial_carry(batch_shape) for c in cells)

    def project(params, xs):
        return cells[0].project(params[0], xs)

    def step(params, carry, xp):
        new = []
        for l, (c, p, s) in enumerate(zip(cells, params, carry)):
            s, h = c.step(p, s, xp if l == 0 else c.project(p, h))
            new.append(s)
        return tuple(new), h

    names = [c.name for c in cells]
    name = "x".join(names) if len(set(names)) > 1 else f"{len(cells)}x{names[0]}"
    return Cell(init_fn, initial_carry, project, step, cells[-1].hidden_size, name, layers=cells)


# ----------------------------------------------------------------------------
# the registry of cell names

CELLS: dict[str, Callable[..., Cell]] = {
    "rnn": elman,
    "rnn-relu": functools.partial(elman, activation="relu"),
    "lstm": lstm,
    "gru": gru,
}


def by_name(name: str, hidden_size: int, **kwargs) -> Cell:
    """Build a cell from its registry name: ``by_name("lstm", 256, init="orthogonal")``.

    Args:
      name: a key of :data:`CELLS`: ``"rnn"`` (tanh Elman), ``"rnn-relu"``,
        ``"lstm"``, ``"gru"``.
      hidden_size: ``H``.
      **kwargs: passed to the constructor (``init``, ``dtype``, ``forget_bias``
        for ``"lstm"``, ``layer_norm`` for ``"lstm"`` and ``"gru"``).

    Returns:
      The cell; its ``name`` is ``name`` (``"ln-lstm"`` / ``"ln-gru"`` with
      ``layer_norm=True``: those are not registry names, they name the
      different params in fingerprints and logs).
    """
    if name not in CELLS:
        raise ValueError(f"unknown cell {name!r}; choose from {', '.join(CELLS)}")
    if kwargs.pop("layer_norm", False):  # False is every cell's default, so it is dropped
        if name not in ("lstm", "gru"):
            raise ValueError(f"layer_norm is implemented for the lstm and gru cells, not {name!r}")
        kwargs["layer_norm"] = True
    return CELLS[name](hidden_size, **kwargs)


from .interop import from_torch  # noqa: E402  (kept importable as jrnn.cells.from_torch)
