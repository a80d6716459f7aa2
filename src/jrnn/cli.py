"""Command line: ``jrnn train | generate | bench-speed | bench-grads``.

``jrnn train`` with no arguments trains a small character-level GRU on an
English corpus that ships with Python (``pydoc_data.topics``), offline, in
about a minute on two CPU cores, and prints a generated sample.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

__all__ = ["main", "build_model", "load_run"]

CELLS = ("rnn", "rnn-relu", "lstm", "gru")


def build_model(cell: str, hidden: int, layers: int, vocab_size: int, init: str = "uniform"):
    """The char-LM the CLI trains: ``layers`` stacked cells and a dense readout."""
    import jrnn

    if cell not in CELLS:
        raise ValueError(f"--cell must be one of {CELLS}, got {cell!r}")
    if layers < 1:
        raise ValueError(f"--layers must be >= 1, got {layers}")
    make = {"rnn": lambda: jrnn.elman(hidden, "tanh", init), "rnn-relu": lambda: jrnn.elman(hidden, "relu", init),
            "lstm": lambda: jrnn.lstm(hidden, init), "gru": lambda: jrnn.gru(hidden, init)}[cell]
    return jrnn.language_model(jrnn.stack([make() for _ in range(layers)]), vocab_size)


def _positive(kind):
    def parse(s):
        v = kind(s)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
        return v
    return parse


def _train_parser(sub):
    p = sub.add_parser(
        "train", help="train a character-level language model",
        description="Train a character (or word) language model and print perplexity as it goes. "
                    "With no arguments: offline, on Python's bundled pydoc text, about a minute on 2 CPU cores.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--corpus", default="pydoc", help="bundled corpus: 'pydoc' (offline) or 'timemachine' "
                   "(JRNN_DATA_DIR, cache, or download with sha1 check)")
    d.add_argument("--text", default=None, help="train on this text file instead of --corpus")
    d.add_argument("--token", default="char", choices=("char", "word"))
    d.add_argument("--max-tokens", type=int, default=-1, help="use the first N tokens (-1: all)")
    d.add_argument("--val-fraction", type=float, default=0.1, help="held-out tail for validation perplexity")
    d.add_argument("--sampling", default="sequential", choices=("sequential", "random"),
                   help="sequential partitioning carries the hidden state across batches; random re-initialises it")
    m = p.add_argument_group("model")
    m.add_argument("--cell", default="gru", choices=CELLS)
    m.add_argument("--hidden", type=_positive(int), default=256)
    m.add_argument("--layers", type=_positive(int), default=1)
    m.add_argument("--init", default="uniform", choices=("uniform", "d2l", "orthogonal"))
    o = p.add_argument_group("optimisation")
    o.add_argument("--num-steps", type=_positive(int), default=35, help="sequence length T per batch")
    o.add_argument("--batch-size", type=_positive(int), default=32)
    o.add_argument("--optimizer", default="adam", choices=("sgd", "adam", "adamw", "rmsprop", "momentum"))
    o.add_argument("--lr", type=_positive(float), default=0.005)
    o.add_argument("--clip", type=_positive(float), default=1.0, help="max global gradient norm")
    o.add_argument("--epochs", type=_positive(int), default=5)
    o.add_argument("--grad", default="full",
                   help="gradient estimator: full | truncated:K | randomized:P | checkpointed[:S] | rtrl | uoro | snap1")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--seeds", type=_positive(int), default=1,
                   help="train this many independently initialised models at once with jax.vmap")
    r = p.add_argument_group("run")
    r.add_argument("--out", default="runs/latest", help="run directory: config, vocab, metrics.jsonl, checkpoints, plot")
    r.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (0: only at the end)")
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    r.add_argument("--on-nonfinite", default="stop", choices=("stop", "skip"))
    r.add_argument("--log-every", type=_positive(int), default=25, help="fetch metrics every N steps")
    r.add_argument("--sample-length", type=int, default=200)
    r.add_argument("--prefix", default="the ")
    r.add_argument("--no-progress", action="store_true")
    return p


def _corpus(args):
    from jrnn import data

    text = data.read_text(args.text) if args.text else data.load_text(name=args.corpus)
    corpus, vocab = data.load_corpus(text, token=args.token, max_tokens=args.max_tokens)
    train, val = data.split(corpus, args.val_fraction) if args.val_fraction > 0 else (corpus, None)
    return train, val, vocab


def cmd_train(args) -> int:
    import jax
    import numpy as np

    import jrnn
    from jrnn import data

    if args.resume:
        cfg_path = os.path.join(args.out, "config.json")
        if not os.path.exists(cfg_path):
            raise SystemExit(f"--resume: no run in {args.out!r} (missing config.json)")
        saved = json.load(open(cfg_path))
        for k in ("corpus", "text", "token", "max_tokens", "val_fraction", "sampling", "cell", "hidden",
                  "layers", "init", "num_steps", "batch_size", "optimizer", "lr", "clip", "grad", "seed"):
            setattr(args, k, saved[k])
    train, val, vocab = _corpus(args)
    model = build_model(args.cell, args.hidden, args.layers, len(vocab), args.init)
    opt = jrnn.make_optimizer(args.optimizer, args.lr, args.clip)
    est = jrnn.grads.parse(args.grad)
    B, T = args.batch_size, args.num_steps
    os.makedirs(args.out, exist_ok=True)
    cfg = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    json.dump(cfg, open(os.path.join(args.out, "config.json"), "w"), indent=1)
    json.dump({"token": vocab.token, "idx_to_token": vocab.idx_to_token},
              open(os.path.join(args.out, "vocab.json"), "w"))
    print(f"corpus: {len(train):,} train / {0 if val is None else len(val):,} val tokens, "
          f"vocab {len(vocab)}; model {model.cell.name} H={args.hidden}; grad {est.name}; "
          f"{args.optimizer} lr={args.lr} clip={args.clip}; B={B} T={T}; device {jax.devices()[0].platform}")

    if args.seeds > 1:
        return _train_seeds(args, model, opt, est, train, vocab)

    batches = lambda epoch: data.batches(train, B, T, args.sampling, seed=args.seed, epoch=epoch)
    val_batches = None
    if val is not None:
        if len(val) > (B + 1) * T + 1:
            val_batches = lambda: data.sequential_batches(val, B, T, 0)
        else:
            print(f"note: validation tail of {len(val)} tokens is too short for B={B}, T={T}; skipped")
    t0 = time.perf_counter()
    res = jrnn.fit(model, opt, batches, estimator=est, epochs=args.epochs, seed=args.seed, batch_size=B,
                   carry_over=args.sampling == "sequential", val_batches=val_batches,
                   steps_per_epoch=data.num_batches(len(train), B, T, args.sampling),
                   log_every=args.log_every, out_dir=args.out,
                   checkpoint_every=args.checkpoint_every or None, resume=args.resume,
                   on_nonfinite=args.on_nonfinite, progress=not args.no_progress)
    dt = time.perf_counter() - t0
    _report(res.history, dt)
    _plot(res.history, args.out)
    key = jax.random.key(args.seed)
    prefix = args.prefix if args.token == "char" else args.prefix.split()
    ids = vocab.encode(prefix)
    greedy = vocab.decode(jrnn.predict(model, res.state.params, ids, args.sample_length))
    sampled = vocab.decode(jrnn.predict(model, res.state.params, ids, args.sample_length,
                                        key=key, temperature=0.7))
    print(f"\ngreedy : {greedy!r}\nsampled: {sampled!r}  (temperature 0.7)")
    print(f"\nrun saved in {args.out}; continue with: jrnn train --resume --out {args.out} --epochs N; "
          f"sample with: jrnn generate --run {args.out}")
    return 0


def _report(history, seconds):
    train = [h for h in history if "train_ppl" in h]
    vals = [h for h in history if "val_ppl" in h]
    if train:
        tps = sorted(h["tokens_per_s"] for h in train[1:] or train)[len(train[1:] or train) // 2]
        line = f"final train perplexity {train[-1]['train_ppl']:.2f}"
        if vals:
            line += f", validation perplexity {vals[-1]['val_ppl']:.2f}"
        print(f"{line}; {tps:,.0f} tokens/s (median); {seconds:.1f} s")


def _plot(history, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    tr = [h for h in history if "train_ppl" in h]
    va = [h for h in history if "val_ppl" in h]
    if not tr:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([h["step"] for h in tr], [h["train_ppl"] for h in tr], label="train")
    if va:
        ax.plot([h["step"] for h in va], [h["val_ppl"] for h in va], "o-", label="validation")
    ax.set_xlabel("step"); ax.set_ylabel("perplexity"); ax.set_yscale("log"); ax.legend()
    fig.tight_layout()
    path = os.path.join(out, "perplexity.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _train_seeds(args, model, opt, est, train, vocab) -> int:
    """``--seeds S``: S models in one vmapped step; reports each model's perplexity."""
    import jax
    import numpy as np

    import jrnn
    from jrnn import data

    S, B, T = args.seeds, args.batch_size, args.num_steps
    keys = jax.random.split(jax.random.key(args.seed), S)
    state = jrnn.init_states(model, opt, est, keys, B)
    step = jrnn.train_step(model, opt, est, carry_over=args.sampling == "sequential", seeds=S)
    t0, n, losses = time.perf_counter(), 0, []
    for epoch in range(args.epochs):
        for i, (x, y) in enumerate(data.batches(train, B, T, args.sampling, seed=args.seed, epoch=epoch)):
            b = jrnn.Batch(np.ascontiguousarray(x.T), np.ascontiguousarray(y.T))
            state, m = step(state, b, jax.random.split(jax.random.fold_in(keys[0], n), S))
            losses.append(m["loss"])
            n += 1
            if n % args.log_every == 0:
                l = np.asarray(jax.device_get(losses[-args.log_every:])).mean(0)
                print(f"step {n}: perplexity per seed {np.round(np.exp(l), 2).tolist()}", flush=True)
    jax.block_until_ready(state)
    dt = time.perf_counter() - t0
    print(f"{S} models x {n} steps in {dt:.1f} s: {S * n * B * T / dt:,.0f} tokens/s in total")
    return 0


def _generate_parser(sub):
    p = sub.add_parser("generate", help="continue a prefix with a trained run",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", default="runs/latest", help="run directory written by 'jrnn train'")
    p.add_argument("--prefix", default="the ")
    p.add_argument("--length", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy (d2l); > 0: sample")
    p.add_argument("--seed", type=int, default=0)
    return p


def load_run(run: str):
    """``(model, params, vocab, config)`` from a run directory's last checkpoint."""
    import jax

    import jrnn
    from jrnn import checkpoint, data

    for f in ("config.json", "vocab.json"):
        if not os.path.exists(os.path.join(run, f)):
            raise SystemExit(f"{run!r} is not a jrnn run directory (missing {f})")
    cfg = json.load(open(os.path.join(run, "config.json")))
    v = json.load(open(os.path.join(run, "vocab.json")))
    vocab = data.Vocab.from_tokens(v["idx_to_token"], token=v["token"])
    model = build_model(cfg["cell"], cfg["hidden"], cfg["layers"], len(vocab), cfg["init"])
    opt = jrnn.make_optimizer(cfg["optimizer"], cfg["lr"], cfg["clip"])
    est = jrnn.grads.parse(cfg["grad"])
    template = jrnn.init_state(model, opt, est, jax.random.key(0), cfg["batch_size"])
    restored = checkpoint.Checkpointer(run).restore(template)
    if restored is None:
        raise SystemExit(f"no checkpoint in {run!r}")
    return model, restored[0].params, vocab, cfg


def cmd_generate(args) -> int:
    import jax

    import jrnn

    model, params, vocab, cfg = load_run(args.run)
    prefix = args.prefix if vocab.token == "char" else args.prefix.split()
    ids = vocab.encode(prefix)
    out = jrnn.predict(model, params, ids, args.length, key=jax.random.key(args.seed),
                       temperature=args.temperature)
    print(vocab.decode(out))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="jrnn", description="jrnn: recurrent networks in JAX.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _train_parser(sub).set_defaults(func=cmd_train)
    _generate_parser(sub).set_defaults(func=cmd_generate)
    sub.add_parser("bench-speed", help="training throughput vs torch.nn and flax.linen (benchmarks/throughput.py)",
                   add_help=False).set_defaults(func=None, module="jrnn.bench_speed")
    sub.add_parser("bench-grads", help="compare gradient estimators: accuracy, cost, learning",
                   add_help=False).set_defaults(func=None, module="jrnn.bench_grads")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("bench-speed", "bench-grads"):  # they call reuse_host_memory themselves
        import importlib
        return importlib.import_module(f"jrnn.{argv[0].replace('-', '_')}").main(argv[1:]) or 0
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from jrnn.host_memory import reuse_host_memory

    reuse_host_memory(warn=False)  # before any JAX computation; see jrnn/host_memory.py
    try:
        return args.func(args)
    except KeyboardInterrupt as e:  # jrnn.checkpoint.Interrupted carries the signal (SIGTERM: 143)
        return 128 + int(getattr(e, "signum", 2))
    except (ValueError, FileNotFoundError, TypeError, FloatingPointError) as e:
        # includes CheckpointError (a ValueError) and NonFiniteError: one line, no traceback
        print(f"jrnn {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
