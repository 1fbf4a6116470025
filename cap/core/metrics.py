"""Accuracy and pseudolabel-balance metrics, defined once for the library and the book."""

from __future__ import annotations

import numpy as np

from cap.errors import ParameterError


def _as_counts(counts) -> np.ndarray:
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 1 or counts.size == 0 or (counts < 0).any():
        raise ParameterError(f"counts must be a non-empty 1-D array of non-negative numbers, got {counts!r}")
    return counts


def class_counts(labels, n_classes: int) -> np.ndarray:
    """How often each class index occurs in ``labels``."""
    return np.bincount(np.asarray(labels, dtype=int), minlength=n_classes)[:n_classes]


def per_class_accuracy(pred, labels, n_classes: int) -> np.ndarray:
    """Recall of each class in percent; NaN for a class with no samples."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    hits = np.bincount(labels[pred == labels], minlength=n_classes).astype(float)
    totals = class_counts(labels, n_classes).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 100 * hits / totals, np.nan)


def imbalance_ratio(counts) -> float:
    """max / min of the predicted-class counts. A never-predicted class counts as predicted once,
    so the ratio stays finite (it then equals the largest count)."""
    counts = _as_counts(counts)
    return float(counts.max() / max(counts.min(), 1.0))


def normalized_entropy(counts) -> float:
    """Entropy of the predicted-class distribution divided by log C: 1 = perfectly balanced,
    0 = everything predicted as one class."""
    counts = _as_counts(counts)
    if counts.size == 1 or counts.sum() == 0:
        return 0.0
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(counts.size))


def under_predicted_share(pred_counts, true_counts, factor: float = 0.5) -> float:
    """Share of classes (among those that occur) predicted fewer than ``factor`` times as often as they occur."""
    pred_counts, true_counts = _as_counts(pred_counts), _as_counts(true_counts)
    if pred_counts.shape != true_counts.shape:
        raise ParameterError(f"pred_counts {pred_counts.shape} and true_counts {true_counts.shape} differ in shape")
    present = true_counts > 0
    if not present.any():
        raise ParameterError("true_counts has no class that occurs")
    return float((pred_counts[present] < factor * true_counts[present]).mean())


def balance_metrics(pred, labels, n_classes: int) -> dict[str, float]:
    """The three balance numbers the book reports for a set of predictions (pseudolabels)."""
    predicted, true = class_counts(pred, n_classes), class_counts(labels, n_classes)
    return {
        "imbalance_ratio": imbalance_ratio(predicted),
        "normalized_entropy": normalized_entropy(predicted),
        "under_predicted_share": under_predicted_share(predicted, true),
    }


def harmonic_mean(seen: float, unseen: float) -> float:
    """2·seen·unseen / (seen + unseen), the TRZSL metric; 0 when both are 0."""
    if seen < 0 or unseen < 0:
        raise ParameterError(f"accuracies must be non-negative, got seen={seen}, unseen={unseen}")
    return 0.0 if seen + unseen == 0 else 2 * seen * unseen / (seen + unseen)


def paradigm_scores(pred, labels, seen=None) -> dict[str, float]:
    """Accuracy in percent: ``top1``; with ``seen`` (TRZSL's seen classes) also ``seen`` and ``unseen``
    (over test images whose true class is seen / unseen, prediction over all classes) and their
    ``harmonic_mean``. An empty group is an error: its accuracy is undefined."""
    pred, labels = np.asarray(pred), np.asarray(labels)

    def accuracy(mask: np.ndarray, images: str) -> float:
        if not mask.any():
            raise ParameterError(f"there are no {images}: their accuracy is undefined")
        return float(100.0 * (pred[mask] == labels[mask]).mean())

    scores = {"top1": accuracy(np.ones(labels.shape, dtype=bool), "test images")}
    if seen is not None:
        is_seen = np.isin(labels, seen)
        scores["seen"] = accuracy(is_seen, "test images of seen classes")
        scores["unseen"] = accuracy(~is_seen, "test images of unseen classes")
        scores["harmonic_mean"] = harmonic_mean(scores["seen"], scores["unseen"])
    return scores


def dominant_cluster(clusters, labels, cls: int) -> tuple[int, float, float]:
    """The cluster holding most images of class ``cls``: (cluster id, purity, coverage).

    purity = share of that cluster's images that belong to ``cls``;
    coverage = share of the class's images that fall in that cluster.
    """
    clusters, labels = np.asarray(clusters), np.asarray(labels)
    members = clusters[labels == cls]
    if members.size == 0:
        raise ParameterError(f"class {cls} has no images")
    ids, counts = np.unique(members, return_counts=True)
    best = int(ids[counts.argmax()])
    in_best = clusters == best
    return best, float((labels[in_best] == cls).mean()), float(counts.max() / members.size)


def expected_calibration_error(confidence, correct, n_bins: int = 15) -> float:
    """ECE in percent: Σ_b (|B_b| / N) · |accuracy(B_b) − mean confidence(B_b)| over ``n_bins``
    equal-width confidence bins ((0, 1/n], (1/n, 2/n], …, ((n−1)/n, 1])."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=bool)
    if confidence.shape != correct.shape or confidence.ndim != 1 or confidence.size == 0:
        raise ParameterError(f"confidence {confidence.shape} and correct {correct.shape} must be equal-length, non-empty 1-D")
    if (confidence < 0).any() or (confidence > 1).any():
        raise ParameterError("confidences must lie in [0, 1]")
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    gap = 0.0
    for b in np.unique(bins):
        members = bins == b
        gap += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return float(100.0 * gap / confidence.size)


def confusion_groups(labels, pred, n_classes: int, n_groups: int | None = None, confidence=None,
                     names=None) -> list[tuple[int, int]]:
    """Confusion groups: the ``n_groups`` class pairs {a, b} (default ⌈C/10⌉) with the largest
    one-way confusion rate, the share of class a's images predicted as b (a ≠ b), each pair once,
    as (a, b) with a the class whose images are lost. Pass zero-shot predictions: the groups are
    the confusions CLIP starts with, the ones the calibrated margin is meant to undo.

    Ties (frequent with few test images per class) are broken without looking at class indices:
    first by the mean ``confidence`` of the a → b predictions (the surer confusion first), then by
    the class ``names`` (a's, then b's, alphabetically); without names, by index."""
    labels, pred = np.asarray(labels, dtype=int), np.asarray(pred, dtype=int)
    n_groups = int(np.ceil(n_classes / 10)) if n_groups is None else n_groups
    confusion = np.zeros((n_classes, n_classes))
    np.add.at(confusion, (labels, pred), 1.0)
    totals = confusion.sum(1, keepdims=True)
    rate = np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)
    np.fill_diagonal(rate, 0.0)
    sure = np.zeros_like(confusion)
    if confidence is not None:
        np.add.at(sure, (labels, pred), np.asarray(confidence, dtype=float))
        sure = np.divide(sure, confusion, out=np.zeros_like(sure), where=confusion > 0)
    names = [str(c) for c in range(n_classes)] if names is None else [str(n) for n in names]
    candidates = [(a, b) for a, b in zip(*np.nonzero(rate > 0))]
    candidates.sort(key=lambda ab: (-rate[ab], -sure[ab], names[ab[0]], names[ab[1]]))
    groups, taken = [], set()
    for a, b in candidates:
        if len(groups) == n_groups:
            break
        if frozenset((a, b)) not in taken:
            taken.add(frozenset((a, b)))
            groups.append((int(a), int(b)))
    return groups


def pair_scores(labels, pred, confidence, victim: int, attractor: int, n_bins: int = 15) -> dict[str, float]:
    """A known confusion pair (the simulator's planted ones: the text of ``attractor`` drifts toward
    the images of ``victim``): the victim's accuracy, the share of its images predicted as the
    attractor, and the local accuracy and ECE of the pair as a group (:func:`group_scores`); in percent."""
    labels, pred = np.asarray(labels), np.asarray(pred)
    own = labels == victim
    if not own.any():
        raise ParameterError(f"no test image belongs to the victim class {victim}")
    return {"victim_accuracy": float(100.0 * (pred[own] == victim).mean()),
            "victim_to_attractor": float(100.0 * (pred[own] == attractor).mean()),
            **group_scores(labels, pred, confidence, (victim, attractor), n_bins)}


def group_scores(labels, pred, confidence, group, n_bins: int = 15) -> dict[str, float]:
    """Local accuracy and local ECE (both in percent) of a confusion group: over the test images
    whose true class is in ``group``, with predictions over all classes."""
    labels, pred = np.asarray(labels), np.asarray(pred)
    members = np.isin(labels, list(group))
    if not members.any():
        raise ParameterError(f"no test image belongs to the classes {list(group)}")
    correct = pred[members] == labels[members]
    return {"accuracy": float(100.0 * correct.mean()),
            "ece": expected_calibration_error(np.asarray(confidence)[members], correct, n_bins)}
