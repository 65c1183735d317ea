"""Where a trial's learning curve is heading: from its monitored metric so far, the value it would reach at
``max_t`` epochs, with an interval.

A small ensemble of curves (``a - b x^-c`` and ``a - b e^-cx``, saturating at ``a``; a flat line; and
``a + b log x`` while a curve has too few epochs for the others) is fitted by least squares (the rate ``c``
on a grid, ``a`` and ``b`` exactly for each: a few vectorized numpy operations), each weighted by its Akaike
weight (fit against parameters). The forecast is the members' weighted mean at ``max_t``, never below the
best so far (a trial keeps its best epoch); the interval is that +- 1.96 times the members' spread and the
residual noise (at least 0.005, growing with how far past its data the curve is carried), clipped to the
metric's range (``[0, 1]`` for accuracies and F1, ``[0, inf)`` for losses). With one epoch there is nothing
to fit: the forecast is the value so far and the interval reaches the metric's bound. A ``min`` metric's
curve is flipped, fitted, and flipped back. Well under a millisecond a call: it runs on every epoch's report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Forecast", "forecast", "metric_bounds"]

_Z = 1.96  # a 95% interval
_NOISE = 0.005  # the least noise an epoch's metric has (a 200-row dev set moves F1 by more): no exact fit


@dataclass(frozen=True)
class Forecast:
    value: float
    low: float
    high: float

    def as_row(self) -> dict[str, float]:
        return {"forecast": self.value, "forecast_low": self.low, "forecast_high": self.high}


def metric_bounds(metric: str) -> tuple[float, float]:
    """The range a metric lives in: accuracies and F1 in [0, 1], anything else (losses) in [0, inf)."""
    name = metric.lower()
    if "acc" in name or "f1" in name or "precision" in name or "recall" in name:
        return 0.0, 1.0
    return 0.0, math.inf


_RATES = np.geomspace(0.02, 5.0, 48)  # the curves' rate c, searched on a grid (a and b then fit exactly)
_SHAPES = {  # name -> g(x, c): the curve is a - b * g(x, c), saturating at a
    "pow": lambda x, c: np.power(x[None, :], -c[:, None]),
    "exp": lambda x, c: np.exp(-c[:, None] * x[None, :]),
}


def _fit_shape(g, x: np.ndarray, y: np.ndarray, at: float) -> tuple[float, float] | None:
    """Least squares of ``a - b g(x, c)`` over every rate of the grid at once (for a fixed c, a and b are a
    line's fit); the best rate's (value at ``at``, residual sum of squares), or None if none fits."""
    gx = g(x, _RATES)  # [rates, n]
    n = len(x)
    gm, ym = gx.mean(1), y.mean()
    var = ((gx - gm[:, None]) ** 2).sum(1)
    cov = ((gx - gm[:, None]) * (y - ym)[None, :]).sum(1)
    ok = var > 1e-12
    if not ok.any():
        return None
    slope = np.where(ok, cov / np.where(ok, var, 1.0), 0.0)  # y = ym + slope (g - gm): b = -slope
    sse = ((y[None, :] - ym - slope[:, None] * (gx - gm[:, None])) ** 2).sum(1)
    sse = np.where(ok & (slope <= 0), sse, np.inf)  # b >= 0: the curve rises (or is flat)
    i = int(np.argmin(sse))
    if not math.isfinite(float(sse[i])) or n < 3:
        return None
    at_g = g(np.array([at]), _RATES[i : i + 1])[0, 0]
    return float(ym + slope[i] * (at_g - gm[i])), float(sse[i])


def _members(x: np.ndarray, y: np.ndarray, at: float) -> list[tuple[float, float, int]]:
    """(value at ``at``, residual sum of squares, parameters) of the flat line, of each saturating curve (three
    epochs or more), and of ``a + b log x`` while a curve has too few epochs for the others."""
    flat = float(y[-2:].mean())
    out = [(flat, float(((y - flat) ** 2).sum()), 1)]
    for g in _SHAPES.values():
        fitted = _fit_shape(g, x, y, at)
        if fitted is not None:
            out.append((*fitted, 3))
    if len(x) <= 3:  # log grows for ever: only while nothing else fits
        lx = np.log(x)
        b = float(np.polyfit(lx, y, 1)[0]) if len(x) >= 2 else 0.0
        a = float(y.mean() - b * lx.mean())
        out.append((a + b * math.log(at), float(((a + b * lx - y) ** 2).sum()), 2))
    return out


def _weights(members: list[tuple[float, float, int]], n: int) -> np.ndarray:
    """Akaike weights (small-sample corrected where it is defined): a better fit with fewer parameters counts more."""
    aic = []
    for _, sse, k in members:
        score = n * math.log(max(sse, n * _NOISE**2) / n) + 2 * k
        if n - k - 1 > 0:
            score += 2 * k * (k + 1) / (n - k - 1)
        aic.append(score)
    rel = np.exp(-0.5 * (np.asarray(aic) - min(aic)))
    return rel / rel.sum()


def forecast(values: Sequence[float | None], max_t: int, *, mode: str = "max", metric: str = "") -> Forecast | None:
    """The forecast at epoch ``max_t`` of a curve whose epoch ``i + 1`` had ``values[i]`` (None or NaN:
    skipped); None when there is no finite value yet."""
    pairs = [(i + 1, float(v)) for i, v in enumerate(values) if v is not None and math.isfinite(float(v))]
    if not pairs:
        return None
    lo_bound, hi_bound = metric_bounds(metric)
    sign = 1.0 if mode == "max" else -1.0
    x = np.array([p[0] for p in pairs], dtype=np.float64)
    y = sign * np.array([p[1] for p in pairs], dtype=np.float64)
    best = float(y.max())
    bound = hi_bound if mode == "max" else -lo_bound  # the best the flipped curve can reach
    at = float(max(max_t, x[-1]))
    if len(pairs) < 2 or at <= x[-1]:  # nothing to fit, or the curve is already there
        value, low, high = best, best, (bound if at > x[-1] else best)
    else:
        members = _members(x, y, at)
        w = _weights(members, len(x))
        preds = np.array([m[0] for m in members])
        value = float((w * preds).sum())
        # the noise the best fit leaves, at least _NOISE, grows as the curve is carried further past its data
        noise = max(math.sqrt(float((w * np.array([m[1] for m in members])).sum()) / len(x)), _NOISE)
        horizon = 1.0 + (at - x[-1]) / x[-1]
        spread = math.sqrt(float((w * (preds - value) ** 2).sum()) + (noise * horizon) ** 2)
        value = min(max(value, best), bound)  # a trial keeps its best epoch: it ends no lower than that
        low, high = max(value - _Z * spread, best), min(value + _Z * spread, bound)
    if mode != "max":
        value, low, high = -value, -high, -low
    clip = lambda v: float(min(max(v, lo_bound), hi_bound))  # noqa: E731
    return Forecast(clip(value), clip(low), clip(high))
