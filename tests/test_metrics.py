import math

import numpy as np
import pytest

from cap.core import metrics
from cap.errors import ParameterError


def test_imbalance_ratio():
    assert metrics.imbalance_ratio([4, 2, 2]) == 2.0
    # a never-predicted class counts as predicted once
    assert metrics.imbalance_ratio([10, 5, 0]) == 10.0


def test_normalized_entropy_hand_values():
    assert metrics.normalized_entropy([1, 1]) == pytest.approx(1.0)
    assert metrics.normalized_entropy([2, 0]) == 0.0
    # p = (1/2, 1/4, 1/4): H = 0.5 ln 2 + 0.5 ln 4 = 1.5 ln 2; divided by ln 3
    assert metrics.normalized_entropy([2, 1, 1]) == pytest.approx(1.5 * math.log(2) / math.log(3))
    assert metrics.normalized_entropy([0, 0, 0]) == 0.0


def test_under_predicted_share():
    # class 0: 1 < 0.5*4 yes; class 1: 4 < 2 no; class 2: 5 < 1 no
    assert metrics.under_predicted_share([1, 4, 5], [4, 4, 2]) == pytest.approx(1 / 3)
    # classes that do not occur are left out: only class 0 counts here
    assert metrics.under_predicted_share([0, 3], [2, 0]) == 1.0


def test_per_class_accuracy_and_counts():
    pred = np.array([0, 0, 1, 2, 2])
    labels = np.array([0, 1, 1, 2, 2])
    assert metrics.class_counts(pred, 4).tolist() == [2, 1, 2, 0]
    acc = metrics.per_class_accuracy(pred, labels, 4)
    assert acc[:3].tolist() == [100.0, 50.0, 100.0]
    assert math.isnan(acc[3])  # class 3 has no samples


def test_balance_metrics_of_perfect_labels():
    labels = np.repeat(np.arange(5), 3)
    assert metrics.balance_metrics(labels, labels, 5) == {
        "imbalance_ratio": 1.0, "normalized_entropy": pytest.approx(1.0), "under_predicted_share": 0.0,
    }


def test_harmonic_mean():
    assert metrics.harmonic_mean(60.0, 40.0) == pytest.approx(48.0)  # 2*60*40/100
    assert metrics.harmonic_mean(0.0, 0.0) == 0.0
    with pytest.raises(ParameterError):
        metrics.harmonic_mean(-1.0, 10.0)


def test_dominant_cluster():
    clusters = [0, 0, 1, 1, 1]
    labels = [0, 0, 0, 1, 1]
    cluster, purity, coverage = metrics.dominant_cluster(clusters, labels, 0)
    assert (cluster, purity, coverage) == (0, 1.0, pytest.approx(2 / 3))
    cluster, purity, coverage = metrics.dominant_cluster(clusters, labels, 1)
    assert (cluster, purity, coverage) == (1, pytest.approx(2 / 3), 1.0)
    with pytest.raises(ParameterError, match="no images"):
        metrics.dominant_cluster(clusters, labels, 7)


def test_bad_counts_are_errors():
    with pytest.raises(ParameterError, match="non-negative"):
        metrics.imbalance_ratio([3, -1])
    with pytest.raises(ParameterError):
        metrics.normalized_entropy([])
    with pytest.raises(ParameterError, match="shape"):
        metrics.under_predicted_share([1, 2], [1, 2, 3])


def test_paradigm_scores_hand_values():
    pred = [0, 1, 1, 3, 2, 2]
    labels = [0, 1, 2, 3, 3, 2]  # 4 of 6 right
    assert metrics.paradigm_scores(pred, labels) == {"top1": pytest.approx(400 / 6)}
    # seen {0, 1}: 2 of 2 right = 100; unseen {2, 3}: 2 of 4 right = 50; H = 2·100·50/150
    scores = metrics.paradigm_scores(pred, labels, seen=[0, 1])
    assert (scores["seen"], scores["unseen"]) == (100.0, 50.0)
    assert scores["harmonic_mean"] == pytest.approx(200 / 3)
    with pytest.raises(ParameterError, match="no test images of unseen classes"):
        metrics.paradigm_scores([0, 1], [0, 1], seen=[0, 1])


def test_expected_calibration_error_by_hand():
    # 2 bins: (0, .5] holds 0.4 (wrong); (.5, 1] holds 0.6 (right), 0.8 (right), 1.0 (wrong)
    # bin 1: |0 − 0.4| = 0.4, weight 1/4; bin 2: |2/3 − 0.8| = 0.1333, weight 3/4 → 0.1 + 0.1 = 0.2
    ece = metrics.expected_calibration_error([0.4, 0.6, 0.8, 1.0], [False, True, True, False], n_bins=2)
    assert ece == pytest.approx(20.0)
    # perfectly calibrated: confidence 1 and right
    assert metrics.expected_calibration_error([1.0, 1.0], [True, True]) == 0.0
    with pytest.raises(ParameterError, match="equal-length"):
        metrics.expected_calibration_error([0.5], [True, False])
    with pytest.raises(ParameterError, match=r"\[0, 1\]"):
        metrics.expected_calibration_error([1.5], [True])


def test_confusion_groups_by_hand():
    # class 0: 4 images, 3 predicted as 1 (rate .75); class 1: 2 images, 1 predicted as 0 (rate .5);
    # class 2: 2 images, 1 predicted as 0 (rate .5). The pair {0, 1} is taken once, as (0, 1).
    labels = [0, 0, 0, 0, 1, 1, 2, 2]
    pred = [1, 1, 1, 0, 0, 1, 0, 2]
    assert metrics.confusion_groups(labels, pred, 3, n_groups=2) == [(0, 1), (2, 0)]
    assert metrics.confusion_groups(labels, pred, 3) == [(0, 1)]  # ⌈3/10⌉ = 1
    assert metrics.confusion_groups([0, 1], [0, 1], 2) == []  # no confusion, no group


def test_confusion_group_ties_do_not_depend_on_class_index():
    # (1 → 0) and (2 → 0) both have rate .5. Without confidences the names decide: "ash" (class 2)
    # comes before "birch" (class 1); with confidences the surer confusion (class 1's, .9) wins.
    labels, pred = [0, 1, 1, 2, 2], [0, 0, 1, 0, 2]
    names = ["oak", "birch", "ash"]
    assert metrics.confusion_groups(labels, pred, 3, n_groups=1, names=names) == [(2, 0)]
    confidence = [0.5, 0.9, 0.5, 0.6, 0.5]
    assert metrics.confusion_groups(labels, pred, 3, n_groups=1, confidence=confidence, names=names) == [(1, 0)]
    # renumbering the classes (same names) gives the same pairs of names
    perm = [2, 0, 1]  # old class c becomes perm[c]
    relabel = lambda v: [perm[x] for x in v]  # noqa: E731
    renamed = [None] * 3
    for old, new in enumerate(perm):
        renamed[new] = names[old]
    (a, b), = metrics.confusion_groups(relabel(labels), relabel(pred), 3, n_groups=1, names=renamed)
    assert (renamed[a], renamed[b]) == ("ash", "oak")


def test_pair_scores_by_hand():
    # victim 1 (4 images): 2 right, 1 predicted as the attractor 0, 1 as class 2
    labels = [1, 1, 1, 1, 0, 0]
    pred = [1, 1, 0, 2, 0, 0]
    confidence = [0.9, 0.9, 0.8, 0.5, 0.9, 0.9]
    scores = metrics.pair_scores(labels, pred, confidence, victim=1, attractor=0, n_bins=10)
    assert scores["victim_accuracy"] == pytest.approx(50.0)
    assert scores["victim_to_attractor"] == pytest.approx(25.0)
    # group {0, 1}: 6 images, 4 right → 66.7 %; bins: .9 (4 images, all right, gap .1), .8 wrong (.8),
    # .5 wrong (.5) → ECE = (4·.1 + .8 + .5)/6 = 1.7/6 → 28.33 %
    assert scores["accuracy"] == pytest.approx(400 / 6)
    assert scores["ece"] == pytest.approx(170 / 6)
    with pytest.raises(ParameterError, match="victim class 5"):
        metrics.pair_scores(labels, pred, confidence, victim=5, attractor=0)


def test_group_scores_by_hand():
    labels = [0, 0, 1, 2]
    pred = [0, 1, 1, 2]
    confidence = [0.9, 0.6, 0.7, 0.99]
    scores = metrics.group_scores(labels, pred, confidence, (0, 1), n_bins=10)
    # images of classes 0 and 1: right, wrong, right → 66.7 %; bins: .9 right (gap .1), .6 wrong (gap .6),
    # .7 right (gap .3), each weight 1/3 → ECE 1/3 in percent
    assert scores["accuracy"] == pytest.approx(200 / 3)
    assert scores["ece"] == pytest.approx(100 / 3)
    with pytest.raises(ParameterError, match="no test image"):
        metrics.group_scores(labels, pred, confidence, (5,))


def test_memoised_computes_once_per_distinct_input():
    from cap.core.numeric import memoised

    calls = []

    def compute():
        calls.append(1)
        return len(calls)

    a = np.arange(6.0)
    assert memoised("test-memo", compute, a, k=1) == 1
    assert memoised("test-memo", compute, a.copy(), k=1) == 1, "same bytes: stored result"
    assert memoised("test-memo", compute, a, k=2) == 2, "other parameter: computed again"
    assert memoised("test-memo", compute, a + 1, k=1) == 3, "other content: computed again"
    assert memoised("test-memo", compute, a.reshape(2, 3), k=1) == 4, "other shape: computed again"
    assert memoised("test-memo", compute, a.astype(np.float32), k=1) == 5, "other dtype: computed again"
