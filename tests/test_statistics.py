"""The stratified bootstrap behind every interval on the claims page, by hand."""

import numpy as np
import pytest

from cap.experiments.statistics import (mean_of_replicates, probability_of_improvement, stratified_bootstrap,
                                        sweep_range, unit_intervals)


def test_constant_replicates_give_a_point_interval():
    estimate, low, high, own = stratified_bootstrap([np.ones(3), 3 * np.ones(2)], mean_of_replicates)
    assert (estimate, low, high) == (2.0, 2.0, 2.0) and own.tolist() == [1.0, 3.0]


def test_two_units_by_hand():
    # unit A: replicates 0 and 2 (resampled mean 0, 1 or 2 with chances 1/4, 1/2, 1/4); unit B: one replicate, 4.
    # The mean over units is 2, 2.5 or 3 with chances 1/4, 1/2, 1/4: the 95 % interval is [2, 3], the estimate 2.5.
    estimate, low, high, _ = stratified_bootstrap([np.array([0.0, 2.0]), np.array([4.0])], mean_of_replicates)
    assert (estimate, low, high) == (2.5, 2.0, 3.0)


def test_each_unit_resamples_its_own_replicates():
    # B's replicates never mix with A's: B's spread alone sets the width of its own interval
    a, b = np.array([5.0, 5.0, 5.0]), np.array([-1.0, 1.0, -1.0, 1.0])
    (ea, la, ha), (eb, lb, hb) = unit_intervals([a, b])
    assert (ea, la, ha) == (5.0, 5.0, 5.0) and eb == 0.0 and -1.0 <= lb < 0 < hb <= 1.0


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
