"""Trainables: one module per model (``llama_torch``, ``lstm_tf``), the contract they implement, the epoch
driver that trains any of them (:func:`fit`, :func:`lr_range_test`) and the pieces they share. Importing
this package loads no deep-learning framework."""

from sentune.trainables._contract import (
    FitResult,
    LoopContext,
    LoopHooks,
    ModelTrainable,
    PreparedData,
    SplitArrays,
)
from sentune.trainables._driver import fit, lr_range_test
from sentune.trainables._params import CoreParams, LlamaTorchParams, LstmTfParams
from sentune.trainables._registry import TRAINABLE_NAMES, TrainableEntry, get_trainable
from sentune.trainables._resume import ResumeState, ResumeStore

__all__ = [
    "TRAINABLE_NAMES",
    "CoreParams",
    "FitResult",
    "LlamaTorchParams",
    "LoopContext",
    "LoopHooks",
    "LstmTfParams",
    "ModelTrainable",
    "PreparedData",
    "ResumeState",
    "ResumeStore",
    "SplitArrays",
    "TrainableEntry",
    "fit",
    "get_trainable",
    "lr_range_test",
]
