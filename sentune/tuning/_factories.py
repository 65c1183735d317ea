"""String -> Ray Tune object factories: search-space domains, schedulers and search algorithms. Each
table raises on a name it does not know, naming the ones it does."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sentune.errors import ConfigError
from sentune.search import Domain

__all__ = ["SCHEDULERS", "SEARCH_ALGORITHMS", "make_extension_search", "make_scheduler", "make_search_alg", "to_tune"]


def to_tune(parsed: Mapping[str, Domain | Any]) -> dict:
    """Ray Tune's param_space for a parsed search space."""
    from ray import tune

    kinds: dict[str, Callable] = {
        "grid": lambda *a: tune.grid_search(list(a)),
        "choice": lambda *a: tune.choice(list(a)),
        "loguniform": tune.loguniform,
        "uniform": tune.uniform,
        "quniform": tune.quniform,
        "randint": tune.randint,
    }
    return {name: kinds[dom.kind](*dom.args) if isinstance(dom, Domain) else dom for name, dom in parsed.items()}


def _asha(*, time_attr: str, max_t: int, grace_period: int, reduction_factor: float, rung_metric=None, **_):
    from sentune.tuning._schedulers import ResumableASHA

    return ResumableASHA(time_attr=time_attr, max_t=max_t, grace_period=grace_period,
                         reduction_factor=reduction_factor, **(rung_metric or {}))  # fmt: skip


def hyperband_brackets(max_t: int, grace_period: int, reduction_factor: float) -> int:
    """HyperBand's bracket count: one per grace period grace, grace*eta, ... that leaves a rung below max_t."""
    n, t = 1, grace_period * reduction_factor
    while t < max_t:
        n, t = n + 1, t * reduction_factor
    return n


def _hyperband(*, time_attr: str, max_t: int, grace_period: int, reduction_factor: float, rung_metric=None, **_):
    """Asynchronous HyperBand: ASHA brackets with grace periods grace, grace*eta, ...; a trial's bracket
    follows from its id (so a resumed sweep puts it back in the same one)."""
    from sentune.tuning._schedulers import ResumableASHA

    brackets = hyperband_brackets(max_t, grace_period, reduction_factor)
    return ResumableASHA(time_attr=time_attr, max_t=max_t, grace_period=grace_period,
                         reduction_factor=reduction_factor, brackets=brackets, **(rung_metric or {}))  # fmt: skip


def _median(*, time_attr: str, grace_period: int, **_):
    from sentune.tuning._schedulers import ResumableMedian

    return ResumableMedian(time_attr=time_attr, grace_period=grace_period, min_samples_required=3)


def _pbt(*, time_attr: str, mutations: Mapping[str, Any], perturbation_interval: int, seed: int = 0, **_):
    from sentune.tuning._schedulers import SeededPBT

    return SeededPBT(time_attr=time_attr, perturbation_interval=perturbation_interval,
                     hyperparam_mutations=dict(mutations), seed=seed)  # fmt: skip


def _fifo(**_):
    from sentune.tuning._schedulers import ResumableFIFO

    return ResumableFIFO()


SCHEDULERS: dict[str, Callable[..., Any]] = {
    "asha": _asha, "hyperband": _hyperband, "median": _median, "pbt": _pbt, "fifo": _fifo,
}  # fmt: skip


def _pick(table: Mapping[str, Any], kind: str, what: str):
    try:
        return table[kind]
    except KeyError:
        raise ConfigError(f"unknown {what} {kind!r}; choose from {', '.join(table)}") from None


def make_scheduler(
    kind: str,
    *,
    max_t: int,
    grace_period: int = 1,
    reduction_factor: float = 2,
    time_attr: str = "epoch",
    mutations: Mapping[str, Any] | None = None,
    perturbation_interval: int = 2,
    seed: int = 0,
    rung_metric: dict | None = None,
):
    """A Tune trial scheduler by name; ``time_attr`` is what its rungs count (epochs). ``pbt`` takes
    ``mutations`` (option -> Tune domain it resamples from) and ``perturbation_interval``; ``asha`` and
    ``hyperband`` take ``rung_metric`` (``{"metric": "forecast", "mode": ...}``: rungs compare forecasts).
    The schedulers use Ray's internals: the installed Ray is checked first (once per process, see ``_ray_compat``)."""
    from sentune.tuning._ray_compat import check_ray

    check_ray()
    return _pick(SCHEDULERS, kind, "scheduler")(
        time_attr=time_attr, max_t=max_t, grace_period=grace_period, reduction_factor=reduction_factor,
        mutations=mutations or {}, perturbation_interval=perturbation_interval, seed=seed, rung_metric=rung_metric,
    )  # fmt: skip


def _variants(parsed, *, seed: int, metric: str, mode: str, max_concurrent: int, points: list, **_):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent, points_to_evaluate=points or None)


def _warm_optuna(evaluated: list[tuple[dict, float]]):
    """Ray's OptunaSearch that also adds ``evaluated`` (tuned options, value) as completed trials once it knows
    its space (``set_search_properties``; Ray's own ``evaluated_rewards`` cannot sit beside enqueued points)."""
    from ray.tune.search.optuna import OptunaSearch

    class WarmOptunaSearch(OptunaSearch):
        def set_search_properties(self, metric, mode, config, **spec):
            ready = super().set_search_properties(metric, mode, config, **spec)
            if ready:
                for point, value in self.warm_points:
                    self.add_evaluated_point(point, value)
                self.warm_points = []  # once: a restored searcher has them already
            return ready

    def make(**kwargs):
        alg = WarmOptunaSearch(**kwargs)
        alg.warm_points = list(evaluated)
        return alg

    return make


def _optuna(parsed, *, seed: int, metric: str, mode: str, max_concurrent: int, points: list, multivariate: bool,
            evaluated: list | None = None):  # fmt: skip
    import warnings

    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    with warnings.catch_warnings():  # optuna calls multivariate TPE experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=multivariate)
    # baselines are enqueued trials: TPE sees their results like any other; warm-start trials are added as done
    make = _warm_optuna(evaluated) if evaluated else OptunaSearch
    alg = make(sampler=sampler, metric=metric, mode=mode, points_to_evaluate=points or None)
    return ConcurrencyLimiter(alg, max_concurrent=max_concurrent)


SEARCH_ALGORITHMS: dict[str, Callable[..., Any]] = {"random": _variants, "grid": _variants, "optuna": _optuna}


def make_search_alg(
    kind: str,
    parsed: Mapping[str, Domain | Any],
    *,
    seed: int,
    metric: str,
    mode: str,
    max_concurrent: int,
    points: list[dict] | None = None,
    multivariate: bool = False,
    evaluated: list[tuple[dict, float]] | None = None,
):
    """``random`` / ``grid`` -> Ray's variant generator; ``optuna`` -> TPE with a seeded sampler
    (``multivariate``: Optuna's multivariate TPE). ``points``: configs to run first, as they are (the
    job's baselines). ``evaluated``: (tuned options, value) of earlier trials TPE learns from without running
    them (``warm_start:``). (The job spec has checked that the domains suit the algorithm.)"""
    extra = {"evaluated": evaluated} if evaluated else {}
    return _pick(SEARCH_ALGORITHMS, kind, "search algorithm")(
        parsed, seed=seed, metric=metric, mode=mode, max_concurrent=max_concurrent, points=list(points or []),
        multivariate=multivariate, **extra,
    )  # fmt: skip


def _fresh_points(space: Mapping[str, Any], tuned: list[str], earlier: list[dict], trials: int, seed: int) -> list:
    """``trials`` configs of the tuned options drawn from Tune's domains with a generator of its own (an
    extension's: not the sweep's, whose draws the earlier trials took), none equal to an earlier one."""
    import json

    import numpy as np

    rng = np.random.default_rng(seed)
    seen = {json.dumps({k: c.get(k) for k in tuned}, sort_keys=True, default=str) for c in earlier}
    points: list[dict] = []
    for _ in range(trials):
        for _attempt in range(1000):
            point = {k: space[k].sample(random_state=rng) for k in tuned}
            point = {k: v.item() if hasattr(v, "item") else v for k, v in point.items()}
            key = json.dumps(point, sort_keys=True, default=str)
            if key not in seen:
                break
        else:
            raise ConfigError(f"the search space has no config left that the run has not tried ({len(seen)} tried)")
        seen.add(key)
        points.append(point)
    return points


def make_extension_search(kind: str, space: Mapping[str, Any], tuned: list[str], *, earlier: list[tuple[dict, Any]],
                          trials: int, seed: int, metric: str, mode: str, max_concurrent: int,
                          multivariate: bool = False):  # fmt: skip
    """The search of an extension (``sentune extend``): TPE with the earlier trials added as completed ones
    (their peaks), sampling with a seed of its own; random: ``trials`` new configs, none an earlier one."""
    if kind == "grid":
        raise ConfigError("a grid sweep has run every point of its grid; extend applies to random and optuna")
    if kind == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        points = _fresh_points(space, tuned, [c for c, _ in earlier], trials, seed)
        return BasicVariantGenerator(points_to_evaluate=points, max_concurrent=max_concurrent)
    import warnings

    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=multivariate)
    scored = [({k: c[k] for k in tuned}, float(v)) for c, v in earlier if v is not None and float(v) == float(v)]
    alg = OptunaSearch(sampler=sampler, metric=metric, mode=mode, points_to_evaluate=[c for c, _ in scored] or None,
                       evaluated_rewards=[v for _, v in scored] or None)  # fmt: skip
    return ConcurrencyLimiter(alg, max_concurrent=max_concurrent)
