"""The runs under a storage path or URI, for ``sentune runs``: one row per run folder (``<job>/<run>/``)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pandas as pd

from sentune._direction import Direction

__all__ = ["HEARTBEAT", "HEARTBEAT_EVERY_S", "list_runs", "run_status"]

HEARTBEAT = "heartbeat"  # a running sweep's driver writes the time here every HEARTBEAT_EVERY_S
HEARTBEAT_EVERY_S = 15.0


def run_status(info: dict, heartbeat: float | None, *, now: float | None = None) -> str:
    """finished / interrupted / running: a run whose record says running but whose driver has not beaten
    for a while (killed, its machine gone) is interrupted."""
    status = info.get("status")
    if status == "running":
        now = time.time() if now is None else now
        alive = heartbeat is not None and now - heartbeat < 4 * HEARTBEAT_EVERY_S
        return "running" if alive else "interrupted"
    return status or "finished"  # runs written before run.json had a status ended before it was read


class _Folder:
    """A storage root, local or behind a URI, read through pyarrow's file systems."""

    def __init__(self, root: str | Path):
        import pyarrow.fs as pafs

        root = str(root)
        if "://" in root:
            self.fs, self.root = pafs.FileSystem.from_uri(root)
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
        data = self.read(f"{run}/trials.parquet")
        return None if data is None else pd.read_parquet(io.BytesIO(data))


def list_runs(storage: str | Path) -> pd.DataFrame:
    """job, run, kind, started (local time), status, trials, best metric, wall seconds; newest first. A
    storage root holds job folders; a job folder (or a run folder) is taken as it is."""
    folder = _Folder(storage)
    candidates = []
    for path in [folder.root, *folder.dirs(folder.root)]:
        if folder.read(f"{path}/run.json") is not None:
            candidates.append(path)
        else:
            candidates += [r for r in folder.dirs(path) if folder.read(f"{r}/run.json") is not None]
    rows = []
    for run in candidates:
        info = json.loads(folder.read(f"{run}/run.json") or b"{}")
        beat = folder.read(f"{run}/{HEARTBEAT}")
        trials = folder.trials(run)
        best = None
        if trials is not None and len(trials) and "peak_metric" in trials and trials.peak_metric.notna().any():
            scores = Direction(info.get("mode") or "max").score(trials.peak_metric)
            best = float(trials.peak_metric[scores.idxmax()])
        rows.append({
            "job": info.get("job"),
            "run": info.get("run_id") or run.rsplit("/", 1)[-1],
            "kind": info.get("kind"),
            "started": _when(info.get("started_at")),
            "status": run_status(info, float(beat) if beat else None),
            "trials": 0 if trials is None else len(trials),
            "best": best,
            "metric": info.get("metric"),
            "wall_s": info.get("wall_seconds"),
        })
    frame = pd.DataFrame(rows, columns=["job", "run", "kind", "started", "status", "trials", "best", "metric", "wall_s"])
    return frame.sort_values(["started", "run"], ascending=False, na_position="last").reset_index(drop=True)


def _when(stamp: float | None) -> str | None:
    return None if stamp is None else time.strftime("%Y-%m-%dT%H:%M", time.localtime(stamp))
