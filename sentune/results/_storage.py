"""Runs stored behind a URI that pyarrow understands (``s3://``, ``gs://``, ``hdfs://``, ``file://``).

A job whose ``storage_path`` is a URI writes its run folder on the driver (a staging folder in the
sentune cache) and uploads it when the run ends; Ray Tune and Train write their state and checkpoints
to the URI directly, so every node reaches them. ``sentune results`` / ``export`` / ``report`` fetch
the small files of a run (Parquet, the parts of ``epochs.parquet/`` included, JSON, YAML, CSV, HTML,
PNG; not checkpoints) into the cache and read them there (through the same readers, so the parts of a
record uploaded mid-run resolve to one row per trial and epoch).
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from pathlib import Path

from sentune._atomic import TMP_SUFFIX, atomic_write_bytes
from sentune._paths import cache_dir
from sentune.errors import ConfigError
from sentune.results._layout import EPOCHS, EPOCHS_SET_ASIDE, RAY_FOLDERS, RUN_INFO, TRIALS
from sentune.results._store import filesystem, remove_path

__all__ = ["is_uri", "join_uri", "staging_dir", "upload_run", "fetch_run", "resolve_run_dir"]


def is_uri(path: str | Path) -> bool:
    return "://" in str(path)


def join_uri(base: str, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *[p.strip("/") for p in parts]])


def staging_dir(job: str, run_id: str) -> Path:
    return cache_dir("staging") / job / run_id


def _skipped(rel_parts: tuple[str, ...] | list[str]) -> bool:
    """Ray's state and checkpoints, and half-written files (``.name.XXXX.tmp``, a folder being swapped in)."""
    if rel_parts[0] in RAY_FOLDERS:  # large, and not needed to read results
        return True
    return any(p.startswith(".") and p != EPOCHS_SET_ASIDE for p in rel_parts)


def _copy_whole(src: str, src_fs, dest: str, dest_fs) -> None:
    """Copy to a temporary name beside ``dest``, then move it there: a reader never finds half a file."""
    import pyarrow.fs as pafs

    tmp = f"{dest.rsplit('/', 1)[0]}/.{dest.rsplit('/', 1)[-1]}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}"
    pafs.copy_files(src, tmp, source_filesystem=src_fs, destination_filesystem=dest_fs)
    try:
        dest_fs.move(tmp, dest)
    except OSError:
        dest_fs.delete_file(tmp)
        raise


def upload_run(local: Path, uri: str) -> None:
    """Copy a run folder's own files (not Ray's state or checkpoints, already there) to ``uri``.

    ``epochs.parquet`` is a folder of parts: parts at ``uri`` that the local folder no longer has (merged,
    compacted) are removed there, so the copy holds what the local folder holds."""
    import pyarrow.fs as pafs

    fs, root = filesystem(uri)
    root = root.rstrip("/")
    local_fs = pafs.LocalFileSystem()
    local = Path(local)
    remote_epochs = f"{root}/{EPOCHS}"
    kind = fs.get_file_info(remote_epochs).type
    if (local / EPOCHS).is_dir() and kind == pafs.FileType.File:  # a single-file record there
        fs.delete_file(remote_epochs)
    elif (local / EPOCHS).is_file() and kind == pafs.FileType.Directory:
        fs.delete_dir(remote_epochs)
    for path in sorted(local.rglob("*")):
        rel = path.relative_to(local)
        if not path.is_file() or _skipped(rel.parts):
            continue
        dest = f"{root}/{rel.as_posix()}"
        fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
        _copy_whole(str(path), local_fs, dest, fs)
    if (local / EPOCHS).is_dir():
        have = {p.name for p in (local / EPOCHS).iterdir() if p.is_file()}
        for item in fs.get_file_info(pafs.FileSelector(remote_epochs, allow_not_found=True)):
            if item.type == pafs.FileType.File and item.base_name not in have:
                fs.delete_file(item.path)


def _fetch_one(fs, src: str, tmp: Path) -> None:
    import pyarrow.fs as pafs

    pafs.copy_files(src, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())


def fetch_run(uri: str) -> Path:
    """Download the small files of a run (or, given a job folder, of its newest run) into the cache."""
    import pyarrow.fs as pafs

    fs, root = filesystem(uri)
    root = root.rstrip("/")
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise ConfigError(f"{uri}: no such run folder")
    if fs.get_file_info(f"{root}/{TRIALS}").type == pafs.FileType.NotFound:
        runs = sorted(
            i.path
            for i in fs.get_file_info(pafs.FileSelector(root))
            if i.type == pafs.FileType.Directory and fs.get_file_info(f"{i.path}/{RUN_INFO}").type == pafs.FileType.File
        )
        if not runs:
            raise ConfigError(f"{uri}: neither a run folder ({TRIALS}) nor a job folder with runs")
        root = runs[-1]
    local = cache_dir("fetched") / hashlib.sha256(f"{uri}|{root}".encode()).hexdigest()[:16] / root.rsplit("/", 1)[-1]
    local.mkdir(parents=True, exist_ok=True)
    for stale in (EPOCHS, EPOCHS_SET_ASIDE):  # parts from an earlier fetch may have been merged away since
        remove_path(local / stale)
    for item in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        rel = item.path[len(root) :].lstrip("/")
        if item.type != pafs.FileType.File or _skipped(rel.split("/")):
            continue
        dest = local / rel
        if not dest.resolve().is_relative_to(local.resolve()):  # a crafted name never writes outside the cache
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(dest, functools.partial(_fetch_one, fs, item.path))
    return local


def resolve_run_dir(path: str | Path) -> Path:
    """A run folder to read: a URI is fetched; a job folder means its newest run."""
    if is_uri(path):
        return fetch_run(str(path))
    path = Path(path)
    if not (path / TRIALS).is_file() and path.is_dir():
        runs = sorted(p for p in path.iterdir() if (p / RUN_INFO).is_file())
        if runs:
            return runs[-1]
    return path
