"""LLaMA backbones and their tokenizers: loading what a ``backbone`` string names (the names and their
check: :mod:`sentune.trainables._backbone_names`), converting GGUF / llama2.c checkpoints once into a
cached Hugging Face folder, and the word-level tokenizer of ``random:`` backbones."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sentune._paths import cache_dir
from sentune.errors import ConfigError
from sentune.trainables._backbone_names import RANDOM_PRESETS, SMOLLM2_FILE, BackboneSpec, parse_backbone, smollm2_gguf

__all__ = [
    "RANDOM_PRESETS",
    "SMOLLM2_FILE",
    "BackboneSpec",
    "TextTokenizer",
    "Tokenized",
    "build_tokenizer",
    "hf_dir",
    "load_decoder",
    "load_tokenizer",
    "parse_backbone",
    "smollm2_gguf",
]

# --------------------------------------------------------------------------- tokenizers


@dataclass
class Tokenized:
    ids: np.ndarray  # int32 [N, max_len], right-padded with pad_id
    lengths: np.ndarray  # int32 [N], >= 1
    pad_id: int


def _pack(seqs: list[list[int]], max_len: int, pad_id: int) -> Tokenized:
    ids = np.full((len(seqs), max_len), pad_id, dtype=np.int32)
    lengths = np.zeros(len(seqs), dtype=np.int32)
    for i, seq in enumerate(seqs):
        seq = seq[:max_len] or [pad_id]
        ids[i, : len(seq)] = seq
        lengths[i] = len(seq)
    return Tokenized(ids, lengths, pad_id)


class TextTokenizer:
    """``encode(texts, max_len) -> Tokenized`` for a backbone, and ``save(folder)``: the tokenizer as data
    files (a ``tokenizers`` JSON, a Hugging Face tokenizer folder or a SentencePiece model), which
    :func:`load_tokenizer` reads back without running code."""

    def __init__(self, kind: str, encode: Callable[[Sequence[str], int], Tokenized], save: Callable[[Path], object]):
        self.kind, self._encode, self._save = kind, encode, save

    def __call__(self, texts: Sequence[str], max_len: int) -> Tokenized:
        return self._encode(texts, max_len)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._save(folder)


def _word_tokenizer(tok) -> TextTokenizer:
    return TextTokenizer(
        "words",
        lambda texts, max_len: _pack([e.ids for e in tok.encode_batch(list(texts))], max_len, 0),
        lambda folder: tok.save(str(folder / "tokenizer.json")),
    )


def _piece_tokenizer(model_file: Path) -> TextTokenizer:
    import shutil

    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    bos = sp.bos_id() if sp.bos_id() >= 0 else None
    pad = sp.pad_id() if sp.pad_id() >= 0 else 0

    def encode_pieces(texts, max_len):
        seqs = sp.encode(list(texts))
        return _pack([([bos] if bos is not None else []) + s for s in seqs], max_len, pad)

    return TextTokenizer(
        "sentencepiece", encode_pieces, lambda folder: shutil.copy(model_file, folder / "tokenizer.model")
    )


def _hf_tokenizer(path: Path) -> TextTokenizer:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))  # a local folder, no remote code
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    def encode(texts, max_len):
        return _pack(
            tok(list(texts), add_special_tokens=True, truncation=True, max_length=max_len)["input_ids"], max_len, pad
        )

    return TextTokenizer("hf", encode, lambda folder: tok.save_pretrained(str(folder)))


def build_tokenizer(spec: BackboneSpec, train_texts: Sequence[str]) -> TextTokenizer:
    """The backbone's tokenizer (``random:``: a word-level vocabulary of the train split)."""
    if spec.kind == "random":
        # A word-level vocabulary of the train split's most frequent words, ties broken by the word:
        # the same data always gives the same ids (the tokenizers trainers break ties by hash order).
        from collections import Counter

        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

        normalizer, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
        counts = Counter(w for t in train_texts for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(t)))
        words = sorted(counts, key=lambda w: (-counts[w], w))[: spec.shape["vocab"] - 2]
        words_tok = Tokenizer(
            models.WordLevel({"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}, unk_token="[UNK]")
        )
        words_tok.normalizer, words_tok.pre_tokenizer = normalizer, pre
        return _word_tokenizer(words_tok)
    if spec.kind == "llama2c":
        return _piece_tokenizer(Path(spec.value).parent / "tokenizer.model")
    return _hf_tokenizer(hf_dir(spec))


def load_tokenizer(kind: str, folder: Path) -> TextTokenizer:
    """A tokenizer :meth:`TextTokenizer.save` wrote to ``folder``."""
    if kind == "words":
        from tokenizers import Tokenizer

        return _word_tokenizer(Tokenizer.from_file(str(folder / "tokenizer.json")))
    if kind == "sentencepiece":
        return _piece_tokenizer(folder / "tokenizer.model")
    if kind == "hf":
        return _hf_tokenizer(folder)
    raise ConfigError(f"{folder}: unknown tokenizer kind {kind!r}")


# --------------------------------------------------------------------------- decoders


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    """De-quantize a GGUF file once into an HF directory (loading the GGUF takes ~25-40 s)."""
    import torch
    from transformers import AutoModel, AutoTokenizer, LlamaModel

    folder, name = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quant = AutoModel.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    cfg = quant.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    model = LlamaModel(cfg)
    model.load_state_dict(quant.state_dict())
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, out)


def hf_dir(spec: BackboneSpec) -> Path:
    """The HF directory for hf/gguf/smollm2 backbones, converting a GGUF file on first use."""
    if spec.kind == "hf":
        return Path(spec.value)
    gguf_path = smollm2_gguf() if spec.kind == "smollm2" else Path(spec.value)
    key = hashlib.sha256(spec.identity().encode()).hexdigest()[:16]
    out = cache_dir("backbones") / f"{gguf_path.stem}-{key}"
    if not (out / "config.json").is_file():
        _convert_gguf(gguf_path, out)
    return out


def _llama2c_to_hf(path: Path):
    """Load a llama2.c checkpoint into a transformers LlamaModel (RoPE layout permuted to HF's)."""
    import torch
    from transformers import LlamaConfig, LlamaModel

    try:  # weights_only: tensors and plain containers are parsed; anything that would run code is refused
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        ckpt["model_args"], ckpt["model"]  # noqa: B018 (the two parts every llama2.c checkpoint has)
    except Exception as exc:  # an UnpicklingError, a truncated zip, a missing key: one line naming the file
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ConfigError(f"{path}: not a llama2.c checkpoint that loads as plain weights ({reason})") from None
    args = ckpt["model_args"]
    state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    dim, n_layers, n_heads = args["dim"], args["n_layers"], args["n_heads"]
    n_kv = args.get("n_kv_heads") or n_heads
    hidden = state["layers.0.feed_forward.w1.weight"].shape[0]
    cfg = LlamaConfig(
        vocab_size=state["tok_embeddings.weight"].shape[0],
        hidden_size=dim,
        intermediate_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        rms_norm_eps=args.get("norm_eps", 1e-5),
        max_position_embeddings=args.get("max_seq_len", 1024),
        attention_dropout=0.0,
    )

    def permute(w, heads):  # interleaved (complex) rotary pairs -> HF's rotate-half layout
        out_dim, in_dim = w.shape
        return w.view(heads, out_dim // heads // 2, 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)

    hf = {"embed_tokens.weight": state["tok_embeddings.weight"], "norm.weight": state["norm.weight"]}
    for i in range(n_layers):
        p = q = f"layers.{i}."
        hf[q + "self_attn.q_proj.weight"] = permute(state[p + "attention.wq.weight"], n_heads)
        hf[q + "self_attn.k_proj.weight"] = permute(state[p + "attention.wk.weight"], n_kv)
        hf[q + "self_attn.v_proj.weight"] = state[p + "attention.wv.weight"]
        hf[q + "self_attn.o_proj.weight"] = state[p + "attention.wo.weight"]
        hf[q + "mlp.gate_proj.weight"] = state[p + "feed_forward.w1.weight"]
        hf[q + "mlp.down_proj.weight"] = state[p + "feed_forward.w2.weight"]
        hf[q + "mlp.up_proj.weight"] = state[p + "feed_forward.w3.weight"]
        hf[q + "input_layernorm.weight"] = state[p + "attention_norm.weight"]
        hf[q + "post_attention_layernorm.weight"] = state[p + "ffn_norm.weight"]
    model = LlamaModel(cfg)
    model.load_state_dict(hf)
    return model


def load_decoder(spec: BackboneSpec, *, seed: int = 0):
    """A ``transformers.LlamaModel`` (no LM head) for the backbone, in float32."""
    import torch
    from transformers import AutoModel, LlamaConfig, LlamaModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar in a sweep's log or predict's output

    if spec.kind == "random":
        s = spec.shape
        cfg = LlamaConfig(
            vocab_size=s["vocab"],
            hidden_size=s["dim"],
            intermediate_size=s.get("hidden", 4 * s["dim"]),
            num_hidden_layers=s["layers"],
            num_attention_heads=s["heads"],
            num_key_value_heads=s["heads"],
            max_position_embeddings=2048,
            attention_dropout=0.0,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return LlamaModel(cfg)
    if spec.kind == "llama2c":
        return _llama2c_to_hf(Path(spec.value))
    model = AutoModel.from_pretrained(str(hf_dir(spec)), dtype=torch.float32)
    if not isinstance(model, LlamaModel) and hasattr(model, "model"):
        model = model.model
    return model
