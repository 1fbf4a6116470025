"""Leaderboards, refresh, GRIP schedule and CPL candidates, against hand-worked examples."""

import numpy as np
import pytest

from cap.errors import ParameterError, UnknownNameError
from cap.core.pseudolabels import (balanced_selection, confident_leaderboard, cpl_candidates, grip_budget,
                              leaderboard_topk, refresh_dpl, dpl_size)

BASIC = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.95, 0.05], [0.4, 0.6]])


def test_leaderboard_eviction_and_overflow():
    # img2 overflows to class 1; img3 evicts img1 from class 0 (not re-assigned); img4 joins class 1
    assert leaderboard_topk(BASIC, k=2) == {0: [3, 0], 1: [4, 2]}


def test_leaderboard_exclude_and_k_larger_than_pool():
    assert leaderboard_topk(BASIC, k=2, exclude=[3]) == {0: [0, 1], 1: [4, 2]}
    assert leaderboard_topk(BASIC, k=10) == {0: [3, 0, 1, 2], 1: [4]}


def test_leaderboard_restricted_to_some_classes():
    # only class 1 has a leaderboard: every image is offered to it through the overflow
    assert leaderboard_topk(BASIC, k=2, classes=[1]) == {1: [4, 2]}


def test_leaderboard_ties_and_empty_class():
    tied = np.array([[0.5, 0.5], [0.5, 0.5]])
    assert leaderboard_topk(tied, k=2) == {0: [1, 0], 1: []}  # higher index first on ties
    assert leaderboard_topk(tied, k=1) == {0: [0], 1: [1]}


def _leaderboard_as_the_official_code_walks_it(probs, k, exclude=(), classes=None, order="sorted"):
    """Reference: the official procedure image by image, an overflow image offered to the other
    classes one by one in decreasing probability (ties: higher class index first)."""
    boards = {int(c): [] for c in (range(probs.shape[1]) if classes is None else classes)}
    for i, p in enumerate(probs):
        if i in set(exclude):
            continue
        pred = int(p.argmax())
        board = boards.get(pred)
        if board is not None and (len(board) < k or board[-1][0] < p[pred]):
            boards[pred] = sorted(board + [(p[pred], i)], reverse=True)[:k]
            continue
        for score, j in sorted(((p[j], j) for j in range(len(p)) if j != pred), reverse=True):
            other = boards.get(j)
            if other is not None and len(other) < k:
                other.append((score, i))
            elif other is not None and other[-1][0] < score:
                boards[j] = sorted(other + [(score, i)], reverse=True)[:k]
    arrange = (lambda board: sorted(board, reverse=True)) if order == "sorted" else list
    return {c: [i for _, i in arrange(board)] for c, board in boards.items()}


def test_leaderboard_equals_the_image_by_image_procedure_on_random_pools():
    rng = np.random.default_rng(0)
    for trial in range(400):
        n, c, k = int(rng.integers(1, 40)), int(rng.integers(1, 10)), int(rng.integers(1, 6))
        probs = (rng.integers(0, 4, size=(n, c)).astype(float) if trial % 3 == 0  # many ties
                 else rng.dirichlet(np.ones(c) * rng.uniform(0.1, 3), size=n))
        exclude = rng.choice(n, size=int(rng.integers(0, n + 1)), replace=False).tolist() if trial % 4 == 0 else ()
        classes = sorted(rng.choice(c, size=int(rng.integers(1, c + 1)), replace=False).tolist()) if trial % 5 == 0 else None
        for order in ("sorted", "official"):
            expected = _leaderboard_as_the_official_code_walks_it(probs, k, exclude, classes, order)
            assert leaderboard_topk(probs, k, exclude, classes, order) == expected, (trial, order)


def test_leaderboard_official_overflow_appends_without_sorting():
    probs = np.array([
        [0.5, 0.3, 0.2, 0.0],
        [0.6, 0.1, 0.3, 0.0],
        [0.4, 0.35, 0.25, 0.0],  # overflow: joins classes 1, 2 and 3
        [0.45, 0.15, 0.4, 0.0],  # overflow: class 2 becomes [(0.25, 2), (0.4, 3)], unsorted
        [0.25, 0.2, 0.3, 0.25],  # predicted 2 with 0.3 > 0.25 (weakest), but the code compares with
    ])                           # the last entry 0.4, so it overflows to classes 3 and 1 instead
    assert leaderboard_topk(probs, k=2) == {0: [1, 0], 1: [2, 4], 2: [3, 2], 3: [4, 3]}
    # The official order keeps class 2's overflow entries as appended: image 2 (0.25) before image 3 (0.4).
    assert leaderboard_topk(probs, k=2, order="official") == {0: [1, 0], 1: [2, 4], 2: [2, 3], 3: [4, 3]}
    with pytest.raises(UnknownNameError, match="leaderboard order"):
        leaderboard_topk(probs, k=2, order="random")


def test_refresh_k_grows_until_70_percent_of_training():
    assert dpl_size(0, 16, 100) == 16
    assert dpl_size(5, 16, 100) == 16 + int(64 * 5 / 35)  # = 25
    assert dpl_size(35, 16, 100) == 80 and dpl_size(45, 16, 100) == 80
    assert dpl_size(45, 16, 2000) == 1000  # capped at 1000
    assert dpl_size(45, 16, 100, max_ratio=0.6) == 60


def test_confident_leaderboard():
    pred = np.array([0, 0, 1, 0, 1])
    conf = np.array([0.9, 0.95, 0.99, 0.5, 0.8])
    index = np.array([10, 11, 12, 10, 11])
    assert confident_leaderboard(pred, conf, index, [0, 1]) == {0: [11, 10], 1: [12]}
    assert confident_leaderboard(pred, conf, index, [0, 1], current=[11]) == {0: [10], 1: [12]}
    assert confident_leaderboard(pred, conf, index, [0, 1], cap=1) == {0: [11], 1: [12]}
    assert confident_leaderboard(pred, conf, index, [1]) == {1: [12, 11]}  # class 0 not pseudolabelled


def test_refresh_dpl_new_first_then_old():
    old = {0: [1, 2, 3], 1: [4]}
    new = {0: [7], 1: [8, 9, 10]}
    assert refresh_dpl(old, new, k=3) == {0: [7, 1, 2], 1: [8, 9, 10]}


def test_grip_k():
    assert grip_budget(1, 1000, 10) == 10
    assert grip_budget(10, 1000, 10) == 100
    assert grip_budget(11, 1000, 10) == 100  # capped at |U|/C
    assert grip_budget(3, 1001, 3) == 100  # floor(3·1001/30) = floor(100.1)
    with pytest.raises(ParameterError):
        grip_budget(0, 1000, 10)


P = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8]])


def test_cpl_candidates_hand_example():
    # α = .5: conf_thr = median(.7, .4, .8) = .7; intra rows {0,1}, {0,1}, {2}
    # β = .5: column medians .4, .2, .25; inter rows {0,1}, {0,1,2}, {2}
    expected = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=bool)
    np.testing.assert_array_equal(cpl_candidates(P, alpha=0.5, beta=0.5), expected)


def test_cpl_intra_threshold_and_inter_quantile():
    # α = 0: conf_thr = .4: row 0 keeps only its top class; row 1 keeps {0, 1} (cum .4 ≤ .4)
    np.testing.assert_array_equal(cpl_candidates(P, alpha=0.0, beta=0.0),
                                  np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=bool))
    # β = 1: only the column maximum survives; row 1 loses everything
    got = cpl_candidates(P, alpha=1.0, beta=1.0)
    np.testing.assert_array_equal(got, np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=bool))
    with pytest.raises(ParameterError):
        cpl_candidates(P, alpha=1.5, beta=0.5)


def test_balanced_selection_pushes_the_weaker_image_to_its_next_candidate():
    cands = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=bool)
    assert balanced_selection(P, cands, capacity=1) == {0: [0], 1: [1], 2: [2]}
    assert balanced_selection(P, cands, capacity=2) == {0: [0, 1], 1: [], 2: [2]}
    assert balanced_selection(P, cands, capacity=0) == {0: [], 1: [], 2: []}
    # only classes 1 and 2: image 1 (0.35) beats image 0 (0.2) for the one place of class 1
    assert balanced_selection(P, cands, capacity=1, classes=[1, 2]) == {1: [1], 2: [2]}
