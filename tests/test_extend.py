"""``sentune extend``: a finished run gets more trials of its job in the same run folder, on a real local Ray.
The earlier trials are not trained again (their rows stay as they were), the new configs are new, and the run
ends as usual over all its trials."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from conftest import make_job
from sentune import results
from sentune.errors import ConfigError

pytestmark = pytest.mark.slow

PARAMS = {"backbone": "random:tiny", "option": "finetune", "epochs": 1, "batch_size": 16, "max_len": 24, "seed": 1}


def tuned(run_dir) -> list[tuple]:
    trials = results.read_trials(run_dir)
    return [(round(json.loads(c)["lr"], 12), round(json.loads(c)["hidden_dropout"], 12)) for c in trials.config_json]


def first_run(sst_dir, tmp_path, algorithm: str, n: int):
    from sentune.tuning import run_sweep

    job = make_job(
        sst_dir, tmp_path, name=f"ext_{algorithm}", num_samples=n, params=PARAMS, scheduler={"type": "fifo"},
        search_space={"lr": {"loguniform": [1.0e-5, 1.0e-2]}, "hidden_dropout": {"uniform": [0.0, 0.5]}},
        search={"algorithm": algorithm}, resources={"cpus": 1, "workers_per_trial": 1, "max_concurrent_trials": 2},
    )  # fmt: skip
    return run_sweep(job, run_id="r").run_dir


@pytest.mark.parametrize(("algorithm", "first", "more"), [("optuna", 6, 4), ("random", 3, 2)])
def test_extend_adds_new_trials_and_trains_none_of_the_earlier_again(
    ray_local, sst_dir, tmp_path, algorithm, first, more
):
    from sentune.tuning import extend_sweep

    run_dir = first_run(sst_dir, tmp_path, algorithm, first)
    before_trials = results.read_trials(run_dir).set_index("trial_id")
    before_epochs = results.read_epochs(run_dir)
    summary = extend_sweep(run_dir, trials=more)
    assert summary.run_dir == run_dir and not summary.interrupted
    after = results.read_trials(run_dir).set_index("trial_id")
    assert len(after) == first + more and len(set(tuned(run_dir))) == first + more  # all distinct configs
    old = after.loc[before_trials.index]
    for col in ("status", "epochs_run", "peak_metric", "peak_epoch", "config_json", "checkpoint_path", "started_at"):
        pd.testing.assert_series_equal(old[col], before_trials[col], check_names=False)
    epochs = results.read_epochs(run_dir)
    kept = epochs[epochs.trial_id.isin(before_trials.index)].sort_values(["trial_id", "epoch"]).reset_index(drop=True)
    was = before_epochs.sort_values(["trial_id", "epoch"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(kept[was.columns.drop("trial_status", errors="ignore")],
                                  was[was.columns.drop("trial_status", errors="ignore")])  # fmt: skip
    # the new configs are not the first a sampler with the job's seed draws (the run's own first six)
    new = set(tuned(run_dir)) - {(round(json.loads(c)["lr"], 12), round(json.loads(c)["hidden_dropout"], 12))
                                 for c in before_trials.config_json}  # fmt: skip
    assert len(new) == more
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["spec"]["num_samples"] == first + more
    assert info["tuner"] == "extend-1"
    assert len(pd.read_csv(run_dir / "leaderboard.csv").query("role != 'reference'")) == first + more


def test_extend_refuses_what_it_cannot_extend_in_one_line(ray_local, sst_dir, tmp_path, tiny_sweep):
    from sentune.tuning import extend_sweep

    with pytest.raises(ConfigError, match="grid sweep"):
        extend_sweep(tiny_sweep.run_dir, trials=2)  # the session's tiny sweep is a grid
    with pytest.raises(ConfigError, match="1 or more"):
        extend_sweep(tiny_sweep.run_dir, trials=0)
    proc = subprocess.run([sys.executable, "-m", "sentune.cli", "extend", str(tmp_path / "nothing"), "--trials", "2"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
