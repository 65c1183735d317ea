"""A worker node dies mid-trial on a real two-node cluster (`ray start --head` + `ray start --address`, token
auth, the job sent with `sentune submit`): the trial goes on from its last resume checkpoint on the node
that is left, and ends with the metrics it would have had without the failure."""

import json
import subprocess
import sys
import time

import pandas as pd
import pytest
import requests
import torch
import yaml

from conftest import synthetic_rows, write_sst_file
from localcluster import LocalCluster, submission_id

pytestmark = pytest.mark.slow

EPOCHS = 8


def _sentune(cluster, *args, cwd, timeout=120):
    out = subprocess.run(
        [sys.executable, "-m", "sentune.cli", *args],
        cwd=cwd,
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return out.returncode, out.stdout, out.stderr.strip()


def _worker_node_id(cluster) -> str:
    r = requests.get(
        f"{cluster.dashboard}/api/v0/nodes", headers={"Authorization": f"Bearer {cluster.token}"}, timeout=10
    )
    r.raise_for_status()
    nodes = r.json()["data"]["result"]["result"]
    return next(n["node_id"] for n in nodes if not n["is_head_node"] and n["state"] == "ALIVE")


def test_a_trial_on_a_killed_node_goes_on_from_its_last_epoch_with_the_same_results(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    write_sst_file(project / "train.txt", synthetic_rows(1200, 1))
    write_sst_file(project / "dev.txt", synthetic_rows(80, 2))
    store = tmp_path / "store"  # one machine: an absolute path every node reaches, like a shared file system
    params = {"backbone": "random:tiny", "option": "finetune", "epochs": EPOCHS, "batch_size": 16, "max_len": 24,
              "hidden_dropout": 0.2, "seed": 5}  # fmt: skip
    job = dict(
        name="survive",
        trainable="llama_torch",
        data={"train": "train.txt", "dev": "dev.txt"},
        search_space={"lr": {"grid": [3.0e-3, 1.0e-3]}},
        params=params,
        search={"algorithm": "grid"},
        scheduler={"type": "fifo"},
        resources={"cpus": 1, "workers_per_trial": 1, "max_concurrent_trials": 2},
        failure={"max_failures": 2, "checkpoint_min_interval_s": 0},  # every epoch's state: what the kill finds
        storage_path=str(store),
        seed=0,
    )
    (project / "job.yaml").write_text(yaml.safe_dump(job))

    with LocalCluster(tmp_path / "cluster") as cluster:
        worker = _worker_node_id(cluster)
        rc, out, err = _sentune(cluster, "submit", "job.yaml", "--address", cluster.dashboard, cwd=project)
        assert rc == 0, err
        sid = submission_id(out)

        # wait until the trial on the worker node has finished at least 2 epochs (as the record shows)
        deadline, victim = time.monotonic() + 400, None
        while victim is None:
            assert time.monotonic() < deadline, "no trial reached 2 epochs on the worker node"
            runs = sorted((store / "survive").glob("*/epochs.parquet"))
            if runs:
                try:
                    rows = pd.read_parquet(runs[-1])
                except Exception:  # being written
                    rows = pd.DataFrame()
                on_worker = rows[rows.node_id == worker] if "node_id" in rows else rows
                done = on_worker.groupby("trial_id").epoch.max() if len(on_worker) else pd.Series(dtype=int)
                ready = done[(done >= 2) & (done < EPOCHS - 2)]
                if len(ready):
                    victim, killed_after = ready.index[0], int(ready.iloc[0])
            time.sleep(0.2)
        assert cluster.kill_worker_node() > 0

        deadline = time.monotonic() + 600
        while True:
            rc, out, err = _sentune(cluster, "status", sid, "--address", cluster.dashboard, cwd=project)
            status = out.split(":")[1].split()[0] if ":" in out else err
            if status in ("SUCCEEDED", "FAILED", "STOPPED") or time.monotonic() > deadline:
                break
            time.sleep(2)
        logs = _sentune(cluster, "logs", sid, "--address", cluster.dashboard, cwd=project)[1]
        assert status == "SUCCEEDED", logs[-4000:]

    run_dir = sorted((store / "survive").glob("*/run.json"))[-1].parent
    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    trials = pd.read_parquet(run_dir / "trials.parquet").set_index("trial_id")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert (epochs.groupby("trial_id").epoch.apply(sorted).apply(list) == [list(range(1, EPOCHS + 1))] * 2).all()
    assert (trials.status == "completed").all()

    rows = epochs[epochs.trial_id == victim].sort_values("epoch")
    went_on = rows[rows.resumed_at_epoch > 0]
    first_after = int(went_on.epoch.min())
    # it went on from the epoch after its last resume checkpoint: not epoch 1, and no earlier than the
    # record showed when the node was killed
    assert first_after > killed_after >= 2
    assert (went_on.resumed_at_epoch == first_after).all()
    assert (rows[rows.epoch < first_after].resumed_at_epoch == 0).all()
    assert set(went_on.node_id) != {worker}  # on the node that is left

    # the same trial without a failure: the plain loop, same seed, same data, one thread as in the trial
    from sentune.data import DataConfig, load_splits
    from sentune.trainables import llama_torch as lt

    torch.set_num_threads(1)
    config = json.loads(trials.loc[victim, "config_json"])
    p = lt.LlamaTorchParams(**{**params, **config})
    splits = load_splits(DataConfig(train=project / "train.txt", dev=project / "dev.txt"))
    straight = lt.fit(p, lt.prepare(p, splits)).history
    for want in straight:
        got = rows[rows.epoch == want["epoch"]].iloc[0]
        for key in ("train_loss", "val_loss", "val_macro_f1", "val_acc", "grad_norm"):
            assert got[key] == pytest.approx(want[key], abs=1e-6), (want["epoch"], key)
