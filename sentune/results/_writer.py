"""Writes that need not hold up their caller: :class:`OrderedWriter` runs them on one thread of its own, one
at a time, in the order they came. The sweep's driver hands the record's writes to one, so that a trial's end
costs the Tune loop a few copies of dicts instead of a Parquet file and its ``fsync`` (the loop waits on its
callbacks before the trial goes on). Neither Ray nor a framework."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["OrderedWriter"]


class OrderedWriter:
    """Runs ``job(*args)`` on one background thread, in submission order. A job's error is raised in the
    caller by the next :meth:`submit` or :meth:`drain` after it happened (later jobs still run: they hold
    newer rows). :meth:`drain` waits until every job submitted so far has run. Pickled (Tune keeps its
    callbacks in ``tuner.pkl``), it travels without its thread and queue: a new one starts on first use."""

    def __init__(self, name: str = "sentune-writer"):
        self.name = name
        self._pool: ThreadPoolExecutor | None = None
        self._queued: deque[Future] = deque()

    def submit(self, job: Callable[..., Any], *args: Any) -> None:
        self._raise_done()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        self._queued.append(self._pool.submit(job, *args))

    def drain(self) -> None:
        """Wait for every job submitted so far; the first error among them is raised (after all have run)."""
        error: BaseException | None = None
        while self._queued:
            try:
                self._queued.popleft().result()
            except Exception as e:  # noqa: BLE001 (raised below, once every job has run)
                error = error or e
        if error is not None:
            raise error

    def _raise_done(self) -> None:
        while self._queued and self._queued[0].done():
            self._queued.popleft().result()

    def __getstate__(self) -> dict:
        return {"name": self.name}

    def __setstate__(self, state: dict) -> None:
        self.name, self._pool, self._queued = state["name"], None, deque()
