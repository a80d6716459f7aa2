"""Command line: ``jrnn train | generate``.

``jrnn train`` with no arguments trains a small character-level GRU on an
English corpus that ships with Python (``pydoc_data.topics``), offline, in
about a minute on two CPU cores, and prints a generated sample. Its flags are
generated from :class:`jrnn.config.TrainConfig`; the run directory keeps that
config, and ``--resume`` reads it back. The benchmark and experiment
harnesses are scripts in the repository (``benchmarks/``, ``experiments/``),
not part of the package.
"""

from __future__ import annotations

import argparse
import math
import sys

__all__ = ["main"]


def _train_parser(sub):
    from .config import add_flags

    p = sub.add_parser(
        "train", help="train a character-level language model",
        description="Train a character (or word) language model and print perplexity as it goes. "
                    "With no arguments: offline, on Python's bundled pydoc text, about a minute on 2 CPU cores.")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (its config.json "
                        "fixes the data, model and optimisation; --epochs etc. may change)")
    add_flags(p)
    g = p.add_argument_group(
        "processes", "a multi-process run (jax.distributed): start the same command once per "
        "process, each with its --process-id, and --devices all; the defaults come from "
        "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID. Not saved in config.json")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    g.add_argument("--num-processes", type=int, metavar="N")
    g.add_argument("--process-id", type=int, metavar="I")
    g.add_argument("--local-devices", type=int, metavar="N",
                   help="CPU only: devices this process exposes (default 1)")
    return p


def _join_processes(args) -> bool:
    """Initialise jax.distributed if a coordinator is given (flag or environment)."""
    import os

    from . import parallel

    if not (args.coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")):
        return False
    parallel.initialize(args.coordinator, args.num_processes, args.process_id,
                        local_devices=args.local_devices)
    return True


def _corpus(data_cfg):
    """``(train, val, vocab)`` of a resolved :class:`~jrnn.config.DataConfig`."""
    from jrnn import data

    if data_cfg.text and data_cfg.token == "byte" and data_cfg.preprocess == "raw":
        text = data.read_bytes(data_cfg.text)  # any encoding: the bytes are the tokens
    elif data_cfg.text:
        text = data.read_text(data_cfg.text)
    else:
        text = data.load_text(name=data_cfg.corpus)
    corpus, vocab = data.load_corpus(text, token=data_cfg.token, max_tokens=data_cfg.max_tokens,
                                     preprocess=data_cfg.preprocess, min_freq=data_cfg.min_freq)
    f = data_cfg.val_fraction
    train, val = data.split(corpus, f) if f > 0 else (corpus, None)
    return train, val, vocab


def _config(args):
    """The run's TrainConfig: the defaults or the saved run, with the given flags applied;
    ``preprocess`` is resolved (config.json records what the run read)."""
    import dataclasses

    from .config import from_flags
    from .run import RunDir

    out = getattr(args, "run.out", "runs/latest")
    if args.resume:
        cfg = RunDir(out).read_config()
        if cfg.data.preprocess == "auto":  # saved before the field existed: all were d2l's
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, preprocess="d2l"))
        return from_flags(args, cfg, resumed=True)
    cfg = from_flags(args)
    return dataclasses.replace(cfg, data=cfg.data.resolved())


def _prefix(vocab, prefix: str):
    """``(ids, unknown)``: ``prefix`` read as the training text was (the vocabulary's
    preprocessing), and the tokens of it the vocabulary lacks."""
    from jrnn import data

    text = data.prepare(prefix, vocab.preprocess or "raw")
    return vocab.encode(text), vocab.unknown(text), text


def _listing(tokens, most=20):
    return ", ".join(repr(t) for t in tokens[:most]) + (
        f", ... ({len(tokens) - most} more)" if len(tokens) > most else "")


def _sample_prefix(vocab, prefix, train):
    """The ids the end-of-training samples continue: ``--prefix``, or, when its characters
    are not all in the vocabulary (e.g. 'the ' and a Chinese text), the text's first tokens."""
    ids, missing, _ = _prefix(vocab, prefix)
    if missing and vocab.token == "char":
        ids = train[:max(1, len(ids))]
        print(f"note: --prefix {prefix!r} has characters the vocabulary lacks "
              f"({_listing(missing)}); the samples continue the text's first {len(ids)} "
              "characters instead")
    elif missing:
        print(f"note: --prefix words not in the vocabulary, read as <unk>: {_listing(missing)}")
    return ids


def cmd_train(args) -> int:
    import contextlib
    import os

    if _join_processes(args) and not _main_process():
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            return _train(args)  # process 0 prints; the others train and save their parts
    return _train(args)


def _main_process() -> bool:
    from . import parallel

    return parallel.is_main_process()


def _train(args) -> int:
    import jax

    import jrnn
    from jrnn import config as C
    from jrnn import data, parallel

    cfg = _config(args)
    if jax.process_count() > 1 and cfg.loop.devices != "all":
        raise SystemExit("error: a multi-process run trains on every process's devices: add --devices all")
    train, val, vocab = _corpus(cfg.data)
    model = C.build_model(cfg.model, len(vocab))
    opt, est = C.build_optimizer(cfg.optim), C.build_estimator(cfg.optim)
    B, T, kind = cfg.data.batch_size, cfg.data.num_steps, cfg.data.sampling
    run = jrnn.RunDir(cfg.run.out, keep=cfg.loop.keep)
    run.write_config(cfg)
    run.write_vocab(vocab)
    print(f"corpus: {len(train):,} train / {0 if val is None else len(val):,} val tokens, "
          f"vocab {len(vocab)} ({cfg.data.token}, {cfg.data.preprocess}); "
          f"model {model.cell.name} H={cfg.model.hidden}; grad {est.name}; "
          f"{cfg.optim.optimizer} lr={cfg.optim.lr} clip={cfg.optim.clip}; B={B} T={T}"
          f"{f'; {cfg.loop.seeds} seeds' if cfg.loop.seeds > 1 else ''}"
          f"{f' x {len(cfg.optim.lr)} learning rates' if isinstance(cfg.optim.lr, tuple) else ''}; "
          f"device {jax.devices()[0].platform}")
    prefix_ids = _sample_prefix(vocab, cfg.run.prefix, train) if cfg.run.sample_length else None
    validate = None
    if val is not None:
        if len(val) > (B + 1) * T + 1:
            validate = jrnn.held_out(model, lambda: data.sequential_batches(val, B, T, 0),
                                     carry_over=kind == "sequential")
        else:
            print(f"note: validation tail of {len(val)} tokens is too short for B={B}, T={T}; skipped")
    loop = C.loop_of(cfg, steps_per_epoch=data.num_batches(len(train), B, T, kind))
    def train_batches(epoch):
        batches = data.batches(train, B, T, kind, seed=cfg.loop.seed, epoch=epoch)
        if jax.process_count() == 1:
            return batches
        return (parallel.process_part(b, B) for b in batches)  # this process's columns

    res = jrnn.fit(model, opt, train_batches, estimator=est, batch_size=B,
                   carry_over=kind == "sequential", validate=validate, config=loop, run_dir=run,
                   resume=args.resume)
    params = parallel.to_host(res.state.params)  # whole on every process, off the mesh
    if not parallel.is_main_process():
        return 0
    _report(res.history, cfg)
    _plot(res.history, run.file(run.PLOT))
    _samples(model, params, vocab, prefix_ids, cfg)
    print(f"\nrun saved in {run.path}; continue with: jrnn train --resume --out {run.path} --epochs N; "
          f"sample with: jrnn generate --run {run.path}")
    return 0


def _samples(model, params, vocab, ids, cfg):
    """A greedy and a sampled continuation of ``ids`` (run 0's model in a sweep)."""
    import jax

    import jrnn

    params = _first_run(params, cfg)
    if cfg.run.sample_length == 0:
        return
    n = cfg.run.sample_length
    greedy = vocab.decode(jrnn.predict(model, params, ids, n))
    sampled = vocab.decode(jrnn.predict(model, params, ids, n, key=jax.random.key(cfg.loop.seed),
                                        temperature=0.7))
    print(f"\ngreedy : {greedy!r}\nsampled: {sampled!r}  (temperature 0.7)")


def _first_run(params, cfg):
    """Run 0's params of a sweep (``--seeds`` > 1 or a ``--lr`` list); the params otherwise."""
    import jax

    from jrnn import config as C

    loop = C.loop_of(cfg)
    return jax.tree.map(lambda a: a[0], params) if loop.seeds > 1 or loop.lrs else params


def _mean(v):
    return sum(v) / len(v) if isinstance(v, list) else v


def _report(history, cfg):
    train = [h for h in history if "train_ppl" in h]
    vals = [h for h in history if "val_ppl" in h]
    if train:
        rates = sorted(h["tokens_per_s"] for h in train[1:] or train)
        line = f"final train perplexity {_mean(train[-1]['train_ppl']):.2f}"
        if vals:
            line += f", validation perplexity {_mean(vals[-1]['val_ppl']):.2f}"
        print(f"{line}; {rates[len(rates) // 2]:,.0f} tokens/s (median); "
              f"{train[-1]['train_seconds']:.1f} s of training"
              + (" (means over runs)" if isinstance(train[-1]["train_ppl"], list) else ""))
    if vals and isinstance(vals[-1]["val_ppl"], list) and cfg.loop.seeds > 1:
        _report_sweep(vals[-1]["val_ppl"], cfg)


def _report_sweep(ppl: list, cfg):
    """Final validation perplexity per learning rate: mean and 95% CI over the seeds."""
    from .metrics import mean_ci

    lrs = cfg.optim.lr if isinstance(cfg.optim.lr, tuple) else (cfg.optim.lr,)
    print(f"validation perplexity over {cfg.loop.seeds} seeds (mean +- 95% CI, Student t):")
    for j, lr in enumerate(lrs):
        runs = ppl[j::len(lrs)]  # run s * len(lrs) + j is seed s with lrs[j]
        ok = [v for v in runs if math.isfinite(v)]
        lost = f" ({len(runs) - len(ok)} seed(s) non-finite, left out)" if len(ok) < len(runs) else ""
        if ok:
            mean, half = mean_ci(ok)
            print(f"  lr {lr:g}: {mean:.3f} +- {half:.3f}{lost}")
        else:
            print(f"  lr {lr:g}: every seed non-finite")


def _plot(history, path):
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
    ax.set_xlabel("step"); ax.set_ylabel("perplexity"); ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _generate_parser(sub):
    p = sub.add_parser("generate", help="continue a prefix with a trained run",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", default="runs/latest", help="run directory written by 'jrnn train'")
    p.add_argument("--prefix", default="the ",
                   help="text to continue, read as the run read its training text (d2l: letters, "
                        "lower-cased; raw: as it is); characters the vocabulary lacks are an "
                        "error, words it lacks are read as <unk> (and listed)")
    p.add_argument("--length", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy (d2l); > 0: sample")
    p.add_argument("--seed", type=int, default=0)
    return p


def cmd_generate(args) -> int:
    import jax

    import jrnn

    model, params, vocab, cfg = jrnn.load_run(args.run)
    params = _first_run(params, cfg)
    ids, missing, text = _prefix(vocab, args.prefix)
    read = "" if text == args.prefix else f" (read as {text!r}, {vocab.preprocess} preprocessing)"
    if missing and vocab.token == "char":
        raise ValueError(f"--prefix {args.prefix!r}{read} has {len(missing)} character(s) the "
                         f"run's vocabulary of {len(vocab)} lacks: {_listing(missing)}")
    if missing:
        print(f"note: --prefix{read} words not in the vocabulary, read as <unk>: "
              f"{_listing(missing)}", file=sys.stderr)
    out = jrnn.predict(model, params, ids, args.length, key=jax.random.key(args.seed),
                       temperature=args.temperature)
    print(vocab.decode(out))
    return 0


def main(argv=None) -> int:
    """The ``jrnn`` command: ``jrnn train ...`` or ``jrnn generate ...``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="jrnn", description="jrnn: recurrent networks in JAX.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _train_parser(sub).set_defaults(func=cmd_train)
    _generate_parser(sub).set_defaults(func=cmd_generate)
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.command is None:
        parser.print_help()
        return 2
    from jrnn.host_memory import reuse_host_memory

    reuse_host_memory(warn=False)  # before any JAX computation; see jrnn/host_memory.py
    import logging

    log = logging.getLogger("jrnn")  # the run's own notes (e.g. backend='auto''s choice)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("note: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False  # once, not again through a root handler another library set up
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
