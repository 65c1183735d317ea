"""``lstm_tf``: the seed's stacked-LSTM classifier, in TensorFlow 2 / Keras 3.

Nothing here imports Ray (nor torch): :func:`prepare` tokenizes (jieba words or characters) and builds
the vocabulary from the train split, :func:`fit` runs a custom training loop (``tf.GradientTape`` inside
``strategy.run``; not ``model.fit``, which breaks under ``MultiWorkerMirroredStrategy`` in Ray 2.60,
ray#47464), :func:`predict` scores a split with a saved checkpoint. Under several workers the caller
creates the ``tf.distribute`` strategy (before any other TensorFlow op) and passes it in a
:class:`LoopContext`; each worker then runs this same loop on its shard, with one replica per worker.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from pydantic import Field, field_validator

from sentune.errors import ConfigError
from sentune.trainables._common import (
    BestEpoch,
    CoreParams,
    check_focal_alpha,
    cycling_batches,
    epoch_metrics,
    epoch_shard,
    lr_range_rows,
    lr_scale_factor,
    resolve_alpha,
    warmup_cosine,
)

__all__ = ["FitResult", "LoopContext", "LstmTfParams", "PreparedData", "build_model", "check_data", "fit", "load_checkpoint",
           "lr_range_test", "make_strategy", "predict", "prepare", "strategy_all_reduce_sum", "tokenize"]

WEIGHTS_FILE = "model.weights.h5"
VOCAB_FILE = "vocab.json"
PAD_ID, OOV_ID = 0, 1
_EPS = 1e-7


class LstmTfParams(CoreParams):
    """Every option of ``lstm_tf`` (the core ones of :class:`CoreParams` and the model's); a search space
    may tune any of them except DATA_PARAMS."""

    DATA_PARAMS: ClassVar[tuple[str, ...]] = ("tokenizer", "max_len", "vocab_size")

    tokenizer: Literal["jieba", "char"] = "jieba"
    max_len: int = Field(100, gt=0, le=4096)
    vocab_size: int = Field(50000, ge=3)  # at most this many ids, pad (0) and OOV (1) included
    embedding_dim: int = Field(128, gt=0)
    lstm_units: tuple[int, int] = (128, 64)
    dense_units: int = Field(32, gt=0)
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    bn_momentum: float = Field(0.99, ge=0.0, lt=1.0)  # BatchNormalization's moving-statistics momentum
    l2: float = Field(1e-4, ge=0.0)
    # the seed's defaults where they differ from the core ones
    batch_size: int = Field(256, gt=0)
    epochs: int = Field(10, gt=0)
    grad_clip: float | None = Field(None, gt=0.0)

    @field_validator("lstm_units", mode="before")
    @classmethod
    def _units(cls, v):
        if isinstance(v, (list, tuple)) and len(v) != 2:
            raise ValueError(f"lstm_units takes two sizes [first, second], got {len(v)}: {list(v)}")
        if isinstance(v, (list, tuple)) and any(isinstance(u, bool) or not isinstance(u, int) or u <= 0 for u in v):
            raise ValueError(f"lstm_units must be two positive integers, got {list(v)}")
        return v


def check_data(values: dict[str, list], class_counts) -> None:
    """Options that can only be checked against the data (every value a search may pick)."""
    check_focal_alpha(values, class_counts)


# --------------------------------------------------------------------------- data

_JIEBA = None


def _jieba():
    """jieba, initialized once, without its start-up chatter."""
    global _JIEBA
    if _JIEBA is None:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        jieba.initialize()
        _JIEBA = jieba
    return _JIEBA


def tokenize(texts: list[str], how: str) -> list[list[str]]:
    """Lower-cased tokens: jieba words (``"jieba"``) or single characters (``"char"``); no whitespace."""
    if how == "jieba":
        cut = _jieba().lcut
        return [[t for t in cut(text.lower()) if not t.isspace()] for text in texts]
    return [[c for c in text.lower() if not c.isspace()] for text in texts]


def build_vocab(token_lists: list[list[str]], vocab_size: int) -> list[str]:
    """Pad, OOV, then the most frequent tokens, ``vocab_size`` ids at most. When the cap falls among
    tokens of equal count, all of those are left out: picking some of them by where they first appear
    would, in a file sorted by class, keep one class's rare tokens and send the other's to OOV, a label
    leak through the vocabulary (seen: dev macro-F1 0.66 instead of 0.82)."""
    counts = Counter(t for toks in token_lists for t in toks)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    room = vocab_size - 2
    if len(ranked) > room:
        cut = ranked[room][1]  # the count of the first token that does not fit
        ranked = [kv for kv in ranked[:room] if kv[1] > cut]
    return ["<pad>", "<oov>", *(t for t, _ in ranked)]


def encode(token_lists: list[list[str]], index: dict[str, int], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids int32 [N, max_len] (truncated, padded with 0 at the end) and lengths int32 [N]."""
    ids = np.zeros((len(token_lists), max_len), dtype=np.int32)
    lengths = np.zeros(len(token_lists), dtype=np.int32)
    for i, toks in enumerate(token_lists):
        row = [index.get(t, OOV_ID) for t in toks[:max_len]] or [OOV_ID]  # never an all-padding row
        ids[i, : len(row)] = row
        lengths[i] = len(row)
    return ids, lengths


@dataclass
class SplitArrays:
    x: np.ndarray  # token ids int32 [N, max_len], 0 = padding at the end
    y: np.ndarray  # int64 [N]
    lengths: np.ndarray | None = None  # int32 [N]


@dataclass
class PreparedData:
    """What every trial of a job shares (through the Ray object store when under Ray)."""

    label_names: list[str]
    splits: dict[str, SplitArrays]
    vocab: list[str]
    max_len: int
    pad_id: int = PAD_ID
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)


def prepare(params: LstmTfParams, splits, *, device: str = "cpu", log: Callable[[str], None] = print) -> PreparedData:
    """Tokenize every split once; the vocabulary comes from the train split only. (``device`` is unused:
    the interface is llama_torch's.)"""
    named = {"train": splits.train, "dev": splits.dev}
    if splits.test is not None:
        named["test"] = splits.test
    t0 = time.perf_counter()
    tokens = {name: tokenize(ds.texts, params.tokenizer) for name, ds in named.items()}
    vocab = build_vocab(tokens["train"], params.vocab_size)
    index = {t: i for i, t in enumerate(vocab)}
    arrays = {}
    for name, toks in tokens.items():
        ids, lengths = encode(toks, index, params.max_len)
        arrays[name] = SplitArrays(ids, np.asarray(named[name].labels, dtype=np.int64), lengths)
    n_rows = sum(len(t) for t in tokens.values())
    dt = time.perf_counter() - t0
    truncated = float(np.mean([len(t) > params.max_len for t in tokens["train"]]))
    oov = float(np.mean(arrays["dev"].x[arrays["dev"].x > 0] == OOV_ID)) if arrays["dev"].x.any() else 0.0
    log(f"sentune: {params.tokenizer} tokens for {n_rows} rows in {dt:.1f} s; vocab {len(vocab)}; "
        f"{truncated:.1%} of train rows cut at max_len {params.max_len}; dev OOV rate {oov:.1%}")
    return PreparedData(
        label_names=list(splits.label_names), splits=arrays, vocab=vocab, max_len=params.max_len,
        info={"tokenizer": params.tokenizer, "train_truncated": truncated, "dev_oov_rate": oov},
    )


# --------------------------------------------------------------------------- model

def build_model(params: LstmTfParams, vocab_len: int, num_classes: int, max_len: int) -> keras.Model:
    """Embedding → LSTM(u1, seq) → BN → Dropout → LSTM(u2) → BN → Dropout → Dense(relu) → BN → Dropout
    → Dense(softmax); L2 on the LSTM and Dense kernels. Padding (id 0) is masked. Create it under the
    strategy's scope to train it distributed."""
    reg = keras.regularizers.L2(params.l2) if params.l2 > 0 else None
    u1, u2 = params.lstm_units
    layers = keras.layers
    inputs = keras.Input(shape=(max_len,), dtype="int32", name="token_ids")
    x = layers.Embedding(vocab_len, params.embedding_dim, mask_zero=True, name="embedding")(inputs)
    x = layers.LSTM(u1, return_sequences=True, kernel_regularizer=reg, name="lstm_1")(x)
    x = layers.BatchNormalization(momentum=params.bn_momentum, name="bn_1")(x)
    x = layers.Dropout(params.dropout, name="dropout_1")(x)
    x = layers.LSTM(u2, kernel_regularizer=reg, name="lstm_2")(x)
    x = layers.BatchNormalization(momentum=params.bn_momentum, name="bn_2")(x)
    x = layers.Dropout(params.dropout, name="dropout_2")(x)
    x = layers.Dense(params.dense_units, activation="relu", kernel_regularizer=reg, name="dense")(x)
    x = layers.BatchNormalization(momentum=params.bn_momentum, name="bn_3")(x)
    x = layers.Dropout(params.dropout, name="dropout_3")(x)
    outputs = layers.Dense(num_classes, activation="softmax", kernel_regularizer=reg, name="probs")(x)
    return keras.Model(inputs, outputs, name="lstm_tf")


def per_example_loss(probs, y, *, kind: str, alpha, gamma: float):
    """Cross-entropy, or focal loss ``-alpha_t (1 - p_t)^gamma log p_t``, one value per row (float32)."""
    probs = tf.cast(probs, tf.float32)
    y = tf.cast(y, tf.int32)
    p_t = tf.gather(probs, y, axis=1, batch_dims=1)
    logp_t = tf.math.log(tf.clip_by_value(p_t, _EPS, 1.0))
    if kind == "ce":
        return -logp_t
    loss = -tf.pow(tf.maximum(1.0 - p_t, 0.0), gamma) * logp_t
    if alpha is not None:
        loss = loss * tf.gather(tf.constant(alpha, tf.float32), y)
    return loss


# --------------------------------------------------------------------------- loop

def _identity(x):
    return x


def strategy_all_reduce_sum(strategy: tf.distribute.Strategy | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A function that sums a small float64 array across the strategy's workers with its collectives
    (every worker must call it the same number of times). One replica per worker, as :func:`fit` runs it.
    (Eager on purpose: inside a tf.function MultiWorkerMirroredStrategy cannot place a collective on a
    value that is not on a device yet, "destinations can not be empty".)"""
    strategy = strategy or tf.distribute.get_strategy()

    def all_reduce_sum(values: np.ndarray) -> np.ndarray:
        arr = np.asarray(values, dtype=np.float64)
        flat = arr.ravel()
        local = strategy.experimental_distribute_values_from_function(lambda _ctx: tf.constant(flat))
        return np.asarray(strategy.reduce(tf.distribute.ReduceOp.SUM, local, axis=None)).reshape(arr.shape)

    return all_reduce_sum


@dataclass
class LoopContext:
    """How the loop talks to whatever runs it: nothing (bare), or Ray Train's TensorFlow workers."""

    world_size: int = 1
    rank: int = 0
    # The tf.distribute strategy to train under (e.g. MultiWorkerMirroredStrategy, one replica per
    # worker); None: the default strategy.
    strategy: tf.distribute.Strategy | None = None
    # Sums a small float64 vector over the workers; None: identity for one replica, else built
    # from the strategy (strategy_all_reduce_sum).
    all_reduce_sum: Callable[[np.ndarray], np.ndarray] | None = None
    # report(metrics, save) is called once per epoch on every worker; ``save(dir)`` writes the
    # checkpoint and is given only when the monitored metric improved.
    report: Callable[[dict, Callable[[Path], None] | None], None] | None = None
    cpus: int | None = None  # TensorFlow's intra-op threads (set once per process, if not too late)


@dataclass
class FitResult:
    history: list[dict]
    best_epoch: int
    best_metric: float
    model: keras.Model


_THREADS_SET = False


def _set_threads(cpus: int | None) -> None:
    """Intra-op threads = cpus, inter-op = min(2, cpus); only possible before TensorFlow's runtime starts."""
    global _THREADS_SET
    cpus = cpus or int(os.environ.get("SENTUNE_TF_THREADS", "0") or 0)  # set by sentune's Ray tasks
    if not cpus or _THREADS_SET:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(cpus))
        tf.config.threading.set_inter_op_parallelism_threads(min(2, int(cpus)))
    except RuntimeError:  # the runtime is up already (e.g. a strategy was made first): keep its pools
        pass
    _THREADS_SET = True


def make_strategy(world_size: int, *, cpus: int | None = None) -> tf.distribute.Strategy:
    """The strategy a worker trains under: ``MultiWorkerMirroredStrategy`` (from TF_CONFIG, which Ray's
    TensorflowTrainer sets) for several workers, else the default one. Call it before any other
    TensorFlow op; it also sets TensorFlow's thread pools to ``cpus``."""
    _set_threads(cpus)
    if world_size > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


@dataclass
class _Setup:
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    strategy: tf.distribute.Strategy
    loss_kw: dict
    per_rank: int
    scale: float
    all_reduce_sum: Callable[[np.ndarray], np.ndarray]
    train_step: Callable
    probs_fn: Callable


def _make_train_step(model, optimizer, strategy, loss_kw, grad_clip: float | None, max_len: int):
    replicas = strategy.num_replicas_in_sync
    variables = model.trainable_variables

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            per_ex = per_example_loss(probs, y, **loss_kw)
            global_batch = tf.shape(y)[0] * replicas  # every worker feeds a batch of the same size
            loss = tf.nn.compute_average_loss(per_ex, global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]  # embedding: dense
        # The optimizer sums the gradients over the replicas itself; the global norm (for clipping and
        # the report) needs the sum here too. Scaling each worker's part by the same factor clips the sum.
        summed = grads if replicas == 1 else tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, grads)
        norm = tf.linalg.global_norm(summed)
        if grad_clip is not None:
            factor = tf.minimum(1.0, grad_clip / (norm + 1e-6))
            grads = [g * factor for g in grads]
        optimizer.apply_gradients(zip(grads, variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, axis=-1, output_type=tf.int32), y), tf.float32))
        return tf.reduce_sum(per_ex), correct, norm

    @tf.function(input_signature=[tf.TensorSpec([None, max_len], tf.int32), tf.TensorSpec([None], tf.int32)], autograph=False)
    def train_step(x, y):
        out = strategy.run(replica_step, args=(x, y))
        return [strategy.experimental_local_results(o)[0] for o in out]

    return train_step


def _make_probs_fn(model, max_len: int):
    @tf.function(input_signature=[tf.TensorSpec([None, max_len], tf.int32)], autograph=False)
    def probs_fn(x):
        return tf.cast(model(x, training=False), tf.float32)

    return probs_fn


def _setup(params: LstmTfParams, data: PreparedData, ctx: LoopContext) -> _Setup:
    """Model and optimizer (under the strategy's scope), the compiled step, the loss options: shared by
    fit and the range test."""
    _set_threads(ctx.cpus)
    strategy = ctx.strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(params.seed)  # the same initial weights and dropout stream on every worker
    train_y = data.splits["train"].y
    alpha = resolve_alpha(params.focal_alpha, np.bincount(train_y, minlength=data.num_classes)) if params.loss == "focal" else None
    loss_kw = {"kind": params.loss, "alpha": alpha, "gamma": params.focal_gamma}
    scale = lr_scale_factor(params.lr_scaling, ctx.world_size)
    with strategy.scope():
        model = build_model(params, len(data.vocab), data.num_classes, data.max_len)
        optimizer = keras.optimizers.Adam(learning_rate=params.lr * scale, weight_decay=params.weight_decay or None)
        optimizer.build(model.trainable_variables)
    reduce_sum = ctx.all_reduce_sum
    if reduce_sum is None:
        reduce_sum = strategy_all_reduce_sum(strategy) if strategy.num_replicas_in_sync > 1 else _identity
    return _Setup(model, optimizer, strategy, loss_kw, len(train_y) // ctx.world_size, scale, reduce_sum,
                  _make_train_step(model, optimizer, strategy, loss_kw, params.grad_clip, data.max_len),
                  _make_probs_fn(model, data.max_len))


def _moving_stats(model: keras.Model) -> list:
    return [v for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
            for v in (layer.moving_mean, layer.moving_variance)]


def _sync_moving_stats(su: _Setup, world: int) -> None:
    """Average BatchNormalization's moving statistics over the workers (each updated them with its own
    batches), so every worker evaluates the same model. Once an epoch is enough: the moving averages are
    linear, so averaging them at the end of an epoch equals averaging the batch statistics each step."""
    vars_ = _moving_stats(su.model)
    local = [np.asarray(v.numpy(), dtype=np.float64) for v in vars_]
    mean = su.all_reduce_sum(np.concatenate([a.ravel() for a in local])) / world
    pos = 0
    for v, a in zip(vars_, local):
        v.assign(mean[pos : pos + a.size].reshape(a.shape).astype(np.float32))
        pos += a.size


def _probs(probs_fn, split: SplitArrays, batch_size: int = 512) -> np.ndarray:
    """Class probabilities [N, C] for every row of a split (inference mode), on the CPU."""
    parts = [probs_fn(tf.constant(split.x[i : i + batch_size])).numpy() for i in range(0, len(split.y), batch_size)]
    return np.concatenate(parts).astype(np.float32)


def _evaluate(su: _Setup, split: SplitArrays) -> tuple[float, np.ndarray]:
    """Loss (mean, the data loss only) and predicted ids on a split."""
    probs = _probs(su.probs_fn, split)
    loss = per_example_loss(tf.constant(probs), tf.constant(split.y.astype(np.int32)), **su.loss_kw)
    return float(tf.reduce_mean(loss)), probs.argmax(1)


def _step(su: _Setup, data: PreparedData, idx) -> tuple[float, float, float]:
    """One optimizer step on rows ``idx``: (summed loss, correct count, global grad norm before clipping)."""
    train = data.splits["train"]
    loss_sum, correct, norm = su.train_step(tf.constant(train.x[idx]), tf.constant(train.y[idx].astype(np.int32)))
    return float(loss_sum), float(correct), float(norm)


def _set_lr(optimizer, lr: float) -> None:
    optimizer.learning_rate = lr


def fit(params: LstmTfParams, data: PreparedData, ctx: LoopContext | None = None) -> FitResult:
    """Train; report each epoch; restore the best epoch's weights at the end."""
    ctx = ctx or LoopContext()
    su = _setup(params, data, ctx)
    model, opt, world, scale = su.model, su.optimizer, ctx.world_size, su.scale
    train, dev = data.splits["train"], data.splits["dev"]
    base_lr = params.lr * scale
    steps_per_epoch = math.ceil(su.per_rank / params.batch_size)
    total_steps = steps_per_epoch * params.epochs
    warmup_steps = round(params.warmup_epochs * steps_per_epoch)
    best, best_state = BestEpoch(params.monitor), None
    history, step = [], 0
    for epoch in range(1, params.epochs + 1):
        t0 = time.perf_counter()
        shard = epoch_shard(params.seed, len(train.y), su.per_rank, ctx.world_size, ctx.rank, epoch)
        sums = np.zeros(3)  # loss * n, correct, n
        norms = []
        lr_used = base_lr * warmup_cosine(step, warmup_steps, total_steps)
        for i in range(0, len(shard), params.batch_size):
            idx = shard[i : i + params.batch_size]
            lr_used = base_lr * warmup_cosine(step, warmup_steps, total_steps)
            _set_lr(opt, lr_used)
            loss_sum, correct, norm = _step(su, data, idx)
            norms.append(norm)
            step += 1
            sums += (loss_sum, correct, len(idx))
        sums = su.all_reduce_sum(sums)
        if su.strategy.num_replicas_in_sync > 1:
            _sync_moving_stats(su, su.strategy.num_replicas_in_sync)
        val_loss, val_pred = _evaluate(su, dev)
        seconds = time.perf_counter() - t0
        metrics = epoch_metrics(epoch=epoch, sums=sums, val_loss=val_loss, y_dev=dev.y, val_pred=val_pred,
                                label_names=data.label_names, lr=lr_used, norms=norms, seconds=seconds, workers=world,
                                batch_size=params.batch_size, lr_scale=scale)
        improved = best.update(metrics)
        if improved:
            best_state = model.get_weights()  # numpy copies
        history.append(metrics)
        if ctx.report is not None:
            save = (lambda d, s=best_state: _write_checkpoint(Path(d), model, s, params, data)) if improved else None
            ctx.report(metrics, save)
    model.set_weights(best_state)
    return FitResult(history, best.epoch, best.value, model)


def lr_range_test(params: LstmTfParams, data: PreparedData, *, lr_min: float = 1e-7, lr_max: float = 1e-2,
                  steps: int = 100, diverge_factor: float = 4.0, smoothing: float = 0.1,
                  ctx: LoopContext | None = None) -> list[dict]:
    """Raise the lr exponentially from ``lr_min`` to ``lr_max`` over ``steps`` optimizer steps (cycling
    through the train split), recording the loss; stop once the smoothed loss exceeds ``diverge_factor``
    times its minimum or turns NaN. Returns one row per step: step, lr, loss, smoothed_loss."""
    ctx = ctx or LoopContext()
    su = _setup(params, data, ctx)
    batches = cycling_batches(params.seed, len(data.splits["train"].y), su.per_rank, ctx.world_size, ctx.rank,
                              params.batch_size)

    def step_at(lr: float) -> float:
        _set_lr(su.optimizer, lr)
        idx = next(batches)
        loss_sum, _, _ = _step(su, data, idx)
        total = su.all_reduce_sum(np.array([loss_sum, len(idx)], dtype=np.float64))
        return float(total[0] / total[1])

    return lr_range_rows(step_at, lr_min=lr_min, lr_max=lr_max, steps=steps, diverge_factor=diverge_factor,
                         smoothing=smoothing)


# --------------------------------------------------------------------------- checkpoints

def _write_checkpoint(folder: Path, model: keras.Model, state: list[np.ndarray], params: LstmTfParams,
                      data: PreparedData) -> None:
    """model.weights.h5 (the weights ``state``, written through the trained model itself: a new model
    made inside a strategy's scope would start collectives on this worker alone), vocab.json, meta.json."""
    folder.mkdir(parents=True, exist_ok=True)
    current = model.get_weights()
    try:
        model.set_weights(state)
        model.save_weights(folder / WEIGHTS_FILE)
    finally:
        model.set_weights(current)
    (folder / VOCAB_FILE).write_text(json.dumps(data.vocab, ensure_ascii=False), encoding="utf-8")
    meta = {"params": params.model_dump(mode="json"), "label_names": data.label_names, "vocab_len": len(data.vocab),
            "vocab_file": VOCAB_FILE, "max_len": data.max_len, "weights_file": WEIGHTS_FILE}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def load_checkpoint(folder: str | Path, data: PreparedData) -> tuple[LstmTfParams, keras.Model]:
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    params = LstmTfParams(**meta["params"])
    vocab = json.loads((folder / meta.get("vocab_file", VOCAB_FILE)).read_text(encoding="utf-8"))
    if vocab != data.vocab or meta["max_len"] != data.max_len:
        raise ConfigError(f"{folder}: the checkpoint's vocabulary / max_len differ from the prepared data's "
                          f"({len(vocab)} vs {len(data.vocab)} tokens, max_len {meta['max_len']} vs {data.max_len})")
    model = build_model(params, len(vocab), len(meta["label_names"]), meta["max_len"])
    model.load_weights(folder / meta.get("weights_file", WEIGHTS_FILE))
    return params, model


def predict(model: keras.Model, data: PreparedData, split: str, *, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities [N, C] and predicted ids [N] for a split."""
    probs = _probs(_make_probs_fn(model, data.max_len), data.splits[split])
    return probs, probs.argmax(1)
