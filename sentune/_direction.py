"""Which way a metric improves: the one place that decides "better than"."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

_N = TypeVar("_N", bound=Any)

__all__ = ["Direction"]


@dataclass(frozen=True)
class Direction:
    """``max`` (accuracy, F1) or ``min`` (loss)."""

    mode: Literal["max", "min"]

    def __post_init__(self):
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")

    @classmethod
    def of(cls, metric: str, mode: str | None = None) -> Direction:
        """The given ``mode``, else the metric's natural one: ``min`` for a loss, ``max`` otherwise."""
        return cls(mode or ("min" if metric.endswith("loss") else "max"))  # type: ignore[arg-type]

    def better(self, value, than) -> bool:
        """``value`` beats ``than`` (anything beats None; NaN beats nothing)."""
        if than is None:
            return value is not None
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        return value > than if self.mode == "max" else value < than

    def score(self, value: _N) -> _N:
        """A number (or a pandas Series) where larger is better, for sorting."""
        return value if self.mode == "max" else -value

    def __str__(self) -> str:
        return self.mode
