"""TensorBoard scalars beside metrics.jsonl, read back from the event files."""

import glob
import json
import struct

import numpy as np
import pytest

import jrnn

tensorboardX = pytest.importorskip("tensorboardX")
from tensorboardX.proto import event_pb2  # noqa: E402


def read_events(logdir):
    """``[(step, tag, value)]`` of every scalar in the TFRecord event files under ``logdir``
    (records: uint64 length, uint32 crc, payload, uint32 crc)."""
    out = []
    for path in sorted(glob.glob(f"{logdir}/events.out.tfevents.*")):
        data = open(path, "rb").read()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            ev = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            out += [(ev.step, v.tag, v.simple_value) for v in ev.summary.value]
    return out


def _fit(tmp_path, epochs, resume=False, seeds=1):
    model = jrnn.language_model(jrnn.elman(8), 7)
    rng = np.random.default_rng(0)
    data = [jrnn.Batch(rng.integers(0, 7, (5, 4)).astype(np.int32),
                       rng.integers(0, 7, (5, 4)).astype(np.int32)) for _ in range(3)]
    cfg = jrnn.LoopConfig(epochs=epochs, log_every=2, tensorboard=True, progress=False, quiet=True,
                          seeds=seeds)
    return jrnn.fit(model, jrnn.make_optimizer("sgd", 0.5), lambda e: data, batch_size=4,
                    validate=lambda p: {"val_loss": 1.5}, config=cfg, run_dir=tmp_path, resume=resume)


def test_every_record_number_is_a_scalar_at_its_step(tmp_path):
    res = _fit(tmp_path, 2)
    events = read_events(tmp_path / "tensorboard")
    want = [(r["step"], k, float(v)) for r in res.history for k, v in r.items()
            if k not in ("step", "epoch") and isinstance(v, (int, float))]
    assert len(events) == len(want) > 0
    for (s1, t1, v1), (s2, t2, v2) in zip(events, want):
        assert (s1, t1) == (s2, t2) and v1 == pytest.approx(v2, rel=1e-6)  # float32 in the file
    assert {t for _, t, _ in events} >= {"train_loss", "train_ppl", "grad_norm", "val_loss"}


def test_a_sweep_logs_each_run_and_a_resumed_run_ends_with_the_records(tmp_path):
    _fit(tmp_path, 1, seeds=2)
    res = _fit(tmp_path, 2, resume=True, seeds=2)
    events = read_events(tmp_path / "tensorboard")
    last = {(s, t): v for s, t, v in events}  # TensorBoard shows the newest value of a step
    for r in res.history:
        for i, v in enumerate(r.get("train_loss", [])):
            assert last[(r["step"], f"train_loss/run_{i}")] == pytest.approx(v, rel=1e-6)
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [r["step"] for r in res.history]
