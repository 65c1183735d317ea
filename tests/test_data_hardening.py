"""The readers on hostile input: CSV records by the csv module on the file, SST lines split at "\\n" only,
a clear rule for labels and label-name files, atomic writes of the built-in sets, and property-based
tests (Hypothesis) of random and mutated files through every reader and ``load_splits``."""

import json

import pytest

from sentune.data import DataConfig, load_splits, read_csv, read_label_names, read_sst
from sentune.errors import DataError, SentuneError

NAMES = ["negative", "positive"]


def one_line_error(exc: BaseException, *paths) -> str:
    """The error is a SentuneError of one line of at most 300 characters naming one of ``paths``
    (and its line, where it has one)."""
    assert isinstance(exc, SentuneError), f"{type(exc).__name__}: {exc}"
    msg = str(exc)
    assert len(msg.splitlines()) == 1 and "\n" not in msg and "\r" not in msg and "\u2028" not in msg, repr(msg)
    assert len(msg) <= 300, msg
    line = getattr(exc, "line", None)
    where = [f"{p}:{line}: " if line is not None else f"{p}: " for p in paths]
    assert any(msg.startswith(w) for w in where), (msg, where)
    return msg


# ---- 3. labels and label-name files -------------------------------------------------------------


NOT_CLASS_IDS = ["1e30", "1e0", "nan", "inf", "-inf", "-0", "+1", "03", "3.5", "1_0", "\uff13", "\u0663", "0x1", ""]


@pytest.mark.parametrize("label", NOT_CLASS_IDS + ["99999999999999999999", "2147483648"])
@pytest.mark.parametrize("fmt", ["sst", "csv"])
def test_a_label_that_is_no_class_id_is_a_one_line_error(tmp_path, label, fmt):
    if fmt == "sst":
        f = tmp_path / "s.txt"
        f.write_text(f"0 ||| bad\n1 ||| good\n{label} ||| odd\n", encoding="utf-8")
        read, line = read_sst, 3
    else:
        f = tmp_path / "s.csv"
        f.write_text(f"label,review\n0,bad\n1,good\n{label},odd\n", encoding="utf-8")
        read, line = read_csv, 4
    for names in (None, [f"c{i}" for i in range(4)]):
        with pytest.raises(DataError) as exc:
            read(f, names)
        assert one_line_error(exc.value, f).startswith(f"{f}:{line}: unknown label ")


@pytest.mark.parametrize("label, cid", [("3", 3), (" 3", 3), ("3 ", 3), ("\t3", 3), ("3.0", 3), ("0.00", 0), ("c3", 3)])
def test_a_label_that_is_a_class_id_or_a_name_is_read(tmp_path, label, cid):
    f = tmp_path / "s.txt"
    f.write_text(f"0 ||| bad\n1 ||| good\n{label} ||| odd\n", encoding="utf-8")
    assert read_sst(f, [f"c{i}" for i in range(4)]).labels.tolist() == [0, 1, cid]


def test_a_huge_class_id_without_label_names_is_a_one_line_error(tmp_path):
    f = tmp_path / "train.txt"
    f.write_text("0 ||| bad\n1 ||| good\n99999999999999999999 ||| odd\n", encoding="utf-8")
    (tmp_path / "dev.txt").write_text("0 ||| bad\n", encoding="utf-8")
    with pytest.raises(DataError) as exc:
        load_splits(DataConfig(train=f, dev=tmp_path / "dev.txt"))
    one_line_error(exc.value, f)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{" 0": "neg", "1": "pos"}', "label-names key ' 0' is not a class id"),
        ('{"00": "neg", "1": "pos"}', "label-names key '00' is not a class id"),
        ('{"0": "neg", "-1": "pos"}', "label-names key '-1' is not a class id"),
        ('{"0": "neg", "1.0": "pos"}', "label-names key '1.0' is not a class id"),
        ('{"zero": "neg"}', "label-names key 'zero' is not a class id"),
        ('{"0": "neg", "1": "pos", "0": "bad"}', "key '0' is given twice"),
        ('{"0": "neg", "2": "pos"}', "label ids must be 0..1; missing [1]"),
        ('{"0": 0, "1": 1}', "label name 0 is 0, not a string"),
        ('{"0": "neg", "1": null}', "label name 1 is None, not a string"),
        ('{"0": "neg", "1": ["pos"]}', "label name 1 is ['pos'], not a string"),
        ('["neg", 1]', "label name 1 is 1, not a string"),
        ('["neg", "neg"]', "label names 0 and 1 are both 'neg'; they must be unique"),
        ('["neg", " pos"]', "label name 1 (' pos') is empty or has surrounding whitespace"),
        ('["neg", ""]', "label name 1 ('') is empty or has surrounding whitespace"),
        ('["1", "0"]', "label name 0 ('1') reads as class id 1"),
        ("[]", "label names must be a JSON list of names or an {id: name} object"),
        ("{}", "label names must be a JSON list of names or an {id: name} object"),
        ('"neg"', "label names must be a JSON list of names or an {id: name} object"),
        ("[" * 100_000, "not valid JSON (nested too deeply)"),
        ('{"0":' * 100_000, "not valid JSON (nested too deeply)"),
        ("[" + "9" * 5000 + "]", "not valid JSON (Exceeds the limit (4300 digits)"),
        ('["neg", "pos"', "not valid JSON (Expecting ',' delimiter: line 1 column 14 (char 13))"),
        (json.dumps([f"name{i}" for i in range(200_000)]), "label-names file is over 1024 KiB"),
        (b'["neg", "\xff"]', "not UTF-8 (byte 0xff at offset 9)"),
    ],
)
def test_a_bad_label_names_file_is_a_one_line_error(tmp_path, content, message):
    f = tmp_path / "labels.json"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as exc:
        read_label_names(f)
    assert one_line_error(exc.value, f).startswith(f"{f}: {message}")


def test_label_names_files_that_are_fine(tmp_path):
    f = tmp_path / "labels.json"
    f.write_text('{"1": "pos", "0": "neg"}')
    assert read_label_names(f) == ["neg", "pos"]
    f.write_bytes(b'\xef\xbb\xbf["0", "1", "2.0"]')
    assert read_label_names(f) == ["0", "1", "2.0"]
