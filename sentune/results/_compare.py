"""Runs side by side (``sentune compare``): each run's winner (config, dev and test figures, its confirmation),
budget and reference model, the options that differ, and for each pair of winners a paired bootstrap on their
test predictions, so that a new winner can be told from noise.

The paired bootstrap needs the same test rows on both sides: the two ``predictions_test.csv`` files are matched
row by row and must hold the same texts and labels in the same order (else: "different test sets: no paired
test", and only the figures are compared). Row indices are drawn with replacement ``resamples`` times (one
seeded generator, the same draws for both sides); each draw gives A's macro-F1 minus B's, over every class of
the run (scikit-learn's ``f1_score(average="macro", labels=range(n_classes))``: a class a draw lacks on both
sides counts as 0). The result: the point difference on the full set, the 2.5 / 97.5 percentiles of the
draws and the share of draws in which A beats B.

A run keeps the test predictions of its best model only (not of its best baseline nor of the reference model):
:func:`winner_against` compares the best with those two by figures, against the interval of the best's own
test macro-F1, and says why there is no paired test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sentune.errors import ConfigError
from sentune.results._format import format_table
from sentune.results._layout import ROLE_BASELINE, predictions_file
from sentune.results._store import damaged
from sentune.results._tables import cell_text
from sentune.results._view import RunLike, RunView

__all__ = ["compare_runs", "format_comparison", "paired_bootstrap", "paired_test", "read_test_predictions",
           "resample_indices", "winner_against", "against_lines"]  # fmt: skip

_CELLS = 1 << 21  # the most resampled labels held at once (rows x draws of one chunk)
# job settings that say where a run went, not how it tuned: left out of "which options differ"
_NOT_SETTINGS = ("name", "storage_path", "tracking", "range_test", "kind")


# ---- the paired bootstrap ----


def resample_indices(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The draws, in chunks of rows (each row ``n`` indices into ``range(n)``, with replacement): the same as
    ``np.random.default_rng(seed).integers(0, n, size=(resamples, n))`` taken whole."""
    rng = np.random.default_rng(seed)
    step = max(1, _CELLS // max(n, 1))
    for start in range(0, resamples, step):
        yield rng.integers(0, n, size=(min(step, resamples - start), n))


def _macro_f1_rows(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro-F1 of each row of resampled labels (``y``, ``pred``: draws x rows), as scikit-learn counts it."""
    f1 = np.zeros(len(y))
    for c in range(n_classes):
        truth, said = y == c, pred == c
        tp = (truth & said).sum(1)
        denominator = truth.sum(1) + said.sum(1)  # 2 tp + fp + fn
        f1 += np.divide(2.0 * tp, denominator, out=np.zeros(len(y)), where=denominator > 0)
    return f1 / n_classes


def _macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    from sklearn.metrics import f1_score  # imported when needed: reading a run stays light

    return float(f1_score(y, pred, labels=list(range(n_classes)), average="macro", zero_division=0))


def paired_bootstrap(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_classes: int, *,
                     resamples: int = 2000, seed: int = 0) -> dict:  # fmt: skip
    """A's macro-F1 minus B's on the same rows (class ids): ``diff`` on the full set, its 95% interval
    (``low``, ``high``: the 2.5 / 97.5 percentiles over the draws), ``a_better`` (the share of draws where
    A's macro-F1 is above B's) and ``tied``; ``a_macro_f1`` / ``b_macro_f1`` on the full set."""
    y, pred_a, pred_b = (np.asarray(v, dtype=np.int64) for v in (y, pred_a, pred_b))
    if not len(y):
        raise ConfigError("a paired bootstrap needs at least one test row")
    diffs = np.concatenate([
        _macro_f1_rows(y[idx], pred_a[idx], n_classes) - _macro_f1_rows(y[idx], pred_b[idx], n_classes)
        for idx in resample_indices(len(y), resamples, seed)
    ])  # fmt: skip
    a, b = _macro_f1(y, pred_a, n_classes), _macro_f1(y, pred_b, n_classes)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"rows": len(y), "resamples": resamples, "seed": seed, "a_macro_f1": a, "b_macro_f1": b,
            "diff": a - b, "low": float(low), "high": float(high), "a_better": float(np.mean(diffs > 0)),
            "tied": float(np.mean(diffs == 0))}  # fmt: skip


def interval(y: np.ndarray, pred: np.ndarray, n_classes: int, *, resamples: int = 2000, seed: int = 0) -> dict:
    """One model's test macro-F1 with its 95% bootstrap interval (``macro_f1``, ``low``, ``high``)."""
    y, pred = np.asarray(y, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    scores = np.concatenate([_macro_f1_rows(y[idx], pred[idx], n_classes)
                             for idx in resample_indices(len(y), resamples, seed)])  # fmt: skip
    low, high = np.percentile(scores, [2.5, 97.5])
    return {"macro_f1": _macro_f1(y, pred, n_classes), "low": float(low), "high": float(high), "rows": len(y)}


# ---- the test predictions of a run ----


def read_test_predictions(run: RunLike) -> pd.DataFrame | None:
    """The best model's ``predictions_test.csv`` (text, label, predicted, as text), or None without one."""
    path = RunView.of(run).run_dir / predictions_file("test")
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise damaged(path, exc) from None
    missing = [c for c in ("text", "label", "predicted") if c not in frame]
    if missing:
        raise damaged(path, f"no {missing[0]} column")
    return frame[["text", "label", "predicted"]]


def _class_ids(frame: pd.DataFrame, names: Sequence[str], path: Path) -> tuple[np.ndarray, np.ndarray]:
    index = {str(n): i for i, n in enumerate(names)}
    unknown = sorted((set(frame.label) | set(frame.predicted)) - set(index))
    if unknown:
        raise damaged(path, f"label {unknown[0]!r} is not one of the run's classes")
    return frame.label.map(index).to_numpy(np.int64), frame.predicted.map(index).to_numpy(np.int64)


def _different_rows(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    """Why two prediction files are not on the same test rows (None when they are)."""
    if len(a) != len(b):
        return f"different test sets ({len(a)} and {len(b)} rows): no paired test"
    for column in ("text", "label"):
        differ = np.flatnonzero(a[column].to_numpy() != b[column].to_numpy())
        if len(differ):
            return f"different test sets (row {differ[0] + 1}'s {column} differs): no paired test"
    return None


def paired_test(run_a: RunLike, run_b: RunLike, *, resamples: int = 2000, seed: int = 0) -> dict:
    """The paired bootstrap of two runs' best models on their test predictions (:func:`paired_bootstrap`),
    or ``{"why": ...}`` when there is none (a run without test predictions, different classes or rows)."""
    views = RunView.of(run_a), RunView.of(run_b)
    frames = [read_test_predictions(v) for v in views]
    for view, frame in zip(views, frames):
        if frame is None:
            return {"why": f"{view.run_dir.name} has no test predictions: no paired test"}
    names = [[str(n) for n in v.info.get("label_names") or []] for v in views]
    if names[0] != names[1] or not names[0]:
        return {"why": "different classes: no paired test"}
    why = _different_rows(frames[0], frames[1])
    if why:
        return {"why": why}
    (y, pred_a), (_, pred_b) = (_class_ids(f, names[0], v.run_dir / predictions_file("test"))
                                for f, v in zip(frames, views))  # fmt: skip
    return paired_bootstrap(y, pred_a, pred_b, len(names[0]), resamples=resamples, seed=seed)


# ---- what a run brings to the comparison ----


def _num(value) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)


def _figures(split: dict | None, *keys: str) -> dict:
    return {k: _num((split or {}).get(k)) for k in keys}


def _winner(view: RunView) -> dict:
    best = view.evaluations.get("best") or {}
    config = view.best_config
    source = config["source"]
    row = best.get("row") or (source.get("confirmed") or {}).get("trial_id") or source["trial_id"]
    return {"trial_id": source["trial_id"], "row": row, "config": config["params"], "peak": source["peak"],
            "dev": _figures(best.get("dev"), "score", "macro_f1", "acc"),
            "test": _figures(best.get("test"), "macro_f1", "acc"), "confirmed": source.get("confirmed")}  # fmt: skip


def run_entry(view: RunView, name: str) -> dict:
    """One run of a comparison: where it is, its winner, budget and reference model."""
    info, ref = view.info, view.reference
    budget = view.budget
    return {"name": name, "run_dir": str(view.run_dir), "job": info.get("job"), "run_id": info.get("run_id"),
            "trainable": info.get("trainable"), "metric": view.metric, "mode": view.mode,
            "tuned": list(info.get("tuned_params") or []), "winner": _winner(view),
            "budget": {k: budget.get(k) for k in ("trials", "epochs", "trial_seconds", "gpu_seconds")},
            "reference": None if not ref else {"model": ref.get("model"), "dev": _figures(ref.get("dev"), "macro_f1"),
                                               "test": _figures(ref.get("test"), "macro_f1")}}  # fmt: skip


def _flat(value, prefix: str = "") -> dict[str, str]:
    """A nested mapping as dotted keys, each value as compact JSON."""
    if isinstance(value, dict) and value:
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: json.dumps(value, sort_keys=True, default=str)}


def _differing(flats: list[dict[str, str]]) -> dict[str, list]:
    keys = sorted({k for f in flats for k in f})
    return {k: [f.get(k) for f in flats] for k in keys if len({f.get(k) for f in flats}) > 1}


def differing_options(views: Sequence[RunView]) -> dict[str, dict[str, list]]:
    """What differs between the runs: ``config`` (the winners' options) and ``job`` (the jobs' settings:
    search space, search, scheduler, budget, ...); each option -> its value in each run (JSON, None: unset)."""
    configs = [_flat(v.best_config["params"]) for v in views]
    jobs = [_flat({k: s for k, s in (v.info.get("spec") or {}).items() if k not in _NOT_SETTINGS}) for v in views]
    return {"config": _differing(configs), "job": _differing(jobs)}


def _name(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else f"R{i + 1}"


def compare_runs(runs: Sequence[RunLike], *, resamples: int = 2000, seed: int = 0) -> dict:
    """Runs side by side: ``runs`` (each's winner, budget, reference; named A, B, ...), ``differs`` (see
    :func:`differing_options`) and ``pairs``: for each pair of winners, :func:`paired_test` (A minus B)."""
    if len(runs) < 2:
        raise ConfigError("compare: give two runs or more")
    if resamples < 1:
        raise ConfigError(f"compare: resamples must be 1 or more, not {resamples}")
    views = [RunView.of(r) for r in runs]
    pairs = []
    for i in range(len(views)):
        for j in range(i + 1, len(views)):
            test = paired_test(views[i], views[j], resamples=resamples, seed=seed)
            pairs.append({"a": _name(i), "b": _name(j), **test})
    return {"runs": [run_entry(v, _name(i)) for i, v in enumerate(views)], "differs": differing_options(views),
            "pairs": pairs, "resamples": resamples, "seed": seed}  # fmt: skip


# ---- a run's own winner against its best baseline and the reference model ----


def _against(name: str, best_f1: float | None, other_f1: float | None, spread: dict | None, why: str) -> dict:
    """The best against another model by figures: the gap, and whether the other lies in the best's interval."""
    if best_f1 is None:
        return {"against": name, "why": "the best has no test figures"}
    out = {"against": name, "best_macro_f1": best_f1, "macro_f1": other_f1, "why": why}
    if other_f1 is not None:
        out["diff"] = best_f1 - other_f1
        if spread:
            out["inside"] = bool(spread["low"] <= other_f1 <= spread["high"])
    return out


def _spread(view: RunView, resamples: int, seed: int) -> dict | None:
    frame, names = read_test_predictions(view), [str(n) for n in view.info.get("label_names") or []]
    if frame is None or not len(frame) or not names:
        return None
    y, pred = _class_ids(frame, names, view.run_dir / predictions_file("test"))
    return interval(y, pred, len(names), resamples=resamples, seed=seed)


def winner_against(run: RunLike, *, resamples: int = 2000, seed: int = 0) -> dict:
    """Is a run's winner better than its best baseline and the reference model? ``best``: its test macro-F1
    and 95% bootstrap interval (None without test predictions); ``items``: for each of the two, the figures,
    the gap, whether the other's figure lies inside the best's interval, and why there is no paired test."""
    view = RunView.of(run)
    evals, ref = view.evaluations, view.reference
    best_f1 = _num(((evals.get("best") or {}).get("test") or {}).get("macro_f1"))
    spread = _spread(view, resamples, seed) if best_f1 is not None else None
    items = []
    base = evals.get("best_baseline")
    if base and base.get("trial_id") == (evals.get("best") or {}).get("trial_id"):
        items.append({"against": f"best baseline {base['row']}", "why": "the best is the best baseline itself"})
    elif base:
        other = _num((base.get("test") or {}).get("macro_f1"))
        items.append(_against(f"best baseline {base['row']}", best_f1, other, spread,
                              "no paired test: the run keeps test predictions of its best model only"))  # fmt: skip
    elif (view.roles == ROLE_BASELINE).any():
        items.append({"against": "best baseline", "why": "the best baseline was not evaluated (no checkpoint)"})
    if ref:
        other = _num((ref.get("test") or {}).get("macro_f1"))
        items.append(_against(f"reference model {ref.get('model')}", best_f1, other, spread,
                              "no paired test: reference.json holds its figures, not its predictions"))  # fmt: skip
    return {"best": spread, "items": items}


# ---- as text ----


def against_lines(found: dict) -> list[str]:
    """:func:`winner_against` as lines: the best's interval, then the best baseline and the reference model."""
    best = found["best"]
    lines = [] if not best else [
        f"the best's test macro-F1 {best['macro_f1']:.4f}, 95% bootstrap interval [{best['low']:.4f}, "
        f"{best['high']:.4f}] over its {best['rows']} test rows"]  # fmt: skip
    for item in found["items"]:
        if "diff" not in item:
            lines.append(f"{item['against']}: {item['why']}")
            continue
        where = ""
        if "inside" in item:
            where = (" (inside the best's interval: the gap may be noise)" if item["inside"]
                     else " (outside the best's interval)")  # fmt: skip
        diff = item["diff"]
        gap = f"{abs(diff):.4f} {'above' if diff > 0 else 'below'} it" if diff else "level with it"
        lines.append(f"{item['against']}: test macro-F1 {item['macro_f1']:.4f}, the best is {gap}{where}; "
                     f"{item['why']}")  # fmt: skip
    return lines


def _fig(value) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.4f}"


def _rows(entries: list[dict], differs: dict) -> pd.DataFrame:
    """The runs side by side: one column per run, one row per figure (figures to 4 decimals)."""

    def row(what: str, cells, show=cell_text) -> dict:
        return {"": what, **{e["name"]: show(cell) for e, cell in zip(entries, cells)}}

    win = [e["winner"] for e in entries]
    refs = [e["reference"] or {} for e in entries]
    options = sorted({p for e in entries for p in e["tuned"]} | set(differs["config"]))
    table = [row("run", [f"{e['job']}/{e['run_id']}" for e in entries]), row("winner", [w["row"] for w in win])]
    table += [row(p, [w["config"].get(p) for w in win]) for p in options]
    table += [row(f"dev {entries[0]['metric']}", [w["dev"]["score"] for w in win], _fig),
              row("test macro-F1", [w["test"]["macro_f1"] for w in win], _fig),
              row("test accuracy", [w["test"]["acc"] for w in win], _fig),
              row("confirmed (mean ± std)", [_confirmed(w["confirmed"]) for w in win]),
              *(row(f"budget {k.replace('_', '-')}", [e["budget"][k] for e in entries])
                for k in ("trials", "epochs", "trial_seconds", "gpu_seconds")
                if any(e["budget"][k] is not None for e in entries)),
              row("reference", [r.get("model") for r in refs]),
              row("reference test macro-F1", [(r.get("test") or {}).get("macro_f1") for r in refs], _fig)]  # fmt: skip
    return pd.DataFrame(table)


def _confirmed(c: dict | None) -> str | None:
    if not c:
        return None
    std = "" if c.get("std") is None else f" ± {c['std']:.4f}"
    return f"{c['mean']:.4f}{std} ({c['runs']} seeds)"


def pair_line(pair: dict) -> str:
    """One pair of winners in one line: the difference, its interval, how often A beats B, the verdict."""
    a, b = pair["a"], pair["b"]
    if "why" in pair:
        return f"{a} vs {b}: {pair['why']}"
    if pair["low"] > 0:
        verdict = f"{a} is better (the interval is above 0)"
    elif pair["high"] < 0:
        verdict = f"{b} is better (the interval is below 0)"
    else:
        verdict = "no clear difference (the interval holds 0)"
    return (f"{a} vs {b} ({pair['rows']} test rows, {pair['resamples']} paired resamples): macro-F1 "
            f"{pair['a_macro_f1']:.4f} - {pair['b_macro_f1']:.4f} = {pair['diff']:+.4f}, 95% interval "
            f"[{pair['low']:+.4f}, {pair['high']:+.4f}]; {a} better in {pair['a_better']:.1%} of resamples, "
            f"tied in {pair['tied']:.1%}: {verdict}")  # fmt: skip


def format_comparison(found: dict, *, width: int | None = None) -> str:
    """:func:`compare_runs` as text: the runs side by side, the job settings that differ, each pair's test."""
    entries = found["runs"]
    lines = [f"{e['name']}: {e['run_dir']}" for e in entries]
    lines += ["", format_table(_rows(entries, found["differs"]), limit=None, width=width)]
    job = found["differs"]["job"]
    if job:
        lines += ["", "job settings that differ:"]
        lines += [f"  {k}: " + ", ".join(f"{e['name']} {v if v is not None else '-'}" for e, v in zip(entries, vals))
                  for k, vals in job.items()]  # fmt: skip
    lines += ["", *(pair_line(p) for p in found["pairs"])]
    return "\n".join(lines)
