import json

import pytest

from conftest import synthetic_rows, write_sst_file
from sentune.data import DataConfig, load_splits, read_csv, read_label_names, read_sst
from sentune.data._builtin import five_class
from sentune.errors import ConfigError, DataError


def test_read_sst_with_label_names(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("0 ||| bad film\n\n1 ||| good film\nneg ||| awful\n", encoding="utf-8")
    names = tmp_path / "labels.json"
    names.write_text(json.dumps({"0": "neg", "1": "pos"}))
    ds = read_sst(f, read_label_names(names))
    assert ds.texts == ["bad film", "good film", "awful"]
    assert ds.labels.tolist() == [0, 1, 0]
    assert ds.lines == [1, 3, 4]
    assert ds.label_names == ["neg", "pos"]


@pytest.mark.parametrize(
    "content, message, line",
    [
        ("0 ||| fine\n1 the missing separator\n", "has no '|||' separator", 2),
        ("0 ||| fine\n7 ||| unknown\n", "unknown label '7'", 2),
        ("0 ||| fine\nx ||| not a label\n", "unknown label 'x'", 2),
        ("0 ||| fine\n1 |||   \n", "empty sentence", 2),
    ],
)
def test_read_sst_rejects_bad_lines(tmp_path, content, message, line):
    f = tmp_path / "bad.txt"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as exc:
        read_sst(f, ["neg", "pos"])
    assert str(exc.value).startswith(f"{f}:{line}: ")
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match=r"nope\.txt: file not found"):
        read_sst(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    with pytest.raises(DataError, match=r"empty\.txt: file is empty"):
        read_sst(tmp_path / "empty.txt")


def test_single_class_train_split_is_rejected(tmp_path):
    write_sst_file(tmp_path / "train.txt", [(1, "good"), (1, "great")])
    write_sst_file(tmp_path / "dev.txt", [(0, "bad"), (1, "good")])
    with pytest.raises(DataError, match=r"train\.txt: train split has a single class \('1'\)"):
        load_splits(DataConfig(train=tmp_path / "train.txt", dev=tmp_path / "dev.txt"))


@pytest.mark.parametrize(
    "labels, line, message",
    [
        ([0, 1, 2, 3, 4, 7, 4], 6, "label 7 leaves classes 5, 6 with no train row; give label_names or fix the label"),
        ([1, 2, 3, 3], 3, "label 3 leaves class 0 with no train row"),  # 1-based labels: class 0 has no row
        ([0, 1, 10**9], 3, "label 1000000000 leaves classes 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ... (999999998 in all)"),
    ],
)
def test_an_integer_label_that_leaves_classes_without_a_train_row(tmp_path, labels, line, message):
    write_sst_file(tmp_path / "train.txt", [(label, f"sentence {i}") for i, label in enumerate(labels)])
    write_sst_file(tmp_path / "dev.txt", [(0, "bad"), (1, "good")])
    with pytest.raises(ConfigError) as exc:
        load_splits(DataConfig(train=tmp_path / "train.txt", dev=tmp_path / "dev.txt"))
    assert str(exc.value).startswith(f"{tmp_path / 'train.txt'}:{line}: {message}")
    assert "\n" not in str(exc.value)
    # with label names given, the classes are the names'
    names = [f"c{i}" for i in range(8)]
    write_sst_file(tmp_path / "dev.txt", [(0, "bad"), (7, "good")])
    if max(labels) < 8:
        cfg = DataConfig(train=tmp_path / "train.txt", dev=tmp_path / "dev.txt", label_names=names)
        assert load_splits(cfg).num_classes == 8


def test_an_integer_label_without_a_train_row_in_a_csv(tmp_path):
    f = tmp_path / "train.csv"
    f.write_text("label,review\n0,bad\n1,good\n3,odd\n", encoding="utf-8")
    (tmp_path / "dev.csv").write_text("label,review\n0,bad\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.csv:4: label 3 leaves class 2 with no train row"):
        load_splits(DataConfig(train=f, dev=tmp_path / "dev.csv"))


def test_dev_label_outside_train_classes(tmp_path):
    write_sst_file(tmp_path / "train.txt", [(0, "bad"), (1, "good")])
    write_sst_file(tmp_path / "dev.txt", [(0, "bad"), (2, "meh")])
    with pytest.raises(DataError, match=r"dev\.txt:2: unknown label '2'; expected one of \[0, 1\]"):
        load_splits(DataConfig(train=tmp_path / "train.txt", dev=tmp_path / "dev.txt"))


def test_csv_reader_bom_and_errors(tmp_path):
    f = tmp_path / "w.csv"
    f.write_bytes('label,review\n1,好开心\n0,"太差了, 不推荐"\n'.encode("utf-8-sig"))
    ds = read_csv(f, ["0", "1"])
    assert ds.texts == ["好开心", "太差了, 不推荐"] and ds.labels.tolist() == [1, 0]
    f.write_bytes(b"label,review\n1,ok\n0,\n")
    with pytest.raises(DataError, match=r"w\.csv:3: row has no 'review' value"):
        read_csv(f, ["0", "1"])
    f.write_bytes(b"label,review\n1,ok\n" + "0,坏\n".encode("gbk"))
    with pytest.raises(DataError, match=r"w\.csv:3: not UTF-8"):
        read_csv(f, ["0", "1"])
    f.write_bytes(b"label,review\n1,ok\n5,hm\n")
    with pytest.raises(DataError, match=r"w\.csv:3: unknown label '5'"):
        read_csv(f, ["0", "1"])


def test_subset_is_stratified_and_seeded(tmp_path):
    write_sst_file(tmp_path / "train.txt", synthetic_rows(300, 0, classes=3))
    write_sst_file(tmp_path / "dev.txt", synthetic_rows(60, 1, classes=3))
    cfg = DataConfig(train=tmp_path / "train.txt", dev=tmp_path / "dev.txt", max_rows={"train": 90})
    a, b = load_splits(cfg), load_splits(cfg)
    assert len(a.train) == 90 and a.train.texts == b.train.texts
    assert a.train.class_counts().tolist() == [30, 30, 30]


def test_builtin_movie_sets():
    five = load_splits(DataConfig(builtin="en-movie-5"))
    assert five.label_names == ["very_negative", "negative", "neutral", "positive", "very_positive"]
    assert len(five.train) + len(five.dev) + len(five.test) == 10605
    assert (five.train.class_counts() > 0).all()
    two = load_splits(DataConfig(builtin="en-movie-2-imbalanced"))
    counts = two.train.class_counts() + two.dev.class_counts() + two.test.class_counts()
    assert counts[0] == 10605 - 5331
    assert counts[0] / counts[1] == pytest.approx(3.4, abs=0.01)
    assert [five_class(r) for r in (-4.0, -2.41, -2.4, 0.0, 0.79, 0.8, 2.4, 4.0)] == [0, 0, 1, 2, 2, 3, 4, 4]


def test_a_cache_from_an_older_preparation_is_made_again(tmp_path, monkeypatch):
    from sentune.data import _builtin

    monkeypatch.setenv("SENTUNE_HOME", str(tmp_path))
    made = []
    monkeypatch.setattr(
        _builtin,
        "_fetch_movie_snippets",
        lambda: made.append(1) or [(1, 3.0, "great"), (2, -3.0, "awful"), (5400, 0.0, "fine")] * 20,
    )
    stale = tmp_path / "data" / "en-movie-5"
    stale.mkdir(parents=True)
    (stale / "counts.json").write_text(json.dumps({"train": [1]}))  # no version: an older sentune made it
    _builtin.ensure_builtin("en-movie-5")
    assert made == [1]
    assert json.loads((stale / "counts.json").read_text())["version"] == _builtin.PREP_VERSION
    _builtin.ensure_builtin("en-movie-5")
    assert made == [1]  # up to date: not made again


@pytest.mark.parametrize(
    "content, message, line",
    [
        ("label,review\n1,好开心\n0,\n", "row has no 'review' value", 3),
        ("label,review\n1,好开心\n0,   \n", "row has no 'review' value", 3),
        ("label,review\n1,好开心\n0\n", "row has no 'review' value", 3),
        (
            "label,review\n1,好开心\n2,一般般\n",
            "unknown label '2'; expected one of [0, 1] or ['negative', 'positive']",
            3,
        ),
        ("label,review\n1,好开心\nneutral,一般般\n", "unknown label 'neutral'", 3),
    ],
)
def test_weibo_csv_errors_name_file_and_line(tmp_path, content, message, line):
    f = tmp_path / "weibo_senti_100k.csv"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as exc:
        read_csv(f, ["negative", "positive"])
    assert str(exc.value).startswith(f"{f}:{line}: ")
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_weibo_csv_not_utf8_names_the_line(tmp_path):
    f = tmp_path / "weibo_senti_100k.csv"
    f.write_bytes("label,review\n1,好开心\n1,还行\n".encode() + "0,太差了\n".encode("gb18030"))
    with pytest.raises(DataError) as exc:
        read_csv(f, ["negative", "positive"])
    assert str(exc.value).startswith(f"{f}:4: not UTF-8 (byte 0x")
    assert "\n" not in str(exc.value)


def test_zh_review_rows_dedupe_and_drop_ambiguous():
    from sentune.data._builtin import zh_review_rows

    texts, labels = zh_review_rows(["差", "差", "一般  般", "", "还行"], ["好", "还行", "好 ", "一般 般"])
    assert texts == ["差", "好"] and labels.tolist() == [0, 1]


def test_zh_reviews_preparation_writes_weibo_csv(tmp_path, monkeypatch):
    from sentune.data import _builtin

    monkeypatch.setenv("SENTUNE_HOME", str(tmp_path))
    neg = [f"差评{i}，不推荐" for i in range(40)] + ["重复"] * 3 + ["两边都有"]
    pos = [f"好评{i}, 推荐" for i in range(30)] + ["两边都有"]
    monkeypatch.setattr(_builtin, "_fetch_zh_reviews", lambda: (neg, pos))
    monkeypatch.setattr(_builtin, "_fetch_movie_snippets", lambda: pytest.fail("the movie sets are not asked for"))
    _builtin.prepare_builtin(["zh-reviews"])
    root = tmp_path / "data" / "zh-reviews"
    assert (root / "train.csv").read_text(encoding="utf-8").startswith("label,review\n")
    splits = load_splits(DataConfig(builtin="zh-reviews"))
    assert splits.label_names == ["negative", "positive"]
    assert [len(s) for s in (splits.train, splits.dev, splits.test)] == [56, 7, 8]
    assert splits.train.class_counts().tolist() == [32, 24]
    texts = splits.train.texts + splits.dev.texts + splits.test.texts
    assert "两边都有" not in texts and texts.count("重复") == 1 and "好评3, 推荐" in texts
    assert json.loads((root / "counts.json").read_text())["version"] == _builtin.PREP_VERSION


def test_builtin_zh_reviews():
    from sentune.data import BUILTIN_DATASETS

    assert "zh-reviews" in BUILTIN_DATASETS
    splits = load_splits(DataConfig(builtin="zh-reviews"))
    assert splits.train.source.endswith("train.csv")
    assert splits.label_names == ["negative", "positive"]
    counts = {n: getattr(splits, n).class_counts().tolist() for n in ("train", "dev", "test")}
    assert counts == {"train": [7224, 6664], "dev": [903, 833], "test": [904, 833]}
    texts = splits.train.texts + splits.dev.texts + splits.test.texts
    assert len(set(texts)) == len(texts) == 17361
    sub = load_splits(DataConfig(builtin="zh-reviews", max_rows={"train": 300, "dev": 100}))
    assert len(sub.train) == 300 and len(sub.dev) == 100 and len(sub.test) == 1737


def test_one_weibo_file_is_split_stratified_and_seeded(tmp_path):
    from sentune.data import DataConfig, load_splits

    rows = [(i % 4 == 0, f"评论{i}很好" if i % 4 == 0 else f"评论{i}太差") for i in range(200)]
    path = tmp_path / "weibo_senti_100k.csv"
    path.write_text("\ufefflabel,review\n" + "".join(f"{int(pos)},{text}\n" for pos, text in rows), encoding="utf-8")
    cfg = DataConfig(train=path, split=[0.8, 0.1, 0.1], label_names=["negative", "positive"], subset_seed=3)
    splits = load_splits(cfg)
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (160, 20, 20)
    assert [s.class_counts().tolist() for s in (splits.train, splits.dev, splits.test)] == [[120, 40], [15, 5], [15, 5]]
    assert not set(splits.train.texts) & set(splits.dev.texts) and not set(splits.dev.texts) & set(splits.test.texts)
    assert load_splits(cfg).dev.texts == splits.dev.texts  # seeded
    with pytest.raises(ValueError, match="sum to 1"):
        DataConfig(train=path, split=[0.8, 0.1, 0.2])
    with pytest.raises(ValueError, match="give 'train' alone"):
        DataConfig(train=path, dev=path, split=[0.8, 0.1, 0.1])
