"""The Ray layer: starting Ray, the Tune sweep of a job, its trials (Ray Train around the trainables'
loops), the one-off tasks, and the Tune callback that feeds the results record.

Its names load on first use, so that a sibling (the Jobs API client) can use one small module of it
(``_ray_compat``) without importing Ray Tune."""

from typing import TYPE_CHECKING, Any

__all__ = [
    "RunSummary",
    "extend_sweep",
    "init_ray",
    "max_concurrent_trials",
    "resume_sweep",
    "run_range_test",
    "run_sweep",
]

if TYPE_CHECKING:
    from sentune.tuning._plan import RunSummary
    from sentune.tuning._session import init_ray, max_concurrent_trials
    from sentune.tuning._sweep import extend_sweep, resume_sweep, run_range_test, run_sweep

_WHERE = {"RunSummary": "_plan", "init_ray": "_session", "max_concurrent_trials": "_session",
          "resume_sweep": "_sweep", "extend_sweep": "_sweep", "run_range_test": "_sweep",
          "run_sweep": "_sweep"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'sentune.tuning' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"sentune.tuning.{_WHERE[name]}"), name)
