"""What a resumed sweep takes over: the record and the trials' resume checkpoints made to agree before the
sweep goes on, what its scheduler replays, and whether a sweep ended before its trials did. The record is
asked typed questions (:class:`~sentune.results.RunRecorder`)."""

from __future__ import annotations

from sentune import results
from sentune.spec import JobSpec
from sentune.trainables._resume import trial_ids
from sentune.tuning._trial import resume_store

__all__ = [
    "completed_trials", "drop_cut_confirmations", "ended_by_stopper", "interrupted", "mark_trial_finished", "reconcile",
]  # fmt: skip


def interrupted(spec: JobSpec, recorder, *, ended_itself: bool = False) -> bool:
    """Did the sweep stop before every trial it would run had ended (and not because it ended itself: its
    budget spent, or its ``stop:`` rule)?"""
    if recorder.unended_trials():
        return True
    return len(recorder.trials) < spec.trial_count and not ended_itself


def completed_trials(recorder) -> set[str]:
    """The trials the record has as ended without error (Tune told the scheduler they completed)."""
    ended = (results.STATUS_COMPLETED, results.STATUS_STOPPED)
    return {tid for tid in recorder.trial_ids() if recorder.status_of(tid) in ended}


def ended_by_stopper(recorder) -> set[str]:
    """Stopped trials that a stopper (diagnostics, the budget) ended, not the scheduler: Tune ended them before
    the scheduler saw their last result."""
    return {tid for tid, t in recorder.trials.items()
            if t["status"] == results.STATUS_STOPPED and t.get("stop_reason") not in (None, "scheduler")}  # fmt: skip


def drop_cut_confirmations(recorder, resume_root: str) -> None:
    """Confirmation runs a stop cut short leave the record (the resumed run trains those seeds again);
    their resume folders are marked finished, so nothing brings them back."""
    for tid in recorder.trial_ids(role="confirm", ended=False):
        recorder.forget(tid)
        resume_store(resume_root, tid).mark_finished("dropped")


def mark_trial_finished(recorder, resume_root: str, trial_id: str, status: str, *, revivable: bool) -> None:
    """Tell the trial's driver it is over (a restarted one returns at once, reporting its last result). Its resume
    states go, unless it was stopped and the job's second chances (``revivable``) may go on from its state."""
    keep = revivable and status == results.STATUS_STOPPED
    resume_store(resume_root, trial_id).mark_finished(status, recorder.last_result(trial_id), keep_state=keep)


def reconcile(recorder, resume_root: str, *, revivable: bool) -> None:
    """Before a resumed sweep starts: epochs a trial finished (in its resume checkpoint) after the record's
    last write go into the record, a trial the record had not seen yet included; a trial the record has as
    ended is marked finished for its driver (see :func:`mark_trial_finished`)."""
    for tid in sorted(set(recorder.trial_ids()) | set(trial_ids(resume_root))):
        store = resume_store(resume_root, tid)
        status = recorder.status_of(tid)
        if status is None and store.finished():  # a trial the driver had let go (a cut confirmation run)
            continue
        if status in results.ENDED:
            if status != results.STATUS_ERRORED and not store.finished():
                mark_trial_finished(recorder, resume_root, tid, status, revivable=revivable)
            continue
        config = recorder.config_of(tid) if status else store.config()
        if config is None:
            continue
        have = recorder.epochs_of(tid)
        for metrics in store.history():
            if metrics["epoch"] not in have:
                recorder.result(tid, config, metrics)
