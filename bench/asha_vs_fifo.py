"""ASHA against FIFO at the same num_samples and seed: sweep wall time, epochs trained, best val macro-F1.

Runs one job twice on one local Ray session, changing only the scheduler (the search algorithm's
seed fixes the sampled configs, so both runs try the same trials).

    python bench/asha_vs_fifo.py [JOB.yaml]     # default: tune_jobs/demo.yaml
    python bench/asha_vs_fifo.py --smoke        # a tiny job (random-init LLaMA, 160 rows, 4 trials x 2 epochs)

The wall time is the sweep's (``Tuner.fit`` start to end); data preparation and the evaluation after
it are the same for both and printed apart. Last line:
``asha_vs_fifo: asha_wall_s=.. fifo_wall_s=.. asha_epochs=.. fifo_epochs=.. asha_best=.. fifo_best=..``.
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
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sentune-asha-fifo-")) if args.smoke else None
    try:
        compare(args, tmp)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def compare(args, smoke_root: Path | None) -> None:

    import pandas as pd
    import yaml

    from sentune.spec import parse_job
    from sentune.tuning import run_sweep

    if smoke_root is not None:
        raw, args.storage, args.job = smoke_job(smoke_root), str(smoke_root / "results"), "<smoke job>"
    else:
        with open(args.job, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    rows = []
    for kind in ("asha", "fifo"):
        spec = parse_job(
            {
                **raw,
                "name": f"{raw['name']}-{kind}",
                "storage_path": args.storage,
                "scheduler": {**raw.get("scheduler", {}), "type": kind},
                "confirm": None,  # the sweeps alone: confirmation runs come after either
            },
            source=args.job,
        )
        summary = run_sweep(spec)
        trials = pd.read_parquet(summary.run_dir / "trials.parquet")
        t = summary.timings
        rows.append(
            {
                "scheduler": kind,
                "trials": len(trials),
                "epochs_trained": int(trials.epochs_run.sum()),
                "stopped_early": int((trials.status == "stopped_early").sum()),
                "best_val_macro_f1": float(trials.peak_metric.max()),
                "sweep_wall_s": round(t["fit_s"], 1),
                "prepare_s": round(t["prepare_s"], 1),
                "evaluate_export_s": round(t["finish_s"], 1),
                "_configs": sorted(trials.config_json),
            }
        )
    same = rows[0].pop("_configs") == rows[1].pop("_configs")
    print(pd.DataFrame(rows).to_string(index=False))
    a, f = rows
    print(f"same sampled configs in both runs: {same}")
    print(
        f"ASHA trained {a['epochs_trained']}/{f['epochs_trained']} = {a['epochs_trained'] / f['epochs_trained']:.2f} "
        f"of FIFO's epochs in {a['sweep_wall_s'] / f['sweep_wall_s']:.2f} of its sweep wall time; best val macro-F1 "
        f"{a['best_val_macro_f1']:.4f} vs {f['best_val_macro_f1']:.4f}"
    )
    print(
        f"asha_vs_fifo: asha_wall_s={a['sweep_wall_s']} fifo_wall_s={f['sweep_wall_s']} "
        f"asha_epochs={a['epochs_trained']} fifo_epochs={f['epochs_trained']} "
        f"asha_best={a['best_val_macro_f1']:.4f} fifo_best={f['best_val_macro_f1']:.4f}"
    )


if __name__ == "__main__":
    main()
