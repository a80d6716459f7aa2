"""Subprocess side of tests/test_parallel.py (not a test module).

``python parallel_worker.py devices OUT``: one process with 8 forced CPU devices; each
estimator's train steps and a swept, checkpointed, resumed ``fit`` with and without a mesh.
``python parallel_worker.py process ID PORT OUT``: one of two processes (2 CPU devices each)
joined by ``jax.distributed`` on 127.0.0.1; a fit, and a fit interrupted and resumed.
Results are written as ``.npz`` / JSON into ``OUT`` for the test to compare.
"""

import json
import os
import sys

import numpy as np

B, T, V, H = 16, 6, 11, 16


def problem():
    import jrnn

    rng = np.random.default_rng(0)
    data = [jrnn.Batch(rng.integers(0, V, (T, B)).astype(np.int32),
                       rng.integers(0, V, (T, B)).astype(np.int32)) for _ in range(4)]
    return jrnn.language_model(jrnn.gru(H), V), jrnn.make_optimizer("adam", 0.01, 1.0), data


def leaves(tree):
    import jax
    from jax.experimental import multihost_utils

    return [np.asarray(multihost_utils.process_allgather(x, tiled=True)) for x in jax.tree.leaves(tree)]


def devices(out):
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax
    import jrnn
    from jrnn import parallel

    assert jax.device_count() == 8, jax.devices()
    mesh = parallel.data_mesh("all")
    model, opt, data = problem()
    report = {}
    for spec in ("full", "truncated:3", "tbptt:2", "randomized:0.5", "checkpointed:2", "rtrl"):
        est = jrnn.grads.parse(spec)
        finals = []
        for m in (None, mesh):
            st = jrnn.init_state(model, opt, est, jax.random.key(0), B)
            st = st if m is None else parallel.put_state(st, m, B)
            step = jrnn.train_step(model, opt, est, mesh=m)
            for i, b in enumerate(data):
                st, _ = step(st, b, jax.random.key(i))
            finals.append(st)
        report[spec] = {
            "max_param_diff": max(float(np.max(np.abs(a - b))) for a, b in
                                  zip(leaves(finals[0].params), leaves(finals[1].params))),
            "carry_spec": str(jax.tree.leaves(finals[1].carry)[0].sharding.spec),
            "param_spec": str(finals[1].params["head"]["W_hq"].sharding.spec)}
    # the loop: a 2-seed sweep, checkpointed and resumed, on 8 devices and on one
    fits = {}
    for dev in (None, "8"):
        run = lambda epochs, resume, d: jrnn.fit(
            model, opt, lambda e: data, batch_size=B, run_dir=d, resume=resume,
            config=jrnn.LoopConfig(epochs=epochs, seeds=2, devices=dev, log_every=2, save_every=3,
                                   progress=False, quiet=True))
        whole = run(2, False, f"{out}/{dev}-whole")
        if dev is None:  # resume on one device is tested elsewhere (tests/test_loop.py)
            fits[dev] = (whole, None)
            continue
        run(1, False, f"{out}/{dev}-cut")
        fits[dev] = (whole, run(2, True, f"{out}/{dev}-cut"))
    report["fit_resumed_equal"] = all(np.array_equal(a, b) for a, b in zip(
        leaves(fits["8"][0].state), leaves(fits["8"][1].state)))
    report["fit_max_param_diff"] = max(float(np.max(np.abs(a - b))) for a, b in zip(
        leaves(fits[None][0].state.params), leaves(fits["8"][0].state.params)))
    report["fit_carry_spec"] = str(jax.tree.leaves(fits["8"][0].state.carry)[0].sharding.spec)
    # a sweep of 8 runs (4 seeds x 2 learning rates) split by run over the 8 devices
    sweep_opt = jrnn.make_optimizer("adam", 0.01, 1.0, inject=True)
    sweeps = [jrnn.fit(model, sweep_opt, lambda e: data, batch_size=B, config=jrnn.LoopConfig(
        seeds=4, lrs=(0.01, 0.03), devices=dev, progress=False, quiet=True)) for dev in (None, "8")]
    report["sweep_max_param_diff"] = max(float(np.max(np.abs(a - b))) for a, b in zip(
        leaves(sweeps[0].state.params), leaves(sweeps[1].state.params)))
    report["sweep_param_spec"] = str(sweeps[1].state.params["head"]["W_hq"].sharding.spec)
    report["sweep_runs_differ"] = bool(np.ptp(leaves(sweeps[1].state.params)[0], axis=0).max() > 0)
    try:
        jrnn.fit(model, opt, lambda e: data, batch_size=12, config=jrnn.LoopConfig(devices="8"))
    except ValueError as e:
        report["odd_batch_error"] = str(e)
    with open(f"{out}/devices.json", "w") as f:
        json.dump(report, f)


def process(pid, port, out):
    from jrnn import parallel

    parallel.initialize(f"127.0.0.1:{port}", 2, pid, local_devices=2)
    import jax
    import jrnn

    model, opt, data = problem()
    cols = parallel.process_columns(B)  # this process reads only its columns of each batch
    local = [jrnn.Batch(b.inputs[:, cols], b.targets[:, cols]) for b in data]
    run = lambda epochs, resume, d: jrnn.fit(
        model, opt, lambda e: local, batch_size=B, run_dir=d, resume=resume,
        config=jrnn.LoopConfig(epochs=epochs, devices="all", log_every=2, save_every=3,
                               progress=False))
    whole = run(2, False, f"{out}/whole")
    run(1, False, f"{out}/cut")
    resumed = run(2, True, f"{out}/cut")
    params, again = leaves(whole.state.params), leaves(resumed.state.params)
    if pid == 0:
        np.savez(f"{out}/whole.npz", *params)
        np.savez(f"{out}/resumed.npz", *again)
        with open(f"{out}/process.json", "w") as f:
            json.dump({"devices": jax.device_count(), "local_devices": jax.local_device_count(),
                       "processes": jax.process_count(), "local_columns": [cols.start, cols.stop],
                       "history": whole.history}, f)


if __name__ == "__main__":
    if sys.argv[1] == "devices":
        devices(sys.argv[2])
    else:
        process(int(sys.argv[2]), sys.argv[3], sys.argv[4])
