"""Trainable names -> their option models and modules (imported only when needed)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from sentune.errors import ConfigError

__all__ = ["TrainableInfo", "get_trainable", "TRAINABLE_NAMES"]


@dataclass(frozen=True)
class TrainableInfo:
    name: str
    module: str  # has Params, prepare, fit, predict, load_checkpoint
    params_class: str
    framework: str = "torch"  # which Ray Train trainer runs it: "torch" (TorchTrainer) or "tensorflow"

    def load(self):
        return importlib.import_module(self.module)

    @property
    def params_model(self):
        return getattr(self.load(), self.params_class)


_TRAINABLES = {
    "llama_torch": TrainableInfo("llama_torch", "sentune.trainables.llama_torch", "LlamaTorchParams"),
    "lstm_tf": TrainableInfo("lstm_tf", "sentune.trainables.lstm_tf", "LstmTfParams", framework="tensorflow"),
}
TRAINABLE_NAMES = tuple(_TRAINABLES)


def get_trainable(name: str) -> TrainableInfo:
    try:
        return _TRAINABLES[name]
    except KeyError:
        raise ConfigError(f"unknown trainable {name!r}; choose from {', '.join(TRAINABLE_NAMES)}") from None
