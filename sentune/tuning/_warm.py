"""``warm_start:``: earlier runs of the same trainable and metric seed a new sweep's search. Their trials are
read from their records (folders or URIs); options the new search space no longer tunes are dropped with a
one-line note, trials with a value outside the new space are dropped; another trainable or metric is refused
in one line."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from sentune import results
from sentune._log import log_line
from sentune._uri import redact
from sentune.errors import ConfigError
from sentune.search import LIST_KINDS, Domain
from sentune.spec import JobSpec

__all__ = ["WarmStart", "load_warm_start"]

_SEARCHED = ("sampled", "baseline", "warm_start")  # an earlier run's search trials (not confirmation re-runs)


@dataclass(frozen=True)
class WarmStart:
    """What the earlier runs found: every usable trial (its tuned options, its peak) for TPE, and the
    ``top_k`` best configs, best first, which random and grid search run first."""

    evaluated: list[tuple[dict, float]]
    best: list[dict]


def _inside(domain: Domain, value) -> bool:
    if domain.kind in LIST_KINDS:
        return any(v == value or (isinstance(v, float) and isinstance(value, (int, float)) and math.isclose(v, value))
                   for v in domain.args)  # fmt: skip
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    low, high = domain.args[0], domain.args[1]
    return low <= value < high if domain.kind == "randint" else low <= value <= high


def _check_run(spec: JobSpec, run: str, info: dict) -> None:
    metric, mode = spec.scheduler.metric, spec.scheduler.direction.mode
    if info.get("trainable") != spec.trainable:
        raise ConfigError(
            f"warm_start {redact(run)}: a run of {info.get('trainable')}; this job tunes {spec.trainable}"
        )
    if info.get("metric") != metric or info.get("mode") != mode:
        raise ConfigError(f"warm_start {redact(run)}: its metric is {info.get('metric')} ({info.get('mode')}); "
                          f"this job's is {metric} ({mode})")  # fmt: skip


def _trials_of(spec: JobSpec, run: str) -> list[tuple[dict, float]]:
    """(tuned options, peak) of each usable trial of one earlier run; says in one line what it dropped."""
    run_dir = results.resolve_run_dir(run)
    info = results.read_run_info(run_dir)
    _check_run(spec, run, info)
    tuned = list(spec.tuned)
    trials = results.read_trials(run_dir)
    searched = trials[trials.role.fillna("sampled").isin(_SEARCHED) & trials.peak_metric.notna()]
    kept, outside = [], 0
    for t in searched.itertuples():
        config = json.loads(t.config_json)
        point = {k: config.get(k) for k in tuned}
        if all(k in config and _inside(spec.space[k], config[k]) for k in tuned):
            kept.append((point, float(t.peak_metric)))
        else:
            outside += 1
    gone = sorted(set(info.get("tuned_params") or []) - set(tuned))
    notes = [f"{len(kept)} trials"] + ([f"options no longer tuned dropped: {', '.join(gone)}"] if gone else [])
    notes += [f"{outside} trials outside the new search space dropped"] if outside else []
    log_line(f"warm_start {redact(run)}: {'; '.join(notes)}")
    return kept


def load_warm_start(spec: JobSpec) -> WarmStart | None:
    """The job's ``warm_start:`` runs read (before Ray starts), or None without one."""
    if spec.warm_start is None:
        return None
    evaluated = [row for run in spec.warm_start.runs for row in _trials_of(spec, run)]
    ordered = sorted(evaluated, key=lambda r: -r[1] if spec.scheduler.direction.mode == "max" else r[1])
    best: list[dict] = []
    for point, _ in ordered:
        if point not in best:
            best.append(point)
        if len(best) == spec.warm_start.top_k:
            break
    return WarmStart(evaluated, best)
