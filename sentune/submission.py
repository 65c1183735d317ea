"""Submitting tune jobs to a Ray cluster from a laptop: the Ray Jobs API (submit, status, logs, stop) and
the dashboard.

Ray 2.60 protects the dashboard and the Jobs API with a token. It is read from ``RAY_AUTH_TOKEN``,
then the file named by ``RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token`` (where ``ray start``
writes it), and sent as ``Authorization: Bearer <token>``. Every failure to reach or to be let in
becomes one :class:`~sentune.errors.ClusterError` line.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sentune.errors import ClusterError, ConfigError

__all__ = [
    "DEFAULT_ADDRESS",
    "UPLOAD_EXCLUDES",
    "Token",
    "find_token",
    "dashboard_url",
    "connect",
    "check_dashboard",
    "submit_job",
    "job_status",
    "job_logs",
    "follow_logs",
    "stop_job",
]

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Never uploaded with a job: results, virtualenvs, caches, VCS data, GPU-box bundles.
UPLOAD_EXCLUDES = [
    "results/",
    ".venv/",
    "venv/",
    ".git/",
    ".gpu-carry/",
    "__pycache__/",
    "*.pyc",
    ".cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    "*.egg-info/",
    "build/",
    "dist/",
]
_TIMEOUT_S = 10


@dataclass(frozen=True)
class Token:
    value: str
    source: str  # where it came from, for messages


def find_token() -> Token | None:
    """The cluster token: RAY_AUTH_TOKEN, then RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return Token(os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN")
    candidates = []
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        candidates.append((Path(os.environ["RAY_AUTH_TOKEN_PATH"]).expanduser(), "RAY_AUTH_TOKEN_PATH"))
    candidates.append((Path.home() / ".ray" / "auth_token", "~/.ray/auth_token"))
    for path, label in candidates:
        if path.is_file():
            value = path.read_text(encoding="utf-8").strip()
            if value:
                return Token(value, f"{label} ({path})")
        elif label == "RAY_AUTH_TOKEN_PATH":
            raise ClusterError(f"RAY_AUTH_TOKEN_PATH names {path}, which is not a file")
    return None


def dashboard_url(address: str | None = None) -> str:
    """``--address``, else RAY_API_SERVER_ADDRESS / an http RAY_ADDRESS, else the local default; 'host:port' gets http://."""
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS")
    if not address and os.environ.get("RAY_ADDRESS", "").startswith("http"):
        address = os.environ["RAY_ADDRESS"]
    address = (address or DEFAULT_ADDRESS).strip().rstrip("/")
    if not re.match(r"^https?://", address):
        address = f"http://{address}"
    return address


def _headers(token: Token | None) -> dict:
    return {"Authorization": f"Bearer {token.value}"} if token else {}


def check_dashboard(address: str | None = None, token: Token | None = None) -> dict:
    """Call an authenticated endpoint (``/api/version``); returns its JSON or raises one ClusterError line."""
    import requests

    url = dashboard_url(address)
    try:
        r = requests.get(f"{url}/api/version", headers=_headers(token), timeout=_TIMEOUT_S)
    except requests.exceptions.RequestException as exc:
        reason = "connection refused" if isinstance(exc, requests.exceptions.ConnectionError) else type(exc).__name__
        raise ClusterError(f"cannot reach the Ray dashboard at {url}: {reason}") from None
    if r.status_code == 401:
        hint = "no token found (set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, or copy the head node's ~/.ray/auth_token)"
        raise ClusterError(
            f"{url} refused the request (401): " + (f"token from {token.source} was not accepted" if token else hint)
        )
    if r.status_code == 403:
        raise ClusterError(
            f"{url} refused the token from {token.source if token else '(none)'} (403): wrong token for this cluster"
        )
    if r.status_code != 200:
        raise ClusterError(f"{url}/api/version answered {r.status_code}: {r.text.strip()[:200]}")
    try:
        return r.json()
    except ValueError:
        raise ClusterError(f"{url} does not look like a Ray dashboard (/api/version is not JSON)") from None


def connect(address: str | None = None):
    """A JobSubmissionClient for the cluster, after checking we can reach it and are let in."""
    from ray.job_submission import JobSubmissionClient

    token = find_token()
    check_dashboard(address, token)
    return JobSubmissionClient(dashboard_url(address), headers=_headers(token))


def _submission_id(job_name: str) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"sentune-{re.sub(r'[^A-Za-z0-9_-]+', '-', job_name)}-{stamp}"


def _is_remote_storage(storage: str) -> bool:
    from sentune.results import is_uri

    return is_uri(storage) or Path(storage).is_absolute()


# `sentune stop` (the Jobs API's stop) sends the driver a first Ctrl-C and gives it time to save the sweep's
# state (Ray's default is SIGTERM and a SIGKILL after 3 s); `sentune resume` then goes on with the run.
STOP_ENV = {"RAY_JOB_STOP_SIGNAL": "SIGINT", "RAY_JOB_STOP_WAIT_TIME_S": "60"}


def submit_job(
    job_path: str | Path, *, address: str | None = None, storage: str | None = None, working_dir: str | Path = "."
) -> tuple[str, str]:
    """Validate the job here, then send it through the Jobs API; returns (submission id, dashboard job URL).

    The working directory (minus :data:`UPLOAD_EXCLUDES`) is uploaded, and the cluster runs
    ``sentune run JOB --storage STORAGE`` in it. Results must go to a path every node and the user can
    read: an absolute shared path or a URI.
    """
    from sentune.spec import load_job

    working_dir = Path(working_dir).resolve()
    job_path = Path(job_path)
    spec = load_job(job_path, storage_path=storage)  # validation before anything is uploaded
    storage = storage or spec.storage_path
    if not _is_remote_storage(str(storage)):
        raise ConfigError(
            f"job {spec.name}: storage_path {storage!r} is relative; a submitted job runs in a temporary "
            "folder on the cluster: give a shared absolute path or a URI with --storage"
        )
    try:
        rel_job = job_path.resolve().relative_to(working_dir)
    except ValueError:
        raise ConfigError(
            f"{job_path} is not inside the working directory {working_dir}, which is what gets uploaded"
        ) from None
    _check_data_travels(spec, working_dir)
    client = connect(address)
    sid = _submission_id(spec.name)
    client.submit_job(
        entrypoint=f"sentune run {rel_job.as_posix()} --storage {storage}",
        submission_id=sid,
        runtime_env={"working_dir": str(working_dir), "excludes": UPLOAD_EXCLUDES, "env_vars": STOP_ENV},
        metadata={"sentune_job": spec.name, "sentune_trainable": spec.trainable, "sentune_storage": str(storage)},
    )
    return sid, f"{dashboard_url(address)}/#/jobs/{sid}"


def submit_resume(run: str, *, address: str | None = None, working_dir: str | Path = ".") -> tuple[str, str]:
    """Send ``sentune resume RUN`` through the Jobs API (a submitted job whose driver died, or that was
    stopped): RUN must be where the cluster wrote it (a shared absolute path or a URI)."""
    if not _is_remote_storage(str(run)):
        raise ConfigError(f"{run}: a submitted resume needs the run's shared absolute path or URI")
    working_dir = Path(working_dir).resolve()
    name = str(run).rstrip("/").split("/")[-2] if str(run).count("/") >= 2 else "run"
    client = connect(address)
    sid = _submission_id(f"{name}-resume")
    client.submit_job(
        entrypoint=f"sentune resume {run}",
        submission_id=sid,
        runtime_env={"working_dir": str(working_dir), "excludes": UPLOAD_EXCLUDES, "env_vars": STOP_ENV},
        metadata={"sentune_job": name, "sentune_resume": str(run)},
    )
    return sid, f"{dashboard_url(address)}/#/jobs/{sid}"


def _check_data_travels(spec, working_dir: Path) -> None:
    """The job's own data files are read and checked here (one line naming file and line if bad), and a
    relative path must lie inside the uploaded folder; an absolute one is taken to be on shared storage."""
    from sentune.data import load_splits

    data = spec.data
    if data.builtin:
        return
    for name in ("train", "dev", "test"):
        path = getattr(data, name)
        if path is not None and not Path(path).is_absolute():
            try:
                Path(path).resolve().relative_to(working_dir)
            except ValueError:
                raise ConfigError(
                    f"data.{name} {path} is outside {working_dir}, which is what gets uploaded: move it "
                    "inside, or give an absolute path on storage every node reads"
                ) from None
    if all(Path(p).is_file() for p in (data.train, data.dev, data.test) if p is not None):
        load_splits(data)


def _call(fn, job_id: str):
    try:
        return fn(job_id)
    except RuntimeError as exc:
        if "404" in str(exc) or "does not exist" in str(exc):
            raise ClusterError(f"no job {job_id!r} on this cluster") from None
        raise ClusterError(f"job {job_id}: {str(exc).strip().splitlines()[0][:300]}") from None


def job_status(job_id: str, *, address: str | None = None) -> dict:
    client = connect(address)
    info = _call(client.get_job_info, job_id)
    seconds = None
    if info.start_time:
        seconds = ((info.end_time or time.time() * 1000) - info.start_time) / 1000
    message = next((line.strip() for line in (info.message or "").splitlines() if line.strip()), "")
    if len(message) > 160:  # a failed job's message carries its whole log tail: `sentune logs` shows that
        message = message[:157] + "..."
    return {
        "job_id": job_id,
        "status": str(info.status.value if hasattr(info.status, "value") else info.status),
        "message": message,
        "entrypoint": info.entrypoint,
        "seconds": seconds,
        "metadata": info.metadata or {},
    }


def job_logs(job_id: str, *, address: str | None = None) -> str:
    return _call(connect(address).get_job_logs, job_id)


def follow_logs(job_id: str, write: Callable[[str], None], *, address: str | None = None) -> str:
    """Stream the job's logs to ``write`` (chunks of text) until it ends; returns its final status."""
    import asyncio

    client = connect(address)
    _call(client.get_job_info, job_id)

    async def tail():
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    asyncio.run(tail())
    return str(client.get_job_status(job_id).value)


def stop_job(job_id: str, *, address: str | None = None) -> bool:
    return bool(_call(connect(address).stop_job, job_id))
