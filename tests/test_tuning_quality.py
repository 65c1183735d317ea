"""Baselines, the reference model, confirmation runs, budget accounting and the schedulers besides ASHA:
tiny sweeps on a real local Ray (random-init LLaMA head on a frozen random backbone, real Parquet)."""

import json

import pandas as pd
import pytest
import yaml

from sentune.errors import ConfigError
from sentune.results import best_config, budget, leaderboard, read_trials
from sentune.spec import parse_job


def job(sst_dir, tmp_path, **changes):
    raw = dict(
        name="quality",
        trainable="llama_torch",
        data={"train": str(sst_dir / "train.txt"), "dev": str(sst_dir / "dev.txt"), "test": str(sst_dir / "test.txt")},
        search_space={"lr": {"loguniform": [1.0e-3, 3.0e-2]}, "hidden_dropout": {"uniform": [0.0, 0.5]}},
        params={"backbone": "random:tiny", "option": "pretrain", "epochs": 4, "batch_size": 16, "max_len": 24},
        search={"algorithm": "random"},
        num_samples=2,
        scheduler={"type": "fifo", "metric": "val_macro_f1", "mode": "max"},
        resources={"cpus": 1, "workers_per_trial": 1},
        storage_path=str(tmp_path / "results"),
        seed=3,
    )
    raw.update(changes)
    return parse_job(raw)


# ---------------------------------------------------------------- validation (no Ray)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"baselines": [{"lr": 1e-3, "hidden_size": 4}]}, "baselines[1]: llama_torch has no option hidden_size"),
        ({"baselines": [{"lr": 1e-3, "epochs": 9}]}, "baselines[1]: epochs is fixed at 4 in this job"),
        ({"baselines": [{"lr": -1.0}]}, "baselines[1]: lr: Input should be greater than 0"),
        ({"confirm": {"top_k": 3, "seeds": 2}}, "confirm.top_k (3) exceeds the trial count (2)"),
        (
            {
                "scheduler": {"type": "pbt"},
                "params": {"backbone": "random:tiny", "option": "pretrain", "epochs": 4},
                "search_space": {"lr": {"loguniform": [1e-3, 1e-2]}, "batch_size": {"choice": [8, 16]}},
            },
            "scheduler pbt changes options in the middle of a trial; it cannot change batch_size",
        ),
        ({"search": {"algorithm": "random", "multivariate": True}}, "multivariate applies to algorithm optuna"),
        ({"scheduler": {"type": "pbt"}, "search": {"algorithm": "optuna"}}, "scheduler pbt samples its population"),
        (
            {"scheduler": {"type": "pbt"}, "search_space": {"lr": {"grid": [1e-3, 1e-2]}}},
            "scheduler pbt: lr: a grid cannot be perturbed",
        ),
        ({"num_samples": 0}, "num_samples is 0 and there are no baselines"),
    ],
)
def test_bad_settings_fail_in_one_line(sst_dir, tmp_path, changes, message):
    with pytest.raises(ConfigError) as err:
        job(sst_dir, tmp_path, **changes)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_data_shaping_option_cannot_be_in_a_pbt_space(sst_dir, tmp_path):
    with pytest.raises(ConfigError, match="max_len") as err:
        job(
            sst_dir,
            tmp_path,
            scheduler={"type": "pbt"},
            search_space={"max_len": {"choice": [16, 24]}},
            params={"backbone": "random:tiny", "option": "pretrain"},
        )
    assert "\n" not in str(err.value)


def test_best_skips_a_trial_whose_confirmations_all_errored(tmp_path):
    from sentune.results import RunRecorder, best_trial, write_run_info

    run = tmp_path / "run"
    run.mkdir()
    write_run_info(run, {"job": "j", "run_id": "r", "kind": "tune", "metric": "val_macro_f1", "mode": "max",
                         "tuned_params": ["lr"], "trainable": "llama_torch", "data": {}})  # fmt: skip
    rec = RunRecorder(run, job="j", run_id="r", metric="val_macro_f1", mode="max", max_epochs=2)

    def train(tid, lr, f1, **marks):
        config = {"lr": lr, "epochs": 2, "seed": marks.pop("seed", 0)}
        rec.trial(tid, config, **marks)
        for epoch in (1, 2):
            rec.result(tid, config, {"epoch": epoch, "val_macro_f1": f1, "time_this_iter_s": 0.5})
        rec.completed(tid, config)

    train("t0", 0.1, 0.6)
    train("t1", 0.2, 0.5)
    rec.trial("c0", {"lr": 0.1, "epochs": 2, "seed": 1}, role="confirm", confirm_of="t0")
    rec.errored("c0", {"lr": 0.1, "epochs": 2, "seed": 1}, "boom")
    train("c1", 0.2, 0.55, seed=1, role="confirm", confirm_of="t1")
    rec.close()
    board = leaderboard(run)
    assert board.trial_id.tolist() == ["t1", "t0"]  # t1 is the one confirmed
    assert best_trial(run).name == "c1"
    assert read_trials(run).set_index("trial_id").loc["t0", "trial_seconds"] == 1.0


def test_baselines_are_full_configs_and_count_as_trials(sst_dir, tmp_path):
    spec = job(sst_dir, tmp_path, baselines=[{"lr": 2e-3}, {"lr": 1e-2, "hidden_dropout": 0.3}])
    assert spec.baseline_configs == [{"lr": 2e-3, "hidden_dropout": 0.1}, {"lr": 1e-2, "hidden_dropout": 0.3}]
    assert spec.trial_count == 4


# ---------------------------------------------------------------- sweeps on a real local Ray


@pytest.fixture(scope="module")
def baseline_sweep(ray_local, sst_dir, tmp_path_factory):
    from sentune.tuning import run_sweep

    tmp = tmp_path_factory.mktemp("baselines")
    spec = job(sst_dir, tmp, baselines=[{"lr": 2.0e-3, "hidden_dropout": 0.05}, {"lr": 1.0e-2, "hidden_dropout": 0.4}],
               confirm={"top_k": 2, "seeds": 2})  # fmt: skip
    return run_sweep(spec, run_id="b1", progress="quiet")


@pytest.mark.slow
def test_baselines_run_first_with_exactly_their_configs(baseline_sweep):
    trials = read_trials(baseline_sweep.run_dir)
    base = trials[trials.role == "baseline"].sort_values("baseline")
    assert base["baseline"].tolist() == [1, 2]
    assert base["config/lr"].tolist() == [2.0e-3, 1.0e-2]
    assert base["config/hidden_dropout"].tolist() == [0.05, 0.4]
    sampled = trials[trials.role == "sampled"]
    assert len(sampled) == 2 and not sampled["config/lr"].isin([2.0e-3, 1.0e-2]).any()
    board = leaderboard(baseline_sweep.run_dir)
    assert sorted(board[board.role == "baseline"]["trial_id"]) == sorted(base.trial_id)
    report = (baseline_sweep.run_dir / "report.html").read_text(encoding="utf-8")
    assert "baseline" in report and "reference" in report


@pytest.mark.slow
def test_reference_row_is_shown_and_never_best(baseline_sweep):
    run = baseline_sweep.run_dir
    ref = json.loads((run / "reference.json").read_text())
    assert ref["model"].startswith("tfidf-word") and 0.0 <= ref["test"]["macro_f1"] <= 1.0
    board = leaderboard(run, reference=True)
    assert board.iloc[-1]["trial_id"] == "reference" and pd.isna(board.iloc[-1]["rank"])
    assert board.iloc[-1]["peak_val_macro_f1"] == pytest.approx(ref["dev"]["macro_f1"])
    csv = pd.read_csv(run / "leaderboard.csv")
    assert "reference" in csv.trial_id.tolist()
    exported = yaml.safe_load((run / "best_config.yaml").read_text())
    assert exported["source"]["trial_id"] != "reference"
    assert "reference" in baseline_sweep.comparison and "best baseline" in baseline_sweep.comparison


@pytest.mark.slow
def test_confirm_retrains_top_k_with_fresh_seeds_and_picks_by_the_mean(baseline_sweep):
    run = baseline_sweep.run_dir
    trials = read_trials(run)
    runs = trials[trials.role == "confirm"]
    assert len(runs) == 2 * 2 and (runs.status == "completed").all() and (runs.epochs_run == 4).all()
    board = leaderboard(run)
    top = board.head(2)
    assert sorted(runs.confirm_of.unique()) == sorted(top.trial_id)
    for tid, group in runs.groupby("confirm_of"):
        seeds = [json.loads(c)["seed"] for c in group.config_json]
        original = json.loads(trials.set_index("trial_id").loc[tid, "config_json"]).get("seed", 0)
        assert original not in seeds and len(set(seeds)) == 2
        row = board.set_index("trial_id").loc[tid]
        assert row.confirm_mean == pytest.approx(group.peak_metric.mean())
        assert row.confirm_n == 2
    means = runs.groupby("confirm_of").peak_metric.mean()
    assert board.iloc[0]["trial_id"] == means.idxmax()
    source = best_config(run)["source"]
    assert source["confirmed"]["trial_id"] == means.idxmax()
    winner = runs[runs.confirm_of == means.idxmax()].peak_metric.idxmax()
    assert source["trial_id"] == runs.loc[winner, "trial_id"]


@pytest.mark.slow
def test_budget_counts_every_epoch_and_trial_second(baseline_sweep):
    run = baseline_sweep.run_dir
    trials = read_trials(run)
    b = budget(run)
    assert b["epochs"] == trials.epochs_run.sum() == pd.read_parquet(run / "epochs.parquet").shape[0]
    assert b["by_role"]["baseline"]["epochs"] == 8 and b["by_role"]["confirm"]["epochs"] == 16
    assert (trials.trial_seconds > 0).all()
    assert b["trial_seconds"] == pytest.approx(trials.trial_seconds.sum(), abs=0.2)
    info = json.loads((run / "run.json").read_text())
    assert info["budget"]["epochs"] == b["epochs"]
    assert baseline_sweep.budget.startswith(f"budget: {len(trials)} trials, {b['epochs']} epochs")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hyperband", "median"])
def test_early_stopping_schedulers_run_a_tiny_sweep(ray_local, sst_dir, tmp_path, kind):
    from sentune.tuning import run_sweep

    spec = job(sst_dir, tmp_path, num_samples=5, reference=False, params={
        "backbone": "random:tiny", "option": "pretrain", "epochs": 4, "batch_size": 16, "max_len": 24},
        search_space={"lr": {"loguniform": [1.0e-7, 3.0e-2]}},
        scheduler={"type": kind, "metric": "val_macro_f1", "mode": "max", "grace_period": 1, "reduction_factor": 2},
        resources={"cpus": 1, "workers_per_trial": 1, "max_concurrent_trials": 1})  # fmt: skip
    summary = run_sweep(spec, run_id=kind, progress="quiet")
    trials = read_trials(summary.run_dir)
    assert len(trials) == 5 and trials.status.isin(["completed", "stopped_early"]).all()
    assert (trials.epochs_run >= 1).all()
    if kind == "hyperband":
        assert (trials.status == "stopped_early").any()


@pytest.mark.slow
def test_pbt_trials_continue_from_another_trials_checkpoint(ray_local, sst_dir, tmp_path):
    from sentune.tuning import run_sweep

    spec = job(
        sst_dir,
        tmp_path,
        num_samples=6,
        reference=False,
        params={"backbone": "random:tiny", "option": "pretrain", "epochs": 8, "batch_size": 16, "max_len": 24},
        search_space={"lr": {"loguniform": [1.0e-5, 3.0e-2]}, "weight_decay": {"loguniform": [1e-5, 1e-1]}},
        scheduler={"type": "pbt", "metric": "val_macro_f1", "mode": "max", "perturbation_interval": 2},
        resources={"cpus": 0.5, "workers_per_trial": 1},
    )  # the population trains side by side
    summary = run_sweep(spec, run_id="pbt", progress="quiet")
    epochs = pd.read_parquet(summary.run_dir / "epochs.parquet")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    moved = epochs[epochs.pbt_from.fillna("") != ""]
    assert len(moved), "no trial went on from another's checkpoint"
    tid = moved.iloc[0]["trial_id"]
    rows = epochs[epochs.trial_id == tid].sort_values("epoch")
    # it went on from where the other trial stood (epochs only go forward: PBT may clone one further along)
    assert rows.epoch.is_monotonic_increasing and rows.epoch.is_unique and rows.epoch.iloc[-1] == 8
    assert rows["config/lr"].nunique() > 1  # ... with a changed config
    first = rows[rows.pbt_from.fillna("") != ""].iloc[0]
    assert first["resumed_at_epoch"] == first["epoch"] > 1  # the donor's state took it to that epoch
    donor = epochs[epochs.trial_id == first["pbt_from"]]
    assert first["epoch"] - 1 in donor.epoch.tolist()  # ... the epoch the donor had finished
    board = leaderboard(summary.run_dir)
    history = board.set_index("trial_id").loc[tid, "pbt_history"]
    assert f"from {first['pbt_from']}" in history and "lr=" in history


@pytest.mark.slow
def test_max_total_epochs_ends_the_sweep_when_spent(ray_local, sst_dir, tmp_path):
    from sentune.tuning import run_sweep

    spec = job(sst_dir, tmp_path, num_samples=6, reference=False, max_total_epochs=10,
               resources={"cpus": 1, "workers_per_trial": 1, "max_concurrent_trials": 1})  # fmt: skip
    summary = run_sweep(spec, run_id="spent", progress="quiet")
    assert not summary.interrupted
    trials = read_trials(summary.run_dir)
    assert trials.epochs_run.sum() == 10  # one trial at a time: exactly the budget
    assert len(trials) < 6 and (trials.stop_reason == "budget").sum() == 1
    info = json.loads((summary.run_dir / "run.json").read_text())
    assert info["status"] == "finished"


@pytest.mark.slow
def test_optuna_multivariate_tpe_runs_baselines_as_enqueued_trials(ray_local, sst_dir, tmp_path):
    from sentune.tuning import run_sweep

    spec = job(sst_dir, tmp_path, num_samples=2, reference=False, search={"algorithm": "optuna", "multivariate": True},
               baselines=[{"lr": 4.0e-3, "hidden_dropout": 0.2}])  # fmt: skip
    summary = run_sweep(spec, run_id="tpe", progress="quiet")
    trials = read_trials(summary.run_dir)
    assert len(trials) == 3 and trials.status.eq("completed").all()
    base = trials[trials.role == "baseline"]
    assert len(base) == 1 and base.iloc[0]["config/lr"] == 4.0e-3 and base.iloc[0]["config/hidden_dropout"] == 0.2
    assert "best baseline" in summary.comparison
