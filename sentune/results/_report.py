"""``report.html``: one self-contained page that reads like an answer.

At the top: what won (its config, dev and test figures), how much early stopping saved (epochs trained
against the full budget), and the trials to look at (a NaN loss, a lasting collapse, severe over-fit); then
whether the winner is better than the best baseline and the reference model (its test macro-F1's interval).
Below: interactive Plotly charts whose JavaScript is inlined into the page (it opens offline, no CDN):
learning curves per metric, the metric against each tuned parameter, parallel coordinates with scales,
the prediction distribution and the test confusion matrix; hovering a line or point shows its trial's
config. The leaderboard is a table that fits the page and sorts by any column.
"""

from __future__ import annotations

import functools
import html
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from sentune import metrics
from sentune.results._compare import against_lines, winner_against
from sentune.results._format import format_budget, gpu_fraction_line, second_chance_line, study_stop_line
from sentune.results._importance import importance_line, read_importance
from sentune.results._layout import REPORT, STATUS_ERRORED, STATUS_STOPPED, predictions_file
from sentune.results._store import write_text
from sentune.results._tables import cell_text as _fmt
from sentune.results._view import RunLike, RunView

__all__ = ["write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;color:#222;max-width:1180px;
     padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;font-size:13px} \
.answer{background:#f3f8f3;border:1px solid #cfe3cf;border-radius:6px;padding:12px 16px}
.answer p{margin:6px 0} .look{background:#fff7ec;border:1px solid #f0d9b5;border-radius:6px;padding:8px 16px}
.ok{color:#2a6b2a} .warn{color:#a40} .plot{margin:6px 0}
.tablewrap{overflow-x:auto;max-width:100%} table.leaderboard{border-collapse:collapse;font-size:11px;width:100%}
table.leaderboard td,table.leaderboard th{border-bottom:1px solid #e3e3e3;padding:3px 4px;text-align:right;
  white-space:nowrap} table.leaderboard th{background:#f4f4f4;cursor:pointer;position:sticky;top:0;white-space:normal;
  word-break:break-all;vertical-align:bottom;font-size:10px}
table.leaderboard th:hover{background:#e8eef8} table.leaderboard tr:first-child td{font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:8px}
"""

_SORT_JS = """
function sortTable(th){const t=th.closest('table'),i=[...th.parentNode.children].indexOf(th),b=t.tBodies[0];
const asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';const rows=[...b.rows];
const key=r=>{const s=r.cells[i].textContent.trim(),n=parseFloat(s);return s==='-'?null:(isNaN(n)?s:n)};
rows.sort((x,y)=>{const a=key(x),c=key(y);if(a===null)return 1;if(c===null)return -1;
return (a<c?-1:a>c?1:0)*(asc?1:-1)});rows.forEach(r=>b.appendChild(r));}
"""

_CURVES = [("val_macro_f1", "val macro-F1"), ("val_loss", "val loss"), ("train_loss", "train loss"),
           ("val_acc", "val accuracy"), ("train_acc", "train accuracy")]  # fmt: skip


def _config_text(config: dict, tuned: list[str]) -> str:
    return ", ".join(f"{k}={_fmt(config.get(k))}" for k in tuned) or "(no tuned parameters)"


@functools.cache
def _white_template() -> dict:
    import plotly.io as pio

    return pio.templates["plotly_white"].to_plotly_json()


def _plot(fig, plot_id: str, caption: str, *, top: int = 36) -> str:
    """A figure as a div: a plotly Figure, or a figure as a plain dict (many traces: built without plotly's
    per-property validation, which costs seconds at hundreds of trials)."""
    import plotly.io as pio

    frame = dict(margin=dict(l=50, r=20, t=top, b=40), height=340 + top - 36,
                 title=dict(text=caption, font=dict(size=13)))  # fmt: skip
    if isinstance(fig, dict):
        fig["layout"] = {**fig.get("layout", {}), **frame, "template": _white_template()}
    else:
        fig.update_layout(**frame, template="plotly_white")
    config = {"displaylogo": False, "displayModeBar": False}
    div = pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=plot_id, config=config,
                      validate=not isinstance(fig, dict))  # fmt: skip
    return f'<div class="plot" data-plot="{html.escape(plot_id)}">{div}</div>'


def _log_axis(values: pd.Series, name: str) -> bool:
    v = pd.to_numeric(values, errors="coerce")
    return bool(v.notna().all() and (v > 0).all() and (name == "lr" or v.max() / max(v.min(), 1e-300) > 50))


def _number(v) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def _curves(epochs: pd.DataFrame, trials: pd.DataFrame, configs: dict, tuned: list[str]) -> list[str]:
    stopped = set(trials.loc[trials.status == STATUS_STOPPED, "trial_id"])
    out = []
    by_trial = list(epochs.sort_values("epoch").groupby("trial_id"))
    for col, label in _CURVES:
        if col not in epochs:
            continue
        data: list[dict] = []
        for tid, g in by_trial:
            text = f"{tid}<br>{_config_text(configs.get(tid, {}), tuned)}"
            x, y = [int(e) for e in g.epoch], [_number(v) for v in g[col]]
            data.append(dict(
                type="scatter", x=x, y=y, mode="lines+markers", name=str(tid), text=[text] * len(g),
                marker=dict(size=5), hovertemplate="%{text}<br>epoch %{x}: " + label + " %{y:.4g}<extra></extra>",
            ))  # fmt: skip
            if tid in stopped:
                data.append(dict(type="scatter", x=[x[-1]], y=[y[-1]], mode="markers", showlegend=False,
                                 marker=dict(symbol="x", size=10, color="#444"), hoverinfo="skip"))  # fmt: skip
        layout = dict(showlegend=False, xaxis=dict(title=dict(text="epoch")), yaxis=dict(title=dict(text=label)))
        out.append(_plot({"data": data, "layout": layout}, f"curves-{col}", f"{label} per epoch (x: stopped early)"))
    return out


def _metric_vs(
    scored: pd.DataFrame, params: list[str], metric_col: str, configs: dict, tuned, prefix: str = "metric-vs"
) -> list[str]:
    import plotly.graph_objects as go

    out = []
    for param in params:
        text = [f"{t}<br>{_config_text(configs.get(t, {}), tuned)}" for t in scored.trial_id]
        numeric = pd.to_numeric(scored[param], errors="coerce")
        x = numeric if numeric.notna().all() else scored[param].astype(str)
        fig = go.Figure(go.Scatter(
            x=x, y=scored[metric_col], mode="markers", text=text,
            marker=dict(size=9, color=scored[metric_col], colorscale="Viridis", showscale=False),
            hovertemplate="%{text}<br>" + metric_col + " %{y:.4g}<extra></extra>",
        ))  # fmt: skip
        fig.update_layout(xaxis_title=param, yaxis_title=metric_col)
        if _log_axis(scored[param], param):
            fig.update_xaxes(type="log")
        out.append(_plot(fig, f"{prefix}-{param}", f"{metric_col} vs {param}"))
    return out


def _parallel(scored: pd.DataFrame, params: list[str], metric_col: str) -> str:
    import plotly.graph_objects as go

    dims = []
    for col in params + [metric_col]:
        v = pd.to_numeric(scored[col], errors="coerce")
        if v.isna().any():  # categorical: one tick per value
            cats = sorted(scored[col].astype(str).unique())
            dims.append(dict(label=col, values=scored[col].astype(str).map(cats.index), tickvals=list(range(len(cats))),
                             ticktext=cats, range=[-0.2, len(cats) - 0.8]))  # fmt: skip
        elif _log_axis(v, col):  # a log scale, labelled in the parameter's own values
            lv = np.log10(v)
            ticks = list(range(math.floor(lv.min()), math.ceil(lv.max()) + 1))
            dims.append(dict(label=f"{col} (log)", values=lv, tickvals=ticks, ticktext=[f"1e{t}" for t in ticks],
                             range=[ticks[0], ticks[-1]]))  # fmt: skip
        else:
            lo, hi = float(v.min()), float(v.max())
            pad = (hi - lo) * 0.05 or 0.5
            dims.append(dict(label=col, values=v, range=[lo - pad, hi + pad]))
    fig = go.Figure(go.Parcoords(
        line=dict(color=scored[metric_col], colorscale="Viridis", showscale=True, colorbar=dict(title=metric_col)),
        dimensions=dims,
    ))  # fmt: skip
    return _plot(fig, "parallel-coordinates", f"every trial, coloured by {metric_col}", top=90)


def _pred_distribution(epochs: pd.DataFrame, trial_id: str, names: list[str], why: str) -> str:
    import plotly.graph_objects as go

    g = epochs[epochs.trial_id == trial_id].sort_values("epoch")
    fig = go.Figure()
    for n in names:
        col = f"val_pred_count/{n}"
        fig.add_trace(go.Bar(x=g.epoch, y=g[col].fillna(0) if col in g else [0] * len(g), name=n))
    fig.update_layout(barmode="stack", xaxis_title="epoch", yaxis_title="dev predictions", xaxis=dict(dtick=1))
    return _plot(fig, f"pred-dist-{trial_id}", f"dev predictions per class: {trial_id} ({why})")


def _confusion(pred: pd.DataFrame, names: list[str]) -> str:
    import plotly.graph_objects as go

    cm = metrics.confusion(pred["label"], pred["predicted"], names)
    fig = go.Figure(go.Heatmap(z=cm, x=names, y=names, colorscale="Blues", text=cm, texttemplate="%{text}",
                               hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"))  # fmt: skip
    fig.update_layout(xaxis_title="predicted", yaxis_title="true", yaxis=dict(autorange="reversed"))
    return _plot(fig, "confusion-matrix", "best trial: test confusion matrix")


def _table(board: pd.DataFrame) -> str:
    head = "".join(f'<th onclick="sortTable(this)" title="sort">{html.escape(str(c))}</th>' for c in board.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in board.itertuples(index=False))  # fmt: skip
    return (f'<div class="tablewrap"><table class="leaderboard" id="leaderboard-table"><thead><tr>{head}</tr></thead>'
            f"<tbody>{rows}</tbody></table></div>")  # fmt: skip


def _look_at(trials: pd.DataFrame) -> list[str]:
    """Trials a user should look at: a NaN loss, a collapse or stagnation that lasted, severe over-fit."""
    out = []
    for t in trials.itertuples():
        why = [d for d in str(getattr(t, "diagnostics", "ok") or "ok").split(",") if d and d != "ok"]
        if getattr(t, "overfit", None) == "severe":
            why.append("severe over-fit")
        if t.status == STATUS_ERRORED:
            why.append("errored")
        if why:
            out.append(f"<li><b>{html.escape(t.trial_id)}</b>: {html.escape(', '.join(why))}</li>")
    return out


def _winner(view: RunView, board: pd.DataFrame, metric_col: str, tuned: list[str]) -> list[str]:
    """The best trial: its config, its dev figure and its test figures; its confirmation when it has one."""
    metric, test = view.metric, view.test_figures
    scored = board[board[metric_col].notna()]
    if not len(scored):
        return ["<p>No trial reported a metric.</p>"]
    best = scored.iloc[0]
    parts = [
        f'<p id="winner"><b>Best: {html.escape(best.trial_id)}</b> with '
        f"{html.escape(_config_text(view.configs.get(best.trial_id, {}), tuned))}</p>"
        f"<p>dev {metric} <b>{_fmt(best[metric_col])}</b> at epoch {_fmt(best.peak_epoch)}"
        + (
            f"; test accuracy <b>{test['acc']:.4f}</b>, test macro-F1 <b>{test['macro_f1']:.4f}</b>"
            if test
            else "; no test split"
        )  # fmt: skip
        + "</p>"
    ]
    if "confirm_n" in best and pd.notna(best.get("confirm_n")):
        std = "" if pd.isna(best.get("confirm_std")) else f" &plusmn; {best.confirm_std:.4f}"
        parts.append(f'<p id="confirmed">Confirmed: dev {metric} <b>{best.confirm_mean:.4f}</b>{std} (mean '
                     f"&plusmn; std over {int(best.confirm_n)} fresh seeds); its test figures are those of the "
                     "best of those runs.</p>")  # fmt: skip
    return parts


def _saved(trials: pd.DataFrame) -> list[str]:
    """How many epochs were trained against the full budget (every trial to its full epochs)."""
    budget = int(trials.epochs_max.fillna(0).sum()) if "epochs_max" in trials else 0
    if not budget:
        return []
    trained = int(trials.epochs_run.sum())
    stopped = int((trials.status == STATUS_STOPPED).sum())
    saved = 1 - trained / budget
    return [f'<p id="budget">Trained {trained} of the {budget} epochs a full run of every trial would take '
            f"({saved:.0%} saved by early stopping: {stopped} of {len(trials)} trials stopped early).</p>"]  # fmt: skip


def _ended(view: RunView) -> list[str]:
    out = []
    for pid, line in (("study-stop", study_stop_line(view.info)), ("second-chances", second_chance_line(view.info)),
                      ("gpu-fraction", gpu_fraction_line(view))):  # fmt: skip
        if line:
            out.append(f'<p id="{pid}">{html.escape(line[0].upper() + line[1:])}.</p>')
    return out


def _headline(view: RunView, trials: pd.DataFrame, board: pd.DataFrame, metric_col: str, tuned: list[str]) -> str:
    parts = ['<section class="answer" id="headline"><h2 style="margin-top:0;border:0">What the sweep found</h2>',
             *_winner(view, board, metric_col, tuned), _comparison(view), *_saved(trials), *_ended(view),
             "</section>"]  # fmt: skip
    look = _look_at(trials)
    parts.append('<section class="look" id="look-at"><p><b>Trials to look at</b></p>'
                 + (f"<ul>{''.join(look)}</ul>" if look else '<p class="ok">none: no NaN loss, no lasting collapse, '
                    "no severe over-fit</p>") + "</section>")  # fmt: skip
    return "".join(parts)


def _comparison(view: RunView) -> str:
    """The best against the best baseline and the reference model (TF-IDF + logistic regression)."""
    base, ref, test = view.evaluations.get("best_baseline"), view.reference, view.test_figures
    items = []
    if base and base.get("test"):
        items.append(f'<li id="vs-baseline">best baseline <b>{html.escape(base["row"])}</b>: dev {view.metric} '
                     f"{base['dev']['score']:.4f}, test macro-F1 {base['test']['macro_f1']:.4f}</li>")  # fmt: skip
    if ref and ref.get("test"):
        verdict = ""
        if test:
            gap = test["macro_f1"] - ref["test"]["macro_f1"]
            verdict = (f" &mdash; the sweep's best is <b>{'above' if gap > 0 else 'below'}</b> it on test by "
                       f"{abs(gap):.4f} macro-F1")  # fmt: skip
        items.append(f'<li id="vs-reference">reference model ({html.escape(ref["model"])}, fitted once in '
                     f"{ref.get('seconds', 0):.1f} s): dev macro-F1 {ref['dev']['macro_f1']:.4f}, test macro-F1 "
                     f"{ref['test']['macro_f1']:.4f}{verdict}</li>")  # fmt: skip
    elif ref:
        items.append(f'<li id="vs-reference">reference model ({html.escape(ref["model"])}): dev macro-F1 '
                     f"{ref['dev']['macro_f1']:.4f}</li>")  # fmt: skip
    items.append(f'<li id="spent">{html.escape(format_budget(view.budget))}</li>')
    return f'<ul id="compare">{"".join(items)}</ul>'


def _better(view: RunView) -> str:
    """Is the winner better? Its test macro-F1 with a bootstrap interval, against the best baseline and the
    reference model (by figures: the run keeps no test predictions of those two)."""
    lines = against_lines(winner_against(view))
    if not lines:
        return ""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return f'<h2 id="better">Is the winner better?</h2><ul id="better-items">{items}</ul>'


def _persistent_diagnostics(epochs: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Each trial's diagnostics and over-fit verdict summarized again from its epochs' flags (what
    persisted, by :func:`sentune.diagnostics.summarize`), whatever trials.parquet says."""
    if not any(c.startswith("diag_") for c in epochs.columns):
        return trials
    from sentune.diagnostics import summarize

    rows = {tid: summarize(g.sort_values("epoch").to_dict("records")) for tid, g in epochs.groupby("trial_id")}
    trials = trials.copy()
    for key in ("diagnostics", "overfit"):
        trials[key] = [
            rows.get(t, {}).get(key, v) for t, v in zip(trials.trial_id, trials.get(key, [None] * len(trials)))
        ]
    return trials


def _boards(view: RunView, trials: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The leaderboard (for the headline and the charts) and the one shown (with the reference row), their
    diagnostics as the headline says them."""
    board, shown = view.leaderboard.copy(), view.leaderboard_with_reference.copy()
    for key in ("diagnostics", "overfit"):
        if key in board and key in trials:
            board[key] = board.trial_id.map(trials.set_index("trial_id")[key])
            shown[key] = shown.trial_id.map(trials.set_index("trial_id")[key])
    return board, shown


def _importance(view: RunView, scored: pd.DataFrame, metric_col: str, tuned: list[str]) -> list[str]:
    """Which tuned options explain the metric: the importances as bars, the metric against the top two."""
    found = read_importance(view)
    parts = ['<h2 id="importance">Parameter importance</h2>', f"<p>{html.escape(importance_line(found))}</p>"]
    if "at_rung" not in found:
        return parts
    at = found["at_rung"]
    order = list(at["fanova"])[::-1]  # the most important on top
    data = [dict(type="bar", orientation="h", name=name, x=[at[key].get(p, 0.0) for p in order], y=order)
            for key, name in (("fanova", "fANOVA"), ("ped_anova", "PED-ANOVA"))]  # fmt: skip
    layout = dict(barmode="group", xaxis=dict(title=dict(text="importance (sums to 1)")))
    caption = f"importance of {view.metric} at epoch {at['epoch']} ({at['trials']} trials)"
    top = [p for p in list(at["fanova"])[:2] if p in scored]
    return [*parts, '<div class="grid">', _plot({"data": data, "layout": layout}, "importance-bars", caption),
            *_metric_vs(scored, top, metric_col, view.configs, tuned, prefix="importance-vs"), "</div>"]  # fmt: skip


def _charts(view: RunView, trials: pd.DataFrame, board: pd.DataFrame, metric_col: str, tuned: list[str]) -> list[str]:
    """Metric against the hyperparameters, the prediction distributions, the test confusion matrix."""
    epochs, names, configs = view.epochs, view.info.get("label_names") or [], view.configs
    scored = board[board[metric_col].notna()]
    parts = []
    if tuned and len(scored):
        parts += ['<h2 id="hyperparameters">Metric vs hyperparameters</h2><div class="grid">',
                  *_metric_vs(scored, tuned, metric_col, configs, tuned), "</div>"]  # fmt: skip
        parts.append(_parallel(scored, tuned, metric_col))
        parts += _importance(view, scored, metric_col, tuned)
    parts.append('<h2 id="predictions">Prediction distribution</h2><div class="grid">')
    if len(scored):
        parts.append(_pred_distribution(epochs, scored.iloc[0]["trial_id"], names, "best trial"))
    if "diagnostics" in trials:
        for tid in trials.loc[trials.diagnostics.fillna("").str.contains("collapse"), "trial_id"]:
            parts.append(_pred_distribution(epochs, tid, names, "lasting collapse"))
    parts.append("</div>")
    pred_path = view.run_dir / predictions_file("test")
    if pred_path.is_file():
        parts.append('<h2 id="confusion">Test confusion matrix</h2>')
        parts.append(_confusion(pd.read_csv(pred_path, keep_default_na=False), names))
    return parts


def write_report(run: RunLike) -> Path:
    """Write ``report.html`` for a run folder (or a view of one) and return its path."""
    import plotly.offline

    view = RunView.of(run)
    info = view.info
    trials = _persistent_diagnostics(view.epochs, view.trials)
    board, shown = _boards(view, trials)
    metric_col = f"peak_{view.metric}"
    tuned = [p for p in info.get("tuned_params", []) if p in board.columns]
    parts = [
        f"<h1>sentune run {html.escape(str(info.get('job')))} / {html.escape(str(info.get('run_id')))}</h1>",
        f'<p class="meta">trainable {html.escape(str(info.get("trainable")))}; metric {view.metric} ({view.mode}); '
        f"{len(trials)} trials; classes: {html.escape(', '.join(map(str, info.get('label_names') or [])))}</p>",
        _headline(view, trials, board, metric_col, tuned),
        _better(view),
        '<h2 id="leaderboard">Leaderboard</h2>',
        _table(shown),
        '<h2 id="learning-curves">Learning curves</h2><div class="grid">',
        *_curves(view.epochs, trials, view.configs, tuned),
        "</div>",
        *_charts(view, trials, board, metric_col, tuned),
    ]
    meta = html.escape(json.dumps({"job": info.get("job"), "run": info.get("run_id")}))
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>sentune {html.escape(str(info.get('job')))}</title>"
        f"<style>{_CSS}</style><script>{plotly.offline.get_plotlyjs()}</script><script>{_SORT_JS}</script></head>"
        f"<body>{''.join(parts)}<script type='application/json' id='run-info'>{meta}</script></body></html>"
    )
    out = view.run_dir / REPORT
    write_text(out, page)
    return out
