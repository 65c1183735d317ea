"""Submitting tune jobs to a Ray cluster from a laptop: the Ray Jobs API (submit, status, logs, stop) and
the dashboard.

Ray 2.60 protects the dashboard and the Jobs API with a token. It is read from ``RAY_AUTH_TOKEN``,
then the file named by ``RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token`` (where ``ray start``
writes it), and sent as ``Authorization: Bearer <token>``. Every failure to reach or to be let in
becomes one :class:`~sentune.errors.ClusterError` line.

What is sent is decided here, not left to Ray: the command the cluster runs is built from an argv list,
each argument shell-quoted (Ray's job supervisor runs the entrypoint through a shell); the upload is an
explicit list of files (:func:`plan_upload`: secrets and keys never, then the folder's ``.gitignore`` /
``.rayignore``; a symlink leading out of the folder is refused), copied into a temporary folder that is
what Ray packs; and storage URIs are redacted wherever they are shown or recorded.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import re
import shlex
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sentune._log import log_line, logger
from sentune._uri import has_credentials, redact, redact_text
from sentune.errors import ClusterError, ConfigError, DataError
from sentune.errors import one_line as _one_line

__all__ = [
    "DEFAULT_ADDRESS",
    "SECRET_EXCLUDES",
    "UPLOAD_EXCLUDES",
    "UploadPlan",
    "entrypoint_command",
    "refuse_control_characters",
    "plan_upload",
    "stage_upload",
    "upload_limit",
    "warn_if_cleartext_token",
    "Token",
    "find_token",
    "dashboard_url",
    "connect",
    "check_dashboard",
    "check_cluster_fits",
    "autoscaler_configured",
    "submit_job",
    "job_status",
    "job_logs",
    "follow_logs",
    "stop_job",
]

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Secrets and keys (gitignore patterns): never uploaded with a job, whatever the folder's ignore files say
# (a ``!pattern`` there does not bring one back).
SECRET_EXCLUDES = [
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*.p12",
    "*.pfx",
    "*.keystore",
    "*.jks",
    ".ssh/",
    ".gnupg/",
    ".aws/",
    ".azure/",
    ".gcloud/",
    "**/.config/gcloud/",
    ".kube/",
    "**/.docker/config.json",
    ".ray/",  # ~/.ray/auth_token
    ".netrc",
    ".pgpass",
    ".git-credentials",
    "auth_token",
    "*auth_token*",
    "credentials*.json",
    ".npmrc",
    ".pypirc",
]
# Never uploaded with a job either: the default results folder, virtualenvs, caches, VCS data, GPU-box
# bundles, and the ignore files themselves (applied here; Ray would apply them again to the staged copy).
# ``/results/`` is anchored: the package sentune/results/ is code and goes.
UPLOAD_EXCLUDES = [
    "/results/",
    ".venv",
    "venv",
    ".git",
    ".gpu-carry/",
    "__pycache__/",
    "*.pyc",
    ".cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    ".mypy_cache/",
    ".tox/",
    ".nox/",
    "*.egg-info/",
    "build/",
    "dist/",
    ".gitignore",
    ".rayignore",
]
_IGNORE_FILES = (".gitignore", ".rayignore")
_TIMEOUT_S = 10
# Control characters (C0, DEL, C1's NEL) and Unicode line/paragraph separators: refused in anything that goes
# into the command the cluster runs, so that a path can never be more than one line of it.
_CONTROL = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")


def _shown(text: str) -> str:
    """A name as it may appear in a one-line message: escaped if it holds anything unprintable."""
    return text if text.isprintable() else ascii(text)


def refuse_control_characters(value: str, what: str) -> None:
    """One ConfigError line if ``value`` (a job path, storage or run path) holds a control character."""
    m = _CONTROL.search(str(value))
    if m:
        raise ConfigError(
            _one_line(
                f"{what} {ascii(redact(str(value)))} contains the control character U+{ord(m.group(0)):04X}: "
                "rename it (a path sent to the cluster must be one printable line)"
            )
        )


def entrypoint_command(argv: Sequence[str]) -> str:
    """The command line the cluster runs for ``argv``: Ray's job supervisor hands the entrypoint to a shell
    (``subprocess.Popen(entrypoint, shell=True)``), so every argument is quoted with :func:`shlex.quote`
    and none may hold a control character; the shell then sees exactly ``argv``."""
    if not argv:
        raise ConfigError("an entrypoint needs a command")
    for arg in argv:
        refuse_control_characters(arg, "argument")
    return " ".join(shlex.quote(str(arg)) for arg in argv)


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


def _is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1 (also as ::ffff:127.x): read off the name, never looked up."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def warn_if_cleartext_token(url: str, token: Token | None) -> bool:
    """Before any request: warn (one line on the ``sentune`` logger) when the Bearer token would go over
    plain ``http://`` to a host that is not this machine; True if it warned. It reads the URL only: no
    traffic, no name lookup."""
    if token is None:
        return False
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return False
    if parts.scheme.lower() != "http" or _is_loopback(host):
        return False
    logger.warning(
        _one_line(
            f"the token from {token.source} goes to {redact(url)} over plain http, readable on the way: use "
            "https://, or forward the dashboard (ray dashboard cluster.yaml) and use http://127.0.0.1:8265"
        )
    )
    return True


def check_dashboard(address: str | None = None, token: Token | None = None) -> dict:
    """Call an authenticated endpoint (``/api/version``); returns its JSON or raises one ClusterError line."""
    import requests

    url = dashboard_url(address)
    shown = redact(url)
    warn_if_cleartext_token(url, token)  # decided before the request goes
    try:
        r = requests.get(f"{url}/api/version", headers=_headers(token), timeout=_TIMEOUT_S)
    except requests.exceptions.RequestException as exc:
        reason = "connection refused" if isinstance(exc, requests.exceptions.ConnectionError) else type(exc).__name__
        raise ClusterError(f"cannot reach the Ray dashboard at {shown}: {reason}") from None
    if r.status_code == 401:
        hint = "no token found (set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, or copy the head node's ~/.ray/auth_token)"
        raise ClusterError(
            f"{shown} refused the request (401): " + (f"token from {token.source} was not accepted" if token else hint)
        )
    if r.status_code == 403:
        raise ClusterError(
            f"{shown} refused the token from {token.source if token else '(none)'} (403): wrong token for this cluster"
        )
    if r.status_code != 200:
        raise ClusterError(_one_line(f"{shown}/api/version answered {r.status_code}: {redact_text(r.text)[:200]}"))
    try:
        return r.json()
    except ValueError:
        raise ClusterError(f"{shown} does not look like a Ray dashboard (/api/version is not JSON)") from None


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
# the driver writes its progress events to its log, which `sentune logs --follow` turns into the live view
EVENT_ENV = {"SENTUNE_EVENTS": "log"}


# ---- what is uploaded ---------------------------------------------------------------------------------


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _gitignore_spec(lines: list[str], source: str | Path):
    """A gitignore matcher for ``lines`` (``pathspec``'s, git's own rules). A pattern it refuses is one line
    naming the file and line."""
    import pathspec

    make: Callable[[list[str]], object] = pathspec.GitIgnoreSpec.from_lines

    try:
        return make(lines)
    except (ValueError, LookupError, TypeError):
        for number, line in enumerate(lines, 1):
            try:
                make([line])
            except (ValueError, LookupError, TypeError):
                raise DataError(source, f"not a gitignore pattern: {_shown(line.strip())[:80]}", number) from None
        raise DataError(source, "not a gitignore file") from None


def _read_ignore_file(path: Path) -> list[str]:
    try:
        return path.read_bytes().decode("utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise ConfigError(_one_line(f"{path}: cannot read it ({exc.strerror})")) from None


@dataclass(frozen=True)
class UploadPlan:
    """Exactly what a submission uploads: ``files`` maps each path in the upload (relative, POSIX) to the
    regular file whose bytes go there (a symlink inside the folder maps to its target)."""

    root: Path
    files: dict[str, Path]
    sizes: dict[str, int]
    excluded: dict[str, str] = field(default_factory=dict)  # path (a folder ends in /) -> what left it out
    notes: tuple[str, ...] = ()

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())

    def package_bytes(self) -> int:
        """The size of the zip Ray builds from it, from above: Ray stores files uncompressed, plus a local and
        a central header per file and the end record."""
        return self.total_bytes + sum(100 + 2 * len(rel.encode()) for rel in self.files) + 22

    def largest(self, n: int = 3) -> list[tuple[str, int]]:
        return sorted(self.sizes.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def summary(self) -> str:
        top = ", ".join(f"{_shown(rel)} {_human(size)}" for rel, size in self.largest())
        return f"{len(self.files)} files, {_human(self.total_bytes)}" + (f" (largest: {top})" if top else "")

    def excluded_by(self, rel: str) -> str | None:
        """What keeps ``rel`` (or a folder above it) out of the upload, or None."""
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            key = "/".join(parts[:i])
            for k in (key + "/", key):
                if k in self.excluded:
                    return self.excluded[k]
        return None


def plan_upload(working_dir: str | Path, *, skip: Iterable[str] = ()) -> UploadPlan:
    """The files a submission from ``working_dir`` uploads, decided here.

    Left out: :data:`SECRET_EXCLUDES` (secrets and keys, always), :data:`UPLOAD_EXCLUDES` (results,
    virtualenvs, caches, VCS data), what the ``.gitignore`` and ``.rayignore`` files in the folder and
    its subfolders list (gitignore semantics, each relative to its own folder), the folders in ``skip``
    (relative POSIX paths: a run's storage inside the folder), and anything that is not a regular file.
    A symlink is uploaded (as a copy of its target) only when it leads to a file that is itself uploaded;
    one leading outside the folder, or to a file left out, is refused in one line naming it; one to a
    folder inside is left out with a note (that folder goes under its own name).
    """
    root = Path(working_dir).resolve()
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder, nothing to upload")
    walk = _UploadWalk(root, {s.strip("/") for s in skip if s.strip("/")})
    walk.walk()
    walk.follow_links()
    return UploadPlan(root, dict(sorted(walk.files.items())), dict(sorted(walk.sizes.items())), walk.excluded,
                      tuple(walk.notes))  # fmt: skip


class _UploadWalk:
    """The walk behind :func:`plan_upload`: every folder's ignore files apply below it; links are looked at last."""

    def __init__(self, root: Path, skip: set[str]):
        self.root, self.skip = root, skip
        self.files: dict[str, Path] = {}
        self.sizes: dict[str, int] = {}
        self.excluded: dict[str, str] = {}
        self.notes: list[str] = []
        self.links: list[str] = []

    def left_out_by(self, rel: str, as_dir: bool, rules) -> str | None:
        if as_dir and rel in self.skip:
            return "the run's storage"
        for base, spec, source in rules:
            if spec.match_file(rel[len(base) :] + ("/" if as_dir else "")):
                return source
        return None

    def walk(self) -> None:
        base_rules = [
            ("", _gitignore_spec(SECRET_EXCLUDES, "SECRET_EXCLUDES"), "sentune's list of secrets and keys"),
            ("", _gitignore_spec(UPLOAD_EXCLUDES, "UPLOAD_EXCLUDES"), "sentune's list of results, caches and venvs"),
        ]
        stack = [(self.root, "", base_rules)]
        while stack:
            folder, rel_dir, rules = stack.pop()
            for name in _IGNORE_FILES:
                ignore_file = folder / name
                if ignore_file.is_file():
                    spec = _gitignore_spec(_read_ignore_file(ignore_file), ignore_file)
                    rules = [*rules, (rel_dir, spec, rel_dir + name)]
            stack += self._folder(folder, rel_dir, rules)

    def _folder(self, folder: Path, rel_dir: str, rules) -> list:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise ConfigError(_one_line(f"{folder}: cannot list it for the upload ({exc.strerror})")) from None
        below = []
        for entry in entries:
            rel = rel_dir + entry.name
            is_link = entry.is_symlink()
            as_dir = entry.is_dir(follow_symlinks=is_link)  # a link is matched as what it leads to
            source = self.left_out_by(rel, as_dir, rules)
            if source:
                self.excluded[rel + ("/" if as_dir else "")] = source
            elif is_link:
                self.links.append(rel)
            elif as_dir:
                below.append((Path(entry.path), rel + "/", rules))
            elif entry.is_file(follow_symlinks=False):
                self.files[rel] = Path(entry.path)
                self.sizes[rel] = entry.stat(follow_symlinks=False).st_size
            else:
                self.notes.append(f"{_shown(rel)}: not a regular file, left out")
        return below

    def follow_links(self) -> None:
        root, outside, hidden = self.root, [], []
        for rel in self.links:
            target = Path(os.path.realpath(root / rel))
            try:
                target_rel = target.relative_to(root).as_posix()
            except ValueError:
                outside.append(f"{_shown(rel)} -> {_shown(str(target))}")
                continue
            if not target.exists():
                self.notes.append(f"{_shown(rel)}: a broken symlink, left out")
            elif target.is_dir():
                self.notes.append(
                    f"{_shown(rel)}: a symlink to the folder {_shown(target_rel)}/, left out (it goes as itself)"
                )
            elif target_rel in self.files:
                self.files[rel], self.sizes[rel] = self.files[target_rel], self.sizes[target_rel]
            else:
                hidden.append(f"{_shown(rel)} -> {_shown(target_rel)}")
        for found, what in (
            (outside, "lead outside it"),
            (hidden, "lead to files that are left out (secrets, ignored)"),
        ):
            if found:
                more = f" (+{len(found) - 3} more)" if len(found) > 3 else ""
                raise ConfigError(
                    _one_line(
                        f"{root}: symlinks in the folder to upload {what}: {', '.join(found[:3])}{more}; "
                        "remove them or list them in .rayignore"
                    )
                )


def upload_limit() -> int:
    """Ray's limit on a job's packed working_dir (it refuses a package this large): ``GCS_STORAGE_MAX_SIZE``
    in ray/_private/runtime_env/packaging.py, 512 MiB unless ``RAY_max_grpc_message_size`` says otherwise."""
    from sentune.tuning._ray_compat import ray_working_dir_limit

    return ray_working_dir_limit(int(os.environ.get("RAY_max_grpc_message_size", 512 * 1024 * 1024)))


def _check_size(plan: UploadPlan, limit: int | None) -> None:
    limit = upload_limit() if limit is None else limit
    if plan.package_bytes() >= limit:
        raise ConfigError(
            _one_line(
                f"{plan.root}: the upload is over Ray's limit of {_human(limit)} for a job's working_dir: "
                f"{plan.summary()}; list big files in .rayignore, or put data on shared storage"
            )
        )


def _copy_regular(src: Path, dest: Path) -> None:
    """Copy one planned file: opened without following a link, checked to be a regular file still."""
    try:
        fd = os.open(src, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise ConfigError(_one_line(f"{src}: cannot read it for the upload ({exc.strerror})")) from None
    with os.fdopen(fd, "rb") as fin:
        mode = os.fstat(fin.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(_one_line(f"{src}: is no longer a regular file; run the submit again"))
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "xb") as fout:  # "x": a fresh file, never an existing one or a planted link
            shutil.copyfileobj(fin, fout)
    os.chmod(dest, stat.S_IMODE(mode) | stat.S_IRUSR)


def stage_upload(plan: UploadPlan, dest: str | Path) -> Path:
    """Copy exactly the planned files into the empty folder ``dest``, which is what Ray then packs.

    Not through sentune._atomic: this is a private scratch copy (a fresh ``mkdtemp`` folder), read only
    once it is complete, by Ray's packer, and removed after the upload."""
    dest = Path(dest)
    for rel, src in plan.files.items():
        _copy_regular(src, dest / rel)
    return dest


def _runtime_env(staged: Path) -> dict:
    # No "excludes": the staged folder holds the planned files and nothing else (no ignore files either),
    # so Ray packs all of it; its own default excludes (.git, .venv, venv, __pycache__) match nothing there.
    return {"working_dir": str(staged), "env_vars": {**STOP_ENV, **EVENT_ENV}}


def _inside(path: str, root: Path) -> list[str]:
    """``path`` relative to ``root`` (POSIX) when it is a local folder inside it, for plan_upload's skip."""
    from sentune.results import is_uri

    if is_uri(path):
        return []
    try:
        rel = Path(path).resolve().relative_to(root)
    except (ValueError, OSError):
        return []
    return [rel.as_posix()] if rel.parts else []


def _prepare_upload(working_dir: Path, skip: list[str], limit: int | None) -> UploadPlan:
    plan = plan_upload(working_dir, skip=skip)
    _check_size(plan, limit)
    log_line(_one_line(f"upload from {working_dir}: {plan.summary()}"))
    for note in plan.notes:
        log_line(_one_line(f"upload: {note}"))
    return plan


def _require_uploaded(plan: UploadPlan, rel: str, what: str) -> None:
    if rel not in plan.files:
        reason = plan.excluded_by(rel)
        raise ConfigError(
            _one_line(
                f"{what} {_shown(rel)} would not be uploaded"
                + (f": {reason} leaves it out" if reason else f": it is not a regular file in {plan.root}")
            )
        )


# ---- does the job fit the cluster? ------------------------------------------------------------------------


def _get_json(url: str, token: Token | None) -> dict | None:
    """An authenticated GET's JSON ``data``; None when the dashboard does not answer it (the check is then left
    to the driver)."""
    import requests

    try:
        r = requests.get(url, headers=_headers(token), timeout=_TIMEOUT_S)
        return r.json().get("data") if r.status_code == 200 else None
    except (requests.exceptions.RequestException, ValueError, AttributeError):
        return None


def autoscaler_configured(cluster_status: dict) -> bool:
    """From the dashboard's ``/api/cluster_status`` data: may an autoscaler add nodes to this cluster? A cluster of
    ``ray start`` nodes runs Ray's read-only provider, whose node types are the nodes themselves (``node_<id>``);
    an autoscaler's are its config's (``gpu_worker``, ...). Nothing said: it may."""
    report = (cluster_status.get("clusterStatus") or {}).get("autoscalerReport") or {}
    types = [str(t) for t in (report.get("nodeTypeMapping") or {}).values()]
    return not types or not all(re.fullmatch(r"node_[0-9a-f]+", t) for t in types)


def check_cluster_fits(resources, job: str, *, address: str | None = None, token: Token | None = None) -> bool:
    """Refuse (one ConfigError line) a job whose trial the live cluster's nodes cannot hold, read from the State
    API's node list (``/api/v0/nodes``: each node's ``resources_total``); True if it checked. A cluster that
    autoscales, or a dashboard that does not list its nodes, leaves the check to the driver's start."""
    from sentune.tuning._placement import check_fits, nodes_from_state_api, placement_note

    url = dashboard_url(address)
    data = _get_json(f"{url}/api/v0/nodes?limit=10000", token)
    records = ((data or {}).get("result") or {}).get("result")
    nodes = nodes_from_state_api(records) if isinstance(records, list) else []
    if not nodes:
        log_line(f"{redact(url)} lists no nodes: the job's driver checks that its trials fit when it starts")
        return False
    if autoscaler_configured(_get_json(f"{url}/api/cluster_status", token) or {}):
        log_line(f"{redact(url)} autoscales: the job's driver checks that its trials fit the node types it may add")
        return False
    check_fits(resources, nodes, job=job)
    note = placement_note(resources, nodes)
    if note:
        log_line(f"job {job}: {note}")
    return True


def _send(
    plan: UploadPlan, *, address: str | None, name: str, command: str, metadata: dict, resources=None
) -> tuple[str, str]:
    """Stage the planned files, connect, check that the job's trials fit the cluster (``resources``: the job's
    ``resources:``; None: no check), submit; returns (submission id, dashboard job URL)."""
    with tempfile.TemporaryDirectory(prefix="sentune-upload-") as tmp:
        staged = stage_upload(plan, tmp)
        client = connect(address)
        if resources is not None:
            check_cluster_fits(resources, name, address=address, token=find_token())
        sid = _submission_id(name)
        shown = redact(dashboard_url(address))
        try:
            client.submit_job(
                entrypoint=command, submission_id=sid, runtime_env=_runtime_env(staged), metadata=metadata
            )
        except (RuntimeError, ValueError, OSError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ClusterError(_one_line(f"submitting to {shown} failed: {redact_text(first)}")) from None
    return sid, f"{shown}/#/jobs/{sid}"


def _warn_if_credentials(uri: str) -> None:
    if has_credentials(uri):
        logger.warning(
            _one_line(
                f"{redact(uri)} carries credentials: they go to the cluster in the job's command line, which "
                "the dashboard shows to whoever holds the token (the cluster's own credentials avoid that)"
            )
        )


def submit_job(
    job_path: str | Path,
    *,
    address: str | None = None,
    storage: str | None = None,
    working_dir: str | Path = ".",
    max_upload_bytes: int | None = None,
) -> tuple[str, str]:
    """Validate the job here, then send it through the Jobs API; returns (submission id, dashboard job URL).

    In this order, nothing reaching the cluster before the last step: the job (and its data files) are
    validated, the upload is listed (:func:`plan_upload`) and checked against Ray's size limit
    (``max_upload_bytes``, default :func:`upload_limit`), the listed files are staged, then the cluster
    is contacted: its live nodes must hold a trial (:func:`check_cluster_fits`), then the job goes. It runs
    ``sentune run JOB --storage STORAGE`` in the uploaded folder. Results must go to a path every node and the
    user can read: an absolute shared path or a URI.
    """
    from sentune.spec import load_job

    refuse_control_characters(str(job_path), "job path")
    if storage is not None:
        refuse_control_characters(str(storage), "--storage")
    working_dir = Path(working_dir).resolve()
    job_path = Path(job_path)
    spec = load_job(job_path, storage_path=storage)  # validation before anything is uploaded
    storage = str(storage or spec.storage_path)
    refuse_control_characters(storage, "storage_path")
    if not _is_remote_storage(storage):
        raise ConfigError(
            f"job {spec.name}: storage_path {redact(storage)!r} is relative; a submitted job runs in a temporary "
            "folder on the cluster: give a shared absolute path or a URI with --storage"
        )
    try:
        rel_job = job_path.resolve().relative_to(working_dir)
    except ValueError:
        raise ConfigError(
            f"{job_path} is not inside the working directory {working_dir}, which is what gets uploaded"
        ) from None
    _check_data_travels(spec, working_dir)
    plan = _prepare_upload(working_dir, _inside(storage, working_dir), max_upload_bytes)
    _require_uploaded(plan, rel_job.as_posix(), "the job file")
    for rel, what in _relative_data(spec, working_dir):
        _require_uploaded(plan, rel, what)
    _warn_if_credentials(storage)
    job = rel_job.as_posix()
    job = f"./{job}" if job.startswith("-") else job  # never read as an option
    # The entrypoint carries the real storage URI, credentials and all: the cluster needs them to write
    # there. It is the only place they go; the metadata and every message get the redacted form.
    command = entrypoint_command(["sentune", "run", job, "--storage", storage])
    metadata = {"sentune_job": spec.name, "sentune_trainable": spec.trainable, "sentune_storage": redact(storage)}
    return _send(plan, address=address, name=spec.name, command=command, metadata=metadata, resources=spec.resources)


def _run_job_name(run: str) -> str:
    """The job's name in a run path ``.../<job>/<run>`` (from the path: never from a URI's user info)."""
    try:
        path = urlsplit(run).path if "://" in run else run
    except ValueError:
        return "run"
    parts = [p for p in path.split("/") if p]
    return parts[-2] if len(parts) >= 2 else "run"


def submit_resume(
    run: str, *, address: str | None = None, working_dir: str | Path = ".", max_upload_bytes: int | None = None
) -> tuple[str, str]:
    """Send ``sentune resume RUN`` through the Jobs API (a submitted job whose driver died, or that was
    stopped): RUN must be where the cluster wrote it (a shared absolute path or a URI). The upload is
    listed and checked as for :func:`submit_job`."""
    run = str(run)
    refuse_control_characters(run, "run")
    if not _is_remote_storage(run):
        raise ConfigError(f"{redact(run)}: a submitted resume needs the run's shared absolute path or URI")
    working_dir = Path(working_dir).resolve()
    name = _run_job_name(run)
    plan = _prepare_upload(working_dir, _inside(run, working_dir), max_upload_bytes)
    _warn_if_credentials(run)
    # As in submit_job: the real run URI in the entrypoint only; the metadata gets the redacted one.
    command = entrypoint_command(["sentune", "resume", run])
    metadata = {"sentune_job": name, "sentune_resume": redact(run)}
    return _send(plan, address=address, name=f"{name}-resume", command=command, metadata=metadata)


def _relative_data(spec, working_dir: Path) -> list[tuple[str, str]]:
    """The job's data files given as relative paths, as paths in the upload (they must be in it)."""
    data = spec.data
    if data.builtin:
        return []
    out = []
    for name in ("train", "dev", "test"):
        path = getattr(data, name)
        if path is not None and not Path(path).is_absolute():
            out.append((Path(path).resolve().relative_to(working_dir).as_posix(), f"data.{name}"))
    return out


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
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ClusterError(_one_line(f"job {job_id}: {redact_text(first)}")) from None


def job_status(job_id: str, *, address: str | None = None) -> dict:
    client = connect(address)
    info = _call(client.get_job_info, job_id)
    seconds = None
    if info.start_time:
        seconds = ((info.end_time or time.time() * 1000) - info.start_time) / 1000
    # the entrypoint carries the storage URI as given, credentials included: shown redacted
    message = redact_text(next((line.strip() for line in (info.message or "").splitlines() if line.strip()), ""))
    if len(message) > 160:  # a failed job's message carries its whole log tail: `sentune logs` shows that
        message = message[:157] + "..."
    return {
        "job_id": job_id,
        "status": str(info.status.value if hasattr(info.status, "value") else info.status),
        "message": message,
        "entrypoint": redact_text(info.entrypoint or ""),
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
