"""Second chances (``scheduler: {type: asha, second_chance: {budget: b}}``): after the sweep and before the
confirmation runs, with up to ``b`` times the epochs early stopping saved, the trials ASHA stopped whose
forecast's upper bound beats the best go on from their resume checkpoints, most promising first, one rung at
a time: each trains to its next rung milestone and is judged there by ASHA's rule against every trial's value
at that rung (the top ``1 / reduction_factor`` go on). Their rows continue the same trials (the record keeps
them under their ids; no epoch twice); the trial table says from which epoch each went on (``revived_from``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sentune._log import log_line
from sentune.tuning._callback import RecordCallback
from sentune.tuning._plan import SweepPlan
from sentune.tuning._signals import sigterm_as_sigint
from sentune.tuning._trial import REVIVE, revive_mark
from sentune.tuning._tuner import build_tuner

__all__ = ["rung_milestones", "second_chances"]

CUT_AGAIN = "second_chance"  # the stop reason of a revived trial a rung cut again
_SEARCHED = ("sampled", "baseline", "warm_start")


def rung_milestones(max_t: int, grace_period: int, reduction_factor: float) -> list[int]:
    """The epochs at which ASHA judges trials (grace, grace x eta, ... below max_t), and max_t."""
    out, t = [], float(grace_period)
    while t < max_t:
        out.append(int(t))
        t *= reduction_factor
    return sorted({*out, max_t})


class _Chances:
    """What the second chances know between rounds: the budget, the epochs spent, the trials still in play."""

    def __init__(self, plan: SweepPlan, recorder):
        spec = plan.spec
        self.recorder, self.sign = recorder, 1.0 if spec.scheduler.direction.mode == "max" else -1.0
        self.max_t = spec.scheduler.max_t or spec.epochs_max
        self.milestones = rung_milestones(self.max_t, spec.scheduler.grace_period, spec.scheduler.reduction_factor)
        self.eta = spec.scheduler.reduction_factor
        self.key = "forecast" if spec.scheduler.promote_on == "forecast" else spec.scheduler.metric
        cut = [t for t, row in recorder.trials.items() if row.get("role") in _SEARCHED
               and row["status"] == "stopped_early" and row.get("stop_reason") == "scheduler"]  # fmt: skip
        saved = sum(max(0, min(int(recorder.trials[t]["epochs_max"]), self.max_t) - self._epochs(t)) for t in cut)
        assert spec.scheduler.second_chance is not None
        self.budget = int(spec.scheduler.second_chance.budget * saved)
        self.spent, self.in_play = 0, set(cut)
        self.revived: dict[str, int] = {}  # trial -> the epoch it went on from

    def _epochs(self, trial_id: str) -> int:
        return int(self.recorder.trials[trial_id]["epochs_run"] or 0)

    def best(self) -> float:
        peaks = [r["peak_metric"] for r in self.recorder.trials.values()
                 if r.get("role") in _SEARCHED and r.get("peak_metric") is not None]  # fmt: skip
        return max((self.sign * float(p) for p in peaks), default=-math.inf)

    def promising(self) -> list[tuple[str, int]]:
        """(trial, the rung it trains to) of the trials in play whose forecast's upper bound beats the best,
        most promising first, as far as the budget goes."""
        best, scored = self.best(), []
        for tid in self.in_play:
            last = (self.recorder.rows_of(tid) or [{}])[-1]
            high = last.get("forecast_high" if self.sign > 0 else "forecast_low")
            value = last.get("forecast")
            if high is not None and value is not None and self.sign * float(high) > best:
                scored.append((self.sign * float(value), tid))
        wave = []
        for _, tid in sorted(scored, reverse=True):
            done = self._epochs(tid)
            rung = next((m for m in self.milestones if m > done), None)
            if rung is not None and self.spent + rung - done <= self.budget:
                wave.append((tid, rung))
                self.spent += rung - done
        return wave

    def judge(self, wave: list[tuple[str, int]]) -> None:
        """After a round: a trial that reached max_t is done; one a rung cuts again leaves play."""
        for tid, rung in wave:
            rows = {int(r["epoch"]): r for r in self.recorder.rows_of(tid)}
            mine = rows.get(rung, {}).get(self.key)
            if rung >= self.max_t or mine is None or not self._kept(rung, float(mine)):
                self.in_play.discard(tid)
                if rung < self.max_t:
                    self.recorder.annotate(tid, stop_reason=CUT_AGAIN)

    def _kept(self, rung: int, value: float) -> bool:
        """ASHA's rule at a rung: within the top 1/eta of every trial's value there."""
        values = [self.sign * float(r[self.key]) for rs in self.recorder.rows.values() for r in rs
                  if int(r["epoch"]) == rung and r.get(self.key) is not None]  # fmt: skip
        if len(values) < 2:
            return True
        return self.sign * value >= float(np.nanpercentile(values, (1 - 1 / self.eta) * 100))


def _round(plan: SweepPlan, recorder, driver: Any, trackers: list, wave: list[tuple[str, int]], number: int) -> None:
    """Train each trial of ``wave`` from its resume checkpoint to its rung, in one FIFO Tuner."""
    from ray.tune.logger import JsonLoggerCallback

    from sentune.tuning._schedulers import ResumableFIFO

    points = [{**recorder.config_of(tid), REVIVE: revive_mark(tid, rung)} for tid, rung in wave]
    record = RecordCallback(recorder)
    record.end_reason = "scheduler"  # a trial that stops at its rung waits for the judgement: cut by ASHA so far
    tuner = build_tuner(plan, driver, callbacks=[record, JsonLoggerCallback(), *trackers], scheduler=ResumableFIFO(),
                        confirm_points=points, name=f"second-chance-{number}")  # fmt: skip
    with sigterm_as_sigint(), plan.folder.heartbeat():
        tuner.fit()


def second_chances(plan: SweepPlan, recorder, driver: Any, trackers: list) -> dict | None:
    """Give the stopped trials that could still win their second chances (see the module); returns what was
    spent and who went on (written to run.json by the caller), or None without ``second_chance``."""
    if plan.spec.scheduler.second_chance is None:
        return None
    chances = _Chances(plan, recorder)
    number = 0
    while wave := chances.promising():
        number += 1
        for tid, _ in wave:
            chances.revived.setdefault(tid, chances._epochs(tid))
        log_line(f"second chances, round {number}: {', '.join(f'{t} to epoch {r}' for t, r in wave)}")
        _round(plan, recorder, driver, trackers, wave, number)
        chances.judge(wave)
    for tid, start in chances.revived.items():
        recorder.annotate(tid, revived_from=start)
    recorder.close()
    went = {t: {"from_epoch": s, "to_epoch": chances._epochs(t), "peak": recorder.trials[t].get("peak_metric")}
            for t, s in chances.revived.items()}  # fmt: skip
    out = {"budget_epochs": chances.budget, "spent_epochs": chances.spent, "rounds": number, "revived": went}
    log_line(f"second chances: {len(chances.revived)} trials went on, {chances.spent} of {chances.budget} epochs")
    return out
