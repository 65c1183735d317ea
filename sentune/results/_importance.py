"""Which tuned options explain the monitored metric, from a run's own record: Optuna's importance evaluators
(fANOVA, seeded, and PED-ANOVA) fed with the sampled trials as completed Optuna trials.

Trials that early stopping cut count at the epochs they reached: the importance is computed at the first rung
every trial reached (each trial's best metric up to that epoch), and again over the trials that ran to the
end, when there are enough of them. With fewer trials than :data:`MIN_TRIALS`, or one tuned option, it says
so instead of printing noise. Written to ``importance.json``; one line under the leaderboard."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from sentune.results._layout import (
    IMPORTANCE,
    ROLE_BASELINE,
    ROLE_SAMPLED,
    ROLE_WARM_START,
    STATUS_COMPLETED,
    STATUS_ERRORED,
)
from sentune.results._store import write_text
from sentune.results._view import RunLike, RunView

__all__ = ["MIN_TRIALS", "importance", "importance_line", "read_importance", "write_importance"]

MIN_TRIALS = 8  # fewer sampled trials than this: the forest or the quantile split is noise
_ROLES = (ROLE_SAMPLED, ROLE_BASELINE, ROLE_WARM_START)  # the search's own trials (not confirmation re-runs)


def _distribution(name: str, domain, values: pd.Series):
    """An Optuna distribution for one tuned option: from the job's domain when it names one, else the values."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kind, bounds = next(iter(domain.items())) if isinstance(domain, dict) and len(domain) == 1 else (None, None)
    numeric = pd.to_numeric(values, errors="coerce")
    if kind in ("loguniform", "uniform", "quniform", "qloguniform") and isinstance(bounds, list):
        lo, hi = float(min(bounds[0], numeric.min())), float(max(bounds[1], numeric.max()))
        return FloatDistribution(lo, hi, log=kind.endswith("loguniform") and lo > 0)
    if kind in ("randint", "qrandint", "lograndint") and isinstance(bounds, list):
        lo, hi = int(min(bounds[0], numeric.min())), int(max(bounds[1], numeric.max()))
        return IntDistribution(lo, max(hi, lo + 1), log=kind == "lograndint" and lo > 0)
    if numeric.notna().all():
        lo, hi = float(numeric.min()), float(numeric.max())
        return FloatDistribution(lo, hi if hi > lo else lo + 1.0, log=lo > 0 and hi / lo > 50)
    return CategoricalDistribution(sorted({str(v) for v in values}))


def _scored_trials(view: RunView) -> tuple[pd.DataFrame, int]:
    """(the search's trials that reported, each with ``at_rung``: its best metric up to the first rung every
    one of them reached; that epoch)."""
    trials = view.trials
    keep = trials[trials.role.isin(_ROLES) & (trials.status != STATUS_ERRORED) & (trials.epochs_run > 0)]
    if "trial_id" in keep:
        keep = keep.set_index("trial_id", drop=False)
    epochs = view.epochs
    if keep.empty or view.metric not in epochs:
        return keep.assign(at_rung=pd.Series(dtype=float)), 0
    rung = int(keep.epochs_run.min())
    early = epochs[epochs.trial_id.isin(keep.index) & (epochs.epoch <= rung)]
    best = (
        early.groupby("trial_id")[view.metric].max()
        if view.mode == "max"
        else early.groupby("trial_id")[view.metric].min()
    )
    return keep.assign(at_rung=best.reindex(keep.index)), rung


def _evaluate(frame: pd.DataFrame, target: str, params: list[str], domains: dict, mode: str) -> dict[str, dict]:
    """{evaluator: {option: importance}} of ``target`` over ``frame``'s trials (an in-memory Optuna study)."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {p: _distribution(p, domains.get(p), frame[f"config/{p}"]) for p in params}
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for _, row in frame.iterrows():
        value = float(row[target])
        if not math.isfinite(value):
            continue
        values = {p: _param_value(dists[p], row[f"config/{p}"]) for p in params}
        study.add_trial(optuna.trial.create_trial(params=values, distributions=dists, value=value))
    out = {}
    evaluators = (("fanova", FanovaImportanceEvaluator(seed=0)), ("ped_anova", PedAnovaImportanceEvaluator()))
    for name, evaluator in evaluators:
        scores = optuna.importance.get_param_importances(study, evaluator=evaluator, params=params)
        out[name] = {p: round(float(v), 4) for p, v in scores.items()}
    return out


def _param_value(dist, value):
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return str(value)
    return int(value) if isinstance(dist, IntDistribution) else float(value)


def _varied(view: RunView, frame: pd.DataFrame) -> list[str]:
    """The tuned options whose values differ between the trials."""
    tuned = [p for p in view.info.get("tuned_params") or [] if f"config/{p}" in frame]
    return [p for p in tuned if frame[f"config/{p}"].astype(str).nunique() > 1]


def importance(run: RunLike) -> dict:
    """The run's parameter importances (see the module): ``at_rung`` (all trials at the first rung every
    trial reached) and ``finished`` (the trials that ran to the end), or a ``note`` saying why not."""
    view = RunView.of(run)
    frame, rung = _scored_trials(view)
    params = _varied(view, frame)
    domains = (view.info.get("spec") or {}).get("search_space") or {}
    domains = domains if isinstance(domains, dict) else {}
    out: dict = {"metric": view.metric, "mode": view.mode, "trials": len(frame), "params": params}
    if len(params) < 2:
        out["note"] = f"importance: {len(params)} tuned option{'s' if len(params) != 1 else ''} varied (2 needed)"
        return out
    if len(frame) < MIN_TRIALS:
        out["note"] = f"importance: needs at least {MIN_TRIALS} trials (this run has {len(frame)})"
        return out
    out["at_rung"] = {"epoch": rung, "trials": len(frame), **_evaluate(frame, "at_rung", params, domains, view.mode)}
    done = frame[(frame.status == STATUS_COMPLETED) & frame.peak_metric.notna()]
    if len(done) >= MIN_TRIALS:
        out["finished"] = {"trials": len(done), **_evaluate(done, "peak_metric", params, domains, view.mode)}
    return out


def importance_line(found: dict) -> str:
    """One line for under the leaderboard: the options by fANOVA importance, or why there is none."""
    if "note" in found:
        return found["note"]
    at = found["at_rung"]
    ranked = ", ".join(f"{p} {v:.2f}" for p, v in at["fanova"].items())
    return f"importance of {found['metric']} (fANOVA, {at['trials']} trials at epoch {at['epoch']}): {ranked}"


def write_importance(run: RunLike) -> dict:
    """Compute the run's importances and write them to ``importance.json``; returns them."""
    view = RunView.of(run)
    found = importance(view)
    write_text(Path(view.run_dir) / IMPORTANCE, json.dumps(found, indent=1))
    return found


def read_importance(run: RunLike) -> dict:
    """``importance.json`` when the run has one (written by its finish), else computed from its record now."""
    view = RunView.of(run)
    path = Path(view.run_dir) / IMPORTANCE
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(found, dict) and ("note" in found or "at_rung" in found):
            return found
    except (OSError, ValueError):
        pass
    return importance(view)
