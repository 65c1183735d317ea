"""Training pieces both trainables share: losses, LR schedules and scaling, epoch metrics."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["resolve_alpha", "lr_scale_factor", "warmup_cosine", "classification_metrics", "monitor_mode"]


def resolve_alpha(alpha, class_counts: Sequence[int]) -> list[float] | None:
    """Per-class focal alpha: ``None``; ``"auto"`` (inverse class frequency, mean 1);
    a list (one weight per class); or, for two classes, a float ``a`` meaning ``[1 - a, a]``."""
    n_classes = len(class_counts)
    if alpha is None or alpha == "none":
        return None
    if alpha == "auto":
        counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 1.0)
        weights = counts.sum() / (n_classes * counts)
        return [float(w) for w in weights]
    if isinstance(alpha, (int, float)):
        if n_classes != 2:
            raise ValueError(f"a scalar focal_alpha needs two classes; this data has {n_classes}: give a list or 'auto'")
        return [1.0 - float(alpha), float(alpha)]
    alpha = [float(a) for a in alpha]
    if len(alpha) != n_classes:
        raise ValueError(f"focal_alpha has {len(alpha)} values; this data has {n_classes} classes")
    return alpha


def lr_scale_factor(rule: str, workers: int) -> float:
    """How the base lr grows with the number of data-parallel workers."""
    if rule == "linear":
        return float(workers)
    if rule == "sqrt":
        return math.sqrt(workers)
    return 1.0


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: linear warm-up to 1, then cosine annealing to 0 over the remaining steps."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def monitor_mode(metric: str) -> str:
    return "min" if metric.endswith("loss") else "max"


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str], prefix: str) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the prediction distribution."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    labels = list(range(len(label_names)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    out = {
        f"{prefix}_acc": float(accuracy_score(y_true, y_pred)),
        f"{prefix}_macro_f1": float(np.mean(f1)),
    }
    counts = np.bincount(np.asarray(y_pred, dtype=np.int64), minlength=len(labels))
    for i, name in enumerate(label_names):
        out[f"{prefix}_precision/{name}"] = float(precision[i])
        out[f"{prefix}_recall/{name}"] = float(recall[i])
        out[f"{prefix}_f1/{name}"] = float(f1[i])
        out[f"{prefix}_pred_count/{name}"] = int(counts[i])
    return out
