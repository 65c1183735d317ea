"""The Tune callback (on the driver) that feeds the run's record, and the diagnostics stopper."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

from ray.tune import Callback, Stopper

from sentune._progress import SweepProgress
from sentune.diagnostics import DiagnosticsTracker
from sentune.results import RunRecorder
from sentune.tuning._trial import revived

__all__ = [
    "AllStoppers", "BudgetStopper", "DiagnosticsStopper", "RecordCallback", "StudyStopper",
    "TrialRoles",
]  # fmt: skip


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


class TrialRoles:
    """Which started trial is which of the configs the job named (its baselines, the confirmation runs):
    ``wanted`` is (values, marks) pairs; the first trial whose config has all of a pair's values takes
    its marks (the search algorithm starts them first). ``taken``: indexes claimed already (a resumed run)."""

    def __init__(self, wanted: list[tuple[dict, dict]], taken: Iterable[int] = ()):
        self.wanted, self.taken = list(wanted), set(taken)

    def claim(self, config: dict) -> dict:
        for i, (values, marks) in enumerate(self.wanted):
            if i not in self.taken and all(_same(config.get(k), v) for k, v in values.items()):
                self.taken.add(i)
                return dict(marks)
        return {}


class RecordCallback(Callback):
    """Hands every trial event to a :class:`~sentune.results.RunRecorder` and to what the user sees of the
    sweep (a :class:`~sentune._progress.SweepProgress`)."""

    def __init__(
        self,
        recorder: RunRecorder,
        *,
        progress: SweepProgress | None = None,
        on_finished: Callable[[str, str], None] | None = None,
        roles: TrialRoles | None = None,
        budget: BudgetStopper | None = None,
        study: StudyStopper | None = None,
    ):
        self.recorder = recorder
        self.study = study  # told of every trial's end; once it has ended the sweep, trials ending were cut
        self.roles = roles
        self.budget = budget  # once spent, a trial that ends early was stopped by it
        self.progress = progress or SweepProgress("quiet")
        self.on_finished = on_finished  # (trial id, status) once a trial has ended without error
        self.end_reason: str | None = None  # why a trial that ends before its epochs stopped (None: the scheduler)

    def on_trial_start(self, iteration, trials, trial, **info):
        trial_id, config = revived(trial.trial_id, trial.config)
        marks = {}
        if self.roles is not None and trial_id not in self.recorder.trials:
            marks = self.roles.claim(config)
        self.recorder.trial(trial_id, config, **marks)
        self.progress.trial_started(trial_id, config)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        # the config the trial trained with (its own): the scheduler has already run, and PBT may have
        # given the trial its next config
        trial_id, config = revived(trial.trial_id, result.get("config") or trial.config)
        row = self.recorder.result(trial_id, config, result)
        raised = [k[5:] for k in ("diag_nan", "diag_collapse", "diag_stagnation", "diag_grad_spike") if row.get(k)]
        if row.get("diag_overfit", "none") != "none":
            raised.append(f"overfit:{row['diag_overfit']}")
        self.progress.result(trial_id, config, row, raised)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        """A one-worker trial's checkpoint reaches Tune itself (a worker group's comes as checkpoint_path)."""
        self.recorder.checkpoint(revived(trial.trial_id, trial.config)[0], checkpoint.path)

    def on_trial_complete(self, iteration, trials, trial, **info):
        trial_id, config = revived(trial.trial_id, trial.config)
        spent = self.budget is not None and self.budget.spent
        study = self.study is not None and self.study.spent
        reason = "budget" if spent else "study" if study else self.end_reason
        row = self.recorder.completed(trial_id, config, reason=reason)
        if self.study is not None and reason is None:
            self.study.trial_ended(row.get("peak_metric"))
        self.progress.trial_ended(trial_id, row["status"])
        if self.on_finished is not None:
            self.on_finished(trial_id, row["status"])

    def on_trial_error(self, iteration, trials, trial, **info):
        trial_id, config = revived(trial.trial_id, trial.config)
        self.recorder.errored(trial_id, config, str(getattr(trial, "error_file", "") or ""))
        self.progress.trial_ended(trial_id, "errored")

    def on_experiment_end(self, trials, **info):
        self.recorder.close()


class DiagnosticsStopper(Stopper):
    """Stops a trial when the job's ``diagnostics.stop_on`` says so (NaN loss, lasting collapse)."""

    def __init__(self, tracker: DiagnosticsTracker):
        self.tracker = tracker

    def __call__(self, trial_id, result):
        if "val_macro_f1" not in result:
            return False
        return self.tracker.update(trial_id, result)["diag_stop"] is not None

    def stop_all(self):
        return False


class BudgetStopper(Stopper):
    """Ends the sweep once its trials have trained ``max_epochs`` epochs in total (``seen``: the (trial id,
    epoch) pairs trained already, a resumed run's). Each (trial, epoch) counts once (Tune repeats a trial's
    last result when it ends). A trial whose epoch reaches the budget stops at once; ones still running stop
    at their next result (so the total can exceed the budget by the trials running at once, less one)."""

    def __init__(self, max_epochs: int | None, seen: Iterable[tuple[str, int]] = ()):
        self.max_epochs, self.seen = max_epochs, set(seen)

    @property
    def epochs(self) -> int:
        return len(self.seen)

    @property
    def spent(self) -> bool:
        return self.max_epochs is not None and self.epochs >= self.max_epochs

    def __call__(self, trial_id, result):
        if self.max_epochs is None or "epoch" not in result:
            return False
        if not self.spent:
            self.seen.add((trial_id, int(result["epoch"])))
        return self.spent

    def stop_all(self):
        return self.spent


class StudyStopper(Stopper):
    """Ends the sweep by the job's ``stop:`` block: ``patience_trials`` trials in a row ended without beating
    the best by ``min_improvement``, ``max_wall_seconds`` passed (``earlier_seconds``: a resumed run's), or a
    result reached ``target``. ``reason`` says which, once one did. ``peaks``: the peaks of the trials that
    ended already, in the order they ended (a resumed run's)."""

    def __init__(self, config, *, metric: str, mode: str, peaks: Iterable[float | None] = (),
                 earlier_seconds: float = 0.0):  # fmt: skip
        self.config, self.metric, self.sign = config, metric, 1.0 if mode == "max" else -1.0
        self.best: float | None = None
        self.without_gain = 0
        self.reason: str | None = None
        self.started = time.monotonic() - earlier_seconds
        for peak in peaks:
            self.trial_ended(peak)

    @property
    def spent(self) -> bool:
        return self.reason is not None

    def trial_ended(self, peak: float | None) -> None:
        """A trial ended (not cut by a stop): did it beat the best by the least improvement asked?"""
        patience = self.config.patience_trials
        value = None if peak is None or not math.isfinite(float(peak)) else self.sign * float(peak)
        if value is not None and (self.best is None or value > self.best + self.config.min_improvement):
            self.best, self.without_gain = value, 0
        else:
            self.without_gain += 1
        if patience is not None and self.without_gain >= patience and self.reason is None:
            self.reason = f"{patience} trials in a row without beating the best by {self.config.min_improvement:g}"

    def __call__(self, trial_id, result):
        target, value = self.config.target, result.get(self.metric)
        if self.reason is None and target is not None and isinstance(value, (int, float)) and math.isfinite(value):
            if self.sign * float(value) >= self.sign * target:
                self.reason = f"a trial reached the target {self.metric} {target:g}"
        return self.stop_all()

    def stop_all(self):
        limit = self.config.max_wall_seconds
        if self.reason is None and limit is not None and time.monotonic() - self.started >= limit:
            self.reason = f"{limit:g} s of wall time passed"
        return self.reason is not None


class AllStoppers(Stopper):
    """Every stopper sees every result (Ray's CombinedStopper stops asking at the first that says stop)."""

    def __init__(self, *stoppers: Stopper):
        self.stoppers = stoppers

    def __call__(self, trial_id, result):
        return any([s(trial_id, result) for s in self.stoppers])

    def stop_all(self):
        return any(s.stop_all() for s in self.stoppers)
