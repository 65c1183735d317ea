"""The ``data:`` block of a job: a built-in data set, or the user's own files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sentune.data._builtin import ensure_builtin
from sentune.data._readers import TextDataset, read_csv, read_label_names, read_sst
from sentune.errors import DataError

__all__ = ["DataConfig", "DataSplits", "load_splits"]


class MaxRows(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train: int | None = Field(None, gt=0)
    dev: int | None = Field(None, gt=0)
    test: int | None = Field(None, gt=0)


class DataConfig(BaseModel):
    """Where a job's rows come from. Relative paths are taken from the working directory."""

    model_config = ConfigDict(extra="forbid")
    builtin: str | None = None
    train: Path | None = None
    dev: Path | None = None
    test: Path | None = None
    format: Literal["sst", "csv"] | None = None
    label_names: Path | list[str] | None = None
    text_column: str = "review"
    label_column: str = "label"
    max_rows: MaxRows = Field(default_factory=MaxRows)
    subset_seed: int = 0

    @model_validator(mode="after")
    def _one_source(self):
        if self.builtin and (self.train or self.dev or self.test):
            raise ValueError("give either 'builtin' or 'train'/'dev'/'test' paths, not both")
        if not self.builtin and not (self.train and self.dev):
            raise ValueError("give 'builtin' (a built-in data set) or at least 'train' and 'dev' paths")
        return self

    def resolved(self) -> "DataConfig":
        """A copy with absolute paths (so an exported config runs from anywhere)."""
        upd = {k: Path(v).resolve() for k in ("train", "dev", "test") if (v := getattr(self, k))}
        if isinstance(self.label_names, Path):
            upd["label_names"] = self.label_names.resolve()
        return self.model_copy(update=upd)


@dataclass(frozen=True)
class DataSplits:
    train: TextDataset
    dev: TextDataset
    test: TextDataset | None

    @property
    def label_names(self) -> list[str]:
        return self.train.label_names

    @property
    def num_classes(self) -> int:
        return self.train.num_classes


def _stratified_subset(ds: TextDataset, n: int | None, seed: int) -> TextDataset:
    if n is None or n >= len(ds):
        return ds
    from sklearn.model_selection import train_test_split

    counts = ds.class_counts()
    stratify = ds.labels if (counts[counts > 0] >= 2).all() and n >= np.count_nonzero(counts) else None
    keep, _ = train_test_split(np.arange(len(ds)), train_size=n, stratify=stratify, random_state=seed)
    return ds.take(np.sort(keep))


def load_splits(cfg: DataConfig) -> DataSplits:
    """Read, check and subset the splits. Raises :class:`DataError` naming file and line."""
    if cfg.builtin:
        root = ensure_builtin(cfg.builtin)
        names = read_label_names(root / "labels.json")
        paths = {s: root / f"{s}.txt" for s in ("train", "dev", "test")}
        fmt = "sst"
    else:
        names = cfg.label_names
        if isinstance(names, Path):
            names = read_label_names(names)
        paths = {"train": cfg.train, "dev": cfg.dev, "test": cfg.test}
        fmt = cfg.format or ("csv" if Path(cfg.train).suffix.lower() == ".csv" else "sst")

    def read(path):
        if fmt == "csv":
            return read_csv(path, names, text_column=cfg.text_column, label_column=cfg.label_column)
        return read_sst(path, names)

    train = read(paths["train"])
    if names is None:  # label set = the train split's; dev/test may not bring new ones
        names = train.label_names
    counts = train.class_counts()
    if np.count_nonzero(counts) < 2:
        raise DataError(paths["train"], f"train split has a single class ({names[int(np.argmax(counts))]!r}); need at least two")
    out = {"train": train}
    for split in ("dev", "test"):
        if paths[split] is None:
            out[split] = None
            continue
        out[split] = read(paths[split])  # labels outside the train split's classes are rejected here
    out["train"] = TextDataset(train.texts, train.labels, list(names), train.source, train.lines)
    limits = cfg.max_rows
    return DataSplits(
        train=_stratified_subset(out["train"], limits.train, cfg.subset_seed),
        dev=_stratified_subset(out["dev"], limits.dev, cfg.subset_seed),
        test=None if out["test"] is None else _stratified_subset(out["test"], limits.test, cfg.subset_seed),
    )
