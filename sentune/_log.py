"""Console output of the library goes through the ``sentune`` logger; the CLI decides where it shows.

Library modules call :func:`log_line` (progress a user wants to see while a job runs) and never
``print``. :func:`console` attaches the one handler the ``sentune`` command uses: ``[sentune] message``
lines on standard output.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["console", "log_line", "logger", "warn"]

logger = logging.getLogger("sentune")


def log_line(message: str) -> None:
    """One progress line for the user (INFO on the ``sentune`` logger)."""
    logger.info(message)


def warn(message: str) -> None:
    """One line about something skipped or suspicious (WARNING on the ``sentune`` logger)."""
    logger.warning(message)


class _Flushing(logging.StreamHandler):
    """Flushes every line. Without a stream of its own it writes to whatever ``sys.stdout`` is at the time
    (a CLI called in-process under a capture that has since closed must not leave a dead stream behind)."""

    def __init__(self, stream=None):
        super().__init__(stream or sys.stdout)
        self._follow = stream is None

    def emit(self, record):
        if self._follow:
            self.stream = sys.stdout
        super().emit(record)
        self.flush()


def console(level: int = logging.INFO, stream=None) -> None:
    """Show the ``sentune`` logger's records as ``[sentune] message`` lines (once per process)."""
    if any(getattr(h, "_sentune_console", False) for h in logger.handlers):
        return
    handler = _Flushing(stream)
    handler.setFormatter(logging.Formatter("[sentune] %(message)s"))
    handler._sentune_console = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
