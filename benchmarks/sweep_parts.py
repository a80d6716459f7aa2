"""Where a vmapped sweep loses its speed: jrnn's train step, value_and_grad and loss forward,
64 runs in one vmapped program against one run, GRU-H char LM (B=8, T=35, V=28).

    python benchmarks/sweep_parts.py [H]          # H = 32 by default
    PLAIN=1 python benchmarks/sweep_parts.py      # the plain scan instead of the fast recurrence

Prints each part's time for one run and for 64, and the throughput ratio (64 x one / all).
"""
import time, sys, jax, jax.numpy as jnp, numpy as np
import jrnn
from jrnn.models import Batch, language_model, sequence_loss
from jrnn.step import train_step, init_state, init_states, make_optimizer
from jrnn import grads
H = int(sys.argv[1]) if len(sys.argv) > 1 else 32
R, B, T, V = 64, 8, 35, 28
import os
cell = jrnn.gru(H)
if os.environ.get("PLAIN"): cell = cell._replace(fast=None)
model = language_model(cell, V)
opt = make_optimizer("sgd", 1.0, 1.0, inject=True)
est = grads.full()
rng = np.random.default_rng(0)
batch = Batch(jnp.asarray(rng.integers(0, V, (T, B)), jnp.int32), jnp.asarray(rng.integers(0, V, (T, B)), jnp.int32))
def best(f, n, reps=5):
    b = 1e9
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n): out = f()
        jax.block_until_ready(out); b = min(b, (time.perf_counter() - t0) / n)
    return b
s1 = init_state(model, opt, est, jax.random.key(0), B)
sR = init_states(model, opt, est, jax.random.split(jax.random.key(0), R), B)
st1 = train_step(model, opt, est, donate=False, check=False)
stR = train_step(model, opt, est, seeds=R, donate=False, check=False)
k1 = jax.random.key(1); kR = jax.random.split(k1, R)
jax.block_until_ready(st1(s1, batch, k1)); jax.block_until_ready(stR(sR, batch, kR))
t1 = best(lambda: st1(s1, batch, k1), 50); tR = best(lambda: stR(sR, batch, kR), 5)
print(f"train_step GRU-{H}: one {t1*1e6:.0f} us, {R} vmapped {tR*1e6:.0f} us -> {R*t1/tR:.2f}x")
# pieces: loss+grad only
def vg(p, c): return est.value_and_grad(model, p, c, batch, k1)[:2]
g1 = jax.jit(vg); gR = jax.jit(jax.vmap(vg))
jax.block_until_ready(g1(s1.params, s1.carry)); jax.block_until_ready(gR(sR.params, sR.carry))
t1 = best(lambda: g1(s1.params, s1.carry), 50); tR = best(lambda: gR(sR.params, sR.carry), 5)
print(f"value_and_grad:  one {t1*1e6:.0f} us, {R} vmapped {tR*1e6:.0f} us -> {R*t1/tR:.2f}x")
def fw(p, c): return sequence_loss(model, p, c, batch)
f1 = jax.jit(fw); fR = jax.jit(jax.vmap(fw))
jax.block_until_ready(f1(s1.params, s1.carry)); jax.block_until_ready(fR(sR.params, sR.carry))
t1 = best(lambda: f1(s1.params, s1.carry), 50); tR = best(lambda: fR(sR.params, sR.carry), 5)
print(f"loss forward:    one {t1*1e6:.0f} us, {R} vmapped {tR*1e6:.0f} us -> {R*t1/tR:.2f}x")
