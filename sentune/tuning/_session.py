"""Starting (or joining) Ray, and sizing a job to the cluster."""

from __future__ import annotations

import logging
import math
import os
import socket

__all__ = ["init_ray", "max_concurrent_trials"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_ray(
    address: str | None = None, *, num_cpus: int | None = None, num_gpus: float | None = None, verbose: bool = False
) -> None:
    """Connect to ``address`` (or ``RAY_ADDRESS``), or start the embedded local Ray (dashboard on loopback;
    ``num_cpus`` / ``num_gpus`` override what it detects)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # A job submitted through the Jobs API runs with RAY_ADDRESS set: join that cluster. Otherwise start
    # the embedded one ("local": never attach to a stray `ray start` cluster on this machine by accident).
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict = {"address": address} if address else {"address": "local"}
    env = {}
    if not address:  # the dashboard also serves the State API that Ray Train uses to clean up stopped trials
        port = _free_port()
        kwargs.update(
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=port,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
        )
        # Ray Train's workers call the State API without an address; with a second Ray on this machine it
        # cannot tell which one is theirs ("Found multiple active Ray instances") and stopped trials hang.
        env["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    # Ray Train's controller collects worker reports when it polls them (every 2 s by default), which
    # adds ~2 s to every epoch of a small model; poll faster.
    env |= {
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2"),
        # the dashboard's Train view lists each trial's run (named <job>-<trial id>) with its actors
        "RAY_TRAIN_ENABLE_STATE_TRACKING": os.environ.get("RAY_TRAIN_ENABLE_STATE_TRACKING", "1"),
    }
    ray.init(
        **kwargs,
        runtime_env={"env_vars": env},
        log_to_driver=verbose,
        configure_logging=True,
        logging_level=logging.WARNING,
    )


def max_concurrent_trials(resources) -> int:
    """How many trials fit the cluster at once (``resources``: a job's ``resources:`` block)."""
    import ray

    if resources.max_concurrent_trials:
        return resources.max_concurrent_trials
    total = ray.cluster_resources()
    by_cpu = total.get("CPU", 1) // (resources.cpus * resources.workers_per_trial)
    by_gpu = total.get("GPU", 0) // (resources.gpus * resources.workers_per_trial) if resources.gpus else math.inf
    memory = (resources.memory_gb or 0) * 1024**3 * resources.workers_per_trial
    by_memory = total.get("memory", 0) // memory if memory else math.inf
    return max(1, int(min(by_cpu, by_gpu, by_memory)))
