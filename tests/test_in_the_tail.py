"""The warm evaluator starts in the sweep's tail: once, when a trial ends after every planned trial exists
(earlier, its process's start-up took CPU from the trials). Fast: no Ray started."""

from sentune.tuning._callback import InTheTail


def test_it_fires_once_when_a_trial_ends_after_the_last_trial_was_created():
    calls = []
    tail = InTheTail(4, lambda: calls.append(1))
    tail.on_trial_complete(0, trials=["a", "b"], trial="a")  # trials still to come: every slot is busy
    tail.on_trial_error(0, trials=["a", "b", "c"], trial="b")
    assert calls == []
    tail.on_trial_complete(0, trials=["a", "b", "c", "d"], trial="c")  # the last one exists: a slot is idle
    tail.on_trial_complete(0, trials=["a", "b", "c", "d"], trial="d")
    assert calls == [1]


def test_an_errored_trial_in_the_tail_counts_too():
    calls = []
    tail = InTheTail(2, lambda: calls.append(1))
    tail.on_trial_error(0, trials=["a", "b"], trial="a")
    assert calls == [1]
