"""A run folder's life: where it lives (a local path, or a staging folder uploaded to a URI at the end), the
checks before anything runs (writable, one driver, same data on resume), ``run.json`` (the job resolved once,
its status), the heartbeat while the sweep runs, and the upload. Ray only to ask whether Tune's state is there."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sentune import results
from sentune._atomic import atomic_write_text
from sentune._uri import redact
from sentune.data import DataSplits
from sentune.errors import ConfigError
from sentune.results._store import damaged, parse_heartbeat
from sentune.search import load_search_space
from sentune.spec import JobSpec, parse_job

__all__ = ["RUN_FORMAT", "RunFolder", "check_same_data", "data_digests", "lock_run", "stored_spec", "unlock_run"]

# run.json's "format": the layout of a run folder (resume checkpoints, the Parquet record, Ray's state)
# that `sentune resume` can continue; a run written in another format is refused in one line.
RUN_FORMAT = 3  # 3: resume and PBT states in sentune._safe_state's format (2 pickled them)

_LOCK_FILE = ".driver.lock"
_held_locks: dict[Path, int] = {}


def stored_spec(spec: JobSpec) -> dict:
    """The job as run.json keeps it, resolved once when the run starts: absolute data paths, the search
    space loaded (not a path to read again), credentials in the storage URI masked. ``sentune resume``
    parses this, so a moved or edited job folder, or another working directory, changes nothing."""
    out = spec.model_dump(mode="json")
    out["data"] = spec.data.resolved().model_dump(mode="json", exclude_defaults=True)
    if isinstance(spec.search_space, Path):
        out["search_space"] = load_search_space(spec.search_space)
    if not results.is_uri(spec.storage_path):
        out["storage_path"] = str(Path(spec.storage_path).resolve())
    out["storage_path"] = redact(out["storage_path"])
    out["search_space"] = _resolved_values(out["search_space"])
    out["params"] = _resolved_values(out.get("params") or {})
    mlflow = (out.get("tracking") or {}).get("mlflow")
    if isinstance(mlflow, dict) and isinstance(mlflow.get("tracking_uri"), str):
        mlflow["tracking_uri"] = redact(mlflow["tracking_uri"])
    optuna = spec.tracking.optuna
    if isinstance(optuna, str):  # a journal file's path resolved, a database URL's credentials masked
        out["tracking"]["optuna"] = redact(optuna) if "://" in optuna else str(Path(optuna).resolve())
    return out


_LOCAL_BACKBONES = ("hf:", "gguf:", "llama2c:")


def _resolved(value):
    """A relative path in an option made absolute: ``lr: {from_range_test: DIR}``, a local backbone."""
    if isinstance(value, dict) and isinstance(value.get("from_range_test"), str):
        where = value["from_range_test"]
        return {**value, "from_range_test": where if results.is_uri(where) else str(Path(where).expanduser().resolve())}
    if isinstance(value, str) and value.startswith(_LOCAL_BACKBONES):
        kind, _, path = value.partition(":")
        return f"{kind}:{Path(path).expanduser().resolve()}"
    if (
        isinstance(value, dict)
        and set(value) <= {"choice", "grid"}
        and isinstance(next(iter(value.values()), None), list)
    ):
        return {k: [_resolved(v) for v in vs] for k, vs in value.items()}
    return value


def _resolved_values(options: dict) -> dict:
    return {k: _resolved(v) for k, v in options.items()} if isinstance(options, dict) else options


def data_digests(spec: JobSpec) -> dict[str, str]:
    """sha256 of each of the job's own data files, to tell on resume that they are the ones the run began with."""
    data = spec.data.resolved()
    out = {}
    for name in ("train", "dev", "test", "label_names"):
        path = getattr(data, name, None)
        if isinstance(path, Path) and path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            out[name] = digest.hexdigest()
    return out


def check_same_data(spec: JobSpec, info: dict, run: str) -> None:
    before = info.get("data_sha256")
    if not isinstance(before, dict):
        return
    now = data_digests(spec)
    for name, digest in before.items():
        if now.get(name) != digest:
            path = getattr(spec.data, name, None)
            raise ConfigError(
                f"{run}: data.{name} {path} is not the file this run started with (missing or changed since); "
                "a resumed sweep trains on the same data or not at all"
            )


def lock_run(run_dir: Path) -> None:
    """One driver per run folder: an exclusive lock on ``<run>/.driver.lock``, held while this process drives
    the run (the system drops it when the process dies, so a killed driver never leaves it stale)."""
    import fcntl

    run_dir = Path(run_dir)
    if run_dir in _held_locks:
        return
    fd = os.open(run_dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        other = os.pread(fd, 256, 0).decode(errors="replace").split()
        os.close(fd)
        pid = f" (pid {other[0]})" if other and other[0].isdigit() else ""
        raise ConfigError(
            f"{run_dir}: another sentune driver is running this sweep{pid}; "
            "stop it (Ctrl-C, sentune stop) before resuming"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}".encode(), 0)
    _held_locks[run_dir] = fd


def unlock_run(run_dir: Path) -> None:
    fd = _held_locks.pop(Path(run_dir), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the lock


def _driver_gone(run_dir: Path) -> bool:
    """The run's last driver ran on this machine and its process is gone (killed, crashed)."""
    try:
        pid, host = (Path(run_dir) / _LOCK_FILE).read_text(encoding="utf-8").split()[:2]
        if host != socket.gethostname() or int(pid) == os.getpid():
            return False
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):
        return False
    return False


def read_heartbeat(run_dir: Path) -> float | None:
    try:
        data = (Path(run_dir) / results.HEARTBEAT).read_bytes()
    except OSError:
        return None
    return parse_heartbeat(data)


class Heartbeat:
    """While the sweep runs, its driver writes the time to ``<run>/heartbeat`` every few seconds: a run
    whose record says running but whose heartbeat stopped was interrupted (`sentune runs`)."""

    def __init__(self, run_dir: Path):
        self.path, self.done = run_dir / results.HEARTBEAT, threading.Event()

    def beat(self) -> None:
        while True:
            try:
                atomic_write_text(self.path, f"{time.time():.3f}")
            except OSError:
                pass
            if self.done.wait(results.HEARTBEAT_EVERY_S):
                return

    def __enter__(self):
        threading.Thread(target=self.beat, daemon=True, name="sentune-heartbeat").start()
        return self

    def __exit__(self, *exc):
        self.done.set()


@dataclass(frozen=True)
class RunFolder:
    """Where a run's own files are written (``run_dir``), and the URI they are uploaded to at the end
    (``remote``, when the job's storage is one; Ray writes its state and checkpoints there directly)."""

    run_dir: Path
    run_id: str
    remote: str | None = None
    tuner: str = "tune"  # the folder of Tune's state for the sweep it runs (``extend-N``: an extension's)

    @classmethod
    def new(cls, spec: JobSpec, run_id: str | None = None) -> RunFolder:
        run_id = run_id or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        if results.is_uri(spec.storage_path):  # written here, uploaded at the end; Ray writes its state there
            return cls(
                results.staging_dir(spec.name, run_id), run_id, results.join_uri(spec.storage_path, spec.name, run_id)
            )
        return cls((Path(spec.storage_path) / spec.name / run_id).resolve(), run_id)

    @property
    def ray_storage(self) -> str:
        """Where Ray Tune and Train keep their state, and the trials their resume checkpoints."""
        return self.remote or str(self.run_dir)

    @property
    def resume_root(self) -> str:
        return results.join_uri(self.ray_storage, "resume")

    def shown(self) -> str:
        return f"{self.run_dir} (uploaded to {redact(self.remote)} at the end)" if self.remote else str(self.run_dir)

    def open(self) -> None:
        """An unwritable storage path fails the job in one line, before Ray starts; then this driver takes the
        run's lock."""
        self._check_writable()
        lock_run(self.run_dir)

    def close(self) -> None:
        """Upload the run's own files (a URI storage) and let go of the lock."""
        try:
            if self.remote:
                results.upload_run(self.run_dir, self.remote)
        finally:
            unlock_run(self.run_dir)

    def _check_writable(self) -> None:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / ".write-test", "")  # never through a planted link
            (self.run_dir / ".write-test").unlink()
            if self.remote:
                import pyarrow.fs as pafs

                fs, root = pafs.FileSystem.from_uri(self.remote)
                fs.create_dir(root, recursive=True)
                with fs.open_output_stream(f"{root}/.write-test-{os.getpid()}") as f:
                    f.write(b"")
                fs.delete_file(f"{root}/.write-test-{os.getpid()}")
        except OSError as exc:
            where = redact(self.remote) if self.remote and self.run_dir.is_dir() else self.run_dir
            reason = exc.strerror or str(exc).splitlines()[0]
            raise ConfigError(f"storage path {where}: not writable ({reason})") from None

    def write_info(self, spec: JobSpec, splits: DataSplits) -> None:
        results.write_run_info(self.run_dir, {
            "job": spec.name,
            "kind": spec.kind,
            "run_id": self.run_id,
            "trainable": spec.trainable,
            "metric": spec.scheduler.metric,
            "mode": spec.scheduler.direction.mode,
            "label_names": splits.label_names,
            "tuned_params": spec.tuned,
            "data": spec.data.resolved().model_dump(mode="json", exclude_defaults=True),
            "sizes": {"train": len(splits.train), "dev": len(splits.dev),
                      "test": len(splits.test) if splits.test else 0},
            "spec": stored_spec(spec),
            "data_sha256": data_digests(spec),
            "format": RUN_FORMAT,
            "status": "running",
            "started_at": time.time(),
        })  # fmt: skip

    def set_status(self, status: str, **more) -> None:
        results.write_run_info(self.run_dir, {**results.read_run_info(self.run_dir), "status": status, **more})

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(self.run_dir)


def reopen(run: str | Path, *, extend: bool = False) -> tuple[RunFolder, JobSpec, float]:
    """A run to resume (a local folder or a URI): its folder, its job as run.json keeps it, and the wall
    seconds its earlier sessions took. Anything that cannot be resumed is one line. ``extend``: a finished run
    that is to get more trials (``sentune extend``) instead."""
    run = str(run)
    remote = run.rstrip("/") if results.is_uri(run) else None
    run_dir = results.fetch_run(remote) if remote else Path(run).resolve()
    info = results.read_run_info(run_dir, require=())  # "not a sentune run folder" otherwise
    if info.get("kind") != "tune":
        raise ConfigError(f"{run}: a {info.get('kind')} run; only tune sweeps can be resumed")
    if info.get("format") != RUN_FORMAT:
        raise ConfigError(
            f"{run}: written by an incompatible sentune (run format {info.get('format', 1)}, this one reads "
            f"{RUN_FORMAT}); start the job again"
        )
    if info.get("status") == "finished" and not extend:
        raise ConfigError(f"{run}: this run is finished; nothing to resume (its leaderboard: sentune results {run})")
    if extend and info.get("status") != "finished":
        raise ConfigError(f"{run}: this run is not finished; go on with it first (sentune resume {run})")
    heartbeat = read_heartbeat(run_dir)
    if results.run_status(info, heartbeat) == "running" and not _driver_gone(run_dir):
        ago = time.time() - (heartbeat or 0.0)
        raise ConfigError(
            f"{run}: its driver is still running (last heartbeat {ago:.0f} s ago); stop it before resuming, or "
            f"wait {4 * results.HEARTBEAT_EVERY_S:.0f} s after it died"
        )
    tuner = str(info.get("tuner") or "tune")
    if not re.fullmatch(r"tune|extend-[0-9]{1,6}", tuner):
        raise damaged(Path(run_dir) / "run.json", f"tuner {tuner[:40]!r} is not a sweep's folder name")
    tune_dir = results.join_uri(remote or str(run_dir), tuner)
    from ray import tune

    if not extend and not tune.Tuner.can_restore(tune_dir):
        raise ConfigError(f"{run}: Ray Tune's state is missing ({tune_dir}); start the job again")
    if not isinstance(info.get("spec"), dict):
        raise damaged(Path(run_dir) / "run.json", "no job (spec)")
    spec = parse_job(info["spec"], source=f"{run}/run.json")
    check_same_data(spec, info, run)
    return RunFolder(run_dir, run_dir.name, remote, tuner), spec, float(info.get("wall_seconds") or 0.0)
