"""The trial table of a run (``trials.parquet``): one row per trial, its status and what its epochs add up
to. A trial is ``running`` from its first sight; it ends ``completed`` (it ran its full epochs),
``stopped_early`` (a scheduler, a diagnostic or the budget stopped it: ``stop_reason``) or ``errored``;
an errored trial that reports again (a resumed run retries it) is running again."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sentune._direction import Direction
from sentune.results._layout import (
    ENDED,
    ROLE_BASELINE,
    ROLE_CONFIRM,
    ROLE_SAMPLED,
    STATUS_COMPLETED,
    STATUS_ERRORED,
    STATUS_RUNNING,
    STATUS_STOPPED,
    TRIALS,
)
from sentune.results._store import read_parquet_file, read_trials, write_table
from sentune.results._tables import plain_value, rows_table

__all__ = ["TrialTable", "write_trial_rows"]


class TrialTable:
    """The rows of ``trials.parquet`` by trial id (``rows``), in the order the trials were first seen.

    ``summary``: what the diagnostics add to a trial's row from its epoch rows (None: nothing)."""

    def __init__(self, *, job: str, run_id: str, metric: str, direction: Direction, max_epochs: int,
                 summary: Callable[[list[dict]], dict] | None = None):  # fmt: skip
        self.job, self.run_id, self.metric, self.direction = job, run_id, metric, direction
        self.max_epochs, self.summary = max_epochs, summary
        self.rows: dict[str, dict] = {}

    def __contains__(self, trial_id: object) -> bool:
        return trial_id in self.rows

    def epochs_of(self, config: dict) -> int:
        """The epochs a trial with ``config`` runs when nothing stops it."""
        return int(config.get("epochs") or self.max_epochs)

    # ---- the state machine ----

    def add(self, trial_id: str, config: dict, role: str | None, marks: dict) -> dict:
        """A new trial's row (running, nothing trained yet)."""
        row = {
            "job": self.job,
            "run": self.run_id,
            "trial_id": trial_id,
            "status": STATUS_RUNNING,
            "role": role or ROLE_SAMPLED,
            "baseline": marks.get("baseline"),
            "confirm_of": marks.get("confirm_of"),
            "epochs_run": 0,
            "trial_seconds": 0.0,
            "epochs_max": self.epochs_of(config),
            "metric": self.metric,
            "peak_metric": None,
            "peak_epoch": None,
            "stop_reason": None,
            "diagnostics": None,
            "overfit": None,
            "checkpoint_path": None,
            "error": None,
            "started_at": time.time(),  # wall clock on the driver when Tune started the trial
            "config_json": json.dumps(config, default=str),
            **{f"config/{k}": plain_value(v) for k, v in config.items()},
        }
        self.rows[trial_id] = row
        return row

    def reported(self, trial_id: str, config: dict, epoch_rows: list[dict]) -> None:
        """The trial reported an epoch: its latest config (PBT goes on with a perturbed one), running again
        if it had errored, and its summary of ``epoch_rows`` (its rows, in epoch order)."""
        t = self.rows[trial_id]
        now = json.dumps(config, default=str)
        if t["config_json"] != now:
            t["config_json"] = now
            t.update({f"config/{k}": plain_value(v) for k, v in config.items()})
        if t["status"] == STATUS_ERRORED:
            t["status"], t["error"] = STATUS_RUNNING, None
        self.summarize(trial_id, epoch_rows)

    def ended(self, trial_id: str, config: dict, reason: str) -> dict:
        """The trial ended without error: completed when it ran its full epochs, else stopped (``reason``)."""
        t = self.rows[trial_id]
        t["status"] = STATUS_COMPLETED if t["epochs_run"] >= self.epochs_of(config) else STATUS_STOPPED
        if t["status"] == STATUS_STOPPED:
            t["stop_reason"] = reason
        return t

    def errored(self, trial_id: str, error: str) -> None:
        t = self.rows[trial_id]
        t["status"] = STATUS_ERRORED
        t["error"] = (error or "error")[:500]

    def summarize(self, trial_id: str, epoch_rows: list[dict]) -> None:
        """The trial's epochs run, trial-seconds, peak metric and epoch, checkpoint and diagnostics, from its rows."""
        t = self.rows[trial_id]
        t["epochs_run"] = len(epoch_rows)
        t["trial_seconds"] = trial_seconds(epoch_rows)
        t["peak_metric"], t["peak_epoch"], t["checkpoint_path"] = None, None, None
        peak_checkpoint = None
        for r in epoch_rows:
            value = r.get(self.metric)
            if value is not None and self.direction.better(value, t["peak_metric"]):
                t["peak_metric"], t["peak_epoch"], peak_checkpoint = float(value), r["epoch"], r.get("checkpoint_path")
            if r.get("checkpoint_path"):
                t["checkpoint_path"] = r["checkpoint_path"]
        if peak_checkpoint:  # the checkpoint that came with the peak (PBT's trials report one every epoch)
            t["checkpoint_path"] = peak_checkpoint
        t.update(memory_of(epoch_rows))
        if self.summary is not None:
            t.update(self.summary(epoch_rows))

    # ---- questions ----

    def status_of(self, trial_id: str) -> str | None:
        t = self.rows.get(trial_id)
        return None if t is None else t["status"]

    def config_of(self, trial_id: str) -> dict:
        return json.loads(self.rows[trial_id]["config_json"])

    def role_of(self, trial_id: str) -> str | None:
        t = self.rows.get(trial_id)
        return None if t is None else (t.get("role") or ROLE_SAMPLED)

    def ids(self, *, role: str | None = None, ended: bool | None = None) -> list[str]:
        """Trial ids in the order first seen; ``role``: only those of that role; ``ended``: only those that
        ended (True) or not (False)."""
        return [
            tid
            for tid, t in self.rows.items()
            if (role is None or (t.get("role") or ROLE_SAMPLED) == role)
            and (ended is None or (t["status"] in ENDED) == ended)
        ]

    def baseline_numbers(self) -> list[int]:
        """The numbers (from 1) of the job's baselines that have a trial."""
        return [int(self.rows[t]["baseline"]) for t in self.ids(role=ROLE_BASELINE)]

    def confirmed_seeds(self) -> set[tuple[str, int | None]]:
        """(the trial it confirms, its seed) of every confirmation run that ended."""
        return {
            (self.rows[t]["confirm_of"], self.config_of(t).get("seed")) for t in self.ids(role=ROLE_CONFIRM, ended=True)
        }

    # ---- the file ----

    def write(self, path: Path) -> None:
        """trials.parquet, whole: as write_parquet stores rows (mixed values as JSON text), without pandas in
        between (~10 ms for 2,000 trials)."""
        write_trial_rows(path, list(self.rows.values()))

    def snapshot(self) -> list[dict]:
        """Copies of the rows as they are now (for :func:`write_trial_rows` on another thread)."""
        return [dict(r) for r in self.rows.values()]

    def load(self, run_dir: Path) -> None:
        """The rows of the run's trials.parquet, replacing these; a damaged table is one line naming it."""
        read_trials(run_dir)  # the columns every reader relies on
        self.rows = {rec["trial_id"]: rec for rec in read_parquet_file(Path(run_dir) / TRIALS).to_pylist()}


def write_trial_rows(path: Path, rows: list[dict]) -> None:
    """trials.parquet, whole, of these rows (see :meth:`TrialTable.write`)."""
    write_table(path, rows_table(rows))


def _number(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def memory_of(rows: list[dict]) -> dict:
    """A trial's ``peak_mem_mb`` (the most any of its epochs reported: a GPU's peak, or the process's peak RSS
    on the CPU) and ``device_mem_mb`` (the smallest GPU it reported; None on the CPU), in MiB."""
    peaks = [v for v in (_number(r.get("peak_mem_mb")) for r in rows) if v is not None]
    devices = [v for v in (_number(r.get("device_mem_mb")) for r in rows) if v is not None and v > 0]
    return {"peak_mem_mb": max(peaks) if peaks else None, "device_mem_mb": min(devices) if devices else None}


def trial_seconds(rows: list[dict]) -> float:
    """Seconds a trial spent on its recorded epochs: the sum of their ``time_this_iter_s`` (the first
    epoch's includes the trial's start-up). When a row lacks it: Tune's ``time_total_s``, the most it
    reached, a drop (a restart) adding the attempt before it."""
    each = [_number(r.get("time_this_iter_s")) for r in rows]
    if rows and all(v is not None for v in each):
        return round(sum(v for v in each if v is not None), 3)
    total, last = 0.0, 0.0
    for r in rows:
        value = r.get("time_total_s")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if value < last:
            total += last
        last = float(value)
    return round(total + last, 3)
