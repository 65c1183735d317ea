"""The ``data:`` block of a job: a built-in data set, or the user's own files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sentune.data._builtin import builtin_files, ensure_builtin
from sentune.data._readers import TextDataset, _clip, check_label_names, read_csv, read_label_names, read_sst
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
    # One labelled file (e.g. weibo_senti_100k.csv) cut into train/dev/test by these fractions,
    # stratified and seeded with subset_seed; give it with 'train' alone.
    split: tuple[float, float, float] | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if self.builtin and (self.train or self.dev or self.test or self.split):
            raise ValueError("give either 'builtin' or 'train'/'dev'/'test' paths (or 'train' + 'split'), not both")
        if self.split is not None:
            if not self.train or self.dev or self.test:
                raise ValueError("'split' cuts the one 'train' file into train/dev/test: give 'train' alone with it")
            if (
                any(f < 0 for f in self.split)
                or self.split[0] <= 0
                or self.split[1] <= 0
                or abs(sum(self.split) - 1) > 1e-6
            ):
                raise ValueError(
                    f"split fractions must be train > 0, dev > 0, test >= 0 and sum to 1, got {list(self.split)}"
                )
        elif not self.builtin and not (self.train and self.dev):
            raise ValueError(
                "give 'builtin' (a built-in data set), at least 'train' and 'dev' paths, or 'train' + 'split'"
            )
        return self

    def resolved(self) -> DataConfig:
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


def _cut(ds: TextDataset, index: np.ndarray, seed: int, **size) -> tuple[np.ndarray, np.ndarray]:
    """``train_test_split`` of ``index`` (rows of ``ds``), stratified by label where scikit-learn can (every
    class has 2+ rows and each part has room for one of each), else not; a cut that leaves a part empty
    is a :class:`DataError` naming the file."""
    from sklearn.model_selection import train_test_split

    labels = ds.labels[index]
    counts = np.bincount(labels, minlength=ds.num_classes)
    if (counts[counts > 0] >= 2).all():
        try:
            return train_test_split(index, stratify=labels, random_state=seed, **size)
        except ValueError:  # a part too small to hold every class
            pass
    try:
        return train_test_split(index, random_state=seed, **size)
    except ValueError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(ds.source, f"{len(index)} rows are too few to cut this way ({message[:120]})") from None


def _stratified_subset(ds: TextDataset, n: int | None, seed: int) -> TextDataset:
    if n is None or n >= len(ds):
        return ds
    keep, _ = _cut(ds, np.arange(len(ds)), seed, train_size=n)
    return ds.take(np.sort(keep))


def _split_one_file(ds: TextDataset, fractions, seed: int) -> dict:
    """train/dev/test from one file: stratified (when every class has 2+ rows), seeded."""
    idx = np.arange(len(ds))
    if fractions[2] > 0:
        rest, test = _cut(ds, idx, seed, test_size=fractions[2])
    else:
        rest, test = idx, None
    train, dev = _cut(ds, rest, seed, test_size=fractions[1] / (fractions[0] + fractions[1]))
    return {
        "train": ds.take(np.sort(train)),
        "dev": ds.take(np.sort(dev)),
        "test": None if test is None else ds.take(np.sort(test)),
    }


def _check_two_classes(train: TextDataset, path) -> None:
    counts = train.class_counts()
    if np.count_nonzero(counts) < 2:
        name = train.label_names[int(np.argmax(counts))]
        raise DataError(path, f"train split has a single class ({_clip(name)}); need at least two")


def load_splits(cfg: DataConfig) -> DataSplits:
    """Read, check and subset the splits. Raises :class:`DataError` naming file and line."""
    names: list[str] | None
    paths: Mapping[str, Path | None]
    if cfg.builtin:
        root = ensure_builtin(cfg.builtin)
        names = read_label_names(root / "labels.json")
        paths, fmt = builtin_files(cfg.builtin)
        columns = {"text_column": "review", "label_column": "label"}  # how the built-in CSVs are written
    else:
        if isinstance(cfg.label_names, Path):
            names = read_label_names(cfg.label_names)
        else:
            names = None if cfg.label_names is None else check_label_names(cfg.label_names, "data.label_names")
        paths = {"train": cfg.train, "dev": cfg.dev, "test": cfg.test}
        fmt = cfg.format or ("csv" if str(cfg.train).lower().endswith(".csv") else "sst")
        columns = {"text_column": cfg.text_column, "label_column": cfg.label_column}

    def read(path):
        if fmt == "csv":
            return read_csv(path, names, **columns)
        return read_sst(path, names)

    train = read(paths["train"])
    if names is None:  # label set = the train split's; dev/test may not bring new ones
        names = train.label_names
    _check_two_classes(TextDataset(train.texts, train.labels, list(names), train.source), paths["train"])
    out = {"train": train}
    for split in ("dev", "test"):
        if paths[split] is None:
            out[split] = None
            continue
        out[split] = read(paths[split])  # labels outside the train split's classes are rejected here
    out["train"] = TextDataset(train.texts, train.labels, list(names), train.source, train.lines)
    if cfg.split is not None:
        out = _split_one_file(out["train"], cfg.split, cfg.subset_seed)
        _check_two_classes(out["train"], paths["train"])
    limits = cfg.max_rows
    return DataSplits(
        train=_stratified_subset(out["train"], limits.train, cfg.subset_seed),
        dev=_stratified_subset(out["dev"], limits.dev, cfg.subset_seed),
        test=None if out["test"] is None else _stratified_subset(out["test"], limits.test, cfg.subset_seed),
    )
