"""What `sentune submit` / `sentune resume --submit` send to a cluster: a command line the shell reads as
exactly the intended argv, an upload without secrets (the files sentune lists, packed by Ray's own
packaging code), no credentials in the job's metadata or messages, and a warning before a token goes
over plain http to another host.

The Jobs API on the other side is a small HTTP server on 127.0.0.1 that answers as Ray's dashboard does
(version, package upload, job submission) and records what it was sent; the client is Ray's own
JobSubmissionClient. No traffic goes to any address that is not loopback.
"""

import io
import json
import logging
import os
import shlex
import subprocess
import tempfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import sentune.submission as sub
from conftest import synthetic_rows, write_sst_file
from sentune.errors import ClusterError, ConfigError

TOKEN = "tok-0123456789"


# ---- the other side: a Jobs API on loopback that records what it gets ----------------------------------


class _Dashboard(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def _reply(self, status: int, body: dict | None = None) -> None:
        data = json.dumps(body or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append((self.command, self.path, dict(self.headers), body))  # type: ignore[attr-defined]
        return body

    def do_GET(self):
        self._record()
        if self.path == "/api/version":
            self._reply(200, {"version": "4", "ray_version": "2.60.0", "ray_commit": "test", "session_name": "s"})
        else:  # /api/packages/gcs/<name>: not there yet, so the client uploads it
            self._reply(404, {})

    def do_PUT(self):
        self.server.packages[self.path] = self._record()  # type: ignore[attr-defined]
        self._reply(200, {})

    def do_POST(self):
        body = json.loads(self._record())
        self._reply(200, {"submission_id": body.get("submission_id"), "job_id": None})


@pytest.fixture
def dashboard():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Dashboard)
    server.requests = []  # type: ignore[attr-defined]
    server.packages = {}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield server
    server.shutdown()
    server.server_close()


def _submitted(server) -> dict:
    posts = [json.loads(body) for method, path, _, body in server.requests if method == "POST"]
    assert len(posts) == 1, [r[:2] for r in server.requests]
    return posts[0]


def _uploaded_members(server) -> set[str]:
    (data,) = server.packages.values()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n for n in z.namelist() if not n.endswith("/")}


@pytest.fixture
def log_lines():
    """The ``sentune`` logger's records (a handler of our own: whatever else has configured it)."""
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Collect(level=logging.DEBUG)
    log = logging.getLogger("sentune")
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    yield records
    log.removeHandler(handler)
    log.setLevel(old_level)


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)


# ---- a user's folder ----------------------------------------------------------------------------------

JOB = dict(
    name="tiny",
    trainable="llama_torch",
    data={"train": "train.txt", "dev": "dev.txt", "test": "test.txt"},
    search_space={"lr": {"grid": [3.0e-3, 1.0e-3]}},
    params={"backbone": "random:tiny", "option": "finetune", "epochs": 1, "batch_size": 16, "max_len": 24},
    search={"algorithm": "grid"},
    scheduler={"type": "fifo"},
    resources={"cpus": 1, "workers_per_trial": 1},
    seed=0,
)

SECRETS = [
    ".env",
    ".env.local",
    "id_rsa",
    "id_rsa.pub",
    "id_ed25519",
    "keys/server.pem",
    "keys/tls.key",
    "keys/client.p12",
    ".ssh/config",
    ".ssh/known_hosts",
    ".aws/credentials",
    ".azure/accessTokens.json",
    ".kube/config",
    "deploy/.config/gcloud/application_default_credentials.json",
    ".docker/config.json",
    ".netrc",
    ".pgpass",
    ".git-credentials",
    "auth_token",
    "ray_auth_token.txt",
    "credentials-prod.json",
    "release.keystore",
    ".npmrc",
    ".pypirc",
]
CODE = [
    "job.yaml",
    "train.txt",
    "dev.txt",
    "test.txt",
    "README.md",
    "src/model.py",
    "src/results/__init__.py",  # code in a folder named results: only the top-level results/ stays behind
    "sub/keep.py",
]


def make_project(root: Path, job: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_sst_file(root / "train.txt", synthetic_rows(40, 1))
    write_sst_file(root / "dev.txt", synthetic_rows(20, 2))
    write_sst_file(root / "test.txt", synthetic_rows(20, 3))
    (root / "job.yaml").write_text(yaml.safe_dump(job or JOB))
    for rel in CODE[4:]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"# {rel}\n")
    for rel in SECRETS:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("SECRET-" + rel)
    # the user's own ignore files; a `!` there does not bring a secret back
    (root / ".gitignore").write_text("secret_notes.txt\n!.env\n")
    (root / "secret_notes.txt").write_text("SECRET-notes")
    (root / ".rayignore").write_text("bigdata/\n")
    (root / "bigdata").mkdir()
    (root / "bigdata" / "blob.bin").write_bytes(b"\0" * 2048)
    (root / "sub" / ".gitignore").write_text("local.cfg\n")
    (root / "sub" / "local.cfg").write_text("SECRET-local")
    (root / "results").mkdir()
    (root / "results" / "old.parquet").write_bytes(b"SECRET-results")
    (root / ".git").write_text("gitdir: /elsewhere\n")  # a worktree's .git is a file
    os.symlink("src/model.py", root / "alias.py")  # a link to a file that goes: uploaded as a copy
    return root


EXPECTED = {*CODE, "alias.py"}


# ---- 1. the command line the cluster runs ------------------------------------------------------------


def _stub_sentune(tmp_path: Path) -> tuple[Path, Path]:
    """A `sentune` first on PATH that writes its argv, one per line, to a file."""
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir(exist_ok=True)
    out = tmp_path / "argv.txt"
    stub = bin_dir / "sentune"
    stub.write_text(f"#!/bin/bash\nprintf '%s\\n' \"$@\" > {shlex.quote(str(out))}\n")
    stub.chmod(0o755)
    return bin_dir, out


def _run_in_shell(command: str, tmp_path: Path) -> list[str]:
    """Run ``command`` as Ray's job supervisor does (through a shell), in ``tmp_path``; the stub's argv."""
    bin_dir, out = _stub_sentune(tmp_path)
    out.unlink(missing_ok=True)
    subprocess.run(
        ["bash", "-c", command],
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        timeout=30,
    )
    return out.read_text(encoding="utf-8").split("\n")[:-1] if out.exists() else []


HOSTILE_STORAGE = "/tmp/x; touch SENTINEL1; echo $(touch SENTINEL2) `touch SENTINEL3` > SENTINEL4 \"it's\" 'q' \\ end"


def test_the_submitted_command_line_is_exactly_the_argv_in_a_shell(tmp_path, dashboard, env, monkeypatch):
    project = make_project(tmp_path / "project")
    job_dir = project / "my jobs"
    job_dir.mkdir()
    odd_job = job_dir / '"quoted" $HOME.yaml'
    odd_job.write_text(yaml.safe_dump(JOB))
    monkeypatch.chdir(project)
    sub.submit_job(odd_job, address=dashboard.url, storage=HOSTILE_STORAGE)
    entrypoint = _submitted(dashboard)["entrypoint"]

    argv = _run_in_shell(entrypoint, tmp_path)
    assert not [p.name for p in tmp_path.glob("SENTINEL*")]  # nothing but `sentune` ran
    assert argv == ["run", 'my jobs/"quoted" $HOME.yaml', "--storage", HOSTILE_STORAGE]


def test_a_submitted_resume_command_line_is_exactly_the_argv(tmp_path, dashboard, env, monkeypatch):
    project = make_project(tmp_path / "project")
    monkeypatch.chdir(project)
    run = "/shared/store/tiny/run-1 && touch SENTINEL; $(touch SENTINEL2)"
    sub.submit_resume(run, address=dashboard.url)
    argv = _run_in_shell(_submitted(dashboard)["entrypoint"], tmp_path)
    assert not [p.name for p in tmp_path.glob("SENTINEL*")]
    assert argv == ["resume", run]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=12), max_size=4))
def test_any_printable_arguments_reach_the_command_unchanged(args):
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["sentune", "run", *args]
        assert _run_in_shell(sub.entrypoint_command(argv), Path(tmp)) == argv[1:]
        assert not list(Path(tmp).glob("SENTINEL*"))


@pytest.mark.parametrize("bad", ["\n", "\r", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\t"])
def test_control_characters_are_refused_in_one_line_before_any_request(tmp_path, dashboard, env, monkeypatch, bad):
    project = make_project(tmp_path / "project")
    monkeypatch.chdir(project)
    for call in (
        lambda: sub.submit_job("job.yaml", address=dashboard.url, storage=f"/shared/x{bad}touch SENTINEL"),
        lambda: sub.submit_resume(f"/shared/x/tiny/run{bad}touch SENTINEL", address=dashboard.url),
    ):
        with pytest.raises(ConfigError) as err:
            call()
        message = str(err.value)
        assert len(message.splitlines()) == 1 and len(message) <= 300 and "control character" in message, message
    if bad != "\x00":  # a file name cannot hold NUL
        (project / f"job{bad}x.yaml").write_text(yaml.safe_dump(JOB))
        with pytest.raises(ConfigError, match="job path .* control character"):
            sub.submit_job(f"job{bad}x.yaml", address=dashboard.url, storage="/shared/x")
    assert dashboard.requests == []


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=10), st.sampled_from(["\n", "\r", "\x00", "\x1f", "\x7f", "\x85", "\u2028", "\u2029"]))
def test_any_argument_with_a_control_character_is_refused(text, bad):
    with pytest.raises(ConfigError) as err:
        sub.entrypoint_command(["sentune", "run", text + bad + text])
    assert len(str(err.value).splitlines()) == 1 and len(str(err.value)) <= 300


# ---- 2. what is uploaded ------------------------------------------------------------------------------


def _ray_package(folder: Path, excludes: list[str], out: Path) -> set[str]:
    """The zip Ray's JobSubmissionClient builds from ``folder`` (create_package, its default excludes first)."""
    from ray._private.ray_constants import get_runtime_env_default_excludes
    from ray._private.runtime_env.packaging import create_package

    create_package(
        str(folder), out, include_gitignore=True, excludes=get_runtime_env_default_excludes() + list(excludes)
    )
    with zipfile.ZipFile(out) as z:
        return {n for n in z.namelist() if not n.endswith("/")}


def test_the_staged_upload_packed_by_ray_holds_the_listed_files_and_no_secret(tmp_path, log_lines):
    project = make_project(tmp_path / "project")
    # what Ray alone packs from the folder with the excludes sentune passed before: secrets and all
    before = _ray_package(project, ["results/", ".venv/", ".git/", "__pycache__/"], tmp_path / "before.zip")
    assert {".env", "id_rsa", ".ssh/config", "keys/server.pem"} <= before

    plan = sub.plan_upload(project)
    assert set(plan.files) == EXPECTED
    staged = sub.stage_upload(plan, tmp_path / "staged")
    members = _ray_package(staged, sub._runtime_env(staged).get("excludes", []), tmp_path / "after.zip")
    assert members == EXPECTED  # what is listed is what goes
    with zipfile.ZipFile(tmp_path / "after.zip") as z:
        assert not [n for n in z.namelist() if b"SECRET" in z.read(n)]
        assert z.read("alias.py") == (project / "src" / "model.py").read_bytes()
    assert plan.excluded_by(".env") == "sentune's list of secrets and keys"
    assert plan.excluded_by("secret_notes.txt") == ".gitignore"
    assert plan.excluded_by("bigdata/blob.bin") == ".rayignore"
    assert plan.excluded_by("sub/local.cfg") == "sub/.gitignore"


def test_submit_uploads_the_listed_files_and_says_what(tmp_path, dashboard, env, monkeypatch, log_lines):
    project = make_project(tmp_path / "project")
    monkeypatch.chdir(project)
    sub.submit_job("job.yaml", address=dashboard.url, storage="/shared/store")
    assert _uploaded_members(dashboard) == EXPECTED
    runtime_env = _submitted(dashboard)["runtime_env"]
    assert str(runtime_env["working_dir"]).startswith("gcs://_ray_pkg_")
    (summary,) = [line for line in log_lines if line.startswith("upload from")]
    assert f"{len(EXPECTED)} files" in summary and "largest: train.txt" in summary, summary
    # the request carried the token (to loopback, so no warning)
    assert all(h.get("Authorization") == f"Bearer {TOKEN}" for _, _, h, _ in dashboard.requests)
    assert not [line for line in log_lines if "plain http" in line]


def test_a_symlink_leading_outside_the_folder_is_refused_in_one_line(tmp_path, dashboard, env, monkeypatch):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "id_rsa").write_text("SECRET")
    project = make_project(tmp_path / "project")
    os.symlink(outside, project / "shared_data")
    os.symlink(outside / "id_rsa", project / "src" / "notes.txt")
    with pytest.raises(ConfigError) as err:
        sub.plan_upload(project)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and len(message) <= 300, message
    assert "lead outside" in message and "shared_data ->" in message and "src/notes.txt ->" in message
    monkeypatch.chdir(project)
    with pytest.raises(ConfigError, match="lead outside"):
        sub.submit_job("job.yaml", address=dashboard.url, storage="/shared/store")
    assert dashboard.requests == []


def test_a_symlink_to_a_secret_inside_the_folder_is_refused(tmp_path):
    project = make_project(tmp_path / "project")
    os.symlink(".env", project / "settings.txt")
    with pytest.raises(ConfigError, match=r"settings.txt -> \.env") as err:
        sub.plan_upload(project)
    assert len(str(err.value).splitlines()) == 1
    os.unlink(project / "settings.txt")
    os.symlink("src", project / "code")  # a link to a folder inside: left out with a note
    plan = sub.plan_upload(project)
    assert set(plan.files) == EXPECTED and any("code: a symlink to the folder src/" in n for n in plan.notes)


def test_the_job_and_its_data_must_be_in_the_upload(tmp_path, dashboard, env, monkeypatch):
    project = make_project(tmp_path / "project")
    (project / ".rayignore").write_text("bigdata/\ndev.txt\n")
    monkeypatch.chdir(project)
    with pytest.raises(ConfigError, match=r"^data.dev dev.txt would not be uploaded: .rayignore leaves it out$"):
        sub.submit_job("job.yaml", address=dashboard.url, storage="/shared/store")
    assert dashboard.requests == []


def test_a_bad_ignore_pattern_is_one_line_naming_the_file_and_line(tmp_path):
    project = make_project(tmp_path / "project")
    (project / "sub" / ".gitignore").write_text("local.cfg\nfine/\nbad\\\n")
    with pytest.raises(ConfigError) as err:
        sub.plan_upload(project)
    assert str(err.value).startswith(f"{project / 'sub' / '.gitignore'}:3: ") and len(str(err.value).splitlines()) == 1


def test_an_upload_over_the_size_limit_is_refused_before_contacting_the_cluster(tmp_path, dashboard, env, monkeypatch):
    project = make_project(tmp_path / "project")
    (project / "src" / "weights.bin").write_bytes(b"\1" * 40_000)
    monkeypatch.chdir(project)
    with pytest.raises(ConfigError) as err:
        sub.submit_job("job.yaml", address=dashboard.url, storage="/shared/store", max_upload_bytes=30_000)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and len(message) <= 300, message
    assert "over Ray's limit of 29.3 KiB" in message and "largest: src/weights.bin 39.1 KiB" in message
    with pytest.raises(ConfigError, match="over Ray's limit"):
        sub.submit_resume("/shared/store/tiny/run-1", address=dashboard.url, max_upload_bytes=30_000)
    assert dashboard.requests == []
    assert sub.upload_limit() == 512 * 1024 * 1024  # Ray 2.60's GCS_STORAGE_MAX_SIZE


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.sampled_from(["src", "deploy", "a b", "pkg", ".hidden"]), max_size=3),
    st.sampled_from(SECRETS + ["id_ecdsa", ".env.production", "x/.ssh/id_x", "prod.pfx", "credentials.json"]),
)
def test_a_secret_at_any_depth_is_never_listed(folders, secret):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        where = root.joinpath(*folders) / secret
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text("SECRET")
        (root / "code.py").write_text("pass\n")
        assert set(sub.plan_upload(root).files) == {"code.py"}


# ---- 3. credentials and the token ---------------------------------------------------------------------


def test_storage_credentials_stay_out_of_metadata_and_messages(tmp_path, dashboard, env, monkeypatch, log_lines):
    project = make_project(tmp_path / "project")
    monkeypatch.chdir(project)
    storage = "s3://AKIAKEYID:SeCrEtVaLuE@bucket/sentune?region=eu&secret_key=OtHeRsEcReT"
    sid, url = sub.submit_job("job.yaml", address=dashboard.url, storage=storage)
    body = _submitted(dashboard)
    assert body["metadata"]["sentune_storage"] == "s3://***@bucket/sentune?region=eu&secret_key=***"
    # the command line still carries the real URI: the cluster needs it to write there
    assert _run_in_shell(body["entrypoint"], tmp_path)[-1] == storage
    shown = "\n".join([*log_lines, sid, url, json.dumps(body["metadata"])])
    assert "SeCrEtVaLuE" not in shown and "OtHeRsEcReT" not in shown and "AKIAKEYID" not in shown
    assert any("carries credentials" in line for line in log_lines)

    dashboard.requests.clear()
    run = "s3://AKIAKEYID:SeCrEtVaLuE@bucket/run-2"
    sid, url = sub.submit_resume(run, address=dashboard.url)
    body = _submitted(dashboard)
    assert body["metadata"] == {"sentune_job": "run", "sentune_resume": "s3://***@bucket/run-2"}
    shown = "\n".join([*log_lines, sid, url, body["submission_id"], json.dumps(body["metadata"])])
    assert "SeCrEtVaLuE" not in shown and "AKIAKEYID" not in shown


@pytest.mark.parametrize(
    "url, warns",
    [
        ("http://10.0.0.1:8265", True),
        ("http://head.example.com:8265", True),
        ("http://[2001:db8::1]:8265", True),
        ("https://10.0.0.1:8265", False),
        ("http://127.0.0.1:8265", False),
        ("http://127.42.0.9:8265", False),
        ("http://[::1]:8265", False),
        ("http://localhost:8265", False),
        ("http://LOCALHOST.:8265", False),
    ],
)
def test_a_token_over_plain_http_to_another_host_is_warned_about(url, warns, log_lines):
    """The decision reads the URL only: nothing is sent anywhere."""
    assert sub.warn_if_cleartext_token(url, sub.Token("t", "RAY_AUTH_TOKEN")) is warns
    lines = [line for line in log_lines if "plain http" in line]
    assert len(lines) == int(warns) and all(len(line.splitlines()) == 1 for line in lines)
    assert sub.warn_if_cleartext_token(url, None) is False  # no token, nothing to warn about


def test_the_warning_comes_before_any_request(log_lines):
    # Port 99999 makes requests refuse the URL while preparing it (InvalidURL): no connection is attempted,
    # so this reaches no host, yet check_dashboard has already decided and warned.
    with pytest.raises(ClusterError, match="cannot reach the Ray dashboard at http://10.0.0.1:99999: InvalidURL"):
        sub.check_dashboard("10.0.0.1:99999", sub.Token("t", "RAY_AUTH_TOKEN"))
    assert [line for line in log_lines if "plain http" in line and "http://10.0.0.1:99999" in line]
