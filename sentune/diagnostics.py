"""Per-epoch diagnostics of a trial, read off the metrics every trainable reports.

The seeds read these off logs by eye: a model that predicts one class for 12 epochs (macro-F1 stuck
at 0.436), train accuracy 1.000 next to val 0.419, a loss that turns NaN. Here they are computed on
the driver for every trial result, stored with the metrics, shown in the leaderboard, and may stop a
trial (``stop_on: [nan, collapse]``). Pure Python: no TensorFlow, no torch, no Ray.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DiagnosticsConfig", "TrialDiagnostics", "DiagnosticsTracker", "OVERFIT_LEVELS", "summarize"]

OVERFIT_LEVELS = ("none", "mild", "severe")


class DiagnosticsConfig(BaseModel):
    """Thresholds (the ``diagnostics:`` block of a job)."""

    model_config = ConfigDict(extra="forbid")
    collapse_share: float = Field(0.9, gt=0.0, le=1.0, description="share of predictions in one class")
    collapse_distance: float = Field(0.5, gt=0.0, le=1.0, description="total-variation distance pred vs labels")
    stagnation_epochs: int = Field(4, ge=2, description="epochs of flat val macro-F1")
    stagnation_delta: float = Field(0.005, ge=0.0)
    overfit_gap_mild: float = Field(0.10, ge=0.0)
    overfit_gap_severe: float = Field(0.30, ge=0.0)
    overfit_rising_epochs: int = Field(3, ge=2, description="epochs of val loss rising while train loss falls")
    grad_spike_factor: float = Field(10.0, gt=1.0, description="grad norm above this x its running median")
    stop_on: list[Literal["nan", "collapse"]] = Field(default_factory=list)
    stop_after: int = Field(3, ge=1, description="a collapse must last this many epochs to stop the trial")


@dataclass
class TrialDiagnostics:
    """The state of one trial, fed its results in epoch order."""

    config: DiagnosticsConfig
    label_counts: Sequence[int]
    label_names: Sequence[str]
    history: list[dict] = field(default_factory=list)
    collapse_run: int = 0
    grad_norms: list[float] = field(default_factory=list)

    def update(self, m: dict) -> dict:
        cfg = self.config
        flags: dict[str, Any] = {}
        # NaN / Inf anywhere in the losses
        losses = [m.get(k) for k in ("train_loss", "val_loss")]
        flags["diag_nan"] = any(v is None or not math.isfinite(v) for v in losses)
        # collapse: one class takes (almost) everything, or the predictions are far from the labels
        counts = [m.get(f"val_pred_count/{n}", 0) or 0 for n in self.label_names]
        total = sum(counts)
        share = max(counts) / total if total else 0.0
        labels_total = sum(self.label_counts) or 1
        distance = (
            0.5 * sum(abs(c / total - lc / labels_total) for c, lc in zip(counts, self.label_counts)) if total else 0.0
        )
        flags["diag_pred_max_share"] = share
        flags["diag_pred_distance"] = distance
        flags["diag_collapse"] = bool(total) and (share >= cfg.collapse_share or distance >= cfg.collapse_distance)
        self.collapse_run = self.collapse_run + 1 if flags["diag_collapse"] else 0
        flags["diag_collapse_epochs"] = self.collapse_run
        # stagnation: val macro-F1 flat for N epochs
        f1s = [h.get("val_macro_f1") for h in self.history[-(cfg.stagnation_epochs - 1) :]] + [m.get("val_macro_f1")]
        known = [f for f in f1s if f is not None]
        flags["diag_stagnation"] = (
            len(f1s) >= cfg.stagnation_epochs
            and len(known) == len(f1s)
            and max(known) - min(known) <= cfg.stagnation_delta
        )
        # over-fit: the train/val accuracy gap, or val loss rising while train loss falls
        gap = (m.get("train_acc") or 0.0) - (m.get("val_acc") or 0.0)
        flags["diag_train_val_gap"] = gap
        recent = self.history[-(cfg.overfit_rising_epochs - 1) :] + [m]
        rising = len(recent) >= cfg.overfit_rising_epochs and all(
            b["val_loss"] > a["val_loss"] and b["train_loss"] < a["train_loss"] for a, b in zip(recent, recent[1:])
        )
        level = (
            "severe" if gap >= cfg.overfit_gap_severe else "mild" if gap >= cfg.overfit_gap_mild or rising else "none"
        )
        flags["diag_overfit"] = level
        flags["diag_val_loss_rising"] = rising
        # gradient trouble: a grad norm far above its running median
        g = m.get("grad_norm")
        median = sorted(self.grad_norms)[len(self.grad_norms) // 2] if self.grad_norms else None
        flags["diag_grad_spike"] = bool(
            g is not None and median and math.isfinite(g) and g > cfg.grad_spike_factor * median
        ) or (g is not None and not math.isfinite(g))
        if g is not None and math.isfinite(g):
            self.grad_norms.append(g)
        self.history.append(m)
        return flags

    def stop_reason(self, flags: dict) -> str | None:
        if "nan" in self.config.stop_on and flags["diag_nan"]:
            return "nan"
        if "collapse" in self.config.stop_on and flags["diag_collapse_epochs"] >= self.config.stop_after:
            return "collapse"
        return None


class DiagnosticsTracker:
    """Diagnostics for every trial of a run; safe to feed the same result twice (a stopper and a callback)."""

    def __init__(self, config: DiagnosticsConfig, label_counts: Sequence[int], label_names: Sequence[str]):
        self.config, self.label_counts, self.label_names = config, list(label_counts), list(label_names)
        self._trials: dict[str, TrialDiagnostics] = {}
        self._flags: dict[tuple[str, int], dict] = {}
        self.stop_reasons: dict[str, str] = {}

    def update(self, trial_id: str, result: dict) -> dict:
        key = (trial_id, int(result.get("epoch", result.get("training_iteration", 0))))
        if key not in self._flags:
            if key[1] == 1 or trial_id not in self._trials:  # a trial (re)starting from epoch 1
                self._trials[trial_id] = TrialDiagnostics(self.config, self.label_counts, self.label_names)
            flags = self._trials[trial_id].update(result)
            reason = self._trials[trial_id].stop_reason(flags)
            if reason:
                self.stop_reasons[trial_id] = reason
            flags["diag_stop"] = reason
            self._flags[key] = flags
        return self._flags[key]


def _lasting(hits: list[bool], run: int = 3) -> bool:
    """Raised at the trial's last epoch, or in ``run`` epochs in a row: not a lopsided warm-up epoch."""
    if not hits:
        return False
    if hits[-1]:
        return True
    streak = 0
    for hit in hits:
        streak = streak + 1 if hit else 0
        if streak >= run:
            return True
    return False


def summarize(epochs_flags: list[dict]) -> dict:
    """A trial's diagnostics in one row, by whether they persisted: ``diagnostics`` names what lasted (a NaN
    loss always counts), ``recovered`` what was raised and went away, ``overfit`` the worst degree that
    held for two epochs in a row or at the end."""
    lasting: list[str] = []
    recovered: list[str] = []
    for name in ("nan", "collapse", "stagnation", "grad_spike"):
        hits = [bool(f.get(f"diag_{name}")) for f in epochs_flags]
        if any(hits):
            (lasting if name == "nan" or _lasting(hits) else recovered).append(name)
    levels = [OVERFIT_LEVELS.index(f.get("diag_overfit", "none")) for f in epochs_flags]
    held = [min(a, b) for a, b in zip(levels, levels[1:])] + levels[-1:]
    worst = max(held, default=0)
    return {
        "diagnostics": ",".join(lasting) or "ok",
        "recovered": ",".join(recovered) or None,
        "overfit": OVERFIT_LEVELS[worst],
    }
