"""jrnn: pure-function recurrent networks in JAX.

Cells are NamedTuples of pure functions, unrolled with ``lax.scan``; gradients
come from autodiff or a named gradient estimator; one jit-compiled Optax train
step serves the CLI, the experiments and the benchmarks.
"""

from jrnn import data, grads
from jrnn.cells import Cell, LSTMState, check_token_ids, elman, from_torch, gru, lstm, stack
from jrnn.generate import predict
from jrnn.grads import GradientEstimator, OnlineCarry
from jrnn.host_memory import reuse_host_memory
from jrnn.metrics import accuracy, bits_per_char, perplexity
from jrnn.models import Batch, Model, classifier, language_model, regressor, sequence_loss
from jrnn.train import (FitResult, NonFiniteError, TrainState, evaluate, fit, init_state,
                        init_states, make_optimizer, train_step)
from jrnn.scan import bidirectional, unroll

__version__ = "0.1.0"

__all__ = [
    "Batch", "Cell", "FitResult", "GradientEstimator", "LSTMState", "Model", "NonFiniteError",
    "OnlineCarry", "TrainState", "accuracy", "bidirectional", "bits_per_char",
    "check_token_ids", "classifier", "data", "elman", "evaluate", "fit", "from_torch", "grads",
    "gru", "init_state", "init_states", "language_model", "lstm", "make_optimizer",
    "perplexity", "predict", "regressor", "reuse_host_memory", "sequence_loss", "stack", "train_step", "unroll",
]
