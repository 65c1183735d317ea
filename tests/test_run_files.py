"""Every file of a run is written whole (one atomic helper), the job a run keeps is resolved when it starts,
credentials never reach run.json, and the readers and exporters answer bad input in one line. Fast: no Ray."""

import json
import os
from pathlib import Path

import pytest
import yaml

from sentune._atomic import atomic_write_text
from sentune.errors import SentuneError
from sentune.results import export_run, write_run_info
from sentune.spec import parse_job


def test_a_planted_symlink_at_the_temporary_name_is_never_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    for guess in (f".run.json.tmp{os.getpid()}", ".run.json.tmp"):  # the names a writer could predict
        (run / guess).symlink_to(victim)
    write_run_info(run, {"job": "j"})
    assert victim.read_text() == "precious"
    assert json.loads((run / "run.json").read_text()) == {"job": "j"}
    assert sorted(p.name for p in run.iterdir() if not p.is_symlink()) == ["run.json"]  # no temporary file left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_text(target, "old")

    def boom(tmp):
        Path(tmp).write_text("half")
        raise RuntimeError("disk full")

    from sentune._atomic import atomic_write_bytes

    with pytest.raises(RuntimeError):
        atomic_write_bytes(target, boom)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def _job(tmp_path, **changes):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for split, n in (("train", 12), ("dev", 6)):
        (data / f"{split}.txt").write_text("".join(f"{i % 2} ||| text {i} good bad\n" for i in range(n)))
    (tmp_path / "space.yaml").write_text("lr: {loguniform: [1.0e-4, 1.0e-2]}\n")
    raw = {
        "name": "j",
        "trainable": "llama_torch",
        "data": {"train": "data/train.txt", "dev": "data/dev.txt"},
        "search_space": "space.yaml",
        "params": {"backbone": "random:tiny", "epochs": 1},
        "storage_path": "results",
        **changes,
    }
    return raw


def test_the_job_a_run_keeps_is_resolved_when_it_starts(tmp_path, monkeypatch):
    from sentune.tuning._run_folder import check_same_data as _check_same_data
    from sentune.tuning._run_folder import data_digests, stored_spec

    monkeypatch.chdir(tmp_path)
    spec = parse_job(_job(tmp_path))
    stored = stored_spec(spec)
    info = {"spec": stored, "data_sha256": data_digests(spec)}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # `sentune resume` started in another folder
    (tmp_path / "space.yaml").write_text("lr: {loguniform: [0.5, 0.9]}\n")  # the space file edited since
    again = parse_job(json.loads(json.dumps(stored)), source="run.json")
    assert again.space["lr"] == spec.space["lr"]  # the space the run started with, not the edited file
    assert Path(again.data.train) == (tmp_path / "data" / "train.txt")
    assert again.storage_path == str(tmp_path / "results")
    _check_same_data(again, info, "run")  # the same data: fine
    (tmp_path / "data" / "dev.txt").write_text("0 ||| changed\n1 ||| files\n")
    with pytest.raises(SentuneError, match=r"run: data.dev .*dev.txt is not the file this run started with"):
        _check_same_data(again, info, "run")


def test_credentials_in_a_storage_uri_never_reach_run_json(tmp_path, monkeypatch):
    from sentune.tuning._run_folder import stored_spec

    monkeypatch.chdir(tmp_path)
    spec = parse_job(_job(tmp_path, storage_path="s3://AKIAKEY:s3cr3t@bucket/sentune?secret_key=zzz&region=eu"))
    text = json.dumps(stored_spec(spec))
    assert "s3cr3t" not in text and "AKIAKEY" not in text and "zzz" not in text
    assert "s3://***@bucket/sentune" in text and "region=eu" in text


def test_export_onto_a_folder_writes_best_config_inside_it(tmp_path):
    from test_results import make_run

    run = make_run(tmp_path / "run", [("t0", 0.1, [0.5, 0.7]), ("t1", 0.2, [0.6, 0.9])])
    out = tmp_path / "out"
    out.mkdir()
    paths = export_run(run, out)
    assert paths["best_config"] == out / "best_config.yaml"
    assert yaml.safe_load((out / "best_config.yaml").read_text())["params"]["lr"] == 0.2
    with pytest.raises(SentuneError, match="cannot write the best config"):
        export_run(run, tmp_path / "run" / "trials.parquet" / "x.yaml")


def test_resume_resolves_range_test_and_local_backbone_paths_and_masks_every_uri(tmp_path, monkeypatch):
    from sentune.tuning._run_folder import stored_spec

    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "rt" / "r1").mkdir(parents=True)
    (tmp_path / "results" / "rt" / "r1" / "lr_suggestion.json").write_text(
        json.dumps({"search_low": 1e-4, "search_high": 1e-2, "suggested_lr": 1e-3})
    )
    (tmp_path / "bb").mkdir()
    (tmp_path / "bb" / "m.pt").write_bytes(b"")
    (tmp_path / "bb" / "tokenizer.model").write_bytes(b"")
    raw = _job(tmp_path, search_space={"lr": {"from_range_test": "results/rt/r1"}},
               params={"backbone": "llama2c:bb/m.pt", "epochs": 1},
               tracking={"mlflow": {"tracking_uri": "http://user:pw@mlflow:5000"}})  # fmt: skip
    stored = stored_spec(parse_job(raw))
    assert stored["search_space"]["lr"] == {"from_range_test": str(tmp_path / "results" / "rt" / "r1")}
    assert stored["params"]["backbone"] == f"llama2c:{tmp_path / 'bb' / 'm.pt'}"
    assert "pw" not in json.dumps(stored) and "mlflow:5000" in json.dumps(stored)
    monkeypatch.chdir(tmp_path / "bb")  # resumed from another folder: the same files
    again = parse_job(json.loads(json.dumps(stored)), source="run.json")
    assert again.params["backbone"] == f"llama2c:{tmp_path / 'bb' / 'm.pt'}"


def test_every_sentune_error_masks_the_credentials_it_quotes():
    from sentune.errors import ConfigError

    msg = str(ConfigError("s3://AKIA:SECRET@bucket/x?secret_key=zzz: no such run folder"))
    assert "SECRET" not in msg and "zzz" not in msg and "AKIA" not in msg and "bucket/x" in msg


def test_a_trial_table_without_the_columns_the_readers_need_is_one_line(tmp_path):
    import pandas as pd
    from test_results import make_run

    from sentune.results import leaderboard

    run = make_run(tmp_path / "run", [("t0", 0.1, [0.5, 0.7])])
    pd.read_parquet(run / "trials.parquet").drop(columns=["peak_epoch"]).to_parquet(run / "trials.parquet")
    with pytest.raises(SentuneError, match=r"trials.parquet: damaged .*no peak_epoch column"):
        leaderboard(run)
    frame = pd.read_parquet(tmp_path / "run" / "trials.parquet").assign(peak_epoch=1, config_json="{not json")
    frame.to_parquet(run / "trials.parquet")
    with pytest.raises(SentuneError, match="config_json that is not a JSON object"):
        leaderboard(run)


def test_runs_under_a_uri_pyarrow_cannot_open_is_one_line_without_its_secret():
    from sentune.results import list_runs

    with pytest.raises(SentuneError) as info:
        list_runs("foo://AKIA:SECRET@bucket/x")
    assert "SECRET" not in str(info.value) and "not a storage URI pyarrow can open" in str(info.value)
