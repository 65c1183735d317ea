"""Using what a sweep found, on real runs of tiny jobs: ``sentune predict`` labels texts with the run's best
model as its own evaluation did, ``sentune export --model`` writes a model folder that predicts the same with
the run folder gone and loads without pickle, for the LLaMA and the LSTM trainable."""

import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest

from sentune.errors import ConfigError, DataError
from sentune.inference import export_model, open_model

pytestmark = pytest.mark.slow


def _run_predictions(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "predictions_test.csv")


def _probability_columns(frame: pd.DataFrame) -> np.ndarray:
    return frame[[c for c in frame if c.startswith("p_")]].to_numpy()


@pytest.fixture(scope="module")
def llama_run(tiny_sweep, tmp_path_factory):
    """A copy of the session's tiny llama_torch run (this module exports into it and deletes it)."""
    copy = tmp_path_factory.mktemp("predict") / "run"
    shutil.copytree(tiny_sweep.run_dir, copy)
    return copy


@pytest.fixture(scope="module")
def lstm_run(ray_local, tmp_path_factory):
    from test_lstm_ray import job

    from sentune.tuning import run_sweep

    return run_sweep(job(tmp_path_factory.mktemp("lstm-predict"), "lstm_predict"), run_id="r").run_dir


@pytest.mark.parametrize("which", ["llama_run", "lstm_run"])
def test_predict_gives_the_labels_of_the_runs_own_test_predictions(which, request):
    run_dir = request.getfixturevalue(which)
    expected = _run_predictions(run_dir)
    model = open_model(run_dir)
    probs = model.predict_proba(expected["text"].tolist())
    assert [model.label_names[i] for i in probs.argmax(1)] == expected["predicted"].astype(str).tolist()
    np.testing.assert_allclose(probs, _probability_columns(expected), atol=1e-4)
    assert model.info["source"]["trial"]  # the run's best trial


@pytest.mark.parametrize("which", ["lstm_run", "llama_run"])  # llama last: it deletes the run folder
def test_an_exported_folder_predicts_the_same_without_the_run_folder(which, request, tmp_path):
    run_dir = request.getfixturevalue(which)
    expected = _run_predictions(run_dir)
    out = export_model(run_dir, tmp_path / "model")
    card = (out / "README.md").read_text()
    info = json.loads((out / "model.json").read_text())
    assert "Test confusion matrix" in card and str(info["source"]["trial"]) in card
    assert np.asarray(info["confusion_test"]).sum() == len(expected)
    if which == "llama_run":
        shutil.rmtree(run_dir)  # nothing of the run is needed any more
    model = open_model(out)
    labels = [r["label"] for r in model.predict(expected["text"].tolist())]
    assert labels == expected["predicted"].astype(str).tolist()


def test_the_exported_weights_load_without_pickle(tiny_sweep, tmp_path):
    from safetensors.torch import load_file

    out = export_model(tiny_sweep.run_dir, tmp_path / "model")
    weights = out / "model.safetensors"
    assert load_file(str(weights))  # safetensors: a header and raw tensors, no code
    assert not zipfile.is_zipfile(weights)  # not a torch.save archive (which holds a pickle)
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.pkl"))


def test_cli_predict_reads_a_labelled_file_and_writes_csv(tiny_sweep, sst_dir, tmp_path):
    out = tmp_path / "pred.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "sentune.cli", "predict", str(tiny_sweep.run_dir), "--input",
         str(sst_dir / "test.txt"), "--format", "sst", "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(out)
    expected = _run_predictions(tiny_sweep.run_dir)
    assert list(frame.columns) == ["text", "predicted", *[c for c in expected if c.startswith("p_")]]
    assert sorted(frame["predicted"].astype(str)) == sorted(expected["predicted"].astype(str))
    acc = float((frame["predicted"].astype(str).values == expected.set_index("text").loc[frame["text"], "label"]
                 .astype(str).values).mean())  # fmt: skip
    assert f"accuracy {acc:.4f}" in proc.stdout and "macro-F1" in proc.stdout


def test_cli_predict_texts_and_one_line_errors(tiny_sweep, tmp_path):
    cli = [sys.executable, "-m", "sentune.cli", "predict", str(tiny_sweep.run_dir)]
    ok = subprocess.run([*cli, "--text", "great great film", "--text", "awful boring plot"],
                        capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert [line.split("\t")[2] for line in ok.stdout.splitlines()] == ["great great film", "awful boring plot"]
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine text\n\xff\xfe broken\n")
    for args in (["--input", str(bad)], ["--input", str(tmp_path / "missing.txt")], []):
        proc = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("sentune: error:")


def test_a_folder_that_is_neither_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="neither a run folder"):
        open_model(tmp_path)
    (tmp_path / "model.json").write_text('{"format": "something-else"}')
    with pytest.raises(ConfigError, match="not a sentune model folder"):
        open_model(tmp_path)


def test_read_texts_formats(tmp_path):
    from sentune.data import read_texts

    (tmp_path / "a.txt").write_text("one text\n\nanother one\n", encoding="utf-8")
    assert read_texts(tmp_path / "a.txt", "lines") == ["one text", "another one"]
    (tmp_path / "b.csv").write_text('review\n"a, quoted text"\nplain\n', encoding="utf-8")
    assert read_texts(tmp_path / "b.csv", "csv") == ["a, quoted text", "plain"]
    (tmp_path / "c.csv").write_text("label,review\n1,good\n0,bad\n", encoding="utf-8")
    labelled = read_texts(tmp_path / "c.csv", "csv", ["neg", "pos"])
    assert labelled.texts == ["good", "bad"] and labelled.labels.tolist() == [1, 0]
    (tmp_path / "d.csv").write_text("id,body\n1,x\n", encoding="utf-8")
    with pytest.raises(DataError, match="no column"):
        read_texts(tmp_path / "d.csv", "csv")
