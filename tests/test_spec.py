from pathlib import Path

import pytest
import yaml

from sentune.errors import ConfigError
from sentune.search import Domain
from sentune.spec import load_job, parse_job
from sentune.tuning._factories import to_tune

BASE = dict(
    name="t",
    trainable="llama_torch",
    data={"builtin": "en-movie-5"},
    search_space={"lr": {"loguniform": [1.0e-4, 1.0e-2]}, "backbone": "random:tiny", "epochs": 4},
)


def job(**changes):
    raw = {**BASE, **changes}
    return parse_job(raw)


def test_valid_job_parses_into_domains():
    spec = job(
        search_space={
            **BASE["search_space"],
            "hidden_dropout": {"uniform": [0.0, 0.5]},
            "batch_size": {"choice": [16, 32]},
            "warmup_epochs": {"quniform": [0, 2, 0.5]},
            "seed": {"randint": [0, 10]},
            "focal_alpha": {"grid": ["none", "auto"]},
        }
    )
    assert spec.space["lr"] == Domain("loguniform", (1.0e-4, 1.0e-2))
    assert spec.space["backbone"] == "random:tiny"
    assert spec.epochs_max == 4
    space = to_tune(spec.space)
    assert space["lr"].lower == 1.0e-4 and space["lr"].upper == 1.0e-2
    assert space["batch_size"].categories == [16, 32]
    assert space["focal_alpha"] == {"grid_search": ["none", "auto"]}


@pytest.mark.parametrize(
    "space, message",
    [
        ({"dropout": {"uniform": [0.1, 0.5]}}, "unknown parameter 'dropout' for this trainable"),
        ({"lr": {"loguniform": [0, 1.0e-2]}}, "lr: loguniform needs low > 0, got 0"),
        ({"lr": {"uniform": [-1.0, 1.0e-2]}}, "lr: lower bound -1.0 is invalid: Input should be greater than 0"),
        ({"lr": 0}, "lr: Input should be greater than 0"),
        (
            {"hidden_dropout": {"uniform": [0.1, 1.0]}},
            "hidden_dropout: upper bound 1.0 is invalid: Input should be less than 1",
        ),
        ({"hidden_dropout": {"choice": [0.3, 0.9, 1.2]}}, "hidden_dropout: value 1.2 is invalid"),
        ({"lr": {"loguniform": [1.0e-2, 1.0e-4]}}, "lr: low 0.01 > high 0.0001"),
        ({"batch_size": {"randint": [8, 8]}}, "batch_size: empty range [8, 8]"),
        ({"lr": {"normal": [0, 1]}}, "lr: unknown domain 'normal'"),
        (
            {"backbone": {"choice": ["random:tiny", "smollm2"]}},
            "backbone shapes the shared data and cannot be searched",
        ),
        ({"backbone": "gpt:nothing"}, "backbone 'gpt:nothing': expected smollm2"),
        ({"backbone": "llama2c:/no/such/stories42M.pt"}, "file /no/such/stories42M.pt not found"),
        ({"focal_alpha": 1.5}, "focal_alpha"),
        ({"epochs": 2, "warmup_epochs": 3}, "warmup_epochs (3.0) exceeds epochs (2)"),
    ],
)
def test_rejected_search_spaces_name_the_parameter(space, message):
    with pytest.raises(ConfigError) as exc:
        job(search_space={**BASE["search_space"], **space})
    assert message in str(exc.value)
    assert str(exc.value).startswith("job: ")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"schedular": {"type": "asha"}}, "job: schedular: unknown key"),
        ({"scheduler": {"type": "asha", "grace": 1}}, "job: scheduler.grace: unknown key"),
        (
            {"scheduler": {"type": "bohb"}},
            "job: scheduler.type: Input should be 'asha', 'fifo', 'hyperband', 'median' or 'pbt'",
        ),
        ({"scheduler": {"metric": "val_f1"}}, "job: scheduler.metric: metric must be one of"),
        ({"scheduler": {"max_t": 9}}, "job: scheduler.max_t (9) exceeds epochs (4)"),
        ({"resources": {"gpus": 1.5}}, "gpus above 1 must be a whole number"),
        (
            {"resources": {"workers_per_trial": 0}},
            "job: resources.workers_per_trial: Input should be greater than or equal to 1",
        ),
        ({"trainable": "bert"}, "unknown trainable 'bert'"),
        ({"data": {"builtin": "en-movie-5", "train": "x.txt"}}, "give either 'builtin' or 'train'"),
        ({"data": {"train": "x.txt"}}, "at least 'train' and 'dev'"),
        ({"name": "my job"}, "job: name: name may hold letters"),
        (
            {"search": {"algorithm": "optuna"}, "search_space": {**BASE["search_space"], "lr": {"grid": [0.1, 0.01]}}},
            "optuna: grid domains are not supported",
        ),
    ],
)
def test_rejected_jobs(changes, message):
    spec_error = None
    try:
        job(**changes)
    except ConfigError as exc:
        spec_error = str(exc)
    assert spec_error is not None and message in spec_error, spec_error


def test_job_files_in_repo_are_valid():
    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "tune_jobs").glob("*.yaml")):
        import os

        cwd = os.getcwd()
        os.chdir(root)
        try:
            spec = load_job(path.relative_to(root))
        finally:
            os.chdir(cwd)
        assert spec.name == path.stem


def test_job_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="job file .*missing.yaml not found"):
        load_job(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:2:1: not valid YAML"):
        load_job(bad)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"lr": {"loguniform": [1e-4, 1e-2]}, "epochs": 3, "backbone": "random:tiny"}))
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({**BASE, "search_space": str(space), "params": {"epochs": 2}}))
    spec = load_job(good)
    assert spec.space["epochs"] == 2  # params override the file
