"""A one-worker trial's resume state is written before its epoch is reported and named LATEST after the report:
a trial stopped at that report leaves the state for a second chance (or for the driver to remove), and a
failure before the commit goes on from the state before. Fast: no Ray."""

from pathlib import Path

import numpy as np
import pytest

from sentune.trainables._resume import ResumeState, ResumeStore


def _state(epoch: int, fill: float = 0.0) -> ResumeState:
    history = [{"epoch": e, "val_loss": 1.0 / e} for e in range(1, epoch)]
    return ResumeState(
        epoch=epoch, pos=0, step=10 * (epoch - 1), partial=None, history=history, best_value=0.5, best_epoch=1,
        best_state=None, train={"w": np.full((64, 64), fill, dtype=np.float32)},
    )  # fmt: skip


def _folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("state-"))


def test_an_uncommitted_state_is_latest_only_once_committed(tmp_path):
    store = ResumeStore(str(tmp_path))
    store.save_state(_state(2), rank=0, barrier=lambda: None)
    name = store.write_uncommitted(_state(3, fill=3.0))  # the report has not returned: a restart goes on from 2
    assert store.next_epoch() == 2 and _folders(tmp_path) == ["state-000002-000000010", "state-000003-000000020"]
    store.commit(name)
    assert store.next_epoch() == 3 and _folders(tmp_path) == ["state-000003-000000020"]
    np.testing.assert_array_equal(store.load_state().train["w"], np.full((64, 64), 3.0, dtype=np.float32))


def test_a_second_chance_goes_on_from_the_state_a_stopped_trial_never_committed(tmp_path):
    store = ResumeStore(str(tmp_path))
    store.save_state(_state(3), rank=0, barrier=lambda: None)
    store.write_uncommitted(_state(4, fill=4.0))  # stopped at epoch 3's report: never committed
    store.mark_finished("stopped_early", {"epoch": 3}, keep_state=True)
    store.reopen(3)  # it had trained 3 epochs
    assert not store.finished() and store.next_epoch() == 4
    assert float(store.load_state().train["w"][0, 0]) == 4.0
    assert _folders(tmp_path) == ["state-000004-000000030"]


def test_reopen_takes_only_the_state_after_the_epochs_the_record_has(tmp_path):
    store = ResumeStore(str(tmp_path))
    store.save_state(_state(2), rank=0, barrier=lambda: None)
    store.write_uncommitted(_state(4))  # not the epoch after the record's last (2 trained): not taken
    (tmp_path / "state-000003-x").mkdir()  # not a state name: never taken
    store.reopen(2)
    assert store.next_epoch() == 2


def test_a_finished_trial_keeps_no_state_unless_second_chances_may_revive_it(tmp_path):
    """Every state of a trial that is over goes, the uncommitted one too: a sweep of hundreds of trials kept each
    one's weights and optimizer state in the run folder. The trial's last result stays, for a restarted driver."""
    store = ResumeStore(str(tmp_path))
    store.save_state(_state(2), rank=0, barrier=lambda: None)
    store.write_uncommitted(_state(3))
    store.mark_finished("stopped_early", {"epoch": 2})
    assert _folders(tmp_path) == [] and store.latest() is None and store.load_state() is None
    assert store.finished_result() == {"status": "stopped_early", "last": {"epoch": 2}}
    kept = ResumeStore(str(tmp_path / "kept"))
    kept.save_state(_state(2), rank=0, barrier=lambda: None)
    kept.write_uncommitted(_state(3))
    kept.mark_finished("stopped_early", {"epoch": 2}, keep_state=True)
    assert _folders(tmp_path / "kept") == ["state-000002-000000010", "state-000003-000000020"]


def test_without_its_last_result_a_finished_trial_keeps_its_latest_state(tmp_path):
    store = ResumeStore(str(tmp_path))
    store.save_state(_state(2), rank=0, barrier=lambda: None)
    store.write_uncommitted(_state(3))
    store.mark_finished("stopped_early")
    assert _folders(tmp_path) == ["state-000002-000000010"] and store.history() == _state(2).history


def test_a_failed_write_raises_and_keeps_the_state_before(tmp_path):
    store = ResumeStore(str(tmp_path))
    store.save_state(_state(2), rank=0, barrier=lambda: None)
    (tmp_path / "state-000003-000000020").write_text("a file where the folder goes")
    with pytest.raises(OSError):
        store.write_uncommitted(_state(3))
    assert store.next_epoch() == 2


def _llama(sst_dir, epochs=2):
    from sentune.data import DataConfig, load_splits
    from sentune.trainables import llama_torch as lt

    p = lt.LlamaTorchParams(backbone="random:tiny", option="finetune", epochs=epochs, lr=3e-3, batch_size=16,
                            max_len=24)  # fmt: skip
    return lt, p, lt.prepare(p, load_splits(DataConfig(train=sst_dir / "train.txt", dev=sst_dir / "dev.txt")))


def test_the_loop_writes_each_epochs_state_before_its_report_and_commits_after(sst_dir, tmp_path):
    """The real llama loop: while epoch e is reported its state is written but LATEST still names epoch e's
    start (a failure there repeats epoch e); once the report returns it names the next epoch."""
    lt, p, data = _llama(sst_dir)
    store = ResumeStore(str(tmp_path / "r"))
    seen = []

    def report(metrics, save):
        written = any((tmp_path / "r").glob(f"state-{metrics['epoch'] + 1:06d}-*/rank-0.state"))
        seen.append((metrics["epoch"], store.next_epoch(), written))

    lt.fit(p, data, lt.LoopContext(report=report, resume=store))
    assert seen == [(1, 1, True), (2, 2, True)]  # written before each report, committed after it
    assert store.next_epoch() == 3 and [n[:12] for n in _folders(tmp_path / "r")] == ["state-000003"]


class _Stopped(BaseException):
    """What Tune's report raises in a trial it stopped (SystemExit there)."""


@pytest.mark.parametrize("keep", [True, False])
def test_a_trial_stopped_at_a_report_keeps_that_epochs_state_only_if_the_driver_keeps_it(sst_dir, tmp_path, keep):
    """The driver marks a trial finished before the stop reaches its report: what it asked for holds once the
    report has raised (the state written for that report there for a second chance when kept; no state folder
    left when not)."""
    lt, p, data = _llama(sst_dir, epochs=3)
    store = ResumeStore(str(tmp_path / "r"))

    def report(metrics, save):
        if metrics["epoch"] == 2:
            ResumeStore(store.root).mark_finished("stopped_early", {"epoch": 2}, keep_state=keep)  # the driver
            raise _Stopped

    with pytest.raises(_Stopped):
        lt.fit(p, data, lt.LoopContext(report=report, resume=store))
    if keep:
        assert [n[:12] for n in _folders(tmp_path / "r")] == ["state-000002", "state-000003"]
        store.reopen(2)  # a second chance goes on from the state written at the stopping report
        assert store.next_epoch() == 3
    else:
        assert _folders(tmp_path / "r") == []


@pytest.mark.parametrize("revivable", [True, False])
def test_a_resumed_sweep_keeps_a_stopped_trials_state_only_when_second_chances_may_revive_it(tmp_path, revivable):
    """A trial the record has as stopped, whose driver was killed before it was marked finished: ``reconcile``
    marks it by the same rule as the sweep's callback (the state a second chance goes on from stays)."""
    from sentune.results import RunRecorder
    from sentune.tuning._reconcile import reconcile

    rec = RunRecorder(tmp_path / "run", job="j", run_id="r", metric="val_macro_f1", mode="max", max_epochs=4)
    rec.trial("t1", {"lr": 0.1})
    rec.result("t1", {"lr": 0.1}, {"epoch": 1, "val_macro_f1": 0.4, "training_iteration": 1})
    rec.completed("t1", {"lr": 0.1})
    store = ResumeStore(str(tmp_path / "resume" / "t1"))
    store.save_state(_state(2), rank=0, barrier=lambda: None)
    reconcile(rec, str(tmp_path / "resume"), revivable=revivable)
    assert store.finished_result()["status"] == "stopped_early"
    assert _folders(tmp_path / "resume" / "t1") == (["state-000002-000000010"] if revivable else [])


def test_an_epochs_state_waits_for_the_interval_but_the_last_epochs_does_not(sst_dir, tmp_path):
    """Epochs of a fraction of a second are not each worth a state file: within ``min_interval_s`` none is
    written (a failure there starts the trial again), after the last epoch one always is."""
    lt, p, data = _llama(sst_dir, epochs=3)
    store = ResumeStore(str(tmp_path / "r"), min_interval_s=3600)
    seen = []
    lt.fit(p, data, lt.LoopContext(report=lambda m, s: seen.append((m["epoch"], store.next_epoch())), resume=store))
    assert seen == [(1, 1), (2, 1), (3, 1)]
    assert store.next_epoch() == 4 and [n[:12] for n in _folders(tmp_path / "r")] == ["state-000004"]


def test_a_job_with_second_chances_writes_every_epochs_state():
    from sentune.spec import parse_job
    from sentune.tuning._sweep import _failure

    space = {"lr": {"loguniform": [1.0e-4, 1.0e-2]}, "backbone": "random:tiny", "epochs": 4}
    base = dict(name="t", trainable="llama_torch", data={"builtin": "en-movie-5"}, search_space=space)
    asha = {"type": "asha", "metric": "val_loss", "mode": "min", "grace_period": 1, "reduction_factor": 2}
    plain = parse_job({**base, "scheduler": asha})
    assert _failure(plain).checkpoint_min_interval_s == 10.0 == plain.failure.checkpoint_min_interval_s
    revivable = parse_job({**base, "scheduler": {**asha, "second_chance": {"budget": 0.5}}})
    assert _failure(revivable).checkpoint_min_interval_s == 0.0
    assert _failure(revivable).max_failures == revivable.failure.max_failures
