"""The Parquet store of a run: ``results/<job>/<run>/``.

``epochs.parquet``  one row per (trial, epoch): ``config/<name>`` columns and every metric
``trials.parquet``  one row per trial: status, epochs run, peak metric and its epoch, checkpoint
``run.json``        the job's name, trainable, metric/mode, class names, data and search space

Every file is written to a temporary name and renamed, so a crash never leaves half a file.
Plain ``pandas.read_parquet`` reads them; nothing here imports TensorFlow or torch.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["atomic_write_bytes", "write_parquet", "write_run_info", "read_run_info", "read_epochs", "read_trials",
           "STATUS_COMPLETED", "STATUS_STOPPED", "STATUS_ERRORED", "STATUS_RUNNING"]

STATUS_COMPLETED = "completed"
STATUS_STOPPED = "stopped_early"
STATUS_ERRORED = "errored"
STATUS_RUNNING = "running"


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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


def read_run_info(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        from sentune.errors import ConfigError

        raise ConfigError(f"{run_dir} is not a sentune run folder (no run.json)")
    return json.loads(path.read_text())


def read_epochs(run_dir: str | Path) -> pd.DataFrame:
    return pd.read_parquet(Path(run_dir) / "epochs.parquet")


def read_trials(run_dir: str | Path) -> pd.DataFrame:
    return pd.read_parquet(Path(run_dir) / "trials.parquet")
