"""Data parallelism on JAX's own machinery: one mesh axis, the batch sharded, the rest replicated.

A run on ``N`` devices uses a one-axis :class:`jax.sharding.Mesh` (axis
``"data"``) over them -- every process's devices in a multi-process run
(:func:`initialize`). The train step stays the one jit-compiled function
(:func:`jrnn.train_step` with ``mesh=``): the batch's arrays (time-major
``[T, B, ...]``) and the carry's (``[B, ...]``, ``[S, B, ...]`` in a sweep)
are sharded along their batch axis with ``NamedSharding``; params, optimizer
state and the step counter are replicated. A sweep of ``S`` vmapped runs
whose count the devices divide is split by run instead (:func:`splits_runs`). XLA's SPMD partitioner then
computes the mean loss and its gradient with one all-reduce, so an
``N``-device step equals the 1-device step with the same global batch up to
the order of the floating-point sums.

Multi-process: each process calls :func:`initialize` (JAX's own
``jax.distributed``: coordinator address, process count and id, from
arguments or the ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
``JAX_PROCESS_ID`` environment variables) before any other JAX work; every
process runs the same program, holds only its columns of each global batch
(:func:`process_columns`) and contributes them with
:func:`jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ["AXIS", "data_mesh", "initialize", "process_columns", "process_part", "batch_shardings",
           "shard_batch", "state_shardings", "put_state", "constrain_state", "to_host",
           "is_main_process"]

AXIS = "data"  # the mesh's one axis: the batch is split along it


def data_mesh(devices: int | str | Sequence | None = "all") -> Mesh:
    """A one-axis mesh ``("data",)`` for data-parallel training.

    Args:
      devices: ``"all"`` or ``None`` (every device of every process),
        ``N`` (the first ``N`` of :func:`jax.devices`), or a list of devices.
    """
    every = jax.devices()
    if devices is None or devices == "all":
        chosen = every
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(every):
            raise ValueError(f"devices must be between 1 and the {len(every)} device(s) JAX sees "
                             f"({every[0].platform}), got {devices}")
        chosen = every[:int(devices)]
    elif isinstance(devices, (list, tuple)) and devices:
        chosen = list(devices)
    else:
        raise ValueError(f"devices must be 'all', a count >= 1 or a list of devices, got {devices!r}")
    if jax.process_count() > 1 and {d.process_index for d in chosen} != set(range(jax.process_count())):
        raise ValueError("a multi-process mesh must include devices of every process "
                         "(use devices='all')")
    return Mesh(np.asarray(chosen), (AXIS,))


def check_batch_size(mesh: Mesh, batch_size: int) -> None:
    """The global batch must split evenly over the mesh's devices."""
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"batch_size {batch_size} does not split over {n} devices: use a multiple "
                         f"of {n} (each device takes batch_size / {n} sequences)")


def process_columns(batch_size: int, mesh: Mesh | None = None) -> slice:
    """The columns ``[lo, hi)`` of a global batch of ``batch_size`` this process holds.

    Devices are ordered by process in :func:`data_mesh`, so process ``p`` of
    ``n`` holds the contiguous block ``p * B/n ... (p+1) * B/n``.
    """
    n, p = jax.process_count(), jax.process_index()
    if mesh is not None:
        check_batch_size(mesh, batch_size)
    if batch_size % n:
        raise ValueError(f"batch_size {batch_size} does not split over {n} processes")
    per = batch_size // n
    return slice(p * per, (p + 1) * per)


def _batch_spec(ndim: int, axis: int) -> P:
    return P(*([None] * axis + [AXIS] + [None] * (ndim - axis - 1)))


def splits_runs(mesh: Mesh, runs: int | None) -> bool:
    """Whether a sweep of ``runs`` vmapped models is split over the devices by run (each
    device trains ``runs / N`` whole models on the whole batch, no all-reduce) rather than
    by batch: in one process, when the runs divide evenly."""
    return runs is not None and runs % mesh.devices.size == 0 and jax.process_count() == 1


def batch_shardings(batch, mesh: Mesh, runs: int | None = None):
    """``NamedSharding`` s splitting each ``[T, B, ...]`` array of ``batch`` along ``B``
    (replicated when :func:`splits_runs`)."""
    if splits_runs(mesh, runs):
        return jax.tree.map(lambda x: NamedSharding(mesh, P()), batch)
    return jax.tree.map(lambda x: NamedSharding(mesh, _batch_spec(np.ndim(x), 1)), batch)


def shard_batch(batch, mesh: Mesh, *, local: bool = False, runs: int | None = None):
    """Place a time-major batch (any pytree of ``[T, B, ...]`` arrays) on the mesh, split along B.

    Args:
      batch: the global batch, or with ``local=True`` this process's columns
        of it (:func:`process_columns`; the only form a multi-process run has).
      mesh: from :func:`data_mesh`.
      runs: the vmapped runs of a sweep (see :func:`splits_runs`).
    """
    whole = splits_runs(mesh, runs)

    def put(x):
        x = np.asarray(x)
        sharding = NamedSharding(mesh, P() if whole else _batch_spec(x.ndim, 1))
        if not local:
            return jax.device_put(x, sharding)
        shape = (x.shape[0], x.shape[1] * jax.process_count()) + x.shape[2:]
        return jax.make_array_from_process_local_data(sharding, x, shape)

    return jax.tree.map(put, batch)


def _state_specs(state, batch_size: int, runs: int | None, split: bool = False):
    """Partition specs of a :class:`~jrnn.step.TrainState`: the carry's batch axis
    (axis 0, or 1 under a sweep of ``runs``) sharded where it has ``batch_size``
    entries; everything else replicated. With ``split`` (:func:`splits_runs`) every
    leaf is split along its run axis instead."""
    axis = 0 if runs is None else 1
    if runs is not None and split:  # every leaf of a sweep's state is [S, ...]
        return jax.tree.map(lambda x: _batch_spec(max(np.ndim(x), 1), 0), state)

    def carry_spec(x):
        shape = np.shape(x)
        if len(shape) > axis and shape[axis] == batch_size:
            return _batch_spec(len(shape), axis)
        return P()

    replicated = lambda tree: jax.tree.map(lambda _: P(), tree)
    return type(state)(replicated(state.params), replicated(state.opt_state),
                       jax.tree.map(carry_spec, state.carry), P())


def state_shardings(state, mesh: Mesh, batch_size: int, runs: int | None = None):
    """``NamedSharding`` s for a train state (see :func:`_state_specs`), to ``device_put`` it."""
    split = splits_runs(mesh, runs)
    if not split:
        check_batch_size(mesh, batch_size)
    return jax.tree.map(lambda s: NamedSharding(mesh, s), _state_specs(state, batch_size, runs, split),
                        is_leaf=lambda s: isinstance(s, P))


def constrain_state(state, mesh: Mesh, batch_size: int, runs: int | None = None):
    """``with_sharding_constraint`` of a traced train state to :func:`state_shardings`."""
    return jax.lax.with_sharding_constraint(state, state_shardings(state, mesh, batch_size, runs))


def put_state(state, mesh: Mesh, batch_size: int, runs: int | None = None):
    """A train state (host or device) placed on ``mesh``: replicated, the carry batch-sharded.

    In a multi-process run every process passes the same global state (same
    seed, same restored checkpoint); each keeps its devices' parts.
    """
    shardings = state_shardings(state, mesh, batch_size, runs)
    if jax.process_count() == 1:
        return jax.device_put(state, shardings)

    def put(x, s):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:  # already global
            return jax.device_put(x, s)
        x = np.asarray(jax.device_get(x))  # this process's copy of the whole array
        return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])

    return jax.tree.map(put, state, shardings)


def to_host(tree):
    """NumPy copies of a pytree's arrays, whole on every process: a replicated array from
    its local copy, an array split over processes gathered (for evaluation, generation
    and saving outside the compiled step)."""
    def get(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(jax.device_get(x))
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(get, tree)


def process_part(batch, batch_size: int):
    """This process's columns (:func:`process_columns`) of a global time-major batch."""
    cols = process_columns(batch_size)
    return jax.tree.map(lambda x: x[:, cols], batch)


def is_main_process() -> bool:
    """Whether this process logs, plots, writes metrics and draws the progress bar."""
    return jax.process_index() == 0


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_devices: int | None = None) -> None:
    """Join a multi-process run with ``jax.distributed.initialize`` (call before other JAX work).

    Args:
      coordinator_address: ``host:port`` of process 0 (default
        ``$JAX_COORDINATOR_ADDRESS``).
      num_processes, process_id: default ``$JAX_NUM_PROCESSES``, ``$JAX_PROCESS_ID``.
      local_devices: on CPU, how many devices this process exposes
        (``--xla_force_host_platform_device_count``; must be set before the
        backend starts).

    On CPU the processes' collectives go through gloo
    (``jax_cpu_collectives_implementation``), which this sets.
    """
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    if not coordinator_address or num_processes is None or process_id is None:
        raise ValueError("a multi-process run needs the coordinator address, the process count "
                         "and this process's id (arguments, or JAX_COORDINATOR_ADDRESS, "
                         "JAX_NUM_PROCESSES, JAX_PROCESS_ID)")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
    if local_devices is not None:
        flags = env.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={int(local_devices)}".strip()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


def _env_int(name: str) -> Any:
    v = os.environ.get(name)
    return None if v in (None, "") else int(v)
