"""What a run exports: ``leaderboard.csv`` (the reference row included) and ``best_config.yaml``."""

from __future__ import annotations

from pathlib import Path

import yaml

from sentune.errors import ConfigError
from sentune.results._layout import BEST_CONFIG, LEADERBOARD
from sentune.results._store import atomic_write_bytes, write_text
from sentune.results._view import RunLike, RunView

__all__ = ["write_best_config", "export_run"]


def write_best_config(run: RunLike, out: str | Path | None = None) -> Path:
    """``best_config.yaml`` in the run folder, or at ``out`` (a folder there: ``out/best_config.yaml``)."""
    view = RunView.of(run)
    target = Path(out) if out else view.run_dir / BEST_CONFIG
    if target.is_dir():
        target = target / BEST_CONFIG
    text = yaml.safe_dump(view.best_config, sort_keys=False)
    try:
        write_text(target, text)
    except OSError as exc:
        raise ConfigError(f"{target}: cannot write the best config ({exc.strerror or type(exc).__name__})") from None
    return target


def export_run(run: RunLike, out: str | Path | None = None) -> dict[str, Path]:
    """Write ``leaderboard.csv`` and ``best_config.yaml`` (to ``out`` when given)."""
    view = RunView.of(run)
    board = view.leaderboard_with_reference
    path = view.run_dir / LEADERBOARD
    atomic_write_bytes(path, lambda tmp: board.to_csv(tmp, index=False))
    return {"leaderboard": path, "best_config": write_best_config(view, out)}
