"""Tune's schedulers as a resumed sweep needs them.

``Tuner.restore`` brings back the searcher's state but not the scheduler's (ray#30838), so ASHA (with
HyperBand's brackets too) and the median rule rebuild theirs from the run's record: :meth:`replay_later`
takes the recorded results in the order they arrived and which trials had ended, and before the first
trial is added the scheduler goes through the calls an uninterrupted sweep made (``on_trial_result`` for
each result, ``on_trial_complete`` as each trial ended). A trial that had ended by then (the scheduler cut
it, or the record has it as ended) is stopped at its first result after the resume and adds nothing more
to the scheduler's state, whatever the record says of it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection, Iterable
from typing import Any

import numpy as np
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule, PopulationBasedTraining
from ray.tune.schedulers.trial_scheduler import TrialScheduler

from sentune.tuning._ray_compat import (
    MedianNeverPauses,
    asha_assign_bracket,
    asha_forget_trial,
    asha_rung_counts,
    median_move_trial,
    scheduler_result,
    time_attr_of,
)
from sentune.tuning._trial import revived_from

__all__ = ["ReplayRow", "ResumableASHA", "ResumableFIFO", "ResumableMedian", "SeededPBT"]

ReplayRow = tuple[str, int, float]  # (trial id, epoch, metric) of one recorded result


_NO_CONTROLLER: Any = None  # a replay has no Tune controller: ASHA and the median rule that never pauses ask none


class _StandIn:
    """A replayed trial as a scheduler's bookkeeping sees it until the real trial is added: its id."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def _unit(trial_id: str) -> float:
    """A number in [0, 1) that follows from a trial's id alone."""
    return int(hashlib.sha256(trial_id.encode()).hexdigest()[:12], 16) / 16**12


class _Replayable(TrialScheduler):
    """The replay ASHA and the median rule share; a subclass says how it tracks a trial by id
    (:meth:`_track`, :meth:`_untrack`) and how a replayed trial's state passes to the real one (:meth:`_adopt`)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._replay_rows: list[ReplayRow] = []
        self._replay_completed: frozenset[str] = frozenset()
        self._replay_by_stopper: frozenset[str] = frozenset()
        self._replay_ended: set[str] = set()  # trials whose end the replay went through
        self._stand_ins: dict[str, _StandIn] = {}

    def replay_later(
        self, rows: Iterable[ReplayRow], completed: Collection[str] = (), ended_by_stopper: Collection[str] = ()
    ) -> None:
        """Replay the record as the first trial is added. ``rows``: (trial id, epoch, metric) of every
        recorded result, in the order they arrived. ``completed``: the trials the record has as ended
        without error (completed or stopped early: Tune told the scheduler of each end). ``ended_by_stopper``:
        the ones a Tune stopper ended (a diagnostic, the budget): the scheduler saw their last result only
        as the trial's end; they count as completed too."""
        self._replay_rows = list(rows)
        self._replay_by_stopper = frozenset(ended_by_stopper)
        self._replay_completed = frozenset(completed) | self._replay_by_stopper

    def _track(self, trial_id: str) -> None:
        """Start keeping a trial the scheduler has not seen yet (a replayed one, or an added one)."""

    def _untrack(self, trial_id: str) -> None:
        """Let go of a trial whose end was replayed already."""

    def _adopt(self, stand_in: _StandIn, trial) -> None:
        """The real trial is added: what the scheduler holds under its stand-in is now the trial's."""

    def _replay(self) -> None:
        rows, self._replay_rows = self._replay_rows, []
        last = {trial_id: i for i, (trial_id, _, _) in enumerate(rows)}
        for i, (trial_id, epoch, value) in enumerate(rows):
            if trial_id not in self._replay_ended:  # never a result past a trial's end
                self._replay_result(trial_id, scheduler_result(self, epoch, value), last=i == last[trial_id])

    def _replay_result(self, trial_id: str, result: dict, *, last: bool) -> None:
        """One recorded result, as the uninterrupted scheduler received it; ``last``: the trial's last one."""
        if trial_id not in self._stand_ins:
            self._stand_ins[trial_id] = _StandIn(trial_id)
            self._track(trial_id)
        stand_in: Any = self._stand_ins[trial_id]  # what the scheduler reads of a trial: its id
        by_stopper = last and trial_id in self._replay_by_stopper
        decision = None if by_stopper else super().on_trial_result(_NO_CONTROLLER, stand_in, result)
        if decision == TrialScheduler.STOP or (last and trial_id in self._replay_completed):
            super().on_trial_complete(_NO_CONTROLLER, stand_in, result)
            self._replay_ended.add(trial_id)

    def on_trial_add(self, tune_controller, trial):
        super().on_trial_add(tune_controller, trial)  # Ray's checks (metric, mode) and bookkeeping
        self._replay()
        self._track(trial.trial_id)
        stand_in = self._stand_ins.pop(trial.trial_id, None)
        if stand_in is not None:
            self._adopt(stand_in, trial)

    def on_trial_result(self, tune_controller, trial, result):
        if trial.trial_id in self._replay_ended:  # the uninterrupted sweep had ended it: it stays ended
            return TrialScheduler.STOP
        if result.get(time_attr_of(self), 0) <= revived_from(trial.config):  # a second chance repeating a judged epoch
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        if trial.trial_id in self._replay_ended:  # its end was replayed: nothing more goes into the state
            self._untrack(trial.trial_id)
            return
        super().on_trial_complete(tune_controller, trial, result)


class ResumableASHA(_Replayable, ASHAScheduler):
    """ASHA (or, with ``brackets`` > 1, asynchronous HyperBand) that a resumed sweep rebuilds from its
    record, so a trial cut at a rung stays cut and the next cut-offs are the ones an uninterrupted sweep
    would have used. A trial's bracket follows from its id, with HyperBand's weights (Ray draws it at
    random), so a replayed trial goes back into the bracket it ran in."""

    def _bracket_index(self, trial_id: str) -> int:
        sizes = np.array(asha_rung_counts(self))
        weights = np.e ** (sizes - sizes.max())
        cumulative = np.cumsum(weights / weights.sum())
        index = int(np.searchsorted(cumulative, _unit(trial_id), side="right"))
        return min(index, len(sizes) - 1)

    def _track(self, trial_id: str) -> None:
        asha_assign_bracket(self, trial_id, self._bracket_index(trial_id))

    def _untrack(self, trial_id: str) -> None:
        asha_forget_trial(self, trial_id)


class ResumableMedian(_Replayable, MedianNeverPauses, MedianStoppingRule):
    """The median stopping rule: a trial past the grace period stops when its best so far is worse than the
    median of the other trials' running means at the same epoch. It never pauses a trial to wait for more
    samples (a paused trial would start its process again); a resumed sweep replays the record."""

    def _adopt(self, stand_in: _StandIn, trial) -> None:
        median_move_trial(self, stand_in, trial)


class SeededPBT(PopulationBasedTraining):
    """Population based training with its random choices (which trial to clone, how to perturb, a value
    resampled from a Tune range) drawn from the job's seed: Python's and NumPy's global generators hold
    this scheduler's own states while it decides, and get theirs back after. A resumed sweep starts PBT's
    bookkeeping afresh (the trials keep their checkpoints)."""

    def __init__(self, *, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self._python_rng = random.Random(seed).getstate()
        self._numpy_rng = np.random.RandomState(seed).get_state()

    def _seeded(self, fn, *args, **kwargs):
        outer_python, outer_numpy = random.getstate(), np.random.get_state()
        random.setstate(self._python_rng)
        np.random.set_state(self._numpy_rng)
        try:
            return fn(*args, **kwargs)
        finally:
            self._python_rng, self._numpy_rng = random.getstate(), np.random.get_state()
            random.setstate(outer_python)
            np.random.set_state(outer_numpy)

    def on_trial_result(self, tune_controller, trial, result):
        return self._seeded(super().on_trial_result, tune_controller, trial, result)

    def replay_later(self, rows, completed=(), ended_by_stopper=()) -> None:
        """PBT's state is not rebuilt (its trials go on from their own checkpoints)."""


class ResumableFIFO(FIFOScheduler):
    def replay_later(self, rows, completed=(), ended_by_stopper=()) -> None:
        """FIFO keeps no state to rebuild."""
