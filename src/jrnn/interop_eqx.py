"""Equinox adapter: any jrnn :class:`~jrnn.cells.Cell` as an ``eqx.Module``.

Equinox is optional: ``pip install 'jrnn[equinox]'``. :class:`EqxCell` holds
the cell (a static field) and its params pytree (a field, 1:1 the cell's own,
initialised by ``cell.init``), so ``eqx.filter_grad`` / ``eqx.partition`` see
the params' arrays as its leaves.
"""

from __future__ import annotations

try:
    import equinox as eqx
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("jrnn.interop_eqx needs equinox, an optional extra: "
                      "pip install 'jrnn[equinox]'") from e

from typing import Any

from .cells import Cell
from .scan import unroll

__all__ = ["EqxCell"]


class EqxCell(eqx.Module):
    """A jrnn cell as an Equinox module: ``EqxCell(jrnn.gru(64), D, key=key)``.

    Args:
      cell: the jrnn cell.
      input_size: ``D`` (or the vocabulary size for token-id inputs).
      key: a PRNG key for ``cell.init``.
      params: optional ready params (e.g. from :func:`jrnn.from_torch`);
        then ``key`` is not used.

    Attributes:
      cell: the cell (static).
      params: the cell's params pytree.

    Example::

        m = EqxCell(jrnn.lstm(32), D, key=jax.random.PRNGKey(0))
        hs, carry = m.unroll(xs)                      # xs [T, B, D] -> hs [T, B, 32]
        carry, h = m(m.initial_carry((B,)), xs[0])    # one step
        grads = eqx.filter_grad(lambda m: loss(m.unroll(xs)[0]))(m)  # grads.params
    """

    params: Any
    cell: Cell = eqx.field(static=True)

    def __init__(self, cell: Cell, input_size: int | None = None, *, key=None, params=None):
        if not isinstance(cell, Cell):
            raise TypeError("cell must be a jrnn Cell (jrnn.lstm(H), ...), got "
                            f"{type(cell).__name__}")
        if params is None and (key is None or input_size is None):
            raise ValueError("EqxCell needs input_size and key (or ready params=)")
        self.cell = cell
        self.params = cell.init(key, input_size) if params is None else params

    def initial_carry(self, batch_shape: tuple[int, ...] = ()):
        """The cell's zero carry for batch shape ``B...`` (``()``: unbatched)."""
        return self.cell.initial_carry(batch_shape)

    def __call__(self, carry, x):
        """One step: ``(carry, x [B..., D] | ids [B...]) -> (carry, h [B..., H])``."""
        return self.cell.apply(self.params, carry, x)

    def unroll(self, xs, carry=None, **kwargs):
        """:func:`jrnn.unroll` over ``xs`` ``[T, B..., D]`` -> ``(hs [T, B..., H], carry)``.

        ``kwargs`` (``lengths``, ``reverse``, ``time_major``, ...) go to :func:`jrnn.unroll`.
        """
        return unroll(self.cell, self.params, xs, carry, **kwargs)
