"""Aggregation of a run: leaderboard, best config (deterministic tie-break), evaluation reports."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import yaml

from sentune._direction import Direction
from sentune.results._store import atomic_write_bytes, has_epochs, read_epochs, read_run_info, read_trials

__all__ = ["leaderboard", "best_trial", "best_config", "write_best_config", "write_evaluation",
           "format_leaderboard", "format_table", "export_run"]


def _tuned_columns(trials: pd.DataFrame, run_info: dict) -> list[str]:
    tuned = run_info.get("tuned_params")
    cols = [c for c in trials.columns if c.startswith("config/")]
    if tuned is not None:
        return [f"config/{t}" for t in tuned if f"config/{t}" in cols]
    return [c for c in cols if trials[c].astype(str).nunique() > 1]


def leaderboard(run_dir: str | Path) -> pd.DataFrame:
    """One row per trial, best first: tuned config, peak metric and epoch, final train/val gap, status."""
    info = read_run_info(run_dir)
    metric, mode = info["metric"], info["mode"]
    trials = read_trials(run_dir)
    epochs = read_epochs(run_dir) if has_epochs(run_dir) else pd.DataFrame()
    last = epochs.sort_values("epoch").groupby("trial_id").tail(1).set_index("trial_id") if len(epochs) else pd.DataFrame()
    extra = [c for c in ("stop_reason", "diagnostics", "overfit") if c in trials.columns]
    board = trials[["trial_id", "status", "epochs_run", "peak_metric", "peak_epoch", *extra]].copy()
    for col in _tuned_columns(trials, info):
        board[col.removeprefix("config/")] = trials[col].values
    for src, dst in (("train_acc", "final_train_acc"), ("val_acc", "final_val_acc"), ("val_loss", "final_val_loss")):
        board[dst] = board["trial_id"].map(last[src]) if src in last else np.nan
    board["train_val_gap"] = board["final_train_acc"] - board["final_val_acc"]
    board = board.rename(columns={"peak_metric": f"peak_{metric}"})
    peak = f"peak_{metric}"
    key = Direction(mode).score(board[peak])
    board = board.assign(_key=key.fillna(-np.inf), _ep=board["peak_epoch"].fillna(np.inf))
    board = board.sort_values(["_key", "_ep", "trial_id"], ascending=[False, True, True], kind="mergesort")
    board = board.drop(columns=["_key", "_ep"]).reset_index(drop=True)
    board.insert(0, "rank", np.arange(1, len(board) + 1))
    return board


def best_trial(run_dir: str | Path) -> pd.Series:
    """The winner: best peak metric, then fewer epochs to reach it, then the smaller trial id."""
    board = leaderboard(run_dir)
    scored = board[board["peak_epoch"].notna()]
    if scored.empty:
        from sentune.errors import SentuneError

        raise SentuneError(f"{run_dir}: no trial reported a metric; see trials.parquet for errors")
    trials = read_trials(run_dir).set_index("trial_id")
    return trials.loc[scored.iloc[0]["trial_id"]].rename(scored.iloc[0]["trial_id"])


def best_config(run_dir: str | Path) -> dict:
    """A config that re-runs the trainable alone: ``trainable``, ``data``, ``params``, and where it came from."""
    info = read_run_info(run_dir)
    best = best_trial(run_dir)
    return {
        "trainable": info["trainable"],
        "data": info["data"],
        "params": json.loads(best["config_json"]),
        "source": {
            "job": info["job"], "run": info["run_id"], "trial_id": str(best.name),
            "metric": info["metric"], "mode": info["mode"],
            "peak": float(best["peak_metric"]), "peak_epoch": int(best["peak_epoch"]),
        },
    }


def write_best_config(run_dir: str | Path, out: str | Path | None = None) -> Path:
    out = Path(out) if out else Path(run_dir) / "best_config.yaml"
    text = yaml.safe_dump(best_config(run_dir), sort_keys=False)
    atomic_write_bytes(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return out


def write_evaluation(run_dir: str | Path, label_names: Sequence[str], split: str, texts: Sequence[str],
                     y_true: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """Write ``predictions_<split>.csv``; for the test split also ``classification_report.csv``."""
    from sklearn.metrics import classification_report

    run_dir = Path(run_dir)
    y_pred = probs.argmax(1)
    pred = pd.DataFrame({"text": list(texts), "label": [label_names[i] for i in y_true],
                         "predicted": [label_names[i] for i in y_pred]})
    for i, name in enumerate(label_names):
        pred[f"p_{name}"] = probs[:, i]
    atomic_write_bytes(run_dir / f"predictions_{split}.csv", lambda tmp: pred.to_csv(tmp, index=False))
    report = classification_report(y_true, y_pred, labels=list(range(len(label_names))),
                                   target_names=list(label_names), output_dict=True, zero_division=0)
    frame = pd.DataFrame(report).T.reset_index(names="class")
    if split == "test":
        atomic_write_bytes(run_dir / "classification_report.csv", lambda tmp: frame.to_csv(tmp, index=False))
    return frame


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(board: pd.DataFrame, *, limit: int | None = 20, width: int | None = None) -> str:
    """A table (the leaderboard, the runs) as text: ``-`` for a missing value, at most ``width`` characters
    a line (default: the terminal's); columns that do not fit are left out from the right and named."""
    shown = board.head(limit) if limit else board
    if shown.empty:
        return "(no trials)"
    if width is None:  # a terminal's width (or COLUMNS); written to a file or a pipe (logs), every column
        sized = sys.stdout.isatty() or "COLUMNS" in os.environ
        width = shutil.get_terminal_size((120, 24)).columns if sized else 10**6
    cells = {c: [str(c)] + [_cell(v) for v in shown[c]] for c in shown.columns}
    sizes = {c: max(len(x) for x in col) for c, col in cells.items()}
    kept: list = []
    used = 0
    for c in shown.columns:
        need = sizes[c] + (2 if kept else 0)
        if used + need > width and len(kept) >= 2:
            continue
        kept.append(c)
        used += need
    left_out = [c for c in shown.columns if c not in kept]
    if left_out:  # room for the note; drop more columns until the lines fit with it
        while len(kept) > 2 and used > width:
            left_out.insert(0, kept.pop())
            used = sum(sizes[c] for c in kept) + 2 * (len(kept) - 1)
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
    first = ["rank", "trial_id", "status", "epochs_run"] + [c for c in board.columns if c.startswith("peak_")]
    late = {"stop_reason", "diagnostics", "overfit", "final_train_acc", "final_val_acc", "final_val_loss",
            "train_val_gap"}  # fmt: skip
    middle = [c for c in board.columns if c not in first and c not in late]
    order = [c for c in first if c in board] + middle + [c for c in board.columns if c in late]
    return format_table(board[order], limit=limit, width=width)


def export_run(run_dir: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Write ``leaderboard.csv`` and ``best_config.yaml`` (to ``out`` when given)."""
    run_dir = Path(run_dir)
    board = leaderboard(run_dir)
    atomic_write_bytes(run_dir / "leaderboard.csv", lambda tmp: board.to_csv(tmp, index=False))
    return {"leaderboard": run_dir / "leaderboard.csv", "best_config": write_best_config(run_dir, out)}
