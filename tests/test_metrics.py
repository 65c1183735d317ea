"""sentune.metrics: the one place accuracy / F1 / per-class figures are computed, equal to scikit-learn's own
functions bit for bit (so the record, the evaluations and the reports keep their figures)."""

import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as skm

from sentune import metrics

NAMES = ["neg", "pos", "neu"]


def _cases():
    rng = np.random.default_rng(0)
    for n in (1, 7, 100, 1000):
        y = rng.integers(0, 3, n)
        yield y, rng.integers(0, 3, n)  # anything
        yield y, np.zeros(n, dtype=int)  # a collapse: two classes never predicted
        yield np.full(n, 2), rng.integers(0, 2, n)  # a class never present, one never predicted


@pytest.mark.parametrize("y_true, y_pred", list(_cases()))
def test_the_figures_are_scikit_learns_exactly(y_true, y_pred):
    labels = [0, 1, 2]
    assert metrics.accuracy(y_true, y_pred) == skm.accuracy_score(y_true, y_pred)
    assert metrics.macro_f1(y_true, y_pred, 3) == skm.f1_score(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    per = metrics.per_class(y_true, y_pred, 3)
    assert float(np.mean(per.precision)) == skm.precision_score(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    assert float(np.mean(per.recall)) == skm.recall_score(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    figures = metrics.classification_figures(y_true, y_pred, NAMES, "val")
    report = skm.classification_report(y_true, y_pred, labels=labels, target_names=NAMES, output_dict=True,
                                       zero_division=0)  # fmt: skip
    assert metrics.classification_report(y_true, y_pred, NAMES) == report
    assert figures["val_acc"] == report["accuracy"] and figures["val_macro_f1"] == report["macro avg"]["f1-score"]
    for i, name in enumerate(NAMES):
        assert figures[f"val_precision/{name}"] == report[name]["precision"]
        assert figures[f"val_recall/{name}"] == report[name]["recall"]
        assert figures[f"val_f1/{name}"] == report[name]["f1-score"]
        assert figures[f"val_pred_count/{name}"] == int((y_pred == i).sum())
    assert metrics.confusion(y_true, y_pred, labels).sum() == len(y_true)


def test_split_figures_and_cross_entropy_of_probabilities():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 50)
    probs = rng.dirichlet([1, 1, 1], 50)
    probs[0] = [1.0, 0.0, 0.0]  # a zero probability for the true class is clipped, not infinite
    y[0] = 2
    got = metrics.split_figures(y, probs)
    pred = probs.argmax(1)
    assert got == {"macro_f1": skm.f1_score(y, pred, labels=[0, 1, 2], average="macro", zero_division=0),
                   "acc": skm.accuracy_score(y, pred)}  # fmt: skip
    assert metrics.cross_entropy(y, probs) == skm.log_loss(y, np.clip(probs, 1e-12, 1.0), labels=[0, 1, 2])
    assert np.isfinite(metrics.cross_entropy(y, probs))


def test_metrics_is_a_leaf_that_loads_no_framework():
    code = (
        "import sys, sentune.metrics; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'ray', 'sklearn', 'pandas')"
        " or (m.startswith('sentune.') and m not in ('sentune.metrics', 'sentune.errors'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # (sentune.errors: the package's own); scikit-learn is imported on first use
