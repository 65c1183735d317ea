"""The readers on hostile input: CSV records by the csv module on the file, SST lines split at "\\n" only,
a clear rule for labels and label-name files, atomic writes of the built-in sets, and property-based
tests (Hypothesis) of random and mutated files through every reader and ``load_splits``."""

import json
import os

import pytest

from sentune.data import DataConfig, load_splits, read_csv, read_label_names, read_sst, write_sst
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


# ---- 1. CSV: records by the csv module on the file object -------------------------------------------


def test_csv_a_quoted_review_spanning_lines_keeps_its_line_breaks(tmp_path):
    f = tmp_path / "w.csv"
    f.write_bytes(b'label,review\n1,"good\nmovie"\n0,"bad\r\nfilm, really"\n1,fine\n')
    ds = read_csv(f, NAMES)
    assert ds.texts == ["good\nmovie", "bad\r\nfilm, really", "fine"]
    assert ds.labels.tolist() == [1, 0, 1]
    assert ds.lines == [2, 4, 6]  # where each record starts


@pytest.mark.parametrize(
    "content, line",
    [
        # 100 rows; row 5's quote is never closed: it would swallow rows 5..100 (pandas refuses the file)
        ("label,review\n" + "".join(f"{i % 2},{chr(34) if i == 5 else ''}review {i}\n" for i in range(1, 101)), 6),
        ('label,review\n1,ok\n0,"never closed', 3),  # no line end at the end of the file
        ('label,review\n1,ok\n0,"a\nb","c\nd\n', 4),  # the record starts on line 3, the unclosed field on 4
        ('label,review\r1,ok\r0,"bad\rfilm\r', 3),  # lone CR line ends
    ],
)
def test_csv_an_unclosed_quote_names_the_line_where_it_opens(tmp_path, content, line):
    f = tmp_path / "w.csv"
    f.write_bytes(content.encode())
    with pytest.raises(DataError) as exc:
        read_csv(f, NAMES)
    msg = one_line_error(exc.value, f)
    assert msg == f"{f}:{line}: a quoted field opened on this line is never closed"


def test_csv_unicode_line_separators_stay_in_the_field_and_lines_are_right(tmp_path):
    f = tmp_path / "w.csv"
    body = "label,review\n1,a\u2028b\n0,c\x85d\n1,e\x0cf\n0,g\x1ch\u2029i\n"
    f.write_text(body, encoding="utf-8")
    ds = read_csv(f, NAMES)
    assert ds.texts == ["a\u2028b", "c\x85d", "e\x0cf", "g\x1ch\u2029i"] and ds.lines == [2, 3, 4, 5]
    f.write_text(body + "neutral,meh\n", encoding="utf-8")
    with pytest.raises(DataError) as exc:
        read_csv(f, NAMES)
    assert one_line_error(exc.value, f).startswith(f"{f}:6: unknown label 'neutral'")


def test_csv_not_utf8_with_lone_cr_line_ends_names_the_line(tmp_path):
    f = tmp_path / "w.csv"
    f.write_bytes(b"label,review\r1,ok\r1,fine\r0," + "\u574f".encode("gbk") + b"\r")
    with pytest.raises(DataError) as exc:
        read_csv(f, NAMES)
    assert one_line_error(exc.value, f).startswith(f"{f}:4: not UTF-8 (byte 0x")


def test_csv_a_field_over_the_csv_default_limit_is_read(tmp_path):
    f = tmp_path / "w.csv"
    long_review = "word " * 60_000  # 300 KB: over csv's 128 KiB default field limit
    f.write_text(f'label,review\n1,"{long_review}"\n0,{long_review}\n', encoding="utf-8")
    ds = read_csv(f, NAMES)
    assert [len(t) for t in ds.texts] == [len(long_review.strip())] * 2


@pytest.mark.parametrize(
    "review, message",
    [
        ("x" * (16 * 2**20 + 10), "line is longer than 16777216 characters"),  # one line
        ('"' + ("y" * 2**20 + "\n") * 17 + '"', "not valid CSV (field larger than field limit (16777216))"),
    ],
)
def test_csv_a_field_over_16_mib_is_a_one_line_error(tmp_path, review, message):
    f = tmp_path / "w.csv"
    f.write_text(f"label,review\n1,ok\n0,{review}\n", encoding="utf-8")
    with pytest.raises(DataError) as exc:
        read_csv(f, NAMES)
    assert one_line_error(exc.value, f) == f"{f}:3: {message}"


def test_csv_header_problems_quote_little_of_the_input(tmp_path):
    f = tmp_path / "w.csv"
    f.write_text("\n\n" + ",".join(f'"col\n{i}"' for i in range(200)) + "\n1,ok\n", encoding="utf-8")
    with pytest.raises(DataError) as exc:
        read_csv(f, NAMES)
    assert one_line_error(exc.value, f).startswith(f"{f}:3: header has no column 'review' (columns: [")


# ---- 2. SST: lines end at "\n" only ---------------------------------------------------------------


def test_sst_unicode_line_separators_stay_in_the_sentence_and_lines_are_right(tmp_path):
    f = tmp_path / "s.txt"
    body = "0 ||| a\u2028b\r\n1 ||| c\x85d\n0 ||| e\x0cf\n1 ||| g\x1ch\u2029i\x0bj\r\n"
    f.write_text(body, encoding="utf-8", newline="")
    ds = read_sst(f)
    assert ds.texts == ["a\u2028b", "c\x85d", "e\x0cf", "g\x1ch\u2029i\x0bj"] and ds.lines == [1, 2, 3, 4]
    f.write_text(body + "x ||| bad\n", encoding="utf-8", newline="")
    with pytest.raises(DataError) as exc:
        read_sst(f)
    assert one_line_error(exc.value, f).startswith(f"{f}:5: unknown label 'x'")
    f.write_bytes(body.encode() + b"1 ||| caf\xe9\n")
    with pytest.raises(DataError) as exc:
        read_sst(f)
    assert one_line_error(exc.value, f).startswith(f"{f}:5: not UTF-8 (byte 0xe9 at offset ")


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


# ---- load_splits: label names given in the job; a cut too small is a one-line error ------------


def test_label_names_given_in_the_job_follow_the_same_rule(tmp_path):
    f = tmp_path / "train.txt"
    f.write_text("0 ||| bad\n1 ||| good\n", encoding="utf-8")
    with pytest.raises(DataError) as exc:
        load_splits(DataConfig(train=f, dev=f, label_names=["neg", "neg"]))
    assert one_line_error(exc.value, "data.label_names").endswith("are both 'neg'; they must be unique")


def test_a_file_too_small_to_split_is_a_one_line_error(tmp_path):
    f = tmp_path / "train.txt"
    f.write_text("0 ||| bad\n1 ||| good\n", encoding="utf-8")
    with pytest.raises(DataError) as exc:
        load_splits(DataConfig(train=f, split=[0.8, 0.1, 0.1]))
    assert one_line_error(exc.value, f).startswith(f"{f}: 1 rows are too few to cut this way")


def test_max_rows_that_leave_too_few_rows_for_every_class_are_not_stratified(tmp_path):
    f = tmp_path / "train.txt"
    f.write_text("".join(f"{i % 3} ||| row {i}\n" for i in range(7)), encoding="utf-8")
    splits = load_splits(DataConfig(train=f, dev=f, max_rows={"train": 6}))
    assert len(splits.train) == 6


# ---- 4. the built-in sets are written atomically ------------------------------------------------


def _prepare_small_sets(monkeypatch, home):
    from sentune.data import _builtin

    monkeypatch.setenv("SENTUNE_HOME", str(home))
    monkeypatch.setattr(
        _builtin, "_fetch_zh_reviews", lambda: ([f"差{i}" for i in range(30)], [f"好{i}" for i in range(30)])
    )
    monkeypatch.setattr(
        _builtin, "_fetch_movie_snippets", lambda: [(i, 3.0 if i % 2 else -3.0, f"review {i}") for i in range(1, 60)]
    )
    return _builtin


def test_the_builtin_sets_are_written_atomically(tmp_path, monkeypatch):
    _builtin = _prepare_small_sets(monkeypatch, tmp_path)
    _builtin.prepare_builtin(["zh-reviews", "en-movie-5"])
    outside = tmp_path / "outside"
    outside.mkdir()
    for name, split_file in (("zh-reviews", "train.csv"), ("en-movie-5", "train.txt")):
        root = tmp_path / "data" / name
        # a file written in place changes under every hard link to it; one replaced whole does not
        for small in ("labels.json", "counts.json", split_file):
            os.link(root / small, outside / f"{name}-{small}")
        # the old fixed temporary name, planted as a symlink: never followed
        victim = outside / f"{name}-victim"
        victim.write_text("keep me")
        (root / f"{split_file}.tmp").symlink_to(victim)
    _builtin.prepare_builtin(["zh-reviews", "en-movie-5"], force=True)
    for name, split_file in (("zh-reviews", "train.csv"), ("en-movie-5", "train.txt")):
        root = tmp_path / "data" / name
        for small in ("labels.json", "counts.json", split_file):
            assert not (root / small).samefile(outside / f"{name}-{small}"), small
            assert (outside / f"{name}-{small}").read_bytes() == (root / small).read_bytes()  # same content again
        assert (outside / f"{name}-victim").read_text() == "keep me"
        assert not [p.name for p in root.iterdir() if p.name.startswith(".")]  # no stray temporary file
    assert load_splits(DataConfig(builtin="zh-reviews")).num_classes == 2


def test_write_sst_never_follows_a_planted_temporary_name(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "out.txt.tmp").symlink_to(victim)
    write_sst(tmp_path / "out.txt", ["a\u2028b\nc", "d"], [1, 0])
    assert victim.read_text() == "keep me"
    assert read_sst(tmp_path / "out.txt").texts == ["a b c", "d"]


def test_a_damaged_builtin_cache_is_made_again(tmp_path, monkeypatch):
    _builtin = _prepare_small_sets(monkeypatch, tmp_path)
    root = tmp_path / "data" / "zh-reviews"
    root.mkdir(parents=True)
    (root / "counts.json").write_bytes(b'{"train": [1, 2')  # cut short by a crash of an older sentune
    assert _builtin.ensure_builtin("zh-reviews") == root
    assert json.loads((root / "counts.json").read_text())["version"] == _builtin.PREP_VERSION
    (root / "counts.json").write_bytes(b"\xff[]")
    _builtin.ensure_builtin("zh-reviews")
    assert json.loads((root / "counts.json").read_text())["version"] == _builtin.PREP_VERSION
