import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# the metrics every trainable reports each epoch (ARCHITECTURE.md), besides the per-class ones
DESIGN_METRICS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "lr", "grad_norm",
                  "epoch_seconds", "samples_per_second"]  # fmt: skip
POS = ["good", "great", "excellent", "wonderful", "superb", "lovely", "brilliant", "delightful"]
NEG = ["bad", "awful", "terrible", "boring", "dreadful", "poor", "horrible", "dull"]
FILL = ["the", "movie", "film", "plot", "was", "acting", "really", "story", "quite", "cast", "and", "a"]


def synthetic_rows(n: int, seed: int, classes: int = 2):
    """Sentences whose label follows from their sentiment words: learnable in an epoch or two."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % classes
        words = [rng.choice(FILL) for _ in range(rng.randint(4, 9))]
        cue = POS if label == classes - 1 else NEG if label == 0 else ["fine", "okay", "average"]
        for _ in range(2):
            words.insert(rng.randrange(len(words) + 1), rng.choice(cue))
        rows.append((label, " ".join(words)))
    rng.shuffle(rows)
    return rows


def write_sst_file(path: Path, rows):
    path.write_text("".join(f"{label} ||| {text}\n" for label, text in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def sst_dir(tmp_path_factory):
    """A binary SST-format data set: 240 train / 80 dev / 80 test rows."""
    root = tmp_path_factory.mktemp("sst")
    write_sst_file(root / "train.txt", synthetic_rows(240, 1))
    write_sst_file(root / "dev.txt", synthetic_rows(80, 2))
    write_sst_file(root / "test.txt", synthetic_rows(80, 3))
    return root


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the whole session (2 CPUs, dashboard on loopback)."""
    import ray

    from sentune.tuning import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def make_job(sst_dir, tmp_path, **changes):
    raw = dict(
        name="tiny",
        trainable="llama_torch",
        data={"train": str(sst_dir / "train.txt"), "dev": str(sst_dir / "dev.txt"), "test": str(sst_dir / "test.txt")},
        search_space={"lr": {"grid": [3.0e-3, 1.0e-7]}},
        params={
            "backbone": "random:tiny",
            "option": "finetune",
            "epochs": 4,
            "batch_size": 16,
            "max_len": 24,
            "seed": 1,
        },
        search={"algorithm": "grid"},
        num_samples=2,
        scheduler={"type": "asha", "metric": "val_macro_f1", "mode": "max", "grace_period": 1, "reduction_factor": 2},
        # one trial at a time: ASHA then sees the good lr's rung before the bad one reaches it
        resources={"cpus": 1, "workers_per_trial": 1, "max_concurrent_trials": 1},
        storage_path=str(tmp_path / "results"),
        seed=0,
    )
    raw.update(changes)
    from sentune.spec import parse_job

    return parse_job(raw)


@pytest.fixture(scope="session")
def tiny_sweep(ray_local, sst_dir, tmp_path_factory):
    """One real tiny sweep (2 trials, ASHA) for every test that reads a finished run."""
    from sentune.tuning import run_sweep

    return run_sweep(make_job(sst_dir, tmp_path_factory.mktemp("sweep")), run_id="r1")
