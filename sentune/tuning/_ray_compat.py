"""Placeholder: merged with the scheduler helper's module."""

from __future__ import annotations


def warm_driver() -> None:
    try:
        from ray.air._internal.usage import _count_callbacks

        _count_callbacks([])
    except Exception:  # noqa: BLE001
        pass


def set_restored_configs(tuner, *, callbacks, stop, scheduler) -> None:
    internal = tuner._local_tuner
    assert internal is not None  # not Ray Client
    run_config = internal.get_run_config()
    run_config.callbacks, run_config.stop = callbacks, stop
    internal._tune_config.scheduler = scheduler
