"""What a run's tables add up to, computed from frames already read (no files here): the leaderboard and
its deterministic ranking, the best trial (and the best baseline), the best config, and the budget.
:class:`sentune.results.RunView` reads a run once and asks these."""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
import pandas as pd

from sentune._direction import Direction
from sentune.errors import ConfigError, SentuneError
from sentune.results._layout import REFERENCE_ID, ROLE_BASELINE, ROLE_CONFIRM, ROLE_REFERENCE, ROLE_SAMPLED
from sentune.results._tables import cell_text

__all__ = ["roles", "ranking", "with_evaluations", "with_reference", "best_of", "pick_best", "best_baseline_of",
           "best_config_of", "budget_of"]  # fmt: skip


def roles(trials: pd.DataFrame) -> pd.Series:
    """Each trial's role (``sampled`` where the table has none)."""
    return trials["role"].fillna(ROLE_SAMPLED) if "role" in trials else pd.Series(ROLE_SAMPLED, index=trials.index)


def _tuned_columns(trials: pd.DataFrame, run_info: dict) -> list[str]:
    tuned = run_info.get("tuned_params")
    cols = [c for c in trials.columns if c.startswith("config/")]
    if tuned is not None:
        return [f"config/{t}" for t in tuned if f"config/{t}" in cols]
    return [c for c in cols if trials[c].astype(str).nunique() > 1]


def _confirmations(trials: pd.DataFrame) -> pd.DataFrame:
    """Per confirmed trial: mean, std and count of its confirmation runs' peak metric."""
    runs = trials[roles(trials) == ROLE_CONFIRM]
    if runs.empty:
        return pd.DataFrame(columns=["confirm_mean", "confirm_std", "confirm_n"])
    stats = runs.groupby("confirm_of")["peak_metric"].agg(["mean", "std", "count"])
    return stats.rename(columns={"mean": "confirm_mean", "std": "confirm_std", "count": "confirm_n"})


def _spans(rows: pd.DataFrame, cols: list[str]) -> list[list]:
    """A PBT trial's epochs grouped into runs of one (donor, config): ``[(donor, values), first, last]``."""
    spans: list[list] = []
    for _, r in rows.iterrows():
        key = (str(r.get("pbt_from") or ""), tuple(cell_text(r[c]) for c in cols))
        if spans and spans[-1][0] == key:
            spans[-1][2] = r["epoch"]
        else:
            spans.append([key, r["epoch"], r["epoch"]])
    return spans


def _history_text(spans: list[list], cols: list[str]) -> str:
    parts, prev = [], ""
    for (donor, values), first, last in spans:
        where = f"e{first}" if first == last else f"e{first}-{last}"
        came = f" from {donor}" if donor and donor != prev else ""
        prev = donor
        shown = " ".join(f"{c.removeprefix('config/')}={v}" for c, v in zip(cols, values, strict=True))
        parts.append(f"{where}{came} {shown}".strip())
    return "; ".join(parts)


def _pbt_history(epochs: pd.DataFrame, tuned: list[str]) -> dict[str, str]:
    """A PBT trial's configs over its epochs: ``e1-4 lr=0.001; e5-8 from <trial> lr=0.0012``."""
    if "pbt_from" not in epochs or epochs.empty:
        return {}
    cols = [f"config/{t}" for t in tuned if f"config/{t}" in epochs]
    out = {}
    for tid, rows in epochs.sort_values("epoch").groupby("trial_id"):
        spans = _spans(rows, cols)
        if any(key[0] for key, _, _ in spans):  # went on from another trial at least once
            out[tid] = _history_text(spans, cols)
    return out


def _board(info: dict, trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """One row per trial of the sweep (confirmation runs left out), unranked, with ``peak_<metric>``."""
    metric = info["metric"]
    last = (
        epochs.sort_values("epoch").groupby("trial_id").tail(1).set_index("trial_id") if len(epochs) else pd.DataFrame()
    )
    # revived_from: the epoch a second chance went on from (a column only in runs that gave second chances)
    extra = [c for c in ("stop_reason", "revived_from", "diagnostics", "overfit") if c in trials.columns]
    board = trials[["trial_id", "status", "epochs_run", "peak_metric", "peak_epoch", *extra]].copy()
    board.insert(2, "role", roles(trials).values)
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
    return board.rename(columns={"peak_metric": f"peak_{metric}"})


def ranking(info: dict, trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard without the test figures and the reference row: one row per trial of the sweep, best
    first (peak metric, then fewer epochs to reach it, then the smaller trial id); with confirmation runs
    the confirmed trials first, ranked by the mean of their confirmations."""
    mode = info["mode"]
    board = _board(info, trials[roles(trials) != ROLE_CONFIRM], epochs)
    confirmed = _confirmations(trials)
    sort = ["_key", "_ep", "trial_id"]
    if len(confirmed):
        for col in confirmed.columns:
            board[col] = board["trial_id"].map(confirmed[col])
        board["_conf"] = Direction(mode).score(board["confirm_mean"]).fillna(-np.inf)
        board["_has"] = board["confirm_n"].fillna(0) > 0
        sort = ["_has", "_conf", *sort]
    key = Direction(mode).score(board[f"peak_{info['metric']}"])
    board = board.assign(_key=key.fillna(-np.inf), _ep=board["peak_epoch"].fillna(np.inf))
    ascending = [c in ("_ep", "trial_id") for c in sort]
    board = board.sort_values(sort, ascending=ascending, kind="mergesort")
    board = board.drop(columns=[c for c in sort if c.startswith("_")]).reset_index(drop=True)
    if board["baseline"].isna().all():
        board = board.drop(columns=["baseline"])
    board.insert(0, "rank", np.arange(1, len(board) + 1))
    return board


def with_evaluations(board: pd.DataFrame, evaluations: dict) -> pd.DataFrame:
    """``test_macro_f1`` / ``test_acc`` for the rows whose best checkpoint was evaluated on test."""
    if not evaluations:
        return board
    board = board.copy()
    ordered = sorted(evaluations.items(), key=lambda kv: kv[0] == "best")  # the best's figures win a shared row
    for key in ("macro_f1", "acc"):
        got = {e["row"]: e["test"][key] for _, e in ordered if e.get("test")}
        board[f"test_{key}"] = board["trial_id"].map(got)
    return board


def with_reference(board: pd.DataFrame, reference: dict | None, metric: str) -> pd.DataFrame:
    """The reference model's row at the end (no rank; never the best)."""
    if reference is None:
        return board
    dev, test = reference.get("dev") or {}, reference.get("test") or {}
    row = {"rank": np.nan, "trial_id": REFERENCE_ID, "status": np.nan, "role": ROLE_REFERENCE,
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


def pick_best(board: pd.DataFrame, trials: pd.DataFrame, mode: Literal["max", "min"], where: str) -> pd.Series:
    """The winner's trial row: the top of the ranking; with confirmation runs, the best of the runs
    confirming the top trial. ``where`` names the run in the error when no trial reported a metric."""
    scored = board[board["peak_epoch"].notna()]
    if scored.empty:
        raise SentuneError(f"{where}: no trial reported a metric; see trials.parquet for errors")
    winner = scored.iloc[0]["trial_id"]
    if "confirm_n" in scored and (scored.iloc[0]["confirm_n"] or 0) > 0:
        runs = trials[(roles(trials) == ROLE_CONFIRM) & (trials["confirm_of"] == winner)]
        best = best_of(runs, mode)
        assert best is not None  # confirm_n counts the runs with a metric
        return best
    return trials.set_index("trial_id").loc[winner].rename(winner)


def best_baseline_of(trials: pd.DataFrame, mode: Literal["max", "min"]) -> pd.Series | None:
    """The baseline trial with the best peak metric (then fewer epochs), or None without baselines."""
    return best_of(trials[roles(trials) == ROLE_BASELINE], mode)


def best_config_of(info: dict, best: pd.Series, board: pd.DataFrame) -> dict:
    """A config that re-runs the trainable alone: ``trainable``, ``data``, ``params``, and where it came from."""
    source = {
        "job": info.get("job"), "run": info.get("run_id"), "trial_id": str(best.name),
        "metric": info["metric"], "mode": info["mode"],
        "peak": float(best["peak_metric"]), "peak_epoch": int(best["peak_epoch"]),
    }  # fmt: skip
    if best.get("role") == ROLE_CONFIRM:  # picked by the mean of the confirmations of the trial it confirms
        row = board.set_index("trial_id").loc[best["confirm_of"]]
        std = row["confirm_std"]
        source["confirmed"] = {"trial_id": str(best["confirm_of"]), "mean": float(row["confirm_mean"]),
                               "std": None if pd.isna(std) else float(std), "runs": int(row["confirm_n"])}  # fmt: skip
    if not isinstance(info.get("trainable"), str):
        raise ConfigError("run.json names no trainable: there is no config to export")
    return {"trainable": info["trainable"], "data": info.get("data") or {}, "params": json.loads(best["config_json"]),
            "source": source}  # fmt: skip


def budget_of(info: dict, trials: pd.DataFrame) -> dict:
    """Epochs trained and trial-seconds (GPU-seconds on GPUs: trial-seconds x the GPUs a trial holds), in
    total and per role (sampled, baseline, confirm)."""
    res = (info.get("spec") or {}).get("resources") or {}
    try:
        gpus = float(res.get("gpus") or 0) * int(res.get("workers_per_trial") or 1)
    except (AttributeError, TypeError, ValueError):  # a run.json edited by hand: no GPU-seconds
        gpus = 0.0
    secs = trials["trial_seconds"].fillna(0.0) if "trial_seconds" in trials else pd.Series(0.0, index=trials.index)
    epochs = trials["epochs_run"].fillna(0).astype(int)
    role = roles(trials)
    out: dict = {"trials": len(trials), "epochs": int(epochs.sum()), "trial_seconds": round(float(secs.sum()), 1),
                 "gpu_seconds": round(float(secs.sum()) * gpus, 1) if gpus else None, "by_role": {}}  # fmt: skip
    for name in sorted(set(role)):
        m = role == name
        out["by_role"][name] = {"trials": int(m.sum()), "epochs": int(epochs[m].sum()),
                                "trial_seconds": round(float(secs[m].sum()), 1)}  # fmt: skip
    return out
