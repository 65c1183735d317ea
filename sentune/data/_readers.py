"""Readers for the real data formats: SST lines (``label ||| sentence``) and labelled CSV."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sentune._atomic import atomic_write_text
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


MAX_CLASS_ID = 2**31 - 1
# A class id as CSV writers write an integer: 0, 1, 2, ... (no sign, no leading zero, no exponent),
# or with a fractional part of zeros (3.0), as pandas writes an integer column that became float.
_CLASS_ID = re.compile(r"(0|[1-9][0-9]{0,9})(?:\.0+)?")
_NAME_ID = re.compile(r"0|[1-9][0-9]{0,9}")  # an id key of a label-names object: "0", "1", ... exactly
MAX_LABEL_NAMES_BYTES = 1024 * 1024
MAX_LINE = 16 * 1024 * 1024  # bytes of an SST line, characters of a CSV line or field


def _clip(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: quoting the input keeps a message one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def class_id(text: str) -> int | None:
    """The class id a label field (already stripped) writes, or None.

    The rule: ASCII digits without a sign or a leading zero (``0``, ``3``, ``12``), optionally followed
    by a point and zeros (``3.0``, as pandas writes a float column), at most ``MAX_CLASS_ID``. So ``1e30``,
    ``nan``, ``inf``, ``-0``, ``+1``, ``03``, ``3.5``, ``1_000`` or full-width digits are no class id.
    """
    m = _CLASS_ID.fullmatch(text)
    if m is None:
        return None
    value = int(m.group(1))
    return value if value <= MAX_CLASS_ID else None


def check_label_names(names: Sequence[object], where: str | Path) -> list[str]:
    """Label names as classes can use them, or a :class:`DataError` naming ``where``.

    Each name is a non-empty string without surrounding whitespace (a label field is stripped before it
    is looked up), the names are unique, and a name that reads as a class id (``"1"``) is that id's own
    name (else ``1`` in a file would mean two classes)."""
    if not names:
        raise DataError(where, "no label names given")
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise DataError(where, f"label name {i} is {_clip(name)}, not a string")
        if not name or name != name.strip():
            raise DataError(where, f"label name {i} ({_clip(name)}) is empty or has surrounding whitespace")
        if (cid := class_id(name)) is not None and cid != i:
            raise DataError(where, f"label name {i} ({_clip(name)}) reads as class id {cid}")
    seen: dict[object, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise DataError(where, f"label names {seen[name]} and {i} are both {_clip(name)}; they must be unique")
        seen[name] = i
    return [str(n) for n in names]


class _DuplicateKey(ValueError):
    """A JSON object gives one key twice (``json.loads`` would keep the last silently)."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def read_label_names(path: str | Path) -> list[str]:
    """Label names from JSON (UTF-8, at most 1 MiB): a list ``["neg", "pos"]`` or a mapping
    ``{"0": "neg", "1": "pos"}`` whose keys are the ids 0..n-1 written plainly (not ``" 0"``, ``"00"``,
    ``"-1"``), each once. The names follow :func:`check_label_names`."""
    path = Path(path)
    raw = _label_names_json(path)
    if isinstance(raw, list) and raw:
        return check_label_names(raw, path)
    if isinstance(raw, dict) and raw:
        for key in raw:
            if not _NAME_ID.fullmatch(key):
                raise DataError(path, f"label-names key {_clip(key)} is not a class id (0, 1, 2, ...)")
        ids = sorted(int(k) for k in raw)
        if ids != list(range(len(ids))):
            missing = sorted(set(range(len(ids))) - set(ids))[:5]
            raise DataError(path, f"label ids must be 0..{len(ids) - 1}; missing {missing}")
        return check_label_names([raw[str(i)] for i in ids], path)
    raise DataError(path, "label names must be a JSON list of names or an {id: name} object")


def _label_names_json(path: Path):
    """The label-names file's JSON (duplicate keys refused), or a one-line DataError naming it."""
    if not path.is_file():
        raise DataError(path, "label-names file not found")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_LABEL_NAMES_BYTES + 1)
    except OSError as exc:
        raise DataError(path, f"cannot read ({exc.strerror or type(exc).__name__})") from None
    if len(data) > MAX_LABEL_NAMES_BYTES:
        raise DataError(path, f"label-names file is over {MAX_LABEL_NAMES_BYTES // 1024} KiB")
    try:
        raw = json.loads(data.decode("utf-8").removeprefix("\ufeff"), object_pairs_hook=_unique_keys)
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None
    except _DuplicateKey as exc:
        raise DataError(path, f"key {_clip(exc.args[0])} is given twice") from None
    except RecursionError:
        raise DataError(path, "not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # json.JSONDecodeError, or an integer of over 4300 digits
        raise DataError(path, f"not valid JSON ({str(exc).splitlines()[0][:100]})") from None
    return raw


class _LabelMap:
    """Turns a raw label field into a class id, or says why it can't.

    The field, stripped of surrounding whitespace, is one of the label names (when they are given) or a
    class id by :func:`class_id`, below the number of label names (when they are given)."""

    def __init__(self, label_names: Sequence[str] | None):
        self.names = list(label_names) if label_names else None
        self._by_name = {n: i for i, n in enumerate(self.names or [])}

    def __call__(self, raw: str) -> int | None:
        raw = raw.strip()
        if raw in self._by_name:
            return self._by_name[raw]
        value = class_id(raw)
        if value is None or (self.names is not None and value >= len(self.names)):
            return None
        return value

    def describe(self) -> str:
        if self.names is None:
            return "a class id 0, 1, 2, ..."
        text = f"one of {list(range(len(self.names)))} or {self.names}"
        if len(text) <= 100:
            return text
        return f"a class id 0..{len(self.names) - 1} or one of the {len(self.names)} label names"

    def unknown(self, raw: str) -> str:
        return f"unknown label {_clip(raw.strip())}; expected {self.describe()}"


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


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(path, "file not found")
    if not path.is_file():
        raise DataError(path, "not a regular file")


def _csv_line_breaks(piece: bytes, after_cr: bool) -> int:
    """How many line ends ("\n", "\r\n" or a lone "\r", as a text file opened with newline="" reads
    them) ``piece`` holds; ``after_cr``: the bytes before it ended in "\r"."""
    n = piece.count(b"\n") + piece.count(b"\r") - piece.count(b"\r\n")
    return n - 1 if after_cr and piece.startswith(b"\n") else n


def _not_utf8_csv(path: Path) -> DataError:
    """The error for a CSV file that is not UTF-8: its first bad byte, the byte's offset and its line.
    Read again in blocks (an incomplete character at the end of a block waits for the next one)."""
    line, offset, carry, after_cr = 1, 0, b"", False
    try:
        with open(path, "rb") as fh:
            while True:
                block = fh.read(1 << 16)
                data = carry + block
                if not data:
                    break
                try:
                    data.decode("utf-8")
                    good = len(data)
                except UnicodeDecodeError as exc:
                    if exc.reason != "unexpected end of data" or not block:
                        line += _csv_line_breaks(data[: exc.start], after_cr)
                        where = f"byte 0x{data[exc.start]:02x} at offset {offset + exc.start}"
                        return DataError(path, f"not UTF-8 ({where})", line)
                    good = exc.start  # a character cut by the block's end
                line += _csv_line_breaks(data[:good], after_cr)
                after_cr = data[:good].endswith(b"\r") or (after_cr and good == 0)
                offset, carry = offset + good, data[good:]
    except OSError:
        pass
    return DataError(path, "not UTF-8")


def _sst_lines(path: Path):
    """(line number, text) of each line of an SST file: lines end at "\n" only (a U+2028, NEL or form
    feed is part of a sentence), a "\r" before it is dropped, a BOM at the start too."""
    _check_file(path)
    try:
        with open(path, "rb") as fh:
            lineno, offset = 0, 0
            while raw := fh.readline(MAX_LINE + 1):
                lineno += 1
                if len(raw) > MAX_LINE:
                    raise DataError(path, f"line is longer than {MAX_LINE // 2**20} MiB", lineno)
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    where = f"byte 0x{raw[exc.start]:02x} at offset {offset + exc.start}"
                    raise DataError(path, f"not UTF-8 ({where})", lineno) from None
                offset += len(raw)
                if lineno == 1:
                    line = line.removeprefix("\ufeff")
                yield lineno, line.removesuffix("\n").removesuffix("\r")
    except OSError as exc:
        raise DataError(path, f"cannot read ({exc.strerror or type(exc).__name__})") from None


def read_sst(path: str | Path, label_names: Sequence[str] | None = None) -> TextDataset:
    """Read ``label ||| sentence`` lines (SST / minllama format; UTF-8, with or without BOM; lines end at
    "\n" or "\r\n"). Blank lines are skipped.

    ``label`` is a class id, or a name from ``label_names`` (see :class:`_LabelMap`).
    """
    path = Path(path)
    labmap = _LabelMap(label_names)
    texts, labels, lines = [], [], []
    for lineno, line in _sst_lines(path):
        if not line.strip():
            continue
        if SST_SEPARATOR not in line:
            raise DataError(path, f"line has no '{SST_SEPARATOR}' separator (expected 'label ||| sentence')", lineno)
        raw_label, sentence = line.split(SST_SEPARATOR, 1)
        label = labmap(raw_label)
        if label is None:
            raise DataError(path, labmap.unknown(raw_label), lineno)
        sentence = sentence.strip()
        if not sentence:
            raise DataError(path, "empty sentence", lineno)
        texts.append(sentence)
        labels.append(label)
        lines.append(lineno)
    if not texts:
        raise DataError(path, "file is empty")
    return _finish(path, texts, labels, lines, label_names)


class _CsvLines:
    """The physical lines of a CSV file (opened with newline=""), for ``csv.reader``: each ends in a line
    break (one is added to an unterminated last line), none is over ``MAX_LINE`` characters, and
    ``exhausted`` says the reader asked past the end. A record that comes back after that was still in a
    quoted field at the end of the file (outside quotes a line break ends the record)."""

    def __init__(self, fh, path: Path):
        self._fh, self._path = fh, path
        self.exhausted = False
        self.count = 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self._fh.readline(MAX_LINE + 1)
        if not line:
            self.exhausted = True
            raise StopIteration
        self.count += 1
        if not line.endswith(("\n", "\r")):
            if len(line) > MAX_LINE:
                raise DataError(self._path, f"line is longer than {MAX_LINE} characters", self.count)
            line += "\n"
        return line


def _csv_records(path: Path):
    """(line where the record starts, fields) of each record of a CSV file, by the csv module on the file
    (a quoted field keeps its line breaks; U+2028, NEL or form feed are not line ends). Ends in a
    :class:`DataError` for a file that is not UTF-8, a quoted field never closed (naming the line where
    it opens) or a field over ``MAX_LINE`` characters."""
    _check_file(path)
    csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE))
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            lines = _CsvLines(fh, path)
            reader = csv.reader(lines)
            start = 1
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    raise DataError(path, f"not valid CSV ({str(exc)[:100]})", start) from None
                if lines.exhausted:  # the field's text holds each line end from where it opens to the end
                    last = row[-1]
                    opens = reader.line_num - (last.count("\n") + last.count("\r") - last.count("\r\n")) + 1
                    raise DataError(path, "a quoted field opened on this line is never closed", opens)
                yield start, row
                start = reader.line_num + 1
    except UnicodeDecodeError:
        raise _not_utf8_csv(path) from None
    except OSError as exc:
        raise DataError(path, f"cannot read ({exc.strerror or type(exc).__name__})") from None


def read_csv(
    path: str | Path,
    label_names: Sequence[str] | None = None,
    *,
    text_column: str = "review",
    label_column: str = "label",
) -> TextDataset:
    """Read a CSV with a header row (UTF-8, with or without BOM), e.g. ``label,review``.

    A quoted field may span lines (a review keeps its line breaks); a row's line is where it starts.
    ``label`` is a class id, or a name from ``label_names`` (see :class:`_LabelMap`)."""
    path = Path(path)
    labmap = _LabelMap(label_names)
    records = _csv_records(path)
    # the header is the first record that is not blank
    header_line, header = next(((n, r) for n, r in records if any(c.strip() for c in r)), (0, []))
    if not header:
        raise DataError(path, "file is empty")
    header = [h.strip() for h in header]
    for col in (text_column, label_column):
        if col not in header:
            raise DataError(path, f"header has no column {_clip(col)} (columns: {_clip(header)})", header_line)
    ti, li = header.index(text_column), header.index(label_column)
    texts, labels, lines = [], [], []
    for lineno, row in records:
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(ti, li) or not row[ti].strip():
            raise DataError(path, f"row has no {_clip(text_column)} value", lineno)
        label = labmap(row[li])
        if label is None:
            raise DataError(path, labmap.unknown(row[li]), lineno)
        texts.append(row[ti].strip())
        labels.append(label)
        lines.append(lineno)
    return _finish(path, texts, labels, lines, label_names)


def write_sst(path: str | Path, texts: Sequence[str], labels: Sequence[int]) -> None:
    """Write ``label ||| sentence`` lines (atomically; a sentence's whitespace, line breaks included,
    becomes single spaces)."""
    body = "".join(f"{int(label)} ||| {' '.join(text.split())}\n" for text, label in zip(texts, labels))
    atomic_write_text(path, body)


def read_texts(path: str | Path, fmt: str, label_names: Sequence[str] | None = None, *, text_column: str = "review",
               label_column: str = "label") -> TextDataset | list[str]:  # fmt: skip
    """Texts to label: ``lines`` (one text per line, blank lines skipped), ``sst`` (labelled lines) or
    ``csv`` (with a header; labelled when it has ``label_column``). A labelled file comes back as a
    :class:`TextDataset` (its labels checked against ``label_names``), an unlabelled one as its texts."""
    path = Path(path)
    if fmt == "sst":
        return read_sst(path, label_names)
    if fmt == "lines":
        texts = [text for _, text in _sst_lines(path) if text.strip()]
        if not texts:
            raise DataError(path, "file has no text")
        return texts
    if fmt != "csv":
        raise DataError(path, f"unknown format {_clip(fmt)} (csv, sst or lines)")
    records = _csv_records(path)
    header_line, header = next(((n, r) for n, r in records if any(c.strip() for c in r)), (0, []))
    header = [h.strip() for h in header]
    if label_column in header:
        return read_csv(path, label_names, text_column=text_column, label_column=label_column)
    if text_column not in header:
        raise DataError(path, f"header has no column {_clip(text_column)} (columns: {_clip(header)})", header_line)
    ti = header.index(text_column)
    texts = [row[ti] for _, row in records if len(row) > ti and row[ti].strip()]
    if not texts:
        raise DataError(path, "file has no text")
    return texts
