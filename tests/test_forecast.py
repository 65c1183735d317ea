"""The learning-curve forecast (fast: numpy alone) and the early-stopping options built on it."""

import math

import numpy as np
import pytest

from conftest import make_job
from sentune.errors import ConfigError
from sentune.forecast import forecast


@pytest.mark.parametrize(
    ("curve", "name"),
    [(lambda x: 0.8 - 0.5 * np.exp(-0.5 * x), "exp"), (lambda x: 0.9 - 0.6 * x**-0.7, "power"),
     (lambda x: 0.3 + 0.6 * (1 - 1 / x), "hyperbola")],
)  # fmt: skip
def test_the_forecast_of_a_curve_of_known_shape_is_within_its_interval(curve, name):
    hits, total = 0, 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        for seen in (3, 4, 6):
            values = [curve(x) + rng.normal(0, 0.005) for x in range(1, seen + 1)]
            found = forecast(values, 10, mode="max", metric="val_macro_f1")
            assert found.low <= found.value <= found.high
            hits += found.low <= curve(10) <= found.high
            total += 1
    assert hits / total >= 0.9, (name, hits, total)  # a 95% interval, on noisy curves


def test_a_noise_free_curve_is_forecast_closely():
    curve = lambda x: 0.8 - 0.5 * math.exp(-0.5 * x)  # noqa: E731
    found = forecast([curve(x) for x in range(1, 6)], 12, metric="val_acc")
    assert found.value == pytest.approx(curve(12), abs=0.05) and found.low <= curve(12) <= found.high


def test_min_mode_bounds_and_too_little_data():
    loss = forecast([1.2, 0.9, 0.8, 0.75], 10, mode="min", metric="val_loss")
    assert 0.0 <= loss.low <= loss.value <= loss.high <= 0.75  # never worse than the best so far
    one = forecast([0.4], 8, metric="val_macro_f1")
    assert (one.value, one.low, one.high) == (0.4, 0.4, 1.0)  # nothing to fit: up to the metric's bound
    assert forecast([None, float("nan")], 8) is None
    done = forecast([0.2, 0.5, 0.4], 3, metric="val_acc")
    assert done.value == done.low == done.high == 0.5  # at max_t already: the best it had


def test_a_steep_slow_starter_is_forecast_above_a_flat_early_leader():
    slow = forecast([0.20, 0.30], 8, metric="val_macro_f1")
    flat = forecast([0.35, 0.36], 8, metric="val_macro_f1")
    assert slow.value > flat.value


def test_bad_promote_on_or_second_chance_is_one_line(sst_dir, tmp_path):
    bad = [
        {"type": "asha", "promote_on": "guess"},
        {"type": "fifo", "promote_on": "forecast"},
        {"type": "median", "second_chance": {"budget": 0.25}},
        {"type": "asha", "second_chance": {"budget": 1.5}},
        {"type": "asha", "second_chance": {"budget": 0.2, "rounds": 3}},
    ]
    for scheduler in bad:
        with pytest.raises(ConfigError) as err:
            make_job(sst_dir, tmp_path, scheduler=scheduler)
        assert "\n" not in str(err.value) and len(str(err.value)) < 300, scheduler
    make_job(sst_dir, tmp_path, scheduler={"type": "hyperband", "promote_on": "forecast", "second_chance": {}})
