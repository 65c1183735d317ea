"""RunView: a run folder read once per command, and results/ in layers (fast: no Ray)."""

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sentune import results
from sentune.results import RunRecorder, RunView, write_run_info

NAMES = ["neg", "pos"]


def recorded_run(run: Path, trials: int = 3, epochs: int = 3) -> Path:
    """A finished run folder as a sweep leaves it before its finish: run.json, trials, epoch parts."""
    write_run_info(run, {"job": "j", "run_id": "r", "trainable": "llama_torch", "metric": "val_macro_f1",
                         "mode": "max", "label_names": NAMES, "tuned_params": ["lr"], "data": {"builtin": "x"},
                         "spec": {"resources": {"gpus": 1}}})  # fmt: skip
    rec = RunRecorder(run, job="j", run_id="r", metric="val_macro_f1", mode="max", max_epochs=epochs, flush_every_s=0)
    for t in range(trials):
        config = {"lr": 10.0 ** -(t + 2), "epochs": epochs}
        rec.trial(f"t{t}", config, **({"role": "baseline", "baseline": 1} if t == 0 else {}))
        for e in range(1, epochs + 1):
            rec.result(f"t{t}", config, {"epoch": e, "time_this_iter_s": 1.0, "train_loss": 1 / e, "val_loss": 1 / e,
                                         "train_acc": 0.6, "val_acc": 0.5 + 0.1 * t, "val_macro_f1": 0.5 + 0.01 * e * t,
                                         "val_pred_count/neg": 5, "val_pred_count/pos": 5})  # fmt: skip
        rec.checkpoint(f"t{t}", f"/ckpt/t{t}")
        rec.completed(f"t{t}", config)
    return run


def evaluated(run: Path) -> Path:
    best, base = results.best_trial(run), results.best_baseline(run)
    assert base is not None
    y, probs = np.array([0, 1, 1, 0]), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    test = results.split_figures(y, probs)
    evaluations = {
        tag: {"trial_id": str(row.name), "row": str(row.name), "dev": {"score": 0.5, "macro_f1": 0.5}, "test": test}
        for tag, row in (("best", best), ("best_baseline", base))
    }
    results.write_evaluations(run, evaluations)
    results.write_reference(run, {"model": "tfidf", "dev": {"macro_f1": 0.6, "acc": 0.6}, "seconds": 1.0,
                                  "test": {"macro_f1": 0.55, "acc": 0.5}})  # fmt: skip
    return run


@pytest.fixture()
def count_reads(monkeypatch):
    """How many times each file of a run is read (by name: a part counts as epochs.parquet)."""
    from sentune.results import _store

    counts: dict[str, int] = {}
    read_parquet, read_json = _store.read_parquet_file, _store.read_json_file

    def named(path) -> str:
        path = Path(path)
        return path.parent.name if path.parent.name == "epochs.parquet" else path.name

    def parquet(path):
        counts[named(path)] = counts.get(named(path), 0) + 1
        return read_parquet(path)

    def json_file(path, **kw):
        counts[named(path)] = counts.get(named(path), 0) + 1
        return read_json(path, **kw)

    monkeypatch.setattr(_store, "read_parquet_file", parquet)
    monkeypatch.setattr(_store, "read_json_file", json_file)
    return counts


def test_the_finish_on_one_view_reads_each_file_once(tmp_path, count_reads):
    run = evaluated(recorded_run(tmp_path / "run"))
    count_reads.clear()
    view = RunView.load(run)
    results.write_report(view)
    results.export_run(view)
    board = view.leaderboard_with_reference
    line = results.comparison_line(view)
    spent = view.budget
    assert results.best_trial(view).name == view.best_trial.name
    parts = len(results._store.list_parts(run / "epochs.parquet"))  # the numbered parts (not the schema part)
    assert count_reads == {"run.json": 1, "trials.parquet": 1, "epochs.parquet": parts, "evaluation.json": 1,
                           "reference.json": 1}  # fmt: skip
    # and the same answers as the functions that read the folder for each question
    pd.testing.assert_frame_equal(board, results.leaderboard(run, reference=True))
    assert line == results.comparison_line(run) and spent == results.budget(run)
    assert board.trial_id.tolist()[-1] == "reference" and "test_macro_f1" in board


def test_a_view_hands_out_copies_through_the_functions(tmp_path):
    view = RunView.load(recorded_run(tmp_path / "run"))
    board = results.leaderboard(view)
    board["rank"] = 0
    assert (view.leaderboard["rank"] > 0).all()
    results.budget(view)["trials"] = -1
    assert view.budget["trials"] == 3


def test_a_refreshed_view_reads_the_evaluations_again_and_keeps_the_record(tmp_path):
    run = recorded_run(tmp_path / "run")
    view = RunView.load(run)
    assert "test_macro_f1" not in view.leaderboard and view.test_figures is None
    best = view.best_trial
    evaluated(run)
    assert "test_macro_f1" not in view.leaderboard  # read once: what it saw
    fresh = view.refreshed()
    assert fresh.trials is view.trials and fresh.best_trial is best
    assert "test_macro_f1" in fresh.leaderboard and fresh.test_figures == fresh.evaluations["best"]["test"]
    assert fresh.reference is not None and fresh.leaderboard_with_reference.trial_id.tolist()[-1] == "reference"


def test_the_report_takes_the_test_figures_from_evaluation_json(tmp_path):
    run = evaluated(recorded_run(tmp_path / "run"))
    assert not (run / "classification_report.csv").exists()
    test = RunView.load(run).test_figures
    html = results.write_report(run).read_text()
    assert f"test accuracy <b>{test['acc']:.4f}</b>, test macro-F1 <b>{test['macro_f1']:.4f}</b>" in html
    assert "no test split" not in html


def test_a_run_without_an_epoch_record_still_ranks(tmp_path):
    run = recorded_run(tmp_path / "run")
    results._store.remove_path(run / "epochs.parquet")
    view = RunView.load(run)
    assert view.epochs.empty and list(view.epochs.columns) == ["trial_id", "epoch"]
    assert view.leaderboard.final_val_acc.isna().all() and len(view.leaderboard) == 3


# results/ in layers: a module imports only modules of a lower layer (no circle, not even inside a function)
LAYERS = [
    {"_layout", "_writer"},
    {"_tables"},
    {"_store"},
    {"_trial_table", "_epoch_log", "_aggregate", "_evaluation", "_runs", "_range", "_storage", "_optuna"},
    {"_recorder", "_view"},
    {"_format", "_export", "_training_report", "_importance"},
    {"_compare"},
    {"_report"},
]


def _imported(tree: ast.AST) -> list[str]:
    """The sentune modules a module imports (``from sentune import metrics``: sentune.metrics)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "sentune":
            out += [f"sentune.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sentune."):
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("sentune")]
    return out


BELOW_RESULTS = {"sentune._atomic", "sentune._direction", "sentune._log", "sentune._paths", "sentune._uri",
                 "sentune.diagnostics", "sentune.errors", "sentune.metrics"}  # fmt: skip


def test_results_modules_import_only_lower_layers():
    folder = Path(results.__file__).parent
    layer = {name: i for i, names in enumerate(LAYERS) for name in names}
    assert set(layer) == {p.stem for p in folder.glob("_*.py")} - {"__init__"}
    for path in folder.glob("_*.py"):
        if path.stem == "__init__":
            continue
        for target in _imported(ast.parse(path.read_text())):
            if target.startswith("sentune.results."):
                below = target.removeprefix("sentune.results.")
                assert layer[below] < layer[path.stem], f"{path.stem} imports {below}"
            else:  # nothing of the package itself, nor of the layers that use it
                assert target in BELOW_RESULTS, f"{path.stem} imports {target}"
                assert path.stem != "_layout", f"_layout imports {target}"
