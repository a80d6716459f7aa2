"""The peers jrnn's throughput is measured against: torch.nn and flax.linen.

Each implementation trains the same character language model as
``throughput.JrnnImpl`` (one recurrent layer + a dense readout) from the same
initial weights (jrnn's, ported) on the same batches, with SGD lr 1 and
global-norm clipping 1.0:

- :class:`TorchImpl`: ``torch.nn.RNN/LSTM/GRU`` + ``nn.Linear`` on CPU,
  one-hot inputs (d2l's concise RNN), ``clip_grad_norm_``, ``torch.optim.SGD``,
  the hidden state carried and detached across batches; ``threads`` sets
  ``torch.set_num_threads``. torch is imported only when one is built.
- :class:`FlaxImpl`: ``flax.linen.RNN`` over ``SimpleCell`` /
  ``OptimizedLSTMCell`` / ``GRUCell`` + ``nn.Dense``, one-hot inputs,
  ``optax.chain(clip_by_global_norm(1), sgd(1))``, one ``jax.jit`` step with
  donated buffers.

Protocol (shared with ``throughput.JrnnImpl``): ``setup()`` compiles and runs
one step and returns its loss (before the update); ``run(n)`` does ``n``
steps, syncs, and returns the last loss; ``first_step_seconds()`` (flax)
builds a fresh step and times trace + compile + one step.
"""

from __future__ import annotations

import os
import time

import numpy as np

__all__ = ["TorchImpl", "FlaxImpl"]


class TorchImpl:
    name = "torch"

    def __init__(self, cfg, params, data, threads: int | None = None):
        import torch

        self.threads = threads or os.cpu_count() or 1
        if threads is not None and threads != (os.cpu_count() or 1):
            self.name = f"torch-{threads}t"
        torch.set_num_threads(self.threads)
        self.torch, self.cfg, self.i = torch, cfg, 0
        self.data = [(torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64)))
                     for x, y in data]
        cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cfg["cell"]]
        V, H = cfg["V"], cfg["H"]
        self.rnn, self.lin = cls(V, H), torch.nn.Linear(H, V)
        c, h = params["cell"], params["head"]
        t = lambda a: torch.from_numpy(np.array(a, np.float32, copy=True))
        wx, wh = (c["W_xh"], c["W_hh"]) if cfg["cell"] == "rnn" else (c["W_x"], c["W_h"])
        b_ih = {"rnn": lambda: c["b_h"], "lstm": lambda: c["b"], "gru": lambda: c["b_x"]}[cfg["cell"]]()
        b_hh = np.zeros_like(b_ih)
        if cfg["cell"] == "gru":  # jrnn: b_x = bias_ih + [bias_hh_r, bias_hh_z, 0], b_hn = bias_hh_n
            b_hh[2 * H:] = c["b_hn"]
        with torch.no_grad():
            self.rnn.weight_ih_l0.copy_(t(wx.T)); self.rnn.weight_hh_l0.copy_(t(wh.T))
            self.rnn.bias_ih_l0.copy_(t(b_ih)); self.rnn.bias_hh_l0.copy_(t(b_hh))
            self.lin.weight.copy_(t(h["W_hq"].T)); self.lin.bias.copy_(t(h["b_q"]))
        self.params = list(self.rnn.parameters()) + list(self.lin.parameters())
        self.opt = torch.optim.SGD(self.params, lr=1.0)
        self.state = None

    def _step(self):
        torch, F = self.torch, self.torch.nn.functional
        x, y = self.data[self.i % len(self.data)]
        self.i += 1
        if self.state is not None:  # carry the hidden state, cut the gradient (d2l's detach)
            self.state = tuple(s.detach() for s in self.state) if isinstance(self.state, tuple) \
                else self.state.detach()
        out, self.state = self.rnn(F.one_hot(x, self.cfg["V"]).float(), self.state)
        loss = F.cross_entropy(self.lin(out).reshape(-1, self.cfg["V"]), y.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        return loss

    def setup(self):
        return self.run(1)

    def run(self, n):
        self.torch.set_num_threads(self.threads)  # process-wide; several torch settings may alternate
        for _ in range(n):
            loss = self._step()
        return float(loss.item())


class FlaxImpl:
    name = "flax"

    def __init__(self, cfg, params, data):
        import jax.numpy as jnp

        self.cfg, self.i = cfg, 0
        self.data = [(jnp.asarray(x), jnp.asarray(y)) for x, y in data]
        self.params0 = self._port(params)

    def _module(self):
        import flax.linen as nn
        import jax

        cfg = self.cfg
        cell_cls = {"rnn": nn.SimpleCell, "lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}[cfg["cell"]]

        class LM(nn.Module):
            @nn.compact
            def __call__(self, carry, ids):  # ids [T, B]
                x = jax.nn.one_hot(ids, cfg["V"])
                carry, ys = nn.RNN(cell_cls(cfg["H"], name="cell"), time_major=True, return_carry=True, name="rnn")(
                    x, initial_carry=carry)
                return nn.Dense(cfg["V"], name="head")(ys), carry

        return LM(), cell_cls(cfg["H"], parent=None)

    def _port(self, params):
        """jrnn params -> flax.linen param tree (same math; checked against flax's own init)."""
        import jax
        import jax.numpy as jnp

        cfg, H = self.cfg, self.cfg["H"]
        c, h = params["cell"], params["head"]
        blk = lambda a, k, n: a[..., k * H:(k + 1) * H]
        if cfg["cell"] == "rnn":
            cell = {"i": {"kernel": c["W_xh"], "bias": c["b_h"]}, "h": {"kernel": c["W_hh"]}}
        elif cfg["cell"] == "lstm":
            cell = {}
            for k, g in enumerate("ifgo"):
                cell["i" + g] = {"kernel": blk(c["W_x"], k, 4)}
                cell["h" + g] = {"kernel": blk(c["W_h"], k, 4), "bias": blk(c["b"], k, 4)}
        else:
            cell = {}
            for k, g in enumerate("rzn"):
                cell["i" + g] = {"kernel": blk(c["W_x"], k, 3), "bias": blk(c["b_x"], k, 3)}
                cell["h" + g] = {"kernel": blk(c["W_h"], k, 3)}
            cell["hn"]["bias"] = c["b_hn"]
        ported = {"cell": cell, "head": {"kernel": h["W_hq"], "bias": h["b_q"]}}
        module, cell_mod = self._module()
        carry = cell_mod.initialize_carry(jax.random.key(0), (cfg["B"], cfg["V"]))
        ref = module.init(jax.random.key(0), carry, jnp.zeros((cfg["T"], cfg["B"]), jnp.int32))["params"]
        got = jax.tree.map(lambda a: a.shape, ported)
        want = jax.tree.map(lambda a: a.shape, dict(ref))
        if got != want:
            raise RuntimeError(f"flax param layout changed: ported {got}, flax has {want}")
        return ported

    def build(self):
        import functools

        import jax
        import jax.numpy as jnp
        import optax

        module, cell_mod = self._module()
        tx = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(1.0))

        @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
        def step(params, opt_state, carry, x, y):
            def loss_fn(p):
                logits, c = module.apply({"params": p}, carry, x)
                return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), c

            (loss, c), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = tx.update(g, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, jax.lax.stop_gradient(c), loss

        params = jax.tree.map(jnp.array, self.params0)
        carry = cell_mod.initialize_carry(jax.random.key(0), (self.cfg["B"], self.cfg["V"]))
        return [params, tx.init(params), carry], step

    def setup(self):
        self.state, self.step = self.build()
        return self.run(1)

    def first_step_seconds(self):
        import jax

        state, step = self.build()
        x, y = self.data[0]
        t0 = time.perf_counter()
        out = step(*state, x, y)
        jax.block_until_ready(out[-1])
        return time.perf_counter() - t0

    def run(self, n):
        for _ in range(n):
            x, y = self.data[self.i % len(self.data)]
            self.i += 1
            *self.state, loss = self.step(*self.state, x, y)
        return float(loss)
