"""One lstm_tf epoch at Weibo size under the service against the same loop run bare (CPU).

Weibo size: 108,000 train rows x 100 tokens, vocabulary 50,000, batch 256, the seed's model
(embedding 128, LSTM 128/64, dense 32); random token ids and labels (the speed does not depend on
them), 2,000 dev rows evaluated each epoch. Bare: ``lstm_tf.fit`` in this process, no Ray. Service:
the same prepared arrays through the object store, one Tune trial running sentune's trial driver
(Ray Train's local mode: the loop in the trial's own process, with all CPUs) with sentune's Parquet
callback. Both in one run; prints each epoch's time (the loop's own ``epoch_seconds``), the ratio, and
the service's time to its first result; the last line is
``lstm_epoch: ratio=R bare_epoch_s=B service_epoch_s=S first_result_s=F``.

    python bench/lstm_epoch.py [--rows 108000] [--epochs 1]
    python bench/lstm_epoch.py --smoke      # the smallest sizes: checks the bench runs (well under a minute)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

# the model and data sizes by mode: Weibo's, and the smallest that still runs every part
SIZES = {
    "weibo": dict(rows=108_000, dev_rows=2_000, max_len=100, vocab=50_000, embedding_dim=128, lstm_units=[128, 64],
                  dense_units=32, batch_size=256),
    "smoke": dict(rows=512, dev_rows=128, max_len=20, vocab=500, embedding_dim=16, lstm_units=[8, 8], dense_units=8,
                  batch_size=128),
}  # fmt: skip


def make_data(rows: int, dev_rows: int, max_len: int, vocab: int, seed: int = 0):
    import numpy as np

    from sentune.trainables import SplitArrays
    from sentune.trainables._lstm_data import LstmData

    rng = np.random.default_rng(seed)

    def split(n):
        lengths = rng.integers(max_len // 2, max_len + 1, size=n).astype(np.int32)
        x = rng.integers(2, vocab, size=(n, max_len)).astype(np.int32)
        x[np.arange(max_len)[None, :] >= lengths[:, None]] = 0  # padding at the end, as prepare() writes it
        return SplitArrays(x, rng.integers(0, 2, size=n).astype(np.int64), lengths)

    return LstmData(
        label_names=["negative", "positive"],
        splits={"train": split(rows), "dev": split(dev_rows)},
        vocab=[f"t{i}" for i in range(vocab)],
        max_len=max_len,
    )


def run_bare(params: dict, data, cpus: int) -> list[float]:
    """The loop alone in this process: each epoch's seconds."""
    from sentune.trainables import lstm_tf

    lstm_tf.make_strategy(1, cpus=cpus)
    bare = lstm_tf.fit(lstm_tf.LstmTfParams(**params), data, lstm_tf.LoopContext(cpus=cpus))
    return [h["epoch_seconds"] for h in bare.history]


def run_service(params: dict, data, cpus: int, epochs: int) -> tuple[list[float], float, float]:
    """The same loop as one trial of the service: (each epoch's seconds, the whole Tuner.fit's seconds,
    seconds from Tuner.fit's start to the first result)."""
    import pandas as pd
    import ray
    from ray import tune

    from sentune.results import RunRecorder
    from sentune.spec import FailureConfig
    from sentune.trainables import get_trainable
    from sentune.tuning import init_ray
    from sentune.tuning._callback import RecordCallback
    from sentune.tuning._trial import make_trial_driver

    init_ray(num_cpus=cpus)
    tmp = Path(tempfile.mkdtemp(prefix="sentune-bench-lstm-"))
    driver = make_trial_driver(
        get_trainable("lstm_tf"),
        ray.put(data),
        workers=1,
        cpus=cpus,
        gpus=0,
        storage_path=str(tmp / "train"),
        resume_root=str(tmp / "resume"),
        failure=FailureConfig(),
        job="bench-lstm",
    )
    recorder = RunRecorder(tmp, job="bench-lstm", run_id="r", metric="val_acc", mode="max", max_epochs=epochs)
    started = time.time()
    t0 = time.perf_counter()
    grid = tune.Tuner(
        driver,
        param_space=params,
        run_config=tune.RunConfig(name="tune", storage_path=str(tmp), callbacks=[RecordCallback(recorder)], verbose=0),
    ).fit()
    wall = time.perf_counter() - t0
    assert not grid.errors, grid.errors
    rows = pd.read_parquet(tmp / "epochs.parquet").sort_values("epoch")
    ray.shutdown()
    return rows.epoch_seconds.tolist(), wall, float(rows.reported_at.min() - started)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="the smallest sizes: checks that the bench runs")
    ap.add_argument("--rows", type=int, help="train rows (default: 108,000; --smoke: 512)")
    ap.add_argument("--dev-rows", type=int, help="dev rows (default: 2,000; --smoke: 128)")
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args(argv)
    size = dict(SIZES["smoke" if args.smoke else "weibo"])
    size["rows"] = args.rows or size["rows"]
    size["dev_rows"] = args.dev_rows or size["dev_rows"]
    params = dict(
        max_len=size["max_len"], vocab_size=size["vocab"], embedding_dim=size["embedding_dim"],
        lstm_units=size["lstm_units"], dense_units=size["dense_units"], batch_size=size["batch_size"],
        epochs=args.epochs, lr=1e-3, seed=0,
    )  # fmt: skip
    cpus = os.cpu_count() or 1
    rows = size["rows"]
    data = make_data(rows, size["dev_rows"], size["max_len"], size["vocab"])
    print(
        f"data: {rows} x {size['max_len']} train, {size['dev_rows']} dev, vocab {size['vocab']:,}, "
        f"batch {size['batch_size']}; {cpus} CPU cores"
    )
    t0 = time.perf_counter()
    bare_epochs = run_bare(params, data, cpus)
    bare_wall = time.perf_counter() - t0
    service_epochs, service_wall, first_result = run_service(params, data, cpus, args.epochs)
    for e, (b, s) in enumerate(zip(bare_epochs, service_epochs), 1):
        print(
            f"epoch {e}: bare {b:.1f} s ({rows / b:.0f} samples/s incl. dev)  service {s:.1f} s  "
            f"ratio service/bare {s / b:.2f}"
        )
    print(
        f"whole run: bare fit {bare_wall:.1f} s, service {service_wall:.1f} s (ratio {service_wall / bare_wall:.2f}); "
        f"service first result {first_result:.1f} s after tuner.fit()"
    )
    bare_s, service_s = sum(bare_epochs) / len(bare_epochs), sum(service_epochs) / len(service_epochs)
    print(
        f"lstm_epoch: ratio={service_s / bare_s:.2f} bare_epoch_s={bare_s:.2f} service_epoch_s={service_s:.2f} "
        f"first_result_s={first_result:.1f}"
    )


if __name__ == "__main__":
    main()
