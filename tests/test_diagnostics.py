"""Diagnostics, the LR range test and the report: pure functions and the bare loop (no Ray)."""

import math
import random

import numpy as np
import pytest

from conftest import synthetic_rows, write_sst_file
from sentune.data import DataConfig, load_splits
from sentune.diagnostics import DiagnosticsConfig, DiagnosticsTracker, TrialDiagnostics, summarize
from sentune.results import suggest_lr, write_range_test
from sentune.spec import parse_job
from sentune.trainables import llama_torch as lt

NAMES = ["neg", "pos"]


def epoch(counts, **kw):
    m = {"train_loss": 0.5, "val_loss": 0.6, "train_acc": 0.8, "val_acc": 0.75, "val_macro_f1": 0.7, "grad_norm": 1.0}
    m.update({f"val_pred_count/{n}": c for n, c in zip(NAMES, counts)})
    m.update(kw)
    return m


def test_seed_004_collapse_is_flagged_and_a_healthy_epoch_is_not():
    d = TrialDiagnostics(DiagnosticsConfig(), [696, 204], NAMES)
    assert d.update(epoch([900, 0]))["diag_collapse"]  # 900/900 predicted class 0
    healthy = TrialDiagnostics(DiagnosticsConfig(), [696, 204], NAMES).update(epoch([680, 220]))
    assert not healthy["diag_collapse"] and healthy["diag_pred_distance"] == pytest.approx(16 / 900)
    inverse = TrialDiagnostics(DiagnosticsConfig(), [696, 204], NAMES).update(epoch([100, 800]))
    assert inverse["diag_collapse"]  # far from the label distribution


def test_stagnation_overfit_nan_and_grad_spike():
    cfg = DiagnosticsConfig(stagnation_epochs=3)
    d = TrialDiagnostics(cfg, [50, 50], NAMES)
    flags = [d.update(epoch([50, 50], val_macro_f1=0.436)) for _ in range(3)]
    assert [f["diag_stagnation"] for f in flags] == [False, False, True]
    assert (
        TrialDiagnostics(cfg, [50, 50], NAMES).update(epoch([50, 50], train_acc=0.99, val_acc=0.40))["diag_overfit"]
        == "severe"
    )
    assert (
        TrialDiagnostics(cfg, [50, 50], NAMES).update(epoch([50, 50], train_acc=0.9, val_acc=0.78))["diag_overfit"]
        == "mild"
    )
    rising = TrialDiagnostics(cfg, [50, 50], NAMES)
    levels = [
        rising.update(epoch([50, 50], train_loss=1 - i / 10, val_loss=0.5 + i / 10, train_acc=0.8, val_acc=0.8))[
            "diag_overfit"
        ]
        for i in range(3)
    ]
    assert levels == ["none", "none", "mild"]
    assert TrialDiagnostics(cfg, [50, 50], NAMES).update(epoch([50, 50], train_loss=float("nan")))["diag_nan"]
    g = TrialDiagnostics(cfg, [50, 50], NAMES)
    spikes = [g.update(epoch([50, 50], grad_norm=v))["diag_grad_spike"] for v in (1.0, 1.2, 0.9, 40.0)]
    assert spikes == [False, False, False, True]


def test_tracker_stop_reasons_and_idempotence():
    tracker = DiagnosticsTracker(DiagnosticsConfig(stop_on=["collapse", "nan"], stop_after=2), [50, 50], NAMES)
    r1 = {**epoch([100, 0]), "epoch": 1}
    assert tracker.update("t", r1)["diag_stop"] is None
    assert tracker.update("t", r1)["diag_collapse_epochs"] == 1  # the same result twice counts once
    assert tracker.update("t", {**epoch([100, 0]), "epoch": 2})["diag_stop"] == "collapse"
    assert tracker.update("n", {**epoch([50, 50], val_loss=math.inf), "epoch": 1})["diag_stop"] == "nan"
    assert tracker.stop_reasons == {"t": "collapse", "n": "nan"}


@pytest.fixture(scope="module")
def splits(sst_dir):
    return load_splits(DataConfig(train=sst_dir / "train.txt", dev=sst_dir / "dev.txt"))


def run_diagnosed(p, data, splits, cfg=None):
    tracker = DiagnosticsTracker(cfg or DiagnosticsConfig(), splits.dev.class_counts(), splits.label_names)
    history = lt.fit(p, data).history
    return [tracker.update("t", h) for h in history]


def test_real_trial_forced_to_collapse_is_flagged(splits):
    base = dict(backbone="random:tiny", option="finetune", epochs=2, lr=3e-3, batch_size=16, max_len=24, seed=2)
    data = lt.prepare(lt.LlamaTorchParams(**base), splits)
    # focal alpha that all but ignores class 0: the model learns to predict class 1 for everything
    collapsed = run_diagnosed(lt.LlamaTorchParams(**base, loss="focal", focal_alpha=[1e-4, 1.0]), data, splits)
    assert collapsed[0]["diag_collapse"] and summarize(collapsed)["diagnostics"].startswith("collapse")
    healthy = run_diagnosed(lt.LlamaTorchParams(**base), data, splits)
    assert not any(f["diag_collapse"] for f in healthy) and summarize(healthy)["diagnostics"] == "ok"


def test_real_nan_loss_is_flagged(splits):
    p = lt.LlamaTorchParams(
        backbone="random:tiny",
        option="finetune",
        epochs=2,
        batch_size=16,
        max_len=24,
        loss="focal",
        focal_alpha=[3e38, 3e38],
    )  # the loss overflows, then the weights
    flags = run_diagnosed(p, lt.prepare(p, splits), splits)
    assert any(f["diag_nan"] for f in flags)


def test_memorising_a_tiny_train_set_is_severe_overfit(tmp_path):
    rng = random.Random(0)
    noisy = [(rng.randint(0, 1), text) for _, text in synthetic_rows(48, 5)]  # labels unrelated to text
    write_sst_file(tmp_path / "train.txt", noisy)
    write_sst_file(tmp_path / "dev.txt", [(rng.randint(0, 1), t) for _, t in synthetic_rows(60, 6)])
    splits = load_splits(DataConfig(train=tmp_path / "train.txt", dev=tmp_path / "dev.txt"))
    p = lt.LlamaTorchParams(
        backbone="random:tiny", option="finetune", epochs=25, lr=3e-3, batch_size=8, max_len=24, hidden_dropout=0.0
    )
    flags = run_diagnosed(p, lt.prepare(p, splits), splits)
    assert summarize(flags)["overfit"] == "severe"


def test_range_test_suggests_within_10x_of_the_best_grid_lr(splits, tmp_path):
    base = dict(backbone="random:tiny", option="finetune", epochs=2, batch_size=16, max_len=24, seed=0)
    data = lt.prepare(lt.LlamaTorchParams(**base), splits)
    grid = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    scores = [lt.fit(lt.LlamaTorchParams(**base, lr=lr), data).best_metric for lr in grid]
    best = grid[int(np.argmax(scores))]
    rows = lt.lr_range_test(lt.LlamaTorchParams(**base, lr=1e-3), data, lr_min=1e-7, lr_max=1.0, steps=120)
    assert rows[-1]["lr"] < 1.0  # it stopped when the loss diverged
    s = write_range_test(tmp_path, rows, lr_max=1.0)
    assert best / 10 <= s["suggested_lr"] <= best * 10, (best, scores, s)
    assert (tmp_path / "lr_range.png").stat().st_size > 1000
    spec = parse_job(
        {
            "name": "t",
            "trainable": "llama_torch",
            "data": {"builtin": "en-movie-5"},
            "search_space": {"lr": {"from_range_test": str(tmp_path)}, "backbone": "random:tiny"},
        }
    )
    assert spec.space["lr"].args == pytest.approx((s["search_low"], s["search_high"]))
    assert s["search_low"] <= s["suggested_lr"] <= s["search_high"]


def test_suggest_lr_on_a_textbook_curve():
    lrs = np.logspace(-7, 0, 50)
    loss = 1 / (1 + np.exp(3 * (np.log10(lrs) + 3))) + np.where(lrs > 1e-1, (lrs * 10) ** 2, 0)  # falls around 1e-3
    s = suggest_lr([{"step": i, "lr": lr, "loss": v, "smoothed_loss": v} for i, (lr, v) in enumerate(zip(lrs, loss))])
    assert 3e-4 <= s["steep_lr"] <= 3e-3  # where it falls fastest
    assert 1e-2 <= s["min_loss_lr"] <= 1e-1  # where it bottoms out before blowing up
    assert s["search_low"] == s["steep_lr"] and s["search_high"] == s["min_loss_lr"]
    assert s["suggested_lr"] == pytest.approx((s["steep_lr"] * s["min_loss_lr"]) ** 0.5)
