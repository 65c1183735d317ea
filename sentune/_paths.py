"""Where sentune keeps what it prepares: built-in data sets, converted backbones, feature caches."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["home", "cache_dir"]


def home() -> Path:
    """``$SENTUNE_HOME`` or ``~/.cache/sentune``."""
    return Path(os.environ.get("SENTUNE_HOME") or Path.home() / ".cache" / "sentune").expanduser()


def cache_dir(*parts: str) -> Path:
    path = home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
