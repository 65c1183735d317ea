"""Where a Parquet row is built: a run's record of trial epochs and trials, fed one result at a time.

Pure Python (no Ray): the Ray layer's Tune callback hands it each trial's id, config and result dict;
it builds the ``epochs.parquet`` row (``config/<name>`` columns, every metric, diagnostics) and the
``trials.parquet`` row, and writes both atomically.

The epoch record is appended to (see :mod:`sentune.results._store` for the layout): each write puts the
rows that came since the last one in a new part of ``epochs.parquet/``, so a result costs the same however
many rows the run holds; parts are merged ``MERGE_FANOUT`` at a time as they pile up (each row is written
again a logarithmic number of times), and :meth:`RunRecorder.close` at the end of the run leaves one part
with one row per (trial, epoch). A crash loses at most the rows of the last ``flush_every_s``.
``trials.parquet`` (a row per trial) is rewritten whole on each write.

A run folder is continued with ``RunRecorder.resume(run_dir, ...)``: the rows and trials on disk are loaded
(a single-file ``epochs.parquet`` of an older sentune too), the diagnostics tracker is replayed, and the
record goes on from there.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentune._direction import Direction
from sentune.diagnostics import DiagnosticsTracker, summarize
from sentune.results._layout import (
    EPOCHS,
    EPOCHS_SET_ASIDE,
    SCHEMA_PART,
    SEQ,
    STATUS_COMPLETED,
    STATUS_ERRORED,
    STATUS_RUNNING,
    STATUS_STOPPED,
)
from sentune.results._store import (
    epochs_source,
    list_parts,
    part_path,
    read_epoch_table,
    read_part,
    read_trials,
    remove_path,
    write_table,
)
from sentune.results._store import read_parquet_file as _read_parquet_file
from sentune.results._tables import concat, conform, resolve, rows_table, unify_schemas
from sentune.results._tables import plain_value as _plain

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

MERGE_FANOUT = 8  # this many parts of one size are merged into one part
_FROZEN = 1 << 30  # the level of a part that is never merged before the end (a resumed record, a compaction)
_CACHE_ROWS = 4096  # parts up to this many rows stay in memory until merged
_LOSSES = ("train_loss", "val_loss")  # a NaN loss is stored as null by older sentune; diagnostics want NaN


@dataclass
class _Part:
    number: int
    level: int


class RunRecorder:
    """Every trial result becomes a row of ``epochs.parquet``; every trial a row of ``trials.parquet``.

    Feed it with :meth:`trial`, :meth:`result`, :meth:`checkpoint`, :meth:`completed` and :meth:`errored`;
    call :meth:`close` (or ``flush(force=True)``) when the run ends. ``resume=True`` (or
    :meth:`RunRecorder.resume`) continues the record already in ``run_dir``; otherwise a record there is
    replaced when the first row is written.
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
    ):
        self.run_dir = Path(run_dir)
        self.job, self.run_id = job, run_id
        self.metric, self.direction, self.max_epochs = metric, Direction.of(metric, mode), max_epochs
        self.tracker, self.flush_every_s = tracker, flush_every_s
        self.rows: dict[str, list[dict]] = {}  # per trial, in epoch order
        self.trials: dict[str, dict] = {}
        self.resumed = resume
        self._last_flush = -math.inf  # monotonic time of the last write
        self._seq = 0  # the last row's _seq
        self._pending: dict[int, dict] = {}  # id(row) -> row: rows not written yet, in the order they came
        self._parts: list[_Part] = []  # the parts this recorder wrote (or took over), oldest first
        self._cached: dict[int, Any] = {}  # part number -> its table, for small parts to be merged (no re-read)
        self._next_part = SCHEMA_PART + 1
        self._schema: Any = None  # the unified schema of the parts (pyarrow.Schema)
        self._schema_on_disk: Any = None  # what part-000000 holds; None: no schema part
        self._started = False  # the epoch folder is this recorder's
        self._trials_dirty = False
        self._final = False  # compacted, and nothing changed since
        if resume:
            self._load()

    @classmethod
    def resume(cls, run_dir: Path, **options: Any) -> RunRecorder:
        """A recorder that continues the record in ``run_dir`` (rows, trials, next part, the tracker's state)."""
        return cls(run_dir, **options, resume=True)

    @property
    def epochs_dir(self) -> Path:
        return self.run_dir / EPOCHS

    # ---- events ----

    def trial(self, trial_id: str, config: dict, *, role: str | None = None, **marks: Any) -> dict:
        """The trial's row (made on first sight). ``role``: ``sampled`` (default), ``baseline`` (a config
        the job gave; ``baseline``: its number), ``confirm`` (a confirmation run; ``confirm_of``: the
        trial it confirms)."""
        if trial_id not in self.trials:
            self.trials[trial_id] = {
                "job": self.job,
                "run": self.run_id,
                "trial_id": trial_id,
                "status": STATUS_RUNNING,
                "role": role or "sampled",
                "baseline": marks.get("baseline"),
                "confirm_of": marks.get("confirm_of"),
                "epochs_run": 0,
                "trial_seconds": 0.0,
                "epochs_max": self._epochs_of(config),
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
                **{f"config/{k}": _plain(v) for k, v in config.items()},
            }
            self._changed()
        return self.trials[trial_id]

    def result(self, trial_id: str, config: dict, result: dict) -> dict:
        """Record one epoch's result; returns its row. Costs O(the trial's epochs), not O(the run's rows)."""
        row = {
            "job": self.job,
            "run": self.run_id,
            "trial_id": trial_id,
            "epoch": int(result["epoch"] if "epoch" in result else result["training_iteration"]),
        }
        row.update({f"config/{k}": _plain(v) for k, v in config.items()})
        for key, value in result.items():
            if key not in TUNE_KEYS and key not in row and not isinstance(value, dict):
                row[key] = _plain(value)
        row["time_total_s"] = result.get("time_total_s")
        row["time_this_iter_s"] = result.get("time_this_iter_s")  # this epoch's time (the first: with start-up)
        row["reported_at"] = time.time()  # wall clock on the driver when the epoch's result arrived
        if self.tracker is not None:
            row.update(self.tracker.update(trial_id, result))
        row[SEQ] = self._next_seq()
        # a trial retried after a failure may report an epoch again: its new rows replace the old ones (on disk,
        # the later _seq wins; see _store)
        rows = self.rows.setdefault(trial_id, [])
        while rows and rows[-1]["epoch"] >= row["epoch"]:
            self._pending.pop(id(rows.pop()), None)
        rows.append(row)
        self._pending[id(row)] = row
        t = self.trial(trial_id, config)
        now = json.dumps(config, default=str)
        if t["config_json"] != now:  # PBT went on with a perturbed config: the trial's row has the latest
            t["config_json"] = now
            t.update({f"config/{k}": _plain(v) for k, v in config.items()})
        if t["status"] == STATUS_ERRORED:  # retried (a resumed run restarts errored trials): running again
            t["status"], t["error"] = STATUS_RUNNING, None
        self._summarize(t, rows)
        self._changed()
        self._write()
        return row

    def checkpoint(self, trial_id: str, path: str) -> None:
        """The trial's latest result came with a checkpoint (the best so far), stored at ``path``."""
        rows = self.rows.get(trial_id)
        if rows:
            last = rows[-1]
            last["checkpoint_path"] = path
            if id(last) not in self._pending:  # already written: written again, and the new copy wins
                last[SEQ] = self._next_seq()
                self._pending[id(last)] = last
        if trial_id in self.trials:
            if rows:
                self._summarize(self.trials[trial_id], rows)
            else:
                self.trials[trial_id]["checkpoint_path"] = path
        self._changed()
        self._write()

    def completed(self, trial_id: str, config: dict, *, reason: str | None = None) -> dict:
        """The trial ended without error: completed, or stopped early (and why: ``reason``, else a
        diagnostic that stopped it, else the scheduler)."""
        t = self.trial(trial_id, config)
        t["status"] = STATUS_COMPLETED if t["epochs_run"] >= self._epochs_of(config) else STATUS_STOPPED
        if t["status"] == STATUS_STOPPED:
            t["stop_reason"] = (
                reason or (self.tracker.stop_reasons.get(trial_id) if self.tracker else None) or "scheduler"
            )
        self._changed()
        self._write(force=True)
        return t

    def errored(self, trial_id: str, config: dict, error: str) -> None:
        t = self.trial(trial_id, config)
        t["status"] = STATUS_ERRORED
        t["error"] = (error or "error")[:500]
        self._changed()
        self._write(force=True)

    def forget(self, trial_id: str) -> None:
        """Leave a trial out of the record (a confirmation run a stop cut short, to be trained again)."""
        for row in self.rows.pop(trial_id, []):
            self._pending.pop(id(row), None)
        self.trials.pop(trial_id, None)
        self._changed()

    def flush(self, force: bool = False) -> None:
        """Write the rows that came since the last write (at most every ``flush_every_s`` unless forced).

        ``flush(force=True)`` is the end-of-run flush (what the Tune callback's ``on_experiment_end`` calls):
        it is :meth:`close`. Mid-run, ``flush()`` appends; it never rewrites the record."""
        if force:
            self.close()
        else:
            self._write()

    def close(self) -> None:
        """The run ended: compact ``epochs.parquet`` to one part (one row per (trial, epoch), ``trial_status``
        from the trial table) and write ``trials.parquet``. O(rows), once; calling it again costs nothing
        unless something was recorded since. The recorder may go on recording after it."""
        self.compact()
        self._write(force=True)

    def compact(self) -> None:
        """Rewrite the epoch record from memory as a single part and remove every other part."""
        if self._final or not self.rows:
            return
        table = rows_table([self._with_status(r) for rs in self.rows.values() for r in rs])
        folder = self._begin()
        older = [n for n, _ in list_parts(folder)]
        if self._schema_on_disk is not None:  # readers that take part-000000's schema see the new part's columns
            self._put_schema(unify_schemas([self._schema_on_disk, table.schema]))
        number = self._take_number()
        write_table(part_path(folder, number), table)
        for n in older:
            part_path(folder, n).unlink(missing_ok=True)
        part_path(folder, SCHEMA_PART).unlink(missing_ok=True)  # the one part has every column itself
        self._schema_on_disk, self._schema = None, table.schema
        self._parts = [_Part(number, _FROZEN)]
        self._cached.clear()
        self._pending.clear()
        self._final = True

    # ---- writing ----

    def _epochs_of(self, config: dict) -> int:
        return int(config.get("epochs") or self.max_epochs)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _changed(self) -> None:
        self._trials_dirty = True
        self._final = False

    def _summarize(self, t: dict, rows: list[dict]) -> None:
        """The trial's epochs run, peak metric and epoch, checkpoint and diagnostics, from its rows."""
        t["epochs_run"] = len(rows)
        # the trial's time in its process (Tune's time_total_s; the most any attempt reached, plus earlier ones)
        t["trial_seconds"] = _trial_seconds(rows)
        t["peak_metric"], t["peak_epoch"], t["checkpoint_path"] = None, None, None
        peak_checkpoint = None
        for r in rows:
            value = r.get(self.metric)
            if value is not None and self.direction.better(value, t["peak_metric"]):
                t["peak_metric"], t["peak_epoch"], peak_checkpoint = float(value), r["epoch"], r.get("checkpoint_path")
            if r.get("checkpoint_path"):
                t["checkpoint_path"] = r["checkpoint_path"]
        if peak_checkpoint:  # the checkpoint that came with the peak (PBT's trials report one every epoch)
            t["checkpoint_path"] = peak_checkpoint
        if self.tracker is not None:
            t.update(summarize(rows))

    def _with_status(self, row: dict) -> dict:
        t = self.trials.get(row["trial_id"])
        return {**row, "trial_status": t["status"] if t else STATUS_RUNNING}

    def _write(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_flush < self.flush_every_s:
            return
        self._last_flush = now
        if self._pending:
            rows = list(self._pending.values())
            self._write_part(rows_table([self._with_status(r) for r in rows]), level=0)
            self._pending.clear()
            self._merge()
        if self._trials_dirty and self.trials:
            self._write_trials()

    def _write_trials(self) -> None:
        """trials.parquet, whole. As write_parquet stores rows (mixed values as JSON text), without pandas in
        between: ~10 ms for 2,000 trials."""
        write_table(self.run_dir / "trials.parquet", rows_table(list(self.trials.values())))
        self._trials_dirty = False

    def _begin(self) -> Path:
        """The epoch folder, made on the first write; a fresh recorder replaces a record left there."""
        folder = self.epochs_dir
        if not self._started:
            if not self.resumed or folder.is_file():
                remove_path(folder)
                (self.run_dir / EPOCHS_SET_ASIDE).unlink(missing_ok=True)
            folder.mkdir(parents=True, exist_ok=True)
            self._started = True
        return folder

    def _take_number(self) -> int:
        number = self._next_part
        self._next_part += 1
        return number

    def _put_schema(self, schema) -> None:
        if self._schema_on_disk is None or not schema.equals(self._schema_on_disk):
            write_table(part_path(self.epochs_dir, SCHEMA_PART), schema.empty_table())
            self._schema_on_disk = schema

    def _write_part(self, table, level: int) -> _Part:
        folder = self._begin()
        schema = unify_schemas([self._schema, table.schema] if self._schema is not None else [table.schema])
        self._put_schema(schema)  # before the part: a reader never meets a part its schema can't hold
        self._schema = schema
        part = _Part(self._take_number(), level)
        table = conform(table, schema)
        write_table(part_path(folder, part.number), table)
        self._parts.append(part)
        if level < _FROZEN and table.num_rows <= _CACHE_ROWS:
            self._cached[part.number] = table
        return part

    def _merge(self) -> None:
        """Merge the newest MERGE_FANOUT parts while they are of one level (a binary counter, base 8)."""
        import pyarrow.parquet as pq

        while len(self._parts) >= MERGE_FANOUT:
            tail = self._parts[-MERGE_FANOUT:]
            level = tail[0].level
            if level >= _FROZEN or any(p.level != level for p in tail):
                return
            tables = [
                self._cached.pop(p.number)
                if p.number in self._cached
                else pq.ParquetFile(part_path(self.epochs_dir, p.number)).read()
                for p in tail
            ]
            merged = resolve(concat(tables))
            merged = self._restatus(merged)
            new = self._write_part(merged, level + 1)
            self._parts[-MERGE_FANOUT - 1 :] = [new]
            for p in tail:
                part_path(self.epochs_dir, p.number).unlink(missing_ok=True)

    def _restatus(self, table):
        import pyarrow as pa

        statuses = [
            self.trials[t]["status"] if t in self.trials else STATUS_RUNNING
            for t in table.column("trial_id").to_pylist()
        ]
        column = pa.array(statuses, pa.string())
        i = table.schema.get_field_index("trial_status")
        return table.set_column(i, "trial_status", column) if i >= 0 else table.append_column("trial_status", column)

    # ---- resuming ----

    def _load(self) -> None:
        """Take over the record in ``run_dir``: rows and trials into memory, the tracker replayed, the rows
        rewritten as one part of this recorder (an older single-file record becomes a folder)."""
        import pyarrow as pa

        trials_path = self.run_dir / "trials.parquet"
        if trials_path.is_file():
            read_trials(self.run_dir)  # a damaged trial table is one line naming it
            for rec in _read_parquet_file(trials_path).to_pylist():
                self.trials[rec["trial_id"]] = rec
        src = epochs_source(self.run_dir)
        if src is None:
            return
        table = read_epoch_table(self.run_dir)  # the rows that survive, in the order they were written
        if src.is_dir():
            numbers = [n for n, _ in list_parts(src)]
            self._next_part = max(numbers, default=SCHEMA_PART) + 1
            schema = read_part(part_path(src, SCHEMA_PART)) if part_path(src, SCHEMA_PART).is_file() else None
            if schema is not None:
                self._schema_on_disk = schema.schema
        if SEQ not in table.column_names:  # an older record: one row per (trial, epoch) already
            table = table.append_column(SEQ, pa.array(range(1, table.num_rows + 1), pa.int64()))
        rows = table.to_pylist()
        self._seq = max((r[SEQ] for r in rows), default=0)
        for row in rows:
            row.pop("trial_status", None)
            trial_rows = self.rows.setdefault(row["trial_id"], [])
            while trial_rows and trial_rows[-1]["epoch"] >= row["epoch"]:
                trial_rows.pop()
            trial_rows.append(row)
        for trial_id, trial_rows in self.rows.items():
            if trial_id not in self.trials:  # rows written, the trial table not yet: the config is in the rows
                config = {k[len("config/") :]: v for k, v in trial_rows[0].items() if k.startswith("config/")}
                self.trial(trial_id, config)
            self._summarize(self.trials[trial_id], trial_rows)
            if self.tracker is not None:
                for r in trial_rows:
                    self.tracker.update(trial_id, _replayed(r))
        if not self.rows:
            return
        if src.is_file():
            self._migrate(src)
        else:
            self._started = True
            self._schema = self._schema_on_disk  # the new part's schema covers the old parts' until they go
            older = [n for n, _ in list_parts(src)]
            self._write_part(rows_table([self._with_status(r) for rs in self.rows.values() for r in rs]), level=_FROZEN)
            for n in older:
                part_path(src, n).unlink(missing_ok=True)
        self._trials_dirty = True

    def _migrate(self, old_file: Path) -> None:
        """A single-file ``epochs.parquet`` becomes a folder: built aside, then swapped in."""
        folder = self.epochs_dir
        aside = self.run_dir / f".{EPOCHS}.new{os.getpid()}"
        remove_path(aside)
        aside.mkdir(parents=True)
        table = rows_table([self._with_status(r) for rs in self.rows.values() for r in rs])
        write_table(part_path(aside, SCHEMA_PART), table.schema.empty_table())
        write_table(part_path(aside, SCHEMA_PART + 1), table)
        old = self.run_dir / EPOCHS_SET_ASIDE
        if old_file != old:
            os.replace(old_file, old)  # a crash from here on: the reader finds .epochs.parquet.old
        os.replace(aside, folder)
        old.unlink()
        self._started = True
        self._schema = self._schema_on_disk = table.schema
        self._parts = [_Part(SCHEMA_PART + 1, _FROZEN)]
        self._next_part = SCHEMA_PART + 2


def _number(value) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _trial_seconds(rows: list[dict]) -> float:
    """Seconds a trial spent on its recorded epochs: the sum of their ``time_this_iter_s`` (the first
    epoch's includes the trial's start-up). Rows of an older sentune have only Tune's ``time_total_s``:
    the most it reached, a drop (a restart) adding the attempt before it."""
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


def _replayed(row: dict) -> dict:
    """A stored row as the result the tracker saw (NaN losses come back as NaN, not None)."""
    return {**row, **{k: math.nan for k in _LOSSES if k in row and row[k] is None}}
