"""The reference model of every tune job: TF-IDF n-grams + logistic regression (scikit-learn), fitted once
on the job's train split in seconds on a CPU. Its dev and test figures sit beside the sweep's in the
leaderboard and the report, so a user sees at once whether the neural sweep earns its cost. It never
counts as the best config. Neither Ray, torch nor TensorFlow."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from sentune import metrics
from sentune.results import REFERENCE_ID  # its trial id in the leaderboard

__all__ = ["REFERENCE_ID", "analyzer_for", "fit_reference"]


def _cjk_share(texts: Sequence[str], limit: int = 2000) -> float:
    sample = "".join(texts[:limit])
    letters = [c for c in sample if not c.isspace()]
    if not letters:
        return 0.0
    cjk = sum(1 for c in letters if "\u3040" <= c <= "\u9fff" or "\uac00" <= c <= "\ud7af" or "\uf900" <= c <= "\ufaff")
    return cjk / len(letters)


def analyzer_for(texts: Sequence[str]) -> tuple[str, tuple[int, int]]:
    """Character 1-2-grams for text written without spaces between words (Chinese, Japanese, Korean),
    word 1-2-grams otherwise."""
    return ("char", (1, 2)) if _cjk_share(texts) > 0.3 else ("word", (1, 2))


def fit_reference(splits, *, seed: int = 0) -> dict:
    """Fit on ``splits.train``; dev (and test, when there is one) macro-F1, accuracy and log loss."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    analyzer, ngrams = analyzer_for(splits.train.texts)
    vectorizer = TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams, sublinear_tf=True, min_df=1)
    x_train = vectorizer.fit_transform(splits.train.texts)
    model = LogisticRegression(C=4.0, max_iter=2000, class_weight="balanced", random_state=seed)
    model.fit(x_train, splits.train.labels)
    labels = list(range(len(splits.label_names)))
    out: dict = {
        "model": f"tfidf-{analyzer}-{ngrams[0]}-{ngrams[1]}gram+logreg",
        "features": int(x_train.shape[1]),
    }
    for name in ("dev", "test"):
        ds = getattr(splits, name)
        if ds is None:
            continue
        probs = np.zeros((len(ds), len(labels)))
        probs[:, model.classes_] = model.predict_proba(vectorizer.transform(ds.texts))
        out[name] = {**metrics.split_figures(ds.labels, probs), "loss": metrics.cross_entropy(ds.labels, probs)}
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out
