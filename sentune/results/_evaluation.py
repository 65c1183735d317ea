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

__all__ = ["example_predictions", "write_predictions"]


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


def example_predictions(run_dir: str | Path, split: str = "dev", n: int = 5) -> list[dict]:
    """The first ``n`` rows of the best model's ``predictions_<split>.csv`` (text, label, predicted, and the
    predicted class's probability as ``p``); [] when the run has none."""
    path = Path(run_dir) / predictions_file(split)
    if not path.is_file():
        return []
    try:
        frame = pd.read_csv(path, nrows=n)
    except (OSError, ValueError):
        return []
    rows = []
    for r in frame.to_dict("records"):
        p = r.get(f"p_{r.get('predicted')}")
        rows.append({"text": str(r.get("text", "")), "label": r.get("label"), "predicted": r.get("predicted"),
                     "p": float(p) if p is not None else None})  # fmt: skip
    return rows
