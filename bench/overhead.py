"""Per-trial overhead of the service against the same training loop in a bare Ray Tune function trainable.

Both runs use one local Ray session, the same prepared data, the same trials (a grid of lrs, FIFO, same
epochs) and the same concurrency. The service runs each trial through its trial driver (Ray Train's
local mode for one worker) behind Tune and writes Parquet; the bare run calls ``fit`` inside a Tune
function and ``tune.report``s. The ratio compares the sweeps (``Tuner.fit`` start to end); the data
preparation and the service's evaluation after the sweep are printed apart. A trial's first result is
timed from when Tune started it (its slot opened) to when its first epoch's result reached the driver,
for both runs by the same results callback.

    python bench/overhead.py [--trials 4] [--epochs 3]
    python bench/overhead.py --smoke     # 2 trials x 2 epochs on 160 rows; its files removed afterwards

Last line: ``overhead: ratio=R first_result_s=S bare_first_result_s=B``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")


def first_results(run_dir: Path) -> tuple[float, float]:
    """(mean seconds from a trial's start to its first result, mean seconds per later epoch)."""
    import pandas as pd

    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    trials = pd.read_parquet(run_dir / "trials.parquet").set_index("trial_id")
    first = epochs[epochs.epoch == 1].set_index("trial_id").reported_at - trials.started_at
    later = epochs.sort_values("epoch").groupby("trial_id").reported_at.apply(lambda t: t.diff().mean())
    return float(first.mean()), float(later.mean())


def bare_sweep(tmp: Path, fixed: dict, lrs: list[float], concurrency: int) -> tuple[Path, float]:
    """The same trials in a bare Ray Tune function trainable that calls ``fit`` and ``tune.report``s; returns
    its record's folder and its sweep's seconds (``Tuner.fit``)."""
    import ray
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from sentune.data import DataConfig, load_splits
    from sentune.results import RunRecorder
    from sentune.trainables import llama_torch as lt
    from sentune.tuning._callback import RecordCallback

    splits = load_splits(DataConfig(train=tmp / "train.txt", dev=tmp / "dev.txt"))
    data_ref = ray.put(lt.prepare(lt.LlamaTorchParams(**fixed), splits))
    refs = [data_ref]

    def bare(config):
        import torch

        torch.set_num_threads(1)
        lt.fit(lt.LlamaTorchParams(**config), ray.get(refs[0]), lt.LoopContext(report=lambda m, s: tune.report(m)))

    bare_dir = tmp / "bare"
    recorder = RunRecorder(
        bare_dir, job="bare", run_id="r", metric="val_macro_f1", mode="max", max_epochs=fixed["epochs"]
    )
    t0 = time.perf_counter()
    grid = tune.Tuner(
        tune.with_resources(bare, {"cpu": 1}),
        param_space={**fixed, "lr": tune.grid_search(lrs)},
        tune_config=tune.TuneConfig(metric="val_macro_f1", mode="max", max_concurrent_trials=concurrency),
        # JsonLoggerCallback: the one Tune logger the service keeps (run_sweep turns the automatic ones off)
        run_config=tune.RunConfig(
            storage_path=str(bare_dir), callbacks=[RecordCallback(recorder), JsonLoggerCallback()], verbose=0
        ),
    ).fit()
    bare_s = time.perf_counter() - t0
    assert not grid.errors, grid.errors
    return bare_dir, bare_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--smoke", action="store_true", help="2 trials x 2 epochs on 160 rows, files removed")
    args = ap.parse_args()
    if args.smoke:
        args.trials, args.epochs, args.rows = 2, 2, 160

    import ray

    from conftest import synthetic_rows, write_sst_file
    from sentune.spec import parse_job
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
    service_total = time.perf_counter() - t0
    service_s = summary.timings["fit_s"]

    bare_dir, bare_s = bare_sweep(tmp, fixed, lrs, concurrency)

    first_service, per_epoch_service = first_results(summary.run_dir)
    first_bare, per_epoch_bare = first_results(bare_dir)
    n = args.trials
    t = summary.timings
    print(f"trials={n} epochs={args.epochs} rows={args.rows} concurrency={concurrency} cpus={os.cpu_count()}")
    print(f"service sweep (Tuner.fit):             {service_s:7.1f} s  ({service_s / n:.1f} s/trial)")
    print(f"bare Ray Tune function trainable sweep: {bare_s:7.1f} s  ({bare_s / n:.1f} s/trial)")
    print(
        f"service outside the sweep: data preparation {t['prepare_s']:.1f} s, evaluation + export + report "
        f"{t['finish_s']:.1f} s; whole run_sweep {service_total:.1f} s"
    )
    print(
        f"time from a trial's start to its first result: service {first_service:.1f} s, bare {first_bare:.1f} s; "
        f"each further epoch: service {per_epoch_service:.2f} s, bare {per_epoch_bare:.2f} s"
    )
    print(f"run folder: {summary.run_dir}")
    print(
        f"overhead: ratio={service_s / bare_s:.2f} first_result_s={first_service:.1f} "
        f"bare_first_result_s={first_bare:.1f}"
    )
    ray.shutdown()
    if args.smoke:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
