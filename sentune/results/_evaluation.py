"""A checkpoint's predictions on a split, as files of the run: ``predictions_<split>.csv`` (each row's
text, true and predicted label, and the class probabilities) and, for test, ``classification_report.csv``.
The figures that go into ``evaluation.json`` are :func:`sentune.metrics.split_figures`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sentune import metrics
from sentune.results._layout import CLASSIFICATION_REPORT, predictions_file
from sentune.results._store import atomic_write_bytes

__all__ = ["write_predictions"]


def write_predictions(run_dir: str | Path, label_names: Sequence[str], split: str, texts: Sequence[str],
                      y_true: np.ndarray, probs: np.ndarray) -> pd.DataFrame:  # fmt: skip
    """Write ``predictions_<split>.csv``; for the test split also ``classification_report.csv``. Returns the
    classification report (a row per class, then accuracy and the macro / weighted averages)."""
    run_dir = Path(run_dir)
    y_pred = probs.argmax(1)
    pred = pd.DataFrame({"text": list(texts), "label": [label_names[i] for i in y_true],
                         "predicted": [label_names[i] for i in y_pred]})  # fmt: skip
    for i, name in enumerate(label_names):
        pred[f"p_{name}"] = probs[:, i]
    atomic_write_bytes(run_dir / predictions_file(split), lambda tmp: pred.to_csv(tmp, index=False))
    frame = pd.DataFrame(metrics.classification_report(y_true, y_pred, label_names)).T.reset_index(names="class")
    if split == "test":
        atomic_write_bytes(run_dir / CLASSIFICATION_REPORT, lambda tmp: frame.to_csv(tmp, index=False))
    return frame
