"""lstm_tf on a real local Ray: Ray Train's TensorflowTrainer (MultiWorkerMirroredStrategy, CPU),
real TensorFlow, the built-in zh-reviews data (a few hundred rows), real Parquet."""

import math

import pandas as pd
import pytest

from conftest import DESIGN_METRICS
from sentune.spec import parse_job
from sentune.tuning import run_sweep

pytestmark = pytest.mark.slow

DATA = {"builtin": "zh-reviews", "max_rows": {"train": 320, "dev": 120, "test": 120}}
SMALL = {
    "embedding_dim": 16,
    "lstm_units": [16, 8],
    "dense_units": 8,
    "max_len": 40,
    "vocab_size": 3000,
    "batch_size": 32,
    "tokenizer": "char",
    "seed": 2,
}


def job(tmp_path, name, *, trainable="lstm_tf", **changes):
    raw = dict(
        name=name,
        trainable=trainable,
        data=DATA,
        search_space={"lr": 3.0e-3},
        params={**SMALL, "epochs": 2},
        search={"algorithm": "random"},
        num_samples=1,
        scheduler={"type": "fifo"},
        resources={"cpus": 1, "workers_per_trial": 1, "max_concurrent_trials": 1},
        storage_path=str(tmp_path / "results"),
        seed=0,
    )
    raw.update(changes)
    return parse_job(raw)


@pytest.fixture(scope="module")
def two_workers(ray_local, tmp_path_factory):
    """One lstm_tf trial on 2 TensorflowTrainer workers (half a CPU each)."""
    tmp = tmp_path_factory.mktemp("lstm2")
    return run_sweep(
        job(tmp, "lstm2", resources={"cpus": 0.5, "workers_per_trial": 2, "max_concurrent_trials": 1}), run_id="r"
    )


def test_two_worker_trial_reports_every_metric(two_workers):
    epochs = pd.read_parquet(two_workers.run_dir / "epochs.parquet")
    assert epochs.epoch.tolist() == [1, 2]
    for col in [*DESIGN_METRICS, "node_id", "reported_at"]:
        assert epochs[col].notna().all(), col
        if col != "node_id":
            assert all(math.isfinite(v) for v in epochs[col]), col
    assert (epochs.workers == 2).all() and (epochs.global_batch_size == 64).all()
    for name in ("negative", "positive"):
        for kind in ("precision", "recall", "f1", "pred_count"):
            assert f"val_{kind}/{name}" in epochs.columns
    assert (epochs["val_pred_count/negative"] + epochs["val_pred_count/positive"] == 120).all()
    trials = pd.read_parquet(two_workers.run_dir / "trials.parquet")
    assert trials.status.tolist() == ["completed"] and trials.checkpoint_path.notna().all()
    # the best checkpoint was evaluated on the test split; the seed's CSV report is there too
    assert two_workers.test_report is not None
    assert len(list(two_workers.run_dir.glob("training_report_*.csv"))) == 1


def test_same_parquet_schema_as_llama_torch(ray_local, two_workers, tmp_path):
    llama = run_sweep(
        job(
            tmp_path,
            "llama1",
            trainable="llama_torch",
            params={
                "backbone": "random:tiny",
                "option": "finetune",
                "max_len": 24,
                "batch_size": 32,
                "epochs": 1,
                "seed": 2,
            },
        ),
        run_id="r",
    )
    for name in ("epochs.parquet", "trials.parquet"):
        cols = {c for c in pd.read_parquet(two_workers.run_dir / name).columns if not c.startswith("config/")}
        other = {c for c in pd.read_parquet(llama.run_dir / name).columns if not c.startswith("config/")}
        assert cols == other, (name, cols ^ other)


def test_asha_stops_the_bad_lr_early(ray_local, tmp_path):
    # on a few hundred rows the dev score of a tiny LSTM is noise; the training loss tells the lrs apart
    summary = run_sweep(
        job(
            tmp_path,
            "lstm_asha",
            search_space={"lr": {"grid": [1.0e-2, 1.0e-7]}},
            search={"algorithm": "grid"},
            params={**SMALL, "epochs": 4},
            scheduler={"type": "asha", "metric": "train_loss", "mode": "min", "grace_period": 1, "reduction_factor": 2},
        ),
        run_id="r",
    )
    trials = pd.read_parquet(summary.run_dir / "trials.parquet").set_index("config/lr")
    assert trials.loc[1.0e-7, "status"] == "stopped_early" and trials.loc[1.0e-7, "epochs_run"] < 4
    assert trials.loc[1.0e-2, "status"] == "completed" and trials.loc[1.0e-2, "epochs_run"] == 4


def test_sqrt_rule_with_four_workers_doubles_the_lr(ray_local, tmp_path):
    # one epoch that is all warm-up: the lr of its last step is the scaled base lr exactly
    summary = run_sweep(
        job(
            tmp_path,
            "lstm_sqrt",
            search_space={"lr": 1.0e-3},
            params={**SMALL, "epochs": 1, "warmup_epochs": 1, "lr_scaling": "sqrt"},
            resources={"cpus": 0.5, "workers_per_trial": 4, "max_concurrent_trials": 1},
        ),
        run_id="r",
    )
    row = pd.read_parquet(summary.run_dir / "epochs.parquet").iloc[0]
    assert row.workers == 4 and row.lr_scale == 2.0
    assert row.lr == pytest.approx(2.0e-3, rel=1e-9)
    assert row.global_batch_size == 4 * 32
