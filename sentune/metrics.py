"""The classification figures of sentune, computed in one place: accuracy, macro-F1, per-class precision /
recall / F1, prediction counts, cross-entropy, scikit-learn's classification report and the confusion
matrix. The epoch loop, the evaluations of the best checkpoints, the reference model and the training
report all take them from here, so a figure means the same wherever it appears.

Labels are class indices ``0 .. n_classes - 1``; a class that is never predicted (or never present) has
precision / recall / F1 0, and counts in the macro averages. numpy and scikit-learn only (scikit-learn
is imported on first use).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
    "PerClass", "accuracy", "per_class", "macro_f1", "prediction_counts", "classification_figures",
    "split_figures", "cross_entropy", "classification_report", "confusion",
]  # fmt: skip


class PerClass(NamedTuple):
    """Per-class figures, one entry per class index."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray  # true rows of each class


def accuracy(y_true, y_pred) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(y_true, y_pred))


def per_class(y_true, y_pred, n_classes: int) -> PerClass:
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(n_classes)), zero_division=0
    )
    return PerClass(precision, recall, f1, support)


def macro_f1(y_true, y_pred, n_classes: int) -> float:
    """The unweighted mean of the classes' F1."""
    return float(np.mean(per_class(y_true, y_pred, n_classes).f1))


def prediction_counts(y_pred, n_classes: int) -> np.ndarray:
    """How many rows were predicted as each class."""
    return np.bincount(np.asarray(y_pred, dtype=np.int64), minlength=n_classes)


def classification_figures(y_true, y_pred, label_names: Sequence[str], prefix: str) -> dict:
    """What the epoch loop reports for a split: ``<prefix>_acc``, ``<prefix>_macro_f1`` and, per class
    ``<name>``, ``<prefix>_precision/<name>``, ``_recall/``, ``_f1/`` and ``_pred_count/``."""
    n = len(label_names)
    figures = per_class(y_true, y_pred, n)
    out = {f"{prefix}_acc": accuracy(y_true, y_pred), f"{prefix}_macro_f1": float(np.mean(figures.f1))}
    counts = prediction_counts(y_pred, n)
    for i, name in enumerate(label_names):
        out[f"{prefix}_precision/{name}"] = float(figures.precision[i])
        out[f"{prefix}_recall/{name}"] = float(figures.recall[i])
        out[f"{prefix}_f1/{name}"] = float(figures.f1[i])
        out[f"{prefix}_pred_count/{name}"] = int(counts[i])
    return out


def split_figures(labels, probs: np.ndarray) -> dict:
    """Macro-F1 and accuracy of the argmax of ``probs`` [N, classes] against ``labels``."""
    pred = probs.argmax(1)
    return {"macro_f1": macro_f1(labels, pred, probs.shape[1]), "acc": accuracy(labels, pred)}


def cross_entropy(labels, probs: np.ndarray) -> float:
    """The mean negative log-probability of the true class (probabilities clipped to [1e-12, 1])."""
    from sklearn.metrics import log_loss

    return float(log_loss(labels, np.clip(probs, 1e-12, 1.0), labels=list(range(probs.shape[1]))))


def classification_report(y_true, y_pred, label_names: Sequence[str]) -> dict:
    """scikit-learn's report as a dict: per class name and for ``macro avg`` / ``weighted avg``:
    precision, recall, f1-score, support; ``accuracy``: a number."""
    from sklearn.metrics import classification_report as report

    return report(y_true, y_pred, labels=list(range(len(label_names))), target_names=list(label_names),
                  output_dict=True, zero_division=0)  # fmt: skip


def confusion(y_true, y_pred, labels: Sequence) -> np.ndarray:
    """Counts of (true, predicted) pairs: rows the true class, columns the predicted one, in ``labels``' order."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, y_pred, labels=list(labels))
