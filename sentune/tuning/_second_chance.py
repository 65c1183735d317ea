"""Second chances (``scheduler: {type: asha, second_chance: {budget: b}}``): after the sweep and before the
confirmation runs, with up to ``b`` times the epochs early stopping saved, the trials ASHA stopped whose
forecast's upper bound beats the best go on from their resume checkpoints, most promising first, through the
same scheduler rules: one Tuner whose ASHA is rebuilt from the record (as a resumed sweep's is), so each
revived trial is judged at every rung it reaches against every trial's value there, one rung at a time, and
a budget stopper ends them once the budget is spent. Their rows continue the same trials (the record keeps
them under their ids; no epoch twice); the trial table says from which epoch each went on (``revived_from``)."""

from __future__ import annotations

import math
from typing import Any

from sentune._log import log_line
from sentune.tuning._callback import AllStoppers, BudgetStopper, RecordCallback
from sentune.tuning._plan import SweepPlan
from sentune.tuning._scheduling import sweep_scheduler
from sentune.tuning._signals import sigterm_as_sigint
from sentune.tuning._trial import REVIVE, revive_mark
from sentune.tuning._tuner import build_tuner

__all__ = ["candidates", "rung_milestones", "second_chances"]

CUT_AGAIN = "second_chance"  # the stop reason of a revived trial ASHA cut again
_SEARCHED = ("sampled", "baseline", "warm_start")


def rung_milestones(max_t: int, grace_period: int, reduction_factor: float) -> list[int]:
    """The epochs at which ASHA judges trials (grace, grace x eta, ... below max_t), and max_t."""
    out, t = [], float(grace_period)
    while t < max_t:
        out.append(int(t))
        t *= reduction_factor
    return sorted({*out, max_t})


def _budget(plan: SweepPlan, recorder, cut: list[str]) -> int:
    """The share of the epochs early stopping saved (each cut trial's epochs left up to max_t) they may train."""
    spec = plan.spec
    max_t = spec.scheduler.max_t or spec.epochs_max
    rows = recorder.trials
    saved = sum(max(0, min(int(rows[t]["epochs_max"]), max_t) - int(rows[t]["epochs_run"] or 0)) for t in cut)
    assert spec.scheduler.second_chance is not None
    return int(spec.scheduler.second_chance.budget * saved)


def candidates(plan: SweepPlan, recorder) -> list[str]:
    """The trials ASHA stopped whose last forecast's upper bound (lower, for a ``min`` metric) beats the best
    peak of the sweep, most promising (best forecast) first."""
    sign = 1.0 if plan.spec.scheduler.direction.mode == "max" else -1.0
    rows = recorder.trials
    searched = [t for t, r in rows.items() if r.get("role") in _SEARCHED]
    best = max((sign * float(rows[t]["peak_metric"]) for t in searched if rows[t].get("peak_metric") is not None),
               default=-math.inf)  # fmt: skip
    scored = []
    for tid in searched:
        if rows[tid]["status"] != "stopped_early" or rows[tid].get("stop_reason") != "scheduler":
            continue
        last = (recorder.rows_of(tid) or [{}])[-1]
        bound, value = last.get("forecast_high" if sign > 0 else "forecast_low"), last.get("forecast")
        if bound is not None and value is not None and sign * float(bound) > best:
            scored.append((sign * float(value), tid))
    return [tid for _, tid in sorted(scored, reverse=True)]


def second_chances(plan: SweepPlan, recorder, driver: Any, trackers: list) -> dict | None:
    """Give the stopped trials that could still win their second chances (see the module); returns the budget,
    the epochs spent and who went on from which epoch to which (run.json keeps it), or None without
    ``second_chance``."""
    if plan.spec.scheduler.second_chance is None:
        return None
    from ray.tune.logger import JsonLoggerCallback

    cut = [t for t, r in recorder.trials.items() if r.get("role") in _SEARCHED and r.get("stop_reason") == "scheduler"]
    budget, chosen = _budget(plan, recorder, cut), candidates(plan, recorder)
    before = {t: int(recorder.trials[t]["epochs_run"] or 0) for t in chosen}
    if chosen and budget > 0:
        log_line(f"second chances: {len(chosen)} stopped trials may still win; up to {budget} epochs")
        epochs = recorder.recorded_epochs()
        spend = BudgetStopper(len(epochs) + budget, epochs)
        points = [{**recorder.config_of(t), REVIVE: revive_mark(t, before[t], int(recorder.trials[t]["epochs_max"]))}
                  for t in chosen]  # fmt: skip
        callbacks = [RecordCallback(recorder, budget=spend), JsonLoggerCallback(), *trackers]
        tuner = build_tuner(plan, driver, callbacks=callbacks, scheduler=sweep_scheduler(plan, recorder, replay=True),
                            stop=AllStoppers(spend), confirm_points=points, name="second-chance")  # fmt: skip
        with sigterm_as_sigint(), plan.folder.heartbeat():
            tuner.fit()
    went = {}
    for tid, start in before.items():
        row = recorder.trials[tid]
        if int(row["epochs_run"] or 0) > start:
            cut_again = row.get("stop_reason") == "scheduler" and row["status"] == "stopped_early"
            recorder.annotate(tid, revived_from=start, **({"stop_reason": CUT_AGAIN} if cut_again else {}))
            went[tid] = {"from_epoch": start, "to_epoch": int(row["epochs_run"]), "peak": row.get("peak_metric")}
    recorder.close()
    spent = sum(w["to_epoch"] - w["from_epoch"] for w in went.values())
    log_line(f"second chances: {len(went)} trials went on, {spent} of {budget} epochs")
    return {"budget_epochs": budget, "spent_epochs": spent, "revived": went}
