"""Local online rules for the leaky vanilla RNN: RFLO and e-prop.

Both keep, for every recurrent weight, an eligibility trace of the size of
the weight itself, instead of RTRL's influence ``M = d h / d theta`` ``[H, P]``.
For the leaky cell (:func:`jrnn.leaky` with fixed time constants; ``rnn`` /
``rnn-relu`` are the case ``tau = 1``)

    u_t = x_t W_xh + h_{t-1} W_hh + b_h,   h_t = (1 - a) h_{t-1} + a phi(u_t)

RTRL's influence obeys ``M_t = J_t M_{t-1} + M_imm_t`` with
``J_t = diag(1 - a) + diag(a phi'(u_t)) W_hh^T`` and the immediate part
``M_imm_t[i, (j, i)] = a_i phi'(u_{t,i}) xhat_j``, ``xhat = [x_t; h_{t-1}; 1]``
(unit ``i`` moves only through column ``i`` of ``W_xh``, ``W_hh``, ``b_h``).
In the framework of Marschall, Cho & Savin 2020 both rules keep only the
entries of ``M`` on that pattern, ``e[j, i] ~ d h_i / d W[j, i]``, and differ
in which part of ``J_t`` they keep and in the learning signal ``q_t`` that
turns the trace into a gradient, ``dW[j, i] = sum_t w_t q_{t,i} e_t[j, i]``:

- RFLO (Murray 2019): ``e_t = (1 - a) e_{t-1} + a phi'(u_t) xhat`` (only the
  leak of ``J``), ``q_t = B e_out_t`` with a FIXED RANDOM feedback matrix
  ``B`` ``[H, O]`` in place of the readout ``W_hq`` (``e_out = dl_t/d out``,
  the output error; the true signal is ``W_hq e_out``).
- e-prop (Bellec et al. 2020): ``e_t = diag(J_t) e_{t-1} + a phi'(u_t) xhat``
  with ``diag(J_t)_i = 1 - a_i + a_i phi'(u_{t,i}) W_hh[i, i]`` (the
  diagonal of the Jacobian, self-connection included), and the exact,
  symmetric learning signal ``q_t = dl_t / dh_t`` (through the readout).

The readout (head) always gets its exact gradient, as with every jrnn
estimator. The traces and the cell state are carried across batches
(``train_step(carry_over=True)``), like RTRL's influence; ``Batch.resets``
restart the state and zero the traces of the examples they mark (nothing
before a reset then reaches the gradient), so a packed stream gives what its
episodes give alone. Cost per step and example: ``O(H (D + H))``, the
forward pass's order (no Jacobian is formed); memory the size of the cell's
weights per example.

References: Marschall, Cho & Savin 2020, "A unified framework of online
  learning algorithms for training recurrent neural networks" (JMLR 21);
  the authors' code, github.com/omarschall/vanilla-rtrl,
  ``learning_algorithms/RFLO.py`` (``B = (1 - alpha) B + alpha phi'(h) a_hat``,
  ``q_i B_ij``), whose update this module's RFLO follows (tested against a
  NumPy loop of the same equations).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import validation
from ..models import Model, loss_weights, refuse_whole_sequence
from .base import GradientEstimator, register

__all__ = ["rflo", "eprop", "LocalCarry"]

_PARAMS = {"W_xh", "W_hh", "b_h"}


class LocalCarry(NamedTuple):
    """Carry of :func:`rflo` and :func:`eprop`.

    Attributes:
      state: the cell's carry ``h [B, H]``.
      trace: the eligibility traces, one per cell weight, with a leading
        batch axis: ``{"W_xh": [B, D, H], "W_hh": [B, H, H], "b_h": [B, H]}``
        (``D`` the input width, or the vocabulary size for token inputs).
      feedback: RFLO's fixed random feedback matrix ``[H, O]`` (drawn once in
        ``init_carry``, never trained); ``None`` for e-prop.
    """

    state: Any
    trace: Any
    feedback: Any = None


def _check_cell(name: str, model: Model, params) -> tuple[int, int]:
    """``(D, H)`` for a leaky vanilla RNN, or a ``ValueError`` saying what is missing."""
    cell = model.cell
    fast, H = cell.fast, cell.hidden_size
    p = params.get("cell") if isinstance(params, dict) else None
    why = None
    if cell.layers is not None:
        why = "a stack (the rule is for one recurrent layer)"
    elif fast is None:
        why = ("no fast recurrence (a leaky cell with learned time constants: use "
               "jrnn.leaky(H, tau, learn_tau=False))")
    elif not fast.additive or fast.weight != "W_hh" or cell.unit_blocks != 1:
        why = "its step is not phi(x W_xh + h W_hh + b_h) unit by unit"
    elif not isinstance(p, dict) or set(p) != _PARAMS:
        why = (f"params {sorted(p) if isinstance(p, dict) else type(p).__name__}, expected "
               f"exactly {sorted(_PARAMS)}")
    elif (np.shape(p["W_hh"]) != (H, H) or np.shape(p["b_h"]) != (H,)
          or np.ndim(p["W_xh"]) != 2 or np.shape(p["W_xh"])[1] != H):
        why = (f"W_xh {np.shape(p['W_xh'])}, W_hh {np.shape(p['W_hh'])}, b_h "
               f"{np.shape(p['b_h'])} for H={H}")
    elif np.shape(jax.eval_shape(cell.initial_carry, ())) != (H,):
        why = "its carry is not h [H]"
    if why is None and cell.name not in ("rnn", "rnn-relu", "leaky"):
        why = "not one of rnn, rnn-relu, leaky"
    if why is not None:
        raise ValueError(f"{name} needs the leaky vanilla RNN (jrnn.leaky(H, tau, "
                         f"learn_tau=False), or rnn / rnn-relu: tau = 1), got cell "
                         f"{cell.name!r}: {why}")
    return int(np.shape(p["W_xh"])[0]), H


def _local(name: str, diagonal: bool, seed: int | None, feedback_std: float | None):
    """The estimator of one rule: ``diagonal`` keeps ``diag(J)`` (e-prop) instead of the
    leak alone; ``seed`` (RFLO) draws the random feedback, ``None`` uses the readout."""

    def init_carry(model, params, batch_shape):
        batch_shape = tuple(batch_shape)
        if len(batch_shape) != 1:
            raise ValueError(f"{name} takes batch_shape (B,), got {batch_shape}")
        D, H = _check_cell(name, model, params)
        p = params["cell"]
        dt = jnp.result_type(p["W_hh"])
        trace = {k: jnp.zeros(batch_shape + jnp.shape(v), dt) for k, v in p.items()}
        fb = None
        if seed is not None:
            W = params["head"].get("W_hq") if isinstance(params.get("head"), dict) else None
            if W is None or np.ndim(W) != 2 or np.shape(W)[0] != H:
                raise ValueError(f"{name} needs a dense readout W_hq [H={H}, O] in "
                                 f"params['head'] (jrnn.regressor / classifier / "
                                 f"language_model), got {jax.tree.map(np.shape, params.get('head'))}")
            O = np.shape(W)[1]
            std = 1.0 / np.sqrt(O) if feedback_std is None else feedback_std
            fb = std * jax.random.normal(jax.random.key(seed), (H, O), dt)
        return LocalCarry(model.cell.initial_carry(batch_shape), trace, fb)

    def value_and_grad(model, params, carry, batch, key):
        refuse_whole_sequence(model, name)
        if not isinstance(carry, LocalCarry):
            raise TypeError(f"{name} needs the LocalCarry made by its init_carry, "
                            f"got {type(carry).__name__}")
        validation.check_batch(model, batch)
        D, H = _check_cell(name, model, params)
        validation.check_model_params(model, params)
        T, B = jnp.shape(batch.inputs)[:2]
        validation.check_carry(model.cell, carry.state, (B,), "carry.state")
        p, head = params["cell"], params["head"]
        want = {k: (B,) + tuple(jnp.shape(v)) for k, v in p.items()}
        got = jax.tree.map(jnp.shape, carry.trace) if isinstance(carry.trace, dict) else None
        if got != want:
            raise ValueError(f"{name}: carry.trace has shapes {got}, expected {want}")
        if seed is not None:
            W = head.get("W_hq") if isinstance(head, dict) else None
            if W is None or carry.feedback is None or jnp.shape(carry.feedback) != jnp.shape(W):
                raise ValueError(f"{name}: carry.feedback {jnp.shape(carry.feedback) if carry.feedback is not None else None} "
                                 f"must have the readout W_hq's shape "
                                 f"{None if W is None else jnp.shape(W)}")
        elif carry.feedback is not None:
            raise ValueError(f"{name} uses the readout itself, got carry.feedback")

        fast = model.cell.fast
        dt = jnp.result_type(p["W_hh"])
        w = loss_weights(batch)  # [T, B], sums to one
        xps = model.cell.project(p, batch.inputs)  # [T, B, H], all steps at once
        xs = (jax.nn.one_hot(batch.inputs, D, dtype=dt) if model.tokens
              else jnp.asarray(batch.inputs, dt))  # [T, B, D]: xhat's input part
        resets = (jnp.zeros((T, B), bool) if batch.resets is None
                  else jnp.asarray(batch.resets, bool))
        h0 = model.cell.initial_carry((B,))
        self_w = jnp.diagonal(p["W_hh"])  # [H]: W_hh[i, i]

        def out_loss(hp, h, y, wt):  # the weighted loss of one step, from its outputs
            out = model.head(hp, h)
            return jnp.sum(wt * model.loss(out, y)), out

        def body(acc, inp):
            h, tr, g, g_head, loss = acc
            xp, x, y, wt, r = inp
            h = jnp.where(r[:, None], h0, h)  # an episode starts: fresh state, zero trace
            tr = jax.tree.map(lambda a: jnp.where(r.reshape((B,) + (1,) * (a.ndim - 1)), 0, a), tr)
            h_new, _, res = fast.forward(p, h, xp, h @ p["W_hh"])
            k = fast.coefficients(p, h, h_new, res)  # [B, H]: d h_t / d u_t
            # the leak, d h_t / d h_{t-1} with u held: (1 - a) for leaky, 0 for rnn
            leak = fast.tangent(k, jnp.ones_like(h), jnp.zeros_like(h), jnp.zeros_like(h))[0]
            decay = leak + k * self_w if diagonal else leak  # [B, H]
            tr = {"W_xh": decay[:, None] * tr["W_xh"] + x[:, :, None] * k[:, None],
                  "W_hh": decay[:, None] * tr["W_hh"] + h[:, :, None] * k[:, None],
                  "b_h": decay * tr["b_h"] + k}
            (l, out), g_hp = jax.value_and_grad(out_loss, has_aux=True)(head, h_new, y, wt)
            if seed is None:  # e-prop: the true learning signal dl_t / dh_t
                q = jax.grad(lambda hh: out_loss(head, hh, y, wt)[0])(h_new)
            else:  # RFLO: the output error sent back through the fixed random matrix
                e_out = jax.grad(lambda o: jnp.sum(wt * model.loss(o, y)))(out)  # [B, O]
                q = e_out @ carry.feedback.T  # [B, H]
            g = {"W_xh": g["W_xh"] + jnp.einsum("bi,bji->ji", q, tr["W_xh"]),
                 "W_hh": g["W_hh"] + jnp.einsum("bi,bji->ji", q, tr["W_hh"]),
                 "b_h": g["b_h"] + jnp.einsum("bi,bi->i", q, tr["b_h"])}
            g_head = jax.tree.map(jnp.add, g_head, g_hp)
            return (h_new, tr, g, g_head, loss + l), None

        zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)
        init = (carry.state, carry.trace, zeros(p), zeros(head),
                jnp.zeros((), jnp.result_type(w.dtype, dt)))
        (h, tr, g, g_head, loss), _ = jax.lax.scan(
            body, init, (xps, xs, batch.targets, w, resets))
        new = LocalCarry(jax.lax.stop_gradient(h), jax.lax.stop_gradient(tr), carry.feedback)
        return loss, {"cell": g, "head": g_head}, new, {}

    return GradientEstimator(init_carry, value_and_grad, name)


def rflo(seed: int = 0, feedback_std: float | None = None) -> GradientEstimator:
    """Random-feedback local online learning (Murray 2019) for the leaky vanilla RNN.

    Trace ``e_t[j, i] = (1 - a_i) e_{t-1}[j, i] + a_i phi'(u_{t,i}) xhat_j``,
    ``xhat = [x_t; h_{t-1}; 1]`` (for ``W_xh``, ``W_hh``, ``b_h``), and
    gradient ``sum_t w_t q_{t,i} e_t[j, i]`` with the learning signal
    ``q_t = B e_out_t``: the output error ``e_out = dl_t / d out`` ``[O]``
    sent back through a fixed random matrix ``B`` ``[H, O]`` (feedback
    alignment) instead of the readout ``W_hq`` (module docstring).

    ``B ~ N(0, feedback_std^2)`` (default ``1 / O``, the variance of the
    authors' code) is drawn in ``init_carry`` from ``jax.random.key(seed)``,
    kept in :class:`LocalCarry` ``.feedback`` and never trained, so it is the
    same matrix for every fresh carry (``carry_over=False`` too) and every run
    of a sweep; replace it with ``carry._replace(feedback=...)``.

    Cost: memory ``B (D + H + 1) H`` (the traces) ``+ H O``; time
    ``O(B H (D + H))`` per step, the forward pass's order. Bias: it drops all
    of ``J_t`` but the leak (for ``rnn``, ``tau = 1``, no memory at all: the
    immediate gradient) and the feedback is not the readout, so its estimate
    is biased, even in sign; it equals RTRL when ``W_hh = 0`` and
    ``B = W_hq`` (tested). Only the leaky vanilla RNN (``rnn``, ``rnn-relu``,
    ``leaky(learn_tau=False)``) with a dense readout ``W_hq``: other cells get
    a ``ValueError``.

    Args:
      seed: the seed of the feedback matrix.
      feedback_std: its entries' standard deviation (``None``: ``1/sqrt(O)``).

    References: Murray 2019, "Local online learning in recurrent networks with
      random feedback" (eLife 8:e43299); Marschall, Cho & Savin 2020 (JMLR 21),
      Sec. 5 and their ``RFLO.py``.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if feedback_std is not None and (isinstance(feedback_std, bool) or not isinstance(
            feedback_std, (int, float, np.floating)) or not feedback_std > 0):
        raise ValueError(f"feedback_std must be a number > 0 or None, got {feedback_std!r}")
    return _local("rflo", False, int(seed), feedback_std)


def eprop() -> GradientEstimator:
    """e-prop (Bellec et al. 2020) for the leaky vanilla RNN: diagonal traces, true readout.

    Trace ``e_t[j, i] = J_ii e_{t-1}[j, i] + a_i phi'(u_{t,i}) xhat_j`` with the
    diagonal of the step's Jacobian ``J_ii = 1 - a_i + a_i phi'(u_{t,i})
    W_hh[i, i]``, and gradient ``sum_t w_t q_{t,i} e_t[j, i]`` with the exact
    learning signal ``q_t = dl_t / dh_t`` (the readout's transpose: symmetric
    e-prop). The trace is the influence SnAp-1 keeps for this cell (tested); the
    gradients differ because :func:`jrnn.grads.snap1` reads the history term
    through the full ``J_t`` (``q_t J_t M_{t-1}``) where e-prop uses
    ``q_t diag(J_t) e_{t-1}``.

    Cost: memory ``B (D + H + 1) H``; time ``O(B H (D + H))`` per step. Bias:
    it drops the off-diagonal of ``J_t`` (the paths through other units'
    past), so it is biased for a dense ``W_hh``; when ``W_hh`` is diagonal
    ``J_t`` is too, the trace is RTRL's influence and the gradient equals
    RTRL's (and full BPTT's from a fresh carry; tested). With zero
    self-connections (Bellec et al.'s networks) the trace is RFLO's. Only the
    leaky vanilla RNN (``rnn``, ``rnn-relu``, ``leaky(learn_tau=False)``);
    other cells get a ``ValueError``.

    References: Bellec et al. 2020, "A solution to the learning dilemma for
      recurrent networks of spiking neurons" (Nat. Commun. 11:3625);
      Marschall, Cho & Savin 2020 (JMLR 21), Sec. 5.
    """
    return _local("eprop", True, None, None)


register("rflo", rflo, int, usage="rflo[:SEED]")
register("eprop", eprop, usage="eprop")
