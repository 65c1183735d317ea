"""Run in every Ray worker process as it starts (Ray's ``worker_process_setup_hook``): import what a trial
process needs (Ray Tune's function trainable, Ray Train, scikit-learn's metrics, the job's trainable and so
its framework, and what the framework itself loads lazily on first use: the trainable module's ``warm_up()``)
while the process starts, not after Tune has handed it a trial. Which trainable: ``SENTUNE_PREIMPORT``."""

from __future__ import annotations

import importlib
import os

__all__ = ["preimport"]


def preimport() -> None:
    for name in ("ray.tune.trainable.function_trainable", "ray.train", "sklearn.metrics", *_wanted()):
        try:
            module = importlib.import_module(name)
            warm_up = getattr(module, "warm_up", None)
            if callable(warm_up):
                warm_up()
        except Exception:  # noqa: BLE001 (a head start only: the trial imports it again and reports errors)
            pass


def _wanted() -> list[str]:
    return [m for m in os.environ.get("SENTUNE_PREIMPORT", "").split(",") if m]
