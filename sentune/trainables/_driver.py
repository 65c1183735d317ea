"""The epoch driver, written once for every trainable: the warm-up + cosine schedule, each worker's shard,
the epoch metrics, the best epoch, reports and checkpoints; and the LR range test. The framework part
comes in as :class:`~sentune.trainables._contract.LoopHooks`. Neither torch, TensorFlow nor Ray."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from sentune.trainables._common import (
    BestEpoch,
    cycling_batches,
    epoch_metrics,
    epoch_shard,
    lr_range_rows,
    warmup_cosine,
)
from sentune.trainables._contract import FitResult, LoopContext, LoopHooks, PreparedData
from sentune.trainables._params import CoreParams

__all__ = ["range_test", "run_epochs"]


def run_epochs(params: CoreParams, data: PreparedData, hooks: LoopHooks, ctx: LoopContext) -> FitResult:
    """Train for ``params.epochs``; report each epoch; restore the best epoch's weights at the end."""
    train, dev = data.splits["train"], data.splits["dev"]
    base_lr = params.lr * hooks.lr_scale
    steps_per_epoch = math.ceil(hooks.per_rank / params.batch_size)
    total_steps = steps_per_epoch * params.epochs
    warmup_steps = round(params.warmup_epochs * steps_per_epoch)
    best: BestEpoch = BestEpoch(params.monitor)
    best_state = None
    history, step = [], 0
    for epoch in range(1, params.epochs + 1):
        t0 = time.perf_counter()
        hooks.start_epoch()
        shard = epoch_shard(params.seed, len(train.y), hooks.per_rank, ctx.world_size, ctx.rank, epoch)
        sums = np.zeros(3)  # loss x rows, correct, rows
        norms = []
        lr_used = base_lr * warmup_cosine(step, warmup_steps, total_steps)
        for i in range(0, len(shard), params.batch_size):
            idx = shard[i : i + params.batch_size]
            lr_used = base_lr * warmup_cosine(step, warmup_steps, total_steps)
            hooks.set_lr(lr_used)
            loss_sum, correct, norm = hooks.step(idx)
            norms.append(norm)
            step += 1
            sums += (loss_sum, correct, len(idx))
        sums = hooks.all_reduce_sum(sums)
        hooks.end_epoch()
        val_loss, val_pred = hooks.evaluate("dev")
        seconds = time.perf_counter() - t0
        metrics = epoch_metrics(
            epoch=epoch,
            sums=sums,
            val_loss=val_loss,
            y_dev=dev.y,
            val_pred=val_pred,
            label_names=data.label_names,
            lr=lr_used,
            norms=norms,
            seconds=seconds,
            workers=ctx.world_size,
            batch_size=params.batch_size,
            lr_scale=hooks.lr_scale,
        )
        improved = best.update(metrics)
        if improved:
            best_state = hooks.snapshot()
        history.append(metrics)
        if ctx.report is not None:
            save = (lambda d, s=best_state: hooks.write_checkpoint(Path(d), s)) if improved else None
            ctx.report(metrics, save)
    hooks.restore(best_state)
    return FitResult(history, best.epoch, best.value, hooks.model)


def range_test(
    params: CoreParams,
    data: PreparedData,
    hooks: LoopHooks,
    ctx: LoopContext,
    *,
    lr_min: float = 1e-7,
    lr_max: float = 1e-2,
    steps: int = 100,
    diverge_factor: float = 4.0,
    smoothing: float = 0.1,
) -> list[dict]:
    """Raise the lr exponentially from ``lr_min`` to ``lr_max`` over ``steps`` optimizer steps (cycling
    through the train split), recording the loss; stop once the smoothed loss exceeds ``diverge_factor``
    times its minimum or turns NaN. Returns one row per step: step, lr, loss, smoothed_loss."""
    hooks.start_epoch()
    batches = cycling_batches(
        params.seed, len(data.splits["train"].y), hooks.per_rank, ctx.world_size, ctx.rank, params.batch_size
    )

    def step_at(lr: float) -> float:
        hooks.set_lr(lr)
        idx = next(batches)
        loss_sum, _, _ = hooks.step(idx)
        total = hooks.all_reduce_sum(np.array([loss_sum, len(idx)], dtype=np.float64))
        return float(total[0] / total[1])

    return lr_range_rows(
        step_at, lr_min=lr_min, lr_max=lr_max, steps=steps, diverge_factor=diverge_factor, smoothing=smoothing
    )
