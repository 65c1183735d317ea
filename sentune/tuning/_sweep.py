"""A tune job on Ray: prepare the data once, run the sweep (Tuner + ASHA + search algorithm, one trial
driver per trial), then aggregate, evaluate the best checkpoint and export."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sentune import results
from sentune._atomic import atomic_write_text
from sentune._log import log_line
from sentune._progress import SweepProgress
from sentune._uri import redact
from sentune.data import DataSplits, load_splits
from sentune.diagnostics import DiagnosticsTracker
from sentune.errors import ConfigError, SentuneError
from sentune.search import Domain, load_search_space
from sentune.spec import JobSpec, parse_job
from sentune.trainables import TrainableEntry, get_trainable
from sentune.trainables._resume import trial_ids
from sentune.tuning._callback import AllStoppers, BudgetStopper, DiagnosticsStopper, RecordCallback, TrialRoles
from sentune.tuning._factories import make_scheduler, make_search_alg, to_tune
from sentune.tuning._session import init_ray, max_concurrent_trials
from sentune.tuning._tasks import predict_on_cluster, prepare_on_cluster, range_test_on_cluster
from sentune.tuning._trial import make_trial_driver, resume_store

__all__ = ["RUN_FORMAT", "RunSummary", "resume_sweep", "run_range_test", "run_sweep"]

# run.json's "format": the layout of a run folder (resume checkpoints, the Parquet record, Ray's state)
# that `sentune resume` can continue; a run written in another format is refused in one line.
RUN_FORMAT = 3  # 3: resume and PBT states in sentune._safe_state's format (2 pickled them)


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


@dataclass
class _Started:
    entry: TrainableEntry
    splits: DataSplits
    run_dir: Path
    run_id: str
    data_ref: object
    remote: str | None = None  # the run folder behind a URI, when storage_path is one
    prepare_seconds: float = 0.0
    earlier_seconds: float = 0.0  # what the run's earlier sessions took (a resumed run)


def stored_spec(spec: JobSpec) -> dict:
    """The job as run.json keeps it, resolved once when the run starts: absolute data paths, the search
    space loaded (not a path to read again), credentials in the storage URI masked. ``sentune resume``
    parses this, so a moved or edited job folder, or another working directory, changes nothing."""
    out = spec.model_dump(mode="json")
    out["data"] = spec.data.resolved().model_dump(mode="json", exclude_defaults=True)
    if isinstance(spec.search_space, Path):
        out["search_space"] = load_search_space(spec.search_space)
    if not results.is_uri(spec.storage_path):
        out["storage_path"] = str(Path(spec.storage_path).resolve())
    out["storage_path"] = redact(out["storage_path"])
    return out


def data_digests(spec: JobSpec) -> dict[str, str]:
    """sha256 of each of the job's own data files, to tell on resume that they are the ones the run began with."""
    data = spec.data.resolved()
    out = {}
    for name in ("train", "dev", "test", "label_names"):
        path = getattr(data, name, None)
        if isinstance(path, Path) and path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            out[name] = digest.hexdigest()
    return out


def _check_same_data(spec: JobSpec, info: dict, run: str) -> None:
    before = info.get("data_sha256")
    if not isinstance(before, dict):
        return
    now = data_digests(spec)
    for name, digest in before.items():
        if now.get(name) != digest:
            path = getattr(spec.data, name, None)
            raise ConfigError(
                f"{run}: data.{name} {path} is not the file this run started with (missing or changed since); "
                "a resumed sweep trains on the same data or not at all"
            )


def _run_info(spec: JobSpec, splits: DataSplits, run_id: str) -> dict:
    return {
        "job": spec.name,
        "kind": spec.kind,
        "run_id": run_id,
        "trainable": spec.trainable,
        "metric": spec.scheduler.metric,
        "mode": spec.scheduler.direction.mode,
        "label_names": splits.label_names,
        "tuned_params": spec.tuned,
        "data": spec.data.resolved().model_dump(mode="json", exclude_defaults=True),
        "sizes": {"train": len(splits.train), "dev": len(splits.dev), "test": len(splits.test) if splits.test else 0},
        "spec": stored_spec(spec),
        "data_sha256": data_digests(spec),
        "format": RUN_FORMAT,
        "status": "running",
        "started_at": time.time(),
    }


def _check_writable(run_dir: Path, remote: str | None) -> None:
    """An unwritable storage path fails the job in one line, before Ray starts."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
        if remote:
            import pyarrow.fs as pafs

            fs, root = pafs.FileSystem.from_uri(remote)
            fs.create_dir(root, recursive=True)
            with fs.open_output_stream(f"{root}/.write-test-{os.getpid()}") as f:
                f.write(b"")
            fs.delete_file(f"{root}/.write-test-{os.getpid()}")
    except OSError as exc:
        where = remote if remote and run_dir.is_dir() else run_dir
        raise ConfigError(f"storage path {where}: not writable ({exc.strerror or str(exc).splitlines()[0]})") from None


def _set_status(run_dir: Path, status: str, **more) -> None:
    results.write_run_info(run_dir, {**results.read_run_info(run_dir), "status": status, **more})


_LOCK_FILE = ".driver.lock"
_held_locks: dict[Path, int] = {}


def _lock_run(run_dir: Path) -> None:
    """One driver per run folder: an exclusive lock on ``<run>/.driver.lock``, held while this process drives
    the run (the system drops it when the process dies, so a killed driver never leaves it stale)."""
    import fcntl

    run_dir = Path(run_dir)
    if run_dir in _held_locks:
        return
    path = run_dir / _LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        other = os.pread(fd, 64, 0).decode(errors="replace").strip()
        os.close(fd)
        raise ConfigError(
            f"{run_dir}: another sentune driver is running this sweep{f' (pid {other})' if other.isdigit() else ''}; "
            "stop it (Ctrl-C, sentune stop) before resuming"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _held_locks[run_dir] = fd


def _unlock_run(run_dir: Path) -> None:
    fd = _held_locks.pop(Path(run_dir), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the lock


class _Heartbeat:
    """While the sweep runs, its driver writes the time to ``<run>/heartbeat`` every few seconds: a run
    whose record says running but whose heartbeat stopped was interrupted (`sentune runs`)."""

    def __init__(self, run_dir: Path):
        self.path, self.done = run_dir / results.HEARTBEAT, threading.Event()

    def beat(self) -> None:
        while True:
            try:
                atomic_write_text(self.path, f"{time.time():.3f}")
            except OSError:
                pass
            if self.done.wait(results.HEARTBEAT_EVERY_S):
                return

    def __enter__(self):
        threading.Thread(target=self.beat, daemon=True, name="sentune-heartbeat").start()
        return self

    def __exit__(self, *exc):
        self.done.set()


def _read_heartbeat(run_dir: Path) -> float | None:
    try:
        beat = float((Path(run_dir) / results.HEARTBEAT).read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None
    return beat if math.isfinite(beat) else None


def _start(
    spec: JobSpec,
    *,
    address: str | None,
    verbose: bool,
    run_id: str | None,
    existing: tuple[Path, str | None] | None = None,
) -> _Started:
    """Read and check the data (before Ray starts), open the run folder (``existing``: the folder and URI
    of a run being resumed), prepare the data once on Ray."""
    entry = get_trainable(spec.trainable)
    splits = load_splits(spec.data)
    values = {k: list(v.extremes()) if isinstance(v, Domain) else [v] for k, v in spec.space.items()}
    try:
        entry.params_model.check_data(values, splits.train.class_counts())
    except ConfigError as exc:
        raise ConfigError(f"job {spec.name}: {exc}") from None
    if existing is not None:
        (run_dir, remote), run_id = existing, existing[0].name
    else:
        run_id = run_id or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        if results.is_uri(spec.storage_path):  # written here, uploaded at the end; Ray writes its state there
            remote = results.join_uri(spec.storage_path, spec.name, run_id)
            run_dir = results.staging_dir(spec.name, run_id)
        else:
            remote = None
            run_dir = (Path(spec.storage_path) / spec.name / run_id).resolve()
    _check_writable(run_dir, remote)
    _lock_run(run_dir)
    if existing is None:
        results.write_run_info(run_dir, _run_info(spec, splits, run_id))
    else:
        _set_status(run_dir, "running")
    where = f"{run_dir} (uploaded to {redact(remote)} at the end)" if remote else str(run_dir)
    log_line(
        f"job {spec.name}: {spec.trainable} on {len(splits.train)}/{len(splits.dev)}/"
        f"{len(splits.test) if splits.test else 0} train/dev/test rows, {len(splits.label_names)} classes; "
        f"results -> {where}"
    )
    init_ray(address, verbose=verbose)
    import ray

    t0 = time.perf_counter()
    data_ref = prepare_on_cluster(entry, spec.constants, splits, cpus=spec.resources.cpus, gpus=spec.resources.gpus)
    _warm_driver()
    try:  # a backbone that fails to load fails the job here, once, not every trial
        ray.get(data_ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.as_instanceof_cause()
        last = str(cause).strip().splitlines()[-1]
        raise SentuneError(f"preparing the data failed: {type(cause).__name__}: {last}") from None
    prepare_s = time.perf_counter() - t0
    log_line(f"data prepared once in {prepare_s:.1f} s (shared through the object store)")
    return _Started(entry, splits, run_dir, run_id, data_ref, remote, prepare_s)


def _pbt_mutations(spec: JobSpec) -> dict:
    """What PBT resamples each tuned option from: a list for a choice (PBT then moves to a neighbouring
    value, never outside it), Tune's domain for a range (resampled, or the value scaled by 0.8 / 1.2)."""
    out = {}
    for name in spec.tuned:
        dom = spec.space[name]
        out[name] = list(dom.args) if dom.kind == "choice" else to_tune({name: dom})[name]
    return out


def _warm_driver() -> None:
    """While the data prepares: the modules a process's first ``Tuner.fit`` imports (its usage tagging
    imports every logger integration: MLflow's alone takes ~1.3 s on 2 cores when installed)."""
    try:
        from ray.air._internal.usage import _count_callbacks

        _count_callbacks([])
    except Exception:  # noqa: BLE001 (Ray's private helper: only a head start, never a failure)
        pass


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
    st = _start(spec, address=address, verbose=verbose, run_id=run_id)
    return _sweep(spec, st, t_start, restore=False, progress=progress)


def resume_sweep(
    run: str | Path, *, address: str | None = None, verbose: bool = False, progress: str = "plain"
) -> RunSummary:
    """Go on with an interrupted sweep (a run folder, local or behind a URI): finished trials stay
    finished, running ones go on from their resume checkpoints, pending ones start; ASHA's rungs and the
    search algorithm's state are what they were. The run then ends as usual (leaderboard, test
    evaluation, export, report)."""
    t_start = time.perf_counter()
    run = str(run)
    remote = run.rstrip("/") if results.is_uri(run) else None
    run_dir = results.fetch_run(remote) if remote else Path(run).resolve()
    info = results.read_run_info(run_dir, require=())  # "not a sentune run folder" otherwise
    if info.get("kind") != "tune":
        raise ConfigError(f"{run}: a {info.get('kind')} run; only tune sweeps can be resumed")
    if info.get("format") != RUN_FORMAT:
        raise ConfigError(
            f"{run}: written by an incompatible sentune (run format {info.get('format', 1)}, this one reads "
            f"{RUN_FORMAT}); start the job again"
        )
    if info.get("status") == "finished":
        raise ConfigError(f"{run}: this run is finished; nothing to resume (its leaderboard: sentune results {run})")
    heartbeat = _read_heartbeat(run_dir)
    if results.run_status(info, heartbeat) == "running":
        ago = time.time() - (heartbeat or 0.0)
        raise ConfigError(
            f"{run}: its driver is still running (last heartbeat {ago:.0f} s ago); stop it before resuming, or "
            f"wait {4 * results.HEARTBEAT_EVERY_S:.0f} s after it died"
        )
    tune_dir = results.join_uri(remote or str(run_dir), "tune")
    from ray import tune

    if not tune.Tuner.can_restore(tune_dir):
        raise ConfigError(f"{run}: Ray Tune's state is missing ({tune_dir}); start the job again")
    spec = parse_job(info["spec"], source=f"{run}/run.json")
    _check_same_data(spec, info, run)
    st = _start(spec, address=address, verbose=verbose, run_id=None, existing=(run_dir, remote))
    st.earlier_seconds = float(info.get("wall_seconds") or 0.0)
    return _sweep(spec, st, t_start, restore=True, progress=progress)


def _sweep(spec: JobSpec, st: _Started, t_start: float, *, restore: bool, progress: str) -> RunSummary:
    metric, mode = spec.scheduler.metric, spec.scheduler.direction.mode
    res = spec.resources
    from ray import tune

    ray_storage = st.remote or str(st.run_dir)
    resume_root = results.join_uri(ray_storage, "resume")
    driver = make_trial_driver(
        st.entry,
        st.data_ref,
        workers=res.workers_per_trial,
        cpus=res.cpus,
        gpus=res.gpus,
        storage_path=results.join_uri(ray_storage, "train"),
        resume_root=resume_root,
        failure=spec.failure,
        job=spec.name,
        pbt=spec.scheduler.type == "pbt",
    )
    tracker = DiagnosticsTracker(spec.diagnostics, st.splits.dev.class_counts().tolist(), st.splits.label_names)
    recorder_kw: dict[str, Any] = dict(
        job=spec.name, run_id=st.run_id, metric=metric, mode=mode, max_epochs=spec.epochs_max, tracker=tracker
    )
    if restore:
        recorder = results.RunRecorder.resume(st.run_dir, **recorder_kw)
        _drop_cut_confirmations(recorder, resume_root)
        _reconcile(recorder, resume_root)
    else:
        recorder = results.RunRecorder(st.run_dir, **recorder_kw)
    scheduler = make_scheduler(
        spec.scheduler.type,
        max_t=spec.scheduler.max_t or spec.epochs_max,
        grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
        mutations=_pbt_mutations(spec),
        perturbation_interval=spec.scheduler.perturbation_interval,
        seed=spec.seed,
    )
    if restore:  # Tuner.restore brings back the searcher's state but not the scheduler's (ray#30838)
        scheduler.replay_later(_replay_rows(recorder))

    def mark_finished(trial_id: str, status: str) -> None:  # a restarted driver of this trial returns at once
        resume_store(resume_root, trial_id).mark_finished(status, _last_result(recorder, trial_id))

    from ray.tune.logger import JsonLoggerCallback

    view = SweepProgress(
        progress,
        job=spec.name,
        metric=metric,
        mode_of_metric=mode,
        trials=spec.trial_count,
        max_epochs=spec.epochs_max,
        tuned=spec.tuned,
    )
    log_line(
        f"sweep {spec.name}: {spec.trial_count} trials x up to {spec.epochs_max} epochs; metric {metric} ({mode})"
        + (f"; tuned: {', '.join(spec.tuned)}" if spec.tuned else "")
    )
    for tid, trial in recorder.trials.items():  # a resumed sweep shows what it had done already
        view.restore(tid, json.loads(trial["config_json"]), recorder.rows.get(tid, []), trial["status"])
    trackers = _trackers(spec, st.run_id)
    spend = BudgetStopper(spec.max_total_epochs, [(t, r["epoch"]) for t, rs in recorder.rows.items() for r in rs])
    stopper = AllStoppers(DiagnosticsStopper(tracker), spend)
    baselines = spec.baseline_configs
    roles = TrialRoles(
        [(b, {"role": "baseline", "baseline": i}) for i, b in enumerate(baselines, 1)],
        taken=[t["baseline"] - 1 for t in recorder.trials.values() if t.get("role") == "baseline"],
    )
    callbacks: list[tune.Callback] = [
        RecordCallback(recorder, progress=view, on_finished=mark_finished, roles=roles, budget=spend),
        JsonLoggerCallback(),
        *trackers,
    ]
    if restore:
        tuner = tune.Tuner.restore(
            results.join_uri(ray_storage, "tune"),
            trainable=driver,
            resume_unfinished=True,
            resume_errored=False,
            param_space=to_tune(spec.space),
        )
        # Ray 2.60 restores the Tuner's configs as pickled when the sweep started (empty record, fresh
        # scheduler): hand it this process's record, stopper and rebuilt scheduler instead.
        internal = tuner._local_tuner
        assert internal is not None  # not Ray Client
        run_config = internal.get_run_config()
        run_config.callbacks, run_config.stop = callbacks, stopper
        internal._tune_config.scheduler = scheduler
    else:
        tuner = tune.Tuner(
            driver,
            param_space=to_tune(spec.space),
            tune_config=tune.TuneConfig(
                metric=metric,
                mode=mode,
                # the baselines first, then the sampled trials; the search algorithm caps concurrency
                num_samples=spec.num_samples + len(baselines),
                scheduler=scheduler,
                search_alg=make_search_alg(
                    spec.search.algorithm,
                    spec.space,
                    seed=spec.seed,
                    metric=metric,
                    mode=mode,
                    max_concurrent=max_concurrent_trials(res),
                    points=baselines,
                    multivariate=spec.search.multivariate,
                ),
                trial_name_creator=lambda t: f"{spec.name}-{t.trial_id}",
                reuse_actors=True,  # a new trial starts in a process that has its framework imported
            ),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=ray_storage,
                callbacks=callbacks,
                stop=stopper,
                failure_config=tune.FailureConfig(max_failures=spec.failure.max_failures),
                verbose=0,
            ),
        )
    # Of Tune's default loggers keep the JSON one (Tune reads its own results back from it): the CSV one
    # repeats it, and the TensorBoardX one imports torch in this process at every sweep's start (~3 s on
    # 2 cores). The Parquet record holds every result.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Tune's own console output (its configuration box, "View detailed results here") would break the live
    # screen and the --json stream: the old output engine at verbose=0 prints nothing
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    summary = None
    try:
        t_fit, fit_at = time.perf_counter(), time.time()
        view.start()
        try:
            with _sigterm_as_sigint(), _Heartbeat(st.run_dir):
                tuner.fit()
        finally:
            view.close()
        t_fit_end = time.perf_counter()
        if spend.spent:  # the budget ended the sweep: trials it cut are stopped early, unstarted ones never run
            for tid, t in recorder.trials.items():
                if t["status"] not in _ENDED:
                    recorder.completed(tid, json.loads(t["config_json"]), reason="budget")
        recorder.close()
        if spec.confirm is not None and not _interrupted(spec, recorder, spend):
            _confirm(spec, st, recorder, driver, trackers)
        t_finish = time.perf_counter()

        def wall() -> float:  # this session's time so far, plus what earlier sessions of the run took
            return round(time.perf_counter() - t_start + st.earlier_seconds, 1)

        if _interrupted(spec, recorder, spend):
            _set_status(st.run_dir, "interrupted", wall_seconds=wall())
            summary = RunSummary(st.run_dir, results.leaderboard(st.run_dir) if recorder.trials else pd.DataFrame(),
                                 None, None, 0.0, st.remote, interrupted=True)  # fmt: skip
        else:
            summary = _finish(spec, st)
            _tag_best(spec, st.run_dir)
            _set_status(st.run_dir, "finished", wall_seconds=wall())
        summary.progress = view.summary()
        summary.timings = {
            "prepare_s": st.prepare_seconds,
            "fit_s": t_fit_end - t_fit,  # the sweep itself (Tuner.fit)
            "confirm_s": t_finish - t_fit_end,  # the confirmation runs (with recording the sweep's end)
            "finish_s": time.perf_counter() - t_finish,
            "fit_started_at": fit_at,  # wall clock, to line up with the record's started_at / reported_at
        }
    finally:
        if st.remote:
            results.upload_run(st.run_dir, st.remote)
        _unlock_run(st.run_dir)
    summary.wall_seconds = time.perf_counter() - t_start
    return summary


def _confirm(spec: JobSpec, st: _Started, recorder, driver, trackers: list) -> None:
    """Train the sweep's top-k configs again with fresh seeds for their full epochs (FIFO), into the same
    record (role ``confirm``, ``confirm_of`` the trial); the leaderboard then ranks them by the mean."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from sentune.tuning._schedulers import ResumableFIFO

    assert spec.confirm is not None
    board = results.leaderboard(st.run_dir)
    top = board[board["peak_epoch"].notna()].head(spec.confirm.top_k)["trial_id"].tolist()
    done = {(t.get("confirm_of"), json.loads(t["config_json"]).get("seed")) for t in recorder.trials.values()
            if t.get("role") == "confirm" and t["status"] in _ENDED}  # fmt: skip
    points, wanted = [], []
    for tid in top:
        config = json.loads(recorder.trials[tid]["config_json"])
        first = int(config.get("seed") or 0)
        for j in range(spec.confirm.seeds):
            seed = (first + 1 + j) % 2**32  # seeds live in [0, 2**32)
            if (tid, seed) not in done:
                point = {**config, "seed": seed}
                points.append(point)
                wanted.append((point, {"role": "confirm", "confirm_of": tid}))
    if not points:
        return
    log_line(f"confirm: the top {len(top)} configs again, {spec.confirm.seeds} fresh seeds each ({len(points)} runs)")
    earlier = sum(1 for t in recorder.trials.values() if t.get("role") == "confirm")
    tuner = tune.Tuner(
        driver,
        param_space={**to_tune(spec.space), "seed": 0},  # each point sets every option
        tune_config=tune.TuneConfig(
            metric=spec.scheduler.metric,
            mode=spec.scheduler.direction.mode,
            num_samples=len(points),
            scheduler=ResumableFIFO(),
            search_alg=BasicVariantGenerator(
                points_to_evaluate=points, max_concurrent=max_concurrent_trials(spec.resources)
            ),
            trial_name_creator=lambda t: f"{spec.name}-{t.trial_id}",
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"confirm-{earlier}",
            storage_path=st.remote or str(st.run_dir),
            callbacks=[RecordCallback(recorder, roles=TrialRoles(wanted)), JsonLoggerCallback(), *trackers],
            failure_config=tune.FailureConfig(max_failures=spec.failure.max_failures),
            verbose=0,
        ),
    )
    with _sigterm_as_sigint(), _Heartbeat(st.run_dir):
        tuner.fit()
    recorder.close()


def _trackers(spec: JobSpec, run_id: str) -> list:
    """Ray Tune's own logger callbacks for the trackers the job names."""
    out: list = []
    if spec.tracking.tensorboard:
        from ray.tune.logger import TBXLoggerCallback

        out.append(TBXLoggerCallback())
    if spec.tracking.mlflow is not None:
        mlf = spec.tracking.mlflow
        if mlf.tracking_uri.startswith("file:"):  # the user asked for MLflow's file store by name
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        tags = {"sentune.job": spec.name, "sentune.run": run_id, "sentune.trainable": spec.trainable}
        out.append(MLflowLoggerCallback(tracking_uri=mlf.tracking_uri, experiment_name=mlf.experiment or spec.name,
                                        tags=tags, save_artifact=False))  # fmt: skip
    return out


def _tag_best(spec: JobSpec, run_dir: Path) -> None:
    """Tag the best trial's MLflow run (``sentune.best = true``: the exported one) once the sweep has picked it."""
    mlf = spec.tracking.mlflow
    if mlf is None:
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlf.tracking_uri)
    experiment = client.get_experiment_by_name(mlf.experiment or spec.name)
    if experiment is None:
        return
    name = f"{spec.name}-{results.best_trial(run_dir).name}"
    for run in client.search_runs([experiment.experiment_id], filter_string=f"tags.trial_name = '{name}'"):
        client.set_tag(run.info.run_id, "sentune.best", "true")


class _sigterm_as_sigint:
    """SIGTERM (what `sentune stop` and the Jobs API send) stops the sweep like a first Ctrl-C: Tune saves
    its state, and the run can be resumed."""

    def __enter__(self):
        self.prev = None
        try:
            self.prev = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def __exit__(self, *exc):
        if self.prev is not None:
            signal.signal(signal.SIGTERM, self.prev)


_ENDED = frozenset({results.STATUS_COMPLETED, results.STATUS_STOPPED, results.STATUS_ERRORED})


def _interrupted(spec: JobSpec, recorder, spend: BudgetStopper | None = None) -> bool:
    """Did the sweep stop before every trial it would run had ended (and not because its budget was spent)?"""
    if any(t["status"] not in _ENDED for t in recorder.trials.values()):
        return True
    return len(recorder.trials) < spec.trial_count and not (spend is not None and spend.spent)


def _replay_rows(recorder) -> list[tuple[str, int, float]]:
    """(trial id, epoch, metric) of every recorded epoch, in the order the results arrived."""
    rows = [r for rs in recorder.rows.values() for r in rs if r.get(recorder.metric) is not None]
    rows.sort(key=lambda r: (r.get("reported_at") or 0.0, r["epoch"]))
    return [(r["trial_id"], int(r["epoch"]), float(r[recorder.metric])) for r in rows]


def _last_result(recorder, trial_id: str) -> dict | None:
    """A trial's last recorded epoch, as the metrics it reported (no config columns, no bookkeeping)."""
    rows = recorder.rows.get(trial_id) or []
    if not rows:
        return None
    skip = {"job", "run", "trial_id", "trial_status", "_seq", "reported_at", "time_total_s", "checkpoint_path"}
    return {k: v for k, v in rows[-1].items() if k not in skip and not k.startswith(("config/", "diag_"))}


def _drop_cut_confirmations(recorder, resume_root: str) -> None:
    """Confirmation runs a stop cut short leave the record (the resumed run trains those seeds again);
    their resume folders are marked finished, so nothing brings them back."""
    for tid, t in list(recorder.trials.items()):
        if t.get("role") == "confirm" and t["status"] not in _ENDED:
            recorder.forget(tid)
            resume_store(resume_root, tid).mark_finished("dropped")


def _reconcile(recorder, resume_root: str) -> None:
    """Before a resumed sweep starts: epochs a trial finished (in its resume checkpoint) after the record's
    last write go into the record, a trial the record had not seen yet included; a trial the record has as
    ended is marked finished for its driver."""
    for tid in sorted(set(recorder.trials) | set(trial_ids(resume_root))):
        store = resume_store(resume_root, tid)
        status = recorder.trials[tid]["status"] if tid in recorder.trials else None
        if status is None and store.finished():  # a trial the driver had let go (a cut confirmation run)
            continue
        if status in _ENDED:
            if status != results.STATUS_ERRORED and not store.finished():
                store.mark_finished(status, _last_result(recorder, tid))
            continue
        config = json.loads(recorder.trials[tid]["config_json"]) if status else store.config()
        if config is None:
            continue
        have = {r["epoch"] for r in recorder.rows.get(tid, [])}
        for metrics in store.history():
            if metrics["epoch"] not in have:
                recorder.result(tid, config, metrics)


def _finish(spec: JobSpec, st: _Started) -> RunSummary:
    """The reference model, leaderboard, best config, the best checkpoint (and the best baseline's) on dev
    and test, the budget, report.html."""
    splits, run_dir, res = st.splits, st.run_dir, spec.resources
    if spec.reference:
        from sentune.reference import fit_reference

        ref = fit_reference(splits, seed=spec.seed)
        results.write_reference(run_dir, ref)
        log_line(f"reference {ref['model']}: dev macro-F1 {ref['dev']['macro_f1']:.4f} ({ref['seconds']:.1f} s)")
    best = results.best_trial(run_dir)
    report = None
    evaluations: dict = {}
    wanted = ["dev"] + (["test"] if splits.test is not None else [])
    base = results.best_baseline(run_dir)
    for tag, row in (("best", best), ("best_baseline", base)):
        if row is None or not row["checkpoint_path"]:
            continue
        if tag == "best_baseline" and row.name == best.name:
            evaluations[tag] = evaluations["best"]
            continue
        preds = predict_on_cluster(
            st.entry, row["checkpoint_path"], st.data_ref, wanted, cpus=res.cpus, gpus=res.gpus, storage=st.remote
        )
        entry: dict = {"trial_id": str(row.name), "row": str(row.get("confirm_of") or row.name)}
        for split_name in wanted:
            ds = getattr(splits, split_name)
            probs = preds[split_name][0]
            if tag == "best":
                frame = results.write_evaluation(run_dir, splits.label_names, split_name, ds.texts, ds.labels, probs)
                if split_name == "test":
                    report = frame
                    results.write_seed_report(run_dir, splits.label_names, ds.labels, probs)
            entry[split_name] = results.split_figures(ds.labels, probs)
        entry["dev"]["score"] = float(row["peak_metric"])
        evaluations[tag] = entry
    results.write_evaluations(run_dir, evaluations)
    exported = results.export_run(run_dir)
    board = results.leaderboard(run_dir, reference=True)
    spent = results.budget(run_dir)
    _set_status(run_dir, "running", budget=spent)
    results.write_report(run_dir)
    summary = RunSummary(run_dir, board, exported["best_config"], report, 0.0, st.remote)
    summary.budget = results.format_budget(spent)
    summary.comparison = results.comparison_line(run_dir)
    return summary


def run_range_test(
    spec: JobSpec, *, address: str | None = None, verbose: bool = False, run_id: str | None = None
) -> tuple[Path, dict]:
    """``kind: lr_range_test``: one run, lr raised exponentially; returns (run folder, suggestion)."""
    st = _start(spec, address=address, verbose=verbose, run_id=run_id)
    rt = spec.range_test
    try:
        rows = range_test_on_cluster(
            st.entry, spec.constants, st.data_ref, rt.model_dump(), cpus=spec.resources.cpus, gpus=spec.resources.gpus
        )
        suggestion = results.write_range_test(st.run_dir, rows, lr_max=rt.lr_max)
        if st.remote:
            results.upload_run(st.run_dir, st.remote)
    finally:
        _unlock_run(st.run_dir)
    return st.run_dir, suggestion
