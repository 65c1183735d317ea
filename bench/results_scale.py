"""What one trial result costs the run's recorder when the record already holds 1k, 10k and 100k rows.

A result is a realistic row: ~40 metric keys (losses, accuracies, macro-F1, lr, grad norm, timings, the
per-class precision/recall/F1/prediction counts of 5 classes, ...), 6 config keys, Tune's own keys, and
the diagnostics tracker on, as in a sweep: 16 trials at a time, 50 epochs each. Three figures per size:

* ``2s``: ``RunRecorder.result`` with the production flush interval (2 s) at a sweep's pace (``--rate``
  results a second, 10 by default: a flush every 20 results; the clock is simulated, so the bench does not
  wait), a trial's end forcing a flush as it does in a sweep - what a sweep pays;
* ``forced``: a flush after every result - the worst case (a part and trials.parquet written each time;
  trials.parquet, a row per trial, is rewritten whole, so this grows with the number of trials);
* ``old``: the old recorder's flush, which rewrote the whole epochs.parquet (timed once per size): what
  the old recorder paid per result in the forced case, and per flush in the other.

No Ray. Takes a minute or two (``--smoke``: 1k rows only, fewer results timed, a few seconds). Ends with one line:
``results_scale: us_per_result_1k=.. us_per_result_10k=.. us_per_result_100k=..`` (the ``2s`` figures).
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sentune.results._recorder as _recorder  # noqa: E402
from sentune.diagnostics import DiagnosticsConfig, DiagnosticsTracker  # noqa: E402
from sentune.results import RunRecorder  # noqa: E402
from sentune.results._store import STATUS_RUNNING, rows_table, write_parquet, write_table  # noqa: E402

CLASSES = ["very_negative", "negative", "neutral", "positive", "very_positive"]
EPOCHS = 50


def config(i: int) -> dict:
    rng = random.Random(i)
    return {
        "lr": 10 ** rng.uniform(-5, -2),
        "batch_size": rng.choice([16, 32, 64]),
        "hidden": rng.choice([64, 128]),
        "dropout": rng.uniform(0, 0.5),
        "epochs": EPOCHS,
        "optimizer": rng.choice(["adam", "adamw"]),
    }


def result(trial: int, epoch: int) -> dict:
    rng = random.Random(trial * 1000 + epoch)
    m = {
        "epoch": epoch,
        "training_iteration": epoch,
        "time_total_s": 3.0 * epoch,
        "time_this_iter_s": 3.0,
        "done": False,
        "trial_id": f"t{trial}",
        "date": "2026-01-01_00-00-00",
        "timestamp": 1.7e9,
        "train_loss": rng.uniform(0.2, 1.5),
        "val_loss": rng.uniform(0.3, 1.6),
        "train_acc": rng.uniform(0.3, 1),
        "val_acc": rng.uniform(0.3, 0.9),
        "val_macro_f1": rng.uniform(0.2, 0.8),
        "val_weighted_f1": rng.random(),
        "lr": 1e-3,
        "grad_norm": rng.uniform(0.5, 3),
        "epoch_seconds": 3.0,
        "samples_per_second": 2800.0,
        "train_samples": 8544,
        "val_samples": 1101,
        "node_id": "a1b2c3d4e5f6",
        "worker_pid": 4242,
        "peak_memory_mb": 812.5,
        "throughput_tokens": 1.2e5,
        "val_log_loss": rng.random(),
        "val_top2_acc": rng.random(),
    }
    for n in CLASSES:
        m[f"val_precision/{n}"] = rng.random()
        m[f"val_recall/{n}"] = rng.random()
        m[f"val_f1/{n}"] = rng.random()
        m[f"val_pred_count/{n}"] = rng.randint(100, 300)
    return m


class Feeder:
    """Trials of 50 epochs, a few at a time, as a sweep reports them."""

    def __init__(self, rec: RunRecorder, concurrent: int = 16):
        self.rec, self.concurrent, self.next_trial, self.epoch = rec, concurrent, 0, {}

    def step(self) -> None:
        while len(self.epoch) < self.concurrent:
            self.epoch[self.next_trial] = 0
            self.rec.trial(f"t{self.next_trial}", config(self.next_trial))
            self.next_trial += 1
        trial = random.choice(list(self.epoch))
        self.epoch[trial] += 1
        cfg = config(trial)
        self.rec.result(f"t{trial}", cfg, result(trial, self.epoch[trial]))
        if self.epoch[trial] == EPOCHS:
            self.rec.completed(f"t{trial}", cfg)
            del self.epoch[trial]


def rows(rec: RunRecorder) -> int:
    return sum(len(r) for r in rec.rows.values())


TRIALS_WRITE_S = [0.0]  # time spent writing trials.parquet


def _timed_write_trials(path: Path, trials: list[dict]) -> None:
    t0 = time.perf_counter()
    _write_trials(path, trials)
    TRIALS_WRITE_S[0] += time.perf_counter() - t0


_write_trials = _recorder.write_trial_rows
_recorder.write_trial_rows = _timed_write_trials  # the recorder's own writes of trials.parquet, timed


def timed(feeder: Feeder, results: int, *, every: int) -> tuple[float, float]:
    """Microseconds per result over ``results`` results, the recorder's flush interval passing every
    ``every`` results (1: a flush each); and of them, those spent writing trials.parquet."""
    rec = feeder.rec
    TRIALS_WRITE_S[0] = 0.0
    t0 = time.perf_counter()
    for i in range(results):
        rec.flush_every_s = 0.0 if (i + 1) % every == 0 else math.inf
        feeder.step()
    rec.flush_every_s = 2.0
    return (time.perf_counter() - t0) / results * 1e6, TRIALS_WRITE_S[0] / results * 1e6


def old_flush_us(rec: RunRecorder, out: Path, reps: int) -> float:
    """The old RunRecorder.flush: every row of the run, written again."""
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        statuses = {tid: t["status"] for tid, t in rec.trials.items()}
        every = [dict(r, trial_status=statuses.get(tid, STATUS_RUNNING)) for tid, rs in rec.rows.items() for r in rs]
        write_parquet(out / "epochs.parquet", every)
        write_parquet(out / "trials.parquet", list(rec.trials.values()))
        best = min(best, time.perf_counter() - t0)
    return best * 1e6


def tracker() -> DiagnosticsTracker:
    return DiagnosticsTracker(DiagnosticsConfig(), [139, 289, 229, 279, 165], CLASSES)


def recorder(run_dir: Path, **kw) -> RunRecorder:
    return RunRecorder(
        run_dir,
        job="bench",
        run_id="r",
        metric="val_macro_f1",
        mode="max",
        max_epochs=EPOCHS,
        tracker=tracker(),
        flush_every_s=2.0,
        **kw,
    )


def prepare(run_dir: Path, n: int) -> None:
    """A run folder whose record holds ``n`` rows (trials of 50 epochs, all completed), as RunRecorder writes
    them: one trial recorded for real, its rows and trial row stamped for the others (fast)."""
    one = recorder(run_dir.parent / f"{run_dir.name}-template")
    one.flush_every_s = math.inf
    for e in range(1, EPOCHS + 1):
        one.result("t0", config(0), result(0, e))
    one.completed("t0", config(0))
    template, trial_row = one.rows["t0"], one.trials["t0"]
    every, trials, seq = [], [], 0
    for t in range(math.ceil(n / EPOCHS)):
        cfg = {f"config/{k}": v for k, v in config(t).items()}
        for row in template[: n - len(every)]:
            seq += 1
            every.append({**row, **cfg, "trial_id": f"t{t}", "_seq": seq, "trial_status": "completed"})
        trials.append({**trial_row, **cfg, "trial_id": f"t{t}"})
    (run_dir / "epochs.parquet").mkdir(parents=True)
    write_table(run_dir / "epochs.parquet" / "part-000001.parquet", rows_table(every))
    write_table(run_dir / "trials.parquet", rows_table(trials))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--rate", type=float, default=10.0, help="results a second in the 2 s case")
    ap.add_argument("--results", type=int, default=600, help="results timed at the 2 s interval, per size")
    ap.add_argument("--forced", type=int, default=150, help="results timed with a flush each, per size")
    ap.add_argument("--no-old", action="store_true", help="skip timing the old whole-file rewrite")
    ap.add_argument("--smoke", action="store_true", help="1k rows, 60 + 20 results timed")
    args = ap.parse_args()
    if args.smoke:
        args.sizes, args.results, args.forced = "1000", 60, 20
    random.seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="sentune-results-scale-"))
    every = max(1, round(2.0 * args.rate))
    table, t_start = [], time.perf_counter()
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            run = tmp / f"run{size}"
            prepare(run, size)
            t0 = time.perf_counter()
            rec = RunRecorder.resume(
                run,
                job="bench",
                run_id="r",
                metric="val_macro_f1",
                mode="max",
                max_epochs=EPOCHS,
                tracker=tracker(),
                flush_every_s=2.0,
            )
            resume_s = time.perf_counter() - t0
            feeder = Feeder(rec)
            feeder.next_trial = len(rec.trials)
            start, trials = rows(rec), len(rec.trials)
            (prod, prod_trials), (forced, forced_trials) = (
                timed(feeder, args.results, every=every),
                timed(feeder, args.forced, every=1),
            )
            old = None if args.no_old else old_flush_us(rec, tmp / "old", reps=3 if size <= 10_000 else 1)
            t0 = time.perf_counter()
            rec.close()
            close_s = time.perf_counter() - t0
            table.append((size, start, trials, prod, prod_trials, forced, forced_trials, old, resume_s, close_s))
            print(
                f"  {start:>7} rows: 2s {prod:8.0f} us  forced {forced:8.0f} us  "
                f"old {'-' if old is None else f'{old:.0f}'} us",
                flush=True,
            )
            shutil.rmtree(run)
        print(
            f"\nus per RunRecorder.result, by rows already recorded ({args.rate:g} results/s, a flush every "
            f"{every} results in the 2 s case; 16 trials running); {time.perf_counter() - t_start:.0f} s in all"
        )
        print("(in brackets: of it, writing trials.parquet, a row per trial, rewritten whole on each flush)")
        print(
            f"{'rows':>8} {'trials':>7} {'2s interval':>18} {'forced flush':>20} {'old, forced':>12} "
            f"{'resume s':>9} {'close s':>8}"
        )
        for _size, n, trials, prod, prod_t, forced, forced_t, old, resume_s, close_s in table:
            print(
                f"{n:>8} {trials:>7} {prod:>9.0f} ({prod_t:>5.0f}) {forced:>11.0f} ({forced_t:>5.0f}) "
                f"{'-' if old is None else f'{old:.0f}':>12} {resume_s:>9.2f} {close_s:>8.2f}"
            )
        label = {1000: "1k", 10000: "10k", 100000: "100k"}
        keys = [(label.get(row[0], str(row[0])), row[3], row[5]) for row in table]
        print("results_scale_forced: " + " ".join(f"us_per_result_{k}={f:.0f}" for k, _, f in keys))
        print("results_scale: " + " ".join(f"us_per_result_{k}={p:.0f}" for k, p, _ in keys))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
