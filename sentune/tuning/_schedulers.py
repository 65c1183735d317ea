"""Tune's schedulers as a resumed sweep needs them: ``Tuner.restore`` brings back the searcher's state but
not the scheduler's (ray#30838), so each one here can rebuild its state from the run's record
(``replay_later``: (trial id, epoch, metric) in arrival order, replayed before the first trial is added)."""

from __future__ import annotations

import hashlib
import random

import numpy as np
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule, PopulationBasedTraining
from ray.tune.schedulers.trial_scheduler import TrialScheduler

__all__ = ["ResumableASHA", "ResumableFIFO", "ResumableMedian", "SeededPBT"]


class _TrialRef:
    """What a scheduler's bookkeeping needs of a trial it replays: its id."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def _unit(trial_id: str) -> float:
    """A number in [0, 1) that follows from a trial's id alone."""
    return int(hashlib.sha256(trial_id.encode()).hexdigest()[:12], 16) / 16**12


class ResumableASHA(ASHAScheduler):
    """ASHA (or, with ``brackets`` > 1, asynchronous HyperBand) whose rungs a resumed sweep rebuilds: the
    recorded epochs go into the rungs in the order they arrived, so a trial stopped at a rung stays
    stopped and the next cut-offs are the ones an uninterrupted sweep would have used. A trial's bracket
    follows from its id, with HyperBand's weights (Ray draws it at random), so a replayed trial is put
    back in the bracket it ran in."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._replay: list[tuple[str, int, float]] = []

    def replay_later(self, rows: list[tuple[str, int, float]]) -> None:
        self._replay = list(rows)

    def _bracket_of(self, trial_id: str):
        sizes = np.array([len(b._rungs) for b in self._brackets])
        weights = np.e ** (sizes - sizes.max())
        cumulative = np.cumsum(weights / weights.sum())
        index = int(np.searchsorted(cumulative, _unit(trial_id), side="right"))
        return self._brackets[min(index, len(self._brackets) - 1)]

    def on_trial_add(self, tune_controller, trial):
        rows, self._replay = self._replay, []
        for trial_id, epoch, value in rows:
            bracket = self._trial_info.setdefault(trial_id, self._bracket_of(trial_id))
            bracket.on_result(_TrialRef(trial_id), epoch, self._metric_op * value)
        super().on_trial_add(tune_controller, trial)  # checks metric/mode, draws a bracket: replaced here
        self._trial_info[trial.trial_id] = self._bracket_of(trial.trial_id)


class ResumableMedian(MedianStoppingRule):
    """The median stopping rule: a trial past the grace period stops when its best so far is worse than the
    median of the other trials' running means at the same epoch. It never pauses a trial to wait for
    more samples (a paused trial would start its process again); a resumed sweep replays the record."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._replay: list[tuple[str, int, float]] = []
        self._refs: dict[str, _TrialRef] = {}

    def replay_later(self, rows: list[tuple[str, int, float]]) -> None:
        self._replay = list(rows)

    def on_trial_add(self, tune_controller, trial):
        rows, self._replay = self._replay, []
        for trial_id, epoch, value in rows:
            ref = self._refs.setdefault(trial_id, _TrialRef(trial_id))
            self._results[ref].append({self._time_attr: epoch, self._metric: value})
        ref = self._refs.pop(trial.trial_id, None)
        if ref is not None:  # a replayed trial that goes on: its results under the real trial
            self._results[trial] = self._results.pop(ref)
        super().on_trial_add(tune_controller, trial)

    def _on_insufficient_samples(self, tune_controller, trial, time):
        return TrialScheduler.CONTINUE


class SeededPBT(PopulationBasedTraining):
    """Population based training with its random choices (which trial to clone, how to perturb) drawn from
    the job's seed. A resumed sweep starts PBT's bookkeeping afresh (the trials keep their checkpoints)."""

    def __init__(self, *, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self._rng_state = random.Random(seed).getstate()

    def _seeded(self, fn, *args, **kwargs):
        outer = random.getstate()
        random.setstate(self._rng_state)
        try:
            return fn(*args, **kwargs)
        finally:
            self._rng_state = random.getstate()
            random.setstate(outer)

    def on_trial_result(self, tune_controller, trial, result):
        return self._seeded(super().on_trial_result, tune_controller, trial, result)

    def replay_later(self, rows) -> None:
        """PBT's state is not rebuilt (its trials go on from their own checkpoints)."""


class ResumableFIFO(FIFOScheduler):
    def replay_later(self, rows) -> None:
        """FIFO keeps no state to rebuild."""
