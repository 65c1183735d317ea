"""Signals while a sweep runs: SIGTERM (what `sentune stop` and the Jobs API send) stops it like a first Ctrl-C,
so Tune saves its state and the run can be resumed."""

from __future__ import annotations

import os
import signal

__all__ = ["sigterm_as_sigint"]


class sigterm_as_sigint:  # noqa: N801 (used like a function: `with sigterm_as_sigint():`)
    def __enter__(self):
        self.prev = None
        try:
            self.prev = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def __exit__(self, *exc):
        if self.prev is not None:
            signal.signal(signal.SIGTERM, self.prev)
