"""Setup shared by the methods: zero-shot probabilities and the initial pseudolabels."""

from __future__ import annotations

import numpy as np

from cap.config import RunConfig
from cap.numeric import memoised, softmax
from cap.pseudolabels import leaderboard_topk


def zero_shot_probs(source, config: RunConfig) -> np.ndarray:
    """(N_train, C) zero-shot probabilities of the frozen model.

    TRZSL with ``trzsl_probs_over="unseen"`` takes the softmax over the unseen classes only (the
    Menghini/CPL convention; seen columns are 0). The default "all" is what the official CAP code
    effectively used (a cache built over all classes); its indexing crash is not reproduced.
    """
    return pseudolabel_probs(source.logit_scale * source.zero_shot_image @ source.zero_shot_text.T, source, config)


def pseudolabel_probs(logits: np.ndarray, source, config: RunConfig) -> np.ndarray:
    """Softmax of ``logits`` over all classes, or (TRZSL, ``trzsl_probs_over="unseen"``) over the
    unseen classes only, seen columns 0."""
    if config.paradigm == "trzsl" and config.trzsl_probs_over == "unseen":
        unseen = source.split.unseen
        probs = np.zeros_like(logits)
        probs[:, unseen] = softmax(logits[:, unseen])
        return probs
    return softmax(logits)


def initial_pseudolabels(probs: np.ndarray, unlabelled, classes, k: int) -> dict[int, list[int]]:
    """FPL/CAP top-k leaderboards over the unlabelled pool, as indices into the training pool."""
    unlabelled = np.asarray(unlabelled)
    board = memoised("leaderboard_topk", lambda: leaderboard_topk(probs[unlabelled], k, classes=classes),
                     probs, unlabelled, np.asarray(classes), k=k)
    return {c: unlabelled[rows].tolist() for c, rows in board.items()}


def flatten(board: dict[int, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(indices, labels) of a per-class board; an image in two classes appears twice."""
    index = [i for c in sorted(board) for i in board[c]]
    label = [c for c in sorted(board) for _ in board[c]]
    return np.asarray(index, dtype=np.int64), np.asarray(label, dtype=np.int64)


def board_accuracy(board: dict[int, list[int]], true_labels: np.ndarray) -> dict:
    """Pseudolabel accuracy overall and per class (true labels used for logging only)."""
    index, label = flatten(board)
    per_class = {c: (float((true_labels[np.asarray(v, dtype=int)] == c).mean() * 100) if v else None)
                 for c, v in board.items()}
    return {
        "size": int(len(index)),
        "accuracy": float((true_labels[index] == label).mean() * 100) if len(index) else None,
        "per_class_accuracy": per_class,
        "per_class_count": {c: len(v) for c, v in board.items()},
    }
