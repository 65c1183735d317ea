"""The resumable schedulers, driven without Ray running: fake trials and a small stand-in for Tune's
controller that makes the calls Tune makes (``on_trial_add`` as a trial is created, ``on_trial_result`` for
each result unless a stopper ends the trial first, ``on_trial_complete`` as a trial ends).

The replay property: run a sweep uninterrupted, cut it anywhere, replay the first part's record into a
fresh scheduler (as ``sentune resume`` does), and the fresh scheduler decides the rest exactly as the
uninterrupted one did. The reference is Ray's own scheduler where sentune's must behave like it (ASHA with
one bracket, the median rule), and sentune's scheduler run uninterrupted for HyperBand's brackets (Ray
draws a trial's bracket at random).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ray import tune
from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule, TrialScheduler

from sentune.tuning._factories import hyperband_brackets, make_scheduler

METRIC = "score"
STOP, CONTINUE = TrialScheduler.STOP, TrialScheduler.CONTINUE


class FakeTrial:
    """What a scheduler reads of a Tune trial."""

    def __init__(self, trial_id: str, config: dict | None = None, folder: str = ""):
        self.trial_id = trial_id
        self.config = dict(config or {})
        self.status = "RUNNING"
        self.last_result: dict = {}
        self.local_experiment_path = self.local_dir = folder  # where PBT logs its exploits
        self.experiment_tag = trial_id
        self.evaluated_params: dict = {}
        self.checkpoint = None
        self.temporary_state = SimpleNamespace(saving_to=None)
        self.run_metadata = SimpleNamespace(checkpoint_manager=SimpleNamespace(
            checkpoint_config=SimpleNamespace(num_to_keep=None)))  # fmt: skip

    def is_finished(self) -> bool:
        return self.status in ("TERMINATED", "ERROR")

    def set_config(self, config: dict) -> None:
        self.config = config

    def set_experiment_tag(self, tag: str) -> None:
        self.experiment_tag = tag

    def __repr__(self) -> str:
        return f"FakeTrial({self.trial_id})"


class FakeController:
    """The calls Tune's controller makes on a scheduler, and what a scheduler asks of the controller."""

    search_alg = None

    def __init__(self, scheduler, folder: str = ""):
        self.scheduler = scheduler
        self.folder = folder
        self.trials: dict[str, FakeTrial] = {}

    def get_trials(self) -> list[FakeTrial]:
        return list(self.trials.values())

    def get_live_trials(self) -> list[FakeTrial]:
        return [t for t in self.trials.values() if not t.is_finished()]

    def pause_trial(self, trial: FakeTrial, should_checkpoint: bool = True) -> None:
        trial.status = "PAUSED"

    def _schedule_trial_save(self, trial: FakeTrial, result=None):
        return f"checkpoint of {trial.trial_id}"

    def add(self, trial_id: str, config: dict | None = None) -> FakeTrial:
        trial = self.trials[trial_id] = FakeTrial(trial_id, config, self.folder)
        self.scheduler.on_trial_add(self, trial)
        return trial

    def report(self, trial_id: str, epoch: int, value: float, *, last: bool, by_stopper: bool = False) -> str:
        """One result: a stopper's verdict comes first (the scheduler then sees only the trial's end)."""
        trial = self.trials[trial_id]
        result = {"epoch": epoch, METRIC: value}
        decision = STOP if by_stopper else self.scheduler.on_trial_result(self, trial, result)
        if decision == STOP or last:
            self.end(trial_id, result)
        return decision

    def end(self, trial_id: str, result: dict) -> None:
        self.scheduler.on_trial_complete(self, self.trials[trial_id], result)
        self.trials[trial_id].status = "TERMINATED"


@dataclass(frozen=True)
class Sweep:
    """Trials' metric curves (one value per epoch it would run), which running trial reports next at each
    step (``picks``, then the first running one), and the epoch at which a stopper ends a trial."""

    curves: tuple[tuple[float, ...], ...]
    picks: tuple[int, ...] = ()
    stopper: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    trial_id: str
    epoch: int
    value: float
    last: bool  # the trial's last planned epoch
    by_stopper: bool
    decision: str
    ended: bool  # the trial ended at this step


def run_uninterrupted(sweep: Sweep, scheduler) -> list[Step]:
    tune_ = FakeController(scheduler)
    running = list(range(len(sweep.curves)))
    epochs = [0] * len(sweep.curves)
    picks = iter(sweep.picks)
    steps = []
    while running:
        index = running[next(picks, 0) % len(running)]
        trial_id = f"t{index}"
        if trial_id not in tune_.trials:
            tune_.add(trial_id)
        epochs[index] += 1
        epoch, value = epochs[index], sweep.curves[index][epochs[index] - 1]
        last, by_stopper = epoch == len(sweep.curves[index]), sweep.stopper.get(index) == epoch
        decision = tune_.report(trial_id, epoch, value, last=last, by_stopper=by_stopper)
        ended = decision == STOP or last
        steps.append(Step(trial_id, epoch, value, last, by_stopper, decision, ended))
        if ended:
            running.remove(index)
    return steps


def resumed_decisions(steps: list[Step], cut: int, scheduler, *, forgotten: frozenset[str] = frozenset()):
    """Replay ``steps[:cut]`` as the record holds them into ``scheduler`` (``forgotten``: trials that had
    ended but that the record still has as running), restore the trials as Tune does (each added again; a
    trial the record had not marked ended goes on: it reports its next epoch, or only its end), then feed
    it ``steps[cut:]``. Returns (decisions on the trials the record had wrong, decisions on the rest)."""
    done = steps[:cut]
    ended = {s.trial_id for s in done if s.ended}
    scheduler.replay_later(
        [(s.trial_id, s.epoch, s.value) for s in done],
        completed=ended - forgotten,
        ended_by_stopper={s.trial_id for s in done if s.by_stopper},
    )
    tune_ = FakeController(scheduler)
    for trial_id in dict.fromkeys(s.trial_id for s in done):
        tune_.add(trial_id)
        if trial_id in ended and trial_id not in forgotten:
            tune_.trials[trial_id].status = "TERMINATED"
    woken = []
    for s in done:
        if s.ended and s.trial_id in forgotten:
            if s.last:  # its driver has nothing left to train: it only ends
                tune_.end(s.trial_id, {"epoch": s.epoch, METRIC: s.value})
            else:
                woken.append(tune_.report(s.trial_id, s.epoch + 1, s.value, last=False))
    rest = []
    for s in steps[cut:]:
        if s.trial_id not in tune_.trials:
            tune_.add(s.trial_id)
        rest.append(tune_.report(s.trial_id, s.epoch, s.value, last=s.last, by_stopper=s.by_stopper))
    return woken, rest


def _searchable(scheduler):
    scheduler.set_search_properties(METRIC, "max")
    return scheduler


def sentune_scheduler(kind: str, **kwargs):
    return _searchable(make_scheduler(kind, **kwargs))


# few distinct values (ties, equal running means) more often than any float; now and then a NaN
VALUES = st.one_of(st.sampled_from([0.0, 0.4, 0.5, 0.9, 1.0]), st.floats(0, 1), st.just(math.nan))


@st.composite
def sweeps(draw, max_epochs: int = 6, min_trials: int = 1, max_trials: int = 7):
    n = draw(st.integers(min_trials, max_trials))
    curves = tuple(
        tuple(draw(st.lists(VALUES, min_size=1, max_size=max_epochs))) for _ in range(n)
    )  # fmt: skip
    picks = tuple(draw(st.lists(st.integers(0, max_trials - 1), max_size=n * max_epochs)))
    stopped = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=2))
    stopper = {i: draw(st.integers(1, len(curves[i]))) for i in stopped}
    return Sweep(curves, picks, stopper)


def _forgotten(draw, steps: list[Step], cut: int) -> frozenset[str]:
    """Trials that ended but that the record has as running: any the scheduler cut, and the trial of the
    record's last step (the record lags behind the sweep by at most a trial's end)."""
    cut_by_scheduler = sorted({s.trial_id for s in steps[:cut] if s.decision == STOP and not s.by_stopper})
    chosen = set(draw(st.lists(st.sampled_from(cut_by_scheduler), unique=True))) if cut_by_scheduler else set()
    if cut and steps[cut - 1].ended and not steps[cut - 1].by_stopper and draw(st.booleans()):
        chosen.add(steps[cut - 1].trial_id)
    return frozenset(chosen)


def check_replay(data, sweep: Sweep, reference, fresh) -> None:
    steps = run_uninterrupted(sweep, reference())
    cut = data.draw(st.integers(0, len(steps)), label="cut")
    forgotten = _forgotten(data.draw, steps, cut)
    woken, rest = resumed_decisions(steps, cut, fresh(), forgotten=forgotten)
    assert woken == [STOP] * len(woken), "a trial the scheduler had cut went on after the resume"
    assert rest == [s.decision for s in steps[cut:]]


@pytest.mark.filterwarnings("ignore:All-NaN slice encountered:RuntimeWarning")  # a rung of NaN metrics
@settings(max_examples=200, deadline=None)
@given(data=st.data(), sweep=sweeps(max_epochs=6), grace=st.integers(1, 2), eta=st.sampled_from([2, 3]))
def test_asha_after_a_replay_decides_as_rays_asha_uninterrupted(data, sweep, grace, eta):
    kw = dict(time_attr="epoch", max_t=6, grace_period=grace, reduction_factor=eta)
    check_replay(
        data, sweep, lambda: _searchable(ASHAScheduler(**kw)), lambda: sentune_scheduler("asha", **kw)
    )  # fmt: skip


@pytest.mark.filterwarnings("ignore:All-NaN slice encountered:RuntimeWarning")  # a rung of NaN metrics
@settings(max_examples=200, deadline=None)
@given(data=st.data(), sweep=sweeps(max_epochs=8), eta=st.sampled_from([2, 3]))
def test_hyperband_brackets_after_a_replay_decide_as_uninterrupted(data, sweep, eta):
    kw = dict(time_attr="epoch", max_t=8, grace_period=1, reduction_factor=eta)
    assert hyperband_brackets(8, 1, eta) > 1
    check_replay(
        data, sweep, lambda: sentune_scheduler("hyperband", **kw), lambda: sentune_scheduler("hyperband", **kw)
    )


@settings(max_examples=400, deadline=None)
@given(data=st.data(), sweep=sweeps(max_epochs=5, min_trials=4), grace=st.integers(1, 2))
def test_median_rule_after_a_replay_decides_as_rays_uninterrupted(data, sweep, grace):
    def reference():  # Ray's rule, never short of samples with no trial waiting: it continues, as sentune's
        return _searchable(MedianStoppingRule(time_attr="epoch", grace_period=grace, min_samples_required=3))

    check_replay(data, sweep, reference, lambda: sentune_scheduler("median", max_t=5, grace_period=grace))


def test_median_replay_counts_a_completed_trials_last_result_as_tune_did():
    """A, B, C report 0, 0, 0.9 and complete; D reports 0.4 each epoch. Tune hands the rule each completed
    trial's last result a second time (``on_trial_complete``), so D's 0.4 is below the median of the
    others' running means (0.45) at epoch 3 and it stops; a replay must count it twice as well."""
    sweep = Sweep(((0.0, 0.0, 0.9),) * 3 + ((0.4,) * 5,))  # one trial after another
    steps = run_uninterrupted(sweep, sentune_scheduler("median", max_t=5, grace_period=1))
    assert [s.decision for s in steps if s.trial_id == "t3"] == [CONTINUE, CONTINUE, STOP]
    cut = 9  # A, B and C done, D not started
    _, rest = resumed_decisions(steps, cut, sentune_scheduler("median", max_t=5, grace_period=1))
    assert rest == [CONTINUE, CONTINUE, STOP]


def test_asha_keeps_a_cut_trial_stopped_after_a_resume_the_record_missed():
    """ASHA cut t1 at its first rung, and the sweep stopped before the record marked it: after the resume
    its driver trains epoch 2, and ASHA stops it at that result instead of letting it on."""
    sweep = Sweep(((1.0, 1.0, 1.0, 1.0), (0.0, 0.0, 0.0, 0.0)), picks=(0, 1))
    kw = dict(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2)
    steps = run_uninterrupted(sweep, sentune_scheduler("asha", **kw))
    assert steps[1] == Step("t1", 1, 0.0, False, False, STOP, True)
    woken, _ = resumed_decisions(steps, 2, sentune_scheduler("asha", **kw), forgotten=frozenset({"t1"}))
    assert woken == [STOP]


def test_a_trial_that_ended_before_the_resume_adds_nothing_more():
    """Tune may bring back a trial the record has as ended (its own state lagged behind): the scheduler
    stops it at once, and its end after the resume leaves the rung as the uninterrupted sweep left it."""
    kw = dict(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2)
    steps = run_uninterrupted(Sweep(((1.0, 1.0), (0.5, 0.5, 0.5, 0.5))), sentune_scheduler("asha", **kw))
    scheduler = sentune_scheduler("asha", **kw)
    scheduler.replay_later([(s.trial_id, s.epoch, s.value) for s in steps[:2]], completed={"t0"})
    tune_ = FakeController(scheduler)
    tune_.add("t0")
    assert tune_.report("t0", 3, 0.0, last=True) == STOP
    tune_.add("t1")
    assert [tune_.report("t1", s.epoch, s.value, last=s.last) for s in steps[2:]] == [s.decision for s in steps[2:]]


def _pbt_configs(scramble: int, folder) -> list[float]:
    """The learning rates PBT gives the weaker of two trials, exploit after exploit, with NumPy's and
    Python's global generators reseeded from ``scramble`` before every call."""
    folder.mkdir()
    mutations = {"lr": tune.loguniform(1e-4, 1e-1)}
    pbt = sentune_scheduler("pbt", max_t=40, mutations=mutations, perturbation_interval=1, seed=7)
    tune_ = FakeController(pbt, str(folder))
    good, weak = tune_.add("good", {"lr": 0.01}), tune_.add("weak", {"lr": 0.001})
    lrs = []
    for step in range(1, 25):
        for trial, score in ((good, 1.0), (weak, 0.0)):
            np.random.seed(scramble * 1000 + step)
            random.seed(scramble * 1000 + step)
            trial.status = "RUNNING"
            pbt.on_trial_result(tune_, trial, {"epoch": step, METRIC: score})
        lrs.append(weak.config["lr"])
    return lrs


def test_seeded_pbt_perturbs_alike_whatever_the_global_generators_hold(tmp_path):
    first, second = _pbt_configs(1, tmp_path / "a"), _pbt_configs(2, tmp_path / "b")
    resampled = [lr for lr in first[1:] if not any(math.isclose(lr, 0.01 * f) for f in (0.8, 1.2))]
    assert resampled, "no value was resampled from the Tune range"
    assert first == second


def test_seeded_pbt_leaves_the_global_generators_as_it_found_them(tmp_path):
    pbt = sentune_scheduler("pbt", max_t=8, mutations={"lr": tune.uniform(0, 1)}, perturbation_interval=1, seed=4)
    tune_ = FakeController(pbt, str(tmp_path))
    good, weak = tune_.add("good", {"lr": 0.5}), tune_.add("weak", {"lr": 0.1})
    np.random.seed(11)
    random.seed(11)
    lrs = set()
    for step in range(1, 7):
        for trial, score in ((good, 1.0), (weak, 0.0)):
            trial.status = "RUNNING"
            pbt.on_trial_result(tune_, trial, {"epoch": step, METRIC: score})
        lrs.add(weak.config["lr"])
    assert lrs - {0.1, 0.4, 0.6}, "no value was resampled from the Tune range"
    expected = (np.random.RandomState(11).random_sample(), random.Random(11).random())
    assert (np.random.random(), random.random()) == expected
