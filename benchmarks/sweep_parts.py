"""Many runs in one compiled program against the same runs one after another.

For each config (a GRU char LM, V=28, T=35) it times, in interleaved rounds:

- ``one``: the compiled function for one run (``R`` sequential runs cost ``R`` times it);
- ``vmap``: ``R`` runs in one ``jax.vmap``-ed program (``train_step(seeds=R)`` for the step);
- ``map:C``: the same ``R`` runs as ``jax.lax.map(..., batch_size=C)`` (``R/C`` chunks of
  ``C`` vmapped runs in a loop: a smaller working set per chunk);

for three parts: jrnn's train step (SGD, clipping 1.0, the finite check), the estimator's
``value_and_grad`` and the loss forward. The ratio is the throughput of ``R`` runs in one
program over ``R`` sequential runs (``R * one / all``): above 1 the sweep pays.

    python benchmarks/sweep_parts.py                      # GRU-32/64 at B=8, GRU-256 at B=32
    python benchmarks/sweep_parts.py --configs gru32-b8 --runs 64 --rounds 3
    python benchmarks/sweep_parts.py --no-reuse           # without jrnn.reuse_host_memory()
    python benchmarks/sweep_parts.py --plain              # the plain scan, not the fast recurrence
    python benchmarks/sweep_parts.py --quick              # smoke run (tests)

Prints one Markdown table (median over rounds; the machine, load and jax version above it).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="gru32-b8,gru64-b8,gru256-b32",
                   help="comma list of gru<H>-b<B>")
    p.add_argument("--runs", type=int, default=64, help="R, runs in one program")
    p.add_argument("--chunk", type=int, default=16, help="C of the map:C row (0: skip it)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--parts", default="step,grad,forward")
    p.add_argument("--no-reuse", action="store_true", help="skip jrnn.reuse_host_memory()")
    p.add_argument("--plain", action="store_true", help="cell.fast=None: the plain scan")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 round (smoke test)")
    return p.parse_args(argv)


def _time(f, seconds: float) -> float:
    """Seconds per call: as many calls as fit in ``seconds`` (at least 2), after one warm call."""
    import jax
    jax.block_until_ready(f())
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < seconds:
        out = f()
        n += 1
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / n


def _programs(H: int, B: int, R: int, chunk: int, parts, plain: bool, T: int = 35, V: int = 28):
    """``{(part, impl): thunk}`` for one config; every thunk runs one compiled call."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import jrnn
    from jrnn.models import Batch, sequence_loss
    cell = jrnn.gru(H)
    if plain:
        cell = cell._replace(fast=None)
    model = jrnn.language_model(cell, V)
    opt, est = jrnn.make_optimizer("sgd", 1.0, 1.0, inject=True), jrnn.grads.full()
    rng = np.random.default_rng(0)
    batch = Batch(*(jnp.asarray(rng.integers(0, V, (T, B)), jnp.int32) for _ in range(2)))
    s1 = jrnn.init_state(model, opt, est, jax.random.key(0), B)
    sR = jrnn.init_states(model, opt, est, jax.random.split(jax.random.key(0), R), B)
    k1 = jax.random.key(1)
    kR = jax.random.split(k1, R)
    out = {}
    if "step" in parts:
        st1 = jrnn.train_step(model, opt, est, donate=False, check=False)
        stR = jrnn.train_step(model, opt, est, seeds=R, donate=False, check=False)
        out["step", "one"] = lambda: st1(s1, batch, k1)
        out["step", "vmap"] = lambda: stR(sR, batch, kR)
        if chunk and chunk < R:
            stC = jax.jit(lambda s, k: jax.lax.map(lambda a: st1(a[0], batch, a[1]), (s, k),
                                                   batch_size=chunk))
            out["step", f"map:{chunk}"] = lambda: stC(sR, kR)
    fns = {}
    if "grad" in parts:
        fns["grad"] = lambda p, c: est.value_and_grad(model, p, c, batch, k1)[:2]
    if "forward" in parts:
        fns["forward"] = lambda p, c: sequence_loss(model, p, c, batch)
    for part, f in fns.items():
        g1, gR = jax.jit(f), jax.jit(jax.vmap(f))
        out[part, "one"] = lambda g1=g1: g1(s1.params, s1.carry)
        out[part, "vmap"] = lambda gR=gR: gR(sR.params, sR.carry)
        if chunk and chunk < R:
            gC = jax.jit(lambda pc, f=f: jax.lax.map(lambda a: f(*a), pc, batch_size=chunk))
            out[part, f"map:{chunk}"] = lambda gC=gC: gC((sR.params, sR.carry))
    return out


def main(argv=None) -> int:
    a = _args(argv)
    import jrnn
    if not a.no_reuse:
        jrnn.reuse_host_memory(warn=False)
    import jax
    configs = "gru8-b2" if a.quick else a.configs
    R, rounds, seconds = (4, 1, 0.05) if a.quick else (a.runs, a.rounds, 0.4)
    chunk = 2 if a.quick and a.chunk else a.chunk
    parts = a.parts.split(",")
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0]
    print(f"{cpu}, {os.cpu_count()} cores, jax {jax.__version__}, load {load:.2f} at start; "
          f"R={R} runs, {'plain scan' if a.plain else 'fast recurrence'}, "
          f"reuse_host_memory {'off' if a.no_reuse else 'on'}; median of {rounds} rounds")
    print("\n| config | part | one run | " + f"{R} in one program | ratio (R x one / all) |")
    print("|---|---|---:|---:|---:|")
    for name in configs.split(","):
        m = re.fullmatch(r"gru(\d+)-b(\d+)", name)
        if not m:
            raise SystemExit(f"config {name!r}: expected gru<H>-b<B>")
        progs = _programs(int(m[1]), int(m[2]), R, chunk, parts, a.plain)
        times = {k: [] for k in progs}
        for _ in range(rounds):  # interleaved: a noisy moment slows every implementation alike
            for k, f in progs.items():
                times[k].append(_time(f, seconds))
        med = {k: statistics.median(v) for k, v in times.items()}
        for part in parts:
            one = med[part, "one"]
            for (p, impl), t in med.items():
                if p != part or impl == "one":
                    continue
                label = "vmap" if impl == "vmap" else f"lax.map, {impl[4:]} per chunk"
                print(f"| {name} | {part} ({label}) | {one * 1e6:,.0f} us | {t * 1e3:,.2f} ms | "
                      f"**{R * one / t:.2f}x** |")
        sys.stdout.flush()
    print(f"\nload {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
