"""``lstm_tf``: the seed's stacked-LSTM classifier, in TensorFlow 2 / Keras 3.

Nothing here imports Ray (nor torch). The data (jieba words or characters, the train split's vocabulary)
comes from :mod:`sentune.trainables._lstm_data`; :meth:`LstmTf.hooks` builds the model and a custom
training step (``tf.GradientTape`` inside ``strategy.run``; not ``model.fit``, which breaks under
``MultiWorkerMirroredStrategy`` in Ray 2.60, ray#47464) that the shared epoch driver runs;
:meth:`LstmTf.predict` scores a split with a saved checkpoint. Under several workers the caller creates
the ``tf.distribute`` strategy (before any other TensorFlow op) and passes it in the
:class:`~sentune.trainables._contract.LoopContext`; each worker then runs this same loop on its shard,
with one replica per worker.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402  (TF_CPP_MIN_LOG_LEVEL must be set before TensorFlow loads)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from sentune._log import log_line  # noqa: E402
from sentune.errors import ConfigError  # noqa: E402
from sentune.trainables import _driver  # noqa: E402
from sentune.trainables._contract import (  # noqa: E402
    FitResult,
    LoopContext,
    LoopHooks,
    ModelTrainable,
    Report,
    SplitArrays,
    TextPredictor,
)
from sentune.trainables._device import ray_devices  # noqa: E402
from sentune.trainables._hooks_base import SharedHooks  # noqa: E402
from sentune.trainables._lstm_data import (  # noqa: E402
    OOV_ID,
    PAD_ID,
    LstmData,
    build_vocab,
    encode,
    prepare_lstm_data,
    tokenize,
)
from sentune.trainables._params import LstmTfParams  # noqa: E402

__all__ = [
    "OOV_ID",
    "PAD_ID",
    "FitResult",
    "LoopContext",
    "LstmData",
    "LstmTf",
    "LstmTfParams",
    "MaskedGlobalMax",
    "build_model",
    "build_vocab",
    "encode",
    "fit",
    "load_checkpoint",
    "lr_range_test",
    "make_strategy",
    "predict",
    "prepare",
    "strategy_all_reduce_sum",
    "tokenize",
]

WEIGHTS_FILE = "model.weights.h5"
VOCAB_FILE = "vocab.json"
_EPS = 1e-7


# --------------------------------------------------------------------------- model


class MaskedGlobalMax(keras.layers.Layer):
    """The max over time of a masked sequence: padded steps never win (Keras' GlobalMaxPooling1D ignores
    the mask)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, x, mask=None):
        if mask is not None:
            x = tf.where(tf.expand_dims(mask, -1), x, tf.constant(-1e9, x.dtype))  # broadcast over steps
        return tf.reduce_max(x, axis=1)

    def compute_mask(self, inputs, mask=None):
        return None


def build_model(params: LstmTfParams, vocab_len: int, num_classes: int, max_len: int) -> keras.Model:
    """Embedding → [SpatialDropout] → LSTM(u1, seq) → BN → Dropout → LSTM(u2) → BN → Dropout → Dense(relu)
    → BN → Dropout → Dense(softmax); L2 on the LSTM and Dense kernels. Padding (id 0) is masked. The
    seed's model by default; ``lstm_units`` with one size has one LSTM, ``bidirectional`` wraps the LSTMs,
    ``pooling: max`` takes the last LSTM's outputs' max over the text instead of its last state,
    ``embedding_dropout`` drops embedding channels. Create it under the strategy's scope to train it
    distributed."""
    reg = keras.regularizers.L2(params.l2) if params.l2 > 0 else None
    layers = keras.layers
    inputs = keras.Input(shape=(max_len,), dtype="int32", name="token_ids")
    x = layers.Embedding(vocab_len, params.embedding_dim, mask_zero=True, name="embedding")(inputs)
    if params.embedding_dropout > 0:
        x = layers.SpatialDropout1D(params.embedding_dropout, name="embedding_dropout")(x)
    for i, units in enumerate(params.lstm_units, start=1):
        last = i == len(params.lstm_units)
        lstm = layers.LSTM(units, return_sequences=not last or params.pooling == "max", kernel_regularizer=reg,
                           name=f"lstm_{i}")  # fmt: skip
        x = (layers.Bidirectional(lstm, name=f"bi_lstm_{i}") if params.bidirectional else lstm)(x)
        if last and params.pooling == "max":
            x = MaskedGlobalMax(name="max_over_time")(x)
        x = layers.BatchNormalization(momentum=params.bn_momentum, name=f"bn_{i}")(x)
        x = layers.Dropout(params.dropout, name=f"dropout_{i}")(x)
    n = len(params.lstm_units) + 1
    x = layers.Dense(params.dense_units, activation="relu", kernel_regularizer=reg, name="dense")(x)
    x = layers.BatchNormalization(momentum=params.bn_momentum, name=f"bn_{n}")(x)
    x = layers.Dropout(params.dropout, name=f"dropout_{n}")(x)
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


# --------------------------------------------------------------------------- one run


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


def make_strategy(world_size: int, *, cpus: int | None = None, gpus: bool = True) -> tf.distribute.Strategy:
    """The strategy a worker trains under: ``MultiWorkerMirroredStrategy`` (from TF_CONFIG, which Ray's
    TensorflowTrainer sets) for several workers, else the default one. Call it before any other
    TensorFlow op; it also sets TensorFlow's thread pools to ``cpus``."""
    _set_threads(cpus)
    if not gpus:  # a worker without a GPU of its own must not take one of its node's
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # the runtime is up already (a reused process): it was set then
            pass
    if world_size > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _reset_gpu_peak() -> str | None:
    """The GPU this process trains on ("GPU:0"), its peak memory count reset (this run's peak); None on the CPU."""
    if not tf.config.get_visible_devices("GPU"):
        return None
    try:
        tf.config.experimental.reset_memory_stats("GPU:0")
    except (ValueError, RuntimeError):
        return None
    return "GPU:0"


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
        summed = (
            grads
            if replicas == 1
            else tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
        )
        norm = tf.linalg.global_norm(summed)
        if grad_clip is not None:
            factor = tf.minimum(1.0, grad_clip / (norm + 1e-6))
            grads = [g * factor for g in grads]
        optimizer.apply_gradients(zip(grads, variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, axis=-1, output_type=tf.int32), y), tf.float32))
        return tf.reduce_sum(per_ex), correct, norm

    @tf.function(
        input_signature=[tf.TensorSpec([None, max_len], tf.int32), tf.TensorSpec([None], tf.int32)], autograph=False
    )
    def train_step(x, y):
        out = strategy.run(replica_step, args=(x, y))
        return [strategy.experimental_local_results(o)[0] for o in out]

    return train_step


def _make_probs_fn(model, max_len: int):
    @tf.function(input_signature=[tf.TensorSpec([None, max_len], tf.int32)], autograph=False)
    def probs_fn(x):
        return tf.cast(model(x, training=False), tf.float32)

    return probs_fn


def _moving_stats(model: keras.Model) -> list:
    return [
        v
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
        for v in (layer.moving_mean, layer.moving_variance)
    ]


def _probs(probs_fn, split: SplitArrays, batch_size: int = 512) -> np.ndarray:
    """Class probabilities [N, C] for every row of a split (inference mode), on the CPU."""
    parts = [probs_fn(tf.constant(split.x[i : i + batch_size])).numpy() for i in range(0, len(split.y), batch_size)]
    return np.concatenate(parts).astype(np.float32)


class _TfHooks(SharedHooks):
    """Model and optimizer (under the strategy's scope), the compiled step and the loss options."""

    def __init__(self, params: LstmTfParams, data: LstmData, ctx: LoopContext):
        _set_threads(ctx.cpus)
        strategy = ctx.strategy or tf.distribute.get_strategy()
        several = strategy.num_replicas_in_sync > 1
        super().__init__(params, data, ctx, framework_sum=strategy_all_reduce_sum(strategy) if several else None)
        self.params, self.data, self.strategy = params, data, strategy
        keras.utils.set_random_seed(params.seed)  # the same initial weights and dropout stream on every worker
        self.loss_kw: dict[str, Any] = {"kind": params.loss, "alpha": self.focal_alpha, "gamma": params.focal_gamma}
        with strategy.scope():
            self.model = build_model(params, len(data.vocab), data.num_classes, data.max_len)
            self.optimizer = keras.optimizers.Adam(
                learning_rate=params.lr * self.lr_scale, weight_decay=params.weight_decay or None
            )
            self.optimizer.build(self.model.trainable_variables)
        self.train_step = _make_train_step(
            self.model, self.optimizer, strategy, self.loss_kw, params.grad_clip, data.max_len
        )
        self.probs_fn = _make_probs_fn(self.model, data.max_len)
        self.gpu = _reset_gpu_peak()

    def memory_mb(self) -> tuple[float, float | None]:
        """On a GPU: TensorFlow's peak of this run (its device's size is not known to TensorFlow); else the
        process's peak RSS."""
        if self.gpu is None:
            return super().memory_mb()
        try:
            return round(tf.config.experimental.get_memory_info(self.gpu)["peak"] / 2**20, 1), None
        except (ValueError, RuntimeError):
            return super().memory_mb()

    def set_lr(self, lr: float) -> None:
        self.optimizer.learning_rate = lr

    def step(self, idx):
        train = self.data.splits["train"]
        loss_sum, correct, norm = self.train_step(tf.constant(train.x[idx]), tf.constant(train.y[idx].astype(np.int32)))
        return float(loss_sum), float(correct), float(norm)

    def end_epoch(self) -> None:
        """Average BatchNormalization's moving statistics over the workers (each updated them with its own
        batches), so every worker evaluates the same model. Once an epoch is enough: the moving averages
        are linear, so averaging them at the end of an epoch equals averaging the batch statistics each step."""
        world = self.strategy.num_replicas_in_sync
        if world == 1:
            return
        vars_ = _moving_stats(self.model)
        local = [np.asarray(v.numpy(), dtype=np.float64) for v in vars_]
        mean = self.all_reduce_sum(np.concatenate([a.ravel() for a in local])) / world
        pos = 0
        for v, a in zip(vars_, local):
            v.assign(mean[pos : pos + a.size].reshape(a.shape).astype(np.float32))
            pos += a.size

    def evaluate(self, split: str):
        """Loss (mean, the data loss only) and predicted ids on a split."""
        rows = self.data.splits[split]
        probs = _probs(self.probs_fn, rows)
        loss = per_example_loss(tf.constant(probs), tf.constant(rows.y.astype(np.int32)), **self.loss_kw)
        return float(tf.reduce_mean(loss)), probs.argmax(1)

    def snapshot(self) -> list[np.ndarray]:
        return self.model.get_weights()  # numpy copies

    def restore(self, state: list[np.ndarray]) -> None:
        self.model.set_weights(state)

    def train_state(self) -> dict:
        """Every variable of the model (weights, BatchNorm statistics and the dropout layers' seed
        generators) and of the optimizer (step count, moments)."""
        return {
            "model": [v.numpy() for v in self.model.variables],
            "optimizer": [v.numpy() for v in self.optimizer.variables],
        }

    def load_train_state(self, state: dict) -> None:
        for v, a in zip(self.model.variables, state["model"], strict=True):
            v.assign(a)
        for v, a in zip(self.optimizer.variables, state["optimizer"], strict=True):
            v.assign(a)

    def write_checkpoint(self, folder: Path, state: list[np.ndarray]) -> None:
        """model.weights.h5 (the weights ``state``, written through the trained model itself: a new model
        made inside a strategy's scope would start collectives on this worker alone), vocab.json, meta.json."""
        folder.mkdir(parents=True, exist_ok=True)
        current = self.model.get_weights()
        try:
            self.model.set_weights(state)
            self.model.save_weights(folder / WEIGHTS_FILE)
        finally:
            self.model.set_weights(current)
        data = self.data
        (folder / VOCAB_FILE).write_text(json.dumps(data.vocab, ensure_ascii=False), encoding="utf-8")
        meta = {
            "params": self.params.model_dump(mode="json"),
            "label_names": data.label_names,
            "vocab_len": len(data.vocab),
            "vocab_file": VOCAB_FILE,
            "max_len": data.max_len,
            "weights_file": WEIGHTS_FILE,
        }
        (folder / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


# --------------------------------------------------------------------------- the trainable


class LstmTf(ModelTrainable):
    """``lstm_tf``: the seed's stacked LSTM; Ray Train's TensorflowTrainer runs it (MultiWorkerMirroredStrategy)."""

    name = "lstm_tf"
    params_model = LstmTfParams

    def prepare(self, params, splits, *, device="cpu", log=None) -> LstmData:
        """(``device`` is unused: TensorFlow places ops itself.)"""
        return prepare_lstm_data(params, splits, log=log or log_line)

    def hooks(self, params, data, ctx) -> LoopHooks:
        return _TfHooks(params, data, ctx)

    def load_checkpoint(self, folder, data) -> tuple[LstmTfParams, keras.Model]:
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        params = LstmTfParams(**meta["params"])
        vocab = json.loads((folder / meta.get("vocab_file", VOCAB_FILE)).read_text(encoding="utf-8"))
        if vocab != data.vocab or meta["max_len"] != data.max_len:
            raise ConfigError(
                f"{folder}: the checkpoint's vocabulary / max_len differ from the prepared data's "
                f"({len(vocab)} vs {len(data.vocab)} tokens, max_len {meta['max_len']} vs {data.max_len})"
            )
        model = build_model(params, len(vocab), len(meta["label_names"]), meta["max_len"])
        model.load_weights(folder / meta.get("weights_file", WEIGHTS_FILE))
        return params, model

    def predict(self, model, data, split, *, device="cpu"):
        probs = _probs(_make_probs_fn(model, data.max_len), data.splits[split])
        return probs, probs.argmax(1)

    def write_model(self, checkpoint, train_texts, folder) -> dict:
        """The checkpoint's Keras weights file (H5: arrays only), its vocabulary and meta.json, copied."""
        checkpoint, folder = Path(checkpoint), Path(folder)
        meta = json.loads((checkpoint / "meta.json").read_text(encoding="utf-8"))
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("meta.json", meta.get("vocab_file", VOCAB_FILE), meta.get("weights_file", WEIGHTS_FILE)):
            shutil.copyfile(checkpoint / name, folder / name)
        return {"max_len": meta["max_len"], "params": meta["params"], "needs_backbone": None}

    def load_model(self, folder, *, device="cpu") -> TextPredictor:
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        params = LstmTfParams(**meta["params"])
        vocab = json.loads((folder / meta.get("vocab_file", VOCAB_FILE)).read_text(encoding="utf-8"))
        index = {t: i for i, t in enumerate(vocab)}
        model = build_model(params, len(vocab), len(meta["label_names"]), meta["max_len"])
        model.load_weights(folder / meta.get("weights_file", WEIGHTS_FILE))
        probs_fn = _make_probs_fn(model, meta["max_len"])

        def predict_proba(texts) -> np.ndarray:
            ids, lengths = encode(tokenize(list(texts), params.tokenizer), index, meta["max_len"])
            return _probs(probs_fn, SplitArrays(ids, np.zeros(len(ids), dtype=np.int64), lengths))

        return predict_proba

    def ray_trainer(self) -> type:
        from ray.train.tensorflow import TensorflowTrainer

        return TensorflowTrainer

    def worker_context(self, *, world_size: int, rank: int, cpus: int, use_gpu: bool, report: Report) -> LoopContext:
        # MultiWorkerMirroredStrategy for several workers (TF_CONFIG set by the TensorflowTrainer): made
        # first, before any other TensorFlow op; the loop builds its cross-worker sum from it
        strategy = make_strategy(world_size, cpus=cpus, gpus=use_gpu)
        gpu_ids, node_id = ray_devices()
        return LoopContext(world_size=world_size, rank=rank, cpus=cpus, report=report, strategy=strategy,
                           gpu_ids=gpu_ids, node_id=node_id)  # fmt: skip

    def use_cpus(self, cpus: int) -> str:
        os.environ["SENTUNE_TF_THREADS"] = str(cpus)
        return "cpu"  # TensorFlow places ops itself (it uses a GPU when it sees one)


TRAINABLE = LstmTf()
# the loop as plain functions: ``fit(params, prepare(params, splits))`` trains without Ray
fit, lr_range_test = partial(_driver.fit, TRAINABLE), partial(_driver.lr_range_test, TRAINABLE)
prepare, load_checkpoint, predict = TRAINABLE.prepare, TRAINABLE.load_checkpoint, TRAINABLE.predict
