"""Language-model metrics (d2l 8.4.4)."""

from __future__ import annotations

import math

__all__ = ["perplexity", "bits_per_char", "accuracy"]


def perplexity(mean_nll: float) -> float:
    """``exp`` of the mean negative log-likelihood per token (nats).

    1 is a perfect model; the vocabulary size is a uniform guess.
    """
    return math.exp(min(float(mean_nll), 700.0))


def bits_per_char(mean_nll: float) -> float:
    """Mean negative log-likelihood in bits: ``nll / ln 2``."""
    return float(mean_nll) / math.log(2.0)


def accuracy(logits, labels, mask=None):
    """Fraction of positions whose argmax equals the label.

    Args:
      logits: ``[..., V]``.
      labels: ``[...]`` ints.
      mask: optional ``[...]`` weights.
    """
    import jax.numpy as jnp

    hit = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    if mask is None:
        return hit.mean()
    return (hit * mask).sum() / jnp.maximum(mask.sum(), 1.0)
