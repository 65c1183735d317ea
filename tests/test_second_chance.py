"""Second chances on a real local Ray: after an ASHA sweep, trials it stopped whose forecast could still beat
the best go on from their resume checkpoints, one rung at a time, within the budget; their rows continue the
same trials with the results an uninterrupted run has (same seed)."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import make_job
from sentune import results
from sentune.tuning._second_chance import rung_milestones

PARAMS = {"backbone": "random:tiny", "option": "finetune", "epochs": 4, "batch_size": 16, "max_len": 24, "seed": 1}


def test_rung_milestones():
    assert rung_milestones(4, 1, 2) == [1, 2, 4]
    assert rung_milestones(8, 2, 3) == [2, 6, 8]
    assert rung_milestones(3, 3, 2) == [3]


@pytest.mark.slow
def test_stopped_trials_go_on_where_they_stopped_within_the_budget(ray_local, sst_dir, tmp_path):
    from sentune.tuning import run_sweep

    # val_loss (min): after one epoch a trial's forecast reaches down to 0, so every trial ASHA cut there may win
    job = make_job(
        sst_dir, tmp_path, name="second", num_samples=1, params=PARAMS,
        search_space={"lr": {"grid": [3.0e-3, 1.0e-5, 2.0e-5, 3.0e-5]}},
        scheduler={"type": "asha", "metric": "val_loss", "mode": "min", "grace_period": 1, "reduction_factor": 2,
                   "second_chance": {"budget": 0.5}},
    )  # fmt: skip
    summary = run_sweep(job, run_id="r")
    info = json.loads((summary.run_dir / "run.json").read_text())
    given = info["second_chance"]
    assert given["revived"], given  # ASHA cut some trials at epoch 1, and their forecast could beat the best
    assert 0 < given["spent_epochs"] <= given["budget_epochs"]
    trials = results.read_trials(summary.run_dir).set_index("trial_id")
    epochs = results.read_epochs(summary.run_dir)
    assert not epochs.duplicated(["trial_id", "epoch"]).any()  # no epoch twice
    trained = 0
    for tid, went in given["revived"].items():
        rows = epochs[epochs.trial_id == tid].sort_values("epoch")
        assert rows.epoch.tolist() == list(range(1, went["to_epoch"] + 1))  # it went on from the epoch after
        # from the state it wrote while its last epoch was reported: nothing trained twice
        assert (rows[rows.epoch > went["from_epoch"]].resumed_at_epoch == went["from_epoch"] + 1).all()
        assert int(trials.loc[tid, "revived_from"]) == went["from_epoch"]
        assert trials.loc[tid, "epochs_run"] == went["to_epoch"]
        trained += went["to_epoch"] - went["from_epoch"]
    assert trained == given["spent_epochs"]  # what was trained is what the budget counted
    assert "second chances:" in summary.second_chances
    board = pd.read_csv(summary.run_dir / "leaderboard.csv")
    assert board.loc[board.trial_id.isin(list(given["revived"])), "revived_from"].notna().all()

    # the results it would have had: the same config trained without Ray, uninterrupted
    tid, went = next(iter(given["revived"].items()))
    config = json.loads(trials.loc[tid, "config_json"])
    from sentune.data import load_splits
    from sentune.trainables import fit, get_trainable

    entry = get_trainable("llama_torch")
    trainable, params = entry.load(), entry.params_model(**config)
    history = fit(trainable, params, trainable.prepare(params, load_splits(job.data))).history
    alone = [h["val_loss"] for h in history[: went["to_epoch"]]]
    np.testing.assert_allclose(epochs[epochs.trial_id == tid].sort_values("epoch").val_loss, alone, rtol=1e-4)


@pytest.mark.slow
def test_forecast_promotion_runs_a_sweep_whose_rungs_compare_forecasts(ray_local, sst_dir, tmp_path):
    from sentune.tuning import run_sweep

    job = make_job(
        sst_dir, tmp_path, name="forecast", num_samples=1, params=PARAMS,
        search_space={"lr": {"grid": [3.0e-3, 1.0e-5, 2.0e-5, 3.0e-5]}},
        scheduler={"type": "asha", "metric": "val_macro_f1", "mode": "max", "grace_period": 1,
                   "reduction_factor": 2, "promote_on": "forecast"},
    )  # fmt: skip
    summary = run_sweep(job, run_id="r")
    epochs = results.read_epochs(summary.run_dir)
    assert {"forecast", "forecast_low", "forecast_high"} <= set(epochs.columns)
    assert ((epochs.forecast_low <= epochs.forecast) & (epochs.forecast <= epochs.forecast_high)).all()
    trials = results.read_trials(summary.run_dir)
    assert len(trials) == 4 and (trials.status == "stopped_early").any()  # the rungs still cut
    assert not summary.interrupted
