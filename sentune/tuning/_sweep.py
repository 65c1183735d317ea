"""A tune job on Ray: prepare the data once, run the sweep (Tuner + ASHA + search algorithm, one trial
driver per trial), then aggregate, evaluate the best checkpoint and export."""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sentune import results
from sentune._log import log_line
from sentune.data import DataSplits, load_splits
from sentune.diagnostics import DiagnosticsTracker
from sentune.errors import ConfigError, SentuneError
from sentune.search import Domain
from sentune.spec import JobSpec
from sentune.trainables import TrainableEntry, get_trainable
from sentune.tuning._callback import DiagnosticsStopper, RecordCallback
from sentune.tuning._factories import make_scheduler, make_search_alg, to_tune
from sentune.tuning._session import init_ray, max_concurrent_trials
from sentune.tuning._tasks import predict_on_cluster, prepare_on_cluster, range_test_on_cluster
from sentune.tuning._trial import make_trial_driver

__all__ = ["RunSummary", "run_range_test", "run_sweep"]


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


@dataclass
class _Started:
    entry: TrainableEntry
    splits: DataSplits
    run_dir: Path
    run_id: str
    data_ref: object
    remote: str | None = None  # the run folder behind a URI, when storage_path is one
    prepare_seconds: float = 0.0


def _start(spec: JobSpec, *, address: str | None, verbose: bool, run_id: str | None) -> _Started:
    """Read and check the data (before Ray starts), open the run folder, prepare the data once on Ray."""
    entry = get_trainable(spec.trainable)
    splits = load_splits(spec.data)
    values = {k: list(v.extremes()) if isinstance(v, Domain) else [v] for k, v in spec.space.items()}
    try:
        entry.params_model.check_data(values, splits.train.class_counts())
    except ConfigError as exc:
        raise ConfigError(f"job {spec.name}: {exc}") from None
    run_id = run_id or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    if results.is_uri(spec.storage_path):  # written here, uploaded at the end; Ray writes its state there directly
        remote = results.join_uri(spec.storage_path, spec.name, run_id)
        run_dir = results.staging_dir(spec.name, run_id)
    else:
        remote = None
        run_dir = (Path(spec.storage_path) / spec.name / run_id).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    results.write_run_info(
        run_dir,
        {
            "job": spec.name,
            "kind": spec.kind,
            "run_id": run_id,
            "trainable": spec.trainable,
            "metric": spec.scheduler.metric,
            "mode": spec.scheduler.direction.mode,
            "label_names": splits.label_names,
            "tuned_params": spec.tuned,
            "data": spec.data.resolved().model_dump(mode="json", exclude_defaults=True),
            "sizes": {
                "train": len(splits.train),
                "dev": len(splits.dev),
                "test": len(splits.test) if splits.test else 0,
            },
            "spec": spec.model_dump(mode="json"),
        },
    )
    where = f"{run_dir} (uploaded to {remote} at the end)" if remote else str(run_dir)
    log_line(
        f"job {spec.name}: {spec.trainable} on {len(splits.train)}/{len(splits.dev)}/"
        f"{len(splits.test) if splits.test else 0} train/dev/test rows, {len(splits.label_names)} classes; "
        f"results -> {where}"
    )
    init_ray(address, verbose=verbose)
    import ray

    t0 = time.perf_counter()
    data_ref = prepare_on_cluster(entry, spec.constants, splits, cpus=spec.resources.cpus, gpus=spec.resources.gpus)
    try:  # a backbone that fails to load fails the job here, once, not every trial
        ray.get(data_ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.as_instanceof_cause()
        last = str(cause).strip().splitlines()[-1]
        raise SentuneError(f"preparing the data failed: {type(cause).__name__}: {last}") from None
    prepare_s = time.perf_counter() - t0
    log_line(f"data prepared once in {prepare_s:.1f} s (shared through the object store)")
    return _Started(entry, splits, run_dir, run_id, data_ref, remote, prepare_s)


def run_sweep(
    spec: JobSpec, *, address: str | None = None, verbose: bool = False, run_id: str | None = None
) -> RunSummary:
    """Run a validated tune job on Ray (the embedded local Ray unless ``address`` is given)."""
    if spec.kind != "tune":
        raise ConfigError(f"job {spec.name} is a {spec.kind}; use run_range_test")
    t_start = time.perf_counter()
    st = _start(spec, address=address, verbose=verbose, run_id=run_id)
    metric, mode = spec.scheduler.metric, spec.scheduler.direction.mode
    res = spec.resources
    from ray import tune

    ray_storage = st.remote or str(st.run_dir)
    driver = make_trial_driver(
        st.entry,
        st.data_ref,
        workers=res.workers_per_trial,
        cpus=res.cpus,
        gpus=res.gpus,
        storage_path=results.join_uri(ray_storage, "train"),
        job=spec.name,
    )
    tracker = DiagnosticsTracker(spec.diagnostics, st.splits.dev.class_counts().tolist(), st.splits.label_names)
    recorder = results.RunRecorder(
        st.run_dir,
        job=spec.name,
        run_id=st.run_id,
        metric=metric,
        mode=mode,
        max_epochs=spec.epochs_max,
        tracker=tracker,
    )
    tuner = tune.Tuner(
        driver,
        param_space=to_tune(spec.space),
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            num_samples=spec.num_samples,  # the search algorithm caps concurrency
            scheduler=make_scheduler(
                spec.scheduler.type,
                max_t=spec.scheduler.max_t or spec.epochs_max,
                grace_period=spec.scheduler.grace_period,
                reduction_factor=spec.scheduler.reduction_factor,
            ),
            search_alg=make_search_alg(
                spec.search.algorithm,
                spec.space,
                seed=spec.seed,
                metric=metric,
                mode=mode,
                max_concurrent=max_concurrent_trials(res),
            ),
            trial_name_creator=lambda t: f"{spec.name}-{t.trial_id}",
            reuse_actors=True,  # a new trial starts in a process that has its framework imported
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=ray_storage,
            callbacks=[RecordCallback(recorder)],
            stop=DiagnosticsStopper(tracker),
            failure_config=tune.FailureConfig(max_failures=1),
            verbose=0,
        ),
    )
    try:
        t_fit = time.perf_counter()
        tuner.fit()
        t_finish = time.perf_counter()
        summary = _finish(spec, st)
        summary.timings = {
            "prepare_s": st.prepare_seconds,
            "fit_s": t_finish - t_fit,
            "finish_s": time.perf_counter() - t_finish,
        }
    finally:
        if st.remote:
            results.upload_run(st.run_dir, st.remote)
    summary.wall_seconds = time.perf_counter() - t_start
    return summary


def _finish(spec: JobSpec, st: _Started) -> RunSummary:
    """Leaderboard, best config, the best checkpoint on dev and test, report.html."""
    splits, run_dir, res = st.splits, st.run_dir, spec.resources
    board = results.leaderboard(run_dir)
    exported = results.export_run(run_dir)
    report = None
    best = results.best_trial(run_dir)
    if best["checkpoint_path"]:
        wanted = ["dev"] + (["test"] if splits.test is not None else [])
        preds = predict_on_cluster(
            st.entry, best["checkpoint_path"], st.data_ref, wanted, cpus=res.cpus, gpus=res.gpus, storage=st.remote
        )
        for split_name in wanted:
            ds = getattr(splits, split_name)
            frame = results.write_evaluation(
                run_dir, splits.label_names, split_name, ds.texts, ds.labels, preds[split_name][0]
            )
            if split_name == "test":
                report = frame
                results.write_seed_report(run_dir, splits.label_names, ds.labels, preds[split_name][0])
    results.write_report(run_dir)
    return RunSummary(run_dir, board, exported["best_config"], report, 0.0, st.remote)


def run_range_test(
    spec: JobSpec, *, address: str | None = None, verbose: bool = False, run_id: str | None = None
) -> tuple[Path, dict]:
    """``kind: lr_range_test``: one run, lr raised exponentially; returns (run folder, suggestion)."""
    st = _start(spec, address=address, verbose=verbose, run_id=run_id)
    rt = spec.range_test
    rows = range_test_on_cluster(
        st.entry, spec.constants, st.data_ref, rt.model_dump(), cpus=spec.resources.cpus, gpus=spec.resources.gpus
    )
    suggestion = results.write_range_test(st.run_dir, rows, lr_max=rt.lr_max)
    if st.remote:
        results.upload_run(st.run_dir, st.remote)
    return st.run_dir, suggestion
