"""GPU scheduling without GPUs: a real two-node loopback cluster whose nodes claim two GPUs each (``ray start
--num-gpus 2``; Ray hands out device ids all the same, and llama_torch trains on the CPU behind them).

- a ``gpus: 0.25`` sweep of 16 trials runs them at once, four per (node, device id), as the record shows;
- a ``workers_per_trial: 2, gpus: 1`` trial gets two distinct devices, on one node with ``placement: pack``
  and on two with ``spread``, and its LR scaling uses the two workers it got;
- a trial bigger than any node is refused in one line, by ``sentune run`` and by ``sentune submit``;
- the placement check's logic itself (fast tests, no Ray).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from conftest import synthetic_rows, write_sst_file
from localcluster import LocalCluster, free_port
from sentune.errors import ConfigError
from sentune.spec import ResourcesConfig
from sentune.tuning._placement import NodeSize, check_fits, nodes_from_state_api, placement_note
from sentune.tuning._trial import scaling_kwargs, trial_resources

GIB = 1024**3
TINY = {"backbone": "random:tiny", "option": "finetune", "epochs": 1, "batch_size": 16, "max_len": 16, "seed": 3}


# ---- the placement check (no Ray) -------------------------------------------------------------------------


def _res(**kw) -> ResourcesConfig:
    return ResourcesConfig(**kw)


NODES = [NodeSize("node 10.0.0.4", cpus=16, gpus=0, memory=64 * GIB), NodeSize("node 10.0.0.5", cpus=8, gpus=1,
                                                                               memory=32 * GIB)]  # fmt: skip


def test_a_worker_needing_more_gpus_than_any_node_is_refused_naming_the_largest_node():
    with pytest.raises(ConfigError) as e:
        check_fits(_res(gpus=2), NODES, job="big")
    assert str(e.value) == (
        "job big: a trial's worker needs 2 GPUs; the largest node has 1 GPU "
        "(node 10.0.0.5: 8 CPUs, 1 GPU, 32.0 GiB memory)"
    )


def test_cpus_and_memory_are_checked_too_and_a_worker_must_fit_one_node_whole():
    with pytest.raises(ConfigError, match=r"needs 32 CPUs; the largest node has 16 CPUs \(node 10.0.0.4: 16 CPUs"):
        check_fits(_res(cpus=32), NODES, job="j")
    with pytest.raises(ConfigError, match=r"needs 100.0 GiB memory; the largest node has 64.0 GiB memory"):
        check_fits(_res(memory_gb=100), NODES, job="j")
    # 12 CPUs is on node .4 and a GPU on node .5, never both on one node
    with pytest.raises(ConfigError, match=r"needs 12 CPUs and 1 GPU; no node has all of it \(the largest is node 10"):
        check_fits(_res(cpus=12, gpus=1), NODES, job="j")


def test_fractions_share_a_device_and_a_group_the_cluster_cannot_hold_at_once_is_refused():
    check_fits(_res(gpus=0.25), NODES, job="j")  # four such workers per device
    check_fits(_res(gpus=1, workers_per_trial=1), NODES, job="j")
    check_fits(_res(cpus=1, gpus=0.5, workers_per_trial=2), NODES, job="j")  # both halves of one device
    with pytest.raises(ConfigError) as e:
        check_fits(_res(cpus=1, gpus=1, workers_per_trial=2), NODES, job="j")
    assert str(e.value) == ("job j: a trial's 2 workers need 2 CPUs and 2 GPUs in all; the cluster holds 1 such worker "
                            "at once (the most on node 10.0.0.5: 8 CPUs, 1 GPU, 32.0 GiB memory)")  # fmt: skip
    check_fits(_res(gpus=8), [], job="j")  # nothing known about the cluster: nothing refused


def test_placement_notes_say_when_pack_or_spread_cannot_be_kept():
    two = [NodeSize("node a", cpus=8, gpus=2), NodeSize("node b", cpus=8, gpus=2)]
    assert placement_note(_res(gpus=1, workers_per_trial=2), two) is None  # pack: one node holds both
    assert placement_note(_res(gpus=1, workers_per_trial=2, placement="spread"), two) is None
    note = placement_note(_res(gpus=1, workers_per_trial=4), two)
    assert note is not None and note.startswith("placement pack: no node holds a trial's 4 workers")
    note = placement_note(_res(gpus=1, workers_per_trial=3, placement="spread"), two)
    assert note == "placement spread: 3 workers per trial over 2 nodes that fit one: some share a node"
    assert placement_note(_res(gpus=1), two) is None  # one worker: nothing to place


def test_placement_goes_to_ray_trains_scaling_config_and_memory_to_both_reservations():
    assert scaling_kwargs(2, 1, 1)["placement_strategy"] == "PACK"
    kw = scaling_kwargs(2, 2, 0.5, memory_gb=1.5, placement="spread")
    assert kw == {"num_workers": 2, "use_gpu": True, "placement_strategy": "SPREAD",
                  "resources_per_worker": {"CPU": 2, "GPU": 0.5, "memory": int(1.5 * GIB)}}  # fmt: skip
    assert trial_resources(1, 1, 0.25, memory_gb=2) == {"cpu": 1, "gpu": 0.25, "memory": 2 * GIB}
    assert trial_resources(2, 1, 1, memory_gb=2)["cpu"] == 0  # a worker group's trial only waits
    with pytest.raises(ValidationError, match="placement"):
        ResourcesConfig(placement="diagonal")
    assert ResourcesConfig().placement == "pack"


def test_state_api_records_become_node_sizes():
    records = [
        {"node_ip": "10.0.0.5", "state": "ALIVE", "resources_total": {"CPU": 8.0, "GPU": 2.0, "memory": 4 * GIB}},
        {"node_ip": "10.0.0.6", "state": "DEAD", "resources_total": {"CPU": 64.0}},
    ]
    assert nodes_from_state_api(records) == [NodeSize("node 10.0.0.5", 8.0, 2.0, 4.0 * GIB)]


def test_submit_tells_an_autoscaling_cluster_from_one_of_ray_start_nodes():
    from sentune.submission import autoscaler_configured

    def status(*types):  # the dashboard's /api/cluster_status data, as Ray 2.60 answers it
        return {"clusterStatus": {"autoscalerReport": {"nodeTypeMapping": dict(enumerate(types))}}}

    assert not autoscaler_configured(status("node_7485a0c05e6b2529", "node_53f7ef50a6a0"))  # `ray start` nodes
    assert autoscaler_configured(status("ray.head.default", "gpu_worker"))  # the cluster launcher's node types
    assert autoscaler_configured({})  # nothing said: the driver checks


# ---- on a cluster of logical GPUs -------------------------------------------------------------------------


class GpuCluster(LocalCluster):
    """Two nodes, each claiming ``gpus`` GPUs (and ``cpus`` CPUs) it does not have."""

    def __init__(self, root, *, cpus: int = 4, gpus: int = 2):
        super().__init__(root, head_cpus=cpus, worker_cpus=cpus)
        self.gpus = gpus

    def start(self) -> GpuCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self.token_path.write_text(__import__("secrets").token_hex(32))
        for d in self.temp_dirs:
            d.mkdir(parents=True, exist_ok=True)
        self._ray_start("--head", f"--port={self.gcs_port}", f"--num-cpus={self.head_cpus}",
                        f"--num-gpus={self.gpus}", "--dashboard-host=127.0.0.1",
                        f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={free_port()}",
                        f"--dashboard-agent-listen-port={free_port()}", f"--temp-dir={self.temp_dirs[0]}")  # fmt: skip
        self._ray_start(f"--address={self.gcs_address}", f"--num-cpus={self.worker_cpus}", f"--num-gpus={self.gpus}",
                        f"--dashboard-agent-listen-port={free_port()}", f"--temp-dir={self.temp_dirs[1]}")  # fmt: skip
        self.wait_for_nodes(2)
        return self


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with GpuCluster(tmp_path_factory.mktemp("gpu-cluster")) as c:
        yield c


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu-project")
    write_sst_file(root / "train.txt", synthetic_rows(64, 1))
    write_sst_file(root / "dev.txt", synthetic_rows(32, 2))
    return root


def _job(project, name: str, resources: dict, **changes) -> str:
    job = dict(name=name, trainable="llama_torch", data={"train": "train.txt", "dev": "dev.txt"},
               search_space={"lr": {"loguniform": [1.0e-4, 1.0e-2]}}, params=TINY, search={"algorithm": "random"},
               num_samples=1, scheduler={"type": "fifo"}, resources=resources,
               storage_path=str(project / "store"), reference=False, seed=0)  # fmt: skip
    job.update(changes)
    (project / f"{name}.yaml").write_text(yaml.safe_dump(job))
    return f"{name}.yaml"


def _sentune(cluster, project, *args, timeout=400):
    out = subprocess.run([sys.executable, "-m", "sentune.cli", *args], cwd=project, env=cluster.env(),
                         capture_output=True, text=True, timeout=timeout)  # fmt: skip
    return out.returncode, out.stdout, out.stderr.strip()


def _run(cluster, project, job: str) -> pd.DataFrame:
    rc, out, err = _sentune(cluster, project, "run", job, "--address", cluster.gcs_address, "-q")
    assert rc == 0, (out[-3000:], err[-3000:])
    name = job.removesuffix(".yaml")
    run_dir = sorted((project / "store" / name).glob("*/run.json"))[-1].parent
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert (trials.status == "completed").all(), trials[["trial_id", "status"]]
    return pd.read_parquet(run_dir / "epochs.parquet")


@pytest.mark.slow
def test_a_quarter_gpu_sweep_runs_four_trials_per_device_on_both_nodes_and_trains_on_the_cpu(cluster, project):
    job = _job(project, "quarter", {"cpus": 0.25, "gpus": 0.25, "max_concurrent_trials": 16}, num_samples=16)
    epochs = _run(cluster, project, job)
    assert epochs.trial_id.nunique() == 16
    assert epochs.val_loss.notna().all() and (epochs.train_loss > 0).all()  # trained (on the CPU: no CUDA here)
    devices = epochs.assign(gpu=[tuple(json.loads(g)) for g in epochs.gpu_ids]).groupby(["node_id", "gpu"])
    per_device = devices.trial_id.nunique()
    assert len(per_device) == 4 and epochs.node_id.nunique() == 2, per_device
    assert (per_device == 4).all(), per_device  # 16 at once: the whole cluster, four quarters per device
    assert {g for _, g in per_device.index} == {(0,), (1,)}


@pytest.mark.slow
@pytest.mark.parametrize("placement", ["pack", "spread"])
def test_a_two_worker_trial_gets_two_devices_where_its_placement_says(cluster, project, placement):
    job = _job(project, f"two-{placement}", {"cpus": 1, "gpus": 1, "workers_per_trial": 2, "placement": placement},
               params={**TINY, "lr_scaling": "linear"})  # fmt: skip
    row = _run(cluster, project, job).iloc[-1]
    nodes, gpus = row.worker_node_ids.split(","), json.loads(row.worker_gpu_ids)
    assert len(nodes) == 2 and all(len(g) == 1 for g in gpus)
    assert len({(n, g[0]) for n, g in zip(nodes, gpus)}) == 2  # two distinct devices
    assert len(set(nodes)) == (1 if placement == "pack" else 2)
    if placement == "pack":
        assert sorted(g[0] for g in gpus) == [0, 1]
    # the LR scaling rule saw the world size the trial got
    assert row.workers == 2 and row.lr_scale == pytest.approx(2.0) and row.global_batch_size == 2 * TINY["batch_size"]


@pytest.mark.slow
def test_a_trial_bigger_than_any_node_is_refused_in_one_line_by_run_and_by_submit(cluster, project):
    job = _job(project, "huge", {"cpus": 1, "gpus": 3})
    rc, out, err = _sentune(cluster, project, "run", job, "--address", cluster.gcs_address, timeout=120)
    last = err.splitlines()[-1]
    assert rc == 2 and "job huge: a trial's worker needs 3 GPUs; the largest node has 2 GPUs (node " in last, err
    assert not list((project / "store").glob("huge/*"))  # no run folder left behind
    rc, out, err = _sentune(cluster, project, "submit", job, "--address", cluster.dashboard, timeout=120)
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "job huge: a trial's worker needs 3 GPUs; the largest node has 2 GPUs (node " in err
    assert "submitted" not in out
