"""Tune's schedulers as a resumed sweep needs them: ``Tuner.restore`` brings back the searcher's state but
not the scheduler's (ray#30838), so each one here can rebuild its state from the run's record."""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

__all__ = ["ResumableASHA", "ResumableFIFO"]


class _TrialRef:
    """What ASHA's bracket needs of a trial it replays: its id."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


class ResumableASHA(ASHAScheduler):
    """ASHA whose rungs a resumed sweep rebuilds (``replay_later``): the recorded epochs go into the rungs
    in the order they arrived, before the first trial is added, so a trial stopped at a rung stays
    stopped and the next cut-offs are the ones an uninterrupted sweep would have used."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._replay: list[tuple[str, int, float]] = []

    def replay_later(self, rows: list[tuple[str, int, float]]) -> None:
        """``rows``: (trial id, epoch, metric) in arrival order."""
        self._replay = list(rows)

    def on_trial_add(self, tune_controller, trial):
        rows, self._replay = self._replay, []
        for trial_id, epoch, value in rows:
            bracket = self._trial_info.setdefault(trial_id, self._brackets[0])
            bracket.on_result(_TrialRef(trial_id), epoch, self._metric_op * value)
        super().on_trial_add(tune_controller, trial)


class ResumableFIFO(FIFOScheduler):
    def replay_later(self, rows) -> None:
        """FIFO keeps no state to rebuild."""
