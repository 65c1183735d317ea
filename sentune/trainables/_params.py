"""The option models of the trainables: validated with pydantic, importable without torch, TensorFlow or
Ray (validating a job loads no deep-learning framework)."""

from __future__ import annotations

import numbers
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from sentune.errors import ConfigError
from sentune.trainables._backbone_names import parse_backbone

__all__ = ["SEED_LIMIT", "CoreParams", "LlamaTorchParams", "LstmTfParams", "Seed"]

SEED_LIMIT = 2**32  # numpy, Keras and scikit-learn take seeds below this


def _whole_number(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"a seed is a whole number in [0, 2**32), not {type(value).__name__} {value!r:.40}")
    return int(value)


# a seed: a whole number (not true/false, not 1.5 or 1.0) in [0, 2**32)
Seed = Annotated[int, BeforeValidator(_whole_number), Field(ge=0, lt=SEED_LIMIT)]


class CoreParams(BaseModel):
    """The options every trainable takes: optimizer, schedule, loss, seed and the monitored metric; each
    trainable adds its model's own and may change a default. Unknown options are refused."""

    model_config = ConfigDict(extra="forbid")
    # options that shape the data every trial shares: constants of a job, never searched
    DATA_PARAMS: ClassVar[tuple[str, ...]] = ()

    lr: float = Field(1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(32, gt=0)  # per worker: the global batch is batch_size x workers
    epochs: int = Field(5, gt=0)
    warmup_epochs: float = Field(0.0, ge=0.0)
    loss: Literal["ce", "focal"] = "ce"
    focal_alpha: Literal["auto", "none"] | float | list[float] | None = None
    focal_gamma: float = Field(2.0, ge=0.0)
    grad_clip: float | None = Field(1.0, gt=0.0)
    seed: Seed = 0
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    monitor: Literal["val_macro_f1", "val_acc", "val_loss"] = "val_macro_f1"

    @field_validator("focal_alpha")
    @classmethod
    def _alpha(cls, v):
        if isinstance(v, float) and not 0.0 < v < 1.0:
            raise ValueError("a scalar focal_alpha must be in (0, 1)")
        if isinstance(v, list) and (not v or any(a < 0 for a in v)):
            raise ValueError("focal_alpha values must be >= 0")
        return v

    @model_validator(mode="after")
    def _warmup(self):
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) exceeds epochs ({self.epochs})")
        return self

    @classmethod
    def check_data(cls, values: dict[str, list], class_counts) -> None:
        """Options that can only be checked against the data: every value a search may pick
        (``values``: option -> candidate values) must fit the train split's classes."""
        from sentune.trainables._common import resolve_alpha

        for alpha in values.get("focal_alpha", []):
            try:
                resolve_alpha(alpha, class_counts)
            except ValueError as exc:
                raise ConfigError(f"focal_alpha {alpha!r}: {exc}") from None


class LlamaTorchParams(CoreParams):
    """Every option of ``llama_torch`` (the core ones and the model's); a search space may tune any of
    them except DATA_PARAMS."""

    DATA_PARAMS: ClassVar[tuple[str, ...]] = ("backbone", "option", "max_len", "pooling")

    backbone: str = "smollm2"
    option: Literal["pretrain", "finetune"] = "pretrain"
    max_len: int = Field(64, gt=0, le=8192)
    pooling: Literal["last", "mean"] = "last"
    hidden_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    # on a CUDA device: autocast to bfloat16, or float16 with a gradient scaler; TF32 float32 matmuls (GPUs
    # that have them). No-ops on the CPU.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    tf32: bool = True

    @field_validator("backbone")
    @classmethod
    def _backbone(cls, v):
        try:
            parse_backbone(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return v


class LstmTfParams(CoreParams):
    """Every option of ``lstm_tf`` (the core ones and the model's); a search space may tune any of them
    except DATA_PARAMS."""

    DATA_PARAMS: ClassVar[tuple[str, ...]] = ("tokenizer", "max_len", "vocab_size")

    tokenizer: Literal["jieba", "char"] = "jieba"
    max_len: int = Field(100, gt=0, le=4096)
    vocab_size: int = Field(50000, ge=3)  # at most this many ids, pad (0) and OOV (1) included
    embedding_dim: int = Field(128, gt=0)
    lstm_units: tuple[int, ...] = (128, 64)  # one LSTM or two stacked, by their sizes
    dense_units: int = Field(32, gt=0)
    bidirectional: bool = False  # the LSTMs read the text both ways (twice the units out)
    pooling: Literal["last", "max"] = "last"  # the last LSTM's last state, or its outputs' max over the text
    embedding_dropout: float = Field(0.0, ge=0.0, lt=1.0)  # drops whole embedding channels (SpatialDropout1D)
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    bn_momentum: float = Field(0.99, ge=0.0, lt=1.0)  # BatchNormalization's moving-statistics momentum
    l2: float = Field(1e-4, ge=0.0)
    # the seed's defaults where they differ from the core ones
    batch_size: int = Field(256, gt=0)
    epochs: int = Field(10, gt=0)
    grad_clip: float | None = Field(None, gt=0.0)

    @field_validator("lstm_units", mode="before")
    @classmethod
    def _units(cls, v):
        if isinstance(v, (list, tuple)) and len(v) not in (1, 2):
            raise ValueError(f"lstm_units takes one or two sizes [first, second], got {len(v)}: {list(v)}")
        if isinstance(v, (list, tuple)) and any(isinstance(u, bool) or not isinstance(u, int) or u <= 0 for u in v):
            raise ValueError(f"lstm_units must be positive integers, got {list(v)}")
        return v
