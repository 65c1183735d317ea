"""ASHA against FIFO at the same num_samples and seed: total epochs trained and best val macro-F1.

Runs one job twice on one local Ray session, changing only the scheduler (the search algorithm's
seed fixes the sampled configs, so both runs try the same trials).

    python bench/asha_vs_fifo.py [JOB.yaml]     # default: tune_jobs/demo.yaml
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("job", nargs="?", default="tune_jobs/demo.yaml")
    ap.add_argument("--storage", default="results/bench")
    args = ap.parse_args()

    import pandas as pd
    import yaml

    from sentune.spec import parse_job
    from sentune.tuning import run_sweep

    raw = yaml.safe_load(open(args.job, encoding="utf-8"))
    rows = []
    for kind in ("asha", "fifo"):
        spec = parse_job(
            {
                **raw,
                "name": f"{raw['name']}-{kind}",
                "storage_path": args.storage,
                "scheduler": {**raw.get("scheduler", {}), "type": kind},
            },
            source=args.job,
        )
        t0 = time.perf_counter()
        summary = run_sweep(spec)
        wall = time.perf_counter() - t0
        trials = pd.read_parquet(summary.run_dir / "trials.parquet")
        configs = sorted(trials.config_json)
        rows.append(
            {
                "scheduler": kind,
                "trials": len(trials),
                "epochs_trained": int(trials.epochs_run.sum()),
                "stopped_early": int((trials.status == "stopped_early").sum()),
                "best_val_macro_f1": float(trials.peak_metric.max()),
                "wall_s": round(wall, 1),
                "_configs": configs,
            }
        )
    same = rows[0].pop("_configs") == rows[1].pop("_configs")
    print(pd.DataFrame(rows).to_string(index=False))
    a, f = rows
    print(f"same sampled configs in both runs: {same}")
    print(
        f"ASHA trained {a['epochs_trained']}/{f['epochs_trained']} = {a['epochs_trained'] / f['epochs_trained']:.2f} "
        f"of FIFO's epochs; best val macro-F1 {a['best_val_macro_f1']:.4f} vs {f['best_val_macro_f1']:.4f}"
    )


if __name__ == "__main__":
    main()
