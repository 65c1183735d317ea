"""The warm evaluator starts once, when the sweep's first trial ends (started with the sweep, its process's
start-up competed with the trials' own). Fast: no Ray started."""

from sentune.tuning._callback import OnceATrialEnds


def test_it_fires_once_when_a_trial_ends_and_enough_trials_exist():
    calls = []
    once = OnceATrialEnds(3, lambda: calls.append(1))
    once.on_trial_complete(0, trials=["a", "b"], trial="a")
    assert calls == []
    once.on_trial_complete(0, trials=["a", "b", "c"], trial="b")
    once.on_trial_complete(0, trials=["a", "b", "c", "d"], trial="c")
    assert calls == [1]


def test_an_errored_trial_counts_too():
    calls = []
    once = OnceATrialEnds(1, lambda: calls.append(1))
    once.on_trial_error(0, trials=["a", "b"], trial="a")
    once.on_trial_complete(0, trials=["a", "b"], trial="b")
    assert calls == [1]
