"""Where a Parquet row is built: a run's record of trial epochs and trials, fed one result at a time.

Pure Python (no Ray): the Ray layer's Tune callback hands it each trial's id, config and result dict;
it builds the ``epochs.parquet`` row (``config/<name>`` columns, every metric, diagnostics) and the
``trials.parquet`` row, and flushes both atomically.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from sentune._direction import Direction
from sentune.diagnostics import DiagnosticsTracker, summarize
from sentune.results._store import (
    STATUS_COMPLETED,
    STATUS_ERRORED,
    STATUS_RUNNING,
    STATUS_STOPPED,
    _plain,
    write_parquet,
)

__all__ = ["TUNE_KEYS", "RunRecorder"]

# Ray Tune's own bookkeeping keys that are not metrics of the model.
TUNE_KEYS = frozenset({
    "config", "done", "trial_id", "experiment_tag", "date", "timestamp", "time_this_iter_s", "time_total_s",
    "time_since_restore", "iterations_since_restore", "timesteps_total", "episodes_total",
    "timesteps_since_restore", "training_iteration", "should_checkpoint", "experiment_id",
})


class RunRecorder:
    """Every trial result becomes a row of ``epochs.parquet``; every trial a row of ``trials.parquet``."""

    def __init__(self, run_dir: Path, *, job: str, run_id: str, metric: str, mode: str, max_epochs: int,
                 tracker: DiagnosticsTracker | None = None, flush_every_s: float = 2.0):
        self.run_dir = Path(run_dir)
        self.job, self.run_id = job, run_id
        self.metric, self.direction, self.max_epochs = metric, Direction.of(metric, mode), max_epochs
        self.tracker, self.flush_every_s = tracker, flush_every_s
        self.rows: dict[str, list[dict]] = {}
        self.trials: dict[str, dict] = {}
        self._last_flush = 0.0

    def trial(self, trial_id: str, config: dict) -> dict:
        """The trial's row (made on first sight)."""
        if trial_id not in self.trials:
            self.trials[trial_id] = {
                "job": self.job, "run": self.run_id, "trial_id": trial_id, "status": STATUS_RUNNING,
                "epochs_run": 0, "epochs_max": self._epochs_of(config), "metric": self.metric,
                "peak_metric": None, "peak_epoch": None, "stop_reason": None, "diagnostics": None, "overfit": None,
                "checkpoint_path": None, "error": None,
                "started_at": time.time(),  # wall clock on the driver when Tune started the trial
                "config_json": json.dumps(config, default=str),
                **{f"config/{k}": _plain(v) for k, v in config.items()},
            }
        return self.trials[trial_id]

    def result(self, trial_id: str, config: dict, result: dict) -> dict:
        """Record one epoch's result; returns its row."""
        row = {"job": self.job, "run": self.run_id, "trial_id": trial_id,
               "epoch": int(result.get("epoch", result["training_iteration"]))}
        row.update({f"config/{k}": _plain(v) for k, v in config.items()})
        for key, value in result.items():
            if key not in TUNE_KEYS and key not in row and not isinstance(value, dict):
                row[key] = _plain(value)
        row["time_total_s"] = result.get("time_total_s")
        row["reported_at"] = time.time()  # wall clock on the driver when the epoch's result arrived
        if self.tracker is not None:
            row.update(self.tracker.update(trial_id, result))
        # a trial retried after a failure may report an epoch again: its new rows replace the old ones
        rows = [r for r in self.rows.get(trial_id, []) if r["epoch"] < row["epoch"]] + [row]
        self.rows[trial_id] = rows
        t = self.trial(trial_id, config)
        t["epochs_run"] = len(rows)
        t["peak_metric"], t["peak_epoch"], t["checkpoint_path"] = None, None, None
        for r in rows:
            value = r.get(self.metric)
            if value is not None and self.direction.better(value, t["peak_metric"]):
                t["peak_metric"], t["peak_epoch"] = float(value), r["epoch"]
            if r.get("checkpoint_path"):
                t["checkpoint_path"] = r["checkpoint_path"]
        if self.tracker is not None:
            t.update(summarize(rows))
        self.flush()
        return row

    def checkpoint(self, trial_id: str, path: str) -> None:
        """The trial's latest result came with a checkpoint (the best so far), stored at ``path``."""
        rows = self.rows.get(trial_id)
        if rows:
            rows[-1]["checkpoint_path"] = path
        if trial_id in self.trials:
            self.trials[trial_id]["checkpoint_path"] = path
        self.flush()

    def completed(self, trial_id: str, config: dict) -> dict:
        """The trial ended without error: completed, or stopped early (and why)."""
        t = self.trial(trial_id, config)
        t["status"] = STATUS_COMPLETED if t["epochs_run"] >= self._epochs_of(config) else STATUS_STOPPED
        if t["status"] == STATUS_STOPPED:
            t["stop_reason"] = (self.tracker.stop_reasons.get(trial_id) if self.tracker else None) or "scheduler"
        self.flush(force=True)
        return t

    def errored(self, trial_id: str, config: dict, error: str) -> None:
        t = self.trial(trial_id, config)
        t["status"] = STATUS_ERRORED
        t["error"] = (error or "error")[:500]
        self.flush(force=True)

    def _epochs_of(self, config: dict) -> int:
        return int(config.get("epochs") or self.max_epochs)

    def flush(self, force: bool = False) -> None:
        """Write both files (at most every ``flush_every_s`` unless forced)."""
        now = time.monotonic()
        if not force and now - self._last_flush < self.flush_every_s:
            return
        self._last_flush = now
        statuses = {tid: t["status"] for tid, t in self.trials.items()}
        rows = [dict(r, trial_status=statuses.get(tid, STATUS_RUNNING)) for tid, rs in self.rows.items() for r in rs]
        if rows:
            write_parquet(self.run_dir / "epochs.parquet", rows)
        if self.trials:
            write_parquet(self.run_dir / "trials.parquet", list(self.trials.values()))
