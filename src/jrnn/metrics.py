"""Metrics: perplexity and friends (d2l 8.4.4), and the training loop's metrics window."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["perplexity", "bits_per_char", "accuracy", "mean_ci", "MetricsWindow", "NonFiniteError"]


def perplexity(mean_nll: float) -> float:
    """``exp`` of the mean negative log-likelihood per token (nats).

    1 is a perfect model; the vocabulary size is a uniform guess.
    """
    return math.exp(min(float(mean_nll), 700.0))


def bits_per_char(mean_nll: float) -> float:
    """Mean negative log-likelihood in bits: ``nll / ln 2``."""
    return float(mean_nll) / math.log(2.0)


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval, across seeds.

    ``mean +- half`` covers the true mean with probability ``confidence`` for
    independent normal draws (``n - 1`` degrees of freedom; scipy, which jax
    depends on, gives the quantile). One value has no interval: ``half`` is NaN.

    Args:
      values: ``[n]`` one number per seed (finite).
      confidence: in ``(0, 1)``.
    """
    from scipy import stats

    x = np.asarray(values, np.float64).ravel()
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"mean_ci needs at least one finite value, got {values!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if x.size == 1:
        return float(x[0]), float("nan")
    t = stats.t.ppf(0.5 + confidence / 2.0, x.size - 1)
    return float(x.mean()), float(t * x.std(ddof=1) / math.sqrt(x.size))


def accuracy(logits, labels, mask=None):
    """Fraction of positions whose argmax equals the label.

    Args:
      logits: ``[..., V]``.
      labels: ``[...]`` ints.
      mask: optional ``[...]`` weights.
    """
    hit = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    if mask is None:
        return hit.mean()
    return (hit * mask).sum() / jnp.maximum(mask.sum(), 1.0)


# ----------------------------------------------------------------------------
# the training loop's metrics window


class NonFiniteError(FloatingPointError):
    """Training met a NaN/Inf loss or gradient and was asked to stop.

    Attributes:
      step: the global step (batch index in the run) of the non-finite update.
      checkpoint_step: the step of the last checkpoint written before it, or ``None``.
    """

    def __init__(self, message: str, step: int | None = None, checkpoint_step: int | None = None):
        super().__init__(message)
        self.step, self.checkpoint_step = step, checkpoint_step


class MetricsWindow:
    """The train step's device metrics since the last record: fetched in one go,
    averaged, and checked against the non-finite policy.

    Metrics are device scalars (one model) or ``[S]`` vectors (``S`` vmapped
    seeds); sums, counts and skip counters keep that shape, and records hold
    floats or lists of ``S`` floats.

    Args:
      on_nonfinite: ``"stop"``: :meth:`drain` raises :class:`NonFiniteError` at
        the first non-finite step (the train step did not apply it);
        ``"skip"``: count it and raise after ``max_skips`` in a row (per seed).
      max_skips: see ``on_nonfinite``.
    """

    def __init__(self, on_nonfinite: str = "stop", max_skips: int = 10):
        if on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"on_nonfinite must be 'stop' or 'skip', got {on_nonfinite!r}")
        self.on_nonfinite, self.max_skips = on_nonfinite, max_skips
        self.pending: list = []  # (step, device metrics), not fetched yet
        self.tokens = 0
        self._sums = None  # loss, grad_norm, n, skipped (this window); skips in a row, skipped in all

    def add(self, step: int, metrics: dict, tokens: int) -> None:
        """Queue one step's device metrics (no device sync)."""
        self.pending.append((step, metrics))
        self.tokens += tokens

    def _init(self, shape):
        z = lambda dt=np.float64: np.zeros(shape, dt)
        self._sums = {"loss": z(), "grad_norm": z(), "n": z(np.int64), "skipped": z(np.int64),
                      "in_a_row": z(np.int64), "skipped_total": z(np.int64)}

    def drain(self, checkpoint_step: int | None = None, where: str = "") -> None:
        """Fetch the queued metrics, enforce the policy, add them to the window.

        Args:
          checkpoint_step, where: the last checkpoint's step and directory, named
            in the error (``None``/``""``: there is none).
        """
        fetched, self.pending = jax.device_get(self.pending), []
        for step, m in fetched:
            finite = np.asarray(m["finite"], bool)
            if self._sums is None:
                self._init(finite.shape)
            s = self._sums
            tail = (f"; the last good checkpoint (step {checkpoint_step}) is in {where}"
                    if checkpoint_step is not None else "")
            seed = "" if finite.ndim == 0 else f" (seeds {np.flatnonzero(~finite).tolist()})"
            if not finite.all() and self.on_nonfinite == "stop":
                bad = np.asarray(m["loss"])[~finite].ravel()[0], np.asarray(m["grad_norm"])[~finite].ravel()[0]
                raise NonFiniteError(
                    f"non-finite loss or gradient at step {step}{seed} (loss={float(bad[0])}, "
                    f"grad_norm={float(bad[1])}); the update was not applied{tail}",
                    step=step, checkpoint_step=checkpoint_step)
            s["in_a_row"] = np.where(finite, 0, s["in_a_row"] + 1)
            s["skipped"] += ~finite
            s["skipped_total"] += ~finite
            if (s["in_a_row"] >= self.max_skips).any():
                raise NonFiniteError(
                    f"{int(s['in_a_row'].max())} non-finite steps in a row, the last at step {step}"
                    f"{seed}; their updates were skipped{tail}", step=step, checkpoint_step=checkpoint_step)
            s["loss"] += np.where(finite, m["loss"], 0.0)
            s["grad_norm"] += np.where(finite, m["grad_norm"], 0.0)
            s["n"] += finite

    def record(self) -> dict | None:
        """Averages since the last record (then reset), or ``None`` if the window is empty.

        Returns ``{"train_loss", "train_ppl", "grad_norm", "skipped"}`` (the first
        three only if some step was finite; ``skipped`` counts the whole run)
        plus ``"tokens"`` trained on in the window.
        """
        self.drain()
        s = self._sums
        if s is None or not (s["n"].any() or s["skipped"].any()):
            return None
        out = {}
        if s["n"].all():
            loss = s["loss"] / s["n"]
            out["train_loss"] = loss.tolist()
            out["train_ppl"] = np.vectorize(perplexity, otypes=[float])(loss).tolist()
            out["grad_norm"] = (s["grad_norm"] / s["n"]).tolist()
        out["skipped"] = s["skipped_total"].tolist()
        out["tokens"] = self.tokens
        for k in ("loss", "grad_norm", "n", "skipped"):
            s[k][...] = 0
        self.tokens = 0
        return out

    def state(self) -> dict:
        """JSON-ready partial sums and counters (saved with a checkpoint; tokens excluded)."""
        return {} if self._sums is None else {k: v.tolist() for k, v in self._sums.items()}

    def load(self, state: dict) -> None:
        """Continue from :meth:`state` (a resumed run)."""
        self.pending, self.tokens = [], 0
        self._sums = None if not state else {
            k: np.asarray(v, np.int64 if k not in ("loss", "grad_norm") else np.float64)
            for k, v in state.items()}
