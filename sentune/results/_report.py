"""``report.html``: one self-contained page (plots are inline PNGs; no CDN, no external URL)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from sentune.results._aggregate import leaderboard
from sentune.results._store import atomic_write_bytes, read_epochs, read_run_info, read_trials

__all__ = ["write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:12px} td,th{border:1px solid #ddd;padding:3px 6px;text-align:right}
th{background:#f4f4f4} figure{display:inline-block;margin:8px;vertical-align:top} figcaption{font-size:12px;color:#555}
.warn{color:#a40} .meta{color:#555;font-size:13px}
"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(plot_id: str, caption: str, fig) -> str:
    return (f'<figure class="plot" id="{html.escape(plot_id)}"><img alt="{html.escape(caption)}" '
            f'src="data:image/png;base64,{_png(fig)}"><figcaption>{html.escape(caption)}</figcaption></figure>')


def _curves(epochs: pd.DataFrame, trials: pd.DataFrame, pairs, title: str, plot_id: str) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 3.4), squeeze=False)
    stopped = set(trials.loc[trials.status == "stopped_early", "trial_id"])
    for ax, (col, label) in zip(axes[0], pairs):
        for tid, g in epochs.sort_values("epoch").groupby("trial_id"):
            if col not in g:
                continue
            line, = ax.plot(g.epoch, g[col], lw=1.2, alpha=0.8, label=tid)
            if tid in stopped:  # where ASHA (or a diagnostic) stopped it
                ax.plot(g.epoch.iloc[-1], g[col].iloc[-1], "x", color=line.get_color(), ms=8, mew=2)
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=10)
    if epochs.trial_id.nunique() <= 12:
        axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(title + " (x: stopped early)", fontsize=11)
    return _figure(plot_id, title, fig)


def _metric_vs(board: pd.DataFrame, param: str, metric_col: str) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    x = board[param]
    numeric = pd.to_numeric(x, errors="coerce")
    if numeric.notna().all():
        ax.scatter(numeric, board[metric_col], c=board[metric_col], cmap="viridis")
        if param == "lr" or (numeric > 0).all() and numeric.max() / max(numeric.min(), 1e-300) > 50:
            ax.set_xscale("log")
    else:
        cats = x.astype(str)
        order = sorted(cats.unique())
        ax.scatter([order.index(c) for c in cats], board[metric_col], c=board[metric_col], cmap="viridis")
        ax.set_xticks(range(len(order)), order)
    ax.set_xlabel(param)
    ax.set_ylabel(metric_col)
    return _figure(f"metric-vs-{param}", f"{metric_col} vs {param}", fig)


def _parallel(board: pd.DataFrame, params: list[str], metric_col: str) -> str:
    import matplotlib.pyplot as plt
    from matplotlib import cm

    cols = params + [metric_col]
    norm = {}
    for c in cols:
        v = pd.to_numeric(board[c], errors="coerce")
        if v.isna().any():  # categorical: spread the categories over [0, 1]
            cats = sorted(board[c].astype(str).unique())
            v = board[c].astype(str).map({k: i / max(1, len(cats) - 1) for i, k in enumerate(cats)})
        elif c == "lr" or ((v > 0).all() and v.max() / v.min() > 50):
            v = np.log10(v)
        lo, hi = v.min(), v.max()
        norm[c] = (v - lo) / (hi - lo) if hi > lo else v * 0 + 0.5
    fig, ax = plt.subplots(figsize=(1.6 * len(cols) + 2, 3.6))
    score = board[metric_col].fillna(board[metric_col].min())
    colors = cm.viridis((score - score.min()) / max(1e-12, score.max() - score.min()))
    for i in range(len(board)):
        ax.plot(range(len(cols)), [norm[c].iloc[i] for c in cols], color=colors[i], alpha=0.8)
    ax.set_xticks(range(len(cols)), cols, rotation=20)
    ax.set_yticks([])
    return _figure("parallel-coordinates", f"all trials, coloured by {metric_col}", fig)


def _pred_distribution(epochs: pd.DataFrame, trial_id: str, names: list[str], why: str) -> str:
    import matplotlib.pyplot as plt

    g = epochs[epochs.trial_id == trial_id].sort_values("epoch")
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    bottom = np.zeros(len(g))
    for n in names:
        col = f"val_pred_count/{n}"
        vals = g[col].fillna(0).to_numpy() if col in g else np.zeros(len(g))
        ax.bar(g.epoch, vals, bottom=bottom, label=n)
        bottom += vals
    ax.set_xlabel("epoch")
    ax.set_xticks(g.epoch.tolist())
    ax.set_ylabel("dev predictions")
    ax.legend(fontsize=7)
    return _figure(f"pred-dist-{trial_id}", f"prediction distribution over epochs: {trial_id} ({why})", fig)


def _confusion(pred: pd.DataFrame, names: list[str]) -> str:
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    cm_ = confusion_matrix(pred["label"], pred["predicted"], labels=names)
    fig, ax = plt.subplots(figsize=(1 + 0.9 * len(names), 0.8 + 0.8 * len(names)))
    ax.imshow(cm_, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm_):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=9, color="black" if v < cm_.max() / 2 else "white")
    ax.set_xticks(range(len(names)), names, rotation=30)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return _figure("confusion-matrix", "best trial: test confusion matrix", fig)


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` for a run folder and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    metric, names = info["metric"], info["label_names"]
    epochs, trials, board = read_epochs(run_dir), read_trials(run_dir), leaderboard(run_dir)
    metric_col = f"peak_{metric}"
    tuned = [p for p in info.get("tuned_params", []) if p in board.columns]
    parts = [f"<h1>sentune run {html.escape(info['job'])} / {html.escape(info['run_id'])}</h1>",
             f'<p class="meta">trainable {html.escape(info["trainable"])}; metric {metric} ({info["mode"]}); '
             f"{len(trials)} trials, {int(trials.epochs_run.sum())} epochs trained; classes: "
             f"{html.escape(', '.join(names))}</p>",
             '<h2 id="leaderboard">Leaderboard</h2>',
             board.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0, classes="leaderboard")]
    parts.append('<h2 id="learning-curves">Learning curves</h2>')
    parts.append(_curves(epochs, trials, [("train_loss", "train loss"), ("val_loss", "val loss")], "loss", "curves-loss"))
    parts.append(_curves(epochs, trials, [("train_acc", "train accuracy"), ("val_acc", "val accuracy")], "accuracy", "curves-acc"))
    parts.append(_curves(epochs, trials, [("val_macro_f1", "val macro-F1")], "val macro-F1", "curves-f1"))
    scored = board[board[metric_col].notna()]
    if tuned and len(scored):
        parts.append('<h2 id="hyperparameters">Metric vs hyperparameters</h2>')
        parts.extend(_metric_vs(scored, p, metric_col) for p in tuned)
        parts.append(_parallel(scored, tuned, metric_col))
    parts.append('<h2 id="predictions">Prediction distribution</h2>')
    if len(scored):
        parts.append(_pred_distribution(epochs, scored.iloc[0]["trial_id"], names, "best trial"))
    if "diagnostics" in trials:
        for tid in trials.loc[trials.diagnostics.fillna("").str.contains("collapse"), "trial_id"]:
            parts.append(_pred_distribution(epochs, tid, names, "collapsed"))
    pred_path = run_dir / "predictions_test.csv"
    if pred_path.is_file():
        parts.append('<h2 id="confusion">Test confusion matrix</h2>')
        parts.append(_confusion(pd.read_csv(pred_path, keep_default_na=False), names))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>sentune {html.escape(info['job'])}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}"
            f"<script type='application/json' id='run-info'>{html.escape(json.dumps({'job': info['job'], 'run': info['run_id']}))}</script>"
            "</body></html>")
    out = run_dir / "report.html"
    atomic_write_bytes(out, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return out
