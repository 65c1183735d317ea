"""The seed script's one-row CSV report (``training_report_YYYYMMDD_HHMMSS.csv``), for the best trial.

Same columns as the Weibo LSTM seed wrote, so its users keep their spreadsheets: timestamp,
best_epoch, best_val_loss, best_val_accuracy, best_val_precision, best_val_recall, final_test_loss,
final_test_accuracy, final_test_precision, final_test_recall, then ``report_<class>_<metric>`` for each
class and the macro / weighted averages of sklearn's classification report. Precision and recall
are macro averages over the classes; the test loss is the cross-entropy of the predicted
probabilities.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from sentune.results._aggregate import best_trial
from sentune.results._store import atomic_write_bytes, read_epochs

__all__ = ["write_seed_report"]


def write_seed_report(run_dir: str | Path, label_names: Sequence[str], y_test: np.ndarray, probs_test: np.ndarray,
                      *, now: _dt.datetime | None = None) -> Path:
    from sklearn.metrics import accuracy_score, classification_report, log_loss, precision_score, recall_score

    run_dir = Path(run_dir)
    now = now or _dt.datetime.now()
    best = best_trial(run_dir)
    epochs = read_epochs(run_dir)
    row = epochs[(epochs.trial_id == best.name) & (epochs.epoch == best["peak_epoch"])].iloc[0]
    labels = list(range(len(label_names)))
    y_pred = probs_test.argmax(1)
    out = {
        "timestamp": now.strftime("%Y-%m-%d %H:%M:%S"),
        "best_epoch": int(row["epoch"]),
        "best_val_loss": float(row["val_loss"]),
        "best_val_accuracy": float(row["val_acc"]),
        "best_val_precision": float(np.mean([row[f"val_precision/{n}"] for n in label_names])),
        "best_val_recall": float(np.mean([row[f"val_recall/{n}"] for n in label_names])),
        "final_test_loss": float(log_loss(y_test, np.clip(probs_test, 1e-12, 1.0), labels=labels)),
        "final_test_accuracy": float(accuracy_score(y_test, y_pred)),
        "final_test_precision": float(precision_score(y_test, y_pred, labels=labels, average="macro", zero_division=0)),
        "final_test_recall": float(recall_score(y_test, y_pred, labels=labels, average="macro", zero_division=0)),
    }
    report = classification_report(y_test, y_pred, labels=labels, target_names=list(label_names), output_dict=True,
                                   zero_division=0)
    for cls, metrics in report.items():
        if isinstance(metrics, dict):
            for name, value in metrics.items():
                out[f"report_{cls}_{name}"] = float(value)
    path = run_dir / f"training_report_{now.strftime('%Y%m%d_%H%M%S')}.csv"
    atomic_write_bytes(path, lambda tmp: pd.DataFrame([out]).to_csv(tmp, index=False))
    return path
