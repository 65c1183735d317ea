"""What a resumed sweep takes over: the record and the trials' resume checkpoints made to agree before the
sweep goes on, the results its scheduler replays, and whether a sweep ended before its trials did."""

from __future__ import annotations

import json

from sentune import results
from sentune.spec import JobSpec
from sentune.trainables._resume import trial_ids
from sentune.tuning._callback import BudgetStopper
from sentune.tuning._trial import resume_store

__all__ = ["ENDED", "drop_cut_confirmations", "interrupted", "last_result", "reconcile", "replay_rows"]

ENDED = frozenset({results.STATUS_COMPLETED, results.STATUS_STOPPED, results.STATUS_ERRORED})
# a recorded row's columns that are bookkeeping, not what the trial reported
_BOOKKEEPING = {"job", "run", "trial_id", "trial_status", "_seq", "reported_at", "time_total_s", "checkpoint_path"}


def config_of(recorder, trial_id: str) -> dict:
    return json.loads(recorder.trials[trial_id]["config_json"])


def interrupted(spec: JobSpec, recorder, spend: BudgetStopper | None = None) -> bool:
    """Did the sweep stop before every trial it would run had ended (and not because its budget was spent)?"""
    if any(t["status"] not in ENDED for t in recorder.trials.values()):
        return True
    return len(recorder.trials) < spec.trial_count and not (spend is not None and spend.spent)


def replay_rows(recorder) -> list[tuple[str, int, float]]:
    """(trial id, epoch, metric) of every recorded epoch, in the order the results arrived."""
    rows = [r for rs in recorder.rows.values() for r in rs if r.get(recorder.metric) is not None]
    rows.sort(key=lambda r: (r.get("reported_at") or 0.0, r["epoch"]))
    return [(r["trial_id"], int(r["epoch"]), float(r[recorder.metric])) for r in rows]


def completed_trials(recorder) -> set[str]:
    """The trials the record has as ended without error (Tune told the scheduler they completed)."""
    return {
        tid for tid, t in recorder.trials.items() if t["status"] in (results.STATUS_COMPLETED, results.STATUS_STOPPED)
    }


def ended_by_stopper(recorder) -> set[str]:
    """Stopped trials that a stopper (diagnostics, the budget) ended, not the scheduler: Tune ended them before
    the scheduler saw their last result."""
    return {tid for tid, t in recorder.trials.items()
            if t["status"] == results.STATUS_STOPPED and t.get("stop_reason") not in (None, "scheduler")}  # fmt: skip


def last_result(recorder, trial_id: str) -> dict | None:
    """A trial's last recorded epoch, as the metrics it reported (no config columns, no bookkeeping)."""
    rows = recorder.rows.get(trial_id) or []
    if not rows:
        return None
    return {k: v for k, v in rows[-1].items() if k not in _BOOKKEEPING and not k.startswith(("config/", "diag_"))}


def drop_cut_confirmations(recorder, resume_root: str) -> None:
    """Confirmation runs a stop cut short leave the record (the resumed run trains those seeds again);
    their resume folders are marked finished, so nothing brings them back."""
    for tid, t in list(recorder.trials.items()):
        if t.get("role") == "confirm" and t["status"] not in ENDED:
            recorder.forget(tid)
            resume_store(resume_root, tid).mark_finished("dropped")


def reconcile(recorder, resume_root: str) -> None:
    """Before a resumed sweep starts: epochs a trial finished (in its resume checkpoint) after the record's
    last write go into the record, a trial the record had not seen yet included; a trial the record has as
    ended is marked finished for its driver."""
    for tid in sorted(set(recorder.trials) | set(trial_ids(resume_root))):
        store = resume_store(resume_root, tid)
        status = recorder.trials[tid]["status"] if tid in recorder.trials else None
        if status is None and store.finished():  # a trial the driver had let go (a cut confirmation run)
            continue
        if status in ENDED:
            if status != results.STATUS_ERRORED and not store.finished():
                store.mark_finished(status, last_result(recorder, tid))
            continue
        config = config_of(recorder, tid) if status else store.config()
        if config is None:
            continue
        have = {r["epoch"] for r in recorder.rows.get(tid, [])}
        for metrics in store.history():
            if metrics["epoch"] not in have:
                recorder.result(tid, config, metrics)
