"""Every use sentune makes of Ray's private names, in one place, and the check that they are there.

sentune leans on a few of Ray's internals: the ASHA brackets and the median rule's result lists (a resumed
sweep rebuilds them, see :mod:`sentune.tuning._schedulers`), the configs a restored ``Tuner`` holds (a
resumed sweep hands it this process's callbacks, stopper and scheduler) and Ray's usage tagging (imported
early to warm the driver). They hold for the Ray versions in :data:`SUPPORTED_RAY`. :func:`check_ray` checks
the installed version against those and that the names are still there, once per process and in well under
a second, so a Ray upgrade fails at the start of a job in one line instead of deep inside a sweep.
``SENTUNE_ANY_RAY=1`` lets a version outside the list through (the names are still checked).

This module imports no Ray at import time; the functions import what they touch.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import os
from collections.abc import Callable
from typing import Any

from sentune.errors import SentuneError

__all__ = [
    "ANY_RAY_ENV",
    "SUPPORTED_RAY",
    "MedianNeverPauses",
    "UnsupportedRayError",
    "asha_assign_bracket",
    "asha_forget_trial",
    "asha_rung_counts",
    "autoscaler_node_types",
    "check_ray",
    "check_ray_version",
    "installed_ray_version",
    "median_move_trial",
    "missing_private_names",
    "ray_working_dir_limit",
    "scheduler_result",
    "time_attr_of",
    "set_restored_configs",
    "warm_driver",
]

SUPPORTED_RAY = ("2.60",)  # release series (major.minor) whose private names this module was written against
ANY_RAY_ENV = "SENTUNE_ANY_RAY"  # "1": run on a Ray outside SUPPORTED_RAY (its private names are still checked)

_checked = False  # check_ray() passed in this process


class UnsupportedRayError(SentuneError):
    """The installed Ray is not one sentune supports, or lacks an internal name sentune relies on."""


def installed_ray_version() -> str:
    """The installed Ray's version, from its package metadata (Ray is not imported)."""
    try:
        return importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        raise UnsupportedRayError(f"Ray is not installed; sentune needs Ray {_supported()}") from None


def _supported() -> str:
    return " or ".join(f"{series}.x" for series in SUPPORTED_RAY)


def check_ray_version(version: str | None = None) -> None:
    """Raise :class:`UnsupportedRayError` (one line) unless ``version`` (default: the installed Ray's) is
    in a supported series or ``SENTUNE_ANY_RAY=1`` is set."""
    version = installed_ray_version() if version is None else version
    series = ".".join(version.split(".")[:2])
    if series in SUPPORTED_RAY or os.environ.get(ANY_RAY_ENV) == "1":
        return
    raise UnsupportedRayError(
        f"Ray {version} is installed; sentune supports Ray {_supported()} "
        f"(install ray=={SUPPORTED_RAY[-1]}.*, or set {ANY_RAY_ENV}=1 to try this one)"
    )


def _has_instance_attribute(cls: type, name: str) -> bool:
    """Does ``cls.__init__`` (or a class annotation) set ``self.<name>``? Read from the source, no instance."""
    if name in getattr(cls, "__annotations__", {}):
        return True
    init = vars(cls).get("__init__")
    try:
        return init is not None and f"self.{name} =" in inspect.getsource(init)
    except (OSError, TypeError):
        return False


def _private_name_checks() -> list[tuple[str, Callable[[], bool]]]:
    """(what, does it hold) for each private name this module uses."""
    from ray._private.state import GlobalState
    from ray.tune import Tuner
    from ray.tune.impl.tuner_internal import TunerInternal
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

    asha = ASHAScheduler(time_attr="epoch", max_t=4, grace_period=1, brackets=2)
    median = MedianStoppingRule(time_attr="epoch")
    brackets = getattr(asha, "_brackets", None) or [None]
    return [
        ("AsyncHyperBandScheduler._brackets", lambda: isinstance(getattr(asha, "_brackets", None), list)),
        ("AsyncHyperBandScheduler._trial_info", lambda: isinstance(getattr(asha, "_trial_info", None), dict)),
        ("AsyncHyperBandScheduler._time_attr", lambda: getattr(asha, "_time_attr", None) == "epoch"),
        ("AsyncHyperBandScheduler._metric", lambda: hasattr(asha, "_metric")),
        ("_Bracket._rungs", lambda: isinstance(getattr(brackets[0], "_rungs", None), list)),
        ("MedianStoppingRule._results", lambda: isinstance(getattr(median, "_results", None), dict)),
        ("MedianStoppingRule._stopped_trials", lambda: isinstance(getattr(median, "_stopped_trials", None), set)),
        ("MedianStoppingRule._time_attr", lambda: getattr(median, "_time_attr", None) == "epoch"),
        ("MedianStoppingRule._metric", lambda: hasattr(median, "_metric")),
        (
            "MedianStoppingRule._on_insufficient_samples",
            lambda: callable(vars(MedianStoppingRule).get("_on_insufficient_samples")),
        ),
        ("Tuner._local_tuner", lambda: _has_instance_attribute(Tuner, "_local_tuner")),
        ("TunerInternal._tune_config", lambda: _has_instance_attribute(TunerInternal, "_tune_config")),
        ("TunerInternal.get_run_config", lambda: callable(getattr(TunerInternal, "get_run_config", None))),
        ("GlobalState.get_cluster_config", lambda: callable(getattr(GlobalState, "get_cluster_config", None))),
    ]


def missing_private_names() -> list[str]:
    """The Ray internals this module uses that the installed Ray lacks (none on a supported Ray)."""
    return [what for what, holds in _private_name_checks() if not holds()]


def check_ray() -> None:
    """Once per process, at the start of a sweep: the installed Ray is a supported one
    (:func:`check_ray_version`) and has every private name this module uses; else one line saying what."""
    global _checked
    if _checked:
        return
    check_ray_version()
    missing = missing_private_names()
    if missing:
        raise UnsupportedRayError(
            f"Ray {installed_ray_version()} lacks what sentune uses of its internals ({', '.join(missing)}); "
            f"sentune supports Ray {_supported()}"
        )
    _checked = True


# --- restoring a Tuner ---------------------------------------------------------------------------------


def set_restored_configs(tuner, *, callbacks: list, stop: Any, scheduler: Any) -> None:
    """Hand a ``Tuner.restore``d Tuner this process's callbacks, stopper and scheduler: Ray 2.60 restores
    the configs pickled when the sweep started (an empty record, a fresh scheduler), and ``restore`` takes
    none of these three."""
    internal = getattr(tuner, "_local_tuner", None)
    if internal is None:
        raise SentuneError("resuming a sweep through Ray Client is not supported; run the driver on the cluster")
    run_config = internal.get_run_config()
    run_config.callbacks, run_config.stop = callbacks, stop
    internal._tune_config.scheduler = scheduler


def warm_driver() -> None:
    """Import what a process's first ``Tuner.fit`` imports (its usage tagging imports every installed logger
    integration: MLflow's alone takes ~1.3 s on 2 cores), so it can happen while other work waits. Only a
    head start: a Ray without the helper just skips it."""
    try:
        from ray.air._internal.usage import _count_callbacks

        _count_callbacks([])
    except Exception:  # noqa: BLE001 (never a failure: the first fit imports the same)
        pass


# --- the schedulers' state that a resumed sweep rebuilds --------------------------------------------------


def time_attr_of(scheduler) -> str:
    """What a scheduler's rungs count (ASHA's, the median rule's ``time_attr``)."""
    return scheduler._time_attr


def scheduler_result(scheduler, time: int, value: float) -> dict:
    """A result as ``scheduler`` (ASHA, the median rule) reads it: its time attribute and its metric."""
    return {scheduler._time_attr: time, scheduler._metric: value}


def asha_rung_counts(scheduler) -> list[int]:
    """How many rungs each of an ASHA scheduler's brackets has, in bracket order."""
    return [len(bracket._rungs) for bracket in scheduler._brackets]


def asha_assign_bracket(scheduler, trial_id: str, index: int) -> None:
    """Put a trial in an ASHA scheduler's bracket ``index`` (Ray draws one at random as a trial is added)."""
    scheduler._trial_info[trial_id] = scheduler._brackets[index]


def asha_forget_trial(scheduler, trial_id: str) -> None:
    """Drop a trial from an ASHA scheduler's bracket table (as Ray does when a trial ends)."""
    scheduler._trial_info.pop(trial_id, None)


def median_move_trial(scheduler, old, new) -> None:
    """Move what the median rule holds under trial object ``old`` (its results; whether it stopped it) to
    ``new``: the rule keys its state by trial object, and a replayed trial comes back as a new one."""
    if old in scheduler._results:
        scheduler._results[new] = scheduler._results.pop(old)
    if old in scheduler._stopped_trials:
        scheduler._stopped_trials.discard(old)
        scheduler._stopped_trials.add(new)


class MedianNeverPauses:
    """Put before ``MedianStoppingRule`` in a class's bases: with too few other trials to compare against,
    the trial continues. Ray's rule pauses it while others wait, and a paused sentune trial would start its
    process and load its data again."""

    def _on_insufficient_samples(self, tune_controller, trial, time) -> str:
        from ray.tune.schedulers import TrialScheduler

        return TrialScheduler.CONTINUE


# --- the cluster's size ------------------------------------------------------------------------------------


def autoscaler_node_types() -> list[tuple[str, dict]]:
    """(name, resources) of each node type the cluster's autoscaler may add (``max_count`` above 0), from the
    cluster config it keeps in the GCS; [] on a cluster without an autoscaler (``ray start`` nodes)."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # no autoscaler state in this GCS, or another Ray: the live nodes are all there is
        return []
    if config is None:
        return []
    return [(g.name or "?", dict(g.resources)) for g in config.node_group_configs if g.max_count != 0]


# --- job submission ----------------------------------------------------------------------------------------


def ray_working_dir_limit(default: int) -> int:
    """Ray's limit on a job's packed working_dir (``GCS_STORAGE_MAX_SIZE`` in Ray's runtime_env packaging),
    else ``default``."""
    try:
        from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE

        return int(GCS_STORAGE_MAX_SIZE)
    except ImportError:
        return default
