"""One-worker trials run in the Tune trial's own process (Ray Train's local mode): no Ray Train worker
actors, the same metrics as a worker group, both trainables; a logical GPU without CUDA means the CPU."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from sentune.spec import parse_job
from sentune.tuning import run_sweep

pytestmark = pytest.mark.slow

TINY = {"backbone": "random:tiny", "option": "finetune", "epochs": 2, "batch_size": 8, "max_len": 24, "lr": 3.0e-3}
LSTM = {"embedding_dim": 16, "lstm_units": [16, 8], "dense_units": 8, "max_len": 40, "vocab_size": 3000,
        "batch_size": 32, "tokenizer": "char", "seed": 2, "epochs": 2, "lr": 3.0e-3}  # fmt: skip
TRAIN_ACTORS = ("RayTrainWorker", "TrainController")


def train_actors(ray) -> int:
    """How many Ray Train worker and controller actors this Ray has ever started (any state)."""
    from ray.util.state import list_actors

    address = "http://" + ray._private.worker.get_dashboard_url()
    return sum(
        len(
            list_actors(
                address=address, filters=[("class_name", "=", name)], limit=10_000, raise_on_missing_output=False
            )
        )
        for name in TRAIN_ACTORS
    )


def job(tmp_path, name, trainable, params, data, **resources):
    return parse_job(
        dict(
            name=name, trainable=trainable, data=data, params=params, search={"algorithm": "random"}, num_samples=1,
            scheduler={"type": "fifo"}, resources={"cpus": 1, "workers_per_trial": 1, **resources},
            storage_path=str(tmp_path / "results"),
        )
    )  # fmt: skip


def metric_columns(run_dir: Path) -> set:
    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    return {c for c in epochs.columns if not c.startswith("config/") and epochs[c].notna().all()}


def test_one_worker_trial_starts_no_train_actors_and_reports_what_ddp_reports(ray_local, sst_dir, tmp_path):
    data = {"train": str(sst_dir / "train.txt"), "dev": str(sst_dir / "dev.txt"), "test": str(sst_dir / "test.txt")}
    before = train_actors(ray_local)
    one = run_sweep(job(tmp_path, "one", "llama_torch", TINY, data))
    assert train_actors(ray_local) == before  # local mode: the loop ran in the Tune trial itself
    two = run_sweep(job(tmp_path, "two", "llama_torch", TINY, data, workers_per_trial=2))
    assert train_actors(ray_local) >= before + 3  # a controller and two workers: the check can see actors
    assert metric_columns(one.run_dir) == metric_columns(two.run_dir)
    trials = pd.read_parquet(one.run_dir / "trials.parquet")
    assert trials.status.tolist() == ["completed"] and trials.checkpoint_path.notna().all()
    assert one.test_report is not None  # the best checkpoint (written through Tune) was found and scored


def test_lstm_tf_one_worker_trial_takes_the_fast_path(ray_local, tmp_path):
    data = {"builtin": "zh-reviews", "max_rows": {"train": 320, "dev": 120, "test": 120}}
    before = train_actors(ray_local)
    summary = run_sweep(job(tmp_path, "lstm1", "lstm_tf", LSTM, data))
    assert train_actors(ray_local) == before
    epochs = pd.read_parquet(summary.run_dir / "epochs.parquet")
    assert epochs.epoch.tolist() == [1, 2] and (epochs.workers == 1).all()
    assert summary.test_report is not None


def test_logical_gpu_without_cuda_runs_on_cpu(sst_dir, tmp_path):
    """A Ray node that claims a GPU (num_gpus=1) on a machine without CUDA: a gpus: 0.5 trial still trains."""
    script = textwrap.dedent(f"""
        import torch
        assert not torch.cuda.is_available()
        import pandas as pd
        from sentune.spec import parse_job
        from sentune.tuning import init_ray, run_sweep
        init_ray(num_cpus=2, num_gpus=1)
        data = {{"train": "{sst_dir / "train.txt"}", "dev": "{sst_dir / "dev.txt"}"}}
        spec = parse_job(dict(name="gpu", trainable="llama_torch", data=data, params={TINY!r},
                              scheduler={{"type": "fifo"}}, resources={{"cpus": 1, "gpus": 0.5}},
                              storage_path="{tmp_path / "results"}"))
        summary = run_sweep(spec)
        epochs = pd.read_parquet(summary.run_dir / "epochs.parquet")
        print("EPOCHS", epochs.epoch.tolist())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "EPOCHS [1, 2]" in out.stdout, out.stdout[-2000:] + out.stderr[-4000:]
