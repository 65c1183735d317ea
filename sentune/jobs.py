"""Job spec -> Tuner: prepare the data once, run the sweep on Ray, aggregate, evaluate, export."""

from __future__ import annotations

import datetime as _dt
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sentune import results
from sentune._yaml import read_yaml
from sentune.data import DataConfig, load_splits
from sentune.errors import ConfigError, SentuneError
from sentune.search import Domain, make_scheduler, make_search_alg, to_tune
from sentune.spec import JobSpec
from sentune.trainables._registry import get_trainable

__all__ = ["RunSummary", "init_ray", "run_job", "run_range_test", "train_alone", "load_train_config"]


@dataclass
class RunSummary:
    run_dir: Path
    leaderboard: pd.DataFrame
    best_config_path: Path | None
    test_report: pd.DataFrame | None
    wall_seconds: float
    remote: str | None = None  # where the run folder was uploaded, for a URI storage_path


def init_ray(address: str | None = None, *, num_cpus: int | None = None, verbose: bool = False):
    """Connect to ``address`` (or ``RAY_ADDRESS``), or start the embedded local Ray (dashboard on loopback)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # A job submitted through the Jobs API runs with RAY_ADDRESS set: join that cluster. Otherwise start
    # the embedded one ("local": never attach to a stray `ray start` cluster on this machine by accident).
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs = {"address": address} if address else {"address": "local"}
    env = {}
    if not address:  # the dashboard also serves the State API that Ray Train uses to clean up stopped trials
        port = _free_port()
        kwargs.update(include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port, num_cpus=num_cpus)
        # Ray Train's workers call the State API without an address; with a second Ray on this machine it
        # cannot tell which one is theirs ("Found multiple active Ray instances") and stopped trials hang.
        env["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    # Ray Train's controller collects worker reports when it polls them (every 2 s by default), which
    # adds ~2 s to every epoch of a small model; poll faster.
    env |= {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2"),
           # the dashboard's Train view lists each trial's run (named <job>-<trial id>) with its actors
           "RAY_TRAIN_ENABLE_STATE_TRACKING": os.environ.get("RAY_TRAIN_ENABLE_STATE_TRACKING", "1")}
    ray.init(**kwargs, runtime_env={"env_vars": env}, log_to_driver=verbose, configure_logging=True,
             logging_level="WARNING")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _max_concurrent(spec: JobSpec) -> int:
    import ray

    if spec.resources.max_concurrent_trials:
        return spec.resources.max_concurrent_trials
    res = spec.resources
    total = ray.cluster_resources()
    by_cpu = total.get("CPU", 1) // (res.cpus * res.workers_per_trial)
    by_gpu = total.get("GPU", 0) // (res.gpus * res.workers_per_trial) if res.gpus else math.inf
    return max(1, int(min(by_cpu, by_gpu)))


@dataclass
class _Started:
    info: object
    splits: object
    run_dir: Path
    run_id: str
    data_ref: object
    constants: dict
    remote: str | None = None  # the run folder behind a URI, when storage_path is one


def _start(spec: JobSpec, *, address, echo, verbose, run_id) -> _Started:
    """Read and check the data (before Ray starts), open the run folder, prepare the data once on Ray."""
    info = get_trainable(spec.trainable)
    splits = load_splits(spec.data)
    values = {k: list(v.extremes()) if isinstance(v, Domain) else [v] for k, v in spec.space.items()}
    try:
        info.load().check_data(values, splits.train.class_counts())
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
    results.write_run_info(run_dir, {
        "job": spec.name, "kind": spec.kind, "run_id": run_id, "trainable": spec.trainable,
        "metric": spec.scheduler.metric, "mode": spec.scheduler.resolved_mode,
        "label_names": splits.label_names, "tuned_params": [k for k, v in spec.space.items() if isinstance(v, Domain)],
        "data": spec.data.resolved().model_dump(mode="json", exclude_defaults=True),
        "sizes": {"train": len(splits.train), "dev": len(splits.dev), "test": len(splits.test) if splits.test else 0},
        "spec": spec.model_dump(mode="json"),
    })
    if echo:
        where = f"{run_dir} (uploaded to {remote} at the end)" if remote else str(run_dir)
        print(f"[sentune] job {spec.name}: {spec.trainable} on {len(splits.train)}/{len(splits.dev)}/"
              f"{len(splits.test) if splits.test else 0} train/dev/test rows, {len(splits.label_names)} classes; "
              f"results -> {where}", flush=True)
    init_ray(address, verbose=verbose)
    import ray

    from sentune.trainables._ray import prepare_on_cluster

    constants = {k: v for k, v in spec.space.items() if not isinstance(v, Domain)}
    t0 = time.perf_counter()
    data_ref = prepare_on_cluster(info, constants, splits, cpus=spec.resources.cpus, gpus=spec.resources.gpus)
    try:  # a backbone that fails to load fails the job here, once, not every trial
        ray.get(data_ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.as_instanceof_cause()
        raise SentuneError(f"preparing the data failed: {type(cause).__name__}: {str(cause).strip().splitlines()[-1]}") from None
    if echo:
        print(f"[sentune] data prepared once in {time.perf_counter() - t0:.1f} s (shared through the object store)", flush=True)
    return _Started(info, splits, run_dir, run_id, data_ref, constants, remote)


def run_job(spec: JobSpec, *, address: str | None = None, echo: bool = True, verbose: bool = False,
            run_id: str | None = None) -> RunSummary:
    """Run a validated tune job on Ray (the embedded local Ray unless ``address`` is given)."""
    if spec.kind != "tune":
        raise ConfigError(f"job {spec.name} is a {spec.kind}; use run_range_test")
    t_start = time.perf_counter()
    st = _start(spec, address=address, echo=echo, verbose=verbose, run_id=run_id)
    info, splits, run_dir, run_id, data_ref = st.info, st.splits, st.run_dir, st.run_id, st.data_ref
    metric, mode = spec.scheduler.metric, spec.scheduler.resolved_mode
    res = spec.resources
    from ray import tune

    from sentune.diagnostics import DiagnosticsTracker
    from sentune.results import ParquetResultsCallback
    from sentune.results._callback import DiagnosticsStopper
    from sentune.trainables._ray import make_trial_driver

    concurrent = _max_concurrent(spec)
    ray_storage = st.remote or str(run_dir)
    driver = make_trial_driver(info, data_ref, workers=res.workers_per_trial, cpus=res.cpus, gpus=res.gpus,
                               storage_path=results.join_uri(ray_storage, "train") if st.remote else str(run_dir / "train"),
                               job=spec.name)
    max_t = spec.scheduler.max_t or spec.epochs_max
    tracker = DiagnosticsTracker(spec.diagnostics, splits.dev.class_counts().tolist(), splits.label_names)
    callback = ParquetResultsCallback(run_dir, job=spec.name, run_id=run_id, metric=metric, mode=mode,
                                      max_epochs=spec.epochs_max, tracker=tracker, echo=echo)
    tuner = tune.Tuner(
        tune.with_resources(driver, {"memory": 64 * 1024 * 1024}),  # the trial driver only waits on its workers
        param_space=to_tune(spec.space),
        tune_config=tune.TuneConfig(
            metric=metric, mode=mode, num_samples=spec.num_samples,  # the search algorithm caps concurrency
            scheduler=make_scheduler(spec.scheduler.type, max_t=max_t, grace_period=spec.scheduler.grace_period,
                                     reduction_factor=spec.scheduler.reduction_factor),
            search_alg=make_search_alg(spec.search.algorithm, spec.space, seed=spec.seed, metric=metric, mode=mode,
                                       max_concurrent=concurrent),
            trial_name_creator=lambda t: f"{spec.name}-{t.trial_id}",
        ),
        run_config=tune.RunConfig(
            name="tune", storage_path=ray_storage, callbacks=[callback], stop=DiagnosticsStopper(tracker),
            failure_config=tune.FailureConfig(max_failures=1), verbose=0,
        ),
    )
    try:
        tuner.fit()
        summary = _finish(spec, st, res)
    finally:
        if st.remote:
            results.upload_run(run_dir, st.remote)
    summary.wall_seconds = time.perf_counter() - t_start
    return summary


def _finish(spec: JobSpec, st: _Started, res) -> RunSummary:
    """Leaderboard, best config, the best checkpoint on dev and test, report.html."""
    from sentune.trainables._ray import predict_on_cluster

    info, splits, run_dir, data_ref = st.info, st.splits, st.run_dir, st.data_ref
    board = results.leaderboard(run_dir)
    exported = results.export_run(run_dir)
    report = None
    best = results.best_trial(run_dir)
    if best["checkpoint_path"]:
        wanted = ["dev"] + (["test"] if splits.test is not None else [])
        preds = predict_on_cluster(info, best["checkpoint_path"], data_ref, wanted, cpus=res.cpus, gpus=res.gpus,
                                   storage=st.remote)
        for split_name in wanted:
            ds = getattr(splits, split_name)
            frame = results.write_evaluation(run_dir, splits.label_names, split_name, ds.texts, ds.labels,
                                             preds[split_name][0])
            if split_name == "test":
                report = frame
                results.write_seed_report(run_dir, splits.label_names, ds.labels, preds[split_name][0])
    results.write_report(run_dir)
    return RunSummary(run_dir, board, exported["best_config"], report, 0.0, st.remote)


def run_range_test(spec: JobSpec, *, address: str | None = None, echo: bool = True, verbose: bool = False,
                   run_id: str | None = None) -> tuple[Path, dict]:
    """``kind: lr_range_test``: one run, lr raised exponentially; returns (run folder, suggestion)."""
    st = _start(spec, address=address, echo=echo, verbose=verbose, run_id=run_id)
    from sentune.trainables._ray import range_test_on_cluster

    rt = spec.range_test
    rows = range_test_on_cluster(st.info, st.constants, st.data_ref, rt.model_dump(), cpus=spec.resources.cpus,
                                 gpus=spec.resources.gpus)
    suggestion = results.write_range_test(st.run_dir, rows, lr_max=rt.lr_max)
    if st.remote:
        results.upload_run(st.run_dir, st.remote)
    return st.run_dir, suggestion


# --------------------------------------------------------------------------- a trainable alone

def load_train_config(path: str | Path) -> tuple[str, DataConfig, dict]:
    """Read a best_config.yaml (or any {trainable, data, params} file)."""
    raw = read_yaml(path, "config file") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping")
    unknown = set(raw) - {"trainable", "data", "params", "source"}
    if unknown:
        raise ConfigError(f"{path}: unknown key {sorted(unknown)[0]}")
    if "trainable" not in raw or "data" not in raw:
        raise ConfigError(f"{path}: needs 'trainable' and 'data'")
    info = get_trainable(raw["trainable"])
    from pydantic import ValidationError

    try:
        data = DataConfig(**raw["data"])
        info.params_model(**(raw.get("params") or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{path}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    return raw["trainable"], data, dict(raw.get("params") or {})


def train_alone(trainable: str, data: DataConfig, params: dict, *, echo: bool = True):
    """Run a trainable's loop once, without Ray; returns its FitResult."""
    info = get_trainable(trainable)
    mod = info.load()
    p = info.params_model(**params)
    splits = load_splits(data)
    prepared = mod.prepare(p, splits)

    def report(metrics, save):
        if echo:
            print(f"epoch {metrics['epoch']:>3}  train_loss={metrics['train_loss']:.4f}  val_loss={metrics['val_loss']:.4f}  "
                  f"val_acc={metrics['val_acc']:.4f}  val_macro_f1={metrics['val_macro_f1']:.4f}", flush=True)

    return mod.fit(p, prepared, mod.LoopContext(report=report))
