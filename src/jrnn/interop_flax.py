"""Flax adapters: a jrnn :class:`~jrnn.cells.Cell` as a ``flax.linen`` RNN cell, an ``nnx`` module.

Both are thin wrappers over the cell's pure functions; the params are the
cell's own pytree, 1:1, initialised by ``cell.init``:

- :class:`LinenCell` is an ``nn.RNNCellBase``: a drop-in for ``nn.LSTMCell`` /
  ``nn.GRUCell``, unrolled by ``nn.RNN``. Its params sit under one entry,
  ``variables["params"][<module name>]["cell"]``, which *is* the jrnn params
  pytree (give it to :func:`jrnn.unroll` unchanged).
- :class:`NnxCell` is an ``nnx.Module`` whose ``params`` attribute is the
  jrnn params pytree with each leaf an ``nnx.Param``; ``cell_params()`` gives
  the plain pytree back.

Both step with ``(carry, x) -> (carry, h)`` (scan order; the carry is the
cell's own, e.g. :class:`jrnn.LSTMState` ``(h, c)``, not flax's ``(c, h)``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
from flax import nnx

from .cells import Cell
from .scan import unroll

__all__ = ["LinenCell", "NnxCell"]

# flax >= 0.12 marks attributes as static / data explicitly; older nnx infers it
_static = getattr(nnx, "static", lambda value: value)
_data = getattr(nnx, "data", lambda value: value)


def _check_cell(cell) -> None:
    if not isinstance(cell, Cell):
        raise TypeError(f"cell must be a jrnn Cell (jrnn.lstm(H), ...), got {type(cell).__name__}")


class LinenCell(nn.RNNCellBase):
    """A jrnn cell as a ``flax.linen`` RNN cell: ``nn.RNN(LinenCell(jrnn.lstm(64)))``.

    Attributes:
      cell: the jrnn cell.
      vocab_size: ``None`` for float inputs ``x`` ``[..., D]`` (``D`` read from
        the first input); ``V`` when the inputs are int token ids ``[...]``
        (then ``num_feature_axes`` is 0 and ``nn.RNN`` takes ``[B, T]``).

    ``__call__(carry, x)`` is one step: ``carry`` of batch shape ``B...``,
    ``x`` ``[B..., D]`` -> ``(carry, h [B..., H])``. (Each step projects its own
    input; :func:`jrnn.unroll` on the same params projects all steps at once.)

    Example::

        rnn = nn.RNN(LinenCell(jrnn.lstm(64)))       # where nn.LSTMCell(64) was
        variables = rnn.init(key, xs)                 # xs [B, T, D]
        hs = rnn.apply(variables, xs)                 # [B, T, 64]
        params = variables["params"]["cell"]["cell"]  # jrnn.lstm(64)'s params
        jrnn.unroll(jrnn.lstm(64), params, xs, time_major=False)[0]  # == hs
    """

    cell: Cell
    vocab_size: int | None = None

    def __post_init__(self):
        _check_cell(self.cell)
        super().__post_init__()

    @nn.compact
    def __call__(self, carry, x):
        """One step: ``(carry, x [B..., D] | ids [B...]) -> (carry, h [B..., H])``."""
        size = x.shape[-1] if self.vocab_size is None else self.vocab_size
        params = self.param("cell", lambda key: self.cell.init(key, size))
        return self.cell.apply(params, carry, x)

    @nn.nowrap
    def initialize_carry(self, rng: Any, input_shape: tuple[int, ...]):
        """Zeros for inputs of shape ``[B..., D]`` (``[B...]`` for ids); ``rng`` is unused."""
        del rng
        batch_ndim = len(input_shape) - self.num_feature_axes
        return self.cell.initial_carry(tuple(input_shape[:batch_ndim]))

    @property
    def num_feature_axes(self) -> int:
        """1 for float inputs ``[..., D]``, 0 for token ids."""
        return 1 if self.vocab_size is None else 0


class NnxCell(nnx.Module):
    """A jrnn cell as a ``flax.nnx`` module with ``nnx.Param`` leaves.

    Args:
      cell: the jrnn cell.
      input_size: ``D`` (or the vocabulary size for token-id inputs).
      rngs: ``nnx.Rngs``; ``rngs.params()`` seeds ``cell.init``.

    Example::

        m = NnxCell(jrnn.gru(32), D, rngs=nnx.Rngs(0))
        hs, carry = m.unroll(xs)                      # xs [T, B, D] -> hs [T, B, 32]
        carry, h = m(m.initial_carry((B,)), xs[0])    # one step
        grads = nnx.grad(lambda m: loss(m.unroll(xs)[0]))(m)
    """

    def __init__(self, cell: Cell, input_size: int, *, rngs: nnx.Rngs):
        _check_cell(cell)
        self.cell = _static(cell)
        self.params = _data(jax.tree.map(nnx.Param, cell.init(rngs.params(), input_size)))

    def cell_params(self):
        """The plain jrnn params pytree (arrays, not ``nnx.Param``)."""
        is_param = lambda v: isinstance(v, nnx.Param)
        return jax.tree.map(lambda p: p[...], self.params, is_leaf=is_param)

    def initial_carry(self, batch_shape: tuple[int, ...] = ()):
        """The cell's zero carry for batch shape ``B...``."""
        return self.cell.initial_carry(batch_shape)

    def __call__(self, carry, x):
        """One step: ``(carry, x [B..., D] | ids [B...]) -> (carry, h [B..., H])``."""
        return self.cell.apply(self.cell_params(), carry, x)

    def unroll(self, xs, carry=None, **kwargs):
        """:func:`jrnn.unroll` over ``xs`` ``[T, B..., D]`` -> ``(hs [T, B..., H], carry)``.

        ``kwargs`` (``lengths``, ``reverse``, ``time_major``, ...) go to :func:`jrnn.unroll`.
        """
        return unroll(self.cell, self.cell_params(), xs, carry, **kwargs)
