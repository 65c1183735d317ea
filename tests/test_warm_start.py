"""``warm_start:`` on a real local Ray: an earlier run of the same trainable seeds a new sweep (random search
runs its best config first, marked warm_start; TPE learns from its trials), and another trainable's or
metric's run is refused in one line before Ray starts."""

import json
import math

import pytest

from conftest import make_job
from sentune import results
from sentune.errors import ConfigError
from sentune.tuning._warm import load_warm_start

PARAMS = {"backbone": "random:tiny", "option": "finetune", "epochs": 1, "batch_size": 16, "max_len": 24, "seed": 1}
SPACE = {"lr": {"loguniform": [1.0e-5, 1.0e-2]}, "hidden_dropout": {"uniform": [0.0, 0.5]}}


def job(sst_dir, tmp_path, name, **changes):
    raw = dict(name=name, num_samples=2, params=PARAMS, scheduler={"type": "fifo"}, search_space=SPACE,
               search={"algorithm": "random"},
               resources={"cpus": 1, "workers_per_trial": 1, "max_concurrent_trials": 1})  # fmt: skip
    return make_job(sst_dir, tmp_path, **{**raw, **changes})


@pytest.mark.slow
def test_a_warm_started_sweep_runs_the_earlier_best_first(ray_local, sst_dir, tmp_path, tiny_sweep):
    from sentune.tuning import run_sweep

    earlier = run_sweep(job(sst_dir, tmp_path / "a", "earlier", num_samples=3, seed=5), run_id="r").run_dir
    before = results.RunView.load(earlier).best_trial
    best = {k: json.loads(before.config_json)[k] for k in ("lr", "hidden_dropout")}
    later = run_sweep(job(sst_dir, tmp_path / "b", "later", warm_start={"runs": [str(earlier)], "top_k": 1}),
                      run_id="r").run_dir  # fmt: skip
    trials = results.read_trials(later).sort_values("started_at")
    assert len(trials) == 3  # the earlier best, then the 2 sampled
    first = trials.iloc[0]
    assert first.role == "warm_start"
    assert {k: json.loads(first.config_json)[k] for k in best} == pytest.approx(best)
    assert (trials.iloc[1:].role == "sampled").all()
    # TPE: every earlier trial is known to the search without running again
    tpe = run_sweep(job(sst_dir, tmp_path / "c", "later_tpe", search={"algorithm": "optuna"},
                        warm_start=[str(earlier)]), run_id="r").run_dir  # fmt: skip
    assert len(results.read_trials(tpe)) == 2 and set(results.read_trials(tpe).role) == {"sampled"}


def test_another_trainable_or_metric_is_refused_in_one_line(sst_dir, tmp_path, tiny_sweep):
    lstm = make_job(sst_dir, tmp_path, name="other", trainable="lstm_tf", params={"epochs": 1},
                    search_space={"lr": {"loguniform": [1e-4, 1e-2]}}, search={"algorithm": "random"},
                    warm_start=[str(tiny_sweep.run_dir)])  # fmt: skip
    with pytest.raises(ConfigError, match="a run of llama_torch; this job tunes lstm_tf") as err:
        load_warm_start(lstm)
    assert "\n" not in str(err.value)
    loss = job(sst_dir, tmp_path, "by_loss", scheduler={"type": "fifo", "metric": "val_loss"},
               warm_start=[str(tiny_sweep.run_dir)])  # fmt: skip
    with pytest.raises(ConfigError, match="its metric is val_macro_f1"):
        load_warm_start(loss)


def test_values_outside_the_new_space_and_options_no_longer_tuned_are_dropped(sst_dir, tmp_path, tiny_sweep, caplog):
    # the tiny sweep tuned lr on a grid of 3e-3 and 1e-7; a space of [1e-4, 1e-2] keeps the first only
    narrow = job(sst_dir, tmp_path, "narrow", search_space={"lr": {"loguniform": [1.0e-4, 1.0e-2]}},
                 warm_start=[str(tiny_sweep.run_dir)])  # fmt: skip
    warm = load_warm_start(narrow)
    assert [p["lr"] for p, _ in warm.evaluated] == pytest.approx([3.0e-3] * len(warm.evaluated))
    assert warm.best == [{"lr": pytest.approx(3.0e-3)}]
    other = job(sst_dir, tmp_path, "dropout_only", search_space={"hidden_dropout": {"uniform": [0.0, 0.5]}},
                warm_start=[str(tiny_sweep.run_dir)])  # fmt: skip
    with caplog.at_level("INFO", logger="sentune"):
        load_warm_start(other)
    assert any("options no longer tuned dropped: lr" in r.getMessage() for r in caplog.records)


def test_tpe_with_warm_trials_suggests_from_them_without_running_them():
    """Fast, no Ray started: twelve earlier trials peaking near lr 1e-3 take TPE past its random start-up, so
    its first suggestion is not the one a cold TPE with the same seed makes, and lies near the earlier best."""
    from sentune.search import parse_search_space
    from sentune.trainables import get_trainable
    from sentune.tuning._factories import make_search_alg, to_tune

    parsed = parse_search_space({"lr": {"loguniform": [1.0e-5, 1.0e-1]}}, get_trainable("llama_torch").params_model)
    lrs = [10 ** (-5 + 4 * i / 11) for i in range(12)]
    evaluated = [({"lr": lr}, 1.0 - abs(math.log10(lr) + 3.0)) for lr in lrs]

    def first(warm):
        alg = make_search_alg("optuna", parsed, seed=3, metric="m", mode="max", max_concurrent=1, evaluated=warm)
        alg.set_search_properties("m", "max", to_tune(parsed))
        return alg.suggest("t1")["lr"]

    cold, warm = first(None), first(evaluated)
    assert cold != warm
    assert 1e-4 < warm < 1e-2, warm
