#!/usr/bin/env python
"""What the train step's eager batch check costs (``train_step(check=True)``, the default).

For each config, times the same compiled step with and without the check, on
host (NumPy) batches and on device (``jax.Array``) batches, interleaved, and
prints ms per step and the overhead. The check reads token ids on the host
(NumPy min/max) or runs one tiny jitted reduction and fetches one bool
(device arrays), which also ends the overlap of Python dispatch with the
running step.

    python benchmarks/validation_cost.py            # a minute or two on 2 cores
    python benchmarks/validation_cost.py --quick
"""

from __future__ import annotations

import argparse
import platform
import time

import jrnn

jrnn.reuse_host_memory()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

CONFIGS = {"gru32-B8": (32, 8), "gru256-B32": (256, 32)}
V, T = 64, 35


def _time(step, state, batches, key, n):
    for b in batches[:2]:  # warm
        state, m = step(state, b, key)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for i in range(n):
        state, m = step(state, batches[i % len(batches)], key)
    jax.block_until_ready(state)
    return state, (time.perf_counter() - t0) / n


def run(name, H, B, n, rounds):
    model = jrnn.language_model(jrnn.gru(H), V)
    opt = jrnn.make_optimizer("sgd", 0.1, 1.0)
    rng = np.random.default_rng(0)
    host = [jrnn.Batch(*(rng.integers(0, V, (T, B)).astype(np.int32) for _ in range(2)))
            for _ in range(8)]
    dev = [jrnn.Batch(jnp.asarray(b.inputs), jnp.asarray(b.targets)) for b in host]
    checked = jrnn.train_step(model, opt)
    raw = checked.jitted  # the same compiled function, without the check
    state = jrnn.init_state(model, opt, jrnn.grads.full(), jax.random.key(0), B)
    key = jax.random.key(1)
    best = {}
    for _ in range(rounds):  # interleaved rounds, min over rounds
        for label, step, data in (("raw host", raw, host), ("checked host", checked, host),
                                  ("raw device", raw, dev), ("checked device", checked, dev)):
            state, s = _time(step, state, data, key, n)
            best[label] = min(best.get(label, np.inf), s)
    print(f"{name:12s} " + "  ".join(f"{k} {1e3 * v:7.3f} ms" for k, v in best.items())
          + f"  overhead host {best['checked host'] / best['raw host'] - 1:+.1%}"
          f" device {best['checked device'] / best['raw device'] - 1:+.1%}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    n, rounds = (20, 1) if a.quick else (200, 5)
    print(f"{platform.processor() or platform.machine()}, jax {jax.__version__}, {jax.devices()[0]}; "
          f"{n} steps x {rounds} rounds, min")
    for name, (H, B) in CONFIGS.items():
        run(name, H, B, n if H < 256 else max(n // 4, 5), rounds)


if __name__ == "__main__":
    main()
