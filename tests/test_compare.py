"""sentune compare: runs side by side and the paired bootstrap of their winners' test predictions; a run's own
"Is the winner better?" (fast tests on hand-made run folders, then two real sweeps)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from conftest import make_job
from sentune import results
from sentune.errors import ConfigError
from sentune.results import RunRecorder, compare_runs, format_comparison, paired_test, winner_against, write_run_info
from sentune.results._compare import paired_bootstrap, resample_indices

NAMES = ["neg", "mid", "pos"]


def by_hand(y, a, b, n_classes, resamples, seed):
    """The paired bootstrap written out with scikit-learn, one f1_score call per resample and side."""

    def f1(t, p):
        return f1_score(t, p, labels=list(range(n_classes)), average="macro", zero_division=0)

    idx = np.random.default_rng(seed).integers(0, len(y), size=(resamples, len(y)))
    diffs = np.array([f1(y[i], a[i]) - f1(y[i], b[i]) for i in idx])
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"diff": f1(y, a) - f1(y, b), "low": low, "high": high, "a_better": float(np.mean(diffs > 0))}


def labelled(seed: int, n: int = 60):
    """True labels with a rare class (two rows: many resamples lack it) and two models' predictions."""
    rng = np.random.default_rng(seed)
    y = rng.choice(2, size=n)
    y[[5, 17]] = 2
    a = np.where(rng.random(n) < 0.8, y, rng.choice(3, size=n))
    b = np.where(rng.random(n) < 0.7, y, rng.choice(3, size=n))
    return y, a, b


def made_run(root: Path, name: str, y, pred, *, texts=None, baseline: bool = False, reference: bool = True,
             confirm: bool = False) -> Path:  # fmt: skip
    """A run folder as a finished sweep leaves it, without Ray: run.json, two trials (the first a baseline when
    ``baseline``; with ``confirm``, two confirmation runs of the second), evaluation.json with the best's
    figures and predictions_test.csv of ``pred``."""
    run = root / name
    write_run_info(run, {"job": "j", "run_id": name, "trainable": "llama_torch", "metric": "val_macro_f1",
                         "mode": "max", "label_names": NAMES, "tuned_params": ["lr"], "data": {"builtin": "x"},
                         "spec": {"num_samples": 2, "search_space": {"lr": {"grid": [0.1, 0.01]}}}})  # fmt: skip
    rec = RunRecorder(run, job="j", run_id=name, metric="val_macro_f1", mode="max", max_epochs=2, flush_every_s=0)
    trials = [("t0", 0.1, 0.4, {"role": "baseline", "baseline": 1} if baseline else {}), ("t1", 0.01, 0.6, {})]
    if confirm:
        trials += [("c1", 0.01, 0.7, {"role": "confirm", "confirm_of": "t1"}),
                   ("c2", 0.01, 0.5, {"role": "confirm", "confirm_of": "t1"})]  # fmt: skip
    for tid, lr, peak, marks in trials:
        config = {"lr": lr, "epochs": 2}
        rec.trial(tid, config, **marks)
        for e in (1, 2):
            metrics = {"epoch": e, "time_this_iter_s": 1.0, "train_loss": 1.0, "val_loss": 1.0, "train_acc": 0.5,
                       "val_acc": 0.5, "val_macro_f1": peak - 0.1 * (2 - e)}  # fmt: skip
            rec.result(tid, config, metrics)
        rec.checkpoint(tid, f"/ckpt/{tid}")
        rec.completed(tid, config)
    probs = np.eye(3)[np.asarray(pred)] * 0.8 + 0.2 / 3
    texts = texts if texts is not None else [f"text {i}" for i in range(len(y))]
    results.write_predictions(run, NAMES, "test", texts, np.asarray(y), probs)
    test = results.split_figures(np.asarray(y), probs)
    best = {"trial_id": "c1" if confirm else "t1", "row": "t1", "dev": {"score": 0.6, "macro_f1": 0.6}, "test": test}
    evaluations = {"best": best}
    if baseline:
        evaluations["best_baseline"] = {"trial_id": "t0", "row": "t0", "dev": {"score": 0.5},
                                        "test": {"macro_f1": 0.41, "acc": 0.5}}  # fmt: skip
    results.write_evaluations(run, evaluations)
    if reference:
        results.write_reference(run, {"model": "tfidf", "dev": {"macro_f1": 0.5, "acc": 0.5},
                                      "test": {"macro_f1": 0.55, "acc": 0.6}})  # fmt: skip
    return run


# ---- the bootstrap itself ----


def test_the_paired_bootstrap_gives_what_scikit_learn_gives_by_hand():
    y, a, b = labelled(0)
    found = paired_bootstrap(y, a, b, 3, resamples=300, seed=7)
    hand = by_hand(y, a, b, 3, 300, 7)
    assert found["diff"] == pytest.approx(hand["diff"], abs=1e-12)
    assert found["low"] == pytest.approx(hand["low"], abs=1e-12)
    assert found["high"] == pytest.approx(hand["high"], abs=1e-12)
    assert found["a_better"] == hand["a_better"]
    assert found["a_macro_f1"] == pytest.approx(f1_score(y, a, labels=[0, 1, 2], average="macro"))
    assert found["low"] < found["diff"] < found["high"] and 0 < found["a_better"] < 1
    # another seed, other draws
    assert paired_bootstrap(y, a, b, 3, resamples=300, seed=8)["low"] != found["low"]


def test_a_model_against_itself_differs_by_zero_in_every_resample():
    y, a, _ = labelled(1)
    found = paired_bootstrap(y, a, a, 3, resamples=200)
    assert (found["diff"], found["low"], found["high"], found["a_better"], found["tied"]) == (0, 0, 0, 0, 1)


def test_resamples_in_chunks_are_the_draws_taken_whole():
    chunks = list(resample_indices(5000, 1000, 3))
    assert len(chunks) > 1
    whole = np.random.default_rng(3).integers(0, 5000, size=(1000, 5000))
    assert np.array_equal(np.concatenate(chunks), whole)


# ---- runs side by side, on hand-made run folders ----


def test_compare_two_runs_gives_the_hand_figures_and_a_run_against_itself_zero(tmp_path):
    y, a, b = labelled(2)
    run_a, run_b = made_run(tmp_path, "ra", y, a), made_run(tmp_path, "rb", y, b)
    found = compare_runs([run_a, run_b, run_a], resamples=250, seed=1)
    assert [e["name"] for e in found["runs"]] == ["A", "B", "C"]
    ab, ac, bc = found["pairs"]
    hand = by_hand(y, a, b, 3, 250, 1)
    assert (ab["a"], ab["b"]) == ("A", "B")
    assert ab["diff"] == pytest.approx(hand["diff"]) and ab["a_better"] == hand["a_better"]
    assert (ab["low"], ab["high"]) == (pytest.approx(hand["low"]), pytest.approx(hand["high"]))
    assert (ac["diff"], ac["low"], ac["high"], ac["a_better"]) == (0, 0, 0, 0)
    assert bc["diff"] == pytest.approx(-ab["diff"])
    winner = found["runs"][0]["winner"]
    assert winner["row"] == "t1" and winner["config"]["lr"] == 0.01
    assert winner["test"]["macro_f1"] == pytest.approx(ab["a_macro_f1"])
    assert found["runs"][0]["budget"]["epochs"] == 4 and found["runs"][0]["reference"]["model"] == "tfidf"
    text = format_comparison(found)
    assert f"A vs B (60 test rows, 250 paired resamples): macro-F1 {ab['a_macro_f1']:.4f}" in text
    assert "A vs C" in text and "= +0.0000, 95% interval [+0.0000, +0.0000]" in text
    assert "no clear difference" in text and "test macro-F1" in text
    json.dumps(found)  # what --json prints


def test_runs_on_different_test_sets_are_compared_without_the_paired_test(tmp_path):
    y, a, b = labelled(3)
    base = made_run(tmp_path, "base", y, a)
    fewer = made_run(tmp_path, "fewer", y[:-1], b[:-1])
    other_text = made_run(tmp_path, "other", y, b, texts=[f"text {i}" if i != 4 else "changed" for i in range(60)])
    relabelled = made_run(tmp_path, "relabelled", np.where(np.arange(60) == 9, (y + 1) % 3, y), b)
    assert paired_test(base, fewer) == {"why": "different test sets (60 and 59 rows): no paired test"}
    assert paired_test(base, other_text) == {"why": "different test sets (row 5's text differs): no paired test"}
    assert paired_test(base, relabelled) == {"why": "different test sets (row 10's label differs): no paired test"}
    (other_text / "predictions_test.csv").unlink()
    assert paired_test(base, other_text) == {"why": "other has no test predictions: no paired test"}
    found = compare_runs([base, fewer])
    assert "A vs B: different test sets (60 and 59 rows): no paired test" in format_comparison(found)
    assert found["runs"][1]["winner"]["test"]["macro_f1"] is not None  # the figures are still side by side


def test_a_confirmed_winner_shows_its_confirmation_mean_and_std(tmp_path):
    y, a, b = labelled(8)
    run_a, run_b = made_run(tmp_path, "ra", y, a, confirm=True), made_run(tmp_path, "rb", y, b)
    found = compare_runs([run_a, run_b], resamples=50)
    winner = found["runs"][0]["winner"]
    row = results.leaderboard(run_a).set_index("trial_id").loc["t1"]
    assert winner["trial_id"] == "c1" and winner["row"] == "t1"
    assert winner["confirmed"] == {"trial_id": "t1", "mean": pytest.approx(0.6), "std": pytest.approx(row.confirm_std),
                                   "runs": 2}  # fmt: skip
    assert found["runs"][1]["winner"]["confirmed"] is None
    line = next(x for x in format_comparison(found).splitlines() if x.startswith("confirmed"))
    assert f"0.6000 ± {row.confirm_std:.4f} (2 seeds)" in line and line.rstrip().endswith("-")
    assert found["runs"][0]["budget"]["trials"] == 4 and found["runs"][0]["budget"]["epochs"] == 8


def test_options_that_differ_are_named(tmp_path):
    y, a, _ = labelled(4)
    run_a, run_b = made_run(tmp_path, "ra", y, a), made_run(tmp_path, "rb", y, a)
    info = json.loads((run_b / "run.json").read_text())
    info["spec"]["num_samples"] = 8
    write_run_info(run_b, info)
    found = compare_runs([run_a, run_b], resamples=50)
    assert found["differs"]["job"] == {"num_samples": ["2", "8"]}
    assert found["differs"]["config"] == {}
    assert "  num_samples: A 2, B 8" in format_comparison(found)


def test_a_damaged_predictions_file_is_one_line_naming_it(tmp_path):
    y, a, _ = labelled(5)
    run_a, run_b = made_run(tmp_path, "ra", y, a), made_run(tmp_path, "rb", y, a)
    frame = pd.read_csv(run_b / "predictions_test.csv")
    frame.loc[0, "predicted"] = "sideways"
    frame.to_csv(run_b / "predictions_test.csv", index=False)
    with pytest.raises(ConfigError, match=r"rb/predictions_test.csv: damaged .*'sideways' is not one of"):
        compare_runs([run_a, run_b])
    with pytest.raises(ConfigError, match="two runs or more"):
        compare_runs([run_a])


def sentune(*args: str) -> subprocess.CompletedProcess:
    """The command line, in a process of its own (its console logger stays there)."""
    return subprocess.run([sys.executable, "-m", "sentune.cli", *args], capture_output=True, text=True, timeout=120)


def test_the_compare_command_prints_the_comparison_and_json(tmp_path):
    y, a, b = labelled(6)
    run_a, run_b = made_run(tmp_path, "ra", y, a), made_run(tmp_path, "rb", y, b)
    out = sentune("compare", str(run_a), str(run_b), "--resamples", "100")
    assert out.returncode == 0, out.stderr
    assert f"A: {run_a}" in out.stdout and "A vs B (60 test rows, 100 paired resamples)" in out.stdout
    out = sentune("compare", str(run_a), str(run_b), "--json", "--seed", "3")
    found = json.loads(out.stdout)
    point = f1_score(y, a, average="macro") - f1_score(y, b, average="macro")
    assert found["seed"] == 3 and found["resamples"] == 2000 and found["pairs"][0]["diff"] == pytest.approx(point)
    out = sentune("compare", str(run_a))
    assert (out.returncode, out.stderr.strip()) == (2, "sentune: error: compare: give two runs or more")


# ---- a run's own report ----


def test_the_winner_against_its_baseline_and_the_reference_by_figures(tmp_path):
    y, a, _ = labelled(7)
    run = made_run(tmp_path, "run", y, a, baseline=True)
    found = winner_against(run, resamples=300)
    best_f1 = f1_score(y, a, labels=[0, 1, 2], average="macro")
    assert found["best"]["macro_f1"] == pytest.approx(best_f1)
    assert found["best"]["low"] < best_f1 < found["best"]["high"]
    base, ref = found["items"]
    assert base["against"] == "best baseline t0" and base["diff"] == pytest.approx(best_f1 - 0.41)
    assert base["why"] == "no paired test: the run keeps test predictions of its best model only"
    assert base["inside"] == (found["best"]["low"] <= 0.41 <= found["best"]["high"])
    assert ref["diff"] == pytest.approx(best_f1 - 0.55) and "reference.json holds its figures" in ref["why"]
    page = results.write_report(run).read_text()
    assert '<h2 id="better">Is the winner better?</h2>' in page
    gap = f"{best_f1 - 0.41:.4f} above it"
    assert f"best baseline t0: test macro-F1 0.4100, the best is {gap}" in page and "95% bootstrap interval" in page
    # without baselines and reference: only the best's interval
    bare = made_run(tmp_path, "bare", y, a, reference=False)
    assert winner_against(bare)["items"] == []


# ---- real sweeps ----


@pytest.fixture(scope="module")
def other_sweep(ray_local, sst_dir, tmp_path_factory):
    """A second real sweep on the same data with another lr (one trial): a different, weaker winner."""
    from sentune.tuning import run_sweep

    job = make_job(sst_dir, tmp_path_factory.mktemp("other"), search_space={"lr": {"grid": [1.0e-4]}}, num_samples=1)
    return run_sweep(job, run_id="r2", progress="quiet")


@pytest.mark.slow
def test_compare_real_runs_with_the_hand_figures_and_against_itself(tiny_sweep, other_sweep):
    found = compare_runs([tiny_sweep.run_dir, other_sweep.run_dir, tiny_sweep.run_dir], resamples=500, seed=2)
    ab, ac, _ = found["pairs"]
    frames = [pd.read_csv(r / "predictions_test.csv", dtype=str) for r in (tiny_sweep.run_dir, other_sweep.run_dir)]
    names = json.loads((tiny_sweep.run_dir / "run.json").read_text())["label_names"]
    ids = {str(n): i for i, n in enumerate(names)}
    y = frames[0].label.map(ids).to_numpy()
    a, b = (f.predicted.map(ids).to_numpy() for f in frames)
    assert (a != b).any()  # the two winners label the test rows differently
    hand = by_hand(y, a, b, len(names), 500, 2)
    assert ab["rows"] == len(y) == 80
    assert ab["diff"] == pytest.approx(hand["diff"]) and ab["a_better"] == hand["a_better"]
    assert (ab["low"], ab["high"]) == (pytest.approx(hand["low"]), pytest.approx(hand["high"]))
    assert (ac["diff"], ac["low"], ac["high"]) == (0, 0, 0)
    runs = found["runs"]
    assert runs[0]["winner"]["config"]["lr"] != runs[1]["winner"]["config"]["lr"]
    assert runs[1]["winner"]["test"]["macro_f1"] == pytest.approx(hand["diff"] * -1 + ab["a_macro_f1"])
    assert found["differs"]["config"]["lr"] == [json.dumps(runs[0]["winner"]["config"]["lr"]), "0.0001",
                                                json.dumps(runs[0]["winner"]["config"]["lr"])]  # fmt: skip
    assert "search_space.lr.grid" in found["differs"]["job"]
    assert runs[1]["reference"]["test"]["macro_f1"] is not None and runs[1]["budget"]["epochs"] >= 1
    page = (other_sweep.run_dir / "report.html").read_text()
    assert "Is the winner better?" in page and "reference model tfidf" in page
