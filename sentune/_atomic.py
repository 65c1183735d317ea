"""Writing a file whole or not at all: the one way every file of a run (and of the data cache) is written.

A unique temporary file beside the target (``mkstemp``: created with ``O_EXCL``, so a planted symlink is
never followed and two writers never share one), the content written into it, ``fsync``, then
``os.replace`` onto the target and an ``fsync`` of the folder. A crash at any point leaves the old file
or the new one, never half of one; a stray temporary file starts with ``.`` and ends with ``.tmp``.
Neither Ray, torch nor TensorFlow.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "TMP_SUFFIX"]

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    """This process's umask, read without changing it (os.umask would, for every thread at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every system opens folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` (which writes the whole content to that path), then move it onto ``path``.

    ``write`` may also be given bytes or text directly through :func:`atomic_write_text`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600, made what a plain open() would have given
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str | bytes, encoding: str = "utf-8") -> None:
    """``path`` holds ``text`` (or bytes) whole, or keeps what it had."""
    data = text.encode(encoding) if isinstance(text, str) else text
    atomic_write_bytes(path, lambda tmp: tmp.write_bytes(data))
