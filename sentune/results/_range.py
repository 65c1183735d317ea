"""The LR range test's outputs: the loss-vs-lr curve, its plot, the suggested lr and search range."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from sentune.errors import ConfigError
from sentune.results._layout import LR_RANGE, LR_RANGE_PLOT, LR_SUGGESTION
from sentune.results._store import atomic_write_bytes, damaged, read_json_file, write_parquet, write_text

__all__ = ["suggest_lr", "write_range_test", "lr_search_range"]


def suggest_lr(rows: list[dict]) -> dict:
    """Smith's reading of the curve: the loss falls fastest at ``steep_lr`` and bottoms out at
    ``min_loss_lr``; suggest their geometric mean and search between them (at least half a decade
    either side of the suggestion). Slopes are least-squares fits over windows of a tenth of the
    steps, skipping the first window, so early noise does not count as a fall."""
    df = pd.DataFrame(rows)
    df = df[np.isfinite(df.smoothed_loss)].reset_index(drop=True)
    if len(df) < 10:
        raise ConfigError("the range test recorded fewer than 10 finite losses; raise lr_min or steps")
    i_min = int(df.smoothed_loss.idxmin())
    x, y = np.log10(df.lr.to_numpy()), df.smoothed_loss.to_numpy()
    w = max(3, len(df) // 10)
    best_slope, i_steep = np.inf, 0
    for i in range(w, max(w + 1, i_min - w // 2 + 1)):
        lo, hi = max(0, i - w // 2), min(len(df), i + w // 2 + 1)
        slope = np.polyfit(x[lo:hi], y[lo:hi], 1)[0]
        if slope < best_slope:
            best_slope, i_steep = slope, i
    steep_lr, min_lr = float(df.lr[i_steep]), float(df.lr[i_min])
    lr = math.sqrt(steep_lr * min_lr)
    half_decade = math.sqrt(10)
    return {
        "suggested_lr": lr,
        "steep_lr": steep_lr,
        "min_loss_lr": min_lr,
        "search_low": min(steep_lr, lr / half_decade),
        "search_high": max(min_lr, lr * half_decade),
        "steps_run": int(len(rows)),
        "diverged": bool(len(rows) and not math.isfinite(rows[-1]["smoothed_loss"])),
    }


def write_range_test(run_dir: str | Path, rows: list[dict], *, lr_max: float) -> dict:
    """Write lr_range.parquet, lr_range.png and lr_suggestion.json; return the suggestion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    suggestion = suggest_lr(rows)
    suggestion["stopped_before_lr_max"] = bool(rows[-1]["lr"] < lr_max * 0.999)
    write_parquet(run_dir / LR_RANGE, rows)
    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(df.lr, df.loss, alpha=0.35, label="loss")
    ax.plot(df.lr, df.smoothed_loss, label="smoothed loss")
    ax.axvline(suggestion["suggested_lr"], color="C3", ls="--", label=f"suggested {suggestion['suggested_lr']:.2e}")
    ax.axvspan(suggestion["search_low"], suggestion["search_high"], color="C3", alpha=0.08, label="search range")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("train loss")
    finite = df.smoothed_loss[np.isfinite(df.smoothed_loss)]
    ax.set_ylim(top=float(min(finite.max(), finite.min() * 4 + 1e-9)) if len(finite) else None)
    ax.legend(fontsize=8)
    atomic_write_bytes(run_dir / LR_RANGE_PLOT, lambda tmp: fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight"))
    plt.close(fig)
    write_text(run_dir / LR_SUGGESTION, json.dumps(suggestion, indent=1))
    return suggestion


def lr_search_range(run_dir) -> tuple[float, float]:
    """``lr: {from_range_test: RUN_DIR}``: the search range that run suggested."""
    path = Path(str(run_dir)) / LR_SUGGESTION
    try:
        found = path.is_file()
    except OSError as exc:  # a name too long for the file system, say
        raise ConfigError(f"search space: lr: from_range_test: {str(path)[:120]}: {exc.strerror}") from None
    if not found:
        raise ConfigError(f"search space: lr: from_range_test: {path} not found (run a job with kind: lr_range_test)")
    s = read_json_file(path)
    try:
        low, high = float(s["search_low"]), float(s["search_high"])
    except (TypeError, KeyError, ValueError):
        raise damaged(path, "no search_low and search_high numbers") from None
    return low, high
