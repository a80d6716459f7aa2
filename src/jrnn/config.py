"""The one config of a training run: typed dataclasses, their CLI flags and their JSON.

:class:`TrainConfig` is the single source of truth for a ``jrnn train`` run:
the CLI flags are generated from its fields (:func:`add_flags`), the run
directory's ``config.json`` round-trips through it (:meth:`TrainConfig.to_json`,
:meth:`TrainConfig.from_json`), and ``--resume`` reads it back. It is made of
sections, one per concern; :class:`LoopConfig` is also what :func:`jrnn.fit`
takes from library code. Every field is checked once, when the config is built.

Each field's ``metadata`` holds its ``help`` and, where the values are a fixed
set, its ``choices``; ``resumable=True`` marks the fields a resumed run may
change (how long and how it trains, not what it trains).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field

from . import validation
from .cells import CELLS
from .grads import ESTIMATORS
from .step import OPTIMIZERS

__all__ = ["DataConfig", "ModelConfig", "OptimConfig", "LoopConfig", "TrainConfig", "add_flags",
           "from_flags", "loop_of", "build_model", "build_optimizer", "build_estimator"]


def _f(default, help: str, choices=None, resumable: bool = False, flag: bool = True):
    return field(default=default, metadata={"help": help, "choices": choices,
                                            "resumable": resumable, "flag": flag})


def _check(obj, positive=(), nonneg=(), fraction=()):
    """Shared ``__post_init__`` checks: ints >= 1 / >= 0, choices, fractions in [0, 1)."""
    for f in dataclasses.fields(obj):
        v, ch = getattr(obj, f.name), f.metadata.get("choices")
        if ch is not None and v not in ch:
            raise ValueError(f"{f.name} must be one of {list(ch)}, got {v!r}")
    hints = typing.get_type_hints(type(obj))
    for name in positive:
        optional = type(None) in typing.get_args(hints[name])
        validation.check_int(name, getattr(obj, name), 1, allow_none=optional)
    for name in nonneg:
        validation.check_int(name, getattr(obj, name), 0)
    for name in fraction:
        v = getattr(obj, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
            raise ValueError(f"{name} must be a number in [0, 1), got {v!r}")


@dataclass(frozen=True)
class DataConfig:
    """What the model reads and how it is cut into batches."""

    corpus: str = _f("pydoc", "bundled corpus: 'pydoc' (offline) or 'timemachine' (JRNN_DATA_DIR, "
                     "cache, or download with sha1 check)", ("pydoc", "timemachine"))
    text: typing.Optional[str] = _f(None, "train on this text file instead of --corpus")
    token: str = _f("char", "tokens: characters, words, or UTF-8 bytes (256 ids: any file, any "
                    "encoding)", ("char", "word", "byte"))
    preprocess: str = _f("auto", "raw keeps the text as it is (case, punctuation, digits, "
                         "newlines, any Unicode); d2l keeps letters, lower-cased; auto: d2l for "
                         "char/word on --corpus, raw otherwise (config.json records the choice)",
                         ("auto", "raw", "d2l"))
    min_freq: int = _f(0, "char/word tokens seen fewer than N times become <unk>")
    max_tokens: int = _f(-1, "use the first N tokens (-1: all)")
    val_fraction: float = _f(0.1, "held-out tail for validation perplexity (0: none)")
    sampling: str = _f("sequential", "sequential partitioning carries the hidden state across "
                       "batches; random re-initialises it", ("sequential", "random"))
    num_steps: int = _f(35, "sequence length T per batch")
    batch_size: int = _f(32, "sequences per batch B")

    def __post_init__(self):
        _check(self, positive=("num_steps", "batch_size"), nonneg=("min_freq",),
               fraction=("val_fraction",))
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or (
                self.max_tokens < 1 and self.max_tokens != -1):
            raise ValueError(f"max_tokens must be -1 (all) or an integer >= 1, got {self.max_tokens!r}")
        if self.token == "byte" and self.min_freq > 1:
            raise ValueError(f"min_freq={self.min_freq} needs char or word tokens; the byte "
                             "vocabulary is fixed (256 ids, no <unk>)")

    def resolved(self) -> "DataConfig":
        """This section with ``preprocess="auto"`` made explicit: ``"d2l"`` for char or
        word tokens of a bundled ``corpus`` (d2l's own setting), ``"raw"`` for a user's
        ``text`` file and for bytes."""
        if self.preprocess != "auto":
            return self
        bundled = self.text is None and self.token != "byte"
        return dataclasses.replace(self, preprocess="d2l" if bundled else "raw")


@dataclass(frozen=True)
class ModelConfig:
    """The language model: ``layers`` stacked cells of ``hidden`` units and a dense readout."""

    cell: str = _f("gru", "recurrent cell (jrnn.cells.CELLS)", tuple(CELLS))
    hidden: int = _f(256, "hidden units per layer H")
    layers: int = _f(1, "stacked layers")
    init: str = _f("uniform", "weight initialisation", ("uniform", "d2l", "orthogonal"))
    dropout: float = _f(0.0, "dropout on each layer's output that feeds the next layer (torch's "
                        "place; one mask per sequence, jrnn.regularise)")
    output_dropout: float = _f(0.0, "dropout on the top layer's output, before the readout")
    recurrent_dropout: float = _f(0.0, "variational dropout on h_{t-1} (Gal & Ghahramani 2016)")
    weight_drop: float = _f(0.0, "DropConnect on the hidden-to-hidden matrices, one mask per batch "
                            "(AWD-LSTM)")
    embedding_dropout: float = _f(0.0, "drop whole input-token rows, one mask per batch")
    candidate_dropout: float = _f(0.0, "recurrent dropout without memory loss (Semeniuta et al. 2016): "
                                  "on the candidate (lstm g, gru n), one mask per sequence; unlike "
                                  "--recurrent-dropout it never drops h_{t-1} or c_{t-1}")
    zoneout: float = _f(0.0, "zoneout (Krueger et al. 2017): each unit of h (and of an lstm's c) keeps "
                        "its previous value with this probability, a mask per step")
    zoneout_c: typing.Optional[float] = _f(None, "an lstm's zoneout rate on c ('none': --zoneout's)")
    layer_norm: bool = _f(False, "layer-normalised lstm/gru cells (Ba et al. 2016; no fast path)")
    backend: str = _f("xla", "who runs the recurrence: xla (jrnn's scan), onednn (oneDNN's fused RNN "
                      "primitive on CPU, pip install jrnn[onednn]) or auto (oneDNN where it measured "
                      "faster, else xla; the choice is logged)", ("xla", "onednn", "auto"))

    def __post_init__(self):
        _check(self, positive=("hidden", "layers"),
               fraction=("dropout", "output_dropout", "recurrent_dropout", "weight_drop",
                         "embedding_dropout", "candidate_dropout", "zoneout"))
        if self.zoneout_c is not None:
            _check(self, fraction=("zoneout_c",))
            if self.cell != "lstm":
                raise ValueError(f"zoneout_c is an lstm's rate on c; cell {self.cell!r} has no c")
        if self.dropout and self.layers == 1:
            raise ValueError("dropout acts between stacked layers: with --layers 1 use "
                             "--output-dropout (or more layers)")

    def dropout_rates(self):
        """The :class:`jrnn.regularise.Dropout` of these fields."""
        from .regularise import Dropout

        return Dropout(weight_drop=self.weight_drop, embedding=self.embedding_dropout,
                       recurrent=self.recurrent_dropout, between=self.dropout,
                       output=self.output_dropout, candidate=self.candidate_dropout,
                       zoneout=self.zoneout,
                       zoneout_c=(self.zoneout if self.zoneout_c is None else self.zoneout_c)
                       if self.cell == "lstm" else 0.0)


@dataclass(frozen=True)
class OptimConfig:
    """How gradients are estimated and applied."""

    optimizer: str = _f("adam", "optax optimizer (jrnn.OPTIMIZERS)", tuple(OPTIMIZERS))
    lr: typing.Union[float, typing.Tuple[float, ...]] = _f(
        0.005, "learning rate; a comma-separated list (0.1,0.3,1) sweeps them, crossed with --seeds, "
        "in one vmapped program")
    clip: typing.Optional[float] = _f(1.0, "max global gradient norm ('none': no clipping)")
    grad: str = _f("full", "gradient estimator: " + " | ".join(s.usage for s in ESTIMATORS.values()))

    def __post_init__(self):
        if isinstance(self.lr, list):  # from JSON
            object.__setattr__(self, "lr", tuple(self.lr))
        _check(self)
        build_optimizer(self)  # the one place that knows the valid values
        build_estimator(self)


@dataclass(frozen=True)
class LoopConfig:
    """How :func:`jrnn.fit` runs: length, seeds, logging, evaluation, saving, policies."""

    epochs: int = _f(1, "passes over the training data", resumable=True)
    seed: int = _f(0, "seeds the params (key(seed)) and the step keys (fold_in(key(seed), step))")
    seeds: int = _f(1, "train this many independently initialised models at once (jax.vmap)")
    runs_per_chunk: typing.Optional[int] = _f(
        None, "with more than one run: vmap them in chunks of this many, one chunk after another "
        "(a smaller working set; 'none': all at once)", resumable=True)
    log_every: int = _f(50, "fetch metrics and log a record every N steps", resumable=True)
    eval_every: typing.Optional[int] = _f(None, "also validate every N steps (besides each epoch "
                                          "end)", resumable=True)
    save_every: typing.Optional[int] = _f(None, "checkpoint every N steps (besides the end and "
                                          "SIGINT/SIGTERM; 'none': only those)", resumable=True)
    keep: int = _f(2, "checkpoints to keep", resumable=True)
    on_nonfinite: str = _f("stop", "a NaN/Inf step: stop, or skip its update", ("stop", "skip"),
                           resumable=True)
    max_skips: int = _f(10, "with skip: stop after this many non-finite steps in a row",
                        resumable=True)
    time_limit: typing.Optional[float] = _f(None, "stop after this many seconds of training "
                                            "(validation excluded)", resumable=True)
    progress: bool = _f(True, "show a progress bar", resumable=True)
    quiet: bool = _f(False, "print nothing but the progress bar and errors", resumable=True,
                     flag=False)
    steps_per_epoch: typing.Optional[int] = _f(None, "batches per epoch, for the progress bar",
                                               resumable=True, flag=False)
    tensorboard: bool = _f(False, "also log the records as TensorBoard scalars in "
                           "<out>/tensorboard (extra: jrnn[tensorboard])", resumable=True)
    devices: typing.Optional[str] = _f(
        None, "data-parallel over devices: 'all' (every device of every process) or a count N; the "
        "batch is split along B, params replicated (default: one device, no mesh)", resumable=True)
    lrs: typing.Optional[typing.Tuple[float, ...]] = _f(
        None, "learning rates swept in one vmapped program, crossed with seeds (run s * len(lrs) "
        "+ j is seed s with lrs[j]); needs make_optimizer(..., inject=True)", flag=False)

    def __post_init__(self):
        if self.lrs is not None:
            object.__setattr__(self, "lrs", tuple(float(v) for v in self.lrs))
            if not self.lrs or not all(math.isfinite(v) and v > 0 for v in self.lrs):
                raise ValueError(f"lrs must be learning rates > 0, got {self.lrs!r}")
        _check(self, positive=("epochs", "seeds", "log_every", "eval_every", "save_every", "keep",
                               "max_skips", "steps_per_epoch", "runs_per_chunk"), nonneg=("seed",))
        d = self.devices
        if d is not None and not (d == "all" or (isinstance(d, str) and d.isdigit() and int(d) >= 1)):
            raise ValueError(f"devices must be 'all', a count >= 1 as a string ('8') or None, got {d!r}")
        t = self.time_limit
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0):
            raise ValueError(f"time_limit must be a number of seconds > 0 or None, got {t!r}")


def _cli_loop() -> LoopConfig:
    return LoopConfig(epochs=5, log_every=25, save_every=500)


@dataclass(frozen=True)
class TrainConfig:
    """A whole ``jrnn train`` run. Sections: ``data``, ``model``, ``optim``, ``loop``, ``run``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=_cli_loop)
    run: "RunConfig" = field(default_factory=lambda: RunConfig())

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        """Inverse of :meth:`to_json`; unknown or missing sections/keys are errors."""
        d = json.loads(text)
        if not isinstance(d, dict) or set(d) != {f.name for f in dataclasses.fields(cls)}:
            raise ValueError(f"config.json must have the sections "
                             f"{[f.name for f in dataclasses.fields(cls)]}, got "
                             f"{list(d) if isinstance(d, dict) else type(d).__name__}")
        return cls(**{name: _section(sec, d[name]) for name, sec in _sections(cls)})


@dataclass(frozen=True)
class RunConfig:
    """Where the run lives and what it prints at the end."""

    out: str = _f("runs/latest", "run directory: config, vocab, metrics.jsonl, checkpoints, plot",
                  resumable=True)
    sample_length: int = _f(200, "characters (or words) generated at the end", resumable=True)
    prefix: str = _f("the ", "prefix the generated sample continues", resumable=True)

    def __post_init__(self):
        _check(self, nonneg=("sample_length",))


def _sections(cls=TrainConfig):
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]


def _section(sec, d: dict):
    names = {f.name for f in dataclasses.fields(sec)}
    if not isinstance(d, dict) or set(d) - names:
        raise ValueError(f"config section {sec.__name__}: unknown keys "
                         f"{sorted(set(d) - names) if isinstance(d, dict) else d!r}")
    return sec(**d)


# ----------------------------------------------------------------------------
# CLI flags, generated from the fields


def _flag_type(tp):
    """``(argparse type, is_bool)`` for a field annotation; ``Optional[X]`` also takes 'none'."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(args) == 2 and typing.get_origin(args[1]) is tuple:  # a number or a list of them
        item = args[0]
        return (lambda s: item(s) if "," not in s else tuple(item(v) for v in s.split(","))), False
    base = args[0] if args else tp
    if base is bool:
        return None, True
    if args:  # Optional
        return (lambda s: None if s.lower() == "none" else base(s)), False
    return base, False


def add_flags(parser: argparse.ArgumentParser, defaults: TrainConfig | None = None) -> None:
    """Add one flag per config field (``--batch-size``, ``--lr``, ...), grouped by section.

    Flags default to ``argparse.SUPPRESS``, so the parsed namespace holds only
    the flags given (what a resumed run overrides); the help shows the defaults.
    """
    defaults = defaults or TrainConfig()
    for name, sec in _sections():
        group = parser.add_argument_group(name, sec.__doc__)
        hints = typing.get_type_hints(sec)
        for f in dataclasses.fields(sec):
            if not f.metadata.get("flag", True):
                continue
            default = getattr(getattr(defaults, name), f.name)
            kind, is_bool = _flag_type(hints[f.name])
            kw = dict(dest=f"{name}.{f.name}", default=argparse.SUPPRESS,
                      help=f"{f.metadata['help']} (default: {default})")
            flag = "--" + f.name.replace("_", "-")
            if is_bool:
                group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            else:
                group.add_argument(flag, type=kind, choices=f.metadata.get("choices"),
                                   metavar=f.name.upper() if not f.metadata.get("choices") else None,
                                   **kw)


def from_flags(namespace: argparse.Namespace, base: TrainConfig | None = None,
               resumed: bool = False) -> TrainConfig:
    """``base`` (default :class:`TrainConfig`) with the flags given in ``namespace`` applied.

    With ``resumed=True`` only ``resumable`` fields may differ from ``base``
    (a resumed run trains the same model on the same data the same way).
    """
    base = base or TrainConfig()
    given = {k: v for k, v in vars(namespace).items() if "." in k}
    changes, fixed = {}, []
    for name, sec in _sections():
        meta = {f.name: f.metadata for f in dataclasses.fields(sec)}
        mine = {k.split(".", 1)[1]: v for k, v in given.items() if k.split(".", 1)[0] == name}
        fixed += [k for k, v in mine.items()
                  if not meta[k]["resumable"] and v != getattr(getattr(base, name), k)]
        if mine:
            changes[name] = dataclasses.replace(getattr(base, name), **mine)
    if resumed and fixed:
        raise ValueError(f"--resume continues the saved run; it cannot change "
                         f"{', '.join('--' + k.replace('_', '-') for k in fixed)} "
                         f"(start a fresh run in another --out instead)")
    return dataclasses.replace(base, **changes)


# ----------------------------------------------------------------------------
# what a config builds: the model, the optimizer, the estimator


def loop_of(config: TrainConfig, **changes) -> LoopConfig:
    """The :class:`LoopConfig` :func:`jrnn.fit` runs for ``config``: its ``loop``
    section, with ``lrs`` from a swept ``--lr`` list, and ``changes``."""
    lr = config.optim.lr
    return dataclasses.replace(config.loop, lrs=lr if isinstance(lr, tuple) else None, **changes)


def build_model(model: ModelConfig, vocab_size: int):
    """The char/word LM of a config: ``layers`` stacked cells and a dense readout, with
    the config's dropout (:func:`jrnn.regularise.dropout`; evaluation runs without)."""
    from . import cells, kernels, models

    from .regularise import dropout

    stack = cells.stack([cells.by_name(model.cell, model.hidden, init=model.init, layer_norm=model.layer_norm)
                         for _ in range(model.layers)])
    stack = kernels.with_backend(stack, model.backend)
    return dropout(models.language_model(stack, vocab_size), model.dropout_rates())


def build_optimizer(optim: OptimConfig):
    """The Optax optimizer of a config (:func:`jrnn.make_optimizer`; a swept ``lr`` list
    gives an injected learning rate, set per run by the loop)."""
    from .step import make_optimizer

    clip, lr = optim.clip, optim.lr
    if clip is not None and not (isinstance(clip, (int, float)) and math.isfinite(clip)):
        raise ValueError(f"clip must be a finite number > 0 or None, got {clip!r}")
    if isinstance(lr, tuple):  # a sweep: each run's rate is set in its optimizer state
        for v in lr:
            make_optimizer(optim.optimizer, v, clip)
        return make_optimizer(optim.optimizer, lr[0], clip, inject=True)
    return make_optimizer(optim.optimizer, lr, clip)


def build_estimator(optim: OptimConfig):
    """The gradient estimator of a config's ``grad`` spec (:func:`jrnn.grads.parse`)."""
    from . import grads

    return grads.parse(optim.grad)
