"""Data parallelism (jrnn.parallel): 8 forced CPU devices and 2 real processes vs one device.

The multi-device runs happen in subprocesses (``tests/parallel_worker.py``): the
device count is fixed when JAX's backend starts, and ``jax.distributed`` needs
processes of its own.
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jrnn
from jrnn import parallel

WORKER = Path(__file__).with_name("parallel_worker.py")


def _worker_module():
    spec = importlib.util.spec_from_file_location("parallel_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _env():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return dict(env, JAX_PLATFORMS="cpu")


def test_eight_devices_give_the_one_device_params_for_the_bptt_family_and_rtrl(tmp_path):
    subprocess.run([sys.executable, str(WORKER), "devices", str(tmp_path)], check=True,
                   env=_env(), timeout=600)
    r = json.loads((tmp_path / "devices.json").read_text())
    for spec in ("full", "truncated:3", "tbptt:2", "randomized:0.5", "checkpointed:2", "rtrl"):
        # the carry really is split over the devices, the params really replicated
        assert r[spec]["carry_spec"] == "P('data',)", (spec, r[spec])
        assert r[spec]["param_spec"] == "P()", (spec, r[spec])
        assert r[spec]["max_param_diff"] < 1e-6, (spec, r[spec])
    assert r["fit_carry_spec"] == "P(None, 'data')"  # [S, B, H] under a sweep
    assert r["fit_max_param_diff"] < 1e-6
    assert r["fit_resumed_equal"] is True  # interrupted + resumed == uninterrupted, bitwise
    assert "batch_size 12 does not split over 8 devices" in r["odd_batch_error"]
    # 8 runs split by run over 8 devices (params [S, H, V] sharded on S) = the same sweep on one
    assert r["sweep_param_spec"] == "P('data', None, None)"
    # measured 1.3e-5: each device runs a [1, ...] batched product where one device ran [8, ...],
    # and Adam's first updates (lr * g / |g|, lr up to 0.03) pass a last-bit difference on
    assert r["sweep_max_param_diff"] < 1e-4 and r["sweep_runs_differ"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_one_process_params_and_resume_bitwise(tmp_path):
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, str(WORKER), "process", str(i), port, str(tmp_path)],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    try:
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], logs
    info = json.loads((tmp_path / "process.json").read_text())
    assert (info["processes"], info["devices"], info["local_devices"]) == (2, 4, 2)
    assert info["local_columns"] == [0, 8]  # process 0 read columns 0..7 of 16
    # the reference: the same global batches, one process, one device
    w = _worker_module()
    model, opt, data = w.problem()
    ref = jrnn.fit(model, opt, lambda e: data, batch_size=w.B,
                   config=jrnn.LoopConfig(epochs=2, log_every=2, progress=False, quiet=True))
    whole, resumed = np.load(tmp_path / "whole.npz"), np.load(tmp_path / "resumed.npz")
    mine = [np.asarray(x) for x in jax.tree.leaves(ref.state.params)]
    assert max(float(np.max(np.abs(whole[f"arr_{i}"] - a))) for i, a in enumerate(mine)) < 1e-6
    assert all(np.array_equal(whole[k], resumed[k]) for k in whole)
    # process 0 alone logs: one metrics.jsonl line per record, its messages only once
    lines = (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(info["history"])
    assert [json.loads(s)["step"] for s in lines] == [h["step"] for h in info["history"]]
    assert "resumed from step 4" in logs[0] and "resumed from" not in logs[1]


def test_mesh_and_batch_checks_say_what_is_wrong():
    with pytest.raises(ValueError, match="between 1 and the 1 device"):
        parallel.data_mesh(3)
    with pytest.raises(ValueError, match="'all', a count"):
        parallel.data_mesh("two")
    mesh = parallel.data_mesh(1)
    assert mesh.axis_names == ("data",) and mesh.devices.size == 1
    assert parallel.process_columns(16) == slice(0, 16)  # one process holds every column
    with pytest.raises(ValueError, match="devices must be 'all'"):
        jrnn.LoopConfig(devices="0")
    assert jrnn.LoopConfig(devices="8").devices == "8"


def test_a_one_device_mesh_trains_exactly_like_no_mesh():
    w = _worker_module()
    model, opt, data = w.problem()
    mesh = parallel.data_mesh(1)
    finals = []
    for m in (None, mesh):
        st = jrnn.init_state(model, opt, jrnn.grads.full(), jax.random.key(0), w.B)
        st = st if m is None else parallel.put_state(st, m, w.B)
        step = jrnn.train_step(model, opt, mesh=m)
        for i, b in enumerate(data[:2]):
            st, _ = step(st, b, jax.random.key(i))
        finals.append(st)
    for a, b in zip(jax.tree.leaves(finals[0]), jax.tree.leaves(finals[1])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_cli_trains_on_two_devices_like_on_one(tmp_path):
    flags = ["train", "--epochs", "1", "--hidden", "16", "--batch-size", "8", "--num-steps", "10",
             "--max-tokens", "3000", "--sample-length", "0", "--no-progress"]
    env = dict(_env(), XLA_FLAGS="--xla_force_host_platform_device_count=2")
    code = "import sys; from jrnn.cli import main; sys.exit(main(sys.argv[1:]))"
    last = {}
    for devices in (None, "2"):
        out = tmp_path / f"run-{devices}"
        extra = [] if devices is None else ["--devices", devices]
        subprocess.run([sys.executable, "-c", code, *flags, "--out", str(out), *extra], check=True,
                       env=env, timeout=300, capture_output=True)
        records = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
        last[devices] = records[-1]
        assert json.loads((out / "config.json").read_text())["loop"]["devices"] == devices
    assert last["2"]["val_loss"] == pytest.approx(last[None]["val_loss"], rel=1e-5)
    assert last["2"]["step"] == last[None]["step"] > 0
