"""The epoch log of a run (``epochs.parquet/``, the layout in :mod:`sentune.results._store`): every epoch
row by trial in memory, and the parts engine that keeps the folder in step with them.

Each write puts the rows that came since the last one in a new part, so a result costs the same however
many rows the run holds. Parts have a level: a new part is level 0, and the newest ``MERGE_FANOUT`` parts
of one level are merged into one part of the next (a binary counter in base 8), so each row is written
again a logarithmic number of times and the folder holds few parts. ``part-000000.parquet`` holds the
schema of every part, written before a part that adds a column. :meth:`EpochLog.compact` leaves one part
with one row per (trial, epoch); a part that is never merged (a resumed record, a compaction) is
``FROZEN``. Small parts stay in memory until merged, so a merge reads nothing back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentune.errors import ConfigError
from sentune.results._layout import EPOCHS, SCHEMA_PART, SEQ
from sentune.results._store import (
    epochs_source,
    list_parts,
    part_path,
    read_epoch_table,
    read_parquet_file,
    read_part,
    remove_path,
    write_table,
)
from sentune.results._tables import concat, conform, resolve, rows_table, unify_schemas

__all__ = ["EpochLog", "MERGE_FANOUT", "FROZEN"]

MERGE_FANOUT = 8  # this many parts of one level are merged into one part
FROZEN = 1 << 30  # the level of a part that is never merged before the end (a resumed record, a compaction)
_CACHE_ROWS = 4096  # parts up to this many rows stay in memory until merged


@dataclass
class _Part:
    number: int
    level: int


class EpochLog:
    """The rows of ``<run_dir>/epochs.parquet`` by trial (``rows``: each trial's in epoch order), and the
    ones not written yet. ``status_of(trial_id)``: the ``trial_status`` a row is written with. ``keep``:
    the folder's parts are this log's to go on with (a resumed run); otherwise the first write replaces
    whatever record is there."""

    def __init__(self, run_dir: Path, status_of: Callable[[str], str], *, keep: bool = False):
        self.run_dir, self.folder = Path(run_dir), Path(run_dir) / EPOCHS
        self.status_of, self.keep = status_of, keep
        self.rows: dict[str, list[dict]] = {}
        self.final = False  # compacted, and nothing changed since
        self._seq = 0  # the last row's _seq
        self._pending: dict[int, dict] = {}  # id(row) -> row: rows not written yet, in the order they came
        self._parts: list[_Part] = []  # the parts this log wrote (or took over), oldest first
        self._cached: dict[int, Any] = {}  # part number -> its table, for small parts to be merged (no re-read)
        self._next_part = SCHEMA_PART + 1
        self._schema: Any = None  # the unified schema of the parts (pyarrow.Schema)
        self._schema_on_disk: Any = None  # what part-000000 holds; None: no schema part
        self._started = False  # the folder is this log's

    # ---- rows ----

    def add(self, row: dict) -> list[dict]:
        """Log an epoch row (it gets its ``_seq``); returns the trial's rows. A trial retried after a failure
        may report an epoch again: its new row replaces its rows from that epoch on (on disk, the later
        ``_seq`` wins)."""
        row[SEQ] = self._next_seq()
        rows = self.rows.setdefault(row["trial_id"], [])
        while rows and rows[-1]["epoch"] >= row["epoch"]:
            self._pending.pop(id(rows.pop()), None)
        rows.append(row)
        self._pending[id(row)] = row
        return rows

    def set_checkpoint(self, trial_id: str, path: str) -> list[dict]:
        """The trial's latest row came with a checkpoint at ``path``; returns the trial's rows (maybe none)."""
        rows = self.rows.get(trial_id) or []
        if rows:
            last = rows[-1]
            last["checkpoint_path"] = path
            if id(last) not in self._pending:  # already written: written again, and the new copy wins
                last[SEQ] = self._next_seq()
                self._pending[id(last)] = last
        return rows

    def drop(self, trial_id: str) -> None:
        """Leave a trial's rows out (those written stay on disk until the next compaction)."""
        for row in self.rows.pop(trial_id, []):
            self._pending.pop(id(row), None)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _with_status(self, row: dict) -> dict:
        return {**row, "trial_status": self.status_of(row["trial_id"])}

    def _all_rows_table(self):
        return rows_table([self._with_status(r) for rs in self.rows.values() for r in rs])

    # ---- writing ----

    def write_pending(self) -> None:
        """The rows that came since the last write, as a new part (then merged as parts pile up)."""
        self.write_rows(self.take_pending())

    def take_pending(self) -> list[dict]:
        """The rows that came since the last write (copies, with their ``trial_status`` now), no longer pending:
        for :meth:`write_rows`, which may run on another thread (nothing else here touches what it writes)."""
        rows = [self._with_status(r) for r in self._pending.values()]
        self._pending.clear()
        return rows

    def write_rows(self, rows: list[dict]) -> None:
        """``rows`` (from :meth:`take_pending`) as a new part, then merged as parts pile up."""
        if rows:
            self._write_part(rows_table(rows), level=0)
            self._merge()

    def compact(self) -> None:
        """Rewrite the record from memory as a single part and remove every other part."""
        if self.final or not self.rows:
            return
        table = self._all_rows_table()
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
        self._parts = [_Part(number, FROZEN)]
        self._cached.clear()
        self._pending.clear()
        self.final = True

    def _begin(self) -> Path:
        """The folder, made on the first write; unless kept, a record left there is replaced."""
        if not self._started:
            if not self.keep:
                remove_path(self.folder)
            self.folder.mkdir(parents=True, exist_ok=True)
            self._started = True
        return self.folder

    def _take_number(self) -> int:
        number = self._next_part
        self._next_part += 1
        return number

    def _put_schema(self, schema) -> None:
        if self._schema_on_disk is None or not schema.equals(self._schema_on_disk):
            write_table(part_path(self.folder, SCHEMA_PART), schema.empty_table())
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
        if level < FROZEN and table.num_rows <= _CACHE_ROWS:
            self._cached[part.number] = table
        return part

    def _merge(self) -> None:
        """Merge the newest MERGE_FANOUT parts while they are of one level."""
        while len(self._parts) >= MERGE_FANOUT:
            tail = self._parts[-MERGE_FANOUT:]
            level = tail[0].level
            if level >= FROZEN or any(p.level != level for p in tail):
                return
            tables = [
                self._cached.pop(p.number)
                if p.number in self._cached
                else read_parquet_file(part_path(self.folder, p.number))
                for p in tail
            ]
            merged = self._restatus(resolve(concat(tables)))
            new = self._write_part(merged, level + 1)
            self._parts[-MERGE_FANOUT - 1 :] = [new]
            for p in tail:
                part_path(self.folder, p.number).unlink(missing_ok=True)

    def _restatus(self, table):
        """``trial_status`` of every row as the trial's status now."""
        import pyarrow as pa

        column = pa.array([self.status_of(t) for t in table.column("trial_id").to_pylist()], pa.string())
        i = table.schema.get_field_index("trial_status")
        return table.set_column(i, "trial_status", column) if i >= 0 else table.append_column("trial_status", column)

    # ---- resuming ----

    def take_over(self) -> None:
        """Load the rows of the folder (those that survive, in the order they were written) and go on
        numbering its parts. A single-file record (not a folder of parts) is refused in one line."""
        src = epochs_source(self.run_dir)
        if src is None:
            return
        if not src.is_dir():
            raise ConfigError(f"{src}: a single-file epoch record, not a folder of parts; only a run folder of "
                              "this sentune's format can be resumed")  # fmt: skip
        table = read_epoch_table(self.run_dir)
        self._next_part = max((n for n, _ in list_parts(src)), default=SCHEMA_PART) + 1
        schema_part = part_path(src, SCHEMA_PART)
        schema = read_part(schema_part) if schema_part.is_file() else None
        if schema is not None:
            self._schema_on_disk = schema.schema
        rows = table.to_pylist()
        if rows and SEQ not in table.column_names:  # parts written by another tool: their order is the order
            for i, row in enumerate(rows, 1):
                row[SEQ] = i
        self._seq = max((r[SEQ] for r in rows), default=0)
        for row in rows:
            row.pop("trial_status", None)
            trial_rows = self.rows.setdefault(row["trial_id"], [])
            while trial_rows and trial_rows[-1]["epoch"] >= row["epoch"]:
                trial_rows.pop()
            trial_rows.append(row)

    def rewrite_taken_over(self) -> None:
        """After :meth:`take_over`: the rows rewritten as one frozen part of this log, the older parts removed
        (their statuses as the trial table has them now)."""
        if not self.rows:
            return
        self._started = True
        self._schema = self._schema_on_disk  # the new part's schema covers the old parts' until they go
        older = [n for n, _ in list_parts(self.folder)]
        self._write_part(self._all_rows_table(), level=FROZEN)
        for n in older:
            part_path(self.folder, n).unlink(missing_ok=True)
