import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from sentune.results import best_config, best_trial, export_run, leaderboard, write_run_info
from sentune.results._store import atomic_write_bytes, write_parquet


def make_run(tmp_path, trials, mode="max", metric="val_macro_f1"):
    write_run_info(
        tmp_path,
        {
            "job": "j",
            "run_id": "r",
            "trainable": "llama_torch",
            "metric": metric,
            "mode": mode,
            "label_names": ["neg", "pos"],
            "tuned_params": ["lr"],
            "data": {"builtin": "en-movie-5"},
        },
    )
    trial_rows, epoch_rows = [], []
    for tid, lr, peaks in trials:
        best = max(peaks) if mode == "max" else min(peaks)
        trial_rows.append(
            {
                "trial_id": tid,
                "status": "completed",
                "epochs_run": len(peaks),
                "peak_metric": best,
                "peak_epoch": peaks.index(best) + 1,
                "checkpoint_path": None,
                "config_json": json.dumps({"lr": lr, "epochs": len(peaks)}),
                "config/lr": lr,
            }
        )
        for e, v in enumerate(peaks, 1):
            epoch_rows.append(
                {"trial_id": tid, "epoch": e, metric: v, "train_acc": 0.9, "val_acc": 0.7, "val_loss": 0.5}
            )
    write_parquet(tmp_path / "trials.parquet", trial_rows)
    write_parquet(tmp_path / "epochs.parquet", epoch_rows)
    return tmp_path


def test_tie_break_metric_then_fewer_epochs_then_trial_id(tmp_path):
    run = make_run(
        tmp_path,
        [
            ("t3", 0.1, [0.5, 0.8, 0.7]),  # 0.8 at epoch 2
            ("t2", 0.2, [0.8, 0.6, 0.6]),  # 0.8 at epoch 1  -> wins on fewer epochs
            ("t1", 0.3, [0.6, 0.79, 0.7]),
            ("t0", 0.4, [0.8, 0.6, 0.6]),  # same as t2 -> t0 wins on trial id
        ],
    )
    board = leaderboard(run)
    assert board.trial_id.tolist() == ["t0", "t2", "t3", "t1"]
    assert board["rank"].tolist() == [1, 2, 3, 4]
    assert board.train_val_gap.round(3).tolist() == [0.2] * 4
    assert best_trial(run).name == "t0"
    cfg = best_config(run)
    assert cfg["params"] == {"lr": 0.4, "epochs": 3} and cfg["source"]["peak_epoch"] == 1


def test_min_mode(tmp_path):
    run = make_run(tmp_path, [("a", 0.1, [0.9, 0.5]), ("b", 0.2, [0.4, 0.6])], mode="min", metric="val_loss")
    assert leaderboard(run).trial_id.tolist() == ["b", "a"]
    paths = export_run(run, tmp_path / "out" / "best.yaml")
    assert paths["best_config"].read_text().count("lr: 0.2") == 1
    assert pd.read_csv(paths["leaderboard"]).trial_id.tolist() == ["b", "a"]


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "x.parquet"
    write_parquet(target, [{"a": 1}])

    def boom(tmp):
        tmp.write_bytes(b"half a file")
        raise RuntimeError("disk died")

    with pytest.raises(RuntimeError):
        atomic_write_bytes(target, boom)
    assert pd.read_parquet(target).a.tolist() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]


def test_mixed_config_values_are_stored_as_text(tmp_path):
    write_parquet(
        tmp_path / "m.parquet",
        [{"config/focal_alpha": None}, {"config/focal_alpha": "auto"}, {"config/focal_alpha": [0.25, 0.75]}],
    )
    col = pd.read_parquet(tmp_path / "m.parquet")["config/focal_alpha"]
    assert col.isna().tolist() == [True, False, False] and col.tolist()[1:] == ["auto", "[0.25, 0.75]"]


def test_results_package_imports_neither_torch_nor_tensorflow():
    code = "import sys, sentune.results; print(sorted(m for m in ('torch', 'tensorflow', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_seed_report_has_the_seed_columns_and_the_best_epochs_figures(tmp_path):
    import datetime as dt

    import numpy as np

    from sentune.results import write_training_report

    run = make_run(tmp_path, [("t0", 0.1, [0.5, 0.9, 0.7]), ("t1", 0.2, [0.6, 0.6, 0.6])])
    epochs = pd.read_parquet(run / "epochs.parquet")
    epochs["val_precision/neg"], epochs["val_precision/pos"] = 0.6, 0.8
    epochs["val_recall/neg"], epochs["val_recall/pos"] = 0.5, 0.7
    write_parquet(run / "epochs.parquet", epochs.to_dict("records"))
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    path = write_training_report(run, ["neg", "pos"], y, probs, now=dt.datetime(2026, 11, 22, 9, 8, 7))
    assert path.name == "training_report_20261122_090807.csv"
    row = pd.read_csv(path).iloc[0]
    assert list(row.index[:10]) == [
        "timestamp",
        "best_epoch",
        "best_val_loss",
        "best_val_accuracy",
        "best_val_precision",
        "best_val_recall",
        "final_test_loss",
        "final_test_accuracy",
        "final_test_precision",
        "final_test_recall",
    ]
    assert (
        row.best_epoch == 2
        and row.best_val_precision == pytest.approx(0.7)
        and row.best_val_recall == pytest.approx(0.6)
    )
    assert row.final_test_accuracy == pytest.approx(0.75)
    assert row.final_test_loss == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.8, 0.7])))
    assert row["report_neg_precision"] == 1.0 and row["report_pos_recall"] == 1.0
    assert row["report_macro avg_f1-score"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert "report_weighted avg_support" in row.index


def test_results_read_a_run_behind_a_uri_and_a_job_folders_newest_run(tmp_path):
    from sentune.results import resolve_run_dir, upload_run

    job = tmp_path / "store" / "j"
    old = make_run(job / "20260101-000000", [("t9", 0.1, [0.5])])
    new = make_run(job / "20260202-000000", [("t0", 0.1, [0.5, 0.9]), ("t1", 0.2, [0.6])])
    (new / "train").mkdir()
    (new / "train" / "ckpt.bin").write_bytes(b"x" * 10)
    assert resolve_run_dir(job) == new and resolve_run_dir(old) == old
    fetched = resolve_run_dir(f"file://{job}")
    assert fetched.name == "20260202-000000" and fetched != new
    assert leaderboard(fetched).trial_id.tolist() == ["t0", "t1"]
    assert not (fetched / "train").exists()  # checkpoints stay where they are
    # a staged run goes up to a URI the same way
    upload_run(new, f"file://{tmp_path}/up/j/r1")
    assert (tmp_path / "up/j/r1/trials.parquet").is_file() and not (tmp_path / "up/j/r1/train").exists()
    with pytest.raises(Exception, match="neither a run folder"):
        resolve_run_dir(f"file://{tmp_path}/up")


def test_runs_lists_finished_interrupted_and_running_runs(tmp_path):
    import json
    import time

    from sentune.results import HEARTBEAT, list_runs

    def run(job, run_id, status, beat=None, trials=2):
        folder = tmp_path / job / run_id
        folder.mkdir(parents=True)
        info = {"job": job, "run_id": run_id, "kind": "tune", "metric": "val_macro_f1", "mode": "max",
                "status": status, "started_at": time.time() - 100, "wall_seconds": 12.5}  # fmt: skip
        (folder / "run.json").write_text(json.dumps(info))
        if beat is not None:
            (folder / HEARTBEAT).write_text(f"{beat:.3f}")
        rows = [{"trial_id": f"t{i}", "status": "completed", "peak_metric": 0.5 + i / 10} for i in range(trials)]
        write_parquet(folder / "trials.parquet", rows)

    now = time.time()
    run("a", "r1", "finished")
    run("a", "r2", "interrupted")  # stopped by Ctrl-C
    run("b", "r3", "running", beat=now - 3600)  # its driver was killed: no heartbeat for an hour
    run("b", "r4", "running", beat=now - 1, trials=3)
    runs = list_runs(tmp_path).set_index("run")
    assert runs.status.to_dict() == {"r1": "finished", "r2": "interrupted", "r3": "interrupted", "r4": "running"}
    assert runs.loc["r4", "trials"] == 3 and runs.loc["r4", "best"] == pytest.approx(0.7)
    assert runs.loc["r1", "job"] == "a" and runs.loc["r1", "wall_s"] == 12.5
    out = subprocess.run([sys.executable, "-m", "sentune.cli", "runs", str(tmp_path)], capture_output=True, text=True,
                         check=True, env={**os.environ, "COLUMNS": "60"})  # fmt: skip
    assert all(len(line) <= 60 for line in out.stdout.splitlines()), out.stdout
    assert "interrupted" in out.stdout and "running" in out.stdout


def test_leaderboard_shows_a_dash_for_missing_values_and_keeps_to_the_width():
    from sentune.results import format_leaderboard

    board = pd.DataFrame({"rank": [1, 2], "trial_id": ["t0", "t1"], "status": ["completed", "stopped_early"],
                          "stop_reason": [None, "scheduler"], "peak": [0.51234, float("nan")],
                          "a_very_long_column_name": ["x" * 30, "y"], "another": [1.0, 2.0]})  # fmt: skip
    text = format_leaderboard(board, width=70)
    lines = text.splitlines()
    assert all(len(line) <= 70 for line in lines), text
    assert " - " in lines[2] + " " and "nan" not in text.lower() and "None" not in text
    assert lines[-1].startswith("(not shown:")
