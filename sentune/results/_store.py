"""Reading and writing the files of a run folder (their names: :mod:`sentune.results._layout`).

Every file is written to a temporary name and renamed (:mod:`sentune._atomic`), so a crash never leaves
half a file. Plain ``pandas.read_parquet`` (and ``pyarrow.dataset``) reads the Parquet files,
``epochs.parquet`` included; nothing here imports Ray, TensorFlow or torch. A file that cannot be read
is one line naming it (:func:`damaged`).

The epoch record ``epochs.parquet/`` is a Parquet dataset (a folder of ``part-NNNNNN.parquet`` files) that
grows by appending: while a run goes on, each write of the recorder puts the rows that came since the last
one in a new part, and every row carries ``_seq``, a number that grows with every row written.
``part-000000.parquet`` holds no rows, only the schema of every part so far (so a reader that takes its
schema from the first file gets all columns). Small parts are merged as they pile up. When the run ends
the recorder compacts the folder to a single part holding exactly one row per (trial_id, epoch), with
``trial_status`` taken from the trial table.

During a run the folder may hold a row more than once: a trial retried after a failure may report an
epoch again, and a row is written again when its checkpoint arrives. The row written last wins, and a
trial's re-report of epoch ``e`` also voids its rows of later epochs written before it (the retry starts
over from there). :func:`read_epochs` applies that rule (a plain reader may do it itself: for each trial,
keep a row only if no row with a larger ``_seq`` has an epoch at or below its own). ``trial_status`` in
the rows is the status when the row was written, so during a run it may be stale; :func:`read_epochs`
takes it from ``trials.parquet``. A plain read that meets a merge (parts written, then removed) may see a
row twice or fail with FileNotFoundError; read again. An ``epochs.parquet`` that is a single Parquet file
(written by another tool, say) reads as it is.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from sentune._atomic import atomic_write_bytes
from sentune._log import warn
from sentune.errors import ConfigError
from sentune.results._layout import (
    EPOCHS,
    EPOCHS_SET_ASIDE,
    EVALUATION,
    PART_NAME,
    REFERENCE,
    RUN_INFO,
    SCHEMA_PART,
    SEQ,
    STATUS_COMPLETED,
    STATUS_ERRORED,
    STATUS_RUNNING,
    STATUS_STOPPED,
    TRIALS,
    part_name,
)
from sentune.results._tables import concat, resolve, rows_frame, rows_table

__all__ = [
    "atomic_write_bytes", "write_parquet", "write_table", "write_text", "write_run_info", "read_run_info",
    "read_epochs", "read_epoch_table", "read_trials", "read_json_file", "read_parquet_file", "read_part",
    "damaged", "validated", "part_path", "list_parts", "epochs_source", "has_epochs", "remove_path",
    "read_evaluations", "write_evaluations", "read_reference", "write_reference", "rows_table",
    "STATUS_COMPLETED", "STATUS_STOPPED", "STATUS_ERRORED", "STATUS_RUNNING", "filesystem", "parse_heartbeat",
]  # fmt: skip


def filesystem(uri: str):
    """pyarrow's file system and path for a storage URI; a URI it cannot open is one line."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{uri}: not a storage URI pyarrow can open ({reason})") from None


def parse_heartbeat(data: bytes | None) -> float | None:
    """The time a heartbeat file holds; a missing or unreadable one (half-written, not a number) is none."""
    try:
        beat = float(data.decode("ascii")) if data else None
    except (ValueError, UnicodeDecodeError):
        return None
    return beat if beat is not None and math.isfinite(beat) else None


def write_parquet(path: Path, rows: list[dict]) -> None:
    df = rows_frame(rows)
    atomic_write_bytes(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_table(path: Path, table) -> None:
    """An Arrow table as a Parquet file."""
    import pyarrow.parquet as pq

    atomic_write_bytes(path, lambda tmp: pq.write_table(table, str(tmp)))


def write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_run_info(run_dir: Path, info: dict) -> None:
    text = json.dumps(info, indent=1, default=str)
    atomic_write_bytes(Path(run_dir) / RUN_INFO, lambda tmp: Path(tmp).write_text(text))


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
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a sentune run folder (no {RUN_INFO})")
    info = validated(path, _RunInfo, read_json_file(path))
    missing = [k for k in require if info.get(k) is None]
    if missing:
        raise damaged(path, f"no {missing[0]}")
    return info


# ---- the epoch record ----


def part_path(folder: Path, number: int) -> Path:
    return Path(folder) / part_name(number)


def list_parts(folder: Path) -> list[tuple[int, Path]]:
    """The numbered parts of an epoch folder, in order, without the schema part."""
    found = []
    if Path(folder).is_dir():
        for p in Path(folder).iterdir():
            m = PART_NAME.match(p.name)
            if m and int(m.group(1)) != SCHEMA_PART and p.is_file():
                found.append((int(m.group(1)), p))
    return sorted(found)


def epochs_source(run_dir: str | Path) -> Path | None:
    """Where a run's epoch record is: the folder (or a single file); None when there is none."""
    path = Path(run_dir) / EPOCHS
    if path.exists():
        return path
    aside = Path(run_dir) / EPOCHS_SET_ASIDE
    return aside if aside.is_file() else None


def has_epochs(run_dir: str | Path) -> bool:
    return epochs_source(run_dir) is not None


def read_epoch_table(run_dir: str | Path):
    """The epoch record as one Arrow table of the rows that survive, ``_seq`` kept (in written order).

    Raises FileNotFoundError when the run has no epoch record."""
    src = epochs_source(run_dir)
    if src is None:
        raise FileNotFoundError(f"{Path(run_dir) / EPOCHS}: no epoch record")
    if src.is_file():
        return _checked_epochs(resolve(read_parquet_file(src)), src)
    tables = _read_parts(src)
    if not tables:
        return _schema_only(src)
    try:
        table = resolve(tables[0] if len(tables) == 1 else concat(tables))
    except (ValueError, TypeError, KeyError) as exc:  # parts whose columns cannot be one table (ArrowInvalid)
        raise damaged(src, exc) from None
    table = _checked_epochs(table, src)
    if SEQ in table.column_names:
        import pyarrow.compute as pc

        table = table.take(pc.sort_indices(table, [(SEQ, "ascending")]))
    return table


def _read_parts(folder: Path) -> list:
    """The tables of the folder's numbered parts (unreadable ones skipped), read again when a merge removed
    a part while they were read."""
    attempts = 5
    while True:
        try:
            return [t for _, p in list_parts(folder) if (t := read_part(p)) is not None]
        except FileNotFoundError:  # parts merged away while we read (the recorder is writing): read again
            attempts -= 1
            if not attempts:
                raise
            time.sleep(0.05)


def _schema_only(folder: Path):
    """A folder without rows: the schema part's columns (or just trial_id and epoch)."""
    import pyarrow as pa

    schema_part = part_path(folder, SCHEMA_PART)
    schema = read_part(schema_part) if schema_part.is_file() else None
    if schema is not None:
        return schema
    return pa.table({"trial_id": pa.array([], pa.string()), "epoch": pa.array([], pa.int64())})


def read_epochs(run_dir: str | Path, *, trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (trial, epoch), the same during a run and after it (see the module's doc).

    Rows by trial (in the order the trials first reported), then by epoch; ``trial_status`` as in
    ``trials.parquet`` when there is one (``trials``: that table, already read). A single-file
    ``epochs.parquet`` reads as it is."""
    src = epochs_source(run_dir)
    df = read_epoch_table(run_dir).to_pandas()
    if SEQ in df.columns:
        seq = df[SEQ].to_numpy()
        first = pd.Series(seq).groupby(df["trial_id"].to_numpy(), sort=False).transform("min").to_numpy()
        order = np.lexsort((df["epoch"].to_numpy(), first))
        df = df.iloc[order].drop(columns=[SEQ]).reset_index(drop=True)
    if src is not None and src.is_dir() and len(df) and (trials is not None or (Path(run_dir) / TRIALS).is_file()):
        table = read_trials(run_dir) if trials is None else trials
        status = table.drop_duplicates("trial_id", keep="last").set_index("trial_id")["status"]
        fresh = df["trial_id"].map(status)
        if "trial_status" in df.columns:
            fresh = fresh.where(fresh.notna(), df["trial_status"])
        df["trial_status"] = fresh.astype(df["trial_status"].dtype if "trial_status" in df.columns else "str")
    return df


def read_parquet_file(path: Path):
    """A whole Parquet file as an Arrow table, or a :func:`damaged` error naming it."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).read()
    except FileNotFoundError:
        raise
    except (OSError, ValueError, TypeError, IndexError) as exc:  # ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise damaged(path, exc) from None


def read_part(path: Path):
    """One part of the epoch record; an unreadable part (truncated by a crash, say) is skipped with a warning:
    the rest of the record still reads, and a resume takes what the part held from the checkpoints."""
    try:
        return read_parquet_file(path)
    except ConfigError as exc:
        warn(f"{exc}; skipped")
        return None


def _checked_epochs(table, path: Path):
    if table.num_rows and not {"trial_id", "epoch"} <= set(table.column_names):
        raise damaged(path, "no trial_id and epoch columns")
    return table


# the columns every reader of trials.parquet relies on
_TRIAL_COLUMNS = ("trial_id", "status", "epochs_run", "peak_metric", "peak_epoch")
_TRIAL_NUMBERS = ("epochs_run", "peak_metric", "peak_epoch", "trial_seconds")


def read_trials(run_dir: str | Path) -> pd.DataFrame:
    """trials.parquet, with the columns every reader relies on checked (a config that is not JSON too)."""
    path = Path(run_dir) / TRIALS
    frame = read_parquet_file(path).to_pandas()
    missing = [c for c in _TRIAL_COLUMNS if c not in frame.columns]
    if missing:
        raise damaged(path, f"no {missing[0]} column")
    for col in _TRIAL_NUMBERS:  # numbers, or missing (a trial that has not reported yet)
        if col in frame and not pd.api.types.is_numeric_dtype(frame[col]):
            values = frame[col].dropna()
            if len(values) and (
                values.map(type).isin([bool, str, bytes]).any() or pd.to_numeric(values, errors="coerce").isna().any()
            ):
                raise damaged(path, f"{col} is not a number")
    if "config_json" in frame:
        for text in frame["config_json"]:
            try:
                ok = isinstance(json.loads(text), dict)
            except (TypeError, ValueError, RecursionError):
                ok = False
            if not ok:
                raise damaged(path, "a config_json that is not a JSON object")
    return frame


def remove_path(path: Path) -> None:
    """Remove a file or a folder (the epoch record of a run being written afresh)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# ---- evaluation.json and reference.json ----


class _Figures(BaseModel):
    model_config = ConfigDict(extra="allow")
    macro_f1: float | None = None
    acc: float | None = None
    loss: float | None = None
    score: float | None = None


class _Evaluation(BaseModel):
    model_config = ConfigDict(extra="allow")
    trial_id: str
    row: str
    dev: _Figures | None = None
    test: _Figures | None = None


class _Reference(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    dev: _Figures | None = None
    test: _Figures | None = None


def _write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, default=float))


def _read_json(path: Path, model):
    return validated(path, model, read_json_file(path)) if path.is_file() else None


def write_reference(run_dir: str | Path, figures: dict) -> None:
    _write_json(Path(run_dir) / REFERENCE, figures)


def read_reference(run_dir: str | Path) -> dict | None:
    """The reference model's figures (``model``, ``dev`` / ``test``: macro_f1, acc, loss), or None."""
    return _read_json(Path(run_dir) / REFERENCE, _Reference)


def write_evaluations(run_dir: str | Path, evaluations: dict) -> None:
    """``{"best": {...}, "best_baseline": {...}}``; each: ``trial_id`` (evaluated), ``row`` (its leaderboard
    row: the trial a confirmation run confirms), ``dev`` / ``test`` (macro_f1, acc)."""
    _write_json(Path(run_dir) / EVALUATION, evaluations)


def read_evaluations(run_dir: str | Path) -> dict:
    return _read_json(Path(run_dir) / EVALUATION, dict[str, _Evaluation]) or {}
