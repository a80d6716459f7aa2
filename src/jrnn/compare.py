"""Compare a gradient estimator with a reference: alignment, bias and variance, memory, time.

Small pure functions a researcher composes to put their own estimator beside
:func:`jrnn.grads.full` (or any other reference), on the same params, batch
and carry:

- :func:`alignment`: cosine and relative L2 error of one estimate against the
  reference gradient (pytrees; optionally per leaf);
- :func:`draws` and :func:`bias_variance`: many draws of a stochastic
  estimator (one per PRNG key) and their Monte-Carlo bias and variance, with
  the noise floor of the bias, so that "unbiased within Monte-Carlo error" is
  a number one can assert on;
- :func:`compiled_memory`: the bytes XLA's buffer plan gives a compiled step;
- :func:`step_time`: the wall time of a compiled step (compiled once, then
  the min and median of timed calls).

Example (the README's "Comparing your own estimator to full()")::

    grad = lambda est: jax.jit(lambda p, k: est.value_and_grad(model, p, carry, batch, k)[1])
    full, mine = grad(jrnn.grads.full()), grad(jrnn.grads.randomized(0.8))
    compare.alignment(mine(params, key), full(params, key))["cos"]
    stats = compare.bias_variance(
        compare.draws(lambda k: mine(params, k), jax.random.split(key, 256)), full(params, key))
    stats["bias_ratio"]  # ~1 for an unbiased estimator; grows like sqrt(N) with a bias
"""

from __future__ import annotations

import functools
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from . import validation

__all__ = ["alignment", "draws", "bias_variance", "compiled_memory", "step_time"]


def _f32(x):
    """``x`` as an array of at least float32 precision (bf16/f16 are upcast)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _spec(tree, lead: tuple = ()):
    """Abstract shapes/dtypes of ``tree``, with ``lead`` prepended to every shape."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(lead + tuple(jnp.shape(a)), jnp.result_type(a)), tree)


def alignment(estimate, reference, *, per_leaf: bool = False) -> dict:
    """Cosine similarity and relative L2 error of ``estimate`` against ``reference``.

    Both pytrees are flattened into one vector (all leaves together), so
    ``cos = <g, r> / (|g| |r|)`` and ``rel_err = |g - r| / |r|``. A zero
    ``reference`` gives ``nan``/``inf`` (the comparison is undefined). Usable
    under ``jit`` and ``vmap`` (e.g. over the draws of :func:`draws`).

    Args:
      estimate: a gradient pytree (e.g. ``{"cell": ..., "head": ...}``).
      reference: a pytree of the same structure, shapes and dtypes.
      per_leaf: also return the same two numbers for every leaf.

    Returns:
      A dict of scalars: ``cos``, ``rel_err``, ``norm`` (``|g|``),
      ``ref_norm`` (``|r|``); with ``per_leaf``, ``leaves`` maps each leaf's
      path (``"['cell']['W_h']"``) to ``{"cos", "rel_err"}``.

    Raises:
      TypeError, ValueError: the pytrees differ in structure, shape or dtype.
    """
    validation.check_tree("estimate", estimate, _spec(reference), "the reference gradient's")
    if not jax.tree.leaves(reference):
        raise ValueError("reference has no array leaves: nothing to compare")
    return _alignment(estimate, reference, per_leaf)


@functools.partial(jax.jit, static_argnums=2)
def _alignment(estimate, reference, per_leaf):
    flat = jax.tree_util.tree_flatten_with_path(reference)[0]
    dots, ee, rr, dd = [], [], [], []
    for g, (_, r) in zip(jax.tree.leaves(estimate), flat):
        g, r = _f32(g), _f32(r)
        dots.append(jnp.vdot(g, r))
        ee.append(jnp.vdot(g, g))
        rr.append(jnp.vdot(r, r))
        dd.append(jnp.vdot(g - r, g - r))
    norm, ref_norm = jnp.sqrt(sum(ee)), jnp.sqrt(sum(rr))
    out = {"cos": sum(dots) / (norm * ref_norm), "rel_err": jnp.sqrt(sum(dd)) / ref_norm,
           "norm": norm, "ref_norm": ref_norm}
    if per_leaf:
        out["leaves"] = {jax.tree_util.keystr(p): {"cos": d / jnp.sqrt(e * r), "rel_err": jnp.sqrt(q / r)}
                         for (p, _), d, e, r, q in zip(flat, dots, ee, rr, dd)}
    return out


def draws(fn: Callable[[Any], Any], keys, *, batch_size: int | None = None):
    """``fn(key)`` for every key, stacked: the Monte-Carlo sample of a stochastic estimator.

    Args:
      fn: ``key -> pytree`` (e.g. ``lambda k: est.value_and_grad(model, params,
        carry, batch, k)[1]``); traced once and compiled.
      keys: ``[N]`` PRNG keys (``jax.random.split(key, N)``).
      batch_size: evaluate this many keys at a time (``jax.lax.map``) to bound
        memory; ``None`` vmaps all ``N`` at once.

    Returns:
      The pytree of ``fn``'s outputs with a leading ``[N]`` axis on every leaf.
    """
    batch_size = validation.check_int("batch_size", batch_size, allow_none=True)
    if batch_size is None:
        return jax.jit(jax.vmap(fn))(keys)
    return jax.jit(lambda ks: jax.lax.map(fn, ks, batch_size=batch_size))(keys)


def bias_variance(samples, reference) -> dict:
    """Monte-Carlo bias and variance of ``N`` draws of an estimator, relative to ``reference``.

    With ``m`` the mean of the draws ``g_1 .. g_N`` (flattened over all
    leaves) and ``r`` the reference:

    - ``bias = |m - r| / |r|``;
    - ``variance = sum_k |g_k - m|^2 / (N - 1) / |r|^2`` (the trace of the
      covariance, relative to ``|r|^2``);
    - ``bias_floor = sqrt(variance / N)``: the bias an *unbiased* estimator
      shows from sampling noise alone (``E|m - r|^2 = trace(cov) / N``);
    - ``bias_ratio = bias / bias_floor``: about 1 for an unbiased estimator;
      a true relative bias ``b`` makes it grow like ``b sqrt(N / variance)``.
      ``bias_ratio**2`` has mean about 1 when unbiased, so by Markov's
      inequality ``P(bias_ratio > k) <~ 1/k^2`` whatever the covariance
      (far less for Gaussian noise over many parameters); ``bias_ratio < 3``
      is a reasonable "unbiased within Monte-Carlo error".

    Args:
      samples: the pytree of ``reference`` with a leading ``[N]`` axis on
        every leaf (``N >= 2``), e.g. from :func:`draws`.
      reference: the reference gradient pytree (e.g. full BPTT's).

    Returns:
      A dict of scalars: ``n``, ``bias``, ``bias_floor``, ``bias_ratio``,
      ``variance``, ``cos`` and ``cos_std`` (mean and std over the draws of
      each draw's cosine with ``r``), ``rel_err`` and ``norm`` (means over
      draws of ``|g_k - r| / |r|`` and ``|g_k|``), ``cos_of_mean`` (cosine of
      ``m`` with ``r``), ``ref_norm`` (``|r|``).

    Raises:
      TypeError, ValueError: ``samples`` is not ``reference`` with a leading
        axis of ``N >= 2``.
    """
    leaves = jax.tree.leaves(samples)
    if not leaves or jnp.ndim(leaves[0]) < 1:
        raise ValueError("samples must be the reference pytree with a leading [N] axis of draws, "
                         f"got leaves of shapes {[jnp.shape(a) for a in leaves[:3]]}")
    n = jnp.shape(leaves[0])[0]
    if n < 2:
        raise ValueError(f"samples must hold N >= 2 draws to estimate a variance, got N={n}")
    validation.check_tree("samples", samples, _spec(reference, (n,)),
                          f"the reference gradient's with a leading axis of N={n} draws")
    return {"n": int(n), **_bias_variance(samples, reference)}


@jax.jit
def _bias_variance(samples, reference):
    n = jax.tree.leaves(samples)[0].shape[0]
    per_draw = jax.vmap(lambda g: _alignment(g, reference, False))(samples)
    mean = jax.tree.map(lambda a: _f32(a).mean(0), samples)
    of_mean = _alignment(mean, jax.tree.map(_f32, reference), False)
    ss = sum(jnp.sum((_f32(a) - m) ** 2) for a, m in zip(jax.tree.leaves(samples), jax.tree.leaves(mean)))
    variance = ss / (n - 1) / of_mean["ref_norm"] ** 2
    floor = jnp.sqrt(variance / n)
    return {"bias": of_mean["rel_err"], "bias_floor": floor,
            "bias_ratio": of_mean["rel_err"] / floor, "variance": variance,
            "cos": per_draw["cos"].mean(), "cos_std": per_draw["cos"].std(),
            "rel_err": per_draw["rel_err"].mean(), "cos_of_mean": of_mean["cos"],
            "norm": per_draw["norm"].mean(), "ref_norm": of_mean["ref_norm"]}


def _compile(fn, args) -> tuple[jax.stages.Compiled, float | None]:
    if isinstance(fn, jax.stages.Compiled):
        return fn, None
    if not callable(fn):
        raise TypeError(f"fn must be a function or a jax.stages.Compiled, got {type(fn).__name__}")
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def compiled_memory(fn, *args) -> dict:
    """The memory XLA's buffer assignment plans for one call of ``fn(*args)``.

    A static plan of the compiled executable
    (``jax.jit(fn).lower(*args).compile().memory_analysis()``), not a measured
    resident size: nothing runs.

    Args:
      fn: a function, a ``jax.jit``-wrapped function (its ``donate_argnums``
        count: donated inputs are aliased to outputs), or an already compiled
        ``jax.stages.Compiled`` (then ``args`` are not needed).
      *args: example arguments (arrays or ``jax.ShapeDtypeStruct``); close
        over static arguments (``functools.partial``).

    Returns:
      A dict of byte counts: ``temp`` (temporaries), ``argument``, ``output``,
      ``alias`` (output bytes that reuse donated argument buffers),
      ``generated_code`` and ``total = temp + argument + output - alias``,
      the bytes the executable needs at once. Empty if the backend does not
      report a buffer plan.
    """
    compiled, _ = _compile(fn, args)
    m = compiled.memory_analysis()
    if m is None:
        return {}
    out = {k: int(getattr(m, f"{k}_size_in_bytes", 0) or 0)
           for k in ("temp", "argument", "output", "alias", "generated_code")}
    out["total"] = out["temp"] + out["argument"] + out["output"] - out["alias"]
    return out


def step_time(fn, *args, repeats: int = 10, warmup: int = 1) -> dict:
    """Wall time of one compiled call of ``fn(*args)``: compiled once, then timed calls.

    Every call gets the same arguments and ends with ``jax.block_until_ready``
    on its outputs. Arguments the executable donates are copied before each
    call (outside the timed region), so a donating train step can be timed
    as it is.

    Args:
      fn: a function, a ``jax.jit``-wrapped function, or a ``jax.stages.Compiled``.
      *args: the arguments (close over static ones).
      repeats: timed calls (>= 1).
      warmup: untimed calls first (>= 0; the first execution pays one-time costs).

    Returns:
      A dict: ``compile_s`` (trace + compile seconds; ``None`` for a
      ``Compiled`` given), ``min_s``, ``median_s`` and ``times_s`` (every
      timed call, in order).
    """
    repeats = validation.check_int("repeats", repeats)
    warmup = validation.check_int("warmup", warmup, 0)
    compiled, compile_s = _compile(fn, args)
    flat, tree = jax.tree.flatten(args)
    donated = [bool(getattr(i, "donated", False)) for i in jax.tree.leaves(compiled.args_info)]
    if len(donated) != len(flat):  # not matched leaf for leaf: copy every array, to be safe
        donated = [isinstance(a, jax.Array) for a in flat]

    def fresh():
        leaves = [jnp.array(a, copy=True) if d else a for a, d in zip(flat, donated)]
        jax.block_until_ready([a for a, d in zip(leaves, donated) if d])
        return jax.tree.unflatten(tree, leaves)

    times = []
    for i in range(warmup + repeats):
        a = fresh()
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*a))
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return {"compile_s": compile_s, "min_s": min(times), "median_s": statistics.median(times),
            "times_s": times}
