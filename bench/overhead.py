"""Per-trial overhead of the service against the same training loop in a bare Ray Tune function trainable.

Both runs use one local Ray session, the same prepared data, the same trials (a grid of lrs, FIFO, same
epochs) and the same concurrency. The service runs each trial as a Ray Train TorchTrainer (Train V2)
behind Tune and writes Parquet; the bare run calls ``fit`` inside a Tune function and ``tune.report``s.

    python bench/overhead.py [--trials 4] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rows", type=int, default=600)
    args = ap.parse_args()

    import ray
    from ray import tune

    from conftest import synthetic_rows, write_sst_file
    from sentune.data import DataConfig, load_splits
    from sentune.spec import parse_job
    from sentune.trainables import llama_torch as lt
    from sentune.tuning import init_ray, run_sweep

    tmp = Path(tempfile.mkdtemp(prefix="sentune-bench-"))
    write_sst_file(tmp / "train.txt", synthetic_rows(args.rows, 1))
    write_sst_file(tmp / "dev.txt", synthetic_rows(args.rows // 4, 2))
    lrs = [3e-3 * (0.5**i) for i in range(args.trials)]
    fixed = {"backbone": "random:tiny", "option": "finetune", "epochs": args.epochs, "batch_size": 16, "max_len": 24}
    init_ray()
    concurrency = max(1, int(ray.cluster_resources()["CPU"]))

    spec = parse_job(
        dict(
            name="bench-overhead",
            trainable="llama_torch",
            data={"train": str(tmp / "train.txt"), "dev": str(tmp / "dev.txt")},
            search_space={"lr": {"grid": lrs}},
            params=fixed,
            search={"algorithm": "grid"},
            scheduler={"type": "fifo"},
            resources={"cpus": 1, "max_concurrent_trials": concurrency},
            storage_path=str(tmp / "results"),
        )
    )
    t0 = time.perf_counter()
    summary = run_sweep(spec)
    service_s = time.perf_counter() - t0

    splits = load_splits(DataConfig(train=tmp / "train.txt", dev=tmp / "dev.txt"))
    data_ref = ray.put(lt.prepare(lt.LlamaTorchParams(**fixed), splits))
    refs = [data_ref]

    def bare(config):
        import torch

        torch.set_num_threads(1)
        lt.fit(lt.LlamaTorchParams(**config), ray.get(refs[0]), lt.LoopContext(report=lambda m, s: tune.report(m)))

    t0 = time.perf_counter()
    grid = tune.Tuner(
        tune.with_resources(bare, {"cpu": 1}),
        param_space={**fixed, "lr": tune.grid_search(lrs)},
        tune_config=tune.TuneConfig(metric="val_macro_f1", mode="max", max_concurrent_trials=concurrency),
        run_config=tune.RunConfig(storage_path=str(tmp / "bare"), verbose=0),
    ).fit()
    bare_s = time.perf_counter() - t0
    import pandas as pd

    epochs = pd.read_parquet(summary.run_dir / "epochs.parquet")
    first_service = epochs.loc[epochs.epoch == 1, "time_total_s"].mean()
    per_epoch_service = epochs.groupby("trial_id").time_total_s.apply(lambda t: t.diff().mean()).mean()
    bare_frames = [r.metrics_dataframe for r in grid]
    first_bare = sum(f.time_total_s.iloc[0] for f in bare_frames) / len(bare_frames)
    per_epoch_bare = sum(f.time_total_s.diff().mean() for f in bare_frames) / len(bare_frames)

    n = args.trials
    print(f"trials={n} epochs={args.epochs} rows={args.rows} concurrency={concurrency} cpus={os.cpu_count()}")
    print(f"service (TorchTrainer per trial + Parquet + evaluation): {service_s:7.1f} s  ({service_s / n:.1f} s/trial)")
    print(f"bare Ray Tune function trainable, same loop:             {bare_s:7.1f} s  ({bare_s / n:.1f} s/trial)")
    print(
        f"ratio service/bare: {service_s / bare_s:.2f}x; "
        f"extra per trial: {(service_s - bare_s) / n * concurrency:.1f} s "
        f"of wall time per concurrent slot"
    )
    print(
        f"time to a trial's first result: service {first_service:.1f} s, bare {first_bare:.1f} s "
        f"(ratio {first_service / first_bare:.1f}x); each further epoch: service {per_epoch_service:.2f} s, "
        f"bare {per_epoch_bare:.2f} s"
    )
    print(f"run folder: {summary.run_dir}")
    ray.shutdown()


if __name__ == "__main__":
    main()
