"""A run's record, fed one trial event at a time: :class:`RunRecorder`.

Pure Python (no Ray): the Ray layer's Tune callback hands it each trial's id, config and result dict; it
builds the ``epochs.parquet`` row (``config/<name>`` columns, every metric, the diagnostics' flags) and
keeps the trial's ``trials.parquet`` row. The two halves are :class:`~sentune.results._trial_table.TrialTable`
(the trials' states and summaries) and :class:`~sentune.results._epoch_log.EpochLog` (the rows and the
Parquet parts that hold them); the recorder decides when they are written: the epoch rows at most every
``flush_every_s`` (a crash loses at most that much: a resumed sweep takes those epochs back from the trials'
resume checkpoints), at once when a trial ends (its best checkpoint's path is known only to the record), and
compacted by :meth:`RunRecorder.close` at the end of the run. ``trials.parquet`` is rewritten whole on each write.
With ``background=True`` (the sweep's driver) the files are written on a thread of their own
(:class:`~sentune.results._writer.OrderedWriter`), in order, from copies of the rows taken when the write was
due: Tune's loop waits on its callbacks before a trial goes on, and a write with its ``fsync`` would hold the
trial up; :meth:`RunRecorder.sync` (and :meth:`RunRecorder.close`) wait until it is all on disk.

A run folder is continued with ``RunRecorder.resume(run_dir, ...)``: the rows and trials on disk are
loaded, the diagnostics tracker is replayed, and the record goes on from there. The resume logic asks the
recorder typed questions (:meth:`~RunRecorder.status_of`, :meth:`~RunRecorder.config_of`,
:meth:`~RunRecorder.replay_rows`, ...) rather than reading its rows.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from sentune._direction import Direction
from sentune.diagnostics import DiagnosticsTracker, summarize
from sentune.results._epoch_log import MERGE_FANOUT, EpochLog
from sentune.results._layout import SEQ, STATUS_RUNNING, TRIALS
from sentune.results._tables import plain_value
from sentune.results._trial_table import TrialTable, write_trial_rows
from sentune.results._writer import OrderedWriter

__all__ = ["TUNE_KEYS", "MERGE_FANOUT", "RunRecorder"]

# Ray Tune's own bookkeeping keys that are not metrics of the model.
TUNE_KEYS = frozenset(
    {
        "config",
        "done",
        "trial_id",
        "experiment_tag",
        "date",
        "timestamp",
        "time_this_iter_s",
        "time_total_s",
        "time_since_restore",
        "iterations_since_restore",
        "timesteps_total",
        "episodes_total",
        "timesteps_since_restore",
        "training_iteration",
        "should_checkpoint",
        "experiment_id",
    }
)

_LOSSES = ("train_loss", "val_loss")  # a loss stored as null reads back as NaN: what the diagnostics flag
# columns of an epoch row that are the record's bookkeeping, not what the trial reported
_BOOKKEEPING = frozenset(
    {"job", "run", "trial_id", "trial_status", SEQ, "reported_at", "time_total_s", "checkpoint_path"}
)


class RunRecorder:
    """Every trial result becomes a row of ``epochs.parquet``; every trial a row of ``trials.parquet``.

    Feed it with :meth:`trial`, :meth:`result`, :meth:`checkpoint`, :meth:`completed` and :meth:`errored`;
    call :meth:`close` when the run ends. ``resume=True`` (or :meth:`RunRecorder.resume`) continues the
    record already in ``run_dir``; otherwise a record there is replaced when the first row is written.
    ``rows`` (by trial, in epoch order) and ``trials`` (by trial id) are the record in memory.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        job: str,
        run_id: str,
        metric: str,
        mode: str,
        max_epochs: int,
        tracker: DiagnosticsTracker | None = None,
        flush_every_s: float = 2.0,
        resume: bool = False,
        background: bool = False,
    ):
        self.run_dir = Path(run_dir)
        self.job, self.run_id = job, run_id
        self.metric, self.direction, self.max_epochs = metric, Direction.of(metric, mode), max_epochs
        self.tracker, self.flush_every_s = tracker, flush_every_s
        self.resumed = resume
        self.table = TrialTable(job=job, run_id=run_id, metric=metric, direction=self.direction,
                                max_epochs=max_epochs, summary=summarize if tracker is not None else None)  # fmt: skip
        self.log = EpochLog(self.run_dir, lambda t: self.table.status_of(t) or STATUS_RUNNING, keep=resume)
        self._last_flush = -math.inf  # monotonic time of the last write
        self._trials_dirty = False
        # background: the files are written on a thread of their own (the rows copied first), so an event costs
        # its caller no file write; sync() waits for them
        self._writer = OrderedWriter("sentune-record") if background else None
        if resume:
            self._load()

    @classmethod
    def resume(cls, run_dir: Path, **options: Any) -> RunRecorder:
        """A recorder that continues the record in ``run_dir`` (rows, trials, next part, the tracker's state)."""
        return cls(run_dir, **options, resume=True)

    @property
    def rows(self) -> dict[str, list[dict]]:
        return self.log.rows

    @property
    def trials(self) -> dict[str, dict]:
        return self.table.rows

    @property
    def epochs_dir(self) -> Path:
        return self.log.folder

    # ---- events ----

    def trial(self, trial_id: str, config: dict, *, role: str | None = None, **marks: Any) -> dict:
        """The trial's row (made on first sight). ``role``: ``sampled`` (default), ``baseline`` (a config
        the job gave; ``baseline``: its number), ``confirm`` (a confirmation run; ``confirm_of``: the
        trial it confirms)."""
        if trial_id not in self.table:
            self.table.add(trial_id, config, role, marks)
            self._changed()
        return self.table.rows[trial_id]

    def result(self, trial_id: str, config: dict, result: dict) -> dict:
        """Record one epoch's result; returns its row. Costs O(the trial's epochs), not O(the run's rows)."""
        row = self._epoch_row(trial_id, config, result)
        rows = self.log.add(row)
        self.trial(trial_id, config)
        self.table.reported(trial_id, config, rows)
        self._changed()
        self._write()
        return row

    def checkpoint(self, trial_id: str, path: str) -> None:
        """The trial's latest result came with a checkpoint (the best so far), stored at ``path``."""
        rows = self.log.set_checkpoint(trial_id, path)
        if trial_id in self.table:
            if rows:
                self.table.summarize(trial_id, rows)
            else:
                self.table.rows[trial_id]["checkpoint_path"] = path
        self._changed()
        self._write()

    def completed(self, trial_id: str, config: dict, *, reason: str | None = None) -> dict:
        """The trial ended without error: completed, or stopped early (and why: ``reason``, else a
        diagnostic that stopped it, else the scheduler)."""
        self.trial(trial_id, config)
        diagnosed = self.tracker.stop_reasons.get(trial_id) if self.tracker is not None else None
        t = self.table.ended(trial_id, config, reason or diagnosed or "scheduler")
        self._changed()
        self._write(force=True)  # its checkpoint's path is only here: a resumed sweep evaluates it
        return t

    def errored(self, trial_id: str, config: dict, error: str) -> None:
        self.trial(trial_id, config)
        self.table.errored(trial_id, error)
        self._changed()
        self._write(force=True)

    def annotate(self, trial_id: str, **fields: Any) -> None:
        """Set fields of a trial's row (e.g. ``revived_from``, a second chance's ``stop_reason``)."""
        self.table.rows[trial_id].update(fields)
        self._changed()

    def forget(self, trial_id: str) -> None:
        """Leave a trial out of the record (a confirmation run a stop cut short, to be trained again)."""
        self.log.drop(trial_id)
        self.table.rows.pop(trial_id, None)
        self._changed()

    def close(self) -> None:
        """The run ended: compact ``epochs.parquet`` to one part (one row per (trial, epoch), ``trial_status``
        from the trial table) and write ``trials.parquet``. O(rows), once; calling it again costs nothing
        unless something was recorded since. The recorder may go on recording after it."""
        self.sync()
        self.log.compact()
        self._write(force=True)
        self.sync()

    def sync(self) -> None:
        """Wait until every write handed to the background writer is on disk (at once without one); a failed
        write's error is raised here."""
        if self._writer is not None:
            self._writer.drain()

    # ---- what the resume logic asks ----

    def __contains__(self, trial_id: object) -> bool:
        return trial_id in self.table

    def trial_ids(self, *, role: str | None = None, ended: bool | None = None) -> list[str]:
        """The recorded trials in the order first seen; ``role``: only those of that role (``sampled``,
        ``baseline``, ``confirm``); ``ended``: only those that ended (True) or not (False)."""
        return self.table.ids(role=role, ended=ended)

    def ended_trials(self) -> list[str]:
        return self.table.ids(ended=True)

    def unended_trials(self) -> list[str]:
        """Trials the record has as running (a sweep stopped before they ended)."""
        return self.table.ids(ended=False)

    def status_of(self, trial_id: str) -> str | None:
        """The trial's status (``running``, ``completed``, ``stopped_early``, ``errored``); None when unknown."""
        return self.table.status_of(trial_id)

    def config_of(self, trial_id: str) -> dict:
        """The trial's config (its latest, for a PBT trial), parsed."""
        return self.table.config_of(trial_id)

    def role_of(self, trial_id: str) -> str | None:
        """``sampled``, ``baseline`` or ``confirm``; None for a trial the record does not have."""
        return self.table.role_of(trial_id)

    def baseline_numbers(self) -> list[int]:
        """The numbers (from 1) of the job's baselines that already have a trial."""
        return self.table.baseline_numbers()

    def confirmed_seeds(self) -> set[tuple[str, int | None]]:
        """(the trial it confirms, its seed) of every confirmation run that ended."""
        return self.table.confirmed_seeds()

    def rows_of(self, trial_id: str) -> list[dict]:
        """The trial's epoch rows, in epoch order (shared: do not change them)."""
        return self.log.rows.get(trial_id, [])

    def epochs_of(self, trial_id: str) -> set[int]:
        """The epochs recorded for the trial."""
        return {r["epoch"] for r in self.log.rows.get(trial_id, [])}

    def recorded_epochs(self) -> list[tuple[str, int]]:
        """(trial id, epoch) of every recorded epoch, trial by trial."""
        return [(t, r["epoch"]) for t, rs in self.log.rows.items() for r in rs]

    def replay_rows(self, key: str | None = None) -> list[tuple[str, int, float]]:
        """(trial id, epoch, value) of every recorded epoch with a value of ``key`` (default: the metric; a
        scheduler that promotes on forecasts: ``forecast``), in the order the results arrived."""
        key = key or self.metric
        rows = [r for rs in self.log.rows.values() for r in rs if r.get(key) is not None]
        rows.sort(key=lambda r: (r.get("reported_at") or 0.0, r["epoch"]))
        return [(r["trial_id"], int(r["epoch"]), float(r[key])) for r in rows]

    def last_result(self, trial_id: str) -> dict | None:
        """The trial's last recorded epoch as the metrics it reported (no config columns, no diagnostics'
        flags, no bookkeeping); None before its first epoch."""
        rows = self.log.rows.get(trial_id) or []
        if not rows:
            return None
        return {k: v for k, v in rows[-1].items() if k not in _BOOKKEEPING and not k.startswith(("config/", "diag_"))}

    # ---- writing ----

    def _epoch_row(self, trial_id: str, config: dict, result: dict) -> dict:
        row = {
            "job": self.job,
            "run": self.run_id,
            "trial_id": trial_id,
            "epoch": int(result["epoch"] if "epoch" in result else result["training_iteration"]),
        }
        row.update({f"config/{k}": plain_value(v) for k, v in config.items()})
        for key, value in result.items():
            if key not in TUNE_KEYS and key not in row and not isinstance(value, dict):
                row[key] = plain_value(value)
        row["time_total_s"] = result.get("time_total_s")
        row["time_this_iter_s"] = result.get("time_this_iter_s")  # this epoch's time (the first: with start-up)
        row["reported_at"] = time.time()  # wall clock on the driver when the epoch's result arrived
        if self.tracker is not None:
            row.update(self.tracker.update(trial_id, result))
        return row

    def _changed(self) -> None:
        self._trials_dirty = True
        self.log.final = False

    def _write(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_flush < self.flush_every_s:
            return
        self._last_flush = now
        rows = self.log.take_pending()
        trials = self.table.snapshot() if self._trials_dirty and self.table.rows else None
        self._trials_dirty = False
        if self._writer is None:
            self._store(rows, trials)
        else:
            self._writer.submit(self._store, rows, trials)

    def _store(self, rows: list[dict], trials: list[dict] | None) -> None:
        """Write new epoch rows (a part) and, if given, the whole trial table (on the writer's thread, if any)."""
        self.log.write_rows(rows)
        if trials is not None:
            write_trial_rows(self.run_dir / TRIALS, trials)

    # ---- resuming ----

    def _load(self) -> None:
        """Take over the record in ``run_dir``: trials and rows into memory, the tracker replayed, the rows
        rewritten as one part of this recorder."""
        if (self.run_dir / TRIALS).is_file():
            self.table.load(self.run_dir)
        self.log.take_over()
        for trial_id, trial_rows in self.log.rows.items():
            if trial_id not in self.table:  # rows written, the trial table not yet: the config is in the rows
                config = {k[len("config/") :]: v for k, v in trial_rows[0].items() if k.startswith("config/")}
                self.trial(trial_id, config)
            self.table.summarize(trial_id, trial_rows)
            if self.tracker is not None:
                for r in trial_rows:
                    self.tracker.update(trial_id, _replayed(r))
        if self.log.rows:
            self.log.rewrite_taken_over()
            self._trials_dirty = True


def _replayed(row: dict) -> dict:
    """A stored row as the result the tracker saw (a null loss is a NaN loss)."""
    return {**row, **{k: math.nan for k in _LOSSES if k in row and row[k] is None}}
