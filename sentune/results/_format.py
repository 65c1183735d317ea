"""A run as text for a terminal or a log: tables that fit the width (the leaderboard, the runs), the
budget line and the line that compares the best found with the best baseline and the reference model."""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pandas as pd

from sentune.results._layout import ROLE_BASELINE
from sentune.results._tables import cell_text
from sentune.results._view import RunLike, RunView

__all__ = ["format_table", "format_leaderboard", "format_budget", "comparison_line", "second_chance_line",
           "study_stop_line", "gpu_fraction_line", "suggest_gpu_fraction", "GPU_FRACTIONS"]  # fmt: skip

# the ``gpus:`` shares suggested, from a whole device down (n trials or workers per device: 1/n)
GPU_FRACTIONS = (1.0, 0.5, 0.25, 0.2, 0.125, 0.1, 0.0625)
_HEADROOM = 1.25  # the measured peak grows with a longer batch, a larger lr's activations, fragmentation...
_CONTEXT_MB = 512.0  # each process's CUDA context and allocator cache, beyond the tensors the peak counts


def _fit_columns(columns: list, sizes: dict, width: int) -> tuple[list, list]:
    """The columns that fit in ``width`` (at least two), from the left, and the ones left out; with a
    column left out, more go until the lines fit with the note that names them."""
    kept: list = []
    used = 0
    for c in columns:
        need = sizes[c] + (2 if kept else 0)
        if used + need > width and len(kept) >= 2:
            continue
        kept.append(c)
        used += need
    left_out = [c for c in columns if c not in kept]
    if left_out:
        while len(kept) > 2 and used > width:
            left_out.insert(0, kept.pop())
            used = sum(sizes[c] for c in kept) + 2 * (len(kept) - 1)
    return kept, left_out


def format_table(board: pd.DataFrame, *, limit: int | None = 20, width: int | None = None) -> str:
    """A table (the leaderboard, the runs) as text: ``-`` for a missing value, at most ``width`` characters
    a line (default: the terminal's); columns that do not fit are left out from the right and named."""
    shown = board.head(limit) if limit else board
    if shown.empty:
        return "(no trials)"
    if width is None:  # a terminal's width (or COLUMNS); written to a file or a pipe (logs), every column
        sized = sys.stdout.isatty() or "COLUMNS" in os.environ
        width = shutil.get_terminal_size((120, 24)).columns if sized else 10**6
    cells = {c: [str(c)] + [cell_text(v) for v in shown[c]] for c in shown.columns}
    sizes = {c: max(len(x) for x in col) for c, col in cells.items()}
    kept, left_out = _fit_columns(list(shown.columns), sizes, width)
    numeric = {c: pd.api.types.is_numeric_dtype(shown[c]) for c in kept}
    lines = []
    for i in range(len(shown) + 1):
        parts = [cells[c][i].rjust(sizes[c]) if numeric[c] else cells[c][i].ljust(sizes[c]) for c in kept]
        lines.append("  ".join(parts).rstrip())
    if left_out:
        note = f"(not shown: {', '.join(map(str, left_out))})"
        lines.append(note if len(note) <= width else note[: width - 4] + "...)")
    return "\n".join(lines)


def format_leaderboard(board: pd.DataFrame, *, limit: int | None = 20, width: int | None = None) -> str:
    """The leaderboard as text (see :func:`format_table`); every column is in ``leaderboard.csv``. On a
    narrow terminal the tuned parameters go before the stop reason, diagnostics and final figures."""
    first = ["rank", "trial_id", "status", "role", "epochs_run"] + [c for c in board.columns if c.startswith("peak_")]
    first += ["confirm_mean", "confirm_std", "confirm_n", "test_macro_f1"]
    late = {"stop_reason", "diagnostics", "overfit", "final_train_acc", "final_val_acc", "final_val_loss",
            "train_val_gap", "trial_seconds", "baseline", "test_acc", "pbt_history"}  # fmt: skip
    middle = [c for c in board.columns if c not in first and c not in late]
    order = [c for c in first if c in board] + middle + [c for c in board.columns if c in late]
    return format_table(board[order], limit=limit, width=width)


def format_budget(b: dict) -> str:
    """``budget: 14 trials, 52 epochs, 310 trial-s (GPU-s 78) | baseline 2 trials / 16 epochs | ...``."""
    gpu = f" (GPU-s {b['gpu_seconds']:.0f})" if b.get("gpu_seconds") else ""
    head = f"budget: {b['trials']} trials, {b['epochs']} epochs, {b['trial_seconds']:.0f} trial-s{gpu}"
    parts = [f"{role} {v['trials']} trials / {v['epochs']} epochs / {v['trial_seconds']:.0f} s"
             for role, v in b["by_role"].items()]  # fmt: skip
    return head + (" | " + " | ".join(parts) if len(parts) > 1 else "")


def _fig(split: dict | None, key: str) -> str:
    return "-" if not split or split.get(key) is None or np.isnan(split[key]) else f"{split[key]:.4f}"


def _best_found(view: RunView, best: dict) -> str:
    trials, roles = view.trials, view.roles
    epochs = trials["epochs_run"].fillna(0).astype(int)
    role = trials.set_index("trial_id")["role"].get(best["row"]) if "role" in trials else None
    what = ""
    if role == ROLE_BASELINE:
        what = f"baseline {int(trials.set_index('trial_id').loc[best['row'], 'baseline'])} "
    side = int(epochs[roles != ROLE_BASELINE].sum())
    outside = " outside the baselines" if (roles == ROLE_BASELINE).any() else ""
    return (f"best found {what}{best['row']}: dev {view.metric} {_fig(best.get('dev'), 'score')}, "
            f"test macro-F1 {_fig(best.get('test'), 'macro_f1')} ({side} epochs{outside})")  # fmt: skip


def comparison_line(run: RunLike) -> str:
    """One line: the best found against the best baseline on dev and test (and the epochs each side
    trained), and the reference model's figures. Empty when the run has nothing to compare."""
    view = RunView.of(run)
    evals, ref = view.evaluations, view.reference
    parts = []
    best = evals.get("best")
    if best:
        parts.append(_best_found(view, best))
    base = evals.get("best_baseline")
    if base:
        n = int(view.trials["epochs_run"].fillna(0).astype(int)[view.roles == ROLE_BASELINE].sum())
        parts.append(f"best baseline {base['row']}: dev {view.metric} {_fig(base.get('dev'), 'score')}, "
                     f"test macro-F1 {_fig(base.get('test'), 'macro_f1')} ({n} epochs)")  # fmt: skip
    if ref:
        parts.append(f"reference {ref['model']}: dev macro-F1 {_fig(ref.get('dev'), 'macro_f1')}, "
                     f"test macro-F1 {_fig(ref.get('test'), 'macro_f1')}")  # fmt: skip
    return " | ".join(parts)


def study_stop_line(info: dict) -> str:
    """Why a sweep with a ``stop:`` rule ended itself and what that saved against the trials it planned; empty
    when it did not end itself."""
    stop = info.get("study_stop")
    if not isinstance(stop, dict) or not stop.get("reason"):
        return ""
    ran, planned = stop.get("trials_run"), stop.get("trials_planned")
    saved = f"; {planned - ran} of the {planned} planned trials never ran" if isinstance(ran, int) and isinstance(
        planned, int) and planned > ran else ""  # fmt: skip
    return f"the sweep ended itself: {stop['reason']} (after {ran} trials{saved})"


def second_chance_line(info: dict) -> str:
    """Which stopped trials went on (``second_chance:``), from which epoch to which, what they reached, and the
    epochs spent of the budget; empty when the run gave none."""
    given = info.get("second_chance")
    if not isinstance(given, dict):
        return ""
    revived = given.get("revived") or {}
    spent = f"{given.get('spent_epochs')} of {given.get('budget_epochs')} epochs"
    if not revived:
        return f"second chances: no stopped trial could still beat the best ({spent} spent)"

    def one(t: str, r: dict) -> str:
        peak = f" (peak {float(r['peak']):.4f})" if r.get("peak") is not None else ""
        return f"{t} from epoch {r.get('from_epoch')} to {r.get('to_epoch')}{peak}"

    each = ", ".join(one(t, r) for t, r in revived.items())
    return f"second chances: {len(revived)} stopped trials went on ({spent}): {each}"


def suggest_gpu_fraction(peak_mb: float, device_mb: float) -> float | None:
    """The smallest ``gpus:`` share of :data:`GPU_FRACTIONS` (the most trials per device) whose part of a
    device of ``device_mb`` MiB holds a trial that peaked at ``peak_mb`` MiB, with headroom (the peak x 1.25,
    + 512 MiB for the process's CUDA context); None when not even a whole device does."""
    need = peak_mb * _HEADROOM + _CONTEXT_MB
    fits = [f for f in GPU_FRACTIONS if f * device_mb >= need]
    return min(fits) if fits else None


def _used_gpus(info: dict) -> float | None:
    try:
        return float(((info.get("spec") or {}).get("resources") or {}).get("gpus") or 0) or None
    except (AttributeError, TypeError, ValueError):  # a run.json edited by hand
        return None


def gpu_fraction_line(run: RunLike) -> str:
    """On a run that trained on GPUs: the largest peak memory of a trial's worker against the devices' and the
    ``gpus:`` share that fits it (:func:`suggest_gpu_fraction`); empty for a CPU run (or one recorded before
    the record kept memory)."""
    view = RunView.of(run)
    trials = view.trials
    if "peak_mem_mb" not in trials or "device_mem_mb" not in trials:
        return ""
    devices = pd.to_numeric(trials["device_mem_mb"], errors="coerce")
    peaks = pd.to_numeric(trials["peak_mem_mb"], errors="coerce")[devices.notna()].dropna()
    if peaks.empty:
        return ""
    peak, device = float(peaks.max()), float(devices.min())
    head = (f"GPU memory: the largest trial peaked at {peak:,.0f} MiB a worker (of {len(peaks)} trials on GPUs), "
            f"on devices of {device:,.0f} MiB")  # fmt: skip
    fraction = suggest_gpu_fraction(peak, device)
    if fraction is None:
        return head + f": not even gpus: 1 leaves the headroom (the peak x {_HEADROOM:g} + {_CONTEXT_MB:.0f} MiB)"
    used = _used_gpus(view.info)
    ran = f"; this run used gpus: {used:g}" if used else ""
    return (
        head + f": gpus: {fraction:g} fits by memory ({round(1 / fraction)} per device, the peak x "
        f"{_HEADROOM:g} + {_CONTEXT_MB:.0f} MiB each){ran}"
    )
