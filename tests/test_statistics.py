"""The stratified bootstrap behind every interval on the claims page, by hand."""

import numpy as np
import pytest

from cap.experiments.statistics import (mean_of_replicates, probability_of_improvement, stratified_bootstrap,
                                        sweep_range, unit_intervals)


def test_constant_replicates_give_a_point_interval():
    estimate, low, high, own = stratified_bootstrap([np.ones(3), 3 * np.ones(2)], mean_of_replicates)
    assert (estimate, low, high) == (2.0, 2.0, 2.0) and own.tolist() == [1.0, 3.0]


def test_two_units_by_hand():
    # unit A: replicates 0 and 2, spread about their mean 1 by √(2/1): 1 ∓ √2; its resampled mean is
    # 1 − √2, 1 or 1 + √2 with chances 1/4, 1/2, 1/4. Unit B: one replicate, 4 (nothing to spread).
    # The mean over units is (5 ∓ √2)/2 or 2.5: the 95 % interval is [(5 − √2)/2, (5 + √2)/2].
    estimate, low, high, _ = stratified_bootstrap([np.array([0.0, 2.0]), np.array([4.0])], mean_of_replicates)
    assert estimate == 2.5 and (low, high) == pytest.approx(((5 - np.sqrt(2)) / 2, (5 + np.sqrt(2)) / 2))


def test_a_units_own_interval_is_students_t():
    # B's replicates never mix with A's. B = 2, 4, 6: mean 4, sd 2, t(0.975, 2) = 4.303: 4 ∓ 4.303 × 2 / √3
    a, b = np.array([5.0, 5.0, 5.0]), np.array([2.0, 4.0, 6.0])
    (ea, la, ha), (eb, lb, hb) = unit_intervals([a, b])
    assert (ea, la, ha) == (5.0, 5.0, 5.0) and eb == 4.0
    assert (lb, hb) == pytest.approx((4 - 4.3027 * 2 / np.sqrt(3), 4 + 4.3027 * 2 / np.sqrt(3)), abs=1e-3)


def test_the_range_of_a_sweep_by_hand():
    # two replicates × three swept values; the means over replicates are 1, 2 and 4: range 3
    x = np.array([[1.0, 2.0, 4.0], [1.0, 2.0, 4.0]])
    estimate, low, high, _ = stratified_bootstrap([x], sweep_range, combine=lambda r: r.max(-1))
    assert (estimate, low, high) == (3.0, 3.0, 3.0)
    # a larger range in a second unit decides the largest change
    estimate, *_ = stratified_bootstrap([x, np.array([[0.0, 10.0]])], sweep_range, combine=lambda r: r.max(-1))
    assert estimate == 10.0


def test_the_same_records_give_the_same_interval():
    data = [np.random.default_rng(1).normal(size=5) for _ in range(4)]
    assert stratified_bootstrap(data, mean_of_replicates)[:3] == stratified_bootstrap(data, mean_of_replicates)[:3]


def test_probability_of_improvement_by_hand():
    assert probability_of_improvement([1.0, -2.0, 0.0, 3.0]) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert np.isnan(probability_of_improvement([]))
    with pytest.raises(ValueError, match="at least one replicate"):
        stratified_bootstrap([np.array([])], mean_of_replicates)
