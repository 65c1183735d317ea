"""Built-in data sets, prepared at set-up time from packages on PyPI (never committed).

``en-movie-5``: the 10,605 movie-review snippets with human mean ratings (-4..4) that ship in the
vaderSentiment 3.3.2 source archive, five classes by equal fifths of the rating scale.
``en-movie-2-imbalanced``: the same snippets as binary polarity (ids <= 5331 came from the positive
file), positives subsampled to 3.4 negatives per positive.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from sentune._paths import cache_dir
from sentune.data._readers import write_sst
from sentune.errors import ConfigError

__all__ = ["BUILTIN_DATASETS", "builtin_dir", "prepare_builtin", "ensure_builtin"]

VADER_SDIST = "vaderSentiment==3.3.2"
SPLIT_SEED = 20141201
FIVE_NAMES = ["very_negative", "negative", "neutral", "positive", "very_positive"]
TWO_NAMES = ["negative", "positive"]
LAST_POSITIVE_ID = 5331
NEG_PER_POS = 3.4
# Bump when the preparation changes, so a cache made by an older sentune is made again.
PREP_VERSION = 2

BUILTIN_DATASETS = {
    "en-movie-5": "10,605 movie-review snippets, 5 classes by fifths of the -4..4 mean rating",
    "en-movie-2-imbalanced": "the same snippets as binary polarity, 3.4 negatives per positive",
}


def builtin_dir(name: str) -> Path:
    if name not in BUILTIN_DATASETS:
        raise ConfigError(f"unknown built-in data set {name!r}; choose from {sorted(BUILTIN_DATASETS)}")
    return cache_dir("data") / name


def _fetch_movie_snippets() -> list[tuple[int, float, str]]:
    """Download the vaderSentiment sdist with pip and read movieReviewSnippets_GroundTruth.txt."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             "-d", tmp, VADER_SDIST],
            check=True,
        )
        (archive,) = Path(tmp).glob("vaderSentiment-*.tar.gz")
        with tarfile.open(archive) as outer:
            inner_member = next(m for m in outer.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz"))
            inner_bytes = outer.extractfile(inner_member).read()
        with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
            member = next(m for m in inner.getmembers() if m.name.endswith("movieReviewSnippets_GroundTruth.txt"))
            raw = inner.extractfile(member).read().decode("utf-8")
    rows = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        ident, rating, text = line.split("\t", 2)
        rows.append((int(ident), float(rating), " ".join(text.split())))
    return rows


def five_class(rating: float) -> int:
    """Equal fifths of the -4..4 scale: [-4,-2.4) [-2.4,-0.8) [-0.8,0.8) [0.8,2.4) [2.4,4]."""
    return int(min(4, max(0, np.floor((rating + 4.0) / 1.6 + 1e-9))))  # 1e-9: 0.8 is a boundary, not 0.7999


def _split_and_write(out: Path, texts: list[str], labels: np.ndarray, names: list[str]) -> dict:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(texts))
    train, rest = train_test_split(idx, test_size=0.2, stratify=labels, random_state=SPLIT_SEED)
    dev, test = train_test_split(rest, test_size=0.5, stratify=labels[rest], random_state=SPLIT_SEED)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, part in (("train", train), ("dev", dev), ("test", test)):
        part = np.sort(part)
        write_sst(out / f"{split}.txt", [texts[i] for i in part], labels[part])
        counts[split] = np.bincount(labels[part], minlength=len(names)).tolist()
    (out / "labels.json").write_text(json.dumps(names) + "\n", encoding="utf-8")
    (out / "counts.json").write_text(json.dumps({**counts, "version": PREP_VERSION}) + "\n", encoding="utf-8")
    return counts


def _is_prepared(name: str) -> bool:
    path = builtin_dir(name) / "counts.json"
    return path.exists() and json.loads(path.read_text()).get("version") == PREP_VERSION


def prepare_builtin(names: list[str] | None = None, *, force: bool = False) -> dict[str, Path]:
    """Write every requested built-in data set as SST files; skip those already prepared."""
    names = list(names or BUILTIN_DATASETS)
    todo = [n for n in names if force or not _is_prepared(n)]
    if todo:
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
