"""A trainable alone, without Ray: re-train an exported best config (``sentune train``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from sentune._log import log_line
from sentune._yaml import read_yaml
from sentune.data import DataConfig, load_splits
from sentune.errors import ConfigError, format_validation
from sentune.trainables import FitResult, LoopContext, fit, get_trainable

__all__ = ["load_train_config", "train_alone"]


def load_train_config(path: str | Path) -> tuple[str, DataConfig, dict]:
    """Read a best_config.yaml (or any {trainable, data, params} file)."""
    raw = read_yaml(path, "config file") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping")
    unknown = set(raw) - {"trainable", "data", "params", "source"}
    if unknown:
        raise ConfigError(f"{path}: unknown key {sorted(unknown)[0]}")
    if "trainable" not in raw or "data" not in raw:
        raise ConfigError(f"{path}: needs 'trainable' and 'data'")
    entry = get_trainable(raw["trainable"])
    try:
        data = DataConfig(**raw["data"])
        entry.params_model(**(raw.get("params") or {}))
    except ValidationError as exc:
        raise ConfigError(format_validation(str(path), exc)) from None
    return raw["trainable"], data, dict(raw.get("params") or {})


def _log_epoch(metrics: dict, save) -> None:
    log_line(
        f"epoch {metrics['epoch']:>3}  train_loss={metrics['train_loss']:.4f}  val_loss={metrics['val_loss']:.4f}  "
        f"val_acc={metrics['val_acc']:.4f}  val_macro_f1={metrics['val_macro_f1']:.4f}"
    )


def train_alone(trainable: str, data: DataConfig, params: dict) -> FitResult:
    """Run a trainable's loop once, without Ray; logs each epoch; returns its FitResult."""
    entry = get_trainable(trainable)
    impl = entry.load()
    p = entry.params_model(**params)
    prepared = impl.prepare(p, load_splits(data))
    return fit(impl, p, prepared, LoopContext(report=_log_epoch))
