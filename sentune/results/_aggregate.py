"""Aggregation of a run: leaderboard, best config (deterministic tie-break), evaluation reports."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import yaml

from sentune._direction import Direction
from sentune.errors import ConfigError
from sentune.results._store import atomic_write_bytes, has_epochs, read_epochs, read_run_info, read_trials

__all__ = ["leaderboard", "best_trial", "best_config", "write_best_config", "write_evaluation",
           "format_leaderboard", "format_table", "export_run"]


def _tuned_columns(trials: pd.DataFrame, run_info: dict) -> list[str]:
    tuned = run_info.get("tuned_params")
    cols = [c for c in trials.columns if c.startswith("config/")]
    if tuned is not None:
        return [f"config/{t}" for t in tuned if f"config/{t}" in cols]
    return [c for c in cols if trials[c].astype(str).nunique() > 1]


def _roles(trials: pd.DataFrame) -> pd.Series:
    return trials["role"].fillna("sampled") if "role" in trials else pd.Series("sampled", index=trials.index)


def _confirmations(trials: pd.DataFrame) -> pd.DataFrame:
    """Per confirmed trial: mean, std and count of its confirmation runs' peak metric."""
    runs = trials[_roles(trials) == "confirm"]
    if runs.empty:
        return pd.DataFrame(columns=["confirm_mean", "confirm_std", "confirm_n"])
    stats = runs.groupby("confirm_of")["peak_metric"].agg(["mean", "std", "count"])
    return stats.rename(columns={"mean": "confirm_mean", "std": "confirm_std", "count": "confirm_n"})


def _pbt_history(epochs: pd.DataFrame, tuned: list[str]) -> dict[str, str]:
    """A PBT trial's configs over its epochs: ``e1-4 lr=0.001; e5-8 from <trial> lr=0.0012``."""
    if "pbt_from" not in epochs or epochs.empty:
        return {}
    cols = [f"config/{t}" for t in tuned if f"config/{t}" in epochs]
    out = {}
    for tid, rows in epochs.sort_values("epoch").groupby("trial_id"):
        spans: list[list] = []
        for _, r in rows.iterrows():
            key = (str(r.get("pbt_from") or ""), tuple(_cell(r[c]) for c in cols))
            if spans and spans[-1][0] == key:
                spans[-1][2] = r["epoch"]
            else:
                spans.append([key, r["epoch"], r["epoch"]])
        parts, prev = [], ""
        for (donor, values), first, last in spans:
            where = f"e{first}" if first == last else f"e{first}-{last}"
            came = f" from {donor}" if donor and donor != prev else ""
            prev = donor
            shown = " ".join(f"{c.removeprefix('config/')}={v}" for c, v in zip(cols, values, strict=True))
            parts.append(f"{where}{came} {shown}".strip())
        if any(key[0] for key, _, _ in spans):  # went on from another trial at least once
            out[tid] = "; ".join(parts)
    return out


def leaderboard(run_dir: str | Path, *, reference: bool = False) -> pd.DataFrame:
    """One row per trial of the sweep, best first: role (sampled, baseline), tuned config, peak metric and
    epoch, final train/val gap, status, trial-seconds. With confirmation runs (``confirm:``) the confirmed
    trials come first, ranked by the mean of their confirmations (``confirm_mean`` / ``confirm_std`` /
    ``confirm_n``). A PBT run adds ``pbt_history`` (the configs each trial ran with, and from whom).
    ``reference``: add the reference model's row at the end (no rank; never the best)."""
    info = read_run_info(run_dir)
    metric, mode = info["metric"], info["mode"]
    all_trials = read_trials(run_dir)
    trials = all_trials[_roles(all_trials) != "confirm"]
    epochs = read_epochs(run_dir) if has_epochs(run_dir) else pd.DataFrame()
    last = epochs.sort_values("epoch").groupby("trial_id").tail(1).set_index("trial_id") if len(epochs) else pd.DataFrame()
    extra = [c for c in ("stop_reason", "diagnostics", "overfit") if c in trials.columns]
    board = trials[["trial_id", "status", "epochs_run", "peak_metric", "peak_epoch", *extra]].copy()
    board.insert(2, "role", _roles(trials).values)
    board["baseline"] = trials["baseline"].values if "baseline" in trials else np.nan
    for col in _tuned_columns(trials, info):
        board[col.removeprefix("config/")] = trials[col].values
    for src, dst in (("train_acc", "final_train_acc"), ("val_acc", "final_val_acc"), ("val_loss", "final_val_loss")):
        board[dst] = board["trial_id"].map(last[src]) if src in last else np.nan
    board["train_val_gap"] = board["final_train_acc"] - board["final_val_acc"]
    board["trial_seconds"] = trials["trial_seconds"].values if "trial_seconds" in trials else np.nan
    history = _pbt_history(epochs, info.get("tuned_params") or [])
    if history:
        board["pbt_history"] = board["trial_id"].map(history)
    board = board.rename(columns={"peak_metric": f"peak_{metric}"})
    peak = f"peak_{metric}"
    confirmed = _confirmations(all_trials)
    sort = ["_key", "_ep", "trial_id"]
    if len(confirmed):
        for col in confirmed.columns:
            board[col] = board["trial_id"].map(confirmed[col])
        board["_conf"] = Direction(mode).score(board["confirm_mean"]).fillna(-np.inf)
        board["_has"] = board["confirm_n"].fillna(0) > 0
        sort = ["_has", "_conf", *sort]
    key = Direction(mode).score(board[peak])
    board = board.assign(_key=key.fillna(-np.inf), _ep=board["peak_epoch"].fillna(np.inf))
    ascending = [c in ("_ep", "trial_id") for c in sort]
    board = board.sort_values(sort, ascending=ascending, kind="mergesort")
    board = board.drop(columns=[c for c in sort if c.startswith("_")]).reset_index(drop=True)
    if board["baseline"].isna().all():
        board = board.drop(columns=["baseline"])
    board.insert(0, "rank", np.arange(1, len(board) + 1))
    board = _with_evaluations(run_dir, board)
    if reference:
        board = _with_reference(run_dir, board, metric)
    return board


def _with_evaluations(run_dir, board: pd.DataFrame) -> pd.DataFrame:
    """test_macro_f1 / test_acc for the trials whose best checkpoint was evaluated on test."""
    from sentune.results._compare import read_evaluations

    evals = read_evaluations(run_dir)
    if not evals:
        return board
    ordered = sorted(evals.items(), key=lambda kv: kv[0] == "best")  # the best's figures win a shared row
    for key in ("macro_f1", "acc"):
        got = {e["row"]: e["test"][key] for _, e in ordered if e.get("test")}
        board[f"test_{key}"] = board["trial_id"].map(got)
    return board


def _with_reference(run_dir, board: pd.DataFrame, metric: str) -> pd.DataFrame:
    from sentune.reference import REFERENCE_ID
    from sentune.results._compare import read_reference

    ref = read_reference(run_dir)
    if ref is None:
        return board
    dev, test = ref.get("dev") or {}, ref.get("test") or {}
    row = {"rank": np.nan, "trial_id": REFERENCE_ID, "status": np.nan, "role": "reference",
           f"peak_{metric}": dev.get(metric.removeprefix("val_"))}  # fmt: skip
    if test:
        if "test_macro_f1" not in board:
            board = board.assign(test_macro_f1=np.nan, test_acc=np.nan)
        row.update(test_macro_f1=test["macro_f1"], test_acc=test["acc"])
    out = pd.concat([board, pd.DataFrame([row])], ignore_index=True)
    out["rank"] = out["rank"].astype("Int64")
    return out


def best_of(trials: pd.DataFrame, mode: Literal["max", "min"]) -> pd.Series | None:
    """The trial row with the best peak metric, then fewer epochs to reach it, then the smaller id (None
    when none has a metric), named by its trial id."""
    runs = trials[trials["peak_metric"].notna()]
    if runs.empty:
        return None
    runs = runs.assign(_k=Direction(mode).score(runs["peak_metric"]))
    row = runs.sort_values(["_k", "peak_epoch", "trial_id"], ascending=[False, True, True]).iloc[0]
    return row.drop(labels=["_k"]).rename(row["trial_id"])


def best_trial(run_dir: str | Path) -> pd.Series:
    """The winner: best peak metric, then fewer epochs to reach it, then the smaller trial id. With
    confirmation runs: the best of the runs confirming the trial with the best mean."""
    board = leaderboard(run_dir)
    scored = board[board["peak_epoch"].notna()]
    if scored.empty:
        from sentune.errors import SentuneError

        raise SentuneError(f"{run_dir}: no trial reported a metric; see trials.parquet for errors")
    trials = read_trials(run_dir)
    winner = scored.iloc[0]["trial_id"]
    if "confirm_n" in scored and (scored.iloc[0]["confirm_n"] or 0) > 0:
        runs = trials[(_roles(trials) == "confirm") & (trials["confirm_of"] == winner)]
        best = best_of(runs, read_run_info(run_dir)["mode"])
        assert best is not None  # confirm_n counts the runs with a metric
        return best
    trials = trials.set_index("trial_id")
    return trials.loc[winner].rename(winner)


def best_config(run_dir: str | Path) -> dict:
    """A config that re-runs the trainable alone: ``trainable``, ``data``, ``params``, and where it came from."""
    info = read_run_info(run_dir)
    best = best_trial(run_dir)
    source = {
        "job": info["job"], "run": info["run_id"], "trial_id": str(best.name),
        "metric": info["metric"], "mode": info["mode"],
        "peak": float(best["peak_metric"]), "peak_epoch": int(best["peak_epoch"]),
    }  # fmt: skip
    if best.get("role") == "confirm":  # picked by the mean of the confirmations of the trial it confirms
        row = leaderboard(run_dir).set_index("trial_id").loc[best["confirm_of"]]
        std = row["confirm_std"]
        source["confirmed"] = {"trial_id": str(best["confirm_of"]), "mean": float(row["confirm_mean"]),
                               "std": None if pd.isna(std) else float(std), "runs": int(row["confirm_n"])}  # fmt: skip
    return {"trainable": info["trainable"], "data": info["data"], "params": json.loads(best["config_json"]),
            "source": source}  # fmt: skip


def write_best_config(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """``best_config.yaml`` in the run folder, or at ``out`` (a folder there: ``out/best_config.yaml``)."""
    out = Path(out) if out else Path(run_dir) / "best_config.yaml"
    if out.is_dir():
        out = out / "best_config.yaml"
    text = yaml.safe_dump(best_config(run_dir), sort_keys=False)
    try:
        atomic_write_bytes(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{out}: cannot write the best config ({exc.strerror or type(exc).__name__})") from None
    return out


def write_evaluation(run_dir: str | Path, label_names: Sequence[str], split: str, texts: Sequence[str],
                     y_true: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """Write ``predictions_<split>.csv``; for the test split also ``classification_report.csv``."""
    from sklearn.metrics import classification_report

    run_dir = Path(run_dir)
    y_pred = probs.argmax(1)
    pred = pd.DataFrame({"text": list(texts), "label": [label_names[i] for i in y_true],
                         "predicted": [label_names[i] for i in y_pred]})
    for i, name in enumerate(label_names):
        pred[f"p_{name}"] = probs[:, i]
    atomic_write_bytes(run_dir / f"predictions_{split}.csv", lambda tmp: pred.to_csv(tmp, index=False))
    report = classification_report(y_true, y_pred, labels=list(range(len(label_names))),
                                   target_names=list(label_names), output_dict=True, zero_division=0)
    frame = pd.DataFrame(report).T.reset_index(names="class")
    if split == "test":
        atomic_write_bytes(run_dir / "classification_report.csv", lambda tmp: frame.to_csv(tmp, index=False))
    return frame


def _cell(value) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(board: pd.DataFrame, *, limit: int | None = 20, width: int | None = None) -> str:
    """A table (the leaderboard, the runs) as text: ``-`` for a missing value, at most ``width`` characters
    a line (default: the terminal's); columns that do not fit are left out from the right and named."""
    shown = board.head(limit) if limit else board
    if shown.empty:
        return "(no trials)"
    if width is None:  # a terminal's width (or COLUMNS); written to a file or a pipe (logs), every column
        sized = sys.stdout.isatty() or "COLUMNS" in os.environ
        width = shutil.get_terminal_size((120, 24)).columns if sized else 10**6
    cells = {c: [str(c)] + [_cell(v) for v in shown[c]] for c in shown.columns}
    sizes = {c: max(len(x) for x in col) for c, col in cells.items()}
    kept: list = []
    used = 0
    for c in shown.columns:
        need = sizes[c] + (2 if kept else 0)
        if used + need > width and len(kept) >= 2:
            continue
        kept.append(c)
        used += need
    left_out = [c for c in shown.columns if c not in kept]
    if left_out:  # room for the note; drop more columns until the lines fit with it
        while len(kept) > 2 and used > width:
            left_out.insert(0, kept.pop())
            used = sum(sizes[c] for c in kept) + 2 * (len(kept) - 1)
    numeric = {c: pd.api.types.is_numeric_dtype(shown[c]) for c in kept}
    lines = []
    for i in range(len(shown) + 1):
        parts = [cells[c][i].rjust(sizes[c]) if numeric[c] else cells[c][i].ljust(sizes[c]) for c in kept]
        lines.append("  ".join(parts).rstrip())
    if left_out:
        note = f"(not shown: {', '.join(map(str, left_out))})"
        lines.append(note if len(note) <= width else note[: width - 4] + "...)")
    return "\n".join(lines)


def format_leaderboard(board: pd.DataFrame, *, limit: int | None = 20, width: int | None = None) -> str:
    """The leaderboard as text (see :func:`format_table`); every column is in ``leaderboard.csv``. On a
    narrow terminal the tuned parameters go before the stop reason, diagnostics and final figures."""
    first = ["rank", "trial_id", "status", "role", "epochs_run"] + [c for c in board.columns if c.startswith("peak_")]
    first += ["confirm_mean", "confirm_std", "confirm_n", "test_macro_f1"]
    late = {"stop_reason", "diagnostics", "overfit", "final_train_acc", "final_val_acc", "final_val_loss",
            "train_val_gap", "trial_seconds", "baseline", "test_acc", "pbt_history"}  # fmt: skip
    middle = [c for c in board.columns if c not in first and c not in late]
    order = [c for c in first if c in board] + middle + [c for c in board.columns if c in late]
    return format_table(board[order], limit=limit, width=width)


def export_run(run_dir: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Write ``leaderboard.csv`` and ``best_config.yaml`` (to ``out`` when given)."""
    run_dir = Path(run_dir)
    board = leaderboard(run_dir, reference=True)
    atomic_write_bytes(run_dir / "leaderboard.csv", lambda tmp: board.to_csv(tmp, index=False))
    return {"leaderboard": run_dir / "leaderboard.csv", "best_config": write_best_config(run_dir, out)}
