"""``llama_torch``: a LLaMA decoder plus a classification head, in plain PyTorch.

Nothing here imports Ray: :meth:`LlamaTorch.prepare` tokenizes (and, for a frozen backbone, computes
the features once), :meth:`LlamaTorch.hooks` builds the model and the optimizer step that the shared
epoch driver runs, :meth:`LlamaTorch.predict` scores a split with a saved checkpoint. The Ray layer
runs the same loop inside Ray Train's ``TorchTrainer`` (DDP).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sentune._log import log_line, warn
from sentune._paths import cache_dir
from sentune.trainables import _driver
from sentune.trainables._backbones import (
    TextTokenizer,
    Tokenized,
    build_tokenizer,
    load_decoder,
    load_tokenizer,
    parse_backbone,
)
from sentune.trainables._contract import (
    FitResult,
    LoopContext,
    LoopHooks,
    ModelTrainable,
    PreparedData,
    Report,
    SplitArrays,
    TextPredictor,
)
from sentune.trainables._device import ray_devices
from sentune.trainables._hooks_base import SharedHooks
from sentune.trainables._params import LlamaTorchParams

__all__ = [
    "CHECKPOINT_FILE",
    "FitResult",
    "LlamaData",
    "LlamaTorch",
    "LlamaTorchParams",
    "LoopContext",
    "fit",
    "load_checkpoint",
    "lr_range_test",
    "predict",
    "prepare",
]

CHECKPOINT_FILE = "classifier.pt"
MODEL_WEIGHTS = "model.safetensors"  # a model folder's weights (no pickle: safetensors)
DECODER_CONFIG = "decoder_config.json"  # a fine-tuned decoder's shape, to build it without its backbone


# --------------------------------------------------------------------------- data


@dataclass(kw_only=True)
class LlamaData(PreparedData):
    features: bool  # x holds a frozen backbone's pooled features (pretrain), not token ids
    hidden_size: int


def _pool(hidden: torch.Tensor, lengths: torch.Tensor, how: str) -> torch.Tensor:
    if how == "mean":
        mask = (torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]).to(hidden.dtype)
        return (hidden * mask[..., None]).sum(1) / lengths[:, None].to(hidden.dtype)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]


def _batches_by_length(lengths: np.ndarray, batch_size: int):
    order = np.argsort(lengths, kind="stable")
    for i in range(0, len(order), batch_size):
        yield order[i : i + batch_size]


@torch.inference_mode()
def compute_features(decoder, tokens: Tokenized, *, pooling: str, device: str, batch_size: int = 32) -> np.ndarray:
    """Pooled hidden states of a frozen decoder, batched by length to cut padding."""
    decoder.eval().to(device)
    out = np.zeros((len(tokens.lengths), decoder.config.hidden_size), dtype=np.float32)
    for idx in _batches_by_length(tokens.lengths, batch_size):
        width = int(tokens.lengths[idx].max())
        ids = torch.from_numpy(tokens.ids[idx, :width].astype(np.int64)).to(device)
        lens = torch.from_numpy(tokens.lengths[idx].astype(np.int64)).to(device)
        mask = (torch.arange(width, device=device)[None, :] < lens[:, None]).long()
        hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
        out[idx] = _pool(hidden, lens, pooling).float().cpu().numpy()
    return out


# --------------------------------------------------------------------------- data


def _prepare(params: LlamaTorchParams, splits, *, device: str, log: Callable[[str], None]) -> LlamaData:
    """Tokenize every split once; with ``option: pretrain`` also compute (or load cached) features."""
    spec = parse_backbone(params.backbone)
    encode = build_tokenizer(spec, splits.train.texts)
    named = {"train": splits.train, "dev": splits.dev}
    if splits.test is not None:
        named["test"] = splits.test
    tokens = {name: encode(ds.texts, params.max_len) for name, ds in named.items()}
    pad_id = tokens["train"].pad_id
    if params.option == "finetune":
        decoder_cfg = load_decoder(spec, seed=params.seed).config
        return LlamaData(
            label_names=list(splits.label_names),
            splits={n: SplitArrays(t.ids, named[n].labels, t.lengths) for n, t in tokens.items()},
            features=False,
            hidden_size=decoder_cfg.hidden_size,
            pad_id=pad_id,
            info={"backbone": params.backbone},
        )
    key = hashlib.sha256(
        json.dumps(
            [
                spec.identity(),
                params.pooling,
                params.max_len,
                params.seed if spec.kind == "random" else 0,
                {n: hashlib.sha256(t.ids.tobytes()).hexdigest() for n, t in tokens.items()},
            ]
        ).encode()
    ).hexdigest()[:24]
    cache = cache_dir("features") / f"{key}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            feats = {n: z[n] for n in tokens}
        log(f"frozen-backbone features loaded from cache {cache}")
    else:
        decoder = load_decoder(spec, seed=params.seed)
        feats = {}
        for name, tok in tokens.items():
            t0 = time.perf_counter()
            feats[name] = compute_features(decoder, tok, pooling=params.pooling, device=device)
            dt = time.perf_counter() - t0
            log(f"{name} features {feats[name].shape} in {dt:.1f} s ({len(tok.lengths) / dt:.1f} sentences/s)")
        tmp = cache.with_name(cache.stem + ".tmp.npz")
        np.savez(tmp, **feats)
        tmp.replace(cache)
    hidden = next(iter(feats.values())).shape[1]
    return LlamaData(
        label_names=list(splits.label_names),
        splits={n: SplitArrays(feats[n], named[n].labels) for n in tokens},
        features=True,
        hidden_size=hidden,
        pad_id=pad_id,
        info={"backbone": params.backbone, "feature_cache": str(cache)},
    )


# --------------------------------------------------------------------------- model


class LlamaClassifier(nn.Module):
    """Decoder (optional: absent when it is frozen and its features are precomputed) + dropout + linear."""

    def __init__(self, hidden_size: int, num_classes: int, dropout: float, decoder=None, pooling: str = "last"):
        super().__init__()
        self.decoder = decoder
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x, lengths=None):
        if self.decoder is not None:
            mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).long()
            hidden = self.decoder(input_ids=x, attention_mask=mask).last_hidden_state
            x = _pool(hidden, lengths, self.pooling)
        return self.head(self.dropout(x))


def build_model(params: LlamaTorchParams, data: LlamaData) -> LlamaClassifier:
    decoder = None
    if not data.features:
        decoder = load_decoder(parse_backbone(params.backbone), seed=params.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        return LlamaClassifier(data.hidden_size, data.num_classes, params.hidden_dropout, decoder, params.pooling)


def loss_fn(logits, target, *, kind: str, alpha: torch.Tensor | None, gamma: float):
    """Cross-entropy, or focal loss ``-alpha_t (1 - p_t)^gamma log p_t`` (mean over the batch)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    if kind == "ce":
        return F.nll_loss(logp, target)
    logp_t = logp.gather(1, target[:, None]).squeeze(1)
    loss = -((1.0 - logp_t.exp()).clamp_min(0.0) ** gamma) * logp_t
    if alpha is not None:
        loss = loss * alpha[target]
    return loss.mean()


# --------------------------------------------------------------------------- one run


def _to(array: np.ndarray, device, pin: bool) -> torch.Tensor:
    """A batch onto its device; ``pin``: through pinned host memory, copied without blocking (a GPU)."""
    t = torch.from_numpy(array)
    return t.pin_memory().to(device, non_blocking=True) if pin else t.to(device)


def _tensors(split: SplitArrays, idx, device, features: bool, pin: bool = False):
    y = _to(split.y[idx], device, pin)
    if features:
        return _to(split.x[idx], device, pin), None, y
    assert split.lengths is not None  # token ids always come with their lengths
    lens = split.lengths[idx]
    width = int(lens.max())
    x = _to(split.x[idx, :width].astype(np.int64), device, pin)
    return x, _to(lens.astype(np.int64), device, pin), y


@torch.no_grad()
def _logits(
    model, split: SplitArrays, data: LlamaData, device, batch_size: int = 64, *, autocast=contextlib.nullcontext
) -> torch.Tensor:
    """The model's logits [N, C] for every row of a split (eval mode, batched by length), on the CPU;
    ``autocast``: the context each batch's forward pass runs in (a run's precision)."""
    model.eval()
    out = torch.zeros((len(split.y), data.num_classes), dtype=torch.float32)
    lengths = split.lengths if split.lengths is not None else np.zeros(len(split.y))
    for idx in _batches_by_length(lengths, max(batch_size, 64)):
        x, lens, _ = _tensors(split, idx, device, data.features)
        with autocast():
            out[torch.from_numpy(idx)] = model(x, lens).float().cpu()
    return out


def _all_reduce_sum(values: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Sum over the torch.distributed process group (DDP's); through the GPU under NCCL, which takes no CPU
    tensors."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.to(device)
    dist.all_reduce(t)
    return t.cpu().numpy()


class _Precision:
    """A run's precision on its device: on CUDA, ``bf16`` autocasts to bfloat16, ``fp16`` to float16 with a
    GradScaler, and float32 matmuls may use TF32 (``tf32``); ``fp32`` trains as it always did. On the CPU
    every one of them is a no-op (one line says so when the run asked for bf16 or fp16)."""

    def __init__(self, params: LlamaTorchParams, device: str, *, note: bool):
        self.cuda = torch.device(device).type == "cuda"
        self.dtype: torch.dtype | None = None
        if self.cuda:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = params.tf32
            self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(params.precision)
            if self.dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
                self.dtype = None
                if note:
                    warn("precision bf16: this GPU has no bfloat16; training in fp32")
        elif note and params.precision != "fp32":
            warn(f"precision {params.precision}: a no-op on the CPU (as are TF32 and pinned memory); training in fp32")
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype is torch.float16 else None

    def autocast(self):
        return torch.autocast("cuda", dtype=self.dtype) if self.dtype is not None else contextlib.nullcontext()


class _TorchHooks(SharedHooks):
    """Model (wrapped for DDP), AdamW at the scaled lr, the loss options and one optimizer step."""

    def __init__(self, params: LlamaTorchParams, data: LlamaData, ctx: LoopContext):
        framework_sum = partial(_all_reduce_sum, device=ctx.device) if ctx.world_size > 1 else None
        super().__init__(params, data, ctx, framework_sum=framework_sum)
        self.params, self.data, self.device = params, data, ctx.device
        self.amp = _Precision(params, ctx.device, note=ctx.rank == 0)
        if self.amp.cuda:  # this run's peak (a reused process ran other trials before)
            torch.cuda.reset_peak_memory_stats(torch.device(ctx.device))
        torch.manual_seed(params.seed + 7919 * ctx.rank)
        self.model = build_model(params, data).to(ctx.device)
        self.train_model = ctx.wrap_model(self.model)
        alpha = self.focal_alpha
        self.loss_kw: dict[str, Any] = dict(
            kind=params.loss,
            gamma=params.focal_gamma,
            alpha=None if alpha is None else torch.tensor(alpha, dtype=torch.float32, device=ctx.device),
        )
        self.trained_params = [p for p in self.train_model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.trained_params, lr=params.lr * self.lr_scale, weight_decay=params.weight_decay
        )

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def start_epoch(self) -> None:
        self.train_model.train()

    def step(self, idx):
        x, lens, y = _tensors(self.data.splits["train"], idx, self.device, self.data.features, pin=self.amp.cuda)
        with self.amp.autocast():
            logits = self.train_model(x, lens)
            loss = loss_fn(logits, y, **self.loss_kw)
        self.optimizer.zero_grad(set_to_none=True)
        norm = self._backward(loss)
        correct = float((logits.detach().argmax(-1) == y).sum())
        return float(loss.detach()) * len(idx), correct, norm

    def _backward(self, loss) -> float:
        """Gradients, clipped, and the optimizer step (fp16: through the GradScaler, which skips a step whose
        gradients overflowed); returns the gradient norm before clipping."""
        clip = self.params.grad_clip or float("inf")
        scaler = self.amp.scaler
        if scaler is None:
            loss.backward()
            norm = float(torch.nn.utils.clip_grad_norm_(self.trained_params, clip))
            self.optimizer.step()
            return norm
        scaler.scale(loss).backward()
        scaler.unscale_(self.optimizer)
        norm = float(torch.nn.utils.clip_grad_norm_(self.trained_params, clip))
        scaler.step(self.optimizer)
        scaler.update()
        return norm

    def memory_mb(self) -> tuple[float, float | None]:
        """On a GPU: the most this run's tensors held at once and the device's memory; else the process's peak."""
        if not self.amp.cuda:
            return super().memory_mb()
        device = torch.device(self.device)
        peak, total = torch.cuda.max_memory_allocated(device), torch.cuda.get_device_properties(device).total_memory
        return round(peak / 2**20, 1), round(total / 2**20, 1)

    def evaluate(self, split: str):
        logits = _logits(self.model, self.data.splits[split], self.data, self.device, self.params.batch_size,
                         autocast=self.amp.autocast)  # fmt: skip
        kw = dict(self.loss_kw, alpha=None if self.loss_kw["alpha"] is None else self.loss_kw["alpha"].cpu())
        return float(loss_fn(logits, torch.from_numpy(self.data.splits[split].y), **kw)), logits.argmax(-1).numpy()

    def snapshot(self) -> dict:
        """A copy of the weights on the CPU (the model keeps training)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state)

    def train_state(self) -> dict:
        cuda = self.device.startswith("cuda") and torch.cuda.is_available()
        state = {
            "model": self.snapshot(),
            "optimizer": self.optimizer.state_dict(),  # written at once by the resume store (npz + JSON)
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if cuda else None,
        }
        if self.amp.scaler is not None:  # fp16: the loss scale and its growth tracker go on from here
            state["scaler"] = self.amp.scaler.state_dict()
        return state

    def load_train_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # this run's weight decay (PBT may have changed it)
            group["weight_decay"] = self.params.weight_decay
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if self.amp.scaler is not None and state.get("scaler"):
            self.amp.scaler.load_state_dict(state["scaler"])

    def write_checkpoint(self, folder: Path, state: dict) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(state, folder / CHECKPOINT_FILE)
        meta = {
            "params": self.params.model_dump(mode="json"),
            "label_names": self.data.label_names,
            "hidden_size": self.data.hidden_size,
        }
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))


# --------------------------------------------------------------------------- a model folder


def write_model_folder(checkpoint: Path, train_texts, folder: Path) -> dict:
    """The checkpoint's weights as safetensors, its tokenizer, and (fine-tuned) the decoder's shape; a
    frozen backbone is named, not copied: the folder's model computes its features from that backbone."""
    from safetensors.torch import save_file

    meta = json.loads((checkpoint / "meta.json").read_text())
    params = LlamaTorchParams(**meta["params"])
    state = torch.load(checkpoint / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / MODEL_WEIGHTS))
    spec = parse_backbone(params.backbone)
    tokenizer = build_tokenizer(spec, train_texts() if spec.kind == "random" else [])  # random: the train words
    tokenizer.save(folder / "tokenizer")
    frozen = params.option != "finetune"
    if not frozen:
        (folder / DECODER_CONFIG).write_text(json.dumps(_decoder_config(spec, params.seed), indent=1, default=str))
    meta.update(tokenizer=tokenizer.kind, weights_file=MODEL_WEIGHTS, frozen_backbone=frozen)
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    return {"max_len": params.max_len, "params": meta["params"], "needs_backbone": params.backbone if frozen else None}


def _decoder_config(spec, seed: int) -> dict:
    """The decoder's shape (its config), read without loading a Hugging Face backbone's weights."""
    if spec.kind in ("random", "llama2c"):
        return load_decoder(spec, seed=seed).config.to_dict()
    from transformers import AutoConfig

    from sentune.trainables._backbones import hf_dir

    return AutoConfig.from_pretrained(str(hf_dir(spec))).to_dict()


def _folder_classifier(folder: Path, meta: dict, params: LlamaTorchParams) -> tuple[LlamaClassifier, Any]:
    """(classifier with the folder's weights, the frozen decoder computing its features or None)."""
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaModel

    frozen = bool(meta["frozen_backbone"])
    decoder = None if frozen else LlamaModel(LlamaConfig.from_dict(json.loads((folder / DECODER_CONFIG).read_text())))
    model = LlamaClassifier(
        meta["hidden_size"], len(meta["label_names"]), params.hidden_dropout, decoder, params.pooling
    )
    model.load_state_dict(load_file(str(folder / meta["weights_file"])))
    features = load_decoder(parse_backbone(params.backbone), seed=params.seed) if frozen else None
    return model.eval(), features


def load_model_folder(folder: Path, *, device: str = "cpu") -> TextPredictor:
    """texts -> probabilities for a folder :func:`write_model_folder` wrote."""
    meta = json.loads((folder / "meta.json").read_text())
    params = LlamaTorchParams(**meta["params"])
    tokenizer: TextTokenizer = load_tokenizer(meta["tokenizer"], folder / "tokenizer")
    model, features = _folder_classifier(folder, meta, params)
    model.to(device)
    shape = LlamaData(label_names=list(meta["label_names"]), splits={}, features=features is not None,
                      hidden_size=meta["hidden_size"])  # fmt: skip

    def predict_proba(texts) -> np.ndarray:
        tokens = tokenizer(list(texts), params.max_len)
        rows = np.zeros(len(tokens.lengths), dtype=np.int64)
        if features is None:
            split = SplitArrays(tokens.ids, rows, tokens.lengths)
        else:
            split = SplitArrays(compute_features(features, tokens, pooling=params.pooling, device=device), rows)
        return torch.softmax(_logits(model, split, shape, device), -1).numpy().astype(np.float32)

    return predict_proba


# --------------------------------------------------------------------------- the trainable


def _cpu_fallback(device: torch.device) -> torch.device:
    """A logical GPU on a node without CUDA (Ray hands one out all the same) means the CPU."""
    return torch.device("cpu") if device.type == "cuda" and not torch.cuda.is_available() else device


class LlamaTorch(ModelTrainable):
    """``llama_torch``: LLaMA decoder + classification head; Ray Train's TorchTrainer (DDP) runs it."""

    name = "llama_torch"
    params_model = LlamaTorchParams

    def prepare(self, params, splits, *, device="cpu", log=None) -> LlamaData:
        return _prepare(params, splits, device=device, log=log or log_line)

    def hooks(self, params, data, ctx) -> LoopHooks:
        return _TorchHooks(params, data, ctx)

    def load_checkpoint(self, folder, data) -> tuple[LlamaTorchParams, LlamaClassifier]:
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        params = LlamaTorchParams(**meta["params"])
        model = build_model(params, data)
        model.load_state_dict(torch.load(folder / CHECKPOINT_FILE, map_location="cpu", weights_only=True))
        return params, model

    def predict(self, model, data, split, *, device="cpu"):
        probs = torch.softmax(_logits(model.to(device), data.splits[split], data, device), -1).numpy()
        return probs, probs.argmax(1)

    def write_model(self, checkpoint, train_texts, folder) -> dict:
        return write_model_folder(Path(checkpoint), train_texts, Path(folder))

    def load_model(self, folder, *, device="cpu") -> TextPredictor:
        return load_model_folder(Path(folder), device=device)

    def ray_trainer(self) -> type:
        from ray.train.torch import TorchTrainer

        return TorchTrainer

    def worker_context(self, *, world_size: int, rank: int, cpus: int, use_gpu: bool, report: Report) -> LoopContext:
        import ray.train.torch

        # a trial without GPUs still sees every GPU of its node (Ray 2.60 leaves CUDA_VISIBLE_DEVICES alone)
        device = _cpu_fallback(ray.train.torch.get_device()) if use_gpu else torch.device("cpu")
        if device.type == "cpu":
            torch.set_num_threads(max(1, cpus))
        # DDP for a worker group; one worker's model just moves to its device (in _TorchHooks)
        # (onto ``device``: Ray's own choice is a CUDA device even where a logical GPU has no CUDA behind it)
        wrap = (lambda m: ray.train.torch.prepare_model(m, move_to_device=device)) if world_size > 1 else (lambda m: m)
        gpu_ids, node_id = ray_devices()  # for the record: the ids Ray assigned, also where CUDA is missing
        return LoopContext(world_size=world_size, rank=rank, device=str(device), cpus=cpus, report=report,
                           wrap_model=wrap, gpu_ids=gpu_ids, node_id=node_id)  # fmt: skip

    def warm_up(self) -> None:
        import transformers  # noqa: F401 (the decoder a checkpoint is built on comes from it)
        from transformers import LlamaConfig, LlamaModel  # noqa: F401

    def use_cpus(self, cpus: int) -> str:
        torch.set_num_threads(max(1, cpus))
        return "cuda" if torch.cuda.is_available() else "cpu"


TRAINABLE = LlamaTorch()
# the loop as plain functions: ``fit(params, prepare(params, splits))`` trains without Ray
fit, lr_range_test = partial(_driver.fit, TRAINABLE), partial(_driver.lr_range_test, TRAINABLE)
prepare, load_checkpoint, predict = TRAINABLE.prepare, TRAINABLE.load_checkpoint, TRAINABLE.predict
