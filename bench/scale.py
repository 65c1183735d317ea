"""What the service costs on the driver as a sweep grows: the service against a bare Ray Tune function trainable.

A tiny model whose epochs are almost free (a random-init ``random:tiny`` LLaMA fine-tuned on 160 rows, 40 dev
and 40 test rows), a grid of N learning rates, ASHA up to 4 epochs (grace period 1, reduction factor 2),
2 trials at a time, for N = 20, 80 and 320. Both sides run in one process on one local Ray, size by size,
the order of the two sides alternating from one measurement to the next so the machine's noise hits both:

* the service: ``run_sweep`` of that job (its trial driver, the record, diagnostics, progress, stoppers,
  then the finish: reference model, evaluation, export, report);
* bare: a Tune function trainable with ``reuse_actors=True`` and Ray's own ``ASHAScheduler`` with the same
  settings, whose trial runs the same loop (the trainable's ``worker_context`` and ``fit``, a checkpoint on
  the reports that carry one) on the same prepared data, without the service's record, diagnostics or
  progress.

Per size it prints both sweeps' wall time (``Tuner.fit`` start to end), the ratio, the driver's extra
milliseconds per result, the finish's parts after the service's sweep and the driver's peak RSS while each
side ran. The finish's parts come from ``RunSummary.timings`` when it has them (``reference_s``,
``evaluate_s``, ``export_s``, ``report_s``); otherwise the bench times sentune's calls itself (the reference
model's fit, the evaluation task and the evaluation files, ``export_run``, ``write_report``), and says which.

    python bench/scale.py [--sizes 20,80,320] [--epochs 4] [--repeats 1]
    python bench/scale.py --smoke      # 4 trials x 1 epoch, well under a minute

Last line: ``scale: ratio_320=R finish_20_s=A finish_320_s=B peak_rss_mb=M`` (ratio and finish of the
largest size stand in for 320, and of the smallest for 20, when ``--sizes`` leaves those out).
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
# as run_sweep sets them for its process: set before either side runs, so both run with the same Tune loggers
# (none automatic) and output engine whichever goes first
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

METRIC = "val_macro_f1"
# the finish's parts in RunSummary.timings, when the service reports them
TIMING_PARTS = ("reference_s", "evaluate_s", "export_s", "report_s")
# otherwise the calls the bench times itself: part -> (module, name) of the functions counted in it
TIMED_CALLS = {
    "reference_s": [("sentune.reference", "fit_reference")],
    "evaluate_s": [
        ("sentune.tuning._tasks", "predict_on_cluster"),
        ("sentune.results", "write_evaluation"),
        ("sentune.results", "write_evaluations"),
        ("sentune.results", "write_seed_report"),
        ("sentune.results", "split_figures"),
    ],
    "export_s": [("sentune.results", "export_run")],
    "report_s": [("sentune.results", "write_report")],
}


class CallTimer:
    """Seconds spent in chosen sentune functions, by part: each function is replaced by a timing wrapper
    wherever a sentune module holds it (its own module and every ``from ... import`` of it). A call made
    inside another timed call is not counted again."""

    def __init__(self, calls: dict[str, list[tuple[str, str]]]):
        import importlib

        self.seconds: dict[str, float] = {}
        self.found: list[str] = []
        self._depth = 0
        for part, names in calls.items():
            for module, name in names:
                try:
                    original = getattr(importlib.import_module(module), name)
                except (ImportError, AttributeError):
                    continue  # not in this version of sentune: that part counts without it
                self._install(part, original)
                self.found.append(f"{module}.{name}")

    def _install(self, part: str, original) -> None:
        @functools.wraps(original)
        def timed(*args, **kwargs):
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - t0

        for module in [m for n, m in sys.modules.items() if n == "sentune" or n.startswith("sentune.")]:
            for attr, value in list(vars(module).items()):
                if value is original:
                    setattr(module, attr, timed)

    def reset(self) -> None:
        self.seconds = {}


class RssSampler:
    """The driver's peak resident memory (MB) while a block runs, sampled every 50 ms from /proc (or psutil)."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current_mb() -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:
            import psutil

            return psutil.Process().memory_info().rss / 2**20

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_mb = max(self.peak_mb, self.current_mb())

    def __enter__(self) -> RssSampler:
        self.peak_mb = self.current_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.current_mb())


@dataclass
class Side:
    """One sweep of one side: Tuner.fit's wall time, results reported, the driver's peak RSS."""

    fit_s: float
    results: int
    rss_mb: float
    finish: dict[str, float] = field(default_factory=dict)  # the service: its finish and the finish's parts
    finish_source: str = ""


def learning_rates(n: int) -> list[float]:
    """n lrs spread evenly in log space from 1e-4 to 1e-2: some learn, some do not, so ASHA cuts."""
    return [10 ** (-4 + 2 * i / max(1, n - 1)) for i in range(n)]


def params(epochs: int) -> dict:
    return {
        "backbone": "random:tiny",
        "option": "finetune",
        "epochs": epochs,
        "batch_size": 16,
        "max_len": 24,
        "seed": 1,
    }


def write_data(root: Path, rows: int) -> dict[str, str]:
    from conftest import synthetic_rows, write_sst_file

    root.mkdir(parents=True, exist_ok=True)
    sizes = {"train": (rows, 1), "dev": (max(8, rows // 4), 2), "test": (max(8, rows // 4), 3)}
    return {
        name: str(write_sst_file(root / f"{name}.txt", synthetic_rows(n, seed))) for name, (n, seed) in sizes.items()
    }


def service_sweep(n: int, epochs: int, concurrency: int, data: dict, storage: Path, timer: CallTimer) -> Side:
    from sentune.results import read_trials
    from sentune.spec import parse_job
    from sentune.tuning import run_sweep

    spec = parse_job(
        dict(
            name=f"scale-{n}",
            trainable="llama_torch",
            data=data,
            search_space={"lr": {"grid": learning_rates(n)}},
            params=params(epochs),
            search={"algorithm": "grid"},
            scheduler={
                "type": "asha",
                "metric": METRIC,
                "mode": "max",
                "max_t": epochs,
                "grace_period": 1,
                "reduction_factor": 2,
            },
            resources={"cpus": 1, "workers_per_trial": 1, "max_concurrent_trials": concurrency},
            storage_path=str(storage),
            seed=0,
        )
    )
    timer.reset()
    t0 = time.perf_counter()
    with RssSampler() as rss:
        summary = run_sweep(spec, progress="quiet")
    total = time.perf_counter() - t0
    t = summary.timings
    finish_s = t.get("finish_s", total - t.get("prepare_s", 0.0) - t["fit_s"] - t.get("confirm_s", 0.0))
    if any(k in t for k in TIMING_PARTS):
        parts, source = {k: t[k] for k in TIMING_PARTS if k in t}, "RunSummary.timings"
    else:
        parts, source = dict(timer.seconds), "timed by the bench around sentune's calls"
    parts = {"finish_s": finish_s, **parts, "other_s": finish_s - sum(parts.values())}
    parts["after_fit_s"] = t.get("confirm_s", 0.0)  # the record's close (and confirmation runs, none here)
    parts["run_sweep_s"] = total
    epochs_run = int(read_trials(summary.run_dir).epochs_run.sum())
    return Side(t["fit_s"], epochs_run, rss.peak_mb, parts, source)


def bare_sweep(n: int, epochs: int, concurrency: int, data_ref, storage: Path) -> Side:
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler

    from sentune.trainables import fit, get_trainable

    entry = get_trainable("llama_torch")
    refs = [data_ref]  # a list, so Tune's pickling keeps the ObjectRef instead of the data

    def bare_trial(config: dict) -> None:
        import ray

        trainable = entry.load()

        def report(metrics: dict, save) -> None:  # as the service's trial reports: a checkpoint when one is due
            if save is None:
                tune.report(metrics)
                return
            with tempfile.TemporaryDirectory() as tmp:
                save(Path(tmp))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

        ctx = trainable.worker_context(world_size=1, rank=0, cpus=1, use_gpu=False, report=report)
        fit(trainable, entry.params_model(**config), ray.get(refs[0]), ctx)

    class Count(tune.Callback):
        results = 0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            Count.results += 1

    tuner = tune.Tuner(
        tune.with_resources(bare_trial, {"cpu": 1}),
        param_space={**params(epochs), "lr": tune.grid_search(learning_rates(n))},
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            scheduler=ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=1, reduction_factor=2),
            max_concurrent_trials=concurrency,
            reuse_actors=True,
        ),
        # the JSON logger: the one Tune logger the service keeps (Tune reads its results back from it)
        run_config=tune.RunConfig(
            name="tune", storage_path=str(storage), callbacks=[Count(), JsonLoggerCallback()], verbose=0
        ),
    )
    with RssSampler() as rss:
        t0 = time.perf_counter()
        grid = tuner.fit()
        fit_s = time.perf_counter() - t0
    if grid.errors:
        raise SystemExit(f"scale: the bare sweep of {n} trials failed: {grid.errors[0]}")
    return Side(fit_s, Count.results, rss.peak_mb)


def prepare_bare(data: dict, epochs: int):
    """The prepared data in the object store, made in a Ray task as the service makes it (the driver
    imports no framework)."""
    import ray

    from sentune.data import DataConfig, load_splits
    from sentune.trainables import get_trainable

    @ray.remote(num_cpus=1)
    def prepare(entry, values: dict):
        return entry.load().prepare(entry.params_model(**values), load_splits(DataConfig(**data)))

    return prepare.remote(get_trainable("llama_torch"), params(epochs))


def measure(args, data: dict, tmp: Path) -> dict[int, tuple[list[Side], list[Side]]]:
    """Every size ``--repeats`` times, each time both sides, the side going first alternating."""
    timer = CallTimer(TIMED_CALLS)
    data_ref = prepare_bare(data, args.epochs)
    if args.warmup:  # Tune's and the trainable's first-use costs, paid before either side is timed
        bare_sweep(2, 1, args.concurrency, data_ref, tmp / "warmup")
    runs: dict[int, tuple[list[Side], list[Side]]] = {}
    turn = 0
    for n in args.sizes:
        services, bares = runs.setdefault(n, ([], []))
        for r in range(args.repeats):
            order = ("service", "bare") if turn % 2 == 0 else ("bare", "service")
            turn += 1
            for side in order:
                where = tmp / f"{side}-{n}-{r}"
                if side == "service":
                    services.append(service_sweep(n, args.epochs, args.concurrency, data, where, timer))
                else:
                    bares.append(bare_sweep(n, args.epochs, args.concurrency, data_ref, where))
            s, b = services[-1], bares[-1]
            print(
                f"  {n} trials, run {r + 1} ({' then '.join(order)}): service {s.fit_s:.1f} s, bare {b.fit_s:.1f} s",
                flush=True,
            )
    return runs


def report(args, runs: dict[int, tuple[list[Side], list[Side]]]) -> None:
    med = statistics.median
    ratio, finish = {}, {}
    print(
        f"\n{args.epochs} epochs max (ASHA, grace 1, reduction 2), {args.concurrency} trials at a time, "
        f"{args.rows} train rows, {args.repeats} run(s) a size (medians), {os.cpu_count()} CPUs"
    )
    for n, (services, bares) in runs.items():
        s_fit, b_fit = med(x.fit_s for x in services), med(x.fit_s for x in bares)
        results = med(x.results for x in services)
        ratio[n] = s_fit / b_fit
        parts = {k: med(x.finish[k] for x in services) for k in services[0].finish}
        finish[n] = parts["finish_s"]
        shown = [k for k in parts if k not in ("finish_s", "after_fit_s", "run_sweep_s")]
        named = ", ".join(f"{k.removesuffix('_s')} {parts[k]:.2f} s" for k in shown)
        print(f"{n} trials ({results:.0f} results; bare {med(x.results for x in bares):.0f}):")
        print(
            f"  sweep (Tuner.fit): service {s_fit:.1f} s, bare {b_fit:.1f} s, ratio {ratio[n]:.2f}; "
            f"{(s_fit - b_fit) / max(1, results) * 1e3:+.0f} ms a result on the service's side"
        )
        print(
            f"  after the service's sweep: record closed {parts['after_fit_s']:.2f} s; "
            f"finish {parts['finish_s']:.2f} s ({named}); whole run_sweep {parts['run_sweep_s']:.1f} s"
        )
        print(f"  finish's parts: {services[0].finish_source}")
        print(
            f"  driver's peak RSS: service {max(x.rss_mb for x in services):.0f} MB, "
            f"bare {max(x.rss_mb for x in bares):.0f} MB"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    big, small = (320 if 320 in runs else max(runs)), (20 if 20 in runs else min(runs))
    if (big, small) != (320, 20):
        print(f"(stand-ins: ratio_320 and finish_320_s are of {big} trials, finish_20_s of {small})")
    print(
        f"scale: ratio_320={ratio[big]:.2f} finish_20_s={finish[small]:.2f} finish_320_s={finish[big]:.2f} "
        f"peak_rss_mb={peak:.0f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20,80,320", help="trial counts, comma-separated")
    ap.add_argument("--epochs", type=int, default=4, help="ASHA's max_t and each trial's epochs")
    ap.add_argument("--rows", type=int, default=160, help="train rows (dev and test: a quarter each)")
    ap.add_argument("--concurrency", type=int, default=2, help="trials at a time")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each side per size (medians printed)")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the untimed first bare sweep")
    ap.add_argument("--smoke", action="store_true", help="one tiny size: 4 trials x 1 epoch, no warm-up")
    args = ap.parse_args()
    if args.smoke:
        args.sizes, args.epochs, args.warmup = "4", 1, False
    args.sizes = [int(s) for s in args.sizes.split(",")]

    import ray

    from sentune.tuning import init_ray

    init_ray(num_cpus=max(args.concurrency, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="sentune-scale-") as tmp:
        runs = measure(args, write_data(Path(tmp) / "data", args.rows), Path(tmp))
    report(args, runs)
    ray.shutdown()


if __name__ == "__main__":
    main()
