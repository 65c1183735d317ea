"""Rows as tables: how a value is stored in a Parquet cell, Arrow tables built from rows and put one under
the other, the rule that resolves an epoch record's rows, and a cell as text. No files here."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from sentune.results._layout import SEQ

__all__ = ["plain_value", "rows_frame", "rows_table", "unify_schemas", "conform", "concat", "keep_mask", "resolve",
           "cell_text"]  # fmt: skip


def plain_value(value: Any) -> Any:
    """A Parquet-friendly cell: lists/dicts/None-mixed values become JSON text."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def rows_frame(rows: list[dict]) -> pd.DataFrame:
    """A pandas frame of ``rows``; a column of mixed kinds (or of anything but text) becomes JSON text."""
    df = pd.DataFrame(rows)
    for col in df.columns:
        if df[col].dtype == object:
            kinds = {type(v) for v in df[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
            if len(kinds) > 1 or (kinds and not kinds <= {str}):
                df[col] = [None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in df[col]]
    return df


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

    Types as :func:`rows_frame` stores them: numbers, booleans and text as such, anything mixed as JSON
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


def cell_text(value) -> str:
    """A table cell as text: ``-`` for a missing value, four significant digits for a float."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
