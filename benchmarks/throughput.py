"""Training throughput of jrnn vs torch.nn and flax.linen, interleaved in one run.

Usage (``--help`` lists the options; ``benchmarks/README.md`` has the measured tables)::

    python benchmarks/throughput.py                      # full run, a few minutes
    python benchmarks/throughput.py --quick              # smoke run (CI)
    python benchmarks/throughput.py --json run.json      # also write every number

The same character language model (a recurrent cell + a dense readout, vocab
28 by default) is trained with the same data, the same initial weights, the
same optimizer (SGD, lr 1, global-norm clipping 1.0) and the same shapes by:

- **jrnn**: its one public train step, ``jrnn.train_step(model,
  make_optimizer("sgd", 1.0, 1.0), grads.full(), carry_over=True)`` on
  ``jrnn.language_model(cell, V)`` -- the path the CLI and experiments use;
- **jrnn-onednn**: the same train step with the cell on oneDNN's fused RNN
  primitive (``jrnn.kernels.with_backend(cell, "onednn")``; skipped with a
  note when the ``onednn`` extra is not built). torch in the same process
  shares its OpenMP runtime and slows it (a note says so): for its own figure
  run ``--impls jrnn,jrnn-onednn,flax``;
- **torch** (``peers.TorchImpl``; skipped with a note if torch is not installed):
  ``torch.nn.RNN/LSTM/GRU`` + ``nn.Linear`` on CPU, one-hot inputs
  (d2l's concise RNN), ``clip_grad_norm_(1.0)``, ``torch.optim.SGD``, hidden
  state carried (detached) across batches, ``torch.set_num_threads(cores)``
  ("torch") and, by default, also 1 thread ("torch-1t": OpenMP threads stall
  when another process holds a core); ``vs_torch`` is against the faster;
- **flax** (``peers.FlaxImpl``): ``flax.linen.RNN`` over ``SimpleCell`` / ``OptimizedLSTMCell`` /
  ``GRUCell`` + ``nn.Dense``, one-hot inputs, ``optax.chain(clip_by_global_norm(1),
  sgd(1))``, one ``jax.jit`` step with donated buffers.

Implementations run INTERLEAVED in rounds (jrnn, torch, flax, roofline, ...;
the order rotates every round) after compilation, so a noisy, shared machine
slows all of them alike; each reports the median tokens/s over rounds.

Two limits put the numbers in context, measured in the same rounds:

- **roofline**: the f32 rate of the recurrent product done as ONE large
  product, ``[T*B, H] x [H, G*H]``, turned into tokens/s as if all recurrent
  FLOPs (forward + backward = 3x forward) ran at that rate;
- **sequential ceiling**: the rate of the same small ``[B, H] x [H, G*H]``
  products chained in a ``lax.scan`` (what a recurrence can actually do), same
  conversion. This is the honest limit.

Also measured: time to first step (trace + compile + one step) for jrnn and
flax, and ``S`` independently initialised models trained at once with
``train_step(..., seeds=S)`` (vmapped) against ``S`` sequential runs.

The last lines are machine-readable, one per config::

    ratio <config> vs_torch=<x> vs_flax=<y> of_roofline=<z> of_sequential=<w>

Configs are named ``<cell><H>[-b<B>][-t<T>][-v<V>]`` with cell ``rnn``, ``lstm``
or ``gru``; defaults ``B=32, T=35, V=28`` (d2l's char-LM shapes).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # peers.py beside this file
from peers import FlaxImpl, TorchImpl  # noqa: E402

DEFAULT_CONFIGS = "rnn512,lstm256,gru256,lstm256-b256,lstm256-t1024"
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
IMPLS = ("jrnn", "jrnn-onednn", "torch", "flax")


# ----------------------------------------------------------------------------
# configs and shared data


def parse_config(name: str) -> dict:
    """``"lstm256-b256-t1024"`` -> ``{"cell": "lstm", "H": 256, "B": 256, "T": 1024, "V": 28}``."""
    m = re.fullmatch(r"(rnn|lstm|gru)(\d+)((?:-[btv]\d+)*)", name.strip())
    if not m:
        raise ValueError(f"bad config {name!r}: expected <rnn|lstm|gru><H>[-b<B>][-t<T>][-v<V>], "
                         f"e.g. 'lstm256-b256'")
    cfg = {"name": name.strip(), "cell": m.group(1), "H": int(m.group(2)), "B": 32, "T": 35, "V": 28}
    for part in re.findall(r"-([btv])(\d+)", m.group(3)):
        cfg[{"b": "B", "t": "T", "v": "V"}[part[0]]] = int(part[1])
    for k in ("H", "B", "T", "V"):
        if cfg[k] < 1:
            raise ValueError(f"bad config {name!r}: {k} must be >= 1")
    cfg["G"] = GATES[cfg["cell"]]
    return cfg


def make_data(cfg: dict, n_batches: int, seed: int):
    """``n_batches`` sequential time-major batches ``(X [T, B], Y [T, B])`` of a random token stream."""
    T, B, V = cfg["T"], cfg["B"], cfg["V"]
    stream = np.random.default_rng(seed).integers(0, V, B * (n_batches * T + 1)).astype(np.int32)
    rows = stream.reshape(B, n_batches * T + 1)
    return [(np.ascontiguousarray(rows[:, i * T:(i + 1) * T].T),
             np.ascontiguousarray(rows[:, i * T + 1:(i + 1) * T + 1].T)) for i in range(n_batches)]


def jrnn_model(cfg: dict, backend: str = "xla"):
    import jrnn

    H = cfg["H"]
    cell = {"rnn": lambda: jrnn.elman(H), "lstm": lambda: jrnn.lstm(H), "gru": lambda: jrnn.gru(H)}[cfg["cell"]]()
    return jrnn.language_model(jrnn.kernels.with_backend(cell, backend), cfg["V"])


def initial_params(cfg: dict, seed: int):
    """jrnn's init (torch's default ``U(+-1/sqrt(H))``) as numpy arrays; ported to torch and flax."""
    import jax

    p = jrnn_model(cfg).init(jax.random.key(seed))
    return jax.tree.map(np.asarray, p)


# ----------------------------------------------------------------------------
# implementations: setup() compiles and runs one step; run(n) does n steps and syncs


class JrnnImpl:
    name, backend = "jrnn", "xla"

    def __init__(self, cfg, params, data):
        import jax
        import jax.numpy as jnp

        import jrnn

        self.cfg, self.data, self.i = cfg, [jrnn.Batch(jnp.asarray(x), jnp.asarray(y)) for x, y in data], 0
        self.model = jrnn_model(cfg, self.backend)
        self.opt = jrnn.make_optimizer("sgd", 1.0, 1.0)
        self.params0 = params
        self.key = jax.random.key(0)

    def build(self):
        """A fresh state and a fresh (uncompiled) train step."""
        import jax
        import jax.numpy as jnp

        import jrnn

        params = jax.tree.map(jnp.array, self.params0)
        est = jrnn.grads.full()
        state = jrnn.TrainState(params, self.opt.init(params), self.model.cell.initial_carry((self.cfg["B"],)),
                                jnp.zeros((), jnp.int32))
        return state, jrnn.train_step(self.model, self.opt, est, carry_over=True)

    def setup(self):
        self.state, self.step = self.build()
        return self.run(1)

    def first_step_seconds(self):
        import jax

        state, step = self.build()
        t0 = time.perf_counter()
        state, m = step(state, self.data[0], self.key)
        jax.block_until_ready(m["loss"])
        return time.perf_counter() - t0

    def run(self, n):
        for _ in range(n):
            self.state, m = self.step(self.state, self.data[self.i % len(self.data)], self.key)
            self.i += 1
        return float(m["loss"])

    def temp_bytes(self) -> int:
        """XLA's planned temporaries of one compiled step (oneDNN's workspace included)."""
        import jrnn

        state, step = self.build()
        return jrnn.compare.compiled_memory(step.jitted, state, self.data[0], self.key).get("temp", 0)


class JrnnOnednnImpl(JrnnImpl):
    """The same train step with the cell on oneDNN's fused RNN primitive (``jrnn.kernels``)."""

    name, backend = "jrnn-onednn", "onednn"



# ----------------------------------------------------------------------------
# limits: one large product, and the chain of small products


class RooflineImpl:
    """``[T*B, H] x [H, G*H]`` as one product; reports tokens/s if all recurrent FLOPs ran at its rate."""

    name = "roofline"

    def __init__(self, cfg, reps_per_run: int = 1):
        import jax
        import jax.numpy as jnp

        T, B, H, G = cfg["T"], cfg["B"], cfg["H"], cfg["G"]
        k1, k2 = jax.random.split(jax.random.key(0))
        self.x = jax.random.normal(k1, (T * B, H), jnp.float32)
        self.w = jax.random.normal(k2, (H, G * H), jnp.float32) / math.sqrt(H)
        # the output buffer is donated and reused: a fresh [T*B, G*H] buffer per call would
        # time the kernel's page faults (large allocations are mmapped) rather than the product
        self.f = jax.jit(lambda x, w, out: x @ w, donate_argnums=2)
        self.out = jnp.zeros((T * B, G * H), jnp.float32)
        self.flops = 2.0 * T * B * H * G * H

    def setup(self):

        self.run(1)

    def run(self, n):
        import jax

        for _ in range(n):
            self.out = self.f(self.x, self.w, self.out)
        jax.block_until_ready(self.out)


class SequentialImpl(RooflineImpl):
    """The same FLOPs as ``T`` chained ``[B, H] x [H, G*H]`` products in a ``lax.scan``."""

    name = "sequential"

    def __init__(self, cfg):
        import jax
        import jax.numpy as jnp

        super().__init__(cfg)
        T, B, H, G = cfg["T"], cfg["B"], cfg["H"], cfg["G"]
        self.x = jax.random.normal(jax.random.key(1), (B, H), jnp.float32)

        def chain(h, w):
            def body(h, _):
                z = h @ w  # [B, G*H]; fold the gates back to [B, H] for the next step
                return jnp.tanh(z.reshape(B, G, H).sum(1) if G > 1 else z), None
            return jax.lax.scan(body, h, None, length=T)[0]

        self.chain = jax.jit(chain)

    def run(self, n):
        import jax

        for _ in range(n):
            out = self.chain(self.x, self.w)
        jax.block_until_ready(out)


# ----------------------------------------------------------------------------
# the measurement loop


def _tokens_per_s(cfg, n_steps, seconds):
    return n_steps * cfg["T"] * cfg["B"] / seconds


def _recurrent_tokens_per_s(cfg, flop_rate):
    """tokens/s if forward + backward recurrent FLOPs (3x ``2*H*G*H`` per token) ran at ``flop_rate``."""
    return flop_rate / (3.0 * 2.0 * cfg["H"] * cfg["G"] * cfg["H"])


def bench_config(cfg, impls, rounds, target_s, seed, log, torch_threads=(None,)):
    """Interleaved rounds of every implementation and both limits; returns a result dict."""
    params = initial_params(cfg, seed)
    data = make_data(cfg, 4, seed)
    makers = {"jrnn": [JrnnImpl], "jrnn-onednn": [JrnnOnednnImpl], "flax": [FlaxImpl],
              "torch": [lambda c, p, d, t=t: TorchImpl(c, p, d, t) for t in torch_threads]}
    runners, first_loss, first_s, temp = {}, {}, {}, {}
    for name in impls:
        for make in makers[name]:
            r = make(cfg, params, data)
            t0 = time.perf_counter()
            first_loss[r.name] = r.setup()  # compile + one step (loss before the update, same weights/data)
            first_s[r.name] = time.perf_counter() - t0
            if hasattr(r, "temp_bytes"):
                temp[r.name] = r.temp_bytes()
            runners[r.name] = r
    limits = {"roofline": RooflineImpl(cfg), "sequential": SequentialImpl(cfg)}
    for r in limits.values():
        r.setup()

    # calibrate: the same number of steps per round for every implementation,
    # so that a round of the slowest takes about target_s
    per_step = {}
    for name, r in runners.items():
        t0 = time.perf_counter(); r.run(1); per_step[name] = time.perf_counter() - t0
    n = max(1, int(round(target_s / max(per_step.values()))))
    lim_n = {}
    for name, r in limits.items():
        t0 = time.perf_counter(); r.run(1); dt = time.perf_counter() - t0
        lim_n[name] = max(1, int(round(min(target_s, 0.25) / max(dt, 1e-6))))

    times = {k: [] for k in list(runners) + list(limits)}
    order = list(runners) + list(limits)
    for rnd in range(rounds):
        k = rnd % len(order)
        for name in order[k:] + order[:k]:  # rotate the order every round
            time.sleep(0.05)  # let the previous implementation's worker threads go idle
            if name in runners:
                t0 = time.perf_counter()
                last = runners[name].run(n)
                times[name].append(time.perf_counter() - t0)
                if not math.isfinite(last):
                    raise FloatingPointError(f"{name} diverged on {cfg['name']} (loss {last})")
            else:
                t0 = time.perf_counter()
                limits[name].run(lim_n[name])
                times[name].append((time.perf_counter() - t0) / lim_n[name])
        log(f"  round {rnd + 1}/{rounds}: " + ", ".join(
            f"{k} {(_tokens_per_s(cfg, n, v[-1]) if k in runners else _recurrent_tokens_per_s(cfg, limits[k].flops / v[-1])):,.0f}"
            for k, v in times.items()))

    res = {"config": cfg, "steps_per_round": n, "rounds": rounds, "first_loss": first_loss,
           "final_loss": {k: r.run(1) for k, r in runners.items()}, "tokens_per_s": {}, "spread": {},
           "first_step_s": first_s, "temp_bytes": temp}
    for name, ts in times.items():
        if name in runners:
            rates = [_tokens_per_s(cfg, n, t) for t in ts]
        else:
            rates = [_recurrent_tokens_per_s(cfg, limits[name].flops / t) for t in ts]
            res.setdefault("gflops", {})[name] = float(np.median([limits[name].flops / t / 1e9 for t in ts]))
        res["tokens_per_s"][name] = float(np.median(rates))
        res["spread"][name] = [float(np.percentile(rates, 25)), float(np.percentile(rates, 75))]
    return res


def bench_compile(cfg, reps, seed):
    """Median seconds (wall and CPU) to the first step (trace + compile + run) of a freshly built step.

    CPU seconds are those of this process: on a shared machine they vary far
    less than wall seconds (compilation is mostly single-threaded).
    """
    params = initial_params(cfg, seed)
    data = make_data(cfg, 1, seed)
    j, f = JrnnImpl(cfg, params, data), FlaxImpl(cfg, params, data)
    j.first_step_seconds(), f.first_step_seconds()  # warm the shared one-time costs for both
    out = {"jrnn": [], "flax": []}
    for rep in range(reps):
        for impl in ((j, f) if rep % 2 == 0 else (f, j)):
            c0 = time.process_time()
            wall = impl.first_step_seconds()
            out[impl.name].append((wall, time.process_time() - c0))
    return {k: {"wall": float(np.median([w for w, _ in v])), "cpu": float(np.median([c for _, c in v]))}
            for k, v in out.items()}


def bench_seeds(cfg, S, rounds, target_s, seed, log, run_steps=100):
    """``S`` models in one vmapped ``train_step(seeds=S)`` vs ``S`` sequential runs of one model.

    Steady state: compiled steps, interleaved rounds, median tokens/s. End to
    end: ``run_steps`` steps per model including building and compiling the
    step (one build for the vmapped run, one per sequential run, as separate
    runs would), excluding process start-up.
    """
    import jax
    import jax.numpy as jnp

    import jrnn

    model = jrnn_model(cfg)
    opt, est = jrnn.make_optimizer("sgd", 1.0, 1.0), jrnn.grads.full()
    keys = jax.random.split(jax.random.key(seed), S)
    data = [jrnn.Batch(jnp.asarray(x), jnp.asarray(y)) for x, y in make_data(cfg, 4, seed)]
    skeys, key = jax.random.split(jax.random.key(1), S), jax.random.key(1)

    def vm_run(n, state=None, step=None):
        state = jrnn.init_states(model, opt, est, keys, cfg["B"]) if state is None else state
        step = step or jrnn.train_step(model, opt, est, carry_over=True, seeds=S)
        for i in range(n):
            state, m = step(state, data[i % len(data)], skeys)
        jax.block_until_ready(m["loss"])
        return state, step

    def seq_runs(n, states=None, step=None):  # S runs one after the other, n steps each
        states = [jrnn.init_state(model, opt, est, k, cfg["B"]) for k in keys] if states is None else states
        for s in range(S):
            st = step or jrnn.train_step(model, opt, est, carry_over=True)
            for i in range(n):
                states[s], m = st(states[s], data[i % len(data)], key)
        jax.block_until_ready(m["loss"])
        return states, step

    vm_state, vm_step = vm_run(1)
    one_step = jrnn.train_step(model, opt, est, carry_over=True)
    one_states, _ = seq_runs(1, step=one_step)
    t0 = time.perf_counter(); seq_runs(1, one_states, one_step); dt = time.perf_counter() - t0
    n = max(1, int(round(target_s / dt)))
    times = {"vmapped": [], "sequential": []}
    for rnd in range(rounds):
        order = ("vmapped", "sequential") if rnd % 2 == 0 else ("sequential", "vmapped")
        for name in order:
            time.sleep(0.05)
            t0 = time.perf_counter()
            if name == "vmapped":
                vm_state, _ = vm_run(n, vm_state, vm_step)
            else:
                seq_runs(n, one_states, one_step)
            times[name].append(time.perf_counter() - t0)
    tok = S * n * cfg["T"] * cfg["B"]
    out = {k: float(np.median([tok / t for t in v])) for k, v in times.items()}
    out["speedup"] = out["vmapped"] / out["sequential"]
    # end to end: fresh builds, compile included
    e2e = {}
    for name, fn in (("vmapped", vm_run), ("sequential", seq_runs)):
        t0 = time.perf_counter(); fn(run_steps); e2e[name] = S * run_steps * cfg["T"] * cfg["B"] / (time.perf_counter() - t0)
    out.update(e2e_steps=run_steps, e2e_vmapped=e2e["vmapped"], e2e_sequential=e2e["sequential"],
               e2e_speedup=e2e["vmapped"] / e2e["sequential"])
    log(f"  {S} seeds on {cfg['name']}: steady vmapped {out['vmapped']:,.0f} tok/s vs {S} sequential "
        f"{out['sequential']:,.0f} tok/s (x{out['speedup']:.2f}); {run_steps}-step runs with compile "
        f"x{out['e2e_speedup']:.2f}")
    return out


# ----------------------------------------------------------------------------
# reporting


def machine_info() -> dict:
    import jax

    model = platform.processor() or platform.machine()
    try:
        import subprocess

        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"Model name:\s*(.+)", out)
        if m:
            model = m.group(1).strip()
    except (OSError, subprocess.SubprocessError):
        pass
    info = {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "jax": jax.__version__, "date": datetime.datetime.now().isoformat(timespec="seconds")}
    for mod in ("flax", "optax", "torch"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    return info


def _ratio(a, b):
    return a / b if a and b else float("nan")


def _best_torch(t: dict):
    vals = [v for k, v in t.items() if k.startswith("torch")]
    return max(vals) if vals else None


def report(results, compile_times, seeds, info, load, out=print):
    out("")
    out(f"machine: {info['cpu']}, {info['cores']} cores; jax {info['jax']}, flax {info['flax']}, "
        f"optax {info['optax']}, torch {info['torch']}; {info['date']}")
    out(f"host memory: {'jrnn.reuse_host_memory() in force (glibc keeps large freed blocks; all implementations)' if info.get('reuse_host_memory') else 'glibc malloc defaults'}")
    out(f"load average before/after: {load[0]:.2f} / {load[1]:.2f} (above {info['cores']}: the cores "
        f"were shared with other processes)")
    if info.get("onednn_note"):
        out(f"note: {info['onednn_note']}")
    out("")
    impl_cols = []
    for r in results:
        for k in r["tokens_per_s"]:
            if k not in impl_cols and k not in ("roofline", "sequential"):
                impl_cols.append(k)
    cols = impl_cols + ["roofline", "sequential"]
    out("tokens/s (median over rounds; roofline = all recurrent FLOPs at the large-product rate, "
        "sequential = at the chained-small-product rate)")
    od = any("jrnn-onednn" in r["tokens_per_s"] for r in results)
    extra = " onednn vs torch | onednn of sequential |" if od else ""
    out("| config | " + " | ".join(cols) + " | vs torch | vs flax | of roofline | of sequential |" + extra)
    out("|---|" + "---:|" * (len(cols) + 4 + 2 * od))
    for r in results:
        t = r["tokens_per_s"]
        cells = [f"{t[k]:,.0f}" if k in t else "-" for k in cols]
        o = t.get("jrnn-onednn")
        out(f"| {r['config']['name']} | " + " | ".join(cells) +
            f" | {_ratio(t.get('jrnn'), _best_torch(t)):.2f} | {_ratio(t.get('jrnn'), t.get('flax')):.2f} "
            f"| {_ratio(t.get('jrnn'), t.get('roofline')):.2f} | {_ratio(t.get('jrnn'), t.get('sequential')):.2f} |"
            + (f" {_ratio(o, _best_torch(t)):.2f} | {_ratio(o, t.get('sequential')):.2f} |" if od else ""))
    out("(vs torch: against the fastest torch setting measured; jrnn = the XLA path, jrnn-onednn ="
        " the cell on oneDNN's RNN primitive)" if od else "(vs torch: against the fastest torch setting measured)")
    for r in results:
        fs, tb = r.get("first_step_s", {}), r.get("temp_bytes", {})
        if tb:
            out(f"{r['config']['name']}: time to first step " + ", ".join(
                f"{k} {v:.2f} s" for k, v in fs.items() if k.startswith("jrnn")) + "; planned temporaries "
                + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in tb.items()))
    out("")
    for r in results:
        fl = ", ".join(f"{k} {v:.4f}" for k, v in r["first_loss"].items())
        ll = ", ".join(f"{k} {v:.4f}" for k, v in r["final_loss"].items())
        g = r.get("gflops", {})
        out(f"{r['config']['name']}: first-step loss (same weights, same batch) {fl}; "
            f"after {r['rounds'] * r['steps_per_round'] + 3} steps {ll}; "
            f"large product {g.get('roofline', float('nan')):.0f} GFLOP/s, "
            f"chained small products {g.get('sequential', float('nan')):.0f} GFLOP/s")
    if compile_times:
        out("")
        out("time to first step (trace + compile + one step), median of fresh builds:")
        for name, c in compile_times.items():
            out(f"compile {name} jrnn_wall={c['jrnn']['wall']:.2f}s flax_wall={c['flax']['wall']:.2f}s "
                f"jrnn_cpu={c['jrnn']['cpu']:.2f}s flax_cpu={c['flax']['cpu']:.2f}s "
                f"ratio_wall={_ratio(c['jrnn']['wall'], c['flax']['wall']):.2f} "
                f"ratio_cpu={_ratio(c['jrnn']['cpu'], c['flax']['cpu']):.2f}")
    if seeds:
        out("")
        out("independently initialised models: one vmapped train_step(seeds=S) vs S sequential runs:")
        for name, s in seeds.items():
            out(f"seeds {name} S={s['S']} vmapped_tok_s={s['vmapped']:.0f} sequential_tok_s={s['sequential']:.0f} "
                f"speedup={s['speedup']:.2f} e2e_{s['e2e_steps']}_steps_speedup={s['e2e_speedup']:.2f}")
    out("")
    for r in results:
        t = r["tokens_per_s"]
        o = (f" onednn_vs_torch={_ratio(t['jrnn-onednn'], _best_torch(t)):.3f} "
             f"onednn_of_sequential={_ratio(t['jrnn-onednn'], t.get('sequential')):.3f}"
             if "jrnn-onednn" in t else "")
        out(f"ratio {r['config']['name']} vs_torch={_ratio(t.get('jrnn'), _best_torch(t)):.3f} "
            f"vs_flax={_ratio(t.get('jrnn'), t.get('flax')):.3f} "
            f"of_roofline={_ratio(t.get('jrnn'), t.get('roofline')):.3f} "
            f"of_sequential={_ratio(t.get('jrnn'), t.get('sequential')):.3f}" + o)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="throughput.py",
        description="Training throughput of jrnn's train step against torch.nn and flax.linen: same "
                    "model, data, initial weights, optimizer (SGD lr 1, clip 1.0) and shapes, "
                    "interleaved in one process, medians after compilation; plus the large-product "
                    "roofline and the sequential (chained small products) ceiling, compile time, and "
                    "vmapped seeds. The last lines read 'ratio <config> vs_torch=.. vs_flax=.. "
                    "of_roofline=.. of_sequential=..'.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--configs", default=DEFAULT_CONFIGS,
                   help="comma-separated <rnn|lstm|gru><H>[-b<B>][-t<T>][-v<V>] (defaults B=32 T=35 V=28)")
    p.add_argument("--impls", default=",".join(IMPLS),
                   help="implementations to compare (torch is skipped with a note if not installed)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds per config (median over rounds)")
    p.add_argument("--round-seconds", type=float, default=0.6,
                   help="about how long the slowest implementation runs per round")
    p.add_argument("--compile-reps", type=int, default=3,
                   help="fresh builds timed to the first step, jrnn vs flax (0: skip)")
    p.add_argument("--compile-configs", default="rnn512,lstm256,gru256",
                   help="configs whose time to first step is measured")
    p.add_argument("--seeds", type=int, default=8, help="models trained at once with train_step(seeds=S) (0: skip)")
    p.add_argument("--seeds-configs", default="gru256,gru32",
                   help="configs for the vmapped-seeds comparison")
    p.add_argument("--seeds-steps", type=int, default=100,
                   help="steps per run for the end-to-end seeds comparison (compile included)")
    p.add_argument("--torch-threads", default="cores,1",
                   help="torch intra-op thread settings to measure, e.g. 'cores,1'; vs_torch uses the fastest")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the token stream")
    p.add_argument("--no-reuse-host-memory", action="store_true",
                   help="leave glibc malloc as it is (by default the process calls jrnn.reuse_host_memory(), "
                        "which applies to every implementation in it)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 short rounds, 1 compile rep, tiny defaults unless --configs is given")
    p.add_argument("--json", default=None, help="also write all results to this JSON file")
    p.add_argument("--quiet", action="store_true", help="print only the final tables and ratio lines")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    reused = False
    if not args.no_reuse_host_memory:
        import jrnn
        reused = jrnn.reuse_host_memory(warn=False)  # process-wide: torch and flax get it too
    given = set(a.split("=")[0] for a in (sys.argv[1:] if argv is None else argv))
    if args.quick:
        args.rounds = min(args.rounds, 2)
        args.round_seconds = min(args.round_seconds, 0.05)
        args.compile_reps = min(args.compile_reps, 1)
        if "--configs" not in given:
            args.configs = "rnn32-b8-t10"
        if "--compile-configs" not in given:
            args.compile_configs = args.configs.split(",")[0]
        if "--seeds-configs" not in given:
            args.seeds_configs = args.configs.split(",")[0]
        args.seeds = min(args.seeds, 2)
        args.seeds_steps = min(args.seeds_steps, 3)
    if args.rounds < 1 or args.round_seconds <= 0 or args.compile_reps < 0 or args.seeds < 0:
        raise SystemExit("throughput.py: --rounds >= 1, --round-seconds > 0, --compile-reps >= 0, --seeds >= 0")
    try:
        configs = [parse_config(c) for c in args.configs.split(",") if c.strip()]
        compile_cfgs = [parse_config(c) for c in args.compile_configs.split(",") if c.strip()]
        seeds_cfgs = [parse_config(c) for c in args.seeds_configs.split(",") if c.strip()]
    except ValueError as e:
        raise SystemExit(f"throughput.py: {e}")
    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    cores = os.cpu_count() or 1
    try:
        torch_threads = sorted({cores if t.strip() == "cores" else int(t) for t in args.torch_threads.split(",")
                                if t.strip()}, reverse=True)
    except ValueError:
        raise SystemExit(f"throughput.py: --torch-threads takes 'cores' or integers, got {args.torch_threads!r}")
    if not torch_threads or min(torch_threads) < 1:
        raise SystemExit("throughput.py: --torch-threads needs at least one value >= 1")
    bad = [i for i in impls if i not in IMPLS]
    if bad:
        raise SystemExit(f"throughput.py: unknown --impls {bad}; choose from {IMPLS}")
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    if "jrnn-onednn" in impls:
        import jrnn.onednn
        if not jrnn.onednn.available():
            log(f"note: jrnn-onednn skipped: {jrnn.onednn.unavailable_reason()}")
            impls.remove("jrnn-onednn")
    if "torch" in impls:
        try:
            import torch  # noqa: F401
        except ImportError:
            log("note: torch is not installed (pip install 'jrnn[bench]'); skipping torch")
            impls.remove("torch")

    info = machine_info()
    info["reuse_host_memory"] = reused
    if "jrnn-onednn" in impls and "torch" in impls:
        # torch ships its own libgomp.so.1; libdnnl then binds to it too, and torch's OpenMP
        # team plus oneDNN's make more threads than cores: libgomp throttles their spinning
        # and every per-step parallel region of the primitive sleeps and wakes (2x slower)
        info["onednn_note"] = ("jrnn-onednn shares torch's OpenMP runtime in this process "
                               "(about 2x slower than alone); for its own figure run "
                               "--impls jrnn,jrnn-onednn,flax")
        log(f"note: {info['onednn_note']}")
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results, compile_times, seeds = [], {}, {}
    for cfg in configs:
        log(f"{cfg['name']}: {cfg['cell']} H={cfg['H']} B={cfg['B']} T={cfg['T']} V={cfg['V']}")
        results.append(bench_config(cfg, impls, args.rounds, args.round_seconds, args.seed, log, torch_threads))
    if args.compile_reps and "flax" in impls and "jrnn" in impls:
        for cfg in compile_cfgs:
            compile_times[cfg["name"]] = bench_compile(cfg, args.compile_reps, args.seed)
            log(f"  compile {cfg['name']}: {compile_times[cfg['name']]}")
    if args.seeds:
        for cfg in seeds_cfgs:
            seeds[cfg["name"]] = dict(bench_seeds(cfg, args.seeds, max(args.rounds, 3) if not args.quick else 2,
                                                  args.round_seconds, args.seed, log, args.seeds_steps),
                                      S=args.seeds)
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    report(results, compile_times, seeds, info, (load0, load1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "load": [load0, load1], "results": results,
                       "compile": compile_times, "seeds": seeds, "argv": sys.argv[1:] if argv is None else list(argv)},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

