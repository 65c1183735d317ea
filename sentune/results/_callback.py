"""The Ray Tune callback that turns trial results into the Parquet store (runs on the driver)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ray.tune import Callback, Stopper

from sentune.diagnostics import DiagnosticsTracker, summarize

from sentune.results._store import (
    STATUS_COMPLETED,
    STATUS_ERRORED,
    STATUS_RUNNING,
    STATUS_STOPPED,
    _plain,
    write_parquet,
)

__all__ = ["ParquetResultsCallback", "DiagnosticsStopper"]

# Tune's own bookkeeping keys that are not metrics of the model.
_TUNE_KEYS = {
    "config", "done", "trial_id", "experiment_tag", "date", "timestamp", "time_this_iter_s", "time_total_s",
    "time_since_restore", "iterations_since_restore", "timesteps_total", "episodes_total",
    "timesteps_since_restore", "training_iteration", "should_checkpoint", "experiment_id",
}


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.2e}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"


class ParquetResultsCallback(Callback):
    """A Ray Tune callback on the driver: every trial result becomes a row; flushed atomically."""

    def __init__(self, run_dir: Path, *, job: str, run_id: str, metric: str, mode: str, max_epochs: int,
                 tracker: DiagnosticsTracker | None = None, flush_every_s: float = 2.0, echo: bool = True):
        self.tracker = tracker
        self.run_dir = Path(run_dir)
        self.job, self.run_id = job, run_id
        self.metric, self.mode, self.max_epochs = metric, mode, max_epochs
        self.flush_every_s, self.echo = flush_every_s, echo
        self.rows: dict[str, list[dict]] = {}
        self.trials: dict[str, dict] = {}
        self._last_flush = 0.0

    # --- Tune hooks
    def on_trial_start(self, iteration, trials, trial, **info):
        self._trial_row(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = {"job": self.job, "run": self.run_id, "trial_id": trial.trial_id,
               "epoch": int(result.get("epoch", result["training_iteration"]))}
        row.update({f"config/{k}": _plain(v) for k, v in trial.config.items()})
        for key, value in result.items():
            if key not in _TUNE_KEYS and key not in row and not isinstance(value, dict):
                row[key] = _plain(value)
        row["time_total_s"] = result.get("time_total_s")
        row["reported_at"] = time.time()  # wall clock on the driver when the epoch's result arrived
        if self.tracker is not None:
            row.update(self.tracker.update(trial.trial_id, result))
        # a trial retried after a failure starts again from epoch 1: its new rows replace the old ones
        rows = [r for r in self.rows.get(trial.trial_id, []) if r["epoch"] < row["epoch"]] + [row]
        self.rows[trial.trial_id] = rows
        t = self._trial_row(trial)
        t["epochs_run"] = len(rows)
        t["peak_metric"], t["peak_epoch"], t["checkpoint_path"] = None, None, None
        for r in rows:
            value = r.get(self.metric)
            if value is not None and (t["peak_metric"] is None or (value > t["peak_metric"] if self.mode == "max" else value < t["peak_metric"])):
                t["peak_metric"], t["peak_epoch"] = float(value), r["epoch"]
            if r.get("checkpoint_path"):
                t["checkpoint_path"] = r["checkpoint_path"]
        if self.tracker is not None:
            t.update(summarize(rows))
        if self.echo:
            raised = [k[5:] for k in ("diag_nan", "diag_collapse", "diag_stagnation", "diag_grad_spike") if row.get(k)]
            if row.get("diag_overfit", "none") != "none":
                raised.append(f"overfit:{row['diag_overfit']}")
            shown = "  ".join(f"{k}={_fmt(result.get(k))}" for k in dict.fromkeys([self.metric, "val_loss", "train_loss", "lr"]))
            note = f"  [{', '.join(raised)}]" if raised else ""
            print(f"[sentune] {trial.trial_id} epoch {row['epoch']:>3}  {shown}{note}", flush=True)
        self._maybe_flush()

    def on_trial_complete(self, iteration, trials, trial, **info):
        t = self._trial_row(trial)
        t["status"] = STATUS_COMPLETED if t["epochs_run"] >= self._epochs_of(trial) else STATUS_STOPPED
        if t["status"] == STATUS_STOPPED:
            t["stop_reason"] = (self.tracker.stop_reasons.get(trial.trial_id) if self.tracker else None) or "scheduler"
        self._maybe_flush(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        t = self._trial_row(trial)
        t["status"] = STATUS_ERRORED
        t["error"] = (str(getattr(trial, "error_file", "") or "") or "error")[:500]
        self._maybe_flush(force=True)

    def on_experiment_end(self, trials, **info):
        self._maybe_flush(force=True)

    # --- internals
    def _epochs_of(self, trial) -> int:
        return int(trial.config.get("epochs") or self.max_epochs)

    def _trial_row(self, trial) -> dict:
        if trial.trial_id not in self.trials:
            self.trials[trial.trial_id] = {
                "job": self.job, "run": self.run_id, "trial_id": trial.trial_id, "status": STATUS_RUNNING,
                "epochs_run": 0, "epochs_max": self._epochs_of(trial), "metric": self.metric,
                "peak_metric": None, "peak_epoch": None, "stop_reason": None, "diagnostics": None, "overfit": None,
                "checkpoint_path": None, "error": None,
                "config_json": json.dumps(trial.config, default=str),
                **{f"config/{k}": _plain(v) for k, v in trial.config.items()},
            }
        return self.trials[trial.trial_id]

    def _maybe_flush(self, force: bool = False):
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
