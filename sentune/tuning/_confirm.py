"""The confirmation phase: the sweep's top-k configs trained again with fresh seeds for their full epochs
(FIFO), into the same record (role ``confirm``, ``confirm_of`` the trial); the leaderboard then ranks them
by the mean."""

from __future__ import annotations

from typing import Any

from sentune import results
from sentune._log import log_line
from sentune.tuning._callback import RecordCallback, TrialRoles
from sentune.tuning._plan import SweepPlan
from sentune.tuning._signals import sigterm_as_sigint
from sentune.tuning._tuner import build_tuner

__all__ = ["confirm", "confirm_points"]


def confirm_points(plan: SweepPlan, recorder) -> tuple[list[str], list[tuple[dict, dict]]]:
    """The top-k trials, and (config, role) of each confirmation run still to train: their configs with
    seeds = the trial's seed + 1, + 2, ... (in [0, 2**32)), less those the record already has as ended."""
    spec = plan.spec
    assert spec.confirm is not None
    board = results.leaderboard(plan.run_dir)
    top = board[board["peak_epoch"].notna()].head(spec.confirm.top_k)["trial_id"].tolist()
    done = recorder.confirmed_seeds()
    wanted = []
    for tid in top:
        config = recorder.config_of(tid)
        first = int(config.get("seed") or 0)
        for j in range(spec.confirm.seeds):
            seed = (first + 1 + j) % 2**32
            if (tid, seed) not in done:
                wanted.append(({**config, "seed": seed}, {"role": "confirm", "confirm_of": tid}))
    return top, wanted


def confirm(plan: SweepPlan, recorder, driver: Any, trackers: list) -> None:
    from ray.tune.logger import JsonLoggerCallback

    from sentune.tuning._schedulers import ResumableFIFO

    top, wanted = confirm_points(plan, recorder)
    if not wanted:
        return
    spec = plan.spec
    assert spec.confirm is not None
    log_line(f"confirm: the top {len(top)} configs again, {spec.confirm.seeds} fresh seeds each ({len(wanted)} runs)")
    earlier = len(recorder.trial_ids(role="confirm"))
    callbacks = [RecordCallback(recorder, roles=TrialRoles(wanted)), JsonLoggerCallback(), *trackers]
    tuner = build_tuner(plan, driver, callbacks=callbacks, scheduler=ResumableFIFO(),
                        confirm_points=[p for p, _ in wanted], name=f"confirm-{earlier}")  # fmt: skip
    with sigterm_as_sigint(), plan.folder.heartbeat():
        tuner.fit()
    recorder.close()
