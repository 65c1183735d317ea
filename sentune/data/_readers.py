"""Readers for the real data formats: SST lines (``label ||| sentence``) and labelled CSV."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sentune.errors import DataError

__all__ = ["TextDataset", "read_sst", "read_csv", "read_label_names", "write_sst"]

SST_SEPARATOR = "|||"


@dataclass(frozen=True)
class TextDataset:
    """One split: texts, integer labels in ``range(len(label_names))`` and where they came from."""

    texts: list[str]
    labels: np.ndarray
    label_names: list[str]
    source: str = ""
    lines: list[int] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)

    def take(self, index: Sequence[int] | np.ndarray) -> TextDataset:
        index = list(index)
        return TextDataset(
            texts=[self.texts[i] for i in index],
            labels=self.labels[index],
            label_names=self.label_names,
            source=self.source,
            lines=[self.lines[i] for i in index] if self.lines else [],
        )


def read_label_names(path: str | Path) -> list[str]:
    """Label names from JSON: a list ``["neg", "pos"]`` or a mapping ``{"0": "neg", "1": "pos"}``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "label-names file not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"not valid UTF-8 JSON ({exc})") from None
    if isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        names = raw
    elif isinstance(raw, dict) and raw:
        try:
            ids = sorted(int(k) for k in raw)
        except ValueError:
            raise DataError(path, "label-names keys must be integer ids") from None
        if ids != list(range(len(ids))):
            raise DataError(path, f"label ids must be 0..{len(ids) - 1}, got {ids}")
        names = [str(raw[str(i)]) for i in ids]
    else:
        raise DataError(path, "label names must be a JSON list of names or an {id: name} object")
    if len(set(names)) != len(names):
        raise DataError(path, "label names must be unique")
    return names


class _LabelMap:
    """Turns a raw label field into a class id, or says why it can't."""

    def __init__(self, label_names: Sequence[str] | None):
        self.names = list(label_names) if label_names else None
        self._by_name = {n: i for i, n in enumerate(self.names or [])}

    def __call__(self, raw: str) -> int | None:
        raw = raw.strip()
        if self.names is not None and raw in self._by_name:
            return self._by_name[raw]
        try:
            value = int(raw)
        except ValueError:
            try:
                as_float = float(raw)
            except ValueError:
                return None
            if not as_float.is_integer():
                return None
            value = int(as_float)
        if value < 0 or (self.names is not None and value >= len(self.names)):
            return None
        return value

    def describe(self) -> str:
        if self.names is None:
            return "a non-negative integer"
        return f"one of {list(range(len(self.names)))} or {self.names}"


def _inferred_names(path: Path, labels: np.ndarray, lines: list[int]) -> list[str]:
    """No label names given: the classes are 0..the largest label, and each must have a row here (else a
    stray label, a ``7`` in a 0-4 file, would make classes nothing trains). A file of one label is left
    to the caller (``load_splits`` says the train split has a single class)."""
    present = np.unique(labels)
    top = int(present[-1])
    if len(present) > 1 and len(present) < top + 1:
        missing_count = top + 1 - len(present)
        # the first ten missing classes lie below len(present) + 10, however large the stray label
        missing = np.setdiff1d(np.arange(min(top, len(present) + 10)), present, assume_unique=True)
        shown = ", ".join(str(int(c)) for c in missing[:10])
        if missing_count > 10:
            shown += f", ... ({missing_count} in all)"
        line = lines[int(np.argmax(labels == top))] if lines else None
        raise DataError(
            path,
            f"label {top} leaves {'class' if missing_count == 1 else 'classes'} {shown} with no train row; "
            "give label_names or fix the label",
            line,
        )
    return [str(i) for i in range(top + 1)]


def _finish(path: Path, texts, labels, lines, label_names) -> TextDataset:
    if not texts:
        raise DataError(path, "file has no labelled rows")
    labels_arr = np.asarray(labels, dtype=np.int64)
    if label_names is None:
        label_names = _inferred_names(path, labels_arr, lines)
    return TextDataset(texts, labels_arr, list(label_names), str(path), lines)


def _open_text(path: Path) -> str:
    if not path.exists():
        raise DataError(path, "file not found")
    if not path.is_file():
        raise DataError(path, "not a regular file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(path, f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})", line) from None
    if not text.strip():
        raise DataError(path, "file is empty")
    return text


def read_sst(path: str | Path, label_names: Sequence[str] | None = None) -> TextDataset:
    """Read ``label ||| sentence`` lines (SST / minllama format). Blank lines are skipped.

    ``label`` is a class id, or a name from ``label_names``.
    """
    path = Path(path)
    labmap = _LabelMap(label_names)
    texts, labels, lines = [], [], []
    for lineno, line in enumerate(_open_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        if SST_SEPARATOR not in line:
            raise DataError(path, f"line has no '{SST_SEPARATOR}' separator (expected 'label ||| sentence')", lineno)
        raw_label, sentence = line.split(SST_SEPARATOR, 1)
        label = labmap(raw_label)
        if label is None:
            raise DataError(path, f"unknown label {raw_label.strip()!r}; expected {labmap.describe()}", lineno)
        sentence = sentence.strip()
        if not sentence:
            raise DataError(path, "empty sentence", lineno)
        texts.append(sentence)
        labels.append(label)
        lines.append(lineno)
    return _finish(path, texts, labels, lines, label_names)


def read_csv(
    path: str | Path,
    label_names: Sequence[str] | None = None,
    *,
    text_column: str = "review",
    label_column: str = "label",
) -> TextDataset:
    """Read a CSV with a header row (UTF-8, with or without BOM), e.g. ``label,review``."""
    path = Path(path)
    labmap = _LabelMap(label_names)
    reader = csv.reader(_open_text(path).splitlines())
    header = next(reader)
    header = [h.strip() for h in header]
    for col in (text_column, label_column):
        if col not in header:
            raise DataError(path, f"header has no column {col!r} (columns: {', '.join(header)})", 1)
    ti, li = header.index(text_column), header.index(label_column)
    texts, labels, lines = [], [], []
    for row in reader:
        lineno = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(ti, li) or not row[ti].strip():
            raise DataError(path, f"row has no {text_column!r} value", lineno)
        label = labmap(row[li])
        if label is None:
            raise DataError(path, f"unknown label {row[li].strip()!r}; expected {labmap.describe()}", lineno)
        texts.append(row[ti].strip())
        labels.append(label)
        lines.append(lineno)
    return _finish(path, texts, labels, lines, label_names)


def write_sst(path: str | Path, texts: Sequence[str], labels: Sequence[int]) -> None:
    """Write ``label ||| sentence`` lines (atomically)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for text, label in zip(texts, labels):
            fh.write(f"{int(label)} ||| {' '.join(text.split())}\n")
    tmp.replace(path)
