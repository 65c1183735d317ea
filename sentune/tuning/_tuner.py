"""One place that builds a Ray Tune ``Tuner`` from a sweep plan: the sweep itself (fresh, or restored from
the run folder), and the confirmation runs after it."""

from __future__ import annotations

import os
from typing import Any

from sentune import results
from sentune.tuning._factories import make_extension_search, make_search_alg, to_tune
from sentune.tuning._plan import SweepPlan
from sentune.tuning._ray_compat import set_restored_configs
from sentune.tuning._session import max_concurrent_trials

__all__ = ["build_tuner"]


def _quiet_tune() -> None:
    # Of Tune's default loggers keep the JSON one (Tune reads its own results back from it): the CSV one
    # repeats it, and the TensorBoardX one imports torch in this process at every sweep's start (~3 s on
    # 2 cores). The Parquet record holds every result.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Tune's own console output (its configuration box, "View detailed results here") would break the live
    # screen and the --json stream: the old output engine at verbose=0 prints nothing
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def _search(plan: SweepPlan, space: dict, confirm_points: list[dict] | None) -> tuple[dict, Any, int]:
    """The parameter space, search algorithm and trial count: the job's, or exactly ``confirm_points``."""
    spec = plan.spec
    if confirm_points is not None:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        alg = BasicVariantGenerator(
            points_to_evaluate=confirm_points, max_concurrent=max_concurrent_trials(spec.resources)
        )
        marks = {k: "" for p in confirm_points for k in p if k not in space and k != "seed"}  # e.g. a second chance's
        return {**space, "seed": 0, **marks}, alg, len(confirm_points)  # each point sets every option
    if plan.extend is not None:  # more trials for a finished run: a search that learns from its earlier ones
        ext = plan.extend
        number = int(plan.folder.tuner.removeprefix("extend-") or 0)
        alg = make_extension_search(
            spec.search.algorithm, space, list(spec.tuned), earlier=ext.earlier, trials=ext.trials,
            seed=(spec.seed + 7919 * number) % 2**32, metric=spec.scheduler.metric, mode=spec.scheduler.direction.mode,
            max_concurrent=max_concurrent_trials(spec.resources), multivariate=spec.search.multivariate,
        )  # fmt: skip
        return space, alg, ext.trials
    tpe, warm = spec.search.algorithm == "optuna", plan.warm
    first = spec.baseline_configs + (warm.best if warm is not None and not tpe else [])  # warm: after the baselines
    alg = make_search_alg(
        spec.search.algorithm, spec.space, seed=spec.seed, metric=spec.scheduler.metric,
        mode=spec.scheduler.direction.mode, max_concurrent=max_concurrent_trials(spec.resources),
        points=first, multivariate=spec.search.multivariate,
        evaluated=warm.evaluated if warm is not None and tpe else None,
    )  # fmt: skip
    return space, alg, spec.num_samples + len(first)  # the baselines (and warm-start configs) first, then sampled


def build_tuner(
    plan: SweepPlan,
    driver: Any,
    *,
    callbacks: list,
    scheduler: Any,
    stop: Any = None,
    confirm_points: list[dict] | None = None,
    name: str | None = None,
):
    """The sweep's Tuner: restored from the run folder when ``plan.restore`` (searcher state from Ray, this
    process's record, stopper and rebuilt scheduler handed in), else fresh; with ``confirm_points``, a FIFO
    Tuner that trains exactly those configs (the confirmation runs). ``name``: its folder in the run (default:
    the sweep's, ``tune`` or an extension's ``extend-N``)."""
    from ray import tune

    _quiet_tune()
    spec = plan.spec
    metric: str | None = spec.scheduler.metric
    mode: str | None = spec.scheduler.direction.mode
    space = to_tune(spec.space)
    name = name or plan.folder.tuner
    if plan.restore and confirm_points is None and plan.extend is None:
        tuner = tune.Tuner.restore(
            results.join_uri(plan.folder.ray_storage, name),
            trainable=driver,
            resume_unfinished=True,
            resume_errored=False,
            param_space=space,
        )
        # Ray 2.60 restores the Tuner's configs as pickled when the sweep started (empty record, fresh
        # scheduler): hand it this process's record, stopper and rebuilt scheduler instead.
        set_restored_configs(tuner, callbacks=callbacks, stop=stop, scheduler=scheduler)
        return tuner
    space, search_alg, samples = _search(plan, space, confirm_points)
    if getattr(scheduler, "metric", None) is not None:  # promote_on: forecast: the scheduler ranks its own key
        metric, mode = None, None  # (the searcher was given the job's metric itself)
    return tune.Tuner(
        driver,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            num_samples=samples,
            scheduler=scheduler,
            search_alg=search_alg,
            trial_name_creator=lambda t: f"{spec.name}-{t.trial_id}",
            reuse_actors=True,  # a new trial starts in a process that has its framework imported
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=plan.folder.ray_storage,
            callbacks=callbacks,
            stop=stop,
            failure_config=tune.FailureConfig(max_failures=spec.failure.max_failures),
            verbose=0,
        ),
    )
