"""Pseudolabel selection: FPL/CAP top-k leaderboards, CAP's refresh, GRIP's schedule, CPL's candidates.

Vocabulary. D_PL (the official code's "main samples") is CAP's set of pseudolabelled images, a
dict class -> image indices; a *leaderboard* is the per-class ranked list a selection procedure
returns, and becomes (part of) D_PL. The four sizes have four names: ``k`` (initial D_PL per class,
the paper's k), ``dpl_size`` (k_e, D_PL per class after the refresh at epoch e), ``grip_budget``
(K_i, GRIP/CPL's per-class budget in round i) and FPL's fixed 16 (``FPL_PER_CLASS``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from cap.errors import ParameterError, UnknownNameError, check_int

LEADERBOARD_ORDERS = ("official", "sorted")


def leaderboard_topk(probs, k: int, exclude: Iterable[int] = (), classes: Iterable[int] | None = None,
                     order: str = "sorted", sort_on_append: bool = True) -> dict[int, list[int]]:
    """The official per-class top-k leaderboards with overflow (FPL; CAP's initial D_PL).

    Images are visited in index order. An image joins the leaderboard of its predicted class if
    that has room or if it beats the weakest entry (which is then dropped, not re-assigned).
    Otherwise it is offered to every other class in decreasing probability and joins each one
    that has room or whose last entry it beats, so one image can land in several classes.
    ``exclude`` (labelled images) are skipped; ``classes`` restricts the leaderboards (TRZSL:
    the unseen classes), default all columns of ``probs``.

    As in the official code, an overflow entry is appended without re-sorting, so "the last
    entry" is not always the weakest one. Ties sort by index, higher first (the official code
    sorts (confidence, path) tuples in reverse). ``order="sorted"`` returns each list in descending
    confidence; ``"official"`` returns it as the official code leaves it (overflow entries appended
    unsorted), which decides the old entries a later refresh keeps (``refresh_dpl`` keeps a prefix).
    ``sort_on_append=False`` (Menghini's FPL, GRIP): the predicted class's board appends unsorted too.
    """
    if order not in LEADERBOARD_ORDERS:
        raise UnknownNameError("leaderboard order", order, LEADERBOARD_ORDERS)
    probs = np.asarray(probs, dtype=np.float64)
    check_int("k", k, 1)
    n_columns = probs.shape[1] if probs.ndim == 2 else 0
    boards: dict[int, list[tuple[float, int]]] = {
        int(c): [] for c in (range(n_columns) if classes is None else classes)
    }
    # Per column: whether it has a board, its length and its last entry's score, so an overflow
    # image finds every board it joins in one vector comparison. Boards are independent (an image
    # joins each at most once), so visiting them in index order gives what the official
    # visit in decreasing probability gives.
    has_board = np.zeros(n_columns, dtype=bool)
    has_board[[c for c in boards if 0 <= c < n_columns]] = True
    length = np.zeros(n_columns, dtype=np.int64)
    last = np.full(n_columns, -np.inf)
    skip = set(int(i) for i in exclude)
    for i, p in enumerate(probs):
        if i in skip:
            continue
        pred = int(p.argmax())
        board = boards.get(pred)
        if board is not None and (len(board) < k or board[-1][0] < p[pred]):
            joined = [pred]
            if len(board) < k and not sort_on_append:
                board.append((p[pred], i))
            else:
                boards[pred] = sorted(board + [(p[pred], i)], reverse=True)[:k]
        else:
            eligible = has_board & ((length < k) | (last < p))
            eligible[pred] = False
            joined = np.flatnonzero(eligible).tolist()
            for j in joined:
                other = boards[j]
                if len(other) < k:
                    other.append((p[j], i))  # appended unsorted, as the official code does
                else:
                    boards[j] = sorted(other + [(p[j], i)], reverse=True)[:k]
        for j in joined:
            length[j], last[j] = len(boards[j]), boards[j][-1][0]
    arrange = (lambda board: sorted(board, reverse=True)) if order == "sorted" else list
    return {c: [i for _, i in arrange(board)] for c, board in boards.items()}


def dpl_size(epoch: int, k: int, unlabelled_per_class: int, epochs: int = 50, max_ratio: float = 0.8) -> int:
    """k_e, the size of each class's D_PL after the refresh at ``epoch`` (official ``update_main_samples``):
    k + ⌊(min(1000, ⌊unlabelled_per_class · max_ratio⌋) − k) · min(1, epoch / (0.7 · epochs))⌋."""
    target = min(1000, int(unlabelled_per_class * max_ratio))
    return k + int((target - k) * min(1.0, epoch / (epochs * 0.7)))


def confident_leaderboard(
    predictions: np.ndarray, confidences: np.ndarray, indices: np.ndarray, classes: Iterable[int],
    current: Iterable[int] = (), cap: int = 1000,
) -> dict[int, list[int]]:
    """New per-class candidates from one epoch's confident draws (official ``compute_top_k_leaderboard``).

    Draws of images already in D_PL (``current``) or predicted as a class outside ``classes`` are
    dropped; per class, draws are sorted by confidence (descending; repeats of an image kept);
    classes are walked in index order and each image goes only to the first class that takes it,
    at most ``cap`` per class.
    """
    classes = sorted(int(c) for c in classes)
    in_dpl = set(int(i) for i in current)
    per_class: dict[int, list[tuple[float, int]]] = {c: [] for c in classes}
    for pred, conf, index in zip(predictions.tolist(), confidences.tolist(), indices.tolist()):
        if index not in in_dpl and pred in per_class:
            per_class[pred].append((conf, index))
    taken: set[int] = set()
    board: dict[int, list[int]] = {c: [] for c in classes}
    for c in classes:
        for _, index in sorted(per_class[c], reverse=True):
            if index not in taken:
                board[c].append(index)
                taken.add(index)
                if len(board[c]) >= cap:
                    break
    return board


def refresh_dpl(old: dict[int, list[int]], new: dict[int, list[int]], k: int) -> dict[int, list[int]]:
    """Per class: the first k of the new leaderboard, then old D_PL entries up to k (new first)."""
    out = {}
    for c, old_list in old.items():
        fresh = new.get(c, [])[:k]
        out[c] = fresh + old_list[: max(0, k - len(fresh))]
    return out


BUDGET_ROUNDINGS = ("exact", "official")


def grip_budget(iteration: int, n_unlabelled: int, n_classes: int, n_iterations: int = 10,
                rounding: str = "exact") -> int:
    """K_i, GRIP/CPL's per-class pseudolabel budget at ``iteration`` (1-based), capped at ⌊|U| / C⌋:
    ``"exact"`` ⌊i · |U| / (I · C)⌋; ``"official"`` ⌊i · ⌊|U| / I⌋ / C⌋, as the official
    ``grip_train`` rounds the per-round sample count first (they differ when I does not divide |U|)."""
    check_int("iteration", iteration, 1)
    check_int("n_unlabelled", n_unlabelled, 0)
    check_int("n_classes", n_classes, 1)
    check_int("n_iterations", n_iterations, 1)
    if rounding not in BUDGET_ROUNDINGS:
        raise UnknownNameError("budget rounding", rounding, BUDGET_ROUNDINGS)
    if rounding == "official":
        return min(iteration * (n_unlabelled // n_iterations) // n_classes, n_unlabelled // n_classes)
    return min(iteration * n_unlabelled // (n_iterations * n_classes), n_unlabelled // n_classes)


def cpl_pool_caps(previous_fills, budget: int) -> list[int]:
    """The official CPL pool capacities of a round (``select_topk_for_eachcls``): each class's pool
    grows from what it held the round before by K_i − (the largest previous fill), at most K_i, so
    a class that filled short stays short."""
    check_int("budget", budget, 0)
    fills = [int(f) for f in previous_fills]
    increment = budget - max(fills, default=0)
    if increment < 0:
        raise ParameterError(f"budget {budget} is below a previous fill {max(fills)}: budgets only grow")
    return [min(f + increment, budget) for f in fills]


def cpl_candidates(probs, alpha: float, beta: float) -> np.ndarray:
    """CPL candidate label sets (N×C booleans): intra-instance ∩ inter-instance.

    Intra: with conf_thr = the α-quantile of the images' top probabilities, keep each image's
    classes in decreasing probability until the cumulative sum exceeds conf_thr (the crossing class
    included; the top class always). Inter: keep image i for class c if P[i, c] is at least the
    β-quantile of column c. Quantiles interpolate linearly (as torch.quantile). Rows may be empty.
    """
    probs = np.asarray(probs, dtype=np.float64)
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not 0.0 <= value <= 1.0:
            raise ParameterError(f"{name} must lie in [0, 1], got {value}")
    conf_thr = np.quantile(probs.max(1), alpha)
    order = np.argsort(-probs, axis=1, kind="stable")
    sorted_probs = np.take_along_axis(probs, order, axis=1)
    cumulative = np.cumsum(sorted_probs, axis=1)
    before = np.concatenate([np.zeros((len(probs), 1)), cumulative[:, :-1]], axis=1)
    keep_sorted = before <= conf_thr  # everything up to and including the crossing class
    keep_sorted[:, 0] = True
    intra = np.zeros_like(keep_sorted)
    np.put_along_axis(intra, order, keep_sorted, axis=1)
    inter = probs >= np.quantile(probs, beta, axis=0)[None, :]
    return intra & inter


def balanced_selection(probs, candidates, capacity, classes: Iterable[int] | None = None) -> dict[int, list[int]]:
    """CPL's class-balanced selection: each class keeps at most ``capacity`` images (an int, or a
    mapping class -> capacity: the official pools of later rounds, :func:`cpl_pool_caps`).

    Images are offered to their candidate classes in decreasing probability; a full class keeps the
    most confident images and the one it pushes out moves on to its next candidate (deferred
    acceptance, which is what CPL's recursive pool filling computes). Returns lists in descending
    probability; images with no place left are not selected.
    """
    probs = np.asarray(probs, dtype=np.float64)
    candidates = np.asarray(candidates, dtype=bool)
    allowed = set(range(probs.shape[1])) if classes is None else set(int(c) for c in classes)
    per_class = not isinstance(capacity, (int, np.integer))
    caps = {c: check_int("capacity", int(capacity[c] if per_class else capacity), 0) for c in allowed}
    prefs = []
    for i in range(len(probs)):
        cands = [int(c) for c in np.flatnonzero(candidates[i]) if int(c) in allowed]
        prefs.append(sorted(cands, key=lambda c: (-probs[i, c], c)))
    pools: dict[int, list[int]] = {c: [] for c in sorted(allowed)}
    cursor = [0] * len(probs)
    queue = [i for i in range(len(probs)) if prefs[i]]
    while queue:
        i = queue.pop()
        while cursor[i] < len(prefs[i]):
            c = prefs[i][cursor[i]]
            cursor[i] += 1
            pool = pools[c]
            if len(pool) < caps[c]:
                pool.append(i)
                break
            if not pool:
                continue
            weakest = min(pool, key=lambda j: (probs[j, c], -j))
            if (probs[i, c], -i) > (probs[weakest, c], -weakest):
                pool.remove(weakest)
                pool.append(i)
                queue.append(weakest)
                break
    return {c: sorted(pool, key=lambda j: (-probs[j, c], j)) for c, pool in pools.items()}
