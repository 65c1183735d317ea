"""What a run cost and what it bought: the budget (epochs, trial-seconds, GPU-seconds), the reference
model's figures, the test evaluations of the best trial and of the best baseline, and the one line
that compares them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from sentune.results._aggregate import _roles, best_of
from sentune.results._store import atomic_write_bytes, read_json_file, read_run_info, read_trials, validated

__all__ = ["REFERENCE_FILE", "EVALUATION_FILE", "best_baseline", "budget", "comparison_line", "format_budget",
           "read_evaluations", "read_reference", "split_figures", "write_evaluations", "write_reference"]  # fmt: skip

REFERENCE_FILE = "reference.json"
EVALUATION_FILE = "evaluation.json"


def _write_json(path: Path, data) -> None:
    text = json.dumps(data, indent=2, default=float)
    atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


class _Figures(BaseModel):
    model_config = ConfigDict(extra="allow")
    macro_f1: float | None = None
    acc: float | None = None
    loss: float | None = None
    score: float | None = None


class _Evaluation(BaseModel):
    model_config = ConfigDict(extra="allow")
    trial_id: str
    row: str
    dev: _Figures | None = None
    test: _Figures | None = None


class _Reference(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    dev: _Figures | None = None
    test: _Figures | None = None


def _read_json(path: Path, model):
    return validated(path, model, read_json_file(path)) if path.is_file() else None


def write_reference(run_dir: str | Path, figures: dict) -> None:
    _write_json(Path(run_dir) / REFERENCE_FILE, figures)


def read_reference(run_dir: str | Path) -> dict | None:
    """The reference model's figures (``model``, ``dev`` / ``test``: macro_f1, acc, loss), or None."""
    return _read_json(Path(run_dir) / REFERENCE_FILE, _Reference)


def write_evaluations(run_dir: str | Path, evaluations: dict) -> None:
    """``{"best": {...}, "best_baseline": {...}}``; each: ``trial_id`` (evaluated), ``row`` (its leaderboard
    row: the trial a confirmation run confirms), ``dev`` / ``test`` (macro_f1, acc)."""
    _write_json(Path(run_dir) / EVALUATION_FILE, evaluations)


def read_evaluations(run_dir: str | Path) -> dict:
    return _read_json(Path(run_dir) / EVALUATION_FILE, dict[str, _Evaluation]) or {}


def best_baseline(run_dir: str | Path) -> pd.Series | None:
    """The baseline trial with the best peak metric (then fewer epochs), or None without baselines."""
    trials = read_trials(run_dir)
    return best_of(trials[_roles(trials) == "baseline"], read_run_info(run_dir)["mode"])


def split_figures(labels, probs: np.ndarray) -> dict:
    """Macro-F1 and accuracy of the argmax of ``probs`` [N, classes] against ``labels``."""
    from sklearn.metrics import accuracy_score, f1_score

    pred = probs.argmax(1)
    classes = list(range(probs.shape[1]))
    return {"macro_f1": float(f1_score(labels, pred, labels=classes, average="macro", zero_division=0)),
            "acc": float(accuracy_score(labels, pred))}  # fmt: skip


def budget(run_dir: str | Path) -> dict:
    """Epochs trained and trial-seconds (GPU-seconds on GPUs: trial-seconds x the GPUs a trial holds), in
    total and per role (sampled, baseline, confirm)."""
    info = read_run_info(run_dir)
    trials = read_trials(run_dir)
    res = (info.get("spec") or {}).get("resources") or {}
    gpus = float(res.get("gpus") or 0) * int(res.get("workers_per_trial") or 1)
    secs = trials["trial_seconds"].fillna(0.0) if "trial_seconds" in trials else pd.Series(0.0, index=trials.index)
    epochs = trials["epochs_run"].fillna(0).astype(int)
    roles = _roles(trials)
    out: dict = {"trials": len(trials), "epochs": int(epochs.sum()), "trial_seconds": round(float(secs.sum()), 1),
                 "gpu_seconds": round(float(secs.sum()) * gpus, 1) if gpus else None, "by_role": {}}  # fmt: skip
    for role in sorted(set(roles)):
        m = roles == role
        out["by_role"][role] = {"trials": int(m.sum()), "epochs": int(epochs[m].sum()),
                                "trial_seconds": round(float(secs[m].sum()), 1)}  # fmt: skip
    return out


def format_budget(b: dict) -> str:
    """``budget: 14 trials, 52 epochs, 310 trial-s (GPU-s 78) | baseline 2 trials / 16 epochs | ...``."""
    gpu = f" (GPU-s {b['gpu_seconds']:.0f})" if b.get("gpu_seconds") else ""
    head = f"budget: {b['trials']} trials, {b['epochs']} epochs, {b['trial_seconds']:.0f} trial-s{gpu}"
    parts = [f"{role} {v['trials']} trials / {v['epochs']} epochs / {v['trial_seconds']:.0f} s"
             for role, v in b["by_role"].items()]  # fmt: skip
    return head + (" | " + " | ".join(parts) if len(parts) > 1 else "")


def _fig(split: dict | None, key: str) -> str:
    return "-" if not split or split.get(key) is None or np.isnan(split[key]) else f"{split[key]:.4f}"


def comparison_line(run_dir: str | Path) -> str:
    """One line: the best found against the best baseline on dev and test (and the epochs each side
    trained), and the reference model's figures. Empty when the run has nothing to compare."""
    info = read_run_info(run_dir)
    evals, ref = read_evaluations(run_dir), read_reference(run_dir)
    trials = read_trials(run_dir)
    roles = _roles(trials)
    epochs = trials["epochs_run"].fillna(0).astype(int)
    metric = info["metric"]
    parts = []
    best = evals.get("best")
    if best:
        role = trials.set_index("trial_id")["role"].get(best["row"]) if "role" in trials else None
        what = f"baseline {int(trials.set_index('trial_id').loc[best['row'], 'baseline'])} " if role == "baseline" else ""
        side = int(epochs[roles != "baseline"].sum())
        outside = " outside the baselines" if (roles == "baseline").any() else ""
        parts.append(f"best found {what}{best['row']}: dev {metric} {_fig(best.get('dev'), 'score')}, "
                     f"test macro-F1 {_fig(best.get('test'), 'macro_f1')} ({side} epochs{outside})")  # fmt: skip
    base = evals.get("best_baseline")
    if base:
        n = int(epochs[roles == "baseline"].sum())
        parts.append(f"best baseline {base['row']}: dev {metric} {_fig(base.get('dev'), 'score')}, "
                     f"test macro-F1 {_fig(base.get('test'), 'macro_f1')} ({n} epochs)")  # fmt: skip
    if ref:
        parts.append(f"reference {ref['model']}: dev macro-F1 {_fig(ref.get('dev'), 'macro_f1')}, "
                     f"test macro-F1 {_fig(ref.get('test'), 'macro_f1')}")  # fmt: skip
    return " | ".join(parts)
