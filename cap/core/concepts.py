"""Concept-mismatch detection and concept alignment (CAP §3.1)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from sklearn.cluster import KMeans

from cap.errors import ParameterError, UnknownNameError
from cap.core.numeric import memoised, softmax
from cap.core.numeric import unit as _unit


@dataclass(frozen=True)
class MismatchResult:
    """Everything the detection found, for records and for choosing descriptions."""

    mismatched: list[int]  # Y_MM = Y_final ∩ Y_low-t, sorted
    unmatched: list[int]  # Y_final: classes never matched to a cluster, sorted
    least_predicted: list[int]  # Y_low-t: the t classes with the fewest zero-shot predictions, sorted
    matches: list[tuple[int, int]] = field(default_factory=list)  # (class, round) in matching order


def find_mismatch(image_features, text_features, zero_shot_pred, logit_scale: float = 100.0, seed: int = 0,
                  stop_at: int | None = None, warm_start: bool = True) -> MismatchResult:
    """The paper's iterative matching of K-means clusters to class texts.

    While more than t = ⌈C/10⌉ classes remain (``stop_at`` overrides t): cluster the remaining
    images into as many clusters as classes remain; P = softmax over clusters of
    logit_scale · cos(text_i, centroid_j); the most confident (class, cluster) pair is matched and
    both are removed (the class, and the cluster's images). The classes left over, intersected
    with the t least-predicted classes under zero-shot prediction, are concept-mismatched.

    ``warm_start`` starts each round's K-means from the previous round's centroids minus the
    matched one (tens of times faster on 100+ classes); False runs k-means++ afresh every round.
    The result is memoised on the inputs.
    """
    return memoised("find_mismatch", lambda: _find_mismatch(image_features, text_features, zero_shot_pred,
                                                             logit_scale, seed, stop_at, warm_start),
                     np.asarray(image_features), np.asarray(text_features), np.asarray(zero_shot_pred),
                     logit_scale=logit_scale, seed=seed, stop_at=stop_at, warm_start=warm_start)


def _find_mismatch(image_features, text_features, zero_shot_pred, logit_scale, seed, stop_at, warm_start) -> MismatchResult:
    image = _unit(np.asarray(image_features, dtype=np.float32))
    text = _unit(np.asarray(text_features, dtype=np.float32))
    pred = np.asarray(zero_shot_pred)
    n_classes = len(text)
    if image.ndim != 2 or text.ndim != 2 or image.shape[1] != text.shape[1]:
        raise ParameterError(f"image features {image.shape} and text features {text.shape} must be (N, d) and (C, d)")
    if len(pred) != len(image):
        raise ParameterError(f"zero_shot_pred has {len(pred)} entries for {len(image)} images")
    t = math.ceil(n_classes / 10) if stop_at is None else stop_at

    remaining = list(range(n_classes))
    images = np.arange(len(image))
    matches: list[tuple[int, int]] = []
    round_ = 0
    init: np.ndarray | str = "k-means++"
    while len(remaining) > t and len(images) >= len(remaining):
        kmeans = KMeans(n_clusters=len(remaining), init=init, random_state=seed, n_init=1).fit(image[images])
        centroids = _unit(kmeans.cluster_centers_)
        p = softmax(logit_scale * text[remaining] @ centroids.T, axis=1)
        i, j = np.unravel_index(np.argmax(p), p.shape)
        matches.append((remaining[i], round_))
        del remaining[i]
        images = images[kmeans.labels_ != j]
        if warm_start:  # the surviving centroids start the next, one-smaller clustering
            init = np.delete(kmeans.cluster_centers_, j, axis=0)
        round_ += 1

    counts = np.bincount(pred, minlength=n_classes)
    least = sorted(np.argsort(counts, kind="stable")[:t].tolist())
    mismatched = sorted(set(remaining) & set(least))
    return MismatchResult(mismatched, sorted(remaining), least, matches)


DESCRIPTION_CHOICES = ("best_of_n", "first")


def cluster_centroids(image_features, n_clusters: int, seed: int = 0) -> np.ndarray:
    """Normalised K-means centroids of ``image_features`` (one cluster per class); memoised."""
    image = _unit(np.asarray(image_features, dtype=np.float32))
    centroids = memoised("cluster_centroids", lambda: _unit(KMeans(n_clusters=n_clusters, random_state=seed,
                                                                     n_init=1).fit(image).cluster_centers_),
                          image, n_clusters=n_clusters, seed=seed)
    return centroids.copy()


def choose_descriptions(descriptions: dict[int, np.ndarray], centroids: np.ndarray | None, choice: str = "best_of_n") -> dict[int, int]:
    """Index of the description used for each class.

    ``"best_of_n"`` (paper): the description most similar to the class's image cluster. Which
    cluster that is, the paper does not say; here it is, among ``centroids`` (a clustering of the
    unlabelled images, :func:`cluster_centroids`), the one closest to the mean of the class's
    descriptions (the cluster they agree on), so a poor description that happens to fit another
    class's cluster is not picked.
    ``"first"`` (official code, one fixed description per class): the first one.
    """
    if choice not in DESCRIPTION_CHOICES:
        raise UnknownNameError("description choice", choice, DESCRIPTION_CHOICES)
    chosen = {}
    for c, candidates in descriptions.items():
        if choice == "first" or centroids is None or len(centroids) == 0:
            chosen[c] = 0
            continue
        candidates, clusters = _unit(np.asarray(candidates)), _unit(np.asarray(centroids))
        own = clusters[int(np.argmax(clusters @ _unit(candidates.mean(0))))]
        chosen[c] = int(np.argmax(candidates @ own))
    return chosen


def align_concepts(image_features, description_features: dict[int, np.ndarray], k: int,
                   logit_scale: float = 100.0) -> dict[int, list[int]]:
    """Concept alignment: for each class, the top-k images by logit_scale · cos(description, image).

    As in the official code, every image in ``image_features`` is eligible (labelled ones too) and
    the result replaces that class's initial pseudolabels without removing the images elsewhere.
    Lists in descending similarity."""
    image = _unit(np.asarray(image_features, dtype=np.float64))
    out = {}
    for c, description in description_features.items():
        scores = logit_scale * image @ _unit(np.asarray(description, dtype=np.float64))
        out[int(c)] = np.argsort(-scores, kind="stable")[:k].tolist()
    return out
