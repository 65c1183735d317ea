"""``llama_torch``: a LLaMA decoder plus a classification head, in plain PyTorch.

Nothing here imports Ray: :func:`prepare` tokenizes (and, for a frozen backbone, computes the
features once), :func:`fit` runs the training loop, :func:`predict` scores a split with a saved
checkpoint. ``sentune.trainables._ray`` runs the same loop inside Ray Train's ``TorchTrainer``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from sentune._paths import cache_dir
from sentune.errors import ConfigError
from sentune.trainables._backbones import Tokenized, build_tokenizer, load_decoder, parse_backbone
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

__all__ = ["LlamaTorchParams", "PreparedData", "LoopContext", "FitResult", "check_data", "prepare", "fit", "lr_range_test",
           "predict", "load_checkpoint"]

CHECKPOINT_FILE = "classifier.pt"


class LlamaTorchParams(CoreParams):
    """Every option of ``llama_torch`` (the core ones of :class:`CoreParams` and the model's); a search
    space may tune any of them except DATA_PARAMS."""

    DATA_PARAMS: ClassVar[tuple[str, ...]] = ("backbone", "option", "max_len", "pooling")

    backbone: str = "smollm2"
    option: Literal["pretrain", "finetune"] = "pretrain"
    max_len: int = Field(64, gt=0, le=8192)
    pooling: Literal["last", "mean"] = "last"
    hidden_dropout: float = Field(0.1, ge=0.0, lt=1.0)

    @field_validator("backbone")
    @classmethod
    def _backbone(cls, v):
        try:
            parse_backbone(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return v


def check_data(values: dict[str, list], class_counts) -> None:
    """Options that can only be checked against the data (every value a search may pick)."""
    check_focal_alpha(values, class_counts)


# --------------------------------------------------------------------------- data

@dataclass
class SplitArrays:
    x: np.ndarray  # features float32 [N, H] (pretrain) or token ids int32 [N, L] (finetune)
    y: np.ndarray  # int64 [N]
    lengths: np.ndarray | None = None  # int32 [N] for token ids


@dataclass
class PreparedData:
    """What every trial of a job shares (through the Ray object store when under Ray)."""

    label_names: list[str]
    splits: dict[str, SplitArrays]
    features: bool
    hidden_size: int
    pad_id: int = 0
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)


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


def prepare(params: LlamaTorchParams, splits, *, device: str = "cpu", log: Callable[[str], None] = print) -> PreparedData:
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
        return PreparedData(
            label_names=list(splits.label_names),
            splits={n: SplitArrays(t.ids, named[n].labels, t.lengths) for n, t in tokens.items()},
            features=False, hidden_size=decoder_cfg.hidden_size, pad_id=pad_id,
            info={"backbone": params.backbone},
        )
    key = hashlib.sha256(
        json.dumps([spec.identity(), params.pooling, params.max_len, params.seed if spec.kind == "random" else 0,
                    {n: hashlib.sha256(t.ids.tobytes()).hexdigest() for n, t in tokens.items()}]).encode()
    ).hexdigest()[:24]
    cache = cache_dir("features") / f"{key}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            feats = {n: z[n] for n in tokens}
        log(f"sentune: frozen-backbone features loaded from cache {cache}")
    else:
        decoder = load_decoder(spec, seed=params.seed)
        feats = {}
        for name, tok in tokens.items():
            t0 = time.perf_counter()
            feats[name] = compute_features(decoder, tok, pooling=params.pooling, device=device)
            dt = time.perf_counter() - t0
            log(f"sentune: {name} features {feats[name].shape} in {dt:.1f} s ({len(tok.lengths) / dt:.1f} sentences/s)")
        tmp = cache.with_name(cache.stem + ".tmp.npz")
        np.savez(tmp, **feats)
        tmp.replace(cache)
    hidden = next(iter(feats.values())).shape[1]
    return PreparedData(
        label_names=list(splits.label_names),
        splits={n: SplitArrays(feats[n], named[n].labels) for n in tokens},
        features=True, hidden_size=hidden, pad_id=pad_id, info={"backbone": params.backbone, "feature_cache": str(cache)},
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


def build_model(params: LlamaTorchParams, data: PreparedData) -> LlamaClassifier:
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


# --------------------------------------------------------------------------- loop

def _identity(x):
    return x


@dataclass
class LoopContext:
    """How the loop talks to whatever runs it: nothing (bare), or Ray Train's workers."""

    world_size: int = 1
    rank: int = 0
    device: str = "cpu"
    wrap_model: Callable[[nn.Module], nn.Module] = _identity
    all_reduce_sum: Callable[[np.ndarray], np.ndarray] = _identity
    # report(metrics, save) is called once per epoch on every worker; ``save(dir)`` writes the
    # checkpoint and is given only when the monitored metric improved.
    report: Callable[[dict, Callable[[Path], None] | None], None] | None = None


@dataclass
class FitResult:
    history: list[dict]
    best_epoch: int
    best_metric: float
    model: LlamaClassifier


def _tensors(split: SplitArrays, idx, device, features: bool):
    y = torch.from_numpy(split.y[idx]).to(device)
    if features:
        return torch.from_numpy(split.x[idx]).to(device), None, y
    lens = split.lengths[idx]
    width = int(lens.max())
    x = torch.from_numpy(split.x[idx, :width].astype(np.int64)).to(device)
    return x, torch.from_numpy(lens.astype(np.int64)).to(device), y


@torch.no_grad()
def _logits(model, split: SplitArrays, data: PreparedData, device, batch_size: int = 64) -> torch.Tensor:
    """The model's logits [N, C] for every row of a split (eval mode, batched by length), on the CPU."""
    model.eval()
    out = torch.zeros((len(split.y), data.num_classes), dtype=torch.float32)
    lengths = split.lengths if split.lengths is not None else np.zeros(len(split.y))
    for idx in _batches_by_length(lengths, max(batch_size, 64)):
        x, lens, _ = _tensors(split, idx, device, data.features)
        out[torch.from_numpy(idx)] = model(x, lens).float().cpu()
    return out


def _evaluate(model, split: SplitArrays, data: PreparedData, device, loss_kw, batch_size: int):
    """Loss and predicted ids on a split."""
    logits = _logits(model, split, data, device, batch_size)
    kw = dict(loss_kw, alpha=None if loss_kw["alpha"] is None else loss_kw["alpha"].cpu())
    return float(loss_fn(logits, torch.from_numpy(split.y), **kw)), logits.argmax(-1).numpy()


@dataclass
class _Setup:
    model: LlamaClassifier
    train_model: nn.Module
    trainable: list
    optimizer: torch.optim.Optimizer
    loss_kw: dict
    per_rank: int
    scale: float


def _setup(params: LlamaTorchParams, data: PreparedData, ctx: LoopContext) -> _Setup:
    """Model (wrapped for DDP), AdamW at the scaled lr, and the loss options: shared by fit and the range test."""
    torch.manual_seed(params.seed + 7919 * ctx.rank)
    model = build_model(params, data).to(ctx.device)
    train_model = ctx.wrap_model(model)
    train_y = data.splits["train"].y
    alpha = resolve_alpha(params.focal_alpha, np.bincount(train_y, minlength=data.num_classes)) if params.loss == "focal" else None
    loss_kw = dict(kind=params.loss, gamma=params.focal_gamma,
                   alpha=None if alpha is None else torch.tensor(alpha, dtype=torch.float32, device=ctx.device))
    scale = lr_scale_factor(params.lr_scaling, ctx.world_size)
    trainable = [p for p in train_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=params.lr * scale, weight_decay=params.weight_decay)
    return _Setup(model, train_model, trainable, opt, loss_kw, len(train_y) // ctx.world_size, scale)


def _step(su: _Setup, params: LlamaTorchParams, data: PreparedData, idx, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """One optimizer step on rows ``idx``: returns (loss, logits, labels, grad norm before clipping)."""
    x, lens, y = _tensors(data.splits["train"], idx, device, data.features)
    logits = su.train_model(x, lens)
    loss = loss_fn(logits, y, **su.loss_kw)
    su.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = float(torch.nn.utils.clip_grad_norm_(su.trainable, params.grad_clip or float("inf")))
    su.optimizer.step()
    return loss.detach(), logits.detach(), y, norm


def fit(params: LlamaTorchParams, data: PreparedData, ctx: LoopContext | None = None) -> FitResult:
    """Train; report each epoch; restore the best epoch's weights at the end."""
    ctx = ctx or LoopContext()
    device = ctx.device
    su = _setup(params, data, ctx)
    model, train_model, opt, world, scale = su.model, su.train_model, su.optimizer, ctx.world_size, su.scale
    train, dev = data.splits["train"], data.splits["dev"]
    steps_per_epoch = math.ceil(su.per_rank / params.batch_size)
    total_steps = steps_per_epoch * params.epochs
    warmup_steps = round(params.warmup_epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warmup_steps, total_steps))
    best, best_state = BestEpoch(params.monitor), None
    history = []
    for epoch in range(1, params.epochs + 1):
        t0 = time.perf_counter()
        train_model.train()
        shard = epoch_shard(params.seed, len(train.y), su.per_rank, ctx.world_size, ctx.rank, epoch)
        sums = np.zeros(3)  # loss * n, correct, n
        norms = []
        lr_used = opt.param_groups[0]["lr"]
        for i in range(0, len(shard), params.batch_size):
            idx = shard[i : i + params.batch_size]
            lr_used = opt.param_groups[0]["lr"]
            loss, logits, y, norm = _step(su, params, data, idx, device)
            norms.append(norm)
            sched.step()
            sums += (float(loss) * len(idx), float((logits.argmax(-1) == y).sum()), len(idx))
        sums = ctx.all_reduce_sum(sums)
        val_loss, val_pred = _evaluate(model, dev, data, device, su.loss_kw, params.batch_size)
        seconds = time.perf_counter() - t0
        metrics = epoch_metrics(epoch=epoch, sums=sums, val_loss=val_loss, y_dev=dev.y, val_pred=val_pred,
                                label_names=data.label_names, lr=lr_used, norms=norms, seconds=seconds, workers=world,
                                batch_size=params.batch_size, lr_scale=scale)
        improved = best.update(metrics)
        if improved:
            best_state = _saved_state(model)
        history.append(metrics)
        if ctx.report is not None:
            save = (lambda d, s=best_state: _write_checkpoint(Path(d), s, params, data)) if improved else None
            ctx.report(metrics, save)
    model.load_state_dict(best_state)
    return FitResult(history, best.epoch, best.value, model)


def lr_range_test(params: LlamaTorchParams, data: PreparedData, *, lr_min: float = 1e-7, lr_max: float = 1e-2,
                  steps: int = 100, diverge_factor: float = 4.0, smoothing: float = 0.1,
                  ctx: LoopContext | None = None) -> list[dict]:
    """Raise the lr exponentially from ``lr_min`` to ``lr_max`` over ``steps`` optimizer steps (cycling
    through the train split), recording the loss; stop once the smoothed loss exceeds ``diverge_factor``
    times its minimum or turns NaN. Returns one row per step: step, lr, loss, smoothed_loss."""
    ctx = ctx or LoopContext()
    su = _setup(params, data, ctx)
    su.train_model.train()
    batches = cycling_batches(params.seed, len(data.splits["train"].y), su.per_rank, ctx.world_size, ctx.rank,
                              params.batch_size)

    def step_at(lr: float) -> float:
        for group in su.optimizer.param_groups:
            group["lr"] = lr
        loss = float(_step(su, params, data, next(batches), ctx.device)[0])
        return float(ctx.all_reduce_sum(np.array([loss]))[0] / ctx.world_size)

    return lr_range_rows(step_at, lr_min=lr_min, lr_max=lr_max, steps=steps, diverge_factor=diverge_factor,
                         smoothing=smoothing)


# --------------------------------------------------------------------------- checkpoints

def _saved_state(model: LlamaClassifier) -> dict:
    """A copy of the weights on the CPU (the model keeps training)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _write_checkpoint(folder: Path, state: dict, params: LlamaTorchParams, data: PreparedData) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / CHECKPOINT_FILE)
    meta = {"params": params.model_dump(mode="json"), "label_names": data.label_names, "hidden_size": data.hidden_size}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def load_checkpoint(folder: str | Path, data: PreparedData) -> tuple[LlamaTorchParams, LlamaClassifier]:
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    params = LlamaTorchParams(**meta["params"])
    model = build_model(params, data)
    model.load_state_dict(torch.load(folder / CHECKPOINT_FILE, map_location="cpu"))
    return params, model


def predict(model: LlamaClassifier, data: PreparedData, split: str, *, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities [N, C] and predicted ids [N] for a split."""
    probs = torch.softmax(_logits(model.to(device), data.splits[split], data, device), -1).numpy()
    return probs, probs.argmax(1)
