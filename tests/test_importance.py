"""Parameter importance from a run's own record (Optuna's fANOVA and PED-ANOVA), on a real sweep of a tiny job
where only ``lr`` matters: ``focal_gamma`` is tuned too, but with ``loss: ce`` it changes nothing."""

import json
import subprocess
import sys

import pytest

from conftest import make_job
from sentune.results import importance_line, read_importance
from sentune.results._importance import MIN_TRIALS, importance

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lr_only(ray_local, sst_dir, tmp_path_factory):
    from sentune.tuning import run_sweep

    job = make_job(
        sst_dir, tmp_path_factory.mktemp("importance"), name="lr_only",
        search_space={"lr": {"loguniform": [1.0e-6, 3.0e-2]}, "focal_gamma": {"uniform": [0.0, 5.0]}, "loss": "ce"},
        search={"algorithm": "random"}, num_samples=10, scheduler={"type": "fifo"},
        params={"backbone": "random:tiny", "option": "finetune", "epochs": 2, "batch_size": 16, "max_len": 24,
                "seed": 1},
        resources={"cpus": 1, "workers_per_trial": 1, "max_concurrent_trials": 2},
    )  # fmt: skip
    return run_sweep(job, run_id="r")


def test_importance_ranks_the_option_that_matters_first(lr_only):
    found = json.loads((lr_only.run_dir / "importance.json").read_text())  # written by the run's finish
    assert found["trials"] == 10 and sorted(found["params"]) == ["focal_gamma", "lr"]
    for evaluator in ("fanova", "ped_anova"):
        ranked = found["at_rung"][evaluator]
        assert list(ranked)[0] == "lr", ranked
        assert ranked["lr"] > 0.7, ranked
    assert lr_only.importance.startswith("importance of val_macro_f1 (fANOVA, 10 trials at epoch ")
    assert lr_only.importance.index("lr") < lr_only.importance.index("focal_gamma")


def test_results_and_report_show_the_importance(lr_only):
    proc = subprocess.run([sys.executable, "-m", "sentune.cli", "results", str(lr_only.run_dir)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert importance_line(read_importance(lr_only.run_dir)) in proc.stdout
    page = (lr_only.run_dir / "report.html").read_text()
    assert 'id="importance"' in page and "importance-vs-lr" in page


def test_too_few_trials_say_so_instead_of_printing_noise(tiny_sweep, tmp_path):
    found = importance(tiny_sweep.run_dir)  # 2 trials, one tuned option
    assert "at_rung" not in found and found["note"].startswith("importance:")
    assert importance_line(found) == found["note"]
    assert MIN_TRIALS > 2
