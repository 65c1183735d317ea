"""Does the service beat hand tuning for the same compute? Hand-picked configs against ASHA + TPE.

Part 1 (the full en-movie-5, frozen SmolLM2 features computed once and cached): the ten hand-picked configs
of ``bench/jobs/quality_manual.yaml`` (the tries people make by hand: lower the lr, more dropout, weight
decay, halve the batch, ...), run as baselines at their own epochs, against the ASHA + multivariate-TPE
sweep of ``bench/jobs/quality_sweep.yaml`` given at most the same total epochs (``max_total_epochs``).
Part 2 (``en-movie-2-imbalanced``, 3.4 negatives per positive): a cross-entropy sweep against a focal-loss
sweep (alpha and gamma searched), the same budget each.

    python bench/tuning_quality.py [--storage results/bench] [--part 1|2|both]
    python bench/tuning_quality.py --smoke   # part 1 small: a random-init backbone, 300 rows, 3 trials a side

For each side it prints the total epochs, the best dev macro-F1, that config's test macro-F1 and accuracy,
whether the winner collapsed (one predicted class on test, or a lasting collapse during training), and
the reference model's figures (TF-IDF + logistic regression on the same split). Last line:
``tuning_quality: manual_test=.. sweep_test=.. manual_epochs=.. sweep_epochs=.. reference_test=..``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

JOBS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jobs")


def _side(name: str, summary) -> dict:
    import pandas as pd

    from sentune.results import read_evaluations, read_reference, read_trials

    run = summary.run_dir
    trials = read_trials(run)
    best = read_evaluations(run)["best"]
    preds = pd.read_csv(run / "predictions_test.csv", keep_default_na=False)
    diagnostics = str(trials.set_index("trial_id").loc[best["trial_id"], "diagnostics"] or "")
    ref = read_reference(run) or {}
    return {
        "side": name,
        "trials": len(trials),
        "epochs": int(trials.epochs_run.sum()),
        "best_dev_macro_f1": round(best["dev"]["score"], 4),
        "test_macro_f1": round(best["test"]["macro_f1"], 4),
        "test_acc": round(best["test"]["acc"], 4),
        "collapsed": bool(preds.predicted.nunique() == 1 or "collapse" in diagnostics),
        "reference_dev": round(ref.get("dev", {}).get("macro_f1", float("nan")), 4),
        "reference_test": round(ref.get("test", {}).get("macro_f1", float("nan")), 4),
        "sweep_wall_s": round(summary.timings["fit_s"], 1),
        "run": str(run),
    }


def smoke_changes(raw: dict) -> dict:
    """The same job in seconds: features of a random-init tiny LLaMA instead of SmolLM2's, 300 / 100 / 100
    rows, 3 sampled trials (or the first 3 baselines)."""
    return {
        "data": {**raw["data"], "max_rows": {"train": 300, "dev": 100, "test": 100}},
        "params": {**raw["params"], "backbone": "random:tiny", "max_len": 32},
        "num_samples": min(3, raw.get("num_samples", 0)),
        **({"baselines": raw["baselines"][:3]} if raw.get("baselines") else {}),
    }


def _job(path: str, storage: str, *, smoke: bool = False, **changes):
    from sentune._yaml import read_yaml
    from sentune.spec import parse_job

    raw = read_yaml(path, "job file")
    return parse_job({**raw, **(smoke_changes(raw) if smoke else {}), "storage_path": storage, **changes}, source=path)


def _run(path: str, storage: str, *, smoke: bool = False, **changes):
    from sentune.tuning import run_sweep

    return run_sweep(_job(path, storage, smoke=smoke, **changes), progress="quiet")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--storage", default="results/bench")
    ap.add_argument("--part", choices=["1", "2", "both"], help="default: both (--smoke: 1)")
    ap.add_argument(
        "--smoke", action="store_true", help="jobs made small (see smoke_changes), in a temporary folder; part 1 only"
    )
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="sentune-quality-") if args.smoke else None
    try:
        if tmp is not None:  # every job parses, as it is and made small, the part not run too
            for name in ("imbalanced_ce", "imbalanced_focal", "quality_manual", "quality_sweep"):
                _job(f"{JOBS}/{name}.yaml", tmp), _job(f"{JOBS}/{name}.yaml", tmp, smoke=True)
        compare(args.storage if tmp is None else tmp, args.part or ("1" if tmp else "both"), smoke=tmp is not None)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def compare(storage: str, part: str, *, smoke: bool) -> None:
    import pandas as pd

    pd.set_option("display.width", 200)
    t0 = time.perf_counter()
    last = ""
    if smoke:
        print("smoke: the jobs on a random-init tiny backbone, 300/100/100 rows, 3 trials (not the headings' sizes)")
    if part in ("2", "both"):
        t = time.perf_counter()
        rows = [_side(kind, _run(f"{JOBS}/imbalanced_{kind}.yaml", storage, smoke=smoke)) for kind in ("ce", "focal")]
        print("\nPart 2: en-movie-2-imbalanced (2,000 train rows), cross-entropy vs focal loss, 60 epochs each")
        print(pd.DataFrame(rows).drop(columns=["run"]).to_string(index=False))
        ce, focal = rows
        print(f"part 2 wall time {time.perf_counter() - t:.0f} s")
        print(
            f"imbalanced: ce_test={ce['test_macro_f1']} focal_test={focal['test_macro_f1']} "
            f"ce_collapsed={ce['collapsed']} focal_collapsed={focal['collapsed']} "
            f"reference_test={ce['reference_test']}"
        )
    if part in ("1", "both"):
        t = time.perf_counter()
        manual = _side("manual", _run(f"{JOBS}/quality_manual.yaml", storage, smoke=smoke))
        # at most the hand-tuned side's epochs: two trials run at once, so the budget stops one short
        sweep = _side(
            "sweep", _run(f"{JOBS}/quality_sweep.yaml", storage, smoke=smoke, max_total_epochs=manual["epochs"] - 1)
        )
        print("\nPart 1: the full en-movie-5, ten hand-picked configs vs ASHA + multivariate TPE, same epochs")
        print(pd.DataFrame([manual, sweep]).drop(columns=["run"]).to_string(index=False))
        print(f"part 1 wall time {time.perf_counter() - t:.0f} s")
        last = (
            f"tuning_quality: manual_test={manual['test_macro_f1']} sweep_test={sweep['test_macro_f1']} "
            f"manual_epochs={manual['epochs']} sweep_epochs={sweep['epochs']} reference_test={manual['reference_test']}"
        )
    print(f"bench wall time {time.perf_counter() - t0:.0f} s")
    if last:
        print(last)


if __name__ == "__main__":
    main()
