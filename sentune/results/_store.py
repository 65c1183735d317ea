"""The Parquet store of a run: ``results/<job>/<run>/``.

``epochs.parquet/``  one row per (trial, epoch): ``config/<name>`` columns and every metric. A Parquet
                     dataset (a folder of ``part-NNNNNN.parquet`` files), see below
``trials.parquet``   one row per trial: status, epochs run, peak metric and its epoch, checkpoint
``run.json``         the job's name, trainable, metric/mode, class names, data and search space

Every file is written to a temporary name and renamed, so a crash never leaves half a file.
Plain ``pandas.read_parquet`` (and ``pyarrow.dataset``) reads them, ``epochs.parquet`` included;
nothing here imports Ray, TensorFlow or torch.

The epoch record grows by appending: while a run goes on, each flush of the recorder writes the rows that
came since the last one as a new part, and every row carries ``_seq``, a number that grows with every row
written. ``part-000000.parquet`` holds no rows, only the schema of every part so far (so a reader that
takes its schema from the first file gets all columns). Small parts are merged as they pile up. When the
run ends the recorder compacts the folder to a single part holding exactly one row per (trial_id, epoch),
with ``trial_status`` taken from the trial table.

During a run the folder may hold a row more than once: a trial retried after a failure may report an
epoch again, and a row is written again when its checkpoint arrives. The row written last wins, and a
trial's re-report of epoch ``e`` also voids its rows of later epochs written before it (the retry starts
over from there). :func:`read_epochs` applies that rule (a plain reader may do it itself: for each trial,
keep a row only if no row with a larger ``_seq`` has an epoch at or below its own). ``trial_status`` in
the rows is the status when the row was written, so during a run it may be stale; :func:`read_epochs`
takes it from ``trials.parquet``. A plain read that meets a merge (parts written, then removed) may see a
row twice or fail with FileNotFoundError; read again. A run folder from before the dataset layout
(``epochs.parquet`` a single file) reads the same.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from sentune._atomic import atomic_write_bytes
from sentune._log import warn
from sentune.errors import ConfigError

__all__ = [
    "atomic_write_bytes",
    "write_parquet",
    "write_run_info",
    "read_run_info",
    "read_epochs",
    "read_trials",
    "read_json_file",
    "damaged",
    "validated",
    "STATUS_COMPLETED",
    "STATUS_STOPPED",
    "STATUS_ERRORED",
    "STATUS_RUNNING",
]

STATUS_COMPLETED = "completed"
STATUS_STOPPED = "stopped_early"
STATUS_ERRORED = "errored"
STATUS_RUNNING = "running"

EPOCHS = "epochs.parquet"
SEQ = "_seq"  # the order rows were written in (see the module's doc)
SCHEMA_PART = 0  # part-000000.parquet: no rows, the schema of every part
_PART = re.compile(r"^part-(\d+)\.parquet$")
_OLD_SUFFIX = ".old"  # .epochs.parquet.old: a single-file record while it is turned into a folder


def _plain(value: Any) -> Any:
    """A Parquet-friendly cell: lists/dicts/None-mixed values become JSON text."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in df.columns:
        if df[col].dtype == object:
            kinds = {type(v) for v in df[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
            if len(kinds) > 1 or (kinds and not kinds <= {str}):
                df[col] = [None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in df[col]]
    return df


def write_parquet(path: Path, rows: list[dict]) -> None:
    df = _frame(rows)
    atomic_write_bytes(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_run_info(run_dir: Path, info: dict) -> None:
    text = json.dumps(info, indent=1, default=str)
    atomic_write_bytes(Path(run_dir) / "run.json", lambda tmp: Path(tmp).write_text(text))


def _reason(exc: BaseException) -> str:
    return ((str(exc).strip().splitlines() or [""])[0] or type(exc).__name__)[:120]


def damaged(path: str | Path, exc: BaseException | str) -> ConfigError:
    """The one-line error for a file of a run that cannot be read (truncated, not what it should be)."""
    return ConfigError(f"{path}: damaged or not a sentune file ({exc if isinstance(exc, str) else _reason(exc)})")


def read_json_file(path: str | Path, *, limit: int = 64 << 20) -> Any:
    """A small JSON file of a run, or a :func:`damaged` error naming it (a missing file is FileNotFoundError)."""
    path = Path(path)
    try:
        data = path.read_bytes()
        if len(data) > limit:
            raise ValueError(f"{len(data)} bytes")
        return json.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise damaged(path, exc) from None


class _RunInfo(BaseModel):
    """What the readers of a run take from run.json, with its type (more keys may be there)."""

    model_config = ConfigDict(extra="allow", strict=True)
    job: str | None = None
    trainable: str | None = None
    metric: str | None = None
    mode: Literal["max", "min"] | None = None
    kind: str = "tune"
    run_id: str | None = None
    status: str | None = None
    label_names: list[str] | None = None
    tuned_params: list[str] | None = None
    data: dict | None = None
    spec: dict | None = None
    sizes: dict[str, int] | None = None
    started_at: float | None = None
    wall_seconds: float | None = None


def validated(path: str | Path, model: Any, data: Any) -> Any:
    """``data`` checked against a pydantic model or type (``TypeAdapter``), else a :func:`damaged` error."""
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(model).validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])[:60]
        raise damaged(path, f"{where + ': ' if where else ''}{err['msg'][:80]}") from None
    return data


def read_run_info(run_dir: str | Path, *, require: Sequence[str] = ("metric", "mode")) -> dict:
    """run.json, its keys type-checked; ``require``: keys that must be there (what the readers of results
    need; ``sentune resume`` asks for none, to tell an incompatible run folder by its format first)."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a sentune run folder (no run.json)")
    info = validated(path, _RunInfo, read_json_file(path))
    missing = [k for k in require if info.get(k) is None]
    if missing:
        raise damaged(path, f"no {missing[0]}")
    return info


# ---- the epoch record: Arrow tables of rows, the parts of the folder, and the rule that resolves them ----


def _kind(t: type) -> str:
    if issubclass(t, (bool, np.bool_)):
        return "bool"
    if issubclass(t, (int, np.integer)):
        return "int"
    if issubclass(t, (float, np.floating)):
        return "float"
    if issubclass(t, str):
        return "str"
    return "other"


def _column(values: list):
    import pyarrow as pa

    types = set(map(type, values))
    types.discard(type(None))
    kinds = {_kind(t) for t in types}
    try:
        if not kinds:
            return pa.nulls(len(values))
        if kinds == {"bool"}:
            return pa.array(values, pa.bool_())
        if kinds == {"int"}:
            return pa.array(values, pa.int64())
        if kinds <= {"int", "float"}:
            return pa.array(values, pa.float64())
        if kinds == {"str"}:
            return pa.array(values, pa.string())
    except (OverflowError, ValueError, TypeError):  # an int beyond int64, say: stored as text like mixed values
        pass
    return pa.array(
        [None if v is None else v if isinstance(v, str) else json.dumps(v, default=str) for v in values], pa.string()
    )


def rows_table(rows: Sequence[dict]):
    """An Arrow table of ``rows`` (columns in order of first appearance; a row without a key gets null).

    Types as :func:`write_parquet` stores them: numbers, booleans and text as such, anything mixed as JSON
    text. Unlike pandas, a NaN stays a NaN (not a null)."""
    import pyarrow as pa

    n = len(rows)
    cols: dict[str, list] = {}
    for i, row in enumerate(rows):
        for key, value in row.items():
            col = cols.get(key)
            if col is None:
                col = cols[key] = [None] * n
            col[i] = value
    return pa.table({key: _column(values) for key, values in cols.items()})


def _unify_type(a, b):
    import pyarrow as pa
    import pyarrow.types as pat

    if a == b:
        return a
    if pat.is_null(a):
        return b
    if pat.is_null(b):
        return a
    numbers = (pat.is_integer(a) or pat.is_floating(a)) and (pat.is_integer(b) or pat.is_floating(b))
    if numbers:
        return pa.float64() if pat.is_floating(a) or pat.is_floating(b) else pa.int64()
    return pa.string()


def unify_schemas(schemas: Iterable):
    """One schema every table can be cast to: the union of the columns; null gives way to any type, ints
    to floats, and anything else that differs becomes text."""
    import pyarrow as pa

    fields: dict[str, Any] = {}
    for schema in schemas:
        for f in schema:
            fields[f.name] = f.type if f.name not in fields else _unify_type(fields[f.name], f.type)
    return pa.schema([pa.field(name, t) for name, t in fields.items()])


def conform(table, schema):
    """Cast the columns of ``table`` to their types in ``schema`` (columns it lacks stay missing)."""
    import pyarrow as pa

    types = {f.name: f.type for f in schema}
    fields = [pa.field(f.name, types.get(f.name, f.type)) for f in table.schema]
    target = pa.schema(fields)
    return table if target.equals(table.schema) else table.cast(target, safe=False)


def concat(tables: Sequence):
    """The tables one under the other, their schemas unified (missing columns null)."""
    import pyarrow as pa

    schema = unify_schemas(t.schema for t in tables)
    return pa.concat_tables([conform(t, schema) for t in tables], promote_options="default")


def keep_mask(trial_ids, epochs, seqs=None) -> np.ndarray:
    """Which rows survive, given the order they were written in (``seqs``, else their order here).

    A row is void when a row of the same trial written after it has an epoch at or below its own: the later
    row replaces it (the same epoch), or starts the trial over before it (an earlier one)."""
    n = len(trial_ids)
    if n == 0:
        return np.zeros(0, dtype=bool)
    order = np.argsort(np.asarray(seqs), kind="stable") if seqs is not None else np.arange(n)
    latest_first = order[::-1]
    frame = pd.DataFrame(
        {"t": np.asarray(trial_ids, dtype=object)[latest_first], "e": np.asarray(epochs, dtype=float)[latest_first]}
    )
    lowest_since = frame.groupby("t", sort=False)["e"].cummin()
    lowest_later = lowest_since.groupby(frame["t"], sort=False).shift(1).to_numpy()
    keep_latest_first = np.isnan(lowest_later) | (frame["e"].to_numpy() < lowest_later)
    keep = np.empty(n, dtype=bool)
    keep[latest_first] = keep_latest_first
    return keep


def resolve(table):
    """Only the rows that survive (see :func:`keep_mask`); a table without ``_seq`` is taken as it is."""
    if SEQ not in table.column_names or table.num_rows == 0:
        return table
    mask = keep_mask(
        table.column("trial_id").to_pylist(),
        table.column("epoch").to_numpy(zero_copy_only=False),
        table.column(SEQ).to_numpy(zero_copy_only=False),
    )
    return table if mask.all() else table.filter(mask)


def part_path(folder: Path, number: int) -> Path:
    return Path(folder) / f"part-{number:06d}.parquet"


def list_parts(folder: Path) -> list[tuple[int, Path]]:
    """The numbered parts of an epoch folder, in order, without the schema part."""
    found = []
    if Path(folder).is_dir():
        for p in Path(folder).iterdir():
            m = _PART.match(p.name)
            if m and int(m.group(1)) != SCHEMA_PART and p.is_file():
                found.append((int(m.group(1)), p))
    return sorted(found)


def epochs_source(run_dir: str | Path) -> Path | None:
    """Where a run's epoch record is: the folder (or an older run's single file); None when there is none."""
    path = Path(run_dir) / EPOCHS
    if path.exists():
        return path
    old = Path(run_dir) / f".{EPOCHS}{_OLD_SUFFIX}"  # a crash while a single file was turned into a folder
    return old if old.is_file() else None


def has_epochs(run_dir: str | Path) -> bool:
    return epochs_source(run_dir) is not None


def read_epoch_table(run_dir: str | Path):
    """The epoch record as one Arrow table of the rows that survive, ``_seq`` kept (in written order).

    Raises FileNotFoundError when the run has no epoch record."""
    import pyarrow.parquet as pq

    src = epochs_source(run_dir)
    if src is None:
        raise FileNotFoundError(f"{Path(run_dir) / EPOCHS}: no epoch record")
    if src.is_file():
        return _checked_epochs(resolve(_read_parquet_file(src)), src)
    for attempt in range(5):
        try:
            tables = [t for _, p in list_parts(src) if (t := _read_part(p)) is not None]
            break
        except FileNotFoundError:  # parts merged away while we read (the recorder is writing): read again
            if attempt == 4:
                raise
            time.sleep(0.05)
    schema_part = part_path(src, SCHEMA_PART)
    if not tables:
        schema = _read_part(schema_part) if schema_part.is_file() else None
        if schema is not None:
            return schema
        import pyarrow as pa

        return pa.table({"trial_id": pa.array([], pa.string()), "epoch": pa.array([], pa.int64())})
    try:
        table = resolve(tables[0] if len(tables) == 1 else concat(tables))
    except (ValueError, TypeError, KeyError) as exc:  # parts whose columns cannot be one table (ArrowInvalid)
        raise damaged(src, exc) from None
    table = _checked_epochs(table, src)
    if SEQ in table.column_names:
        import pyarrow.compute as pc

        table = table.take(pc.sort_indices(table, [(SEQ, "ascending")]))
    return table


def read_epochs(run_dir: str | Path) -> pd.DataFrame:
    """One row per (trial, epoch), the same during a run and after it (see the module's doc).

    Rows by trial (in the order the trials first reported), then by epoch; ``trial_status`` as in
    ``trials.parquet`` when there is one. A run folder with ``epochs.parquet`` a single file reads as it is."""
    src = epochs_source(run_dir)
    df = read_epoch_table(run_dir).to_pandas()
    if SEQ in df.columns:
        seq = df[SEQ].to_numpy()
        first = pd.Series(seq).groupby(df["trial_id"].to_numpy(), sort=False).transform("min").to_numpy()
        order = np.lexsort((df["epoch"].to_numpy(), first))
        df = df.iloc[order].drop(columns=[SEQ]).reset_index(drop=True)
    trials = Path(run_dir) / "trials.parquet"
    if src is not None and src.is_dir() and len(df) and trials.is_file():
        status = read_trials(run_dir).drop_duplicates("trial_id", keep="last").set_index("trial_id")["status"]
        fresh = df["trial_id"].map(status)
        if "trial_status" in df.columns:
            fresh = fresh.where(fresh.notna(), df["trial_status"])
        df["trial_status"] = fresh.astype(df["trial_status"].dtype if "trial_status" in df.columns else "str")
    return df


def _read_parquet_file(path: Path):
    """A whole Parquet file as an Arrow table, or a :func:`damaged` error naming it."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).read()
    except FileNotFoundError:
        raise
    except (OSError, ValueError, TypeError, IndexError) as exc:  # ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise damaged(path, exc) from None


def _read_part(path: Path):
    """One part of the epoch record; an unreadable part (truncated by a crash, say) is skipped with a warning:
    the rest of the record still reads, and a resume takes what the part held from the checkpoints."""
    try:
        return _read_parquet_file(path)
    except ConfigError as exc:
        warn(f"{exc}; skipped")
        return None


def _checked_epochs(table, path: Path):
    if table.num_rows and not {"trial_id", "epoch"} <= set(table.column_names):
        raise damaged(path, "no trial_id and epoch columns")
    return table


# the columns every reader of trials.parquet relies on
_TRIAL_COLUMNS = ("trial_id", "status")


def read_trials(run_dir: str | Path) -> pd.DataFrame:
    path = Path(run_dir) / "trials.parquet"
    frame = _read_parquet_file(path).to_pandas()
    missing = [c for c in _TRIAL_COLUMNS if c not in frame.columns]
    if missing:
        raise damaged(path, f"no {missing[0]} column")
    return frame


def write_table(path: Path, table) -> None:
    import pyarrow.parquet as pq

    atomic_write_bytes(path, lambda tmp: pq.write_table(table, str(tmp)))


def remove_path(path: Path) -> None:
    """Remove a file or a folder (the epoch record of a run being written afresh)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
