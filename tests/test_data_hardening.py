"""The readers on hostile input: CSV records by the csv module on the file, SST lines split at "\\n" only,
a clear rule for labels and label-name files, atomic writes of the built-in sets, and property-based
tests (Hypothesis) of random and mutated files through every reader and ``load_splits``."""

import csv
import io
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sentune.data import DataConfig, TextDataset, load_splits, read_csv, read_label_names, read_sst, write_sst
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


# ---- 5. property-based: random and mutated files through every reader ---------------------------

N_RANDOM = 200  # examples per target of random bytes
N_MUTATED = 250  # examples per target of mutated valid files
N_ROUNDTRIP = 150  # examples per round-trip target
N_SPLITS = 150  # examples of load_splits over mutated files
HYPO = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def check_dataset(ds: TextDataset, names) -> None:
    """A successful read: rows that are consistent."""
    assert isinstance(ds, TextDataset) and len(ds) > 0
    assert len(ds.texts) == len(ds.labels) == len(ds.lines)
    assert all(isinstance(t, str) and t and t == t.strip() for t in ds.texts)
    assert ds.labels.dtype == np.int64 and ((ds.labels >= 0) & (ds.labels < ds.num_classes)).all()
    if names is not None:
        assert ds.label_names == list(names)
    else:
        assert ds.label_names == [str(i) for i in range(ds.num_classes)]
    assert all(isinstance(n, int) and n >= 1 for n in ds.lines) and ds.lines == sorted(set(ds.lines))


def outcome(read, path, names, *others):
    try:
        ds = read(path, names)
    except Exception as exc:  # noqa: BLE001 - the point: any other type fails the test
        event("refused")
        one_line_error(exc, path, *others)
        return None
    event("read")
    check_dataset(ds, names)
    return ds


@pytest.fixture(scope="module")
def hypo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("hypo")


label_names_strategy = st.sampled_from([None, NAMES, ["0", "1", "2"]])
# pieces that break formats: quotes, separators, line ends of every kind, control characters, a BOM,
# labels that are no class id (all UTF-8), and bytes that are not UTF-8
TEXT_PIECES = [
    '"', '""', ",", "|||", "||", "\n", "\r", "\r\n", "\x00", "\x0b", "\x0c", "\x1c", "\x1e", "\u2028", "\u2029",
    "\x85", "\ufeff", "1e30", "-0", "nan", "99999999999999999999", " ", "\t", "好", "label", "review", "negative",
    "0", "1", "2",
]  # fmt: skip
BAD_UTF8 = [b"\xff", b"\xc3", b"\xe4\xbd", b"\xed\xa0\x80", b"\xc0\xaf"]
text_piece = st.sampled_from([t.encode() for t in TEXT_PIECES])
mutation = st.one_of(
    st.tuples(st.just("insert"), st.floats(0, 1), text_piece),
    st.tuples(st.just("insert"), st.floats(0, 1), text_piece),  # (twice: most mutations keep the file UTF-8)
    st.tuples(st.just("insert"), st.floats(0, 1), st.sampled_from(BAD_UTF8) | st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 20)),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(0)),
)


def _boundary(data: bytes, at: int) -> int:
    """``at`` moved on to the start of a UTF-8 character (so a cut or an insertion keeps the text UTF-8)."""
    while at < len(data) and 0x80 <= data[at] <= 0xBF:
        at += 1
    return at


def mutate(data: bytes, mutations) -> bytes:
    """Apply (kind, where in 0..1, argument) mutations; only the bytes that are not UTF-8 break the encoding."""
    for kind, where, arg in mutations:
        at = _boundary(data, int(where * len(data)))
        if kind == "insert":
            data = data[:at] + arg + data[at:]
        elif kind == "delete":
            data = data[:at] + data[_boundary(data, at + arg) :]
        else:
            data = data[:at]
    return data


texts = st.text(min_size=1, max_size=40).filter(lambda t: t.strip() != "")
sst_texts = texts.filter(lambda t: "\n" not in t)
# the labels a file may hold for each choice of label names (ids written as the rule allows, names)
VALID_LABELS = {
    None: ["0", "1", " 1", "1.0"],
    "two": ["0", "1", "negative", "positive", " 1 ", "0.0"],
    "three": ["0", "1", "2", " 2"],
}
NAME_SETS = {None: None, "two": NAMES, "three": ["0", "1", "2"]}
# labels a mutation may put in a row's place
ODD_LABELS = NOT_CLASS_IDS + ["99999999999999999999", "2147483648", "3", "3.0", " 0 ", "1.00", "2"]


@st.composite
def labelled(draw, text_strategy, odd: bool = False):
    """(label names, rows) whose labels suit the names: a valid file before it is mutated; with ``odd``,
    some rows' labels are replaced by ones that are no class id or out of range."""
    key = draw(st.sampled_from(list(VALID_LABELS)))
    label = st.sampled_from(VALID_LABELS[key])
    if odd:
        label = st.one_of(label, label, label, st.sampled_from(ODD_LABELS))
    rows = draw(st.lists(st.tuples(label, text_strategy), min_size=1, max_size=8))
    return NAME_SETS[key], rows


def check_csv_lines(ds, path) -> None:
    """Each row starts on a line of the file: lines end at "\n", "\r\n" or "\r" only, as a text file
    opened with newline="" reads them (not at U+2028, NEL, form feed, ...)."""
    if ds is not None:
        assert ds.lines[-1] <= len(io.StringIO(path.read_bytes().decode("utf-8-sig"), newline="").readlines())


def check_sst_lines(ds, path) -> None:
    """Each sentence is on its line of the file: lines end at "\n" only."""
    if ds is not None:
        file_lines = path.read_bytes().decode("utf-8-sig").split("\n")
        assert all(text in file_lines[line - 1] for text, line in zip(ds.texts, ds.lines))


def csv_bytes(rows, bom: bool) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)  # "\r\n" line ends; fields with ",", '"', "\r" or "\n" quoted
    writer.writerow(["label", "review"])
    writer.writerows(rows)
    return (b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode("utf-8")


def sst_bytes(rows) -> bytes:
    return "".join(f"{label} ||| {text}\n" for label, text in rows).encode("utf-8")


# random input: any bytes, or the pieces that matter to the formats (and words) in any order
random_pieces = st.lists(text_piece | st.sampled_from([b"ab", b"good film", b" ||| "]), max_size=60).map(b"".join)
random_input = st.one_of(st.binary(max_size=300), random_pieces)


@settings(max_examples=N_RANDOM, **HYPO)
@given(data=random_input, header=st.booleans(), names=label_names_strategy)
def test_random_bytes_as_a_csv_file(hypo_dir, data, header, names):
    f = hypo_dir / "random.csv"
    f.write_bytes((b"label,review\n" if header else b"") + data)
    check_csv_lines(outcome(read_csv, f, names), f)


@settings(max_examples=N_RANDOM, **HYPO)
@given(data=random_input, names=label_names_strategy)
def test_random_bytes_as_an_sst_file(hypo_dir, data, names):
    f = hypo_dir / "random.txt"
    f.write_bytes(data)
    check_sst_lines(outcome(read_sst, f, names), f)


@settings(max_examples=N_RANDOM, **HYPO)
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
            max_leaves=12,
        ).map(lambda v: json.dumps(v).encode()),
        st.integers(1, 5000).map(lambda n: b"[" * n + b'"a"' + b"]" * n),  # nested deeper than json.loads goes
        st.dictionaries(
            st.sampled_from(["0", "1", "2", " 0", "00", "-1", "1.0", "x"]),
            st.text(max_size=4) | st.integers(),
            min_size=1,
            max_size=3,
        ).map(lambda d: json.dumps(d).encode()),
    ),
    mutations=st.lists(mutation, max_size=3),
)
def test_random_bytes_and_json_as_a_label_names_file(hypo_dir, data, mutations):
    f = hypo_dir / "labels.json"
    f.write_bytes(mutate(data, mutations))
    try:
        names = read_label_names(f)
    except Exception as exc:  # noqa: BLE001
        one_line_error(exc, f)
        return
    assert names and all(isinstance(n, str) and n and n == n.strip() for n in names)
    assert len(set(names)) == len(names)
    raw = json.loads(f.read_bytes().decode("utf-8-sig"))  # a file read is JSON, and the names are its own
    assert names == (raw if isinstance(raw, list) else [raw[str(i)] for i in range(len(raw))])


@settings(max_examples=N_MUTATED, **HYPO)
@given(file=labelled(texts, odd=True), bom=st.booleans(), mutations=st.lists(mutation, max_size=4))
def test_a_mutated_csv_file(hypo_dir, file, bom, mutations):
    names, rows = file
    f = hypo_dir / "mutated.csv"
    f.write_bytes(mutate(csv_bytes(rows, bom), mutations))
    check_csv_lines(outcome(read_csv, f, names), f)


@settings(max_examples=N_MUTATED, **HYPO)
@given(file=labelled(sst_texts, odd=True), mutations=st.lists(mutation, max_size=4))
def test_a_mutated_sst_file(hypo_dir, file, mutations):
    names, rows = file
    f = hypo_dir / "mutated.txt"
    f.write_bytes(mutate(sst_bytes(rows), mutations))
    check_sst_lines(outcome(read_sst, f, names), f)


@settings(max_examples=N_ROUNDTRIP, **HYPO)
@given(file=labelled(texts), bom=st.booleans())
def test_what_csv_writer_writes_reads_back(hypo_dir, file, bom):
    names, rows = file
    f = hypo_dir / "roundtrip.csv"
    f.write_bytes(csv_bytes(rows, bom))
    ds = read_csv(f, names)
    assert ds.texts == [t.strip() for _, t in rows]
    assert ds.labels.tolist() == [class_of(lab, names) for lab, _ in rows]


@settings(max_examples=N_ROUNDTRIP, **HYPO)
@given(file=labelled(sst_texts))
def test_sst_lines_read_back(hypo_dir, file):
    names, rows = file
    f = hypo_dir / "roundtrip.txt"
    f.write_bytes(sst_bytes(rows))
    ds = read_sst(f, names)
    assert ds.texts == [t.strip() for _, t in rows] and ds.lines == list(range(1, len(rows) + 1))
    assert ds.labels.tolist() == [class_of(lab, names) for lab, _ in rows]


def class_of(label: str, names) -> int:
    label = label.strip()
    return names.index(label) if names and label in names else int(float(label))


@settings(max_examples=N_SPLITS, **HYPO)
@given(
    fmt=st.sampled_from(["csv", "sst"]),
    train_rows=st.lists(st.tuples(st.sampled_from(["0", "1", "2"]), sst_texts), min_size=1, max_size=12),
    mutations=st.lists(mutation, max_size=3),
    names=st.sampled_from([None, ["negative", "positive", "neutral"], "file"]),
    names_file=st.binary(max_size=40) | st.just(b'["negative", "positive", "neutral"]'),
    cut=st.sampled_from([{}, {"split": [0.8, 0.1, 0.1]}, {"split": [0.5, 0.5, 0.0]}, {"max_rows": {"train": 2}}]),
)  # fmt: skip
def test_load_splits_over_mutated_files(hypo_dir, fmt, train_rows, mutations, names, names_file, cut):
    ext = ".csv" if fmt == "csv" else ".txt"
    train, dev, labels = hypo_dir / f"train{ext}", hypo_dir / f"dev{ext}", hypo_dir / "names.json"
    data = csv_bytes(train_rows, False) if fmt == "csv" else sst_bytes(train_rows)
    train.write_bytes(mutate(data, mutations))
    dev.write_bytes(data)
    labels.write_bytes(names_file)
    paths = {"train": train} if "split" in cut else {"train": train, "dev": dev}
    label_names = labels if names == "file" else names
    try:
        splits = load_splits(DataConfig(**paths, label_names=label_names, **cut))
    except Exception as exc:  # noqa: BLE001
        one_line_error(exc, train, dev, labels, "data.label_names")
        return
    for ds in (splits.train, splits.dev) + ((splits.test,) if splits.test is not None else ()):
        check_dataset(ds, splits.label_names)
    assert np.count_nonzero(splits.train.class_counts()) >= 2 or "max_rows" in cut
