"""Trainables: one module per model (``llama_torch``, ``lstm_tf``), the contract they implement and the
pieces they share. Importing this package loads no deep-learning framework."""

from sentune.trainables._contract import FitResult, LoopContext, LoopHooks, PreparedData, SplitArrays, Trainable
from sentune.trainables._params import CoreParams, LlamaTorchParams, LstmTfParams
from sentune.trainables._registry import TRAINABLE_NAMES, TrainableEntry, get_trainable

__all__ = [
    "TRAINABLE_NAMES",
    "CoreParams",
    "FitResult",
    "LlamaTorchParams",
    "LoopContext",
    "LoopHooks",
    "LstmTfParams",
    "PreparedData",
    "SplitArrays",
    "Trainable",
    "TrainableEntry",
    "get_trainable",
]
