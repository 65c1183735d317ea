"""The training report: a one-row CSV (``training_report_YYYYMMDD_HHMMSS.csv``) for the best trial.

Its columns are those of the Weibo LSTM training script, so a spreadsheet built on that script's
reports reads it: timestamp, best_epoch, best_val_loss, best_val_accuracy, best_val_precision,
best_val_recall, final_test_loss, final_test_accuracy, final_test_precision, final_test_recall, then
``report_<class>_<metric>`` for each class and the macro / weighted averages of scikit-learn's
classification report. Precision and recall are macro averages over the classes; the test loss is the
cross-entropy of the predicted probabilities.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sentune import metrics
from sentune.results._layout import training_report_file
from sentune.results._store import atomic_write_bytes
from sentune.results._view import RunLike, RunView

__all__ = ["write_training_report"]


def write_training_report(run: RunLike, label_names: Sequence[str], y_test: np.ndarray, probs_test: np.ndarray,
                          *, now: _dt.datetime | None = None) -> Path:  # fmt: skip
    """Write the best trial's training report into the run folder and return its path: its best epoch's
    dev figures (from the record), and ``probs_test`` (its best checkpoint's) against ``y_test``."""
    view = RunView.of(run)
    now = now or _dt.datetime.now()
    best, epochs = view.best_trial, view.epochs
    row = epochs[(epochs.trial_id == best.name) & (epochs.epoch == best["peak_epoch"])].iloc[0]
    y_pred = probs_test.argmax(1)
    test = metrics.per_class(y_test, y_pred, len(label_names))
    out = {
        "timestamp": now.strftime("%Y-%m-%d %H:%M:%S"),
        "best_epoch": int(row["epoch"]),
        "best_val_loss": float(row["val_loss"]),
        "best_val_accuracy": float(row["val_acc"]),
        "best_val_precision": float(np.mean([row[f"val_precision/{n}"] for n in label_names])),
        "best_val_recall": float(np.mean([row[f"val_recall/{n}"] for n in label_names])),
        "final_test_loss": metrics.cross_entropy(y_test, probs_test),
        "final_test_accuracy": metrics.accuracy(y_test, y_pred),
        "final_test_precision": float(np.mean(test.precision)),
        "final_test_recall": float(np.mean(test.recall)),
    }
    for cls, figures in metrics.classification_report(y_test, y_pred, label_names).items():
        if isinstance(figures, dict):
            for name, value in figures.items():
                out[f"report_{cls}_{name}"] = float(value)
    path = view.run_dir / training_report_file(now.strftime("%Y%m%d_%H%M%S"))
    atomic_write_bytes(path, lambda tmp: pd.DataFrame([out]).to_csv(tmp, index=False))
    return path
