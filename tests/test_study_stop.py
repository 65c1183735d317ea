"""A sweep that ends itself (``stop:``): the rule on its own (fast), and a real tiny sweep on a local Ray that
stops once two trials in a row did not beat the best."""

import json
import time
from types import SimpleNamespace

import pytest

from conftest import make_job
from sentune.errors import ConfigError
from sentune.tuning._callback import StudyStopper


def rule(**kw):
    base = {"patience_trials": None, "min_improvement": 0.0, "max_wall_seconds": None, "target": None}
    return SimpleNamespace(**{**base, **kw})


def test_patience_counts_trials_in_a_row_without_enough_gain():
    s = StudyStopper(rule(patience_trials=2, min_improvement=0.01), metric="m", mode="max")
    for peak in (0.5, 0.505, 0.7):  # 0.505 is no gain by 0.01; 0.7 is, and starts the count again
        s.trial_ended(peak)
    assert not s.spent
    s.trial_ended(0.705)
    assert not s.spent
    s.trial_ended(None)  # a trial without a metric counts as no gain
    assert s.spent and "2 trials in a row" in s.reason and s.stop_all()


def test_patience_in_min_mode_and_from_a_resumed_record():
    s = StudyStopper(rule(patience_trials=2), metric="val_loss", mode="min", peaks=[0.9, 0.5, 0.6])
    assert not s.spent and s.without_gain == 1
    s.trial_ended(0.4)  # lower is better
    assert s.without_gain == 0
    s.trial_ended(0.45)
    s.trial_ended(0.41)
    assert s.spent


def test_target_and_wall_time():
    s = StudyStopper(rule(target=0.8), metric="m", mode="max")
    assert not s("t1", {"m": 0.79}) and not s("t1", {"other": 1.0})
    assert s("t2", {"m": 0.8}) and "target m 0.8" in s.reason
    low = StudyStopper(rule(target=0.2), metric="loss", mode="min")
    assert not low("t", {"loss": 0.3}) and low("t", {"loss": 0.19})
    wall = StudyStopper(rule(max_wall_seconds=5), metric="m", mode="max", earlier_seconds=4.9)
    time.sleep(0.15)
    assert wall.stop_all() and "wall time" in wall.reason


def test_a_stop_block_without_a_rule_or_with_a_bad_value_is_one_line(sst_dir, tmp_path):
    for stop in ({}, {"patience_trials": 0}, {"patience_trials": 2, "unknown": 1}):
        with pytest.raises(ConfigError) as err:
            make_job(sst_dir, tmp_path, stop=stop)
        assert "\n" not in str(err.value) and "stop" in str(err.value)


@pytest.mark.slow
def test_a_sweep_ends_itself_when_trials_stop_improving(ray_local, sst_dir, tmp_path):
    from sentune import results
    from sentune.tuning import run_sweep

    lrs = [3.0e-3, 1.0e-7, 2.0e-7, 3.0e-7, 4.0e-7, 5.0e-7]  # the first learns; the rest barely move
    job = make_job(
        sst_dir, tmp_path, name="ends_itself", search_space={"lr": {"grid": lrs}}, scheduler={"type": "fifo"},
        params={"backbone": "random:tiny", "option": "finetune", "epochs": 2, "batch_size": 16, "max_len": 24,
                "seed": 1},
        stop={"patience_trials": 2, "min_improvement": 0.001}, confirm=None, num_samples=1,
    )  # fmt: skip
    summary = run_sweep(job, run_id="r")
    trials = results.read_trials(summary.run_dir).sort_values("started_at")
    assert len(trials) < len(lrs)  # it ended before running them all
    first = trials.head(3)
    assert (first.status == "completed").all() and first.stop_reason.isna().all()
    cut = trials.iloc[3:]
    assert (cut.status == "stopped_early").all() and (cut.stop_reason == "study").all()
    info = json.loads((summary.run_dir / "run.json").read_text())
    assert info["status"] == "finished"
    assert info["study_stop"]["reason"].startswith("2 trials in a row") and info["study_stop"]["trials_planned"] == 6
    assert summary.ended.startswith("the sweep ended itself: 2 trials in a row")
    assert "never ran" in summary.ended
    assert 'id="study-stop"' in (summary.run_dir / "report.html").read_text()
