"""A trial's resume checkpoint: the full state of its last finished epoch (or step), kept at a fixed place
so that a restarted trial finds it whoever restarted it (Tune after a node died, Ray Train after a worker
died, ``sentune resume`` after the sweep's own process died).

Layout under ``root`` (a local folder or any pyarrow URI: the job's storage, which every node reaches)::

    state-<epoch>-<step>/rank-<r>.state one file per worker (each holds its own RNG state)
    LATEST                              the name of the newest complete state folder
    FINISHED                            the driver's word that the trial is over (stopped or completed)
    config.json                         the trial's config, written when it first starts

A state folder is complete once ``LATEST`` names it (written last, after every worker has written its
file); older folders are then removed, so only the latest is kept. Neither Ray, torch nor TensorFlow.

A run folder may come from elsewhere, so nothing here trusts what it reads: ``LATEST`` must be a state
name of the exact form ``state-NNNNNN-NNNNNNNNN`` (anything else counts as no state, so no path is built
from it), and a state file is read by :mod:`sentune._safe_state` (no pickle: a crafted file fails to load,
it never runs code).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

from sentune import _safe_state
from sentune._log import warn

__all__ = ["ResumeStore", "trial_ids"]

_LATEST, _FINISHED, _CONFIG = "LATEST", "FINISHED", "config.json"
_STATE_NAME = re.compile(r"^state-(\d{6})-(\d{9})$")
_STATE_FILE = "rank-{rank}.state"


def _json_object(data: bytes | None) -> dict | None:
    """A JSON object from a small file, or None when it is missing or not one."""
    if data is None:
        return None
    try:
        out = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return out if isinstance(out, dict) else None


def trial_ids(root: str) -> list[str]:
    """The trials that have a folder under a resume root."""
    import pyarrow.fs as pafs

    fs, path = _filesystem(root)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    return sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(path)) if i.type == pafs.FileType.Directory)


def _filesystem(root: str):
    import pyarrow.fs as pafs

    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), root


class ResumeStore:
    """Where one trial keeps its resume checkpoint, and how often it writes one.

    ``every_epochs``: write at the end of every n-th epoch (and the last); ``every_steps``: also every
    n optimizer steps inside an epoch (for long epochs; None: only at epoch ends)."""

    def __init__(self, root: str, *, every_epochs: int = 1, every_steps: int | None = None):
        self.root = str(root).rstrip("/")
        self.every_epochs, self.every_steps = every_epochs, every_steps
        self._fs = None

    def __getstate__(self):  # a pyarrow filesystem does not travel to a worker; it is made again there
        return {**self.__dict__, "_fs": None}

    @property
    def fs(self):
        if self._fs is None:
            self._fs, self._path = _filesystem(self.root)
        return self._fs

    def _p(self, *parts: str) -> str:
        self.fs  # noqa: B018 (sets _path)
        return "/".join([self._path, *parts])

    def _read(self, *parts: str) -> bytes | None:
        import pyarrow.fs as pafs

        path = self._p(*parts)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            return f.readall()

    def _write(self, data: bytes, *parts: str) -> None:
        """Write whole or not at all: a temporary name, then a rename (a copy on object stores)."""
        path = self._p(*parts)
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, path)

    # --- the trial's side
    def latest(self) -> str | None:
        """The newest complete state's folder name; None when there is none or ``LATEST`` holds anything but
        a state name (it is never joined into a path unchecked)."""
        data = self._read(_LATEST)
        if not data or len(data) > 64:
            return None
        name = data.decode("ascii", errors="replace").strip()
        if not _STATE_NAME.match(name):
            warn(f"{self._p(_LATEST)}: not a state name ({name[:40]!r}); the trial starts afresh")
            return None
        return name

    def next_epoch(self) -> int:
        """The epoch the latest state goes on from (1 when there is none), read off its name alone."""
        name = self.latest()
        match = _STATE_NAME.match(name) if name else None
        return int(match.group(1)) if match else 1

    def load(self, rank: int = 0) -> dict | None:
        """The newest complete state for worker ``rank`` (rank 0's when the worker count changed), or None.

        A state file that is not one sentune wrote is a :class:`~sentune._safe_state.StateFormatError`."""
        name = self.latest()
        if name is None:
            return None
        data = self._read(name, _STATE_FILE.format(rank=rank)) or self._read(name, _STATE_FILE.format(rank=0))
        if data is None:
            return None
        state = _safe_state.loads(data, self._p(name, _STATE_FILE.format(rank=rank)))
        if not isinstance(state, dict):
            raise _safe_state.StateFormatError(f"{self._p(name)}: a resume state is a mapping")
        return state

    def save(self, state: dict, *, epoch: int, step: int, rank: int, barrier: Callable[[], Any]) -> None:
        """Every worker writes its state; after ``barrier`` (all have written) rank 0 names it LATEST and
        removes the older ones."""
        name = f"state-{epoch:06d}-{step:09d}"
        self._write(_safe_state.dumps(state), name, _STATE_FILE.format(rank=rank))
        barrier()
        if rank != 0:
            return
        old = self.latest()  # a checked state name, or None
        self._write(name.encode(), _LATEST)
        if old and old != name:
            self.fs.delete_dir(self._p(old))

    def finished(self) -> bool:
        return self._read(_FINISHED) is not None

    def finished_result(self) -> dict | None:
        """None unless the driver marked the trial finished; then ``{"status": ..., "last": metrics or None}``
        (the last result it recorded, which a restarted driver reports again so that Tune sees the metric)."""
        data = self._read(_FINISHED)
        if data is None:
            return None
        out = _json_object(data)
        if out is None or not isinstance(out.get("status"), str):
            return {"status": data[:40].decode(errors="replace"), "last": None}
        return {"status": out["status"], "last": out.get("last") if isinstance(out.get("last"), dict) else None}

    def save_config(self, config: dict) -> None:
        """The trial's config, once: a resumed sweep can then record a trial its record had not seen."""
        if self._read(_CONFIG) is None:
            self._write(json.dumps(config, default=str).encode(), _CONFIG)

    # --- the driver's side
    def config(self) -> dict | None:
        return _json_object(self._read(_CONFIG))

    def mark_finished(self, status: str, last: dict | None = None) -> None:
        self._write(json.dumps({"status": status, "last": last}, default=str).encode(), _FINISHED)

    def history(self) -> list[dict]:
        """The epoch metrics the latest state holds (to fill a record that missed the last few)."""
        state = self.load(0)
        return list(state.get("history", [])) if state else []
