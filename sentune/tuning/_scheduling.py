"""The sweep's trial scheduler, built from its plan (and, resuming, rebuilt from the record)."""

from __future__ import annotations

from sentune.spec import JobSpec
from sentune.tuning._factories import make_scheduler, to_tune
from sentune.tuning._plan import SweepPlan
from sentune.tuning._reconcile import completed_trials, ended_by_stopper

__all__ = ["sweep_scheduler"]


def _pbt_mutations(spec: JobSpec) -> dict:
    """What PBT resamples each tuned option from: a list for a choice (PBT then moves to a neighbouring
    value, never outside it), Tune's domain for a range (resampled, or the value scaled by 0.8 / 1.2)."""
    out = {}
    for name in spec.tuned:
        dom = spec.space[name]
        out[name] = list(dom.args) if dom.kind == "choice" else to_tune({name: dom})[name]
    return out


def _rung_metric(spec: JobSpec) -> dict | None:
    """``promote_on: forecast``: ASHA's rungs compare each trial's forecast of the metric at max_t (reported with
    every epoch) instead of the metric itself."""
    if spec.scheduler.promote_on != "forecast":
        return None
    return {"metric": "forecast", "mode": spec.scheduler.direction.mode}


def sweep_scheduler(plan: SweepPlan, recorder, *, replay: bool):
    """The job's trial scheduler; ``replay``: rebuilt from the record first (a resumed sweep, an extension,
    the second chances), since ``Tuner.restore`` brings back the searcher's state but not the scheduler's
    (ray#30838)."""
    spec = plan.spec
    scheduler = make_scheduler(
        spec.scheduler.type,
        max_t=spec.scheduler.max_t or spec.epochs_max,
        grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
        mutations=_pbt_mutations(spec),
        perturbation_interval=spec.scheduler.perturbation_interval,
        seed=spec.seed,
        rung_metric=_rung_metric(spec),
    )
    if replay:
        key = "forecast" if spec.scheduler.promote_on == "forecast" else None
        scheduler.replay_later(recorder.replay_rows(key), completed=completed_trials(recorder),
                               ended_by_stopper=ended_by_stopper(recorder))  # fmt: skip
    return scheduler
