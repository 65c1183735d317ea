"""Trainable names -> their option models (import-light) and implementations (imported when needed)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sentune.errors import ConfigError
from sentune.trainables._params import CoreParams, LlamaTorchParams, LstmTfParams

if TYPE_CHECKING:
    from sentune.trainables._contract import ModelTrainable

__all__ = ["TRAINABLE_NAMES", "TrainableEntry", "get_trainable"]


@dataclass(frozen=True)
class TrainableEntry:
    """What a job needs of a trainable before any framework loads (its options), and where the rest is."""

    name: str
    params_model: type[CoreParams]
    implementation: str  # "module:Class", a ModelTrainable subclass

    def load(self) -> ModelTrainable:
        """The trainable itself (imports its framework)."""
        module, cls = self.implementation.split(":")
        return getattr(importlib.import_module(module), cls)()


_TRAINABLES = {
    "llama_torch": TrainableEntry("llama_torch", LlamaTorchParams, "sentune.trainables.llama_torch:LlamaTorch"),
    "lstm_tf": TrainableEntry("lstm_tf", LstmTfParams, "sentune.trainables.lstm_tf:LstmTf"),
}
TRAINABLE_NAMES = tuple(_TRAINABLES)


def get_trainable(name: str) -> TrainableEntry:
    try:
        return _TRAINABLES[name]
    except KeyError:
        raise ConfigError(f"unknown trainable {name!r}; choose from {', '.join(TRAINABLE_NAMES)}") from None
