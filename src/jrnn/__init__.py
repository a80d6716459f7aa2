"""jrnn: pure-function recurrent networks in JAX.

Cells are NamedTuples of pure functions, unrolled with ``lax.scan``; gradients
come from autodiff or a named gradient estimator; one jit-compiled Optax train
step serves the CLI, the experiments and the benchmarks.
"""

from jrnn import (cells, compare, data, gradient_flow, grads, lru, output_recurrence, parallel,
                  regularise, reservoir, seq2seq, tagging, validation)
from jrnn.cells import (CELLS, Cell, FastRecurrence, LSTMState, by_name, check_token_ids, elman, gru,
                        leaky, lstm, stack)
from jrnn.config import LoopConfig, TrainConfig
from jrnn.data.batches import Batch
from jrnn.generate import predict
from jrnn.grads import GradientEstimator, OnlineCarry
from jrnn.host_memory import reuse_host_memory
from jrnn.interop import from_torch, to_torch
from jrnn.loop import FitResult, fit
from jrnn.metrics import MetricsWindow, NonFiniteError, accuracy, bits_per_char, mean_ci, perplexity
from jrnn.models import Model, classifier, language_model, regressor, sequence_loss
from jrnn.run import RunDir, load_run
from jrnn.scan import bidirectional, unroll
from jrnn.step import (OPTIMIZERS, TrainState, evaluate, held_out, init_state, init_states,
                       make_optimizer, set_hyperparam, train_step)

__version__ = "0.1.0"

__all__ = [
    "Batch", "CELLS", "Cell", "FastRecurrence", "FitResult", "GradientEstimator", "LSTMState", "LoopConfig", "MetricsWindow",
    "Model", "NonFiniteError", "OPTIMIZERS", "OnlineCarry", "RunDir", "TrainConfig", "TrainState",
    "accuracy", "bidirectional", "bits_per_char", "by_name", "cells", "check_token_ids", "classifier",
    "compare", "data", "elman", "evaluate", "fit", "from_torch", "gradient_flow", "grads", "gru",
    "held_out", "init_state", "init_states", "language_model", "leaky", "load_run", "lru", "lstm",
    "make_optimizer", "mean_ci", "output_recurrence", "parallel", "perplexity", "predict", "regressor", "regularise",
    "reservoir", "reuse_host_memory", "seq2seq", "sequence_loss", "set_hyperparam", "stack",
    "tagging", "to_torch", "train_step", "unroll", "validation",
]
