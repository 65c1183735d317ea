"""A tune job on Ray, in five steps: the plan (the job read once, its data checked and prepared, its run
folder opened), the sweep's pieces (trial driver, record, scheduler, callbacks), the sweep itself
(``Tuner.fit``), the confirmation runs, and the finish (evaluate, export, report). Resuming is the same
steps on a plan that restores."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sentune import results
from sentune._log import log_line
from sentune._progress import SweepProgress, events_to_log
from sentune.diagnostics import DiagnosticsTracker
from sentune.errors import ConfigError
from sentune.spec import JobSpec, parse_job
from sentune.tuning._callback import (
    AllStoppers,
    BudgetStopper,
    DiagnosticsStopper,
    RecordCallback,
    StudyStopper,
    TrialRoles,
)
from sentune.tuning._confirm import confirm
from sentune.tuning._finish import finish, tag_best, trackers, wall_clock
from sentune.tuning._optuna_mirror import optuna_mirror
from sentune.tuning._plan import Extension, RunSummary, SweepPlan, make_plan
from sentune.tuning._reconcile import drop_cut_confirmations, interrupted, mark_trial_finished, reconcile
from sentune.tuning._run_folder import RUN_FORMAT, RunFolder, reopen
from sentune.tuning._scheduling import sweep_scheduler
from sentune.tuning._second_chance import second_chances
from sentune.tuning._signals import sigterm_as_sigint
from sentune.tuning._tasks import range_test_on_cluster
from sentune.tuning._trial import make_trial_driver
from sentune.tuning._tuner import build_tuner
from sentune.tuning._warm import load_warm_start

__all__ = ["RUN_FORMAT", "RunSummary", "extend_sweep", "resume_sweep", "run_range_test", "run_sweep"]


def run_sweep(
    spec: JobSpec,
    *,
    address: str | None = None,
    verbose: bool = False,
    run_id: str | None = None,
    progress: str = "plain",
) -> RunSummary:
    """Run a validated tune job on Ray (the embedded local Ray unless ``address`` is given). ``progress``:
    what the user sees while it runs (``live``, ``plain``, ``quiet``, ``json``: see sentune._progress)."""
    if spec.kind != "tune":
        raise ConfigError(f"job {spec.name} is a {spec.kind}; use run_range_test")
    t_start = time.perf_counter()
    warm = load_warm_start(spec)  # earlier runs read before Ray starts: another trainable fails here, in one line
    plan = make_plan(spec, RunFolder.new(spec, run_id), address=address, verbose=verbose, warm=warm)
    return _run(plan, t_start, progress)


def resume_sweep(
    run: str | Path, *, address: str | None = None, verbose: bool = False, progress: str = "plain"
) -> RunSummary:
    """Go on with an interrupted sweep (a run folder, local or behind a URI): finished trials stay
    finished, running ones go on from their resume checkpoints, pending ones start; ASHA's rungs and the
    search algorithm's state are what they were. The run then ends as usual (leaderboard, test
    evaluation, export, report)."""
    t_start = time.perf_counter()
    folder, spec, earlier = reopen(run)
    plan = make_plan(spec, folder, address=address, verbose=verbose, restore=True, earlier_seconds=earlier,
                     warm=_warm_again(spec))  # fmt: skip
    return _run(plan, t_start, progress)


def _warm_again(spec: JobSpec):
    """A resumed run's warm-start configs, to name the trials they start (None if the runs are gone: the
    restored searcher has them already)."""
    try:
        return load_warm_start(spec)
    except ConfigError:
        return None


def _earlier(run_dir: Path) -> list[tuple[dict, float | None]]:
    """Each earlier trial of the search (not a confirmation run): its config and its peak (None: none)."""
    trials = results.read_trials(run_dir)
    searched = trials[trials.role.isin(("sampled", "baseline", "warm_start"))]
    return [(json.loads(t.config_json), None if pd.isna(t.peak_metric) else float(t.peak_metric))
            for t in searched.itertuples()]  # fmt: skip


def extend_sweep(
    run: str | Path, *, trials: int, address: str | None = None, verbose: bool = False, progress: str = "plain"
) -> RunSummary:
    """Give a finished run ``trials`` more trials of its job, in the same run folder: the search learns from
    every trial already in the record (TPE: they are its completed trials; random: new configs only), ASHA's
    rungs are rebuilt from the record as for ``resume``, no earlier trial runs again, and the run ends as
    usual (leaderboard over all trials, confirmation, export, report)."""
    if trials < 1:
        raise ConfigError(f"extend: --trials must be 1 or more, not {trials}")
    t_start = time.perf_counter()
    folder, spec, earlier_seconds = reopen(run, extend=True)
    if spec.search.algorithm == "grid":
        raise ConfigError(f"{run}: a grid sweep has run every point of its grid; extend applies to random and optuna")
    info = results.read_run_info(folder.run_dir)
    extensions = list(info.get("extensions") or [])
    job = {**info["spec"], "num_samples": spec.num_samples + trials}
    spec = parse_job(job, source=f"{run}/run.json")
    folder = dataclasses.replace(folder, tuner=f"extend-{len(extensions) + 1}")
    plan = make_plan(spec, folder, address=address, verbose=verbose, restore=True, earlier_seconds=earlier_seconds,
                     extend=Extension(trials, _earlier(folder.run_dir)))  # fmt: skip
    folder.set_status("running", spec=job, tuner=folder.tuner,
                      extensions=[*extensions, {"tuner": folder.tuner, "trials": trials}])  # fmt: skip
    log_line(f"extend: {trials} more trials of {spec.name} ({len(plan.extend.earlier)} ran before)")  # type: ignore[union-attr]
    return _run(plan, t_start, progress)


@dataclass
class _Sweep:
    """The pieces of one sweep, built from its plan."""

    driver: Any
    recorder: Any
    view: SweepProgress
    spend: BudgetStopper
    trackers: list
    tuner: Any
    study: StudyStopper | None = None  # the job's ``stop:``: the sweep ends itself
    mirror: Any = None  # the Optuna study mirroring the record (tracking.optuna), also among the trackers

    @property
    def ended_itself(self) -> str | None:
        """Why the sweep ended before its trials did (``budget``, ``study``), or None."""
        return "budget" if self.spend.spent else "study" if self.study is not None and self.study.spent else None


def _recorder(plan: SweepPlan, tracker: DiagnosticsTracker):
    """The run's record: a new one, or (resuming) the one in the run folder, made to agree with the trials'
    resume checkpoints."""
    spec = plan.spec
    kw: dict[str, Any] = dict(
        job=spec.name, run_id=plan.folder.run_id, metric=spec.scheduler.metric, mode=spec.scheduler.direction.mode,
        max_epochs=spec.epochs_max, tracker=tracker, background=True,  # Tune's loop waits on its callbacks
    )  # fmt: skip
    if not plan.restore:
        return results.RunRecorder(plan.run_dir, **kw)
    recorder = results.RunRecorder.resume(plan.run_dir, **kw)
    drop_cut_confirmations(recorder, plan.folder.resume_root)
    reconcile(recorder, plan.folder.resume_root, revivable=spec.scheduler.second_chance is not None)
    return recorder


def _view(plan: SweepPlan, recorder, progress: str) -> SweepProgress:
    spec = plan.spec
    view = SweepProgress(progress, job=spec.name, metric=spec.scheduler.metric,
                         mode_of_metric=spec.scheduler.direction.mode, trials=spec.trial_count,
                         max_epochs=spec.epochs_max, tuned=spec.tuned, events=events_to_log())  # fmt: skip
    log_line(
        f"sweep {spec.name}: {spec.trial_count} trials x up to {spec.epochs_max} epochs; metric "
        f"{spec.scheduler.metric} ({spec.scheduler.direction.mode})"
        + (f"; tuned: {', '.join(spec.tuned)}" if spec.tuned else "")
    )
    for tid in recorder.trial_ids():  # a resumed sweep shows what it had done already
        view.restore(tid, recorder.config_of(tid), recorder.rows_of(tid), recorder.status_of(tid))
    return view


def _roles(plan: SweepPlan, recorder) -> TrialRoles:
    """Which configs the sweep runs first are whose: the job's baselines (numbered from 1), then the warm-start
    configs random and grid search run (numbered on), less those the record has already."""
    spec = plan.spec
    wanted = [(b, {"role": "baseline", "baseline": i}) for i, b in enumerate(spec.baseline_configs, 1)]
    if plan.warm is not None and spec.search.algorithm != "optuna":
        n = len(wanted)
        wanted += [(c, {"role": "warm_start", "baseline": n + i}) for i, c in enumerate(plan.warm.best, 1)]
    taken = [int(t["baseline"]) - 1 for t in recorder.trials.values()
             if t.get("role") in ("baseline", "warm_start") and t.get("baseline") is not None]  # fmt: skip
    return TrialRoles(wanted, taken=taken)


def _study(plan: SweepPlan, recorder) -> StudyStopper | None:
    """The job's ``stop:`` block as a stopper; resuming, it knows the trials that ended already."""
    spec = plan.spec
    if spec.stop is None:
        return None
    ended = (results.STATUS_COMPLETED, results.STATUS_STOPPED)
    counted = [t for t in recorder.trials.values() if t["status"] in ended and t.get("role") != "confirm"]
    peaks = [t.get("peak_metric") for t in counted if t.get("stop_reason") not in ("study", "budget")]
    return StudyStopper(spec.stop, metric=spec.scheduler.metric, mode=spec.scheduler.direction.mode, peaks=peaks,
                        earlier_seconds=plan.earlier_seconds)  # fmt: skip


def _failure(spec):
    """The job's ``failure:`` block as the trials use it: with second chances, a resume state after every due
    epoch (a revived trial goes on from the epoch it stopped at, not from an older state)."""
    if spec.scheduler.second_chance is None:
        return spec.failure
    return spec.failure.model_copy(update={"checkpoint_min_interval_s": 0.0})


def _build(plan: SweepPlan, progress: str) -> _Sweep:
    """The trial driver, the record, the scheduler, the callbacks and stoppers, and the Tuner."""
    from ray.tune.logger import JsonLoggerCallback

    spec, res, folder = plan.spec, plan.spec.resources, plan.folder
    driver = make_trial_driver(
        plan.entry, plan.data_ref, workers=res.workers_per_trial, cpus=res.cpus, gpus=res.gpus,
        storage_path=results.join_uri(folder.ray_storage, "train"), resume_root=folder.resume_root,
        failure=_failure(spec), job=spec.name, pbt=spec.scheduler.type == "pbt",
        forecast_to=spec.scheduler.max_t or spec.epochs_max, memory_gb=res.memory_gb, placement=res.placement,
    )  # fmt: skip
    tracker = DiagnosticsTracker(spec.diagnostics, plan.splits.dev.class_counts().tolist(), plan.splits.label_names)
    recorder = _recorder(plan, tracker)
    scheduler = sweep_scheduler(plan, recorder, replay=plan.restore)

    revivable = spec.scheduler.second_chance is not None

    def mark_finished(trial_id: str, status: str) -> None:
        mark_trial_finished(recorder, folder.resume_root, trial_id, status, revivable=revivable)

    view = _view(plan, recorder, progress)
    mirror = optuna_mirror(plan, recorder)
    tracking = trackers(spec, folder.run_id) + ([mirror] if mirror is not None else [])
    spend = BudgetStopper(spec.max_total_epochs, recorder.recorded_epochs())
    study = _study(plan, recorder)
    roles = _roles(plan, recorder)
    callbacks = [
        RecordCallback(recorder, progress=view, on_finished=mark_finished, roles=roles, budget=spend, study=study),
        JsonLoggerCallback(),
        *tracking,
    ]
    stoppers = [DiagnosticsStopper(tracker), spend, *([study] if study is not None else [])]
    tuner = build_tuner(plan, driver, callbacks=callbacks, scheduler=scheduler, stop=AllStoppers(*stoppers))
    return _Sweep(driver, recorder, view, spend, tracking, tuner, study, mirror)


def _fit(plan: SweepPlan, sweep: _Sweep) -> None:
    """The sweep itself; trials a spent budget cut are marked stopped, then the record is closed."""
    sweep.view.start()
    try:
        with sigterm_as_sigint(), plan.folder.heartbeat():
            sweep.tuner.fit()
    finally:
        sweep.view.close()
    recorder, why = sweep.recorder, sweep.ended_itself
    if why is not None:  # the budget or the stop rule ended the sweep: trials it cut stopped early, the rest never ran
        for tid in recorder.unended_trials():
            recorder.completed(tid, recorder.config_of(tid), reason=why)
        if sweep.mirror is not None:
            sweep.mirror.sync_all()
    recorder.close()
    if sweep.study is not None and sweep.study.spent:
        sampled = sum(1 for t in recorder.trials.values() if t.get("role") != "confirm")
        plan.folder.set_status("running", study_stop={"reason": sweep.study.reason, "trials_run": sampled,
                                                      "trials_planned": plan.spec.trial_count})  # fmt: skip


def _run(plan: SweepPlan, t_start: float, progress: str) -> RunSummary:
    try:
        sweep = _build(plan, progress)
        t_fit, fit_at = time.perf_counter(), time.time()
        _fit(plan, sweep)
        t_fit_end = time.perf_counter()
        stopped = interrupted(plan.spec, sweep.recorder, ended_itself=sweep.ended_itself is not None)
        if plan.spec.scheduler.second_chance is not None and not stopped and sweep.ended_itself is None:
            given = second_chances(plan, sweep.recorder, sweep.driver, sweep.trackers)
            plan.folder.set_status("running", second_chance=given)
            stopped = interrupted(plan.spec, sweep.recorder, ended_itself=False)
        if plan.spec.confirm is not None and not stopped:
            confirm(plan, sweep.recorder, sweep.driver, sweep.trackers)
            stopped = interrupted(plan.spec, sweep.recorder, ended_itself=sweep.ended_itself is not None)
        t_finish = time.perf_counter()
        if sweep.mirror is not None and not stopped:
            sweep.mirror.sync_all(final=True)
        if stopped:
            plan.folder.set_status("interrupted", wall_seconds=wall_clock(t_start, plan))
            board = results.leaderboard(plan.run_dir) if sweep.recorder.trials else pd.DataFrame()
            summary = RunSummary(plan.run_dir, board, None, None, 0.0, plan.folder.remote, interrupted=True)
        else:
            summary = finish(plan, plan.evaluator.handle if plan.evaluator is not None else None)
            tag_best(plan.spec, plan.run_dir)
            plan.folder.set_status("finished", wall_seconds=wall_clock(t_start, plan))
        summary.progress = sweep.view.summary()
        summary.timings = {
            **summary.timings,  # the finish's parts
            "prepare_s": plan.prepare_seconds,
            "fit_s": t_fit_end - t_fit,  # the sweep itself (Tuner.fit)
            "confirm_s": t_finish - t_fit_end,  # the confirmation runs (with recording the sweep's end)
            "finish_s": time.perf_counter() - t_finish,
            "fit_started_at": fit_at,  # wall clock, to line up with the record's started_at / reported_at
        }
    finally:
        try:
            if plan.evaluator is not None:  # started with the data's preparation, whether or not the build worked
                plan.evaluator.stop()
        finally:
            plan.folder.close()  # the upload and the lock, whatever happened to the evaluator
    summary.wall_seconds = time.perf_counter() - t_start
    return summary


def run_range_test(
    spec: JobSpec, *, address: str | None = None, verbose: bool = False, run_id: str | None = None
) -> tuple[Path, dict]:
    """``kind: lr_range_test``: one run, lr raised exponentially; returns (run folder, suggestion)."""
    plan = make_plan(spec, RunFolder.new(spec, run_id), address=address, verbose=verbose)
    rt = spec.range_test
    try:
        rows = range_test_on_cluster(
            plan.entry, spec.constants, plan.data_ref, rt.model_dump(), cpus=spec.resources.cpus,
            gpus=spec.resources.gpus,
        )  # fmt: skip
        suggestion = results.write_range_test(plan.run_dir, rows, lr_max=rt.lr_max)
    finally:
        plan.folder.close()
    return plan.run_dir, suggestion
