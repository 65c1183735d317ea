"""One lstm_tf epoch at Weibo size under the service against the same loop run bare (CPU).

Weibo size: 108,000 train rows x 100 tokens, vocabulary 50,000, batch 256, the seed's model
(embedding 128, LSTM 128/64, dense 32); random token ids and labels (the speed does not depend on
them), 2,000 dev rows evaluated each epoch. Bare: ``lstm_tf.fit`` in this process, no Ray. Service:
the same prepared arrays through the object store, one Tune trial running a Ray Train
``TensorflowTrainer`` worker (all CPUs) with ``TuneReportCallback`` and sentune's Parquet callback.
Both in one run; prints each epoch's time (the loop's own ``epoch_seconds``), the ratio, and the
service's time to its first result.

    python bench/lstm_epoch.py [--rows 108000] [--epochs 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=108_000)
    ap.add_argument("--dev-rows", type=int, default=2_000)
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    params = dict(
        max_len=100,
        vocab_size=50_000,
        embedding_dim=128,
        lstm_units=[128, 64],
        dense_units=32,
        batch_size=256,
        epochs=args.epochs,
        lr=1e-3,
        seed=0,
    )
    cpus = os.cpu_count() or 1

    from sentune.trainables import lstm_tf

    data = make_data(args.rows, args.dev_rows, 100, 50_000)
    print(f"data: {args.rows} x 100 train, {args.dev_rows} dev, vocab 50,000, batch 256; {cpus} CPU cores")

    # bare: the loop alone
    lstm_tf.make_strategy(1, cpus=cpus)
    t0 = time.perf_counter()
    bare = lstm_tf.fit(lstm_tf.LstmTfParams(**params), data, lstm_tf.LoopContext(cpus=cpus))
    bare_wall = time.perf_counter() - t0
    bare_epochs = [h["epoch_seconds"] for h in bare.history]

    # the service's trial path
    import ray
    from ray import tune

    from sentune.results import RunRecorder
    from sentune.trainables import get_trainable
    from sentune.tuning import init_ray
    from sentune.tuning._callback import RecordCallback
    from sentune.tuning._trial import make_trial_driver

    init_ray(num_cpus=cpus)
    tmp = Path(tempfile.mkdtemp(prefix="sentune-bench-lstm-"))
    data_ref = ray.put(data)
    driver = make_trial_driver(
        get_trainable("lstm_tf"),
        data_ref,
        workers=1,
        cpus=cpus,
        gpus=0,
        storage_path=str(tmp / "train"),
        job="bench-lstm",
    )
    callback = RecordCallback(
        RunRecorder(tmp, job="bench-lstm", run_id="r", metric="val_acc", mode="max", max_epochs=args.epochs)
    )
    t0 = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(driver, {"memory": 64 * 1024 * 1024}),
        param_space=params,
        run_config=tune.RunConfig(name="tune", storage_path=str(tmp), callbacks=[callback], verbose=0),
    )
    grid = tuner.fit()
    service_wall = time.perf_counter() - t0
    import pandas as pd

    rows = pd.read_parquet(tmp / "epochs.parquet").sort_values("epoch")
    service_epochs = rows.epoch_seconds.tolist()
    first_result = rows.reported_at.min() - (time.time() - service_wall)
    assert not grid.errors, grid.errors
    for e, (b, s) in enumerate(zip(bare_epochs, service_epochs), 1):
        print(
            f"epoch {e}: bare {b:.1f} s ({args.rows / b:.0f} samples/s incl. dev)  service {s:.1f} s  "
            f"ratio service/bare {s / b:.2f}"
        )
    print(
        f"whole run: bare fit {bare_wall:.1f} s, service {service_wall:.1f} s (ratio {service_wall / bare_wall:.2f}); "
        f"service first result {first_result:.1f} s after tuner.fit()"
    )


if __name__ == "__main__":
    main()
