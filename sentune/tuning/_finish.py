"""How a finished sweep ends: the reference model, the best checkpoint (and the best baseline's) evaluated on
dev and test, the leaderboard, best config, budget and report.html; the trackers' logger callbacks and the
best trial's MLflow tag."""

from __future__ import annotations

import concurrent.futures
import os
import time
from typing import Any

from sentune import results
from sentune._log import log_line
from sentune.spec import JobSpec
from sentune.tuning._plan import RunSummary, SweepPlan
from sentune.tuning._tasks import predict_on_cluster

__all__ = ["finish", "tag_best", "trackers"]


def _evaluate(plan: SweepPlan, tag: str, row: Any, evaluations: dict, evaluator: Any = None) -> Any:
    """Evaluate one trial's best checkpoint on dev (and test); the best's predictions and test report are
    written. Returns the test report of the best (else None)."""
    splits, res = plan.splits, plan.spec.resources
    wanted = ["dev"] + (["test"] if splits.test is not None else [])
    preds = predict_on_cluster(
        plan.entry, row["checkpoint_path"], plan.data_ref, wanted, cpus=res.cpus, gpus=res.gpus,
        storage=plan.folder.remote, evaluator=evaluator,
    )  # fmt: skip
    entry: dict = {"trial_id": str(row.name), "row": str(row.get("confirm_of") or row.name)}
    report = None
    for split_name in wanted:
        ds = getattr(splits, split_name)
        probs = preds[split_name][0]
        if tag == "best":
            frame = results.write_predictions(plan.run_dir, splits.label_names, split_name, ds.texts, ds.labels, probs)
            if split_name == "test":
                report = frame
                results.write_training_report(plan.run_dir, splits.label_names, ds.labels, probs)
        entry[split_name] = results.split_figures(ds.labels, probs)
    entry["dev"]["score"] = float(row["peak_metric"])
    evaluations[tag] = entry
    return report


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _reference(plan: SweepPlan) -> None:
    if plan.spec.reference:
        from sentune.reference import fit_reference

        ref = fit_reference(plan.splits, seed=plan.spec.seed)
        results.write_reference(plan.run_dir, ref)
        log_line(f"reference {ref['model']}: dev macro-F1 {ref['dev']['macro_f1']:.4f} ({ref['seconds']:.1f} s)")


def finish(plan: SweepPlan, evaluator: Any = None) -> RunSummary:
    """The reference model, leaderboard, best config, the best checkpoint (and the best baseline's) on dev
    and test (in the warm ``evaluator`` when there is one), the budget, report.html."""
    run_dir = plan.run_dir
    clock = [time.perf_counter()]
    parts: dict[str, float] = {}

    def lap(name: str) -> None:
        now = time.perf_counter()
        parts[f"{name}_s"], clock[0] = now - clock[0], now

    # the reference model (scikit-learn, in this process) fits while the checkpoints are evaluated elsewhere
    reference = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sentune-reference")
    fitted = reference.submit(_timed, _reference, plan)
    view = results.RunView.load(run_dir)  # the run read once: the evaluations below then refresh it
    best, base = view.best_trial, view.best_baseline
    report, evaluations = None, dict[str, dict]()
    for tag, row in (("best", best), ("best_baseline", base)):
        if row is None or not row["checkpoint_path"]:
            continue
        if tag == "best_baseline" and row.name == best.name:
            evaluations[tag] = evaluations["best"]
            continue
        test_report = _evaluate(plan, tag, row, evaluations, evaluator)
        report = test_report if tag == "best" else report
    results.write_evaluations(run_dir, evaluations)
    lap("evaluate")
    fit_s = fitted.result()
    reference.shutdown()
    lap("reference")  # what the reference model added after the evaluation (it fitted alongside it)
    parts["reference_fit_s"] = fit_s
    view = view.refreshed()
    exported = results.export_run(view)
    spent = view.budget
    plan.folder.set_status("running", budget=spent)
    lap("export")
    found = results.write_importance(view)
    lap("importance")
    results.write_report(view)
    lap("report")
    summary = RunSummary(run_dir, view.leaderboard_with_reference, exported["best_config"], report, 0.0,
                         plan.folder.remote)  # fmt: skip
    summary.budget = results.format_budget(spent)
    summary.comparison = results.comparison_line(view)
    summary.test_figures = view.test_figures
    summary.importance = results.importance_line(found)
    summary.ended = results.study_stop_line(view.info)
    summary.second_chances = results.second_chance_line(view.info)
    summary.timings = parts  # the finish's parts: evaluate_s, reference_s, export_s, report_s (and reference_fit_s)
    return summary


def trackers(spec: JobSpec, run_id: str) -> list:
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


def tag_best(spec: JobSpec, run_dir) -> None:
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


def wall_clock(t_start: float, plan: SweepPlan) -> float:
    """This session's time so far, plus what earlier sessions of the run took."""
    return round(time.perf_counter() - t_start + plan.earlier_seconds, 1)
