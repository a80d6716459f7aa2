"""Soak test (not a unit test): a long run, interrupted and resumed, ends bitwise
where the uninterrupted run ends, and memory stays flat.

Trains a GRU-16 character model (T=10, B=8, Adam, clipping, full BPTT) on the
bundled pydoc corpus for 10,000 steps (3 epochs of 3,334/3,334/3,332 batches of
the ~4,360 an epoch has, validation at each epoch end) with a checkpoint every
500 steps, twice, each in worker processes:

1. uninterrupted;
2. killed 5 times at arbitrary points and resumed each time: SIGKILL (a crash:
   the steps since the last checkpoint are redone) and SIGTERM (graceful:
   ``fit`` checkpoints the current step) alternately.

Then compares the final TrainStates (params, Adam moments, carried hidden
state, step) bit for bit and the ``metrics.jsonl`` files (timing fields
aside), and reports the workers' resident memory sampled every 500 steps.

Usage: ``python benchmarks/soak.py [--steps 10000] [--out /tmp/jrnn-soak] [--json FILE]``
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time

H, T, B = 16, 10, 8
RSS_DRIFT_BOUND_MIB = 16.0  # max RSS growth of a worker after its first 1,000 steps


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _data(steps):
    """Corpus, and how many batches each epoch contributes so that they add up to ``steps``."""
    from jrnn import data

    corpus, vocab = data.load_corpus(data.bundled_text())
    train, val = data.split(corpus, 0.05)
    avail = data.num_batches(len(train), B, T, "sequential")  # max over offsets
    avail_min = data.num_batches(len(train), B, T, "sequential", offset=T)  # min over offsets
    epochs = -(-steps // avail_min)
    per = -(-steps // epochs)
    limits = [min(per, steps - e * per) for e in range(epochs)]
    assert sum(limits) == steps and max(limits) <= avail_min <= avail
    return train, val, vocab, epochs, limits


def worker(out: str, steps: int, every: int) -> int:
    """One training process: fresh or resumed from ``out``; logs RSS to ``out/rss.jsonl``
    every 100 batches (including the ones a resumed run skips over)."""
    import jrnn
    from jrnn import data

    jrnn.reuse_host_memory()  # as the ``jrnn`` command does: memory must stay flat with it too

    train, val, vocab, epochs, limits = _data(steps)
    model = jrnn.language_model(jrnn.gru(H), len(vocab))
    opt = jrnn.make_optimizer("adam", 0.01, 1.0)
    rss_log = os.path.join(out, "rss.jsonl")
    os.makedirs(out, exist_ok=True)

    resume = os.path.isdir(os.path.join(out, "checkpoints")) and bool(
        [d for d in os.listdir(os.path.join(out, "checkpoints")) if d.isdigit()])
    start = 0
    if resume:
        from jrnn.checkpoint import Checkpointer

        start = Checkpointer(out).read_meta()["step"]

    def batches(epoch):
        for i, xy in enumerate(itertools.islice(
                data.batches(train, B, T, "sequential", seed=0, epoch=epoch), limits[epoch])):
            g = sum(limits[:epoch]) + i  # the global step of this batch
            if g % 100 == 0 and g >= start:  # heartbeat and memory sample (trained batches only)
                with open(rss_log, "a") as f:
                    f.write(json.dumps({"pid": os.getpid(), "step": g, "rss_mib": rss_mib()}) + "\n")
            yield xy

    try:
        loop = jrnn.LoopConfig(epochs=epochs, seed=0, log_every=50, save_every=every,
                               progress=False, quiet=True)
        jrnn.fit(model, opt, batches, batch_size=B, config=loop, run_dir=out, resume=resume,
                 validate=jrnn.held_out(
                     model, lambda: itertools.islice(data.sequential_batches(val, B, T, 0), 200)))
    except KeyboardInterrupt:
        return 143
    print("finished", flush=True)
    return 0


def latest_step(out: str) -> int:
    d = os.path.join(out, "checkpoints")
    steps = [int(n) for n in os.listdir(d) if n.isdigit()] if os.path.isdir(d) else []
    return max(steps, default=-1)


def run_worker(out, steps, every, kill_at=None, sig=None):
    """Start a worker; if ``kill_at``, send ``sig`` once the run is past that step."""
    cmd = [sys.executable, __file__, "--worker", "--out", out, "--steps", str(steps),
           "--save-every", str(every)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    if kill_at is not None:
        rss = os.path.join(out, "rss.jsonl")
        while p.poll() is None:  # watch the RSS log: it is written every 100 steps
            if os.path.exists(rss):
                with open(rss) as f:
                    lines = [json.loads(l) for l in f if l.strip()]
                mine = [l["step"] for l in lines if l["pid"] == p.pid]
                if mine and max(mine) >= kill_at:
                    time.sleep(0.05)  # a little further, between checkpoints
                    p.send_signal(sig)
                    break
            time.sleep(0.01)
    o, e = p.communicate()
    return p.returncode, o, e


def final_state(out):
    import jax
    import jrnn
    from jrnn import data
    from jrnn.checkpoint import Checkpointer

    _, vocab = data.load_corpus(data.bundled_text())
    model = jrnn.language_model(jrnn.gru(H), len(vocab))
    opt = jrnn.make_optimizer("adam", 0.01, 1.0)
    template = jrnn.init_state(model, opt, jrnn.grads.full(), jax.random.key(0), B)
    return Checkpointer(out).restore(template)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--save-every", type=int, default=500)
    ap.add_argument("--resumes", type=int, default=5)
    ap.add_argument("--out", default="/tmp/jrnn-soak")
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return worker(a.out, a.steps, a.save_every)

    import jax
    import numpy as np

    ref, cut = os.path.join(a.out, "uninterrupted"), os.path.join(a.out, "interrupted")
    for d in (ref, cut):
        shutil.rmtree(d, ignore_errors=True)
    t0 = time.perf_counter()
    rc, o, e = run_worker(ref, a.steps, a.save_every)
    assert rc == 0, e[-3000:]
    t_ref = time.perf_counter() - t0

    t0 = time.perf_counter()
    kills = []
    for k in range(a.resumes):
        sig = signal.SIGKILL if k % 2 == 0 else signal.SIGTERM
        at = (k + 1) * a.steps // (a.resumes + 1) + 137 * k  # arbitrary points, not on a checkpoint
        before = latest_step(cut)
        rc, o, e = run_worker(cut, a.steps, a.save_every, kill_at=at, sig=sig)
        kills.append({"signal": signal.Signals(sig).name, "sent_after_step": at, "rc": rc,
                      "checkpoint_before": before, "checkpoint_after": latest_step(cut)})
        print(f"interruption {k + 1}: {kills[-1]}", flush=True)
        assert rc in (-signal.SIGKILL, 143), (rc, e[-3000:])
    rc, o, e = run_worker(cut, a.steps, a.save_every)
    assert rc == 0, e[-3000:]
    t_cut = time.perf_counter() - t0

    (s_ref, m_ref), (s_cut, m_cut) = final_state(ref), final_state(cut)
    same = all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(s_ref), jax.tree.leaves(s_cut)))
    untimed = lambda p: [{k: v for k, v in json.loads(l).items() if k != "tokens_per_s"}
                         for l in open(p)]
    same_metrics = untimed(os.path.join(ref, "metrics.jsonl")) == untimed(os.path.join(cut, "metrics.jsonl"))

    def rss_stats(out):
        """Per worker: RSS before its first step, then after its first 1,000 steps and at its end."""
        rows = [json.loads(l) for l in open(os.path.join(out, "rss.jsonl"))]
        by_pid = {}
        for r in rows:
            by_pid.setdefault(r["pid"], []).append(r)
        out = []
        for pid, rs in by_pid.items():
            warm = [r for r in rs if r["step"] >= rs[0]["step"] + 1000] or rs[-1:]
            out.append({"steps": [rs[0]["step"], rs[-1]["step"]], "before_first_step_mib": round(rs[0]["rss_mib"], 1),
                        "after_1000_steps_mib": round(warm[0]["rss_mib"], 1), "end_mib": round(rs[-1]["rss_mib"], 1),
                        "max_mib": round(max(r["rss_mib"] for r in rs), 1),
                        "drift_after_1000_steps_mib": round(max(r["rss_mib"] for r in warm) - warm[0]["rss_mib"], 1)})
        return out

    vals = [h["val_ppl"] for h in m_ref["history"] if "val_ppl" in h]
    rss = rss_stats(ref) + rss_stats(cut)
    flat = all(r["drift_after_1000_steps_mib"] <= RSS_DRIFT_BOUND_MIB for r in rss)
    report = {
        "config": {"cell": f"gru-{H}", "T": T, "B": B, "steps": a.steps, "save_every": a.save_every,
                   "corpus": "pydoc (bundled)", "optimizer": "adam 0.01, clip 1.0", "device": jax.devices()[0].platform},
        "final_step": m_ref["step"], "bitwise_equal_state": same, "equal_metrics_jsonl": same_metrics,
        "val_ppl_per_epoch": [round(v, 3) for v in vals],
        "interruptions": kills,
        "seconds_uninterrupted": round(t_ref, 1), "seconds_interrupted_total": round(t_cut, 1),
        "rss_bound_mib": RSS_DRIFT_BOUND_MIB, "rss_flat": flat,
        "rss_uninterrupted": rss[:1], "rss_interrupted_workers": rss[1:],
    }
    print(json.dumps(report, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0 if same and same_metrics and flat else 1


if __name__ == "__main__":
    sys.exit(main())
