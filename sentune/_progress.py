"""What a user sees while a sweep runs. Fed one event at a time by the Ray layer's Tune callback (no Ray here).

``live``: one screen that updates in place (Rich): trials running / finished / stopped early / errored /
to come, epochs trained against the budget, the best trial so far with its config, elapsed time and an
estimate of what is left. ``plain``: a line per trial epoch and per trial end (for logs: CI, the Jobs
API). ``quiet``: nothing until the summary. ``json``: one JSON object per result on standard output, for
scripts.

Every change of the sweep is also an event (a small JSON object: ``sweep``, ``trial_start``, ``result``,
``trial_end``); a driver started with ``SENTUNE_EVENTS=log`` (what ``sentune submit`` sets) writes each as one
line ``[sentune-event] {...}`` to its log, and :class:`EventFollower` rebuilds the live view of a submitted job
from those lines alone: the human lines are free to change.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from sentune._direction import Direction
from sentune._log import log_line

__all__ = ["EVENT_PREFIX", "MODES", "EventFollower", "SweepProgress", "events_to_log"]

MODES = ("live", "plain", "quiet", "json")
EVENT_PREFIX = "[sentune-event] "
EVENTS_ENV = "SENTUNE_EVENTS"  # "log": the driver writes its events to its log (a submitted job)


def events_to_log(stream=None) -> Callable[[dict], None] | None:
    """The event sink a driver uses: event lines on its standard output when ``SENTUNE_EVENTS=log``, else none."""
    if os.environ.get(EVENTS_ENV) != "log":
        return None

    def write(event: dict) -> None:
        out = stream or sys.stdout
        out.write(EVENT_PREFIX + json.dumps(event, default=str, allow_nan=False) + "\n")
        out.flush()

    return write


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.2e}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"
    return str(value)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else (f"{seconds // 60}:{seconds % 60:02d}")
    )


class SweepProgress:
    """The sweep's progress for one of :data:`MODES`.

    ``trials``: how many trials the sweep runs; ``max_epochs``: each one's budget; ``tuned``: the options
    the search varies (shown for the best trial); ``clock``: where the elapsed and left times are read."""

    def __init__(
        self,
        mode: str = "plain",
        *,
        job: str = "",
        metric: str = "val_macro_f1",
        mode_of_metric: str = "max",
        trials: int = 0,
        max_epochs: int = 0,
        tuned: list[str] | None = None,
        stream=None,
        clock=time.monotonic,
        events: Callable[[dict], None] | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"progress mode {mode!r}; choose from {', '.join(MODES)}")
        self.mode, self.job, self.metric = mode, job, metric
        self.direction = Direction.of(metric, mode_of_metric)
        self.total, self.max_epochs, self.tuned = trials, max_epochs, list(tuned or [])
        self._stream = stream  # None: standard output, looked up when written to
        self._now = clock  # seconds, only ever compared with each other (a test passes its own)
        self.t0 = clock()
        self.first_result: float | None = None
        self.state: dict[str, str] = {}  # trial id -> running / completed / stopped_early / errored
        self.epochs: dict[str, int] = {}
        self.latest: dict[str, Any] = {}  # trial id -> its latest metric
        self.configs: dict[str, dict] = {}
        self.best: tuple[str, float, int] | None = None  # trial id, value, epoch
        self._live: Any = None
        self._events = events  # where every event also goes (a submitted job's log), or None

    def _emit(self, event: dict) -> None:
        if self._events is not None:
            self._events(_plain({"job": self.job, **event}))

    @property
    def stream(self):
        return self._stream or sys.stdout

    def __getstate__(self):  # Tune pickles its callbacks (tuner.pkl): a stream or a live screen does not travel
        return {**self.__dict__, "_stream": None, "_live": None, "_events": None}

    # --- events
    def start(self) -> None:
        self._emit({"event": "sweep", "trials": self.total, "max_epochs": self.max_epochs, "metric": self.metric,
                    "mode": self.direction.mode, "tuned": self.tuned})  # fmt: skip
        if self.mode == "live":
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self._render(), console=Console(file=self.stream), refresh_per_second=4,
                              transient=False, redirect_stdout=False, redirect_stderr=False)  # fmt: skip
            self._live.start()

    def restore(self, trial_id: str, config: dict, rows: list[dict], status: str) -> None:
        """What a trial had done before the sweep was resumed (nothing is printed)."""
        self.configs[trial_id], self.state[trial_id] = config, status
        for row in rows:
            self.epochs[trial_id] = int(row["epoch"])
            self._note_best(trial_id, row.get(self.metric), int(row["epoch"]))

    def _note_best(self, trial_id: str, value, epoch: int) -> None:
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            if self.best is None or self.direction.better(value, self.best[1]):
                self.best = (trial_id, float(value), epoch)

    def trial_started(self, trial_id: str, config: dict) -> None:
        self.state[trial_id] = "running"
        self.configs[trial_id] = config
        self.epochs.setdefault(trial_id, 0)
        self._emit({"event": "trial_start", "trial_id": trial_id, "config": {k: _plain(v) for k, v in config.items()}})
        self._refresh()

    def result(self, trial_id: str, config: dict, row: dict, flags: list[str]) -> None:
        """One epoch's row (as recorded) and the diagnostics it raised."""
        now = self._now()
        self.first_result = self.first_result or now
        self.configs.setdefault(trial_id, config)
        self.state.setdefault(trial_id, "running")
        epoch = int(row["epoch"])
        self.epochs[trial_id] = epoch
        value = row.get(self.metric)
        self.latest[trial_id] = value
        self._note_best(trial_id, value, epoch)
        self._emit({"event": "result", "trial_id": trial_id, "epoch": epoch, self.metric: _plain(value)})
        if self.mode == "plain":
            keys = dict.fromkeys([self.metric, "val_loss", "train_loss", "lr"])
            shown = "  ".join(f"{k}={_fmt(row.get(k))}" for k in keys)
            note = f"  [{', '.join(flags)}]" if flags else ""
            log_line(f"{trial_id} epoch {epoch:>3}  {shown}{note}")
        elif self.mode == "json":
            out = {"event": "result", "job": self.job, **{k: _plain(v) for k, v in row.items()}}
            self.stream.write(json.dumps(out, default=str) + "\n")
            self.stream.flush()
        self._refresh()

    def trial_ended(self, trial_id: str, status: str) -> None:
        self.state[trial_id] = status
        epochs = self.epochs.get(trial_id, 0)
        self._emit({"event": "trial_end", "trial_id": trial_id, "status": status, "epochs": epochs})
        if self.mode == "plain":
            log_line(f"{trial_id} {status.replace('_', ' ')} after {self.epochs.get(trial_id, 0)} epochs")
        elif self.mode == "json":
            out = {"event": "trial_end", "job": self.job, "trial_id": trial_id, "status": status,
                   "epochs": self.epochs.get(trial_id, 0)}  # fmt: skip
            self.stream.write(json.dumps(out) + "\n")
            self.stream.flush()
        self._refresh()

    def close(self) -> None:
        if self._live is not None:
            self._live.update(self._render(final=True))
            self._live.stop()
            self._live = None

    # --- what is shown
    def counts(self) -> dict[str, int]:
        seen = list(self.state.values())
        out = {k: seen.count(k) for k in ("running", "completed", "stopped_early", "errored")}
        out["to come"] = max(0, self.total - len(seen))
        return out

    def trained(self) -> int:
        return sum(self.epochs.values())

    def budget(self) -> int:
        return self.total * self.max_epochs

    def eta_seconds(self) -> float | None:
        """At most this long: the epochs still allowed (the budget less what ended trials did not use) at the
        rate so far."""
        if self.first_result is None or self.trained() == 0:
            return None
        rate = self.trained() / max(1e-6, self._now() - self.first_result)
        ended = [t for t, s in self.state.items() if s != "running"]
        left = self.budget() - self.trained() - sum(self.max_epochs - self.epochs.get(t, 0) for t in ended)
        return max(0.0, left) / rate

    def summary(self) -> str:
        c = self.counts()
        parts = [f"{self.trained()}/{self.budget()} epochs", f"{c['completed']} completed",
                 f"{c['stopped_early']} stopped early", f"{c['errored']} errored"]  # fmt: skip
        if self.best:
            parts.append(f"best {self.best[0]} {self.metric}={_fmt(self.best[1])} at epoch {self.best[2]}")
        return f"sweep {self.job}: " + ", ".join(parts) + f" in {_clock(self._now() - self.t0)}"

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def _render(self, final: bool = False):
        from rich.table import Table

        c = self.counts()
        elapsed = self._now() - self.t0
        eta = self.eta_seconds()
        head = Table.grid(padding=(0, 2))
        head.add_row(
            f"[bold]sweep {self.job}[/bold]",
            f"elapsed {_clock(elapsed)}",
            "done" if final else (f"left at most ~{_clock(eta)}" if eta is not None else "left: -"),
        )
        head.add_row(
            f"trials: {c['running']} running, {c['completed']} completed, {c['stopped_early']} stopped early, "
            f"{c['errored']} errored, {c['to come']} to come",
            f"epochs {self.trained()}/{self.budget()}",
            "",
        )
        if self.best:
            tid, value, epoch = self.best
            config = self.configs.get(tid, {})
            shown = ", ".join(f"{k}={_fmt(config.get(k))}" for k in self.tuned if k in config)
            head.add_row(f"best: {tid} {self.metric}={_fmt(value)} (epoch {epoch})", shown, "")
        running = [t for t, s in self.state.items() if s == "running"]
        if running and not final:
            table = Table(box=None, pad_edge=False, show_edge=False)
            for col in ("running trial", "epoch", self.metric):
                table.add_column(col)
            for t in running[:8]:
                table.add_row(t, f"{self.epochs.get(t, 0)}/{self.max_epochs}", _fmt(self.latest.get(t)))
            grid = Table.grid()
            grid.add_row(head)
            grid.add_row(table)
            return grid
        return head


def _plain(value):
    """A value as JSON takes it: non-finite numbers become null, inside lists and mappings too."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class EventFollower:
    """Rebuilds the live view from a sweep's event lines (a submitted job's log, ``sentune logs --follow``):
    feed it the log as it comes; every other line goes to ``echo`` (or above the live screen)."""

    def __init__(self, mode: str = "live", *, echo=None, stream=None):
        self.mode, self.stream = mode, stream or sys.stdout
        self.echo = echo or (lambda line: self.stream.write(line + "\n"))
        self.view: SweepProgress | None = None
        self._buf = ""

    def feed(self, chunk: str) -> None:
        self._buf += chunk
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            self._line(line.rstrip("\r"))

    def close(self) -> None:
        if self._buf:
            self._line(self._buf)
            self._buf = ""
        if self.view is not None:
            self.view.close()

    def _line(self, line: str) -> None:
        event = _event(line)
        if event is None:
            if self.view is not None and self.view._live is not None:
                self.view._live.console.print(line, markup=False, highlight=False)
            else:
                self.echo(line)
            return
        try:
            self._apply(event)
        except (ValueError, TypeError, KeyError, AttributeError):  # an event line of the wrong shape: just a line
            self.echo(line)

    def _apply(self, event: dict) -> None:
        kind, view = event.get("event"), self.view
        if kind == "sweep" and view is None:
            self.view = SweepProgress(
                self.mode, job=str(event.get("job", "")), metric=str(event.get("metric", "val_macro_f1")),
                mode_of_metric="min" if event.get("mode") == "min" else "max", trials=int(event.get("trials") or 0),
                max_epochs=int(event.get("max_epochs") or 0), tuned=list(event.get("tuned") or []), stream=self.stream,
            )  # fmt: skip
            self.view.start()
        elif view is not None and kind == "trial_start":
            view.trial_started(str(event["trial_id"]), dict(event.get("config") or {}))
        elif view is not None and kind == "result":
            view.result(str(event["trial_id"]), {}, event, []) if view.mode != "plain" else None
        elif view is not None and kind == "trial_end":
            view.trial_ended(str(event["trial_id"]), str(event["status"]))


def _event(line: str) -> dict | None:
    """The event a log line carries, or None for any other line (an event line that does not parse too)."""
    at = line.find(EVENT_PREFIX)
    if at < 0:
        return None
    try:
        event = json.loads(line[at + len(EVENT_PREFIX) :])
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        return None
    if event["event"] != "sweep" and not isinstance(event.get("trial_id"), str):
        return None
    if event["event"] == "result" and not isinstance(event.get("epoch"), int):
        return None
    return event
