"""Concept-mismatch detection and concept alignment."""

import numpy as np
import pytest

from cap.core.concepts import align_concepts, choose_descriptions, cluster_centroids, find_mismatch
from cap.errors import ParameterError, UnknownNameError
from cap.sim import make_problem


def toy(n_per_class=10, seed=0):
    """Four tight image clusters; texts of classes 0-2 on their clusters, class 3's text on e4, away
    from every image. Class 3's images (around e3, leaning to e2) are predicted as class 2."""
    rng = np.random.default_rng(seed)
    eye = np.eye(6)
    labels = np.repeat(np.arange(4), n_per_class)
    centres = eye[:4].copy()
    centres[3] += 0.3 * eye[2]
    images = centres[labels] + 0.02 * rng.standard_normal((len(labels), 6))
    text = eye[[0, 1, 2, 4]]
    pred = (images @ text.T).argmax(1)
    return images, text, pred, labels


def test_the_class_whose_text_matches_no_cluster_is_mismatched():
    images, text, pred, _ = toy()
    assert np.bincount(pred, minlength=4)[3] == 0
    result = find_mismatch(images, text, pred)
    assert result.unmatched == [3] and result.least_predicted == [3]  # t = ceil(4/10) = 1
    assert result.mismatched == [3]
    assert sorted(c for c, _ in result.matches) == [0, 1, 2]
    assert find_mismatch(images, text, pred).mismatched == [3]


def test_warm_start_and_fresh_kmeans_agree_on_clean_clusters():
    images, text, pred, _ = toy()
    assert find_mismatch(images, text, pred, warm_start=False).mismatched == [3]


def test_well_predicted_leftover_class_is_not_mismatched():
    images, text, pred, _ = toy()
    # stop with two classes left: the intersection with the single least-predicted class keeps only 3
    result = find_mismatch(images, text, pred, stop_at=2)
    assert len(result.unmatched) == 2 and 3 in result.unmatched
    assert result.mismatched == sorted(set(result.unmatched) & set(result.least_predicted))


def test_detection_recovers_planted_classes_on_the_simulator():
    for preset, seed in (("flowers102", 0), ("dtd", 0)):
        p = make_problem(preset, seed)
        found = find_mismatch(p.train_features, p.text_features, p.zero_shot_predictions("train")).mismatched
        hits = set(found) & set(p.mismatched)
        assert len(hits) / len(found) >= 0.5 and len(hits) / len(p.mismatched) >= 0.5, (preset, found, p.mismatched)


def test_bad_shapes():
    images, text, pred, _ = toy()
    with pytest.raises(ParameterError, match="zero_shot_pred has 3 entries for 40 images"):
        find_mismatch(images, text, pred[:3])
    with pytest.raises(ParameterError, match="must be"):
        find_mismatch(images[:, :5], text, pred)


def test_cluster_centroids_find_the_clusters():
    images, _, _, _ = toy()
    centroids = cluster_centroids(images, 4)
    assert np.allclose(np.linalg.norm(centroids, axis=1), 1)
    assert sorted((centroids @ np.eye(6)[:4].T).argmax(1).tolist()) == [0, 1, 2, 3]


def test_choose_descriptions():
    images, _, _, _ = toy()
    eye = np.eye(6)
    candidates = {3: np.stack([eye[4], eye[3] + 0.1 * eye[0], eye[5]])}
    centroids = np.stack([eye[3]])
    assert choose_descriptions(candidates, centroids, "best_of_n") == {3: 1}
    # two unmatched clusters: the descriptions agree on e3 (mean closest to it); the poor one that
    # fits the other cluster (e1) exactly is not chosen
    candidates = {3: np.stack([eye[1], eye[3] + 0.3 * eye[1], eye[3] + 0.2 * eye[5], eye[3]])}
    assert choose_descriptions(candidates, np.stack([eye[1], eye[3]]), "best_of_n") == {3: 3}
    assert choose_descriptions(candidates, centroids, "first") == {3: 0}
    with pytest.raises(UnknownNameError, match="best_of_n, first"):
        choose_descriptions(candidates, centroids, "best")


def test_align_concepts_takes_the_top_k_images_by_description_similarity():
    images, _, _, labels = toy()
    aligned = align_concepts(images, {3: np.eye(6)[3]}, k=5)
    assert len(aligned[3]) == 5 and set(labels[aligned[3]]) == {3}
    unit = images / np.linalg.norm(images, axis=1, keepdims=True)
    scores = unit[aligned[3]] @ np.eye(6)[3]
    assert list(scores) == sorted(scores, reverse=True)
    assert len(align_concepts(images, {3: np.eye(6)[3]}, k=100)[3]) == 40  # k larger than the pool
