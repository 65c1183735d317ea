"""A run's Optuna study (``tracking: {optuna: ...}``): where it is kept, its storage opened, and
optuna-dashboard served on it. The sweep writes the study (``sentune.tuning._optuna_mirror``); this module
only finds and opens it, so reading it needs no Ray.

The study of a run is named ``<job>/<run id>``; its storage is Optuna's journal file ``optuna.journal`` in
the run folder (``optuna: true``), a journal file elsewhere (a path), or a database Optuna takes (a URL:
``sqlite:///...``, ``postgresql://...``, ``mysql://...``), which may then hold the studies of many runs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sentune._uri import redact
from sentune.errors import ConfigError, one_line
from sentune.results._layout import OPTUNA_JOURNAL
from sentune.results._store import read_run_info

__all__ = ["open_optuna_storage", "optuna_study_name", "optuna_target", "run_optuna_study", "serve_optuna_dashboard"]


def optuna_study_name(job: str, run_id: str) -> str:
    return f"{job}/{run_id}"


def optuna_target(setting: bool | str | None, run_dir: Path) -> str | None:
    """Where a job's ``tracking.optuna`` keeps the study of the run in ``run_dir``: a journal file's path
    or a database URL; None when the job mirrors nothing."""
    if setting is True:
        return str(Path(run_dir) / OPTUNA_JOURNAL)
    if not setting:
        return None
    return str(setting)


def _reason(exc: BaseException) -> str:
    return one_line(f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}", 160)


def open_optuna_storage(target: str, *, create: bool = True) -> Any:
    """Optuna's storage at ``target`` (a database URL, else a journal file's path); one line when it cannot
    be opened (a journal file that is not there yet, with ``create=False``)."""
    import optuna

    shown = redact(target)
    if "://" in target:
        try:
            return optuna.storages.RDBStorage(target)
        except Exception as exc:  # noqa: BLE001 (SQLAlchemy's, a missing database driver, ...: all one line)
            raise ConfigError(f"optuna storage {shown}: cannot open it ({_reason(exc)})") from None
    path = Path(target)
    if not create and not path.is_file():
        raise ConfigError(f"{shown}: no Optuna journal there (the sweep writes it when its first trial starts)")
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"optuna journal {shown}: cannot open it ({_reason(exc)})") from None


def run_optuna_study(run_dir: Path, storage: str | None = None) -> tuple[str, str]:
    """(storage target, study name) of the study that mirrors the run in ``run_dir``; ``storage`` instead
    of the one its job names (a database URL whose credentials run.json does not keep)."""
    info = read_run_info(run_dir, require=("job", "run_id"))
    spec = info.get("spec")
    tracking = spec.get("tracking") if isinstance(spec, dict) else None
    setting = tracking.get("optuna") if isinstance(tracking, dict) else None
    target = storage or optuna_target(setting if isinstance(setting, (bool, str)) else None, run_dir)
    if target is None:
        raise ConfigError(f"{run_dir}: its job mirrors no Optuna study (tracking: {{optuna: true}} in the job)")
    if "***" in target:
        raise ConfigError(f"{redact(target)}: run.json does not keep the credentials of a URL; give it with --storage")
    return target, optuna_study_name(str(info["job"]), str(info["run_id"]))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_optuna_dashboard(
    target: str, study: str, *, host: str = "127.0.0.1", port: int = 8080, announce: Callable[[str, bool], None]
) -> None:
    """optuna-dashboard on the study ``study`` at ``target`` until interrupted; ``announce(url, loopback)``
    once it listens (``port`` 0: a free port)."""
    import socketserver
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from optuna_dashboard import wsgi

    storage = open_optuna_storage(target, create=False)
    try:
        study_id = storage.get_study_id_from_name(study)
    except KeyError:
        raise ConfigError(f"{redact(target)}: no Optuna study named {study} (yet)") from None

    class Server(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True  # the page asks several things at once

    class Quiet(WSGIRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 (the standard library's name)
            pass

    try:
        server = make_server(host, port, wsgi(storage), server_class=Server, handler_class=Quiet)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({_reason(exc)}); give another --port or --host") from None
    with server:
        shown = f"[{host}]" if ":" in host else host
        announce(f"http://{shown}:{server.server_port}/dashboard/studies/{study_id}", _loopback(host))
        server.serve_forever()
