"""Text generation (d2l 8.5.4 ``predict_ch8``): warm up on a prefix, then continue."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import validation
from .models import Model

__all__ = ["predict"]


def predict(model: Model, params, prefix_ids, num_preds: int, *, key=None,
            temperature: float = 0.0):
    """Continue a token sequence.

    The prefix is read with the model's cell (warm-up: its outputs are not
    used, only the state it leaves); then each next token is the argmax of the
    logits (``temperature=0``, greedy, as d2l) or a sample from
    ``softmax(logits / temperature)`` drawn with ``key``.

    Args:
      model: a token model (e.g. :func:`~jrnn.models.language_model`).
      params: its params.
      prefix_ids: int ``[P]`` with ``P >= 1`` token ids in ``[0, V)`` (NumPy or
        ``jax.Array``; checked, as JAX would clamp or wrap them in the gather).
      num_preds: how many tokens to generate (>= 0).
      key: PRNG key, required when ``temperature > 0``.
      temperature: 0 for greedy decoding, > 0 to sample.

    Returns:
      int ``np.ndarray`` ``[P + num_preds]``: the prefix and its continuation.
    """
    if not model.tokens:
        raise ValueError("predict needs a token model (e.g. language_model), got a model on "
                         f"float inputs of width {model.input_size}")
    prefix = np.asarray(prefix_ids)
    if prefix.ndim != 1 or prefix.size < 1 or not np.issubdtype(prefix.dtype, np.integer):
        raise ValueError(f"prefix_ids must be a non-empty 1-D int array, got shape "
                         f"{prefix.shape} dtype {prefix.dtype}")
    validation.check_ids("prefix_ids", prefix, model.input_size, axes=("t",))
    validation.check_model_params(model, params)
    num_preds = validation.check_int("num_preds", num_preds, 0)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if temperature > 0 and key is None:
        raise ValueError("sampling (temperature > 0) needs a key")
    key = jax.random.key(0) if key is None else key
    out = _generate(model, int(num_preds), float(temperature))(params, jnp.asarray(prefix), key)
    return np.concatenate([prefix, np.asarray(out)])


@functools.lru_cache(maxsize=32)  # one compiled generator per (model, length, temperature)
def _generate(model, n, temperature):
    cell = model.cell

    def run(params, prefix, key):
        pc, ph = params["cell"], params["head"]
        carry = cell.initial_carry(())
        # warm-up on all but the last prefix token: one scan
        carry, _ = jax.lax.scan(lambda c, x: cell.apply(pc, c, x), carry, prefix[:-1])

        def body(state, k):
            carry, tok = state
            carry, h = cell.apply(pc, carry, tok)
            logits = model.head(ph, h)
            nxt = (jnp.argmax(logits) if temperature == 0
                   else jax.random.categorical(k, logits / temperature))
            return (carry, nxt.astype(prefix.dtype)), nxt

        _, toks = jax.lax.scan(body, (carry, prefix[-1]), jax.random.split(key, n))
        return toks

    return jax.jit(run)
