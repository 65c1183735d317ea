"""String -> Ray Tune object factories: search-space domains, schedulers and search algorithms. Each
table raises on a name it does not know, naming the ones it does."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sentune.errors import ConfigError
from sentune.search import Domain

__all__ = ["SCHEDULERS", "SEARCH_ALGORITHMS", "make_scheduler", "make_search_alg", "to_tune"]


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


def _asha(*, time_attr: str, max_t: int, grace_period: int, reduction_factor: float):
    from sentune.tuning._schedulers import ResumableASHA

    return ResumableASHA(time_attr=time_attr, max_t=max_t, grace_period=grace_period, reduction_factor=reduction_factor)


def _fifo(**_):
    from sentune.tuning._schedulers import ResumableFIFO

    return ResumableFIFO()


SCHEDULERS: dict[str, Callable[..., Any]] = {"asha": _asha, "fifo": _fifo}


def _pick(table: Mapping[str, Any], kind: str, what: str):
    try:
        return table[kind]
    except KeyError:
        raise ConfigError(f"unknown {what} {kind!r}; choose from {', '.join(table)}") from None


def make_scheduler(
    kind: str, *, max_t: int, grace_period: int = 1, reduction_factor: float = 2, time_attr: str = "epoch"
):
    """A Tune trial scheduler by name; ``time_attr`` is what its rungs count (epochs)."""
    return _pick(SCHEDULERS, kind, "scheduler")(
        time_attr=time_attr, max_t=max_t, grace_period=grace_period, reduction_factor=reduction_factor
    )


def _variants(parsed, *, seed: int, metric: str, mode: str, max_concurrent: int):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent)


def _optuna(parsed, *, seed: int, metric: str, mode: str, max_concurrent: int):
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    alg = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed), metric=metric, mode=mode)
    return ConcurrencyLimiter(alg, max_concurrent=max_concurrent)


SEARCH_ALGORITHMS: dict[str, Callable[..., Any]] = {"random": _variants, "grid": _variants, "optuna": _optuna}


def make_search_alg(
    kind: str, parsed: Mapping[str, Domain | Any], *, seed: int, metric: str, mode: str, max_concurrent: int
):
    """``random`` / ``grid`` -> Ray's variant generator; ``optuna`` -> TPE with a seeded sampler. (The job
    spec has checked that the domains suit the algorithm.)"""
    return _pick(SEARCH_ALGORITHMS, kind, "search algorithm")(
        parsed, seed=seed, metric=metric, mode=mode, max_concurrent=max_concurrent
    )
