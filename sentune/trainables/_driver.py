"""The epoch driver, written once for every trainable: :func:`fit` and :func:`lr_range_test` of any
:class:`~sentune.trainables._contract.ModelTrainable`. It owns the warm-up + cosine schedule, each
worker's shard, the epoch metrics, the best epoch, reports, checkpoints and the resume states; the
framework part comes in as the trainable's :class:`~sentune.trainables._contract.LoopHooks`.
Neither torch, TensorFlow nor Ray.

A fit is a loop over epochs around one :class:`_RunState` (the step, the best epoch, the history and
where a resumed run goes on from): :func:`_train_epoch` runs an epoch's optimizer steps (writing a
resume state every ``every_steps`` steps), :func:`_epoch_metrics` evaluates and measures it, and
:func:`_report_epoch` updates the best epoch, reports, and writes the epoch's resume state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sentune.forecast import forecast
from sentune.trainables._common import (
    BestEpoch,
    cycling_batches,
    epoch_metrics,
    epoch_shard,
    lr_range_rows,
    warmup_cosine,
)
from sentune.trainables._contract import FitResult, LoopContext, LoopHooks, ModelTrainable, PreparedData
from sentune.trainables._device import gather_devices, gather_memory
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


@dataclass(frozen=True)
class _Loop:
    """What stays fixed during one fit: its options, data, hooks, context and lr schedule."""

    params: CoreParams
    data: PreparedData
    hooks: LoopHooks
    ctx: LoopContext
    base_lr: float
    warmup_steps: int
    total_steps: int

    @classmethod
    def of(cls, params: CoreParams, data: PreparedData, hooks: LoopHooks, ctx: LoopContext) -> _Loop:
        steps_per_epoch = math.ceil(hooks.per_rank / params.batch_size)
        return cls(
            params, data, hooks, ctx,
            base_lr=params.lr * hooks.lr_scale,
            warmup_steps=round(params.warmup_epochs * steps_per_epoch),
            total_steps=steps_per_epoch * params.epochs,
        )  # fmt: skip

    def lr_at(self, step: int) -> float:
        return self.base_lr * warmup_cosine(step, self.warmup_steps, self.total_steps)

    def save(self, state: ResumeState) -> None:
        """Write ``state`` as this worker's resume state (every worker has written once the sum returns)."""
        assert self.ctx.resume is not None
        barrier = lambda: self.hooks.all_reduce_sum(np.zeros(1))  # noqa: E731
        self.ctx.resume.save_state(state, rank=self.ctx.rank, barrier=barrier)


@dataclass
class _RunState:
    """Where a fit stands: the optimizer steps taken, the best epoch and its weights, the history, and
    where the next epoch starts (inside it, with its sums so far, when resumed from a step's state)."""

    best: BestEpoch
    best_state: Any = None
    history: list[dict] = field(default_factory=list)
    step: int = 0
    next_epoch: int = 1
    pos: int = 0
    partial: dict | None = None
    resumed_at: int = 0  # the epoch a resumed run went on from (reported; 0: a fresh run)
    saved_at: float = field(default_factory=time.monotonic)  # when the run started or last wrote a resume state
    devices: dict = field(default_factory=dict)  # every epoch's device columns: gpu_ids, worker_node_ids

    @classmethod
    def start(cls, monitor: str, saved: ResumeState | None) -> _RunState:
        run = cls(BestEpoch(monitor))
        if saved is not None:
            run.best.value, run.best.epoch, run.best_state = saved.best_value, saved.best_epoch, saved.best_state
            run.history, run.step = list(saved.history), saved.step
            run.next_epoch, run.pos, run.partial = saved.epoch, saved.pos, saved.partial
            run.resumed_at = saved.epoch
        return run

    def resume_state(self, hooks: LoopHooks, epoch: int, pos: int, partial: dict | None) -> ResumeState:
        """The state to go on from at row ``pos`` of epoch ``epoch`` (0: at its start)."""
        return ResumeState(
            epoch=epoch, pos=pos, step=self.step, partial=partial, history=list(self.history),
            best_value=self.best.value, best_epoch=self.best.epoch, best_state=self.best_state,
            train=hooks.train_state(),
        )  # fmt: skip


@dataclass
class _TrainedEpoch:
    """An epoch's optimizer steps, done: its sums over the workers (loss x rows, correct, rows), this
    worker's gradient norms, the last lr used and when it started."""

    epoch: int
    sums: np.ndarray
    norms: list[float]
    lr: float
    started: float


def run_epochs(params: CoreParams, data: PreparedData, hooks: LoopHooks, ctx: LoopContext) -> FitResult:
    """Train for ``params.epochs``; report each epoch; restore the best epoch's weights at the end.

    With ``ctx.resume`` the run first takes up the latest resume state there (weights, optimizer, RNG
    states, schedule position, the best epoch and its weights, the history), goes on from the next epoch
    or step with the same results it would have had without the interruption (same seed: the same data
    order), and writes a new state at the end of every ``every_epochs``-th epoch (not within the store's
    ``min_interval_s`` of the start or the last state; the last epoch's always) and every ``every_steps``
    steps, if set."""
    loop = _Loop.of(params, data, hooks, ctx)
    saved = ctx.resume.load_state(ctx.rank) if ctx.resume is not None else None
    if saved is not None:
        hooks.load_train_state(saved.train)
    run = _RunState.start(params.monitor, saved)
    run.devices = _devices(loop)
    for epoch in range(run.next_epoch, params.epochs + 1):
        trained = _train_epoch(loop, run, epoch)
        _report_epoch(loop, run, _epoch_metrics(loop, run, trained))
        if ctx.stop_after is not None and epoch >= ctx.stop_after:
            break
    if run.best_state is not None:
        hooks.restore(run.best_state)
    return FitResult(run.history, run.best.epoch, run.best.value, hooks.model)


def _train_epoch(loop: _Loop, run: _RunState, epoch: int) -> _TrainedEpoch:
    """One epoch's optimizer steps on this worker's shard (from ``run.pos`` when resumed inside it),
    writing a resume state every ``every_steps`` steps; then the sums over the workers and the hooks'
    end of the epoch."""
    hooks, ctx, batch_size = loop.hooks, loop.ctx, loop.params.batch_size
    started = time.perf_counter()
    hooks.start_epoch()
    shard = epoch_shard(loop.params.seed, len(loop.data.splits["train"].y), hooks.per_rank, ctx.world_size,
                        ctx.rank, epoch)  # fmt: skip
    sums, norms = np.zeros(3), []  # loss x rows, correct, rows
    if run.partial is not None:  # resumed inside this epoch
        sums, norms = np.array(run.partial["sums"]), list(run.partial["norms"])
        started -= run.partial["seconds"]
    start, run.pos, run.partial = run.pos, 0, None
    every_steps = ctx.resume.every_steps if ctx.resume is not None else None
    lr = loop.lr_at(run.step)
    for i in range(start, len(shard), batch_size):
        idx = shard[i : i + batch_size]
        lr = loop.lr_at(run.step)
        hooks.set_lr(lr)
        loss_sum, correct, norm = hooks.step(idx)
        norms.append(norm)
        run.step += 1
        sums += (loss_sum, correct, len(idx))
        if every_steps and run.step % every_steps == 0 and i + len(idx) < len(shard):
            part = {"sums": sums.tolist(), "norms": norms, "seconds": time.perf_counter() - started}
            loop.save(run.resume_state(hooks, epoch, i + len(idx), part))
            run.saved_at = time.monotonic()
    sums = hooks.all_reduce_sum(sums)
    hooks.end_epoch()
    return _TrainedEpoch(epoch, sums, norms, lr, started)


def _epoch_metrics(loop: _Loop, run: _RunState, trained: _TrainedEpoch) -> dict:
    """The epoch's report: its training sums, the dev split's evaluation, its time and the lr."""
    val_loss, val_pred = loop.hooks.evaluate("dev")
    metrics = epoch_metrics(
        epoch=trained.epoch,
        sums=trained.sums,
        val_loss=val_loss,
        y_dev=loop.data.splits["dev"].y,
        val_pred=val_pred,
        label_names=loop.data.label_names,
        lr=trained.lr,
        norms=trained.norms,
        seconds=time.perf_counter() - trained.started,
        workers=loop.ctx.world_size,
        batch_size=loop.params.batch_size,
        lr_scale=loop.hooks.lr_scale,
    )
    metrics["resumed_at_epoch"] = run.resumed_at
    metrics.update(run.devices)
    metrics.update(_memory(loop))
    metrics.update(_forecast(loop, run, metrics))
    return metrics


def _devices(loop: _Loop) -> dict:
    """The run's device columns: ``gpu_ids`` (every worker's GPU ids as Ray assigned them, in rank order;
    [] on the CPU) and ``worker_node_ids`` (every worker's node, in rank order, comma-separated; under Ray)."""
    ctx = loop.ctx
    ids, nodes = gather_devices(loop.hooks.all_reduce_sum, ctx.world_size, ctx.rank, ctx.gpu_ids, ctx.node_id)
    out: dict = {"gpu_ids": ids}
    if any(nodes):
        out["worker_node_ids"] = ",".join(n or "" for n in nodes)
    return out


def _memory(loop: _Loop) -> dict:
    """``peak_mem_mb`` (the largest worker's peak so far: the GPU's on a GPU, else the process's peak RSS) and,
    on a GPU, ``device_mem_mb`` (the smallest worker's device), in MiB."""
    peak, device = loop.hooks.memory_mb()
    peak, device = gather_memory(loop.hooks.all_reduce_sum, loop.ctx.world_size, loop.ctx.rank, peak, device)
    return {"peak_mem_mb": peak} if device is None else {"peak_mem_mb": peak, "device_mem_mb": device}


def _forecast(loop: _Loop, run: _RunState, metrics: dict) -> dict:
    """Where the monitored metric is heading: its forecast at the last epoch the trial may train
    (``ctx.forecast_to``, else its epochs), with a 95% interval (:mod:`sentune.forecast`)."""
    best = run.best
    values = [row.get(best.metric) for row in run.history] + [metrics.get(best.metric)]
    to = min(loop.ctx.forecast_to or loop.params.epochs, loop.params.epochs)  # never past the run's own epochs
    found = forecast(values, to, mode=best.direction.mode, metric=best.metric)
    return found.as_row() if found is not None else {}


def _report_epoch(loop: _Loop, run: _RunState, metrics: dict) -> None:
    """Keep the best epoch and the history, report the epoch (with a checkpoint when it improved, or every
    epoch with the train state for PBT) and write the epoch's resume state when one is due: named the latest
    only after the report (a failure in between repeats this epoch, whose row is replaced); one worker writes
    it before the report (:meth:`~sentune.trainables._resume.ResumeStore.write_uncommitted`: a trial stopped at
    this report still leaves it for a second chance)."""
    hooks, ctx, epoch = loop.hooks, loop.ctx, metrics["epoch"]
    improved = run.best.update(metrics)
    if improved:
        run.best_state = hooks.snapshot()
    run.history.append(metrics)
    now = run.resume_state(hooks, epoch + 1, 0, None) if ctx.state_in_checkpoint else None  # nothing trains until saved
    store, last = ctx.resume, epoch == loop.params.epochs or epoch == ctx.stop_after
    due = store is not None and (last or (epoch % store.every_epochs == 0 and _interval_passed(run, store)))
    state = (now if now is not None else run.resume_state(hooks, epoch + 1, 0, None)) if due else None
    if due:
        run.saved_at = time.monotonic()
    written = (
        store.write_uncommitted(state) if store is not None and state is not None and ctx.world_size == 1 else None
    )
    if ctx.report is not None:
        ctx.report(metrics, _checkpoint_writer(hooks, run.best_state, now) if improved or now is not None else None)
    if store is not None and written is not None:
        store.commit(written)
    elif state is not None:
        loop.save(state)


def _interval_passed(run: _RunState, store) -> bool:
    """``store.min_interval_s`` has passed since the run started or last wrote a resume state."""
    return time.monotonic() - run.saved_at >= store.min_interval_s


def _checkpoint_writer(hooks: LoopHooks, weights: Any, now: ResumeState | None) -> Callable[[Path], None]:
    """``save(folder)`` for a report: the best weights so far and, for PBT, where this run stands (another
    trial may go on from it)."""

    def save(folder: Path) -> None:
        hooks.write_checkpoint(Path(folder), weights)
        if now is not None:
            write_train_state(Path(folder), now)

    return save


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
