"""Use what a sweep found, without Ray: a run's best model (the confirmed winner's checkpoint) or an exported
model folder labels texts (``sentune predict``), and a run's best checkpoint becomes a self-contained model
folder (``sentune export --model``).

A model folder holds ``model.json`` (the trainable, the label names, the config, the input's options, the
figures, the resources the job used and the run it came from), ``README.md`` (the model card) and what the
trainable writes (:meth:`~sentune.trainables.ModelTrainable.write_model`): weights in a format that runs no
code when read (safetensors for torch, a Keras weights file for TensorFlow), the tokenizer or vocabulary. A
model on a frozen backbone names the backbone it needs instead of carrying it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sentune import results
from sentune._atomic import atomic_write_text
from sentune._uri import redact
from sentune.data import DataConfig, TextDataset, load_splits, read_texts
from sentune.errors import ConfigError
from sentune.metrics import accuracy, macro_f1
from sentune.trainables import get_trainable

__all__ = ["MODEL_FORMAT", "TextModel", "export_model", "label_file", "model_folder", "open_model"]

MODEL_FORMAT = "sentune-model/1"
MODEL_JSON = "model.json"
RUN_MODEL = "model"  # a run's best model, exported once into the run folder
BATCH = 64


@dataclass
class TextModel:
    """A loaded model folder: ``predict_proba(texts)`` -> float32 [N, C]; ``predict(texts)`` -> one dict a text."""

    folder: Path
    info: dict
    _proba: object

    @property
    def trainable(self) -> str:
        return self.info["trainable"]

    @property
    def label_names(self) -> list[str]:
        return list(self.info["label_names"])

    @property
    def max_len(self) -> int:
        return int(self.info["max_len"])

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        parts = [self._proba(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)]  # type: ignore[operator]
        return np.concatenate(parts).astype(np.float32)

    def predict(self, texts: Sequence[str]) -> list[dict]:
        probs = self.predict_proba(texts)
        names = self.label_names
        return [
            {"text": t, "label": names[int(p.argmax())], "probabilities": {n: float(v) for n, v in zip(names, p)}}
            for t, p in zip(texts, probs)
        ]

    def describe(self) -> dict:
        keys = ("trainable", "label_names", "config", "max_len", "figures", "needs_backbone", "source", "data")
        return {k: self.info.get(k) for k in keys}


def _read_model_json(folder: Path) -> dict:
    try:
        info = json.loads((folder / MODEL_JSON).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{folder / MODEL_JSON}: not a model folder's model.json ({type(exc).__name__})") from None
    if not isinstance(info, dict) or info.get("format") != MODEL_FORMAT:
        raise ConfigError(f"{folder / MODEL_JSON}: not a sentune model folder (format {MODEL_FORMAT} expected)")
    for key in ("trainable", "label_names", "max_len"):
        if key not in info:
            raise ConfigError(f"{folder / MODEL_JSON}: no {key!r}")
    return info


def _is_run(path: Path) -> bool:
    return (path / "run.json").is_file()


def model_folder(source: str | Path) -> Path:
    """The model folder ``source`` names: a model folder as is, or a run folder's best model (exported once
    into ``<run>/model/``, again when the run's best checkpoint has changed since)."""
    if results.is_uri(source):
        raise ConfigError(
            f"{redact(str(source))}: predict and serve read a local folder (sentune export --model first)"
        )
    path = Path(source)
    if (path / MODEL_JSON).is_file():
        _read_model_json(path)
        return path
    if not path.is_dir():
        raise ConfigError(f"{path}: no such run folder or model folder")
    run = results.resolve_run_dir(path)
    if not _is_run(run):
        raise ConfigError(f"{path}: neither a run folder (run.json) nor a model folder (model.json)")
    cached = run / RUN_MODEL
    checkpoint = _best_checkpoint(results.RunView.load(run))
    if (cached / MODEL_JSON).is_file():
        if _read_model_json(cached).get("source", {}).get("checkpoint") == checkpoint:
            return cached
    return export_model(run, cached)


def open_model(source: str | Path, *, device: str = "cpu") -> TextModel:
    """A run's best model or a model folder, loaded to label texts."""
    folder = model_folder(source)
    info = _read_model_json(folder)
    proba = get_trainable(info["trainable"]).load().load_model(folder, device=device)
    return TextModel(folder, info, proba)


# ------------------------------------------------------------------------- export


def _best_checkpoint(view: results.RunView) -> str:
    best = view.best_trial
    checkpoint = best.get("checkpoint_path")
    if not checkpoint:
        raise ConfigError(f"{view.run_dir}: the best trial ({best.name}) has no checkpoint")
    return str(checkpoint)


def _local_checkpoint(checkpoint: str, storage: str | None, tmp: Path) -> Path:
    """The checkpoint folder on this machine (fetched first when it is behind the run's storage URI)."""
    if Path(checkpoint).is_dir():
        return Path(checkpoint)
    if storage and results.is_uri(storage):
        import pyarrow.fs as pafs

        fs, _ = pafs.FileSystem.from_uri(storage)
        pafs.copy_files(checkpoint, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        return tmp
    raise ConfigError(f"{redact(checkpoint)}: the best checkpoint is gone (the run folder was moved or trimmed?)")


def _train_texts(info: dict):
    def texts() -> list[str]:
        return load_splits(DataConfig(**info["data"])).train.texts

    return texts


def _figures(view: results.RunView) -> dict:
    best = view.evaluations.get("best") or {}
    return {split: best[split] for split in ("dev", "test") if split in best}


def _confusion(run: Path, names: list[str]) -> list[list[int]] | None:
    """The best model's test confusion matrix (rows: true class) from predictions_test.csv, if written."""
    path = run / "predictions_test.csv"
    if not path.is_file():
        return None
    import pandas as pd

    frame = pd.read_csv(path)
    index = {n: i for i, n in enumerate(names)}
    matrix = np.zeros((len(names), len(names)), dtype=int)
    for true, pred in zip(frame["label"].astype(str), frame["predicted"].astype(str)):
        if true in index and pred in index:
            matrix[index[true], index[pred]] += 1
    return matrix.tolist()


def _model_info(view: results.RunView, written: dict, checkpoint: str) -> dict:
    info, best = view.info, view.best_trial
    resources = (info.get("spec") or {}).get("resources") or {}
    return {
        "format": MODEL_FORMAT,
        "trainable": info["trainable"],
        "label_names": list(info["label_names"]),
        "config": written["params"],
        "max_len": int(written["max_len"]),
        "needs_backbone": written.get("needs_backbone"),
        "metric": view.metric,
        "figures": _figures(view),
        "confusion_test": _confusion(view.run_dir, list(info["label_names"])),
        "resources": {"cpus": float(resources.get("cpus", 1) or 1), "gpus": float(resources.get("gpus", 0) or 0)},
        "data": {"spec": info.get("data"), "sizes": info.get("sizes")},
        "budget": view.budget,
        "source": {"run": str(view.run_dir), "job": info.get("job"), "trial": str(best.name), "checkpoint": checkpoint},
    }


def export_model(run: str | Path, out: str | Path) -> Path:
    """Write ``run``'s best model as a self-contained model folder ``out`` (replaced whole when it exists)."""
    run_dir = results.resolve_run_dir(run)
    view = results.RunView.load(run_dir)
    checkpoint = _best_checkpoint(view)
    entry = get_trainable(view.info["trainable"])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            storage = (view.info.get("spec") or {}).get("storage_path")
            local = _local_checkpoint(checkpoint, storage, Path(tmp))
            written = entry.load().write_model(local, _train_texts(view.info), staging)
        info = _model_info(view, written, checkpoint)
        atomic_write_text(staging / MODEL_JSON, json.dumps(info, indent=1, default=str))
        atomic_write_text(staging / "README.md", model_card(info))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _matrix_lines(names: list[str], matrix: list[list[int]]) -> list[str]:
    lines = ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {n} | " + " | ".join(str(v) for v in row) + " |" for n, row in zip(names, matrix)]
    return lines


def model_card(info: dict) -> str:
    """The model folder's README.md: data, config, figures, confusion matrix, budget, where it came from."""
    names, src, data = info["label_names"], info["source"], info["data"]
    lines = [f"# {src.get('job') or 'sentune'}: {info['trainable']} sentiment classifier", ""]
    lines += [f"Classes: {', '.join(names)}. Input: up to {info['max_len']} tokens.", ""]
    if info.get("needs_backbone"):
        lines += [f"Needs the backbone `{info['needs_backbone']}` (frozen; named, not copied).", ""]
    sizes = data.get("sizes") or {}
    lines += ["## Data", "", f"Data set: `{json.dumps(data.get('spec'), default=str)}`; rows: "
              + ", ".join(f"{k} {v}" for k, v in sizes.items()), ""]  # fmt: skip
    lines += ["## Config", "", "```json", json.dumps(info["config"], indent=1, default=str), "```", ""]
    lines += ["## Figures", ""]
    for split, figs in (info.get("figures") or {}).items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in figs.items() if isinstance(v, (int, float)))
        lines.append(f"- {split}: {shown}")
    if info.get("confusion_test"):
        lines += ["", "Test confusion matrix:", "", *_matrix_lines(names, info["confusion_test"])]
    budget = info.get("budget") or {}
    spent = f"{budget.get('trials')} trials, {budget.get('epochs')} epochs, {budget.get('trial_seconds')} trial-seconds"
    lines += ["", "## The sweep", "", f"Budget: {spent}.", f"From run `{src['run']}`, trial `{src['trial']}`.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------- predict


def label_file(model: TextModel, path: str | Path, fmt: str, *, text_column: str = "review") -> tuple[list[str], dict]:
    """(texts, figures) of an input file: figures (``accuracy``, ``macro_f1``, ``rows``) when it has labels."""
    read = read_texts(path, fmt, model.label_names, text_column=text_column)
    if isinstance(read, TextDataset):
        if read.label_names != model.label_names and len(read.label_names) != len(model.label_names):
            raise ConfigError(f"{path}: {len(read.label_names)} classes, the model has {len(model.label_names)}")
        return read.texts, {"labels": read.labels}
    return read, {}


def figures(labels: np.ndarray, probs: np.ndarray, n_classes: int) -> dict:
    pred = probs.argmax(1)
    return {"rows": int(len(labels)), "accuracy": accuracy(labels, pred), "macro_f1": macro_f1(labels, pred, n_classes)}


def write_predictions(model: TextModel, texts: Sequence[str], probs: np.ndarray, out: str | Path) -> None:
    """texts, predicted label names and one probability column per class, as CSV (written atomically)."""
    import pandas as pd

    names = model.label_names
    frame = pd.DataFrame({"text": list(texts), "predicted": [names[i] for i in probs.argmax(1)]})
    for i, name in enumerate(names):
        frame[f"p_{name}"] = probs[:, i]
    atomic_write_text(Path(out), frame.to_csv(index=False))
