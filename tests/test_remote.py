"""A real two-node Ray cluster (`ray start --head` with token auth + `ray start --address`), driven the
way a user does it: `sentune submit / status / logs / stop / results / dashboard` as subprocesses."""

import json
import subprocess
import sys
import time

import pandas as pd
import pytest
import requests
import yaml

from conftest import synthetic_rows, write_sst_file
from localcluster import LocalCluster, submission_id

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A user's folder: data files, a search space and a tiny job (2 trials x 2 epochs, 1 CPU each)."""
    root = tmp_path_factory.mktemp("project")
    write_sst_file(root / "train.txt", synthetic_rows(240, 1))
    write_sst_file(root / "dev.txt", synthetic_rows(80, 2))
    write_sst_file(root / "test.txt", synthetic_rows(80, 3))
    (root / "results").mkdir()
    (root / "results" / "big.bin").write_bytes(b"0" * 1024)  # must not be uploaded
    job = dict(
        name="tiny",
        trainable="llama_torch",
        data={"train": "train.txt", "dev": "dev.txt", "test": "test.txt"},
        search_space={"lr": {"grid": [3.0e-3, 1.0e-3]}},
        params={
            "backbone": "random:tiny",
            "option": "finetune",
            "epochs": 2,
            "batch_size": 16,
            "max_len": 24,
            "seed": 1,
        },
        search={"algorithm": "grid"},
        scheduler={"type": "fifo"},
        resources={"cpus": 1, "workers_per_trial": 1, "max_concurrent_trials": 2},
        seed=0,
    )
    (root / "job.yaml").write_text(yaml.safe_dump(job))
    bad = dict(job, schedular={"type": "asha"})
    (root / "bad_job.yaml").write_text(yaml.safe_dump(bad))
    (root / "bad_dev.txt").write_text("1 ||| fine\nno separator here\n", encoding="utf-8")
    (root / "bad_data_job.yaml").write_text(yaml.safe_dump(dict(job, data=dict(job["data"], dev="bad_dev.txt"))))
    return root


def sentune(cluster, *args, cwd=None, timeout=120, **env):
    out = subprocess.run(
        [sys.executable, "-m", "sentune.cli", *args],
        cwd=cwd,
        env=cluster.env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return out.returncode, out.stdout, out.stderr.strip()


def job_ids(cluster):
    r = requests.get(f"{cluster.dashboard}/api/jobs/", headers={"Authorization": f"Bearer {cluster.token}"}, timeout=10)
    r.raise_for_status()
    return {j["submission_id"] for j in r.json()}


def wait_status(cluster, sid, wanted, timeout):
    deadline = time.monotonic() + timeout
    while True:
        rc, out, err = sentune(cluster, "status", sid, "--address", cluster.dashboard)
        status = out.split(":")[1].split()[0] if ":" in out else err
        if status in wanted or time.monotonic() > deadline:
            return status, out
        time.sleep(2)


def test_the_dashboard_api_refuses_requests_without_the_right_token(cluster):
    url = f"{cluster.dashboard}/api/jobs/"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer not-the-token"}, timeout=10).status_code == 403
    assert requests.get(url, headers={"Authorization": f"Bearer {cluster.token}"}, timeout=10).status_code == 200
    rc, out, err = sentune(cluster, "dashboard", "--address", cluster.dashboard, "--cluster", "cluster.yaml")
    assert rc == 0, err
    assert f"dashboard: {cluster.dashboard}" in out and "token:     works (RAY_AUTH_TOKEN_PATH" in out
    assert "port-forward: ray dashboard cluster.yaml" in out


def test_wrong_token_and_unreachable_address_are_one_line_errors(cluster, project):
    rc, out, err = sentune(
        cluster,
        "submit",
        "job.yaml",
        "--address",
        cluster.dashboard,
        "--storage",
        "/tmp/x",
        cwd=project,
        RAY_AUTH_TOKEN="wrong-token",
    )
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert "refused the token from RAY_AUTH_TOKEN (403)" in err
    rc, out, err = sentune(cluster, "status", "anything", "--address", f"127.0.0.1:{_closed_port()}")
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert (
        err.startswith("sentune: cannot reach the Ray dashboard at http://127.0.0.1:") and "connection refused" in err
    )
    # no token at all: the message says where one is looked for
    rc, out, err = sentune(
        cluster, "dashboard", "--address", cluster.dashboard, RAY_AUTH_TOKEN_PATH="", HOME=str(project / "nohome")
    )
    assert rc == 1 and len(err.splitlines()) == 1 and "(401)" in err and "RAY_AUTH_TOKEN" in err, err


def _closed_port():
    from localcluster import free_port

    return free_port()  # bound and released: nothing listens there


def test_an_invalid_job_is_refused_before_anything_is_uploaded(cluster, project):
    before = job_ids(cluster)
    rc, out, err = sentune(
        cluster, "submit", "bad_job.yaml", "--address", cluster.dashboard, "--storage", "/tmp/x", cwd=project
    )
    assert rc == 2 and len(err.splitlines()) == 1 and "schedular" in err, err
    rc, out, err = sentune(cluster, "submit", "job.yaml", "--address", cluster.dashboard, cwd=project)
    assert rc == 2 and "storage_path 'results' is relative" in err, err
    rc, out, err = sentune(
        cluster, "submit", "bad_data_job.yaml", "--address", cluster.dashboard, "--storage", "/tmp/x", cwd=project
    )
    assert rc == 2 and len(err.splitlines()) == 1 and "bad_dev.txt:2: line has no '|||' separator" in err, err
    assert job_ids(cluster) == before


def test_submitted_job_succeeds_on_both_nodes_and_results_come_back(cluster, project, tmp_path):
    storage = f"file://{tmp_path}/store"  # any pyarrow URI; file:// runs the same code path as s3://
    t_submit = time.time()
    rc, out, err = sentune(
        cluster, "submit", "job.yaml", "--address", cluster.dashboard, "--storage", storage, cwd=project
    )
    assert rc == 0, err
    sid = submission_id(out)
    assert sid.startswith("sentune-tiny-") and f"dashboard: {cluster.dashboard}/#/jobs/{sid}" in out
    status, line = wait_status(cluster, sid, {"SUCCEEDED", "FAILED", "STOPPED"}, timeout=400)
    rc, logs, err = sentune(cluster, "logs", sid, "--address", cluster.dashboard)
    assert status == "SUCCEEDED", line + logs[-3000:]
    assert "[sentune] job tiny: llama_torch" in logs and "Best trial on the test split" in logs

    rc, board, err = sentune(cluster, "results", f"{storage}/tiny")
    assert rc == 0, err
    rows = [ln.split() for ln in board.splitlines()[2:] if ln.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == ["1", "2"] and all(r[2] == "completed" for r in rows)

    run = next((tmp_path / "store" / "tiny").iterdir())
    epochs = pd.read_parquet(run / "epochs.parquet")
    assert len(epochs) == 4
    assert set(epochs.node_id) == set(cluster.node_ids())  # one trial on each node
    first = epochs.reported_at.min() - t_submit
    print(f"\nsubmit -> first trial result: {first:.1f} s")
    assert 0 < first < 400
    # one-worker trials ran in Ray Train's local mode, in the Tune trials themselves: no worker actors
    r = requests.get(
        f"{cluster.dashboard}/api/v0/actors",
        params={"filter_keys": "class_name", "filter_predicates": "=", "filter_values": "RayTrainWorker"},
        headers={"Authorization": f"Bearer {cluster.token}"},
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["data"]["result"]["result"] == [], r.text[:500]
    # what was uploaded: the files sentune listed and staged (results/ left behind; the list itself is checked in
    # test_submission_safety.py), so nothing is left for Ray to exclude
    r = requests.get(
        f"{cluster.dashboard}/api/jobs/{sid}", headers={"Authorization": f"Bearer {cluster.token}"}, timeout=10
    )
    env = r.json()["runtime_env"]
    assert not env.get("excludes") and str(env["working_dir"]).startswith("gcs://_ray_pkg_"), env
    assert json.loads(json.dumps(r.json()["metadata"]))["sentune_job"] == "tiny"
    rc, out, err = sentune(cluster, "export", f"{storage}/tiny", cwd=tmp_path)
    assert rc == 0 and (tmp_path / "best_config.yaml").is_file(), err
    assert yaml.safe_load((tmp_path / "best_config.yaml").read_text())["trainable"] == "llama_torch"


def test_stop_saves_the_sweep_and_a_submitted_resume_finishes_it(cluster, project, tmp_path):
    job = yaml.safe_load((project / "job.yaml").read_text())
    job.update(name="longer", params={**job["params"], "epochs": 12})
    (project / "longer.yaml").write_text(yaml.safe_dump(job))
    store = tmp_path / "store"
    rc, out, err = sentune(
        cluster, "submit", "longer.yaml", "--address", cluster.dashboard, "--storage", str(store), cwd=project
    )
    assert rc == 0, err
    sid = submission_id(out)
    deadline = time.monotonic() + 300
    while not list(store.glob("longer/*/epochs.parquet/*.parquet")):  # the sweep is under way
        assert time.monotonic() < deadline, "no epoch reported"
        time.sleep(0.5)
    rc, out, err = sentune(cluster, "stop", sid, "--address", cluster.dashboard)
    assert rc == 0 and out.strip() == f"{sid}: stop requested", out + err
    status, line = wait_status(cluster, sid, {"STOPPED", "SUCCEEDED", "FAILED"}, timeout=120)
    assert status == "STOPPED", line
    run = next((store / "longer").iterdir())
    logs = sentune(cluster, "logs", sid, "--address", cluster.dashboard)[1]
    # the driver got a first Ctrl-C: it saved the sweep and said how to go on
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted", logs[-3000:]
    assert f"sentune resume {run}" in logs

    rc, out, err = sentune(cluster, "resume", str(run), "--submit", cluster.dashboard, cwd=project)
    assert rc == 0, err
    rid = submission_id(out)
    status, line = wait_status(cluster, rid, {"SUCCEEDED", "FAILED", "STOPPED"}, timeout=400)
    logs = sentune(cluster, "logs", rid, "--address", cluster.dashboard)[1]
    assert status == "SUCCEEDED", line + logs[-3000:]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    epochs = pd.read_parquet(run / "epochs.parquet")
    assert not epochs.duplicated(["trial_id", "epoch"]).any() and len(epochs) == 2 * 12

    rc, out, err = sentune(cluster, "status", "no-such-job", "--address", cluster.dashboard)
    assert rc == 1 and err == "sentune: no job 'no-such-job' on this cluster", err
