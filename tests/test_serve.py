"""`sentune serve` on a real local Ray with real Ray Serve, asked over real HTTP: a tiny run's best model answers
with the labels ``open_model(run).predict`` gives, bad requests get a 4xx with a one-line reason, and the app
stops cleanly (the port refuses afterwards); the same for the LSTM trainable, and the CLI's own process with
``sentune serve --stop`` from another one."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import synthetic_rows
from sentune.errors import MESSAGE_LIMIT
from sentune.inference import open_model
from sentune.serving import ServingError, serve_model, stop_serving

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MAX_TEXTS, MAX_CHARS = 16, 300
TEXTS = [text for _, text in synthetic_rows(12, 7)] + ["", "好 的 电影", "x" * MAX_CHARS]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(home: Path) -> dict:
    """A subprocess's environment: this checkout first, its own SENTUNE_HOME, its own embedded Ray."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "PYTHONPATH": str(ROOT), "SENTUNE_HOME": str(home)}


def _refused(url: str) -> bool:
    try:
        requests.get(f"{url}/healthz", timeout=5)
    except requests.ConnectionError:
        return True
    return False


@pytest.fixture(scope="module")
def run_dir(tiny_sweep, tmp_path_factory):
    """A copy of the session's tiny llama_torch run (serving exports its best model into it)."""
    copy = tmp_path_factory.mktemp("serve") / "run"
    shutil.copytree(tiny_sweep.run_dir, copy)
    return copy


@pytest.fixture(scope="module")
def lstm_run(ray_local, tmp_path_factory):
    """A tiny lstm_tf run, trained before anything is served: a sweep's one-off tasks take every CPU of a node,
    which a replica holding one would leave them waiting for."""
    from test_lstm_ray import job

    from sentune.tuning import run_sweep

    return run_sweep(job(tmp_path_factory.mktemp("lstm-serve"), "lstm_serve"), run_id="r").run_dir


@pytest.fixture(scope="module")
def served(ray_local, run_dir, lstm_run):
    port = _free_port()
    url = serve_model(run_dir, port=port, blocking=False, max_texts=MAX_TEXTS, max_chars=MAX_CHARS)
    yield url, port
    stop_serving()


def _labels(url: str, texts: list[str]) -> list[str]:
    resp = requests.post(f"{url}/predict", json={"texts": texts}, timeout=60)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert len(body["predictions"]) == len(texts)
    for pred in body["predictions"]:
        assert set(pred["probabilities"]) == set(body["labels"])
        assert abs(sum(pred["probabilities"].values()) - 1) < 1e-4
    return [pred["label"] for pred in body["predictions"]]


def test_predict_answers_the_labels_of_open_model(served, run_dir):
    url, _ = served
    assert _labels(url, TEXTS) == [p["label"] for p in open_model(run_dir).predict(TEXTS)]
    assert _labels(url, TEXTS[:1]) == [open_model(run_dir).predict(TEXTS[:1])[0]["label"]]


def test_concurrent_requests_are_answered_each_with_its_own_labels(served, run_dir):
    from concurrent.futures import ThreadPoolExecutor

    url, _ = served
    want = [p["label"] for p in open_model(run_dir).predict(TEXTS)]
    chunks = [TEXTS[i : i + 3] for i in range(0, len(TEXTS), 3)]
    with ThreadPoolExecutor(len(chunks)) as pool:
        got = list(pool.map(lambda texts: _labels(url, texts), chunks))
    assert [label for labels in got for label in labels] == want


def test_healthz_and_describe(served, run_dir):
    url, _ = served
    assert requests.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
    about = requests.get(f"{url}/", timeout=10).json()
    model = open_model(run_dir)
    assert about["trainable"] == "llama_torch" and about["label_names"] == model.label_names
    assert about["max_len"] == model.max_len and about["max_texts"] == MAX_TEXTS and about["max_chars"] == MAX_CHARS
    assert about["config"]["lr"] == model.info["config"]["lr"]


BAD = [
    (b"not json", 400, "not JSON"),
    (b"\xff\xfe{", 400, "not JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b"{}", 400, 'no "texts"'),
    (b'{"texts": null}', 400, 'no "texts"'),
    (b'{"texts": []}', 400, "empty"),
    (b'{"texts": "one text"}', 400, "list of strings"),
    (b'{"texts": ["fine", 3]}', 400, "list of strings"),
    (json.dumps({"texts": ["a"] * (MAX_TEXTS + 1)}).encode(), 413, f"at most {MAX_TEXTS}"),
    (json.dumps({"texts": ["ok", "x" * (MAX_CHARS + 1)]}).encode(), 413, f"text 1 has {MAX_CHARS + 1} characters"),
    (b'{"texts": ["' + b"y" * 200_000 + b'"]}', 413, "bytes"),
]


@pytest.mark.parametrize("body, status, reason", BAD, ids=[r for _, _, r in BAD])
def test_bad_requests_get_a_4xx_with_one_line(served, body, status, reason):
    url, _ = served
    resp = requests.post(f"{url}/predict", data=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert reason in error and "\n" not in error and len(error) <= MESSAGE_LIMIT


@pytest.mark.parametrize("method, path, status", [("get", "/predict", 405), ("get", "/nowhere", 404)])
def test_other_routes_get_a_4xx_with_one_line(served, method, path, status):
    url, _ = served
    resp = requests.request(method, f"{url}{path}", timeout=10)
    assert resp.status_code == status and "\n" not in resp.json()["error"]


def test_bad_sources_and_options_are_one_line(served, run_dir, tmp_path):
    with pytest.raises(ServingError, match="neither a run folder"):
        serve_model(tmp_path, port=_free_port())
    with pytest.raises(ServingError, match="--replicas"):
        serve_model(run_dir, replicas=0)
    with socket.socket() as other:  # Serve runs here on another port: it keeps it
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(ServingError, match="Serve already runs on this Ray, not at"):
            serve_model(run_dir, port=other.getsockname()[1])


def test_the_cli_refuses_a_port_in_use_in_one_line(run_dir, tmp_path):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "sentune.cli", "serve", str(run_dir), "--port", str(port)],
                             env=_env(tmp_path),
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [f"sentune: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_an_lstm_model_is_served_in_place_of_the_first(served, lstm_run):
    url, port = served
    texts = ["这个手机很好用，物流也快", "质量太差了，不推荐", "一般般"]
    assert serve_model(lstm_run, port=port, blocking=False) == url
    assert requests.get(f"{url}/", timeout=10).json()["trainable"] == "lstm_tf"
    assert _labels(url, texts) == [p["label"] for p in open_model(lstm_run).predict(texts)]


def test_stop_cleanly(served, capsys):
    from sentune.cli import main

    url, _ = served
    assert main(["serve", "--stop"]) == 0
    assert "stopped the sentune app" in capsys.readouterr().out
    assert _refused(url)
    assert stop_serving() is False


def test_the_cli_serves_until_serve_stop_from_another_process(run_dir, tmp_path):
    """`sentune serve RUN` on its own embedded Ray; `sentune serve --stop` ends it: the app, its Ray, its port."""
    port = _free_port()
    env = _env(tmp_path / "home")
    cli = [sys.executable, "-m", "sentune.cli", "serve"]
    proc = subprocess.Popen([*cli, str(run_dir / "model"), "--port", str(port)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "home" / "serve" / f"{port}.json").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.5)
        assert _labels(url, TEXTS[:4]) == [p["label"] for p in open_model(run_dir).predict(TEXTS[:4])]
        stop = subprocess.run([*cli, "--stop"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90)
        assert stop.returncode == 0 and "stopped the sentune app" in stop.stdout, stop.stdout + stop.stderr
        assert proc.wait(timeout=30) == 0
        assert _refused(url)
        assert not (tmp_path / "home" / "serve" / f"{port}.json").exists()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
