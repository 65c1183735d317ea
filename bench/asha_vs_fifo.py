"""ASHA against FIFO at the same num_samples and seed, and the two ways sentune keeps ASHA's winner: sweep wall
time, epochs trained, best val macro-F1 and its test figure, and whether FIFO's winner survived.

Runs one job on one local Ray session, changing only the scheduler (the search algorithm's seed fixes the
sampled configs, so every variant tries the same trials), over ``--seeds`` seeds of the job (its seed, +1, ...):

* ``fifo``: every trial to the end;
* ``asha``: the job's ASHA;
* ``second``: ASHA with ``second_chance: {budget: 0.25}`` (stopped trials that could still win go on);
* ``forecast``: ASHA with ``promote_on: forecast`` (rungs compare learning-curve forecasts);
* ``both``: forecast promotion and second chances together.

    python bench/asha_vs_fifo.py [JOB.yaml] [--seeds 3]   # default: tune_jobs/demo.yaml, 1 seed
    python bench/asha_vs_fifo.py --smoke     # a tiny job (random-init LLaMA, 160 rows, 4 trials x 2 epochs)

The wall time is the sweep's (``Tuner.fit`` start to end, plus the second chances); data preparation and the
evaluation after it are the same for all and printed apart. "FIFO's winner survived": the config FIFO crowned
was trained to its last epoch in that variant too. Last line (means over the seeds):
``asha_vs_fifo: asha_wall_s=.. fifo_wall_s=.. asha_epochs=.. fifo_epochs=.. asha_best=.. fifo_best=..
second_wall_s=.. second_best=.. forecast_wall_s=.. forecast_best=.. both_wall_s=.. both_best=..``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")


def smoke_job(root: Path) -> dict:
    """A job whose sweep takes seconds: a random-init tiny LLaMA fine-tuned on 160 synthetic rows, 4 lrs
    drawn at random, up to 2 epochs each, no reference model."""
    from conftest import synthetic_rows, write_sst_file

    sizes = (("train", 160, 1), ("dev", 40, 2), ("test", 40, 3))
    data = {name: str(write_sst_file(root / f"{name}.txt", synthetic_rows(n, seed))) for name, n, seed in sizes}
    return {
        "name": "smoke",
        "trainable": "llama_torch",
        "data": data,
        "search_space": {"lr": {"loguniform": [1.0e-4, 1.0e-2]}},
        "params": {"backbone": "random:tiny", "option": "finetune", "epochs": 2, "batch_size": 16, "max_len": 24},
        "search": {"algorithm": "random"},
        "scheduler": {
            "type": "asha",
            "metric": "val_macro_f1",
            "mode": "max",
            "grace_period": 1,
            "reduction_factor": 2,
        },
        "num_samples": 4,
        "resources": {"cpus": 1, "workers_per_trial": 1},
        "reference": False,
        "seed": 3,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("job", nargs="?", default="tune_jobs/demo.yaml")
    ap.add_argument("--storage", default="results/bench")
    ap.add_argument("--smoke", action="store_true", help="a tiny built-in job instead of JOB, in a temporary folder")
    ap.add_argument("--seeds", type=int, default=1, help="seeds of the job (its seed, +1, ...), means printed")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="which to run (fifo and asha always run)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sentune-asha-fifo-")) if args.smoke else None
    try:
        compare(args, tmp)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


VARIANTS = {  # name -> what it changes in the job's scheduler
    "fifo": {"type": "fifo"},
    "asha": {"type": "asha"},
    "second": {"type": "asha", "second_chance": {"budget": 0.25}},
    "forecast": {"type": "asha", "promote_on": "forecast"},
    "both": {"type": "asha", "promote_on": "forecast", "second_chance": {"budget": 0.25}},
}


def one_sweep(raw: dict, kind: str, seed: int, args) -> dict:
    import json

    import pandas as pd

    from sentune.spec import parse_job
    from sentune.tuning import run_sweep

    scheduler = {**raw.get("scheduler", {}), **VARIANTS[kind]}
    if kind == "fifo":
        scheduler = {k: v for k, v in scheduler.items() if k in ("type", "metric", "mode")}
    spec = parse_job({**raw, "name": f"{raw['name']}-{kind}-s{seed}", "storage_path": args.storage, "seed": seed,
                      "scheduler": scheduler, "confirm": None}, source=args.job)  # fmt: skip
    summary = run_sweep(spec, progress="quiet")
    trials = pd.read_parquet(summary.run_dir / "trials.parquet")
    t = summary.timings
    best = trials.loc[trials.peak_metric.idxmax()]
    tuned = [c for c in trials.columns if c.startswith("config/") and trials[c].astype(str).nunique() > 1]
    key = lambda r: json.dumps({c: str(r[c]) for c in tuned}, sort_keys=True)  # noqa: E731
    return {
        "scheduler": kind, "seed": seed, "trials": len(trials), "epochs_trained": int(trials.epochs_run.sum()),
        "stopped_early": int((trials.status == "stopped_early").sum()),
        "best_val_macro_f1": float(best.peak_metric),
        "test_macro_f1": (summary.test_figures or {}).get("macro_f1"),
        "sweep_wall_s": round(t["fit_s"] + t.get("confirm_s", 0.0), 1),  # + the second chances (no confirm here)
        "prepare_s": round(t["prepare_s"], 1), "evaluate_export_s": round(t["finish_s"], 1),
        "_best": key(best), "_completed": {key(r) for _, r in trials[trials.status == "completed"].iterrows()},
        "_configs": sorted(key(r) for _, r in trials.iterrows()),
    }  # fmt: skip


def compare(args, smoke_root: Path | None) -> None:
    import pandas as pd
    import yaml

    if smoke_root is not None:
        raw, args.storage, args.job = smoke_job(smoke_root), str(smoke_root / "results"), "<smoke job>"
    else:
        with open(args.job, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    kinds = ["fifo", "asha"] + (
        [] if args.smoke else [k for k in args.variants.split(",") if k in VARIANTS and k not in ("fifo", "asha")]
    )
    if not args.smoke:  # Ray's and the trials' first-use costs (actors importing torch), paid before any is timed
        warm = {**raw, "num_samples": 1, "params": {**raw.get("params", {}), "epochs": 1}, "reference": False}
        one_sweep(warm, "fifo", int(raw.get("seed", 0)), args)
    rows = []
    for i in range(args.seeds):
        seed = int(raw.get("seed", 0)) + i
        runs = {kind: one_sweep(raw, kind, seed, args) for kind in kinds}
        fifo = dict(runs["fifo"])
        for run in runs.values():
            run["same_configs"] = run.pop("_configs") == fifo["_configs"]
            run["fifo_winner_survived"] = fifo["_best"] in run.pop("_completed")
            run.pop("_best")
            rows.append(run)
        frame = pd.DataFrame(rows)
        print(frame[frame.seed == seed].to_string(index=False), flush=True)
    frame = pd.DataFrame(rows)
    mean = frame.groupby("scheduler")[["sweep_wall_s", "epochs_trained", "best_val_macro_f1"]].mean()
    print("\nmeans over", args.seeds, "seed(s):")
    print(mean.round(4).to_string())
    a, f = mean.loc["asha"], mean.loc["fifo"]
    print(
        f"ASHA trained {a.epochs_trained / f.epochs_trained:.2f} of FIFO's epochs in "
        f"{a.sweep_wall_s / f.sweep_wall_s:.2f} of its sweep wall time; best val macro-F1 "
        f"{a.best_val_macro_f1:.4f} vs {f.best_val_macro_f1:.4f}"
    )
    for kind in kinds[2:]:
        m = mean.loc[kind]
        print(f"{kind}: {m.sweep_wall_s / f.sweep_wall_s:.2f} of FIFO's wall time, best {m.best_val_macro_f1:.4f} "
              f"({m.best_val_macro_f1 - f.best_val_macro_f1:+.4f} against FIFO)")  # fmt: skip
    extra = "".join(f" {k}_wall_s={mean.loc[k].sweep_wall_s:.1f} {k}_best={mean.loc[k].best_val_macro_f1:.4f}"
                    for k in kinds[2:])  # fmt: skip
    print(
        f"asha_vs_fifo: asha_wall_s={a.sweep_wall_s:.1f} fifo_wall_s={f.sweep_wall_s:.1f} "
        f"asha_epochs={a.epochs_trained:.0f} fifo_epochs={f.epochs_trained:.0f} "
        f"asha_best={a.best_val_macro_f1:.4f} fifo_best={f.best_val_macro_f1:.4f}{extra}"
    )


if __name__ == "__main__":
    main()
