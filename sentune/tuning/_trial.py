"""One Tune trial: a function trainable that runs the trainable's loop through Ray Train.

A one-worker trial runs in Ray Train's local mode (``ScalingConfig(num_workers=0)``): the loop runs in the
Tune trial's own process, which holds the worker's CPUs and GPU fraction itself, with no controller and
no worker actors, and reports straight to Tune (``ray.tune.report``). With Tune's ``reuse_actors`` a new
trial starts in a process that has torch / TensorFlow imported already. A trial with several workers
builds the trainable's Ray Train trainer (``TorchTrainer`` with DDP, ``TensorflowTrainer`` with
MultiWorkerMirroredStrategy: :meth:`ModelTrainable.ray_trainer`) whose workers run the same epoch driver;
``TuneReportCallback`` forwards every epoch's metrics (and the checkpoint path) to Tune, and the trial
itself only waits (no CPU). Either way the loop and the metrics are the same, and every worker gets the
trial's :class:`WorkerPlan`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentune.trainables import TrainableEntry, fit
from sentune.trainables._resume import ResumeStore, read_train_state

__all__ = [
    "REVIVE",
    "WorkerPlan",
    "make_trial_driver",
    "resume_store",
    "revive_mark",
    "revived",
    "revived_from",
    "scaling_kwargs",
    "trial_resources",
]

# a config key (never an option): ``"<trial id>@<from>@<until>"``: this Tune trial continues that earlier trial,
# which had trained ``from`` epochs, from its resume checkpoint up to epoch ``until`` (a second chance); the
# record keeps it under the earlier id
REVIVE = "__sentune_revive__"


def revive_mark(trial_id: str, start: int, until: int) -> str:
    return f"{trial_id}@{int(start)}@{int(until)}"


def _mark(config: dict) -> tuple[str, int, int] | None:
    mark = config.get(REVIVE)
    if not isinstance(mark, str) or mark.count("@") < 2:
        return None
    trial, start, until = mark.rsplit("@", 2)
    return trial, int(start), int(until)


def revived_from(config: dict) -> int:
    """The epochs a revived trial had trained before its second chance (0: not a revived trial): its results
    up to there repeat what the scheduler judged already."""
    mark = _mark(config)
    return 0 if mark is None else mark[1]


def revived(trial_id: str, config: dict) -> tuple[str, dict]:
    """(the record's trial id, the options) of a Tune trial's id and config: a revived trial is the earlier one."""
    mark = _mark(config)
    options = {k: v for k, v in config.items() if k != REVIVE}
    return (trial_id, options) if mark is None else (mark[0], options)


_DRIVER_MEMORY = 64 * 1024 * 1024  # what a multi-worker trial's own process reserves: it only waits


def _reporter(rank: int, *, local: bool, tags: dict | None = None) -> Callable:
    """``report(metrics, save)`` for the loop: node id (and ``tags``) added; rank 0 attaches the checkpoint.
    In local mode the loop runs inside the Tune trial, where ``ray.train.report`` raises: it reports to
    Tune directly. ``tags`` also go into the checkpoint folder, one file each (a PBT trial's lineage)."""
    import ray

    if local:
        import ray.tune as to
    else:
        import ray.train as to  # type: ignore[no-redef]

    node_id = ray.get_runtime_context().get_node_id()
    gpu_ids = _device_ids(ray.get_gpu_ids())  # the devices Ray gave this worker ([] without GPUs)

    def report(metrics: dict, save):
        shown = {k: v for k, v in (tags or {}).items() if k != "trial"}
        # which node rank 0 ran on, and its devices (a worker group's: every worker's, _WorkerGroupReport)
        # (worker_gpu_ids: one list per worker, by rank; a worker group's report fills in every worker's)
        metrics = {**metrics, "node_id": node_id, "gpu_ids": gpu_ids, "worker_gpu_ids": [gpu_ids], **shown}
        if save is not None and rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                save(Path(tmp))
                for name, value in (tags or {}).items():
                    (Path(tmp) / name).write_text(str(value))
                to.report(metrics, checkpoint=to.Checkpoint.from_directory(tmp))
        else:
            to.report(metrics)

    return report


def _device_ids(ids: list) -> list:
    """Ray's GPU ids as ints where they are numbers (Ray gives ints, or strings for some accelerators)."""
    return [int(i) if str(i).isdigit() else str(i) for i in ids]


def _worker_group_report():
    """Ray's ``TuneReportCallback`` (which forwards rank 0's report to Tune) with every worker's node and
    devices added: ``worker_gpu_ids`` (one entry per worker, by rank) and ``gpu_ids`` (all of them); the epoch
    driver's ``worker_node_ids`` says every worker's node. What placement did shows in the record."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class _WorkerGroupReport(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if metrics:
                per_worker = [list(m.get("gpu_ids") or []) for m in metrics]
                # (worker_node_ids: the epoch driver's, every worker's node in rank order, comma-separated)
                merged = {**metrics[0], "worker_gpu_ids": per_worker, "gpu_ids": [i for ids in per_worker for i in ids]}
                metrics = [merged, *metrics[1:]]
            super().after_report(run_context, metrics, checkpoint)

    return _WorkerGroupReport()


@dataclass(frozen=True)
class WorkerPlan:
    """What every worker of one trial runs: the trainable, the trial's options, the shared data, its
    resources, where its resume states go, and how it reports."""

    entry: TrainableEntry
    params: dict  # the trial's config: the trainable's options
    data_ref: list  # [ObjectRef of the PreparedData]: in a list, pickling keeps the reference, not the data
    cpus_per_worker: float
    use_gpu: bool
    local: bool  # one worker, in the Tune trial's own process (Ray Train's local mode)
    resume: ResumeStore
    pbt: bool = False  # every report carries the train state (another trial may go on from it)
    tags: dict[str, str] = field(default_factory=dict)  # added to every report and checkpoint (PBT lineage)
    forecast_to: int | None = None  # the epoch each report's learning-curve forecast is for (the scheduler's max_t)
    stop_after: int | None = None  # a second chance: end after this epoch (its resume state written)


def _worker_loop(config: dict) -> None:
    """Runs on every worker of the trial's Ray Train trainer (in local mode: in the trial itself);
    ``config`` is Ray Train's ``train_loop_config``, which holds the trial's plan."""
    run_plan(config["plan"])


def run_plan(plan: WorkerPlan) -> None:
    """Train the plan's trainable on this worker through the epoch driver."""
    import ray

    if plan.local:  # ray.train.get_context() raises inside a Tune trial
        world, rank = 1, 0
    else:
        import ray.train

        ctx = ray.train.get_context()
        world, rank = ctx.get_world_size(), ctx.get_world_rank()
    trainable = plan.entry.load()
    # first: TensorFlow's strategy must exist before any other TensorFlow op
    loop_ctx = trainable.worker_context(
        world_size=world,
        rank=rank,
        cpus=max(1, int(plan.cpus_per_worker)),
        use_gpu=plan.use_gpu,
        report=_reporter(rank, local=plan.local, tags=plan.tags),
    )
    loop_ctx.resume = plan.resume
    loop_ctx.state_in_checkpoint = plan.pbt
    loop_ctx.forecast_to = plan.forecast_to
    loop_ctx.stop_after = plan.stop_after
    params = plan.entry.params_model(**plan.params)
    data = ray.get(plan.data_ref[0])
    fit(trainable, params, data, loop_ctx)


_GIB = 1024**3


def scaling_kwargs(
    workers: int, cpus: float, gpus: float, *, memory_gb: float | None = None, placement: str = "pack"
) -> dict:
    """Ray Train's ScalingConfig for a trial: ``gpus`` per worker may be a fraction (0.25 packs four
    trials' workers on one GPU); each worker also takes ``cpus`` (and ``memory_gb``). ``placement``: the
    worker group's placement-group strategy, ``pack`` (as few nodes as hold it) or ``spread`` (one worker per
    node where there are enough nodes)."""
    per_worker = {"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {})}
    if memory_gb:
        per_worker["memory"] = int(memory_gb * _GIB)
    return {"num_workers": workers, "use_gpu": gpus > 0, "resources_per_worker": per_worker,
            "placement_strategy": placement.upper()}  # fmt: skip


def trial_resources(workers: int, cpus: float, gpus: float, *, memory_gb: float | None = None) -> dict:
    """What the Tune trial's own process reserves: the one worker's CPUs and GPU fraction (and memory) in
    local mode; for a worker group, only memory (the workers hold the CPUs and GPUs)."""
    if workers == 1:
        own = {"cpu": cpus, "gpu": gpus} if gpus > 0 else {"cpu": cpus}
        return {**own, "memory": int(memory_gb * _GIB)} if memory_gb else own
    return {"cpu": 0, "memory": _DRIVER_MEMORY}


def resume_store(resume_root: str, trial_id: str, failure=None) -> ResumeStore:
    """The fixed place of a trial's resume checkpoint (``failure``: the job's ``failure:`` block)."""
    every = {} if failure is None else {"every_epochs": failure.checkpoint_every_epochs,
                                        "every_steps": failure.checkpoint_every_steps,
                                        "min_interval_s": failure.checkpoint_min_interval_s}  # fmt: skip
    return ResumeStore(f"{resume_root.rstrip('/')}/{trial_id}", **every)


def _already_done(store: ResumeStore, entry: TrainableEntry, config: dict) -> dict | None:
    """None if the trial has epochs to train; else its last result (``{}`` if none is known)."""
    marked = store.finished_result()
    if marked is None and store.next_epoch() <= entry.params_model(**config).epochs:
        return None  # the loop loads the state itself: no second read of its weights here
    last = (marked or {}).get("last")
    if not last:
        history = store.history()
        last = history[-1] if history else None
    return {k: v for k, v in (last or {}).items() if isinstance(v, (int, float, str, bool)) or v is None}


def _adopt(store: ResumeStore, trial: str) -> str:
    """PBT: a trial Tune restarted from another trial's checkpoint (with a perturbed config) takes that
    trial's train state as its resume checkpoint. Returns the trial this one last went on from ("" if none)."""
    import ray.tune

    checkpoint = ray.tune.get_checkpoint()
    if checkpoint is None:
        return ""
    with checkpoint.as_directory() as folder:
        path = Path(folder)
        writer = (path / "trial").read_text() if (path / "trial").is_file() else None
        came = (path / "pbt_from").read_text() if (path / "pbt_from").is_file() else ""
        if writer is None or writer == trial:
            return came  # its own checkpoint (a restart): the resume store is as new or newer
        state = read_train_state(path)
    if state is None:
        return came
    # its own best from here on: the weights and peak it reports are then those of the epochs it trains
    store.save_state(state.without_best(), rank=0, barrier=lambda: None)
    return writer


def make_trial_driver(
    entry: TrainableEntry,
    data_ref,
    *,
    workers: int,
    cpus: float,
    gpus: float,
    storage_path: str,
    resume_root: str,
    failure,
    job: str = "sentune",
    pbt: bool = False,
    forecast_to: int | None = None,
    memory_gb: float | None = None,
    placement: str = "pack",
):
    """A Tune function trainable (with its resources): one Ray Train run per trial, named
    ``<job>-<trial id>`` (a worker group's run shows in the dashboard's Train view). Every trial keeps
    its resume checkpoint under ``resume_root/<trial id>`` and, restarted, goes on from there; a trial
    the sweep's driver has marked finished (a resumed sweep) returns at once. ``pbt``: every epoch's report
    carries the train state, and a trial restarted from another trial's checkpoint goes on from it
    (reporting ``pbt_from``: that trial's id). ``failure``: the job's ``failure:`` block; ``memory_gb`` and
    ``placement``: the job's ``resources:`` (per worker; the worker group's strategy)."""
    from ray import tune

    refs = [data_ref]  # a list, so Tune's pickling keeps the ObjectRef instead of the data
    local = workers == 1

    def trial_driver(config: dict):
        import ray.tune

        mark = _mark(config)
        until = None if mark is None else mark[2]
        trial, config = revived(ray.tune.get_context().get_trial_id(), config)
        store = resume_store(resume_root, trial, failure)
        if mark is not None:
            store.reopen(mark[1])  # a second chance: the trial goes on where it stopped
        tags = {"trial": trial, "pbt_from": _adopt(store, trial)} if pbt else {}
        last = _already_done(store, entry, config)
        if last is not None:  # a resumed sweep: this trial ended (or finished its epochs) before the stop
            if last:
                ray.tune.report(last)  # its last result again: Tune wants the metric, the record keeps one row
            return
        store.save_config(config)
        plan = WorkerPlan(entry=entry, params=config, data_ref=refs, cpus_per_worker=cpus, use_gpu=gpus > 0,
                          local=local, resume=store, pbt=pbt, tags=tags, forecast_to=forecast_to,
                          stop_after=until)  # fmt: skip
        scaling = scaling_kwargs(workers, cpus, gpus, memory_gb=memory_gb, placement=placement)
        _trainer(plan, scaling=scaling, name=f"{job}-{trial}", storage_path=storage_path, failure=failure).fit()

    return tune.with_resources(trial_driver, trial_resources(workers, cpus, gpus, memory_gb=memory_gb))


def _backend(trainer_cls: type, use_gpu: bool) -> dict:
    """A ``TorchTrainer`` on logical GPUs (a node that claims GPUs it has no CUDA for) talks gloo, not NCCL:
    its workers then train on the CPU (llama_torch's CPU fallback)."""
    if not use_gpu or trainer_cls.__name__ != "TorchTrainer":
        return {}
    import torch

    if torch.cuda.is_available():
        return {}
    from ray.train.torch import TorchConfig

    return {"torch_config": TorchConfig(backend="gloo")}


def _trainer(plan: WorkerPlan, *, scaling: dict, name: str, storage_path: str, failure) -> Any:
    """The trial's Ray Train trainer: local mode for one worker (Tune gets the reports itself), else a
    worker group (``scaling``: :func:`scaling_kwargs`) whose reports go to Tune with every worker's node and
    devices."""
    import ray.train

    callbacks: list = []
    trainer_cls = plan.entry.load().ray_trainer()
    extra: dict = {}
    if plan.local:
        config = ray.train.ScalingConfig(num_workers=0)
    else:
        config = ray.train.ScalingConfig(**scaling)
        callbacks = [_worker_group_report()]
        extra = _backend(trainer_cls, plan.use_gpu)
    return trainer_cls(
        _worker_loop,
        train_loop_config={"plan": plan},
        scaling_config=config,
        **extra,
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            callbacks=callbacks,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            # a dead worker or node: the worker group starts again and goes on from the resume checkpoint
            failure_config=ray.train.FailureConfig(max_failures=failure.max_failures),
        ),
    )
