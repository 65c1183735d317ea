"""The trackers users already run: a real MLflow file store and real TensorBoard event files get every trial's
config and every epoch's metrics; the best trial's MLflow run is tagged."""

import os
import struct
import subprocess
import sys

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow


def _events(path):
    """The scalar summaries of a TensorBoard event file: {tag: [(step, value), ...]} (TFRecord framing)."""
    from tensorboardX.proto import event_pb2

    out: dict = {}
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
        pos += 12 + length + 4
        for value in event.summary.value:
            if value.HasField("simple_value"):
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_every_trial_and_epoch_reaches_mlflow_and_tensorboard_and_the_best_is_tagged(sst_dir, tmp_path):
    mlruns = tmp_path / "mlruns"
    job = dict(
        name="tracked",
        trainable="llama_torch",
        data={"train": str(sst_dir / "train.txt"), "dev": str(sst_dir / "dev.txt")},
        search_space={"lr": {"grid": [3.0e-3, 1.0e-4]}},
        params={"backbone": "random:tiny", "option": "finetune", "epochs": 3, "batch_size": 16, "max_len": 24},
        search={"algorithm": "grid"},
        scheduler={"type": "fifo"},
        resources={"cpus": 1, "max_concurrent_trials": 2},
        storage_path=str(tmp_path / "results"),
        tracking={"tensorboard": True, "mlflow": {"tracking_uri": mlruns.as_uri(), "experiment": "sst-sweeps"}},
    )
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    out = subprocess.run([sys.executable, "-m", "sentune.cli", "run", "job.yaml", "-q"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    run_dir = next((tmp_path / "results" / "tracked").iterdir())
    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    trials = pd.read_parquet(run_dir / "trials.parquet").set_index("trial_id")
    best = trials.peak_metric.idxmax()

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlruns.as_uri())
    experiment = client.get_experiment_by_name("sst-sweeps")
    runs = {r.data.tags["trial_name"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {f"tracked-{tid}" for tid in trials.index}
    for tid, trial in trials.iterrows():
        run = runs[f"tracked-{tid}"]
        assert float(run.data.params["lr"]) == trial["config/lr"]
        history = client.get_metric_history(run.info.run_id, "val_macro_f1")
        want = epochs[epochs.trial_id == tid].sort_values("epoch").val_macro_f1.tolist()
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(want)
        assert (run.data.tags.get("sentune.best") == "true") == (tid == best)
        assert run.data.tags["sentune.job"] == "tracked"

    for tid in trials.index:
        files = list((run_dir / "tune").glob(f"tracked-{tid}*/events.out.tfevents.*"))
        assert len(files) == 1, list((run_dir / "tune").iterdir())
        scalars = _events(files[0])
        values = [v for _, v in sorted(scalars["ray/tune/val_macro_f1"])]
        want = epochs[epochs.trial_id == tid].sort_values("epoch").val_macro_f1.tolist()
        assert values == pytest.approx(want, abs=1e-6)
