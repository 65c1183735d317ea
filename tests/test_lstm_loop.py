"""The lstm_tf training loop alone: no Ray, real TensorFlow, tiny models on a slice of zh-reviews."""

import math
from pathlib import Path

import numpy as np
import pytest

from conftest import DESIGN_METRICS
from sentune.data import DataConfig, load_splits
from sentune.errors import ConfigError
from sentune.trainables import lstm_tf as lt

TINY = {
    "embedding_dim": 32,
    "lstm_units": [16, 8],
    "dense_units": 8,
    "max_len": 32,
    "vocab_size": 3000,
    "batch_size": 16,
    "lr": 1e-2,
    "dropout": 0.2,
    "bn_momentum": 0.9,
    "seed": 3,
}


def params(**kw):
    return lt.LstmTfParams(**{**TINY, **kw})


@pytest.fixture(scope="module")
def splits():
    return load_splits(DataConfig(builtin="zh-reviews", max_rows={"train": 600, "dev": 200, "test": 100}))


@pytest.fixture(scope="module")
def data(splits):
    return lt.prepare(params(), splits, log=lambda *_: None)


@pytest.fixture(scope="module")
def trained(data):
    """One 3-epoch fit shared by the tests below: (result, [(metrics, save)] reported)."""
    seen = []
    result = lt.fit(params(epochs=3), data, lt.LoopContext(report=lambda m, save: seen.append((m, save)), cpus=2))
    return result, seen


def _sentune_imports(module: str, seen: set) -> set:
    """Every top-level module name ``module`` imports, following sentune's own modules."""
    import ast
    import importlib.util

    if module in seen:
        return set()
    seen.add(module)
    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    out = {n.split(".")[0] for n in names}
    for n in names:
        if n.startswith("sentune.") and importlib.util.find_spec(n) is not None:
            out |= _sentune_imports(n, seen)
    return out


def test_lstm_tf_never_imports_torch():
    imported = _sentune_imports("sentune.trainables.lstm_tf", set())
    assert {"tensorflow", "keras", "numpy"} <= imported
    assert "torch" not in imported and "transformers" not in imported


def test_learns_zh_reviews_and_reports_every_metric(trained, data, splits):
    result, seen = trained
    assert [m["epoch"] for m, _ in seen] == [1, 2, 3]
    for m, _ in seen:
        for key in [*DESIGN_METRICS, "grad_norm_max", "workers", "global_batch_size", "lr_scale"]:
            assert key in m and math.isfinite(m[key]), key
        for name in data.label_names:
            for kind in ("precision", "recall", "f1", "pred_count"):
                assert f"val_{kind}/{name}" in m
        assert sum(m[f"val_pred_count/{n}"] for n in data.label_names) == len(splits.dev)
        assert m["workers"] == 1 and m["global_batch_size"] == 16 and m["lr_scale"] == 1.0
    assert data.label_names == ["negative", "positive"]
    # 600 reviews are few for an LSTM from scratch: it fits them, and does better than chance on dev
    assert seen[-1][0]["train_loss"] < 0.8 * seen[0][0]["train_loss"]
    assert result.best_metric > 0.55  # chance: ~0.5 macro-F1 (the dev slice is ~52 % negative)
    assert seen[-1][0]["train_acc"] > seen[0][0]["train_acc"]
    assert seen[0][1] is not None  # the first epoch always checkpoints
    assert [s is not None for m, s in seen].count(True) >= 1


def test_best_epoch_restored_and_checkpoint_round_trip(trained, data, splits, tmp_path):
    result, seen = trained
    best = seen[result.best_epoch - 1][0]
    assert result.best_metric == best["val_macro_f1"] == max(m["val_macro_f1"] for m, _ in seen)
    probs, pred = lt.predict(result.model, data, "dev")
    assert probs.shape == (len(splits.dev), 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert float(np.mean(pred == splits.dev.labels)) == pytest.approx(best["val_acc"], abs=1e-9)
    save = seen[result.best_epoch - 1][1]  # given at the best epoch (the monitored metric improved)
    save(tmp_path / "ckpt")
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"model.weights.h5", "meta.json", "vocab.json"}
    p, model = lt.load_checkpoint(tmp_path / "ckpt", data)
    assert p == params(epochs=3)
    probs2, pred2 = lt.predict(model, data, "dev")
    np.testing.assert_allclose(probs2, probs, atol=1e-6)
    assert (pred2 == pred).all()
    assert lt.predict(model, data, "test")[0].shape == (len(splits.test), 2)


class _FirstEpochOnly(Exception):
    pass


def test_same_seed_same_first_epoch(trained, data):
    def stop(metrics, save):
        seen.append(metrics)
        raise _FirstEpochOnly

    seen = []
    with pytest.raises(_FirstEpochOnly):
        lt.fit(params(epochs=3), data, lt.LoopContext(report=stop))
    first = trained[1][0][0]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "grad_norm", "lr"):
        assert seen[0][key] == pytest.approx(first[key], rel=1e-4, abs=1e-6), key


def test_vocab_from_train_only(splits, data):
    assert data.vocab[:2] == ["<pad>", "<oov>"] and len(data.vocab) <= 3000
    train_tokens = {t for toks in lt.tokenize(splits.train.texts, "jieba") for t in toks}
    assert set(data.vocab[2:]) <= train_tokens
    dev_tokens = lt.tokenize(splits.dev.texts, "jieba")
    i, j = next((i, j) for i, toks in enumerate(dev_tokens) for j, t in enumerate(toks[:32]) if t not in train_tokens)
    assert data.splits["dev"].x[i, j] == 1  # a token seen only in dev is OOV
    x = data.splits["train"].x
    assert x.dtype == np.int32 and x.shape == (600, 32)
    lengths = data.splits["train"].lengths
    assert (x[np.arange(600), lengths - 1] > 0).all() and all((row[n:] == 0).all() for row, n in zip(x, lengths))


def test_char_tokenizer_focal_auto_and_sqrt_lr_scaling(splits):
    """One short fit for three things: character tokens, focal loss with alpha "auto", and the lr
    scaling arithmetic (world_size 4 on the default strategy: this worker trains on a quarter)."""
    p = params(
        tokenizer="char", epochs=1, loss="focal", focal_alpha="auto", lr=1e-3, lr_scaling="sqrt", warmup_epochs=1
    )
    data = lt.prepare(p, splits, log=lambda *_: None)
    assert all(len(t) == 1 for t in data.vocab[2:]) and data.splits["dev"].x.shape == (200, 32)
    m = lt.fit(p, data, lt.LoopContext(world_size=4, rank=1)).history[0]
    assert m["lr_scale"] == 2.0 and m["workers"] == 4 and m["global_batch_size"] == 64
    assert m["lr"] == pytest.approx(2e-3)  # the last warm-up step reaches the scaled base lr
    assert math.isfinite(m["train_loss"]) and math.isfinite(m["val_loss"])
    assert m["val_pred_count/negative"] + m["val_pred_count/positive"] == 200


def test_masked_max_over_time_ignores_padding():
    import tensorflow as tf

    x = tf.constant([[[1.0, -2.0], [3.0, -1.0], [9.0, 9.0]]])  # the third step is padding
    mask = tf.constant([[True, True, False]])
    np.testing.assert_allclose(lt.MaskedGlobalMax()(x, mask=mask).numpy(), [[3.0, -1.0]])
    np.testing.assert_allclose(lt.MaskedGlobalMax()(x).numpy(), [[9.0, 9.0]])  # no mask: every step


def test_one_bidirectional_lstm_max_pooled_learns_and_round_trips(data, splits, tmp_path):
    """The options the zh-reviews job tunes with: one bidirectional LSTM, max over time, embedding dropout."""
    p = params(lstm_units=[16], bidirectional=True, pooling="max", embedding_dropout=0.2, epochs=3)
    model = lt.build_model(p, len(data.vocab), 2, data.max_len)
    names = [layer.name for layer in model.layers]
    assert {"embedding_dropout", "bi_lstm_1", "max_over_time"} <= set(names) and "lstm_2" not in names
    assert model.get_layer("bi_lstm_1").output.shape[-1] == 32  # both directions
    seen = []
    result = lt.fit(p, data, lt.LoopContext(report=lambda m, save: seen.append((m, save)), cpus=2))
    assert result.best_metric > 0.55 and seen[-1][0]["train_loss"] < seen[0][0]["train_loss"]
    seen[result.best_epoch - 1][1](tmp_path / "ckpt")
    loaded, model = lt.load_checkpoint(tmp_path / "ckpt", data)
    assert loaded == p
    np.testing.assert_allclose(lt.predict(model, data, "dev")[0], lt.predict(result.model, data, "dev")[0], atol=1e-6)
    # more padding changes nothing: the same weights at a longer max_len score the same reviews the same
    longer = lt.build_model(p, len(data.vocab), 2, data.max_len + 8)
    longer.set_weights(model.get_weights())
    x = data.splits["dev"].x[:8]
    padded = np.pad(x, ((0, 0), (0, 8)))
    np.testing.assert_allclose(longer(padded, training=False).numpy(), model(x, training=False).numpy(), atol=1e-5)


def test_per_example_focal_loss():
    import tensorflow as tf

    probs = tf.constant([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]])
    y = tf.constant([0, 1, 0])
    ce = lt.per_example_loss(probs, y, kind="ce", alpha=None, gamma=2.0).numpy()
    np.testing.assert_allclose(ce, -np.log([0.9, 0.6, 0.2]), rtol=1e-6)
    fl = lt.per_example_loss(probs, y, kind="focal", alpha=[0.25, 0.75], gamma=2.0).numpy()
    np.testing.assert_allclose(fl, [0.25, 0.75, 0.25] * (1 - np.array([0.9, 0.6, 0.2])) ** 2 * ce, rtol=1e-5)


def test_strategy_all_reduce_sum_one_worker():
    import tensorflow as tf

    reduce = lt.strategy_all_reduce_sum(tf.distribute.get_strategy())
    np.testing.assert_array_equal(reduce(np.array([1.5, 2.0, 3.0])), [1.5, 2.0, 3.0])


def test_lr_range_test_rows(data):
    rows = lt.lr_range_test(params(), data, lr_min=1e-4, lr_max=1.0, steps=8)
    assert [r["step"] for r in rows] == list(range(len(rows))) and 6 <= len(rows) <= 8
    assert rows[0]["lr"] == pytest.approx(1e-4) and all(math.isfinite(r["loss"]) for r in rows[:6])


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match=r"lstm_units takes one or two sizes \[first, second\], got 3"):
        params(lstm_units=[16, 8, 4])
    with pytest.raises(ValueError, match="lstm_units must be positive integers"):
        params(lstm_units=[16, 0])
    with pytest.raises(ValueError, match=r"warmup_epochs \(3.0\) exceeds epochs \(2\)"):
        params(epochs=2, warmup_epochs=3)
    with pytest.raises(ValueError, match=r"scalar focal_alpha must be in \(0, 1\)"):
        params(focal_alpha=1.5)
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        params(weight_decayy=0.1)
    with pytest.raises(
        ConfigError, match=r"focal_alpha \[0.2, 0.3, 0.5\]: focal_alpha has 3 values; this data has 2 classes"
    ):
        lt.LstmTfParams.check_data({"focal_alpha": [[0.2, 0.3, 0.5]]}, [7224, 6664])
    lt.LstmTfParams.check_data({"focal_alpha": ["auto", None, 0.25, [1.0, 2.0]]}, [7224, 6664])


def test_vocab_cap_does_not_depend_on_row_order():
    # rows sorted by class: picking among equally rare tokens by first appearance would keep one class's
    neg = [["差", f"neg{i}"] for i in range(20)]
    pos = [["好", f"pos{i}"] for i in range(20)]
    capped = lt.build_vocab(neg + pos, 12)
    assert capped == lt.build_vocab(pos + neg, 12) == lt.build_vocab(list(reversed(neg + pos)), 12)
    assert capped == ["<pad>", "<oov>", "好", "差"]  # the 40 tied rare tokens do not fit in 10: none is kept
    assert len(lt.build_vocab(neg + pos, 100)) == 44
