"""A run folder read once: :class:`RunView`. One command (``sentune results``, ``report``, ``export``, the
end of a sweep) loads one view and asks it everything: each file is read the first time it is needed and
never again, and the leaderboard, the best trial and the budget are computed once.

The functions here (:func:`leaderboard`, :func:`best_trial`, ...) take a run folder or a view; given a
folder they load a view for the one question.
"""

from __future__ import annotations

import copy
import json
from functools import cached_property
from pathlib import Path
from typing import Literal

import pandas as pd

from sentune.results._aggregate import (
    best_baseline_of,
    best_config_of,
    budget_of,
    pick_best,
    ranking,
    roles,
    with_evaluations,
    with_reference,
)
from sentune.results._layout import TRIALS
from sentune.results._store import has_epochs, read_epochs, read_evaluations, read_reference, read_run_info, read_trials

__all__ = ["RunView", "RunLike", "leaderboard", "best_trial", "best_baseline", "best_config", "budget"]

# what a view computes from the record alone: carried over by RunView.refreshed
_FROM_RECORD = ("trials", "epochs", "roles", "configs", "ranking", "best_trial", "best_baseline", "best_config",
                "budget")  # fmt: skip


class RunView:
    """What a run folder holds, read lazily and once: ``info`` (run.json), ``trials``, ``epochs``,
    ``evaluations``, ``reference``; and what they add up to: ``leaderboard`` (with the test figures),
    ``leaderboard_with_reference``, ``best_trial``, ``best_baseline``, ``best_config``, ``budget``,
    ``test_figures``. The frames and dicts are shared by everyone who asks: copy one before changing it.

    A view does not see files written after it read them: after writing ``evaluation.json`` or
    ``reference.json``, ask :meth:`refreshed` for a view that reads them again (the record kept)."""

    def __init__(self, run_dir: str | Path, info: dict):
        self.run_dir = Path(run_dir)
        self.info = info

    @classmethod
    def load(cls, run_dir: str | Path) -> RunView:
        """A view of ``run_dir``; reads run.json (a metric and mode required) now, the rest when asked."""
        return cls(run_dir, read_run_info(run_dir))

    @classmethod
    def of(cls, run: RunLike) -> RunView:
        """``run`` itself when it is a view, else a view of the folder."""
        return run if isinstance(run, RunView) else cls.load(run)

    def refreshed(self) -> RunView:
        """A view that reads ``evaluation.json`` and ``reference.json`` again, sharing this one's record."""
        fresh = RunView(self.run_dir, self.info)
        fresh.__dict__.update({k: v for k, v in self.__dict__.items() if k in _FROM_RECORD})
        return fresh

    @property
    def metric(self) -> str:
        return self.info["metric"]

    @property
    def mode(self) -> Literal["max", "min"]:
        return self.info["mode"]

    # ---- the files ----

    @cached_property
    def trials(self) -> pd.DataFrame:
        return read_trials(self.run_dir)

    @cached_property
    def epochs(self) -> pd.DataFrame:
        """One row per (trial, epoch); without an epoch record, no rows (columns trial_id and epoch)."""
        if not has_epochs(self.run_dir):
            return pd.DataFrame({"trial_id": pd.Series([], dtype=object), "epoch": pd.Series([], dtype="int64")})
        trials = self.trials if (self.run_dir / TRIALS).is_file() else None
        return read_epochs(self.run_dir, trials=trials)

    @cached_property
    def evaluations(self) -> dict:
        """evaluation.json: ``best`` / ``best_baseline`` -> trial_id, row, dev / test figures ({} without one)."""
        return read_evaluations(self.run_dir)

    @cached_property
    def reference(self) -> dict | None:
        return read_reference(self.run_dir)

    # ---- what they add up to ----

    @cached_property
    def roles(self) -> pd.Series:
        return roles(self.trials)

    @cached_property
    def configs(self) -> dict[str, dict]:
        """Each trial's config (its latest, for a PBT trial)."""
        if "config_json" not in self.trials:
            return {}
        return {t.trial_id: json.loads(t.config_json) for t in self.trials.itertuples()}

    @cached_property
    def ranking(self) -> pd.DataFrame:
        """The leaderboard's rows and order, without the test figures or the reference row."""
        return ranking(self.info, self.trials, self.epochs)

    @cached_property
    def leaderboard(self) -> pd.DataFrame:
        """One row per trial of the sweep, best first (see :func:`leaderboard`)."""
        return with_evaluations(self.ranking, self.evaluations)

    @cached_property
    def leaderboard_with_reference(self) -> pd.DataFrame:
        return with_reference(self.leaderboard, self.reference, self.metric)

    @cached_property
    def best_trial(self) -> pd.Series:
        return pick_best(self.ranking, self.trials, self.mode, str(self.run_dir))

    @cached_property
    def best_baseline(self) -> pd.Series | None:
        return best_baseline_of(self.trials, self.mode)

    @cached_property
    def best_config(self) -> dict:
        return best_config_of(self.info, self.best_trial, self.ranking)

    @cached_property
    def budget(self) -> dict:
        return budget_of(self.info, self.trials)

    @property
    def test_figures(self) -> dict | None:
        """The best trial's test figures (``macro_f1``, ``acc``) from evaluation.json, or None."""
        best = self.evaluations.get("best") or {}
        return best.get("test") or None


RunLike = str | Path | RunView


def leaderboard(run: RunLike, *, reference: bool = False) -> pd.DataFrame:
    """One row per trial of the sweep, best first: role (sampled, baseline), tuned config, peak metric and
    epoch, final train/val gap, status, trial-seconds, and the test figures of the evaluated trials. With
    confirmation runs (``confirm:``) the confirmed trials come first, ranked by the mean of their
    confirmations (``confirm_mean`` / ``confirm_std`` / ``confirm_n``). A PBT run adds ``pbt_history``
    (the configs each trial ran with, and from whom). ``reference``: add the reference model's row at the
    end (no rank; never the best)."""
    view = RunView.of(run)
    return (view.leaderboard_with_reference if reference else view.leaderboard).copy()


def best_trial(run: RunLike) -> pd.Series:
    """The winner: best peak metric, then fewer epochs to reach it, then the smaller trial id. With
    confirmation runs: the best of the runs confirming the trial with the best mean."""
    return RunView.of(run).best_trial.copy()


def best_baseline(run: RunLike) -> pd.Series | None:
    """The baseline trial with the best peak metric (then fewer epochs), or None without baselines."""
    best = RunView.of(run).best_baseline
    return None if best is None else best.copy()


def best_config(run: RunLike) -> dict:
    """A config that re-runs the trainable alone: ``trainable``, ``data``, ``params``, and where it came from."""
    return copy.deepcopy(RunView.of(run).best_config)


def budget(run: RunLike) -> dict:
    """Epochs trained and trial-seconds (GPU-seconds on GPUs: trial-seconds x the GPUs a trial holds), in
    total and per role (sampled, baseline, confirm)."""
    return copy.deepcopy(RunView.of(run).budget)
