"""The sweep plan: a job read once into what every step of its run needs (the spec, the trainable, the
checked data and its prepared copy on Ray, the run folder), and the summary a run ends with."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sentune._log import log_line
from sentune.data import DataSplits, load_splits
from sentune.errors import ConfigError, SentuneError
from sentune.search import Domain
from sentune.spec import JobSpec
from sentune.trainables import TrainableEntry, get_trainable
from sentune.tuning._placement import check_fits, nodes_from_ray, placement_note
from sentune.tuning._ray_compat import check_ray, warm_driver
from sentune.tuning._run_folder import _LOCK_FILE, RunFolder, unlock_run
from sentune.tuning._session import init_ray
from sentune.tuning._tasks import WarmEvaluator, prepare_on_cluster

__all__ = ["Extension", "RunSummary", "SweepPlan", "check_data", "make_plan"]


@dataclass
class RunSummary:
    run_dir: Path
    leaderboard: pd.DataFrame
    best_config_path: Path | None
    test_report: pd.DataFrame | None
    wall_seconds: float
    remote: str | None = None  # where the run folder was uploaded, for a URI storage_path
    # seconds spent preparing the data, in Tuner.fit (the sweep itself), and evaluating/exporting after it
    timings: dict[str, float] = field(default_factory=dict)
    # stopped (Ctrl-C, SIGTERM, `sentune stop`) before every trial ended: `sentune resume` goes on with it
    interrupted: bool = False
    progress: str = ""  # the sweep in one line: epochs against the budget, trials, the best
    budget: str = ""  # epochs and trial-seconds spent (results.format_budget)
    comparison: str = ""  # the best found against the best baseline and the reference model
    test_figures: dict | None = None  # the best trial's test accuracy and macro-F1 (evaluation.json)
    importance: str = ""  # which tuned options explain the metric, in one line (results.importance_line)
    second_chances: str = ""  # which stopped trials went on, and what they reached (results.second_chance_line)
    ended: str = ""  # why the sweep ended itself (its ``stop:`` rule) and what that saved (results.study_stop_line)


@dataclass(frozen=True)
class Extension:
    """More trials for a finished run: how many, and what the earlier ones found (their tuned options and
    peak metric, None when they reported none), which the new search learns from."""

    trials: int
    earlier: list[tuple[dict, float | None]]


@dataclass(frozen=True)
class SweepPlan:
    """Everything a run of a job needs, fixed once it starts. ``restore``: the run goes on with a sweep that
    stopped (``sentune resume``); ``earlier_seconds``: what its earlier sessions took."""

    spec: JobSpec
    entry: TrainableEntry
    splits: DataSplits
    folder: RunFolder
    data_ref: object
    prepare_seconds: float = 0.0
    restore: bool = False
    earlier_seconds: float = 0.0
    extend: Extension | None = None  # a finished run given more trials (``sentune extend``): a fresh Tuner
    warm: Any = None  # the job's ``warm_start:`` runs as read (tuning._warm.WarmStart), or None
    # a process importing the framework for the finish's evaluation, started with the data's preparation
    evaluator: WarmEvaluator | None = None

    @property
    def run_dir(self) -> Path:
        return self.folder.run_dir


def check_data(spec: JobSpec) -> tuple[TrainableEntry, DataSplits]:
    """Read and check the job's data against its trainable's options, before Ray starts."""
    entry = get_trainable(spec.trainable)
    splits = load_splits(spec.data)
    values = {k: list(v.extremes()) if isinstance(v, Domain) else [v] for k, v in spec.space.items()}
    try:
        entry.params_model.check_data(values, splits.train.class_counts())
    except ConfigError as exc:
        raise ConfigError(f"job {spec.name}: {exc}") from None
    return entry, splits


def make_plan(
    spec: JobSpec,
    folder: RunFolder,
    *,
    address: str | None,
    verbose: bool,
    restore: bool = False,
    earlier_seconds: float = 0.0,
    extend: Extension | None = None,
    warm: Any = None,
) -> SweepPlan:
    """Check the data and open the run folder (before Ray starts), start Ray and check that the cluster holds a
    trial (a new run writes its run.json after that), and prepare the data once on Ray (a backbone that fails to
    load fails the job here, once, not every trial)."""
    check_ray()  # an unsupported Ray fails here, in one line, before the run folder exists
    entry, splits = check_data(spec)
    folder.open()
    try:
        init_ray(address, verbose=verbose)
        _fit_or_leave(spec, folder, restore)
        plan = _prepare(spec, entry, splits, folder, restore=restore, earlier_seconds=earlier_seconds)
        return dataclasses.replace(plan, extend=extend, warm=warm)
    except BaseException:
        unlock_run(folder.run_dir)  # nothing ran: the next driver may take the run
        raise


def _fit_or_leave(spec: JobSpec, folder: RunFolder, restore: bool) -> None:
    """:func:`fit_cluster`; a new run it refuses leaves no run folder behind (nothing was written to it)."""
    try:
        fit_cluster(spec)
    except ConfigError:
        if not restore:
            unlock_run(folder.run_dir)
            with contextlib.suppress(OSError):
                if {p.name for p in folder.run_dir.iterdir()} <= {_LOCK_FILE}:  # only its lock is there
                    shutil.rmtree(folder.run_dir)
        raise


def fit_cluster(spec: JobSpec) -> None:
    """Once Ray is up: refuse (one line) a job whose trial the cluster cannot hold; note a placement it cannot
    keep."""
    nodes = nodes_from_ray()
    check_fits(spec.resources, nodes, job=spec.name)
    note = placement_note(spec.resources, nodes)
    if note:
        log_line(f"job {spec.name}: {note}")


def _prepare(spec, entry, splits, folder, *, restore, earlier_seconds) -> SweepPlan:
    if restore:
        folder.set_status("running")
    else:
        folder.write_info(spec, splits)
    log_line(
        f"job {spec.name}: {spec.trainable} on {len(splits.train)}/{len(splits.dev)}/"
        f"{len(splits.test) if splits.test else 0} train/dev/test rows, {len(splits.label_names)} classes; "
        f"results -> {folder.shown()}"
    )
    import ray

    t0 = time.perf_counter()
    data_ref = prepare_on_cluster(entry, spec.constants, splits, cpus=spec.resources.cpus, gpus=spec.resources.gpus)
    # the warm evaluator imports meanwhile, beside the one task running: neither the sweep nor its trials wait
    evaluator = WarmEvaluator(entry, gpus=spec.resources.gpus) if spec.kind == "tune" else None
    if evaluator is not None:
        evaluator.start()
    warm_driver()
    try:
        ray.get(data_ref)
    except ray.exceptions.RayTaskError as exc:
        if evaluator is not None:
            evaluator.stop()
        cause = exc.as_instanceof_cause()
        last = str(cause).strip().splitlines()[-1]
        raise SentuneError(f"preparing the data failed: {type(cause).__name__}: {last}") from None
    prepare_s = time.perf_counter() - t0
    log_line(f"data prepared once in {prepare_s:.1f} s (shared through the object store)")
    return SweepPlan(spec, entry, splits, folder, data_ref, prepare_s, restore, earlier_seconds, evaluator=evaluator)
