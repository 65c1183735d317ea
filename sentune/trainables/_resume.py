"""A trial's resume checkpoint: the full state of its last finished epoch (or step), kept at a fixed place
so that a restarted trial finds it whoever restarted it (Tune after a node died, Ray Train after a worker
died, ``sentune resume`` after the sweep's own process died).

Layout under ``root`` (a local folder or any pyarrow URI: the job's storage, which every node reaches)::

    state-<epoch>-<step>/rank-<r>.state one file per worker (each holds its own RNG state)
    LATEST                              the name of the newest complete state folder
    FINISHED                            the driver's word that the trial is over (stopped or completed)
    config.json                         the trial's config, written when it first starts

A state folder is complete once ``LATEST`` names it (written last, after every worker has written its
file); older folders are then removed, so only the latest is kept, and once the trial is over (``FINISHED``)
none is, unless second chances may revive it. A one-worker trial writes its file before it
reports the epoch and names it LATEST after the report (:meth:`ResumeStore.write_uncommitted`): the newer folder of
a trial stopped at that report stays uncommitted, for a second chance to go on from, or is removed when the
driver marks the trial finished. A state is a :class:`ResumeState`;
the same state also travels in a PBT checkpoint folder as ``train-state.state`` (:func:`write_train_state`),
for another trial to go on from. Neither Ray, torch nor TensorFlow.

A run folder may come from elsewhere, so nothing here trusts what it reads: ``LATEST`` must be a state
name of the exact form ``state-NNNNNN-NNNNNNNNN`` (anything else counts as no state, so no path is built
from it), and a state file is read by :mod:`sentune._safe_state` (no pickle: a crafted file fails to load,
it never runs code).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from sentune import _safe_state
from sentune._atomic import atomic_write_text
from sentune._log import warn

__all__ = ["TRAIN_STATE_FILE", "ResumeState", "ResumeStore", "read_train_state", "trial_ids", "write_train_state"]

# in a checkpoint folder that carries the train state (LoopContext.state_in_checkpoint), sentune._safe_state's format
TRAIN_STATE_FILE = "train-state.state"

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


@dataclass
class ResumeState:
    """Where one worker's run stands: everything it needs to go on with the results it would have had
    without the interruption. Written as a plain mapping of these fields (:meth:`to_dict`)."""

    epoch: int  # the epoch to train next
    pos: int  # where in that epoch's shard to start (0: at its start)
    step: int  # optimizer steps taken so far: the lr schedule's position
    partial: dict | None  # resumed inside an epoch: its loss/correct/rows sums, grad norms and seconds so far
    history: list[dict]  # the metrics of every finished epoch
    best_value: float | None  # the monitored metric's best so far (None before the first epoch)
    best_epoch: int  # 0 before the first epoch
    best_state: Any  # the best epoch's weights (LoopHooks.snapshot), or None
    train: Any  # LoopHooks.train_state(): weights, optimizer, the framework's RNG states

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # not asdict: it would copy the weights

    @classmethod
    def from_dict(cls, state: Any, where: str) -> ResumeState:
        """The state a file held; anything else is a :class:`~sentune._safe_state.StateFormatError` naming ``where``."""
        if not isinstance(state, dict):
            raise _safe_state.StateFormatError(f"{where}: a resume state is a mapping")
        missing = [f.name for f in fields(cls) if f.name not in state]
        if missing:
            raise _safe_state.StateFormatError(f"{where}: a resume state needs {missing[0]!r}")
        out = cls(**{f.name: state[f.name] for f in fields(cls)})
        counts = (out.epoch, out.pos, out.step, out.best_epoch)
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
            raise _safe_state.StateFormatError(f"{where}: a resume state's epoch, pos, step and best epoch are counts")
        if not isinstance(out.history, list) or not (out.partial is None or isinstance(out.partial, dict)):
            raise _safe_state.StateFormatError(f"{where}: a resume state's history is a list, its partial a mapping")
        return out

    def without_best(self) -> ResumeState:
        """This state with no best epoch yet (a PBT trial that takes over another's state: the weights and
        the peak it reports are then those of the epochs it trains itself)."""
        return replace(self, best_value=None, best_epoch=0, best_state=None)


def write_train_state(folder: Path, state: ResumeState) -> None:
    """Put ``state`` into a checkpoint folder (PBT: another trial may go on from it)."""
    atomic_write_text(folder / TRAIN_STATE_FILE, _safe_state.dumps(state.to_dict()))


def read_train_state(folder: Path) -> ResumeState | None:
    """The train state a checkpoint folder carries, or None; a file sentune did not write is a
    :class:`~sentune._safe_state.StateFormatError` (it is parsed, never unpickled)."""
    path = folder / TRAIN_STATE_FILE
    if not path.is_file():
        return None
    return ResumeState.from_dict(_safe_state.loads(path.read_bytes(), str(path)), str(path))


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
    n optimizer steps inside an epoch (for long epochs; None: only at epoch ends); ``min_interval_s``: an
    epoch's state only once that many seconds have passed since the run started or last wrote one (the
    last epoch's always)."""

    def __init__(
        self, root: str, *, every_epochs: int = 1, every_steps: int | None = None, min_interval_s: float = 0.0
    ):
        self.root = str(root).rstrip("/")
        self.every_epochs, self.every_steps, self.min_interval_s = every_epochs, every_steps, min_interval_s
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

    def _write(self, data: bytes | list, *parts: str) -> None:
        """Write whole or not at all: a temporary name, then a rename (a copy on object stores). ``data``: the
        bytes, or buffers written one after another (:func:`~sentune._safe_state.frames`)."""
        path = self._p(*parts)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        pieces = data if isinstance(data, list) else [data]
        if "://" not in self.root:  # a local folder: plain file calls (a state is written every epoch)
            os.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with open(tmp, "wb") as f:
                for piece in pieces:
                    f.write(piece)
            os.replace(tmp, path)
            return
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(tmp) as f:
            for piece in pieces:
                f.write(piece)
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
        """The newest complete state for worker ``rank`` (rank 0's when the worker count changed) as the
        mapping it was written as, or None (:meth:`load_state` reads it as a :class:`ResumeState`).

        A state file that is not one sentune wrote is a :class:`~sentune._safe_state.StateFormatError`."""
        found = self._load(rank)
        return None if found is None else found[1]

    def load_state(self, rank: int = 0) -> ResumeState | None:
        """The newest complete state for worker ``rank`` (see :meth:`load`), or None."""
        found = self._load(rank)
        return None if found is None else ResumeState.from_dict(found[1], found[0])

    def _load(self, rank: int) -> tuple[str, dict] | None:
        """(where, the state's mapping) of the newest complete state for worker ``rank``, or None."""
        name = self.latest()
        if name is None:
            return None
        data = self._read(name, _STATE_FILE.format(rank=rank)) or self._read(name, _STATE_FILE.format(rank=0))
        if data is None:
            return None
        where = self._p(name, _STATE_FILE.format(rank=rank))
        state = _safe_state.loads(data, where)
        if not isinstance(state, dict):
            raise _safe_state.StateFormatError(f"{self._p(name)}: a resume state is a mapping")
        return where, state

    def save_state(self, state: ResumeState, *, rank: int, barrier: Callable[[], Any]) -> None:
        """Write ``state`` as this worker's part of the state named by its epoch and step (see :meth:`save`)."""
        self.save(state.to_dict(), epoch=state.epoch, step=state.step, rank=rank, barrier=barrier)

    def write_uncommitted(self, state: ResumeState) -> str:
        """Write a one-worker trial's state without naming it LATEST; returns its name for :meth:`commit`. The
        loop writes it before it reports the epoch and commits it after: a failure in between goes on from the
        state before (the epoch is repeated, its row replaced), and a trial the scheduler stops at that report
        still leaves this state, which :meth:`reopen` takes up for a second chance (the record has that epoch's
        row: the scheduler stopped the trial on it)."""
        name = f"state-{state.epoch:06d}-{state.step:09d}"
        self._write(_safe_state.frames(state.to_dict()), name, _STATE_FILE.format(rank=0))
        return name

    def commit(self, name: str) -> None:
        """Name the state ``name`` (complete: every worker's file written) LATEST; the one before is removed."""
        old = self.latest()  # a checked state name, or None
        self._write(name.encode(), _LATEST)
        if old and old != name:
            self.fs.delete_dir(self._p(old))

    def _uncommitted(self, epoch: int) -> str | None:
        """The newest state folder of ``epoch`` with rank 0's file in it that LATEST does not name yet (a
        one-worker trial stopped at the report that would have committed it), or None."""
        import pyarrow.fs as pafs

        for name in reversed(self._states_after(self.latest())):
            match = _STATE_NAME.match(name)  # (every name _states_after gives matches)
            if match is None or int(match.group(1)) != epoch:
                continue
            if self.fs.get_file_info(self._p(name, _STATE_FILE.format(rank=0))).type == pafs.FileType.File:
                return name
        return None

    def save(self, state: dict, *, epoch: int, step: int, rank: int, barrier: Callable[[], Any]) -> None:
        """Every worker writes its state; after ``barrier`` (all have written) rank 0 names it LATEST and
        removes the older ones."""
        name = f"state-{epoch:06d}-{step:09d}"
        self._write(_safe_state.frames(state), name, _STATE_FILE.format(rank=rank))
        barrier()
        if rank == 0:
            self.commit(name)

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

    def mark_finished(self, status: str, last: dict | None = None, *, keep_state: bool = False) -> None:
        """The trial is over: a restarted driver of it returns at once, reporting ``last`` again. Its states are
        removed (a sweep of hundreds of trials would otherwise keep each one's weights and optimizer state in the
        run folder), unless ``keep_state``: a stopped trial that second chances may revive keeps them, the
        uncommitted one too (see :meth:`write_uncommitted`). Without ``last`` the latest state stays (a restarted
        driver reads the last result from its history)."""
        self._write(json.dumps({"status": status, "last": last}, default=str).encode(), _FINISHED)
        if keep_state:
            return
        latest = self.latest()
        for name in self._states_after(None if last is not None else latest):
            self.fs.delete_dir(self._p(name))
        if last is not None and latest is not None:
            self.fs.delete_file(self._p(_LATEST))

    def _states_after(self, latest: str | None) -> list[str]:
        """The state folders newer than ``latest`` (all of them when it is None), oldest first."""
        import pyarrow.fs as pafs

        found = self.fs.get_file_info(pafs.FileSelector(self._p(), allow_not_found=True))
        names = sorted(i.base_name for i in found if i.type == pafs.FileType.Directory)
        return [n for n in names if _STATE_NAME.match(n) and (latest is None or n > latest)]

    def reopen(self, trained: int | None = None) -> None:
        """The trial is to go on (a second chance): the driver's word that it was over is taken back. A trial
        that had trained ``trained`` epochs goes on from the state it wrote after the last of them, committed
        or not (see :meth:`write_uncommitted`), instead of training that epoch again."""
        import pyarrow.fs as pafs

        path = self._p(_FINISHED)
        if self.fs.get_file_info(path).type == pafs.FileType.File:
            self.fs.delete_file(path)
        pending = self._uncommitted(trained + 1) if trained is not None else None
        if pending is not None:
            self.commit(pending)

    def history(self) -> list[dict]:
        """The epoch metrics the latest state holds (to fill a record that missed the last few)."""
        state = self.load(0)
        return list(state.get("history", [])) if state else []
