"""The runs under a storage path or URI, for ``sentune runs``: one row per run folder (``<job>/<run>/``)."""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path

import pandas as pd

from sentune._direction import Direction
from sentune.errors import SentuneError
from sentune.results._layout import HEARTBEAT, HEARTBEAT_EVERY_S, RUN_INFO, TRIALS
from sentune.results._store import damaged, filesystem, parse_heartbeat

__all__ = ["HEARTBEAT", "HEARTBEAT_EVERY_S", "list_runs", "run_status"]


def run_status(info: dict, heartbeat: float | None, *, now: float | None = None) -> str:
    """finished / interrupted / running: a run whose record says running but whose driver has not beaten
    for a while (killed, its machine gone) is interrupted."""
    status = info.get("status") if isinstance(info.get("status"), str) else None
    if status == "running":
        now = time.time() if now is None else now
        alive = heartbeat is not None and now - heartbeat < 4 * HEARTBEAT_EVERY_S
        return "running" if alive else "interrupted"
    return status or "finished"  # nothing in run.json says it runs: taken as finished


class _Folder:
    """A storage root, local or behind a URI, read through pyarrow's file systems."""

    def __init__(self, root: str | Path):
        import pyarrow.fs as pafs

        root = str(root)
        if "://" in root:
            self.fs, self.root = filesystem(root)
        else:
            self.fs, self.root = pafs.LocalFileSystem(), str(Path(root).resolve())
        self.root = self.root.rstrip("/")

    def dirs(self, path: str) -> list[str]:
        import pyarrow.fs as pafs

        if self.fs.get_file_info(path).type != pafs.FileType.Directory:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(path))
        return sorted(i.path for i in infos if i.type == pafs.FileType.Directory)

    def read(self, path: str) -> bytes | None:
        import pyarrow.fs as pafs

        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            return f.readall()

    def trials(self, run: str) -> pd.DataFrame | None:
        data = self.read(f"{run}/{TRIALS}")
        if data is None:
            return None
        try:
            frame = pd.read_parquet(io.BytesIO(data))
        except (OSError, ValueError, TypeError, IndexError) as exc:
            raise damaged(f"{run}/{TRIALS}", exc) from None
        if "peak_metric" in frame and not pd.api.types.is_numeric_dtype(frame["peak_metric"]):
            raise damaged(f"{run}/{TRIALS}", "peak_metric is not a number")
        return frame

    def info(self, run: str) -> dict:
        data = self.read(f"{run}/{RUN_INFO}") or b"{}"
        try:
            info = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            raise damaged(f"{run}/{RUN_INFO}", exc) from None
        if not isinstance(info, dict):
            raise damaged(f"{run}/{RUN_INFO}", "not a JSON object")
        return info

    def heartbeat(self, run: str) -> float | None:
        """The driver's last beat; an unreadable heartbeat (half-written, not a number) counts as none."""
        return parse_heartbeat(self.read(f"{run}/{HEARTBEAT}"))


def list_runs(storage: str | Path) -> pd.DataFrame:
    """job, run, kind, started (local time), status, trials, best metric, wall seconds; newest first. A
    storage root holds job folders; a job folder (or a run folder) is taken as it is."""
    folder = _Folder(storage)
    candidates = []
    for path in [folder.root, *folder.dirs(folder.root)]:
        if folder.read(f"{path}/{RUN_INFO}") is not None:
            candidates.append(path)
        else:
            candidates += [r for r in folder.dirs(path) if folder.read(f"{r}/{RUN_INFO}") is not None]
    rows = []
    for run in candidates:
        try:
            rows.append(_row(folder, run))
        except (SentuneError, OSError) as exc:  # one damaged run does not hide the others
            reason = str(exc).removeprefix(f"{run}/")
            rows.append({"job": run.rsplit("/", 2)[-2] if run.count("/") else None, "run": run.rsplit("/", 1)[-1],
                         "status": f"broken ({reason[:200]})"})  # fmt: skip
    frame = pd.DataFrame(rows, columns=_COLUMNS)
    return frame.sort_values(["started", "run"], ascending=False, na_position="last").reset_index(drop=True)


_COLUMNS = ["job", "run", "kind", "started", "status", "trials", "best", "metric", "wall_s"]


def _row(folder: _Folder, run: str) -> dict:
    info = folder.info(run)
    trials = folder.trials(run)
    best = None
    if trials is not None and len(trials) and "peak_metric" in trials and trials.peak_metric.notna().any():
        scores = Direction("min" if info.get("mode") == "min" else "max").score(trials.peak_metric)
        best = float(trials.peak_metric[scores.idxmax()])
    wall = info.get("wall_seconds")
    return {
        "job": _text(info.get("job")),
        "run": _text(info.get("run_id")) or run.rsplit("/", 1)[-1],
        "kind": _text(info.get("kind")),
        "started": _when(info.get("started_at")),
        "status": run_status(info, folder.heartbeat(run)),
        "trials": 0 if trials is None else len(trials),
        "best": best,
        "metric": _text(info.get("metric")),
        "wall_s": float(wall) if isinstance(wall, (int, float)) and not isinstance(wall, bool) else None,
    }


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


def _when(stamp) -> str | None:
    if not isinstance(stamp, (int, float)) or isinstance(stamp, bool) or not math.isfinite(stamp):
        return None
    try:
        return time.strftime("%Y-%m-%dT%H:%M", time.localtime(stamp))
    except (OverflowError, OSError, ValueError):
        return None
