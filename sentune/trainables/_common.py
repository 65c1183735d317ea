"""Training arithmetic both trainables share: focal alpha, LR schedules and scaling, data shards, epoch
metrics, the best-epoch tracker and the LR range test's bookkeeping. Neither torch nor TensorFlow."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from sentune._direction import Direction

__all__ = [
    "BestEpoch",
    "focal_class_weights",
    "cycling_batches",
    "epoch_metrics",
    "epoch_shard",
    "lr_range_rows",
    "lr_scale_factor",
    "resolve_alpha",
    "warmup_cosine",
]


class BestEpoch:
    """The best epoch so far by the monitored metric (the first epoch counts as best, even a NaN one)."""

    def __init__(self, metric: str):
        self.metric, self.direction = metric, Direction.of(metric)
        self.value: float | None = None
        self.epoch = 0

    def update(self, metrics: dict) -> bool:
        """True when this epoch is the new best."""
        v = metrics[self.metric]
        if self.epoch == 0 or self.direction.better(v, self.value):
            self.value, self.epoch = v, metrics["epoch"]
            return True
        return False


def resolve_alpha(alpha, class_counts: Sequence[int] | np.ndarray) -> list[float] | None:
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
            raise ValueError(
                f"a scalar focal_alpha needs two classes; this data has {n_classes}: give a list or 'auto'"
            )
        return [1.0 - float(alpha), float(alpha)]
    alpha = [float(a) for a in alpha]
    if len(alpha) != n_classes:
        raise ValueError(f"focal_alpha has {len(alpha)} values; this data has {n_classes} classes")
    return alpha


def focal_class_weights(params, train_y: np.ndarray, num_classes: int) -> list[float] | None:
    """The per-class focal alpha a run trains with: None unless ``params.loss`` is focal."""
    if params.loss != "focal":
        return None
    return resolve_alpha(params.focal_alpha, np.bincount(train_y, minlength=num_classes))


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


def epoch_shard(seed: int, n: int, per_rank: int, world: int, rank: int, epoch: int) -> np.ndarray:
    """A worker's rows for an epoch: the same seeded permutation on every worker, split by rank, each
    worker the same count (collectives need equal step counts)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)[: per_rank * world]
    return perm[rank::world]


def cycling_batches(seed: int, n: int, per_rank: int, world: int, rank: int, batch_size: int) -> Iterator[np.ndarray]:
    """This worker's batches, epoch after epoch, without end (the LR range test's feed)."""
    epoch = 0
    while True:
        epoch += 1
        shard = epoch_shard(seed, n, per_rank, world, rank, epoch)
        for i in range(0, len(shard), batch_size):
            yield shard[i : i + batch_size]


def epoch_metrics(
    *,
    epoch: int,
    sums: np.ndarray,
    val_loss: float,
    y_dev: np.ndarray,
    val_pred: np.ndarray,
    label_names: Sequence[str],
    lr: float,
    norms: Sequence[float],
    seconds: float,
    workers: int,
    batch_size: int,
    lr_scale: float,
) -> dict:
    """The metrics every trainable reports each epoch (the same names for both; ARCHITECTURE.md).
    ``sums`` = (loss x rows, correct, rows)
    over the epoch's training batches, summed over the workers."""
    from sentune.metrics import classification_figures

    return {
        "epoch": epoch,
        "train_loss": float(sums[0] / sums[2]),
        "train_acc": float(sums[1] / sums[2]),
        "val_loss": val_loss,
        **classification_figures(y_dev, val_pred, label_names, "val"),
        "lr": lr,
        "grad_norm": float(np.mean(norms)) if len(norms) else 0.0,
        "grad_norm_max": float(np.max(norms)) if len(norms) else 0.0,
        "epoch_seconds": seconds,
        "samples_per_second": float(sums[2] / seconds),
        "workers": workers,
        "global_batch_size": batch_size * workers,
        "lr_scale": lr_scale,
    }


def lr_range_rows(
    step_at: Callable[[float], float],
    *,
    lr_min: float,
    lr_max: float,
    steps: int,
    diverge_factor: float,
    smoothing: float,
) -> list[dict]:
    """Raise the lr exponentially from ``lr_min`` to ``lr_max`` over ``steps`` calls of ``step_at(lr)``
    (one optimizer step at that lr, returning its loss averaged over the workers); stop once the
    bias-corrected moving average of the loss exceeds ``diverge_factor`` times its minimum or turns
    NaN. One row per step: step, lr, loss, smoothed_loss."""
    rows, avg, best = [], 0.0, math.inf
    for step in range(steps):
        lr = lr_min * (lr_max / lr_min) ** (step / max(1, steps - 1))
        loss = float(step_at(lr))
        avg = smoothing * loss + (1 - smoothing) * avg
        smoothed = avg / (1 - (1 - smoothing) ** (step + 1))
        rows.append({"step": step, "lr": lr, "loss": loss, "smoothed_loss": smoothed})
        if not math.isfinite(smoothed) or (step > 5 and smoothed > diverge_factor * best):
            break
        best = min(best, smoothed)
    return rows
