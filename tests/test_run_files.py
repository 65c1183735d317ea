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
