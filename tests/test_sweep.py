"""Sweeps on a real local Ray: Tune + Train V2 TorchTrainer, tiny random-init LLaMA, real Parquet."""

import math
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import DESIGN_METRICS, make_job
from sentune.errors import DataError
from sentune.standalone import load_train_config, train_alone
from sentune.tuning import run_sweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep(tiny_sweep):
    return tiny_sweep


def test_asha_stops_the_bad_lr_early(sweep):
    trials = pd.read_parquet(sweep.run_dir / "trials.parquet")
    assert len(trials) == 4
    stopped = trials[trials.status == "stopped_early"]
    assert len(stopped) >= 1
    assert (stopped.epochs_run < 4).all()
    assert (stopped["config/lr"] == 1.0e-7).all()
    done = trials[trials.status == "completed"]
    assert (done.epochs_run == 4).all() and len(done) >= 2


def test_parquet_has_one_row_per_trial_epoch(sweep):
    epochs = pd.read_parquet(sweep.run_dir / "epochs.parquet")
    trials = pd.read_parquet(sweep.run_dir / "trials.parquet")
    assert len(epochs) == trials.epochs_run.sum()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    for col in ["trial_id", "epoch", "config/lr", "config/epochs", "trial_status", "node_id", *DESIGN_METRICS]:
        assert col in epochs.columns, col
    for name in ("0", "1"):
        for kind in ("precision", "recall", "f1", "pred_count"):
            assert f"val_{kind}/{name}" in epochs.columns
    assert epochs.groupby("trial_id").epoch.apply(lambda e: sorted(e) == list(range(1, len(e) + 1))).all()


def test_plain_pandas_reads_the_store_without_sentune(sweep):
    code = (
        "import sys, pandas as pd; e = pd.read_parquet(sys.argv[1] + '/epochs.parquet'); "
        "t = pd.read_parquet(sys.argv[1] + '/trials.parquet'); "
        "assert 'sentune' not in sys.modules; print(len(e), len(t))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(sweep.run_dir)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(sum(pd.read_parquet(sweep.run_dir / "trials.parquet").epochs_run)), "4"]


def test_leaderboard_and_exports(sweep):
    assert sweep.leaderboard.iloc[-1]["role"] == "reference"  # the reference model's row, unranked, last
    board = sweep.leaderboard[sweep.leaderboard.role != "reference"]
    assert board["rank"].tolist() == [1, 2, 3, 4]
    peaks = board["peak_val_macro_f1"].tolist()
    assert peaks == sorted(peaks, reverse=True)
    assert board.iloc[0]["lr"] == 3.0e-3
    for col in ("status", "peak_epoch", "train_val_gap", "final_train_acc", "final_val_acc"):
        assert col in board.columns
    for name in (
        "leaderboard.csv",
        "best_config.yaml",
        "classification_report.csv",
        "predictions_dev.csv",
        "predictions_test.csv",
    ):
        assert (sweep.run_dir / name).is_file(), name
    report = pd.read_csv(sweep.run_dir / "classification_report.csv").set_index("class")
    assert report.loc["macro avg", "support"] == 80
    assert len(pd.read_csv(sweep.run_dir / "predictions_test.csv")) == 80


def test_best_config_reruns_alone_and_reproduces(sweep):
    cfg = yaml.safe_load(sweep.best_config_path.read_text())
    assert cfg["trainable"] == "llama_torch" and cfg["params"]["lr"] == 3.0e-3
    trainable, data, params = load_train_config(sweep.best_config_path)
    result = train_alone(trainable, data, params)
    epoch = cfg["source"]["peak_epoch"]
    assert result.history[epoch - 1]["val_macro_f1"] == pytest.approx(cfg["source"]["peak"], abs=0.01)


def test_cli_results_and_export(sweep, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "sentune.cli", "results", str(sweep.run_dir)], capture_output=True, text=True, check=True
    )
    assert "peak_val_macro_f1" in out.stdout and "stopped_early" in out.stdout
    target = tmp_path / "best.yaml"
    subprocess.run(
        [sys.executable, "-m", "sentune.cli", "export", str(sweep.run_dir), "-o", str(target)],
        check=True,
        capture_output=True,
    )
    assert yaml.safe_load(target.read_text())["params"]["lr"] == 3.0e-3
    bad = subprocess.run(
        [sys.executable, "-m", "sentune.cli", "results", str(tmp_path)], capture_output=True, text=True
    )
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == f"sentune: error: {tmp_path} is not a sentune run folder (no run.json)"
    )


def test_ddp_trial_with_two_workers(ray_local, sst_dir, tmp_path):
    spec = make_job(
        sst_dir,
        tmp_path,
        name="ddp",
        search_space={},
        search={"algorithm": "random"},
        num_samples=1,
        scheduler={"type": "fifo"},
        params={
            "backbone": "random:tiny",
            "option": "finetune",
            "epochs": 2,
            "batch_size": 8,
            "max_len": 24,
            "lr": 3.0e-3,
            "lr_scaling": "sqrt",
        },
        resources={"cpus": 1, "workers_per_trial": 2},
    )
    summary = run_sweep(spec)
    epochs = pd.read_parquet(summary.run_dir / "epochs.parquet")
    assert len(epochs) == 2
    for col in DESIGN_METRICS:
        assert epochs[col].notna().all(), col
    assert (epochs.workers == 2).all() and (epochs.global_batch_size == 16).all()
    assert epochs.lr_scale.iloc[0] == pytest.approx(math.sqrt(2))
    # every train sample is seen once per epoch across the two workers
    assert epochs.samples_per_second.iloc[0] * epochs.epoch_seconds.iloc[0] == pytest.approx(240)
    assert pd.read_parquet(summary.run_dir / "trials.parquet").status.tolist() == ["completed"]


def test_bad_data_stops_the_job_before_any_trial(sst_dir, tmp_path):
    bad = tmp_path / "dev.txt"
    bad.write_text("0 ||| fine\n1 no separator here\n")
    spec = make_job(sst_dir, tmp_path, data={"train": str(sst_dir / "train.txt"), "dev": str(bad)})
    with pytest.raises(DataError, match=r"dev\.txt:2: line has no '\|\|\|' separator"):
        run_sweep(spec)
    assert not (tmp_path / "results").exists()


def test_optuna_tpe_sweep(ray_local, sst_dir, tmp_path):
    spec = make_job(
        sst_dir,
        tmp_path,
        name="tpe",
        search_space={"lr": {"loguniform": [1.0e-4, 1.0e-2]}, "hidden_dropout": {"uniform": [0.0, 0.5]}},
        search={"algorithm": "optuna"},
        num_samples=2,
        scheduler={"type": "fifo"},
        params={"backbone": "random:tiny", "option": "finetune", "epochs": 1, "batch_size": 16, "max_len": 24},
        resources={"cpus": 1, "max_concurrent_trials": 2},
    )
    summary = run_sweep(spec)
    trials = pd.read_parquet(summary.run_dir / "trials.parquet")
    assert len(trials) == 2 and (trials.status == "completed").all()
    assert trials["config/lr"].between(1.0e-4, 1.0e-2).all() and trials["config/lr"].nunique() == 2


def test_report_html_answers_first_has_every_plot_and_no_external_url(sweep):
    import re

    page = (sweep.run_dir / "report.html").read_text()
    ids = re.findall(r'data-plot="([^"]+)"', page)
    best = sweep.leaderboard.iloc[0]["trial_id"]
    expected = {
        "curves-val_macro_f1",
        "curves-val_loss",
        "curves-train_loss",
        "curves-val_acc",
        "metric-vs-lr",
        "parallel-coordinates",
        f"pred-dist-{best}",
        "confusion-matrix",
    }
    assert expected <= set(ids), ids
    # the answer comes first: the winner with its config and test figures, the epochs early stopping saved
    head = page[page.index('id="headline"') : page.index('id="leaderboard"')]
    assert f"Best: {best}</b> with lr=" in head and "test accuracy" in head and "saved by early stopping" in head
    assert page.index('id="headline"') < page.index('id="leaderboard"') < page.index('id="learning-curves"')
    assert 'id="leaderboard-table"' in page and "stopped_early" in page and "sortTable" in page
    # Plotly's JavaScript is inlined (one file, opens offline); outside scripts nothing points elsewhere
    assert "<script src" not in page and "<link" not in page and page.count("Plotly.newPlot") >= len(ids)
    markup = re.sub(r"<script.*?</script>", "", page, flags=re.S)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?https?:|@import""", markup)


def test_nan_trial_is_flagged_and_stopped(ray_local, sst_dir, tmp_path):
    spec = make_job(
        sst_dir,
        tmp_path,
        name="nan",
        search_space={"focal_alpha": {"grid": [[1.0, 1.0], [3.0e38, 3.0e38]]}},
        num_samples=1,
        scheduler={"type": "fifo"},
        params={
            "backbone": "random:tiny",
            "option": "finetune",
            "epochs": 4,
            "batch_size": 16,
            "max_len": 24,
            "loss": "focal",
            "lr": 3.0e-3,
        },
        resources={"cpus": 1, "max_concurrent_trials": 2},
        diagnostics={"stop_on": ["nan"]},
    )
    summary = run_sweep(spec)
    trials = pd.read_parquet(summary.run_dir / "trials.parquet").set_index("config/focal_alpha")
    bad, good = trials.loc["[3e+38, 3e+38]"], trials.loc["[1.0, 1.0]"]
    assert bad.status == "stopped_early" and bad.stop_reason == "nan" and bad.epochs_run < 4
    assert "nan" in bad.diagnostics
    assert good.status == "completed" and "nan" not in good.diagnostics
    epochs = pd.read_parquet(summary.run_dir / "epochs.parquet")
    assert epochs.loc[epochs["config/focal_alpha"] == "[3e+38, 3e+38]", "diag_nan"].any()
    assert "diagnostics" in summary.leaderboard.columns


def test_focal_alpha_of_the_wrong_length_stops_the_job_before_ray(sst_dir, tmp_path):
    from sentune.errors import ConfigError

    spec = make_job(
        sst_dir,
        tmp_path,
        search_space={"focal_alpha": {"choice": [[0.5, 0.5], [0.2, 0.3, 0.5]]}},
        search={"algorithm": "random"},
    )
    with pytest.raises(
        ConfigError, match=r"job tiny: focal_alpha \[0.2, 0.3, 0.5\]: focal_alpha has 3 values; this data has 2 classes"
    ):
        run_sweep(spec)
    assert not (tmp_path / "results").exists()
