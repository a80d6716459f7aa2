"""Encoder-decoder (Goodfellow 10.4, Sutskever et al. 2014) as ONE cell over one stream.

Unaligned sequence to sequence: a source ``x_1..x_n`` is read by an encoder,
whose final state (the context vector) is the decoder's initial state; the
decoder emits ``y_1..y_m, <eos>``. To train through the one loop and every
estimator unchanged, each example is packed into one time-major stream::

    inputs   x_1 .. x_n   <bos>  y_1 .. y_{m-1}  y_m    <pad> ...
    targets   .  ..  .     y_1   y_2 .. y_m      <eos>   .    ...
    mask      0  ..  0      1     1  ..  1        1      0    ...

Source tokens are ids in ``[0, V)``, decoder tokens are shifted to
``[V, 2V)``: the id itself is the phase flag. The combined cell computes
both sub-steps (the encoder's and the decoder's, each with its own params)
and keeps one per example with ``where``: about twice the cost of one cell's
step, and the price of a stream that ``jrnn.fit``, every BPTT variant, RTRL,
UORO and SnAp-1 consume unchanged. The decoder is fed the previous target
(teacher forcing); greedy and beam-search decoding (:func:`greedy`,
:func:`beam_search`) instead run the encoder with :func:`jrnn.unroll` and
the decoder step in a ``lax.scan`` that feeds back its own choices.

Vocabulary of ``V = num_symbols + 3`` ids: ``PAD = 0``, ``BOS = 1``,
``EOS = 2``; the task's symbols ``1..K`` (0 = padding, as
:func:`jrnn.data.synthetic.reversal` gives them) become ids ``3..K+2``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import scan, validation
from .cells import Cell
from .data.batches import Batch
from .models import Model, _float_dtype

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "Decoded",
    "EncoderDecoder",
    "beam_search",
    "encoder_decoder",
    "greedy",
    "log_prob",
    "stream",
]

PAD, BOS, EOS = 0, 1, 2
_SHIFT = 2  # symbol s (1..K) is id s + 2


class EncoderDecoder(NamedTuple):
    """An encoder-decoder: the trainable :class:`~jrnn.models.Model` and its parts.

    Attributes:
      model: the one-stream model (cell ``encdec-<name>``, dense head over the
        ``V`` output ids, softmax cross-entropy) for :func:`jrnn.fit` and the estimators.
      encoder, decoder: the two cells (same carry structure); their params are
        ``params["cell"]["enc"]`` and ``params["cell"]["dec"]``, each
        initialised for ``V`` input ids.
      num_symbols: ``K``; ``V = K + 3``.
    """

    model: Model
    encoder: Cell
    decoder: Cell
    num_symbols: int

    @property
    def vocab_size(self) -> int:
        """``V = num_symbols + 3`` (PAD, BOS, EOS and the symbols)."""
        return self.num_symbols + 3


def _carry_spec(cell: Cell):
    return jax.tree.map(lambda a: (a.shape, a.dtype), jax.eval_shape(lambda: cell.initial_carry((1,))))


def encoder_decoder(encoder: Cell, num_symbols: int, decoder: Cell | None = None) -> EncoderDecoder:
    """Build an encoder-decoder over ``num_symbols`` task symbols.

    Args:
      encoder: the encoder cell, e.g. ``jrnn.gru(64)``.
      num_symbols: ``K``, the task's symbols ``1..K``.
      decoder: the decoder cell (default: ``encoder``'s functions with their
        own params); its carry must have the encoder's structure and shapes,
        since the encoder's final carry is its initial carry.

    Returns:
      An :class:`EncoderDecoder`. ``model.input_size`` is ``2V`` (the stream's
      ids), ``model.tokens`` and ``model.labels`` are ``True``.

    Example:
      >>> ed = encoder_decoder(jrnn.gru(32), num_symbols=8)
      >>> params = ed.model.init(jax.random.key(0))
    """
    K = validation.check_int("num_symbols", num_symbols)
    decoder = encoder if decoder is None else decoder
    for name, c in (("encoder", encoder), ("decoder", decoder)):
        if not isinstance(c, Cell):
            raise TypeError(f"{name} must be a jrnn Cell, got {type(c).__name__}")
    if _carry_spec(encoder) != _carry_spec(decoder):
        raise ValueError(f"the decoder's carry must match the encoder's (the context vector is its "
                         f"initial state): encoder {encoder.name} H={encoder.hidden_size}, decoder "
                         f"{decoder.name} H={decoder.hidden_size}")
    V = K + 3

    def init(key, input_size):
        # the stream has 2V ids, V per cell (ceil: validation probes other input sizes too)
        ke, kd = jax.random.split(key)
        n = (validation.check_int("input_size", input_size) + 1) // 2
        return {"enc": encoder.init(ke, n), "dec": decoder.init(kd, n)}

    def project(params, ids):
        if not jnp.issubdtype(jnp.result_type(ids), jnp.integer):
            raise TypeError(f"the encoder-decoder stream takes token ids, got dtype "
                            f"{jnp.result_type(ids)}")
        dec = ids >= V
        xe = encoder.project(params["enc"], jnp.where(dec, PAD, ids))
        xd = decoder.project(params["dec"], jnp.where(dec, ids - V, PAD))
        return jnp.concatenate([xe, xd, dec[..., None].astype(xe.dtype)], axis=-1)

    def step(params, carry, xp):
        w = (xp.shape[-1] - 1) // 2  # the two cells' projection widths are equal (same carry)
        flag = xp[..., -1] > 0.5
        ce, he = encoder.step(params["enc"], carry, xp[..., :w])
        cd, hd = decoder.step(params["dec"], carry, xp[..., w:2 * w])
        sel = lambda d, e: jnp.where(flag.reshape(flag.shape + (1,) * (d.ndim - flag.ndim)), d, e)
        new = jax.tree.map(sel, cd, ce)
        return new, jnp.where(flag[..., None], hd, he)

    # the where-select keeps each unit's params acting on that unit only: SnAp-1's pattern holds
    blocks = encoder.unit_blocks if encoder.unit_blocks == decoder.unit_blocks else None
    cell = Cell(init, encoder.initial_carry, project, step, encoder.hidden_size,
                f"encdec-{encoder.name}", unit_blocks=blocks)
    H = encoder.hidden_size

    def model_init(key):
        kc, kh = jax.random.split(key)
        p = cell.init(kc, 2 * V)
        dt = _float_dtype(p)
        s = 1.0 / jnp.sqrt(H)
        return {"cell": p, "head": {"W_hq": jax.random.uniform(kh, (H, V), dt, -s, s),
                                    "b_q": jnp.zeros((V,), dt)}}

    def head(p, h):
        return h @ p["W_hq"] + p["b_q"]

    model = Model(cell, model_init, head, optax.softmax_cross_entropy_with_integer_labels,
                  2 * V, True, True)
    return EncoderDecoder(model, encoder, decoder, K)


def _check_padded(name, seqs, lengths, K, min_len):
    seqs, lengths = np.asarray(seqs), np.asarray(lengths)
    if seqs.ndim != 2 or not np.issubdtype(seqs.dtype, np.integer):
        raise ValueError(f"{name} must be int symbols [T, B] (time-major), got {seqs.dtype} "
                         f"shape {seqs.shape}")
    B = seqs.shape[1]
    if lengths.shape != (B,) or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"{name} lengths must be ints [B] = ({B},), got {lengths.dtype} "
                         f"shape {lengths.shape}")
    if B and (lengths.min() < min_len or lengths.max() > seqs.shape[0]):
        raise ValueError(f"{name} lengths must lie in [{min_len}, {seqs.shape[0]}], got "
                         f"{lengths.min()}..{lengths.max()}")
    t = np.arange(seqs.shape[0])[:, None]
    real = t < lengths
    if np.any(real & ((seqs < 1) | (seqs > K))):
        raise ValueError(f"{name} symbols must lie in [1, {K}] within each length")
    return seqs, lengths


def stream(ed: EncoderDecoder, sources, source_lengths, targets, target_lengths,
           num_steps: int | None = None) -> Batch:
    """Pack (source, target) pairs into the encoder-decoder's time-major :class:`Batch`.

    Args:
      ed: the encoder-decoder.
      sources: int symbols ``[S, B]`` in ``[1, K]``, padded (anything) after each length.
      source_lengths: ``[B]`` in ``[1, S]``.
      targets: int symbols ``[L, B]``, padded after each length.
      target_lengths: ``[B]`` in ``[0, L]``.
      num_steps: pad the stream to this ``T`` (one shape for every batch: one
        compile); default the shortest that fits, ``max(n_b + m_b + 1)``.

    Returns:
      ``Batch(inputs [T, B], targets [T, B], mask [T, B])``: per example the source, ``<bos>`` and the
      target (decoder ids shifted by ``V``), then padding; the mask is 1 on the
      ``m_b + 1`` positions whose targets are ``y_1..y_m, <eos>``.
    """
    K, V = ed.num_symbols, ed.vocab_size
    src, n = _check_padded("sources", sources, source_lengths, K, 1)
    tgt, m = _check_padded("targets", targets, target_lengths, K, 0)
    B = src.shape[1]
    if tgt.shape[1] != B:
        raise ValueError(f"sources have B={B} but targets have B={tgt.shape[1]}")
    T = int((n + m + 1).max())
    if num_steps is not None:
        if validation.check_int("num_steps", num_steps) < T:
            raise ValueError(f"num_steps={num_steps} is shorter than the longest packed pair ({T})")
        T = int(num_steps)
    inputs = np.full((T, B), V + PAD, np.int32)
    out = np.full((T, B), PAD, np.int32)
    mask = np.zeros((T, B), np.float32)
    for b in range(B):
        nb, mb = int(n[b]), int(m[b])
        y = tgt[:mb, b] + _SHIFT
        inputs[:nb, b] = src[:nb, b] + _SHIFT
        inputs[nb:nb + mb + 1, b] = V + np.concatenate([[BOS], y])
        out[nb:nb + mb + 1, b] = np.concatenate([y, [EOS]])
        mask[nb:nb + mb + 1, b] = 1.0
    return Batch(inputs, out, mask)


class Decoded(NamedTuple):
    """Decoded sequences, time-major.

    Attributes:
      symbols: int ``[max_len, B]``: the emitted symbols in ``[1, K]``, 0 after each length.
      lengths: int ``[B]``: symbols before ``<eos>`` (``max_len`` if none was emitted).
      log_prob: float ``[B]``: the sequence's log-probability under the model
        (its ``<eos>`` included when emitted).
      ended: bool ``[B]``: whether ``<eos>`` was emitted within ``max_len`` steps.
    """

    symbols: jax.Array
    lengths: jax.Array
    log_prob: jax.Array
    ended: jax.Array


def _encode(ed: EncoderDecoder, params, sources, source_lengths):
    src, n = _check_padded("sources", sources, source_lengths, ed.num_symbols, 1)
    ids = jnp.asarray(np.where(np.arange(src.shape[0])[:, None] < n, src + _SHIFT, PAD), jnp.int32)
    _, carry = scan.unroll(ed.encoder, params["cell"]["enc"], ids, lengths=jnp.asarray(n))
    return carry  # the context vector: each source's state at its own last step


def _log_probs(ed, params, carry, ids):
    """One decoder step: ``(carry', log p(. | prefix) [..., V])``; PAD and BOS can't be chosen."""
    carry, h = ed.decoder.apply(params["cell"]["dec"], carry, ids)
    logp = jax.nn.log_softmax(ed.model.head(params["head"], h), axis=-1)
    banned = (jnp.arange(logp.shape[-1]) == PAD) | (jnp.arange(logp.shape[-1]) == BOS)
    return carry, jnp.where(banned, -jnp.inf, logp)


def _finish(ids, score):
    """Model ids ``[B, L]`` -> :class:`Decoded` (time-major symbols)."""
    is_eos = ids == EOS
    ended = is_eos.any(-1)
    lengths = jnp.where(ended, jnp.argmax(is_eos, -1), ids.shape[-1])
    real = jnp.arange(ids.shape[-1]) < lengths[:, None]
    symbols = jnp.where(real, ids - _SHIFT, 0)
    return Decoded(symbols.T.astype(jnp.int32), lengths.astype(jnp.int32), score, ended)


def _check_max_len(max_len):
    return validation.check_int("max_len", max_len)


def greedy(ed: EncoderDecoder, params, sources, source_lengths, max_len: int) -> Decoded:
    """Greedy decoding: at each step the most probable next id, fed back.

    Args:
      ed, params: the encoder-decoder and its params.
      sources: int symbols ``[S, B]``; source_lengths: ``[B]`` in ``[1, S]``.
      max_len: the most ids to emit (``<eos>`` counts as one).

    Returns:
      :class:`Decoded`.
    """
    L = _check_max_len(max_len)
    carry = _encode(ed, params, sources, source_lengths)
    return _greedy(ed, params, carry, L)


def _greedy(ed, params, carry, L):
    B = jax.tree.leaves(carry)[0].shape[0]

    def body(state, _):
        carry, prev, done, score = state
        carry, logp = _log_probs(ed, params, carry, prev)
        tok = jnp.where(done, PAD, jnp.argmax(logp, -1))
        score = score + jnp.where(done, 0.0, jnp.take_along_axis(logp, tok[:, None], -1)[:, 0])
        return (carry, tok, done | (tok == EOS), score), tok

    init = (carry, jnp.full((B,), BOS, jnp.int32), jnp.zeros((B,), bool), jnp.zeros((B,)))
    (_, _, _, score), toks = jax.lax.scan(body, init, None, length=L)
    return _finish(toks.T, score)


def beam_search(ed: EncoderDecoder, params, sources, source_lengths, max_len: int,
                beam: int) -> Decoded:
    """Beam search: keep the ``beam`` most probable prefixes at each step; return the best.

    Scores are plain log-probabilities (no length normalisation). A prefix that
    has emitted ``<eos>`` is finished: it is extended by padding at no cost, so
    it competes with the live ones until the end. With ``beam`` at least the
    number of prefixes (``(K + 1)^(max_len - 1)``) nothing is pruned and the
    result is the most probable sequence of at most ``max_len`` ids. ``beam=1``
    is greedy decoding.

    Args:
      ed, params: the encoder-decoder and its params.
      sources: int symbols ``[S, B]``; source_lengths: ``[B]`` in ``[1, S]``.
      max_len: the most ids to emit (``<eos>`` counts as one).
      beam: the beam width ``k >= 1``.

    Returns:
      :class:`Decoded` (the best hypothesis per example).

    References: Graves 2012, "Sequence transduction with recurrent neural
      networks"; Sutskever et al. 2014, "Sequence to sequence learning with neural networks".
    """
    L, k = _check_max_len(max_len), validation.check_int("beam", beam)
    carry = _encode(ed, params, sources, source_lengths)
    B = jax.tree.leaves(carry)[0].shape[0]
    V = ed.vocab_size
    carry = jax.tree.map(lambda a: jnp.repeat(a[:, None], k, axis=1), carry)  # [B, k, ...]
    neg = -jnp.inf

    def body(state, t):
        carry, prev, done, score, hist = state
        carry, logp = _log_probs(ed, params, carry, prev)  # [B, k, V]
        pad_only = jnp.where(jnp.arange(V) == PAD, 0.0, neg)
        logp = jnp.where(done[..., None], pad_only, logp)
        cand = (score[..., None] + logp).reshape(B, k * V)
        score, idx = jax.lax.top_k(cand, k)  # sorted, best first
        parent, tok = idx // V, (idx % V).astype(jnp.int32)
        pick = lambda a: jnp.take_along_axis(a, parent.reshape((B, k) + (1,) * (a.ndim - 2)), 1)
        carry = jax.tree.map(pick, carry)
        hist = pick(hist).at[:, :, t].set(tok)
        done = pick(done) | (tok == EOS)
        return (carry, tok, done, score, hist), None

    score0 = jnp.where(jnp.arange(k) == 0, 0.0, neg) * jnp.ones((B, 1))  # one live beam at start
    init = (carry, jnp.full((B, k), BOS, jnp.int32), jnp.zeros((B, k), bool), score0,
            jnp.full((B, k, L), PAD, jnp.int32))
    (_, _, _, score, hist), _ = jax.lax.scan(body, init, jnp.arange(L))
    return _finish(hist[:, 0], score[:, 0])


def log_prob(ed: EncoderDecoder, params, sources, source_lengths, ids) -> jax.Array:
    """``log p(ids | source)`` of given model-id sequences, by feeding them to the decoder.

    Args:
      ids: int ``[L, B]`` model ids (symbols ``+ 2``, ``EOS``), PAD after an ``<eos>``.

    Returns:
      ``[B]``: the sum of the per-step log-probabilities up to and including
      the first ``<eos>`` (over all ``L`` steps if there is none).
    """
    ids = jnp.asarray(ids, jnp.int32)
    carry = _encode(ed, params, sources, source_lengths)
    prev = jnp.concatenate([jnp.full((1, ids.shape[1]), BOS, jnp.int32), ids[:-1]])

    def body(state, inp):
        carry, done, total = state
        p, y = inp
        carry, logp = _log_probs(ed, params, carry, p)
        lp = jnp.take_along_axis(logp, y[:, None], -1)[:, 0]
        return (carry, done | (y == EOS), total + jnp.where(done, 0.0, lp)), None

    B = ids.shape[1]
    (_, _, total), _ = jax.lax.scan(body, (carry, jnp.zeros((B,), bool), jnp.zeros((B,))),
                                    (prev, ids))
    return total
