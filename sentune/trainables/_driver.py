"""The epoch driver, written once for every trainable: :func:`fit` and :func:`lr_range_test` of any
:class:`~sentune.trainables._contract.ModelTrainable`. It owns the warm-up + cosine schedule, each
worker's shard, the epoch metrics, the best epoch, reports, checkpoints and the resume states; the
framework part comes in as the trainable's :class:`~sentune.trainables._contract.LoopHooks`.
Neither torch, TensorFlow nor Ray."""

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
from sentune.trainables._contract import FitResult, LoopContext, LoopHooks, ModelTrainable, PreparedData
from sentune.trainables._params import CoreParams
from sentune.trainables._resume import ResumeState, write_train_state

__all__ = ["fit", "lr_range_test", "range_test", "run_epochs"]


def fit(trainable: ModelTrainable, params: CoreParams, data: PreparedData, ctx: LoopContext | None = None) -> FitResult:
    """Train ``trainable`` for ``params.epochs``, report each epoch through ``ctx.report``, return with the
    best epoch's weights restored (see :func:`run_epochs`)."""
    ctx = ctx or LoopContext()
    return run_epochs(params, data, trainable.hooks(params, data, ctx), ctx)


def lr_range_test(
    trainable: ModelTrainable, params: CoreParams, data: PreparedData, *, ctx: LoopContext | None = None, **options
) -> list[dict]:
    """Raise the lr exponentially step by step and record the loss (see :func:`range_test`)."""
    ctx = ctx or LoopContext()
    return range_test(params, data, trainable.hooks(params, data, ctx), ctx, **options)


def run_epochs(params: CoreParams, data: PreparedData, hooks: LoopHooks, ctx: LoopContext) -> FitResult:
    """Train for ``params.epochs``; report each epoch; restore the best epoch's weights at the end.

    With ``ctx.resume`` the run first takes up the
    latest resume checkpoint there (weights, optimizer, RNG states, schedule position, the best epoch and
    its weights, the history), goes on from the next epoch or step with the same results it would have
    had without the interruption (same seed: the same data order), and writes a new checkpoint at the
    end of every ``every_epochs``-th epoch (and every ``every_steps`` steps, if set) after reporting."""
    train, dev = data.splits["train"], data.splits["dev"]
    base_lr = params.lr * hooks.lr_scale
    steps_per_epoch = math.ceil(hooks.per_rank / params.batch_size)
    total_steps = steps_per_epoch * params.epochs
    warmup_steps = round(params.warmup_epochs * steps_per_epoch)
    best: BestEpoch = BestEpoch(params.monitor)
    best_state = None
    history: list[dict] = []
    step, first_epoch, first_pos, partial = 0, 1, 0, None
    store = ctx.resume
    saved = store.load_state(ctx.rank) if store is not None else None
    if saved is not None:
        hooks.load_train_state(saved.train)
        best.value, best.epoch, best_state = saved.best_value, saved.best_epoch, saved.best_state
        history, step = list(saved.history), saved.step
        first_epoch, first_pos, partial = saved.epoch, saved.pos, saved.partial
    resumed_at = first_epoch if saved is not None else 0  # reported: 0 for a fresh run

    def state(next_epoch: int, pos: int, part: dict | None) -> ResumeState:
        return ResumeState(
            epoch=next_epoch, pos=pos, step=step, partial=part, history=history,
            best_value=best.value, best_epoch=best.epoch, best_state=best_state,
            train=hooks.train_state(),
        )  # fmt: skip

    def save(next_epoch: int, pos: int, part: dict | None, built: ResumeState | None = None) -> None:
        """``built``: this very state, already built (for the epoch's checkpoint)."""
        assert store is not None
        barrier = lambda: hooks.all_reduce_sum(np.zeros(1))  # noqa: E731 (every worker has written)
        now = built if built is not None else state(next_epoch, pos, part)
        store.save_state(now, rank=ctx.rank, barrier=barrier)

    for epoch in range(first_epoch, params.epochs + 1):
        t0 = time.perf_counter()
        hooks.start_epoch()
        shard = epoch_shard(params.seed, len(train.y), hooks.per_rank, ctx.world_size, ctx.rank, epoch)
        sums = np.zeros(3)  # loss x rows, correct, rows
        norms: list[float] = []
        if partial is not None:  # resumed inside this epoch
            sums, norms, t0 = np.array(partial["sums"]), list(partial["norms"]), t0 - partial["seconds"]
        start, first_pos, partial = first_pos, 0, None
        lr_used = base_lr * warmup_cosine(step, warmup_steps, total_steps)
        for i in range(start, len(shard), params.batch_size):
            idx = shard[i : i + params.batch_size]
            lr_used = base_lr * warmup_cosine(step, warmup_steps, total_steps)
            hooks.set_lr(lr_used)
            loss_sum, correct, norm = hooks.step(idx)
            norms.append(norm)
            step += 1
            sums += (loss_sum, correct, len(idx))
            if store is not None and store.every_steps and step % store.every_steps == 0 and i + len(idx) < len(shard):
                part = {"sums": sums.tolist(), "norms": norms, "seconds": time.perf_counter() - t0}
                save(epoch, i + len(idx), part)
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
        metrics["resumed_at_epoch"] = resumed_at
        improved = best.update(metrics)
        if improved:
            best_state = hooks.snapshot()
        history.append(metrics)
        now = state(epoch + 1, 0, None) if ctx.state_in_checkpoint else None  # nothing trains until saved
        if ctx.report is not None:

            def save_best(folder, weights=best_state, now=now) -> None:
                hooks.write_checkpoint(Path(folder), weights)
                if now is not None:  # where this run stands, for another trial to go on from (PBT)
                    write_train_state(Path(folder), now)

            ctx.report(metrics, save_best if improved or now is not None else None)
        # after the report: a failure in between repeats this epoch (its row is replaced), loses nothing
        if store is not None and (epoch % store.every_epochs == 0 or epoch == params.epochs):
            save(epoch + 1, 0, None, now)
    if best_state is not None:
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
