"""Nothing lost: a trial's loop goes on from its resume checkpoint with the results it would have had, and an
interrupted sweep (SIGKILL of the whole machine's processes, or a clean Ctrl-C) resumes with `sentune resume`.
Real PyTorch / TensorFlow, real local Ray in subprocesses, real Parquet."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import synthetic_rows, write_sst_file
from sentune.data import DataConfig, load_splits
from sentune.trainables._resume import ResumeStore

KEYS = ["train_loss", "train_acc", "val_loss", "val_macro_f1", "grad_norm", "lr"]


class _Die(Exception):
    """Stands for the process dying right after a report."""


def _interrupted_then_resumed(module, params, data, store: ResumeStore, die_at_report: int):
    """Run until the ``die_at_report``-th report raises, then run again on the same store; returns the
    epochs the second run reported and its result."""
    count = [0]

    def dying(metrics, save):
        count[0] += 1
        if count[0] == die_at_report:
            raise _Die

    with pytest.raises(_Die):
        module.fit(params, data, module.LoopContext(report=dying, resume=store))
    seen = []
    result = module.fit(params, data, module.LoopContext(report=lambda m, s: seen.append(m), resume=store))
    return seen, result


@pytest.fixture(scope="module")
def sst_splits(sst_dir):
    return load_splits(DataConfig(train=sst_dir / "train.txt", dev=sst_dir / "dev.txt"))


@pytest.mark.parametrize("every_steps", [None, 5])
def test_llama_loop_goes_on_from_its_resume_checkpoint_with_the_same_results(sst_splits, tmp_path, every_steps):
    from sentune.trainables import llama_torch as lt

    p = lt.LlamaTorchParams(
        backbone="random:tiny", option="finetune", epochs=4, lr=3e-3, batch_size=16, max_len=24, seed=3,
        hidden_dropout=0.3, warmup_epochs=1, weight_decay=0.01,
    )  # fmt: skip
    data = lt.prepare(p, sst_splits)
    straight = lt.fit(p, data)
    store = ResumeStore(str(tmp_path / "resume"), every_steps=every_steps)
    seen, resumed = _interrupted_then_resumed(lt, p, data, store, die_at_report=3)
    # epoch 3's report died: its end-of-epoch checkpoint was never written. Whole epochs: epoch 2's was the
    # last, so it goes on at 3; with a step interval it goes on inside epoch 3 from its last step checkpoint.
    assert [m["epoch"] for m in seen] == [3, 4]
    assert {m["resumed_at_epoch"] for m in seen} == {3}
    assert [m["resumed_at_epoch"] for m in resumed.history] == [0, 0, 3, 3]
    for a, b in zip(straight.history, resumed.history, strict=True):
        for k in KEYS:
            assert a[k] == pytest.approx(b[k], abs=1e-6), (a["epoch"], k)
    assert resumed.best_epoch == straight.best_epoch and resumed.best_metric == straight.best_metric
    # only the latest resume checkpoint is kept
    assert [p.name for p in (tmp_path / "resume").iterdir() if p.is_dir()] == ["state-000005-000000060"]


def test_lstm_loop_goes_on_from_its_resume_checkpoint_with_the_same_results(tmp_path):
    from sentune.trainables import lstm_tf as lt

    p = lt.LstmTfParams(
        embedding_dim=16, lstm_units=[8, 8], dense_units=8, max_len=24, vocab_size=2000, batch_size=16, lr=1e-2,
        dropout=0.2, seed=3, epochs=3, weight_decay=1e-3,
    )  # fmt: skip
    splits = load_splits(DataConfig(builtin="zh-reviews", max_rows={"train": 240, "dev": 80}))
    data = lt.prepare(p, splits, log=lambda *_: None)
    straight = lt.fit(p, data)
    seen, resumed = _interrupted_then_resumed(lt, p, data, ResumeStore(str(tmp_path / "r")), die_at_report=2)
    assert [m["epoch"] for m in seen] == [2, 3]
    for a, b in zip(straight.history, resumed.history, strict=True):
        for k in KEYS:
            assert a[k] == pytest.approx(b[k], abs=1e-6), (a["epoch"], k)


# --------------------------------------------------------------------------- whole sweeps, as a user runs them


@pytest.fixture(scope="module")
def slow_sst(tmp_path_factory):
    """1920 train rows: epochs long enough (~1 s) to stop a sweep in the middle. While trials run, the record is
    written at most every 2 s (``flush_every_s``), so a trial must run well past that for the record to show
    it running with an epoch done (960 rows, ~0.5 s epochs, ended 4-epoch trials before a write showed them)."""
    root = tmp_path_factory.mktemp("sst1920")
    write_sst_file(root / "train.txt", synthetic_rows(1920, 1))
    write_sst_file(root / "dev.txt", synthetic_rows(80, 2))
    write_sst_file(root / "test.txt", synthetic_rows(80, 3))
    return root


def _job(sst_dir: Path, root: Path, name: str, **changes) -> Path:
    job = dict(
        name=name,
        trainable="llama_torch",
        data={"train": str(sst_dir / "train.txt"), "dev": str(sst_dir / "dev.txt"), "test": str(sst_dir / "test.txt")},
        search_space={"lr": {"loguniform": [1e-4, 1e-2]}, "hidden_dropout": {"uniform": [0.0, 0.5]}},
        params={"backbone": "random:tiny", "option": "finetune", "epochs": 4, "batch_size": 16, "max_len": 24},
        search={"algorithm": "random"},
        num_samples=6,
        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
        resources={"cpus": 1, "max_concurrent_trials": 2},
        failure={"checkpoint_min_interval_s": 0},  # every epoch's state: the kills here land between them
        storage_path=str(root / "results"),
        seed=11,
    )
    job.update(changes)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _sentune(*args, **kw):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return subprocess.Popen(
        [sys.executable, "-m", "sentune.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: the embedded Ray goes with it
        **kw,
    )


def _run_dir(root: Path, name: str) -> Path | None:
    runs = sorted((root / "results" / name).glob("*/run.json")) if (root / "results" / name).is_dir() else []
    return runs[-1].parent if runs else None


def _record(run_dir: Path):
    try:
        return pd.read_parquet(run_dir / "trials.parquet"), pd.read_parquet(run_dir / "epochs.parquet")
    except Exception:  # not written yet, or being replaced
        return None, None


def _wait_until(proc, cond, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sentune ended early (rc {proc.returncode}):\n{proc.stdout.read()[-3000:]}")
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError("timed out")


def _finish(proc, timeout=600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def _one_row_per_trial_epoch(epochs: pd.DataFrame) -> None:
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    for _, rows in epochs.groupby("trial_id"):
        assert sorted(rows.epoch) == list(range(1, len(rows) + 1))


@pytest.fixture(scope="module")
def uninterrupted(slow_sst, tmp_path_factory):
    root = tmp_path_factory.mktemp("straight")
    proc = _sentune("run", str(_job(slow_sst, root, "sweep")), cwd=root)
    out = _finish(proc)
    assert proc.returncode == 0, out[-3000:]
    return pd.read_parquet(_run_dir(root, "sweep") / "trials.parquet")


@pytest.mark.slow
def test_a_sweep_killed_with_sigkill_resumes_to_the_same_trials(slow_sst, tmp_path, uninterrupted):
    job = _job(slow_sst, tmp_path, "sweep")
    proc = _sentune("run", str(job), cwd=tmp_path)

    def some_ended_some_running():
        run_dir = _run_dir(tmp_path, "sweep")
        trials, _ = _record(run_dir) if run_dir else (None, None)
        if trials is None:
            return None
        ended = trials[trials.status.isin(["completed", "stopped_early"])]
        running = trials[(trials.status == "running") & (trials.epochs_run >= 1)]
        return (run_dir, trials) if len(ended) >= 1 and len(trials) < 6 and len(running) else None

    run_dir, before = _wait_until(proc, some_ended_some_running, timeout=300)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its embedded Ray and every trial process at once
    proc.wait(timeout=30)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"

    resumed = _sentune("resume", str(run_dir), cwd=tmp_path)
    out = _finish(resumed)
    assert resumed.returncode == 0, out[-3000:]
    trials = pd.read_parquet(run_dir / "trials.parquet").set_index("trial_id")
    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    # the same trials as an uninterrupted run with the same seed
    assert sorted(trials.config_json) == sorted(uninterrupted.config_json)
    assert set(trials.status) <= {"completed", "stopped_early"}
    # trials that had ended before the kill stay as they were (ASHA's stopped ones stay stopped)
    for row in before[before.status.isin(["completed", "stopped_early"])].itertuples():
        assert trials.loc[row.trial_id, "status"] == row.status
        assert trials.loc[row.trial_id, "epochs_run"] == row.epochs_run
    _one_row_per_trial_epoch(epochs)
    assert trials.epochs_run.to_dict() == epochs.groupby("trial_id").size().to_dict()
    # trials that were running went on from their resume checkpoints, not from epoch 1
    assert (epochs.resumed_at_epoch >= 2).any()
    for name in ("best_config.yaml", "report.html", "classification_report.csv", "leaderboard.csv"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    # a finished run is not resumed again
    again = _sentune("resume", str(run_dir), cwd=tmp_path)
    out = _finish(again)
    assert again.returncode == 2 and out.strip().splitlines()[-1].endswith(
        f"this run is finished; nothing to resume (its leaderboard: sentune results {run_dir})"
    )


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_prints_the_resume_command_and_resume_finishes(slow_sst, tmp_path):
    job = _job(slow_sst, tmp_path, "stopme", num_samples=4)
    proc = _sentune("run", str(job), cwd=tmp_path)

    def first_epochs():
        run_dir = _run_dir(tmp_path, "stopme")
        _, epochs = _record(run_dir) if run_dir else (None, None)
        return run_dir if epochs is not None and len(epochs) >= 2 else None

    run_dir = _wait_until(proc, first_epochs, timeout=300)
    assert _runs_status(tmp_path) == {run_dir.name: "running"}
    proc.send_signal(signal.SIGINT)  # the first Ctrl-C, to the driver only
    out = _finish(proc, timeout=120)
    assert proc.returncode == 130, out[-3000:]
    assert f"sentune resume {run_dir}" in out
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    assert not (run_dir / "best_config.yaml").exists()
    os.killpg(proc.pid, signal.SIGKILL) if _alive(proc.pid) else None
    assert _runs_status(tmp_path) == {run_dir.name: "interrupted"}

    resumed = _sentune("resume", str(run_dir), cwd=tmp_path)
    out = _finish(resumed)
    assert resumed.returncode == 0, out[-3000:]
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert len(trials) == 4 and set(trials.status) <= {"completed", "stopped_early"}
    _one_row_per_trial_epoch(pd.read_parquet(run_dir / "epochs.parquet"))
    assert (run_dir / "best_config.yaml").is_file()
    assert _runs_status(tmp_path) == {run_dir.name: "finished"}


def _runs_status(root: Path) -> dict:
    """`sentune runs` on the storage folder: run id -> status."""
    out = subprocess.run([sys.executable, "-m", "sentune.cli", "runs", str(root / "results")], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    col = lines[0].split().index("status")
    return {ln.split()[1]: ln.split()[col] for ln in lines[1:] if ln.strip() and not ln.startswith("(")}


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_resume_refuses_what_is_not_a_resumable_run_in_one_line(tmp_path):
    from sentune.cli import main

    (tmp_path / "empty").mkdir()
    old = tmp_path / "old"
    old.mkdir()
    (old / "run.json").write_text(json.dumps({"job": "j", "kind": "tune", "run_id": "old"}))
    for folder, says in ((tmp_path / "empty", "is not a sentune run folder"), (old, "written by an incompatible")):
        proc = subprocess.run(
            [sys.executable, "-m", "sentune.cli", "resume", str(folder)], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0], proc.stderr
    assert main  # the CLI module imports
