"""The concept simulator: CLIP-like features with planted concept mismatch and confusion.

Image features of each class form a cluster on the unit sphere. Classes come in families of near
neighbours (as in fine-grained datasets), and all image features share a common offset, as do all
text features (the modality gap). The text feature of a class points at its image cluster, up to a
text error made of its neighbours' directions; the error's size is calibrated so that zero-shot
top-1 matches CLIP ViT-B/32 on the mirrored dataset, and the logit scale is calibrated so that its
zero-shot confidence is as (mis)calibrated as CLIP's is published to be. On top of that, two
planted faults:

* concept mismatch: the class text points almost entirely away from every image, so the class
  is (almost) never predicted and its images are spread over other classes;
* concept confusion (a, b): the text of a drifts toward the images of b, so b is predicted as a.

Every class also gets candidate descriptions (text vectors), the simulated counterpart of LLM
descriptions, of three kinds drawn at random: paraphrases of the class name (no better than it),
descriptions leaning toward a sibling class (misleading), and informative ones that move part of
the way from the class name toward the class's images. None is exact, and a class may have no
informative one, so concept alignment can fail.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from cap.core.metrics import expected_calibration_error
from cap.core.numeric import unit as _unit
from cap.data.registry import get_dataset
from cap.errors import check_int
from cap.sim.presets import SimConfig, preset_config
from cap.sim.problem import SimProblem

log = logging.getLogger(__name__)


def make_problem(preset: str, seed: int = 0, **overrides) -> SimProblem:
    """Generate the simulated problem of ``preset`` (a dataset name); same seed, same arrays.

    ``overrides`` replace fields of :class:`SimConfig`, e.g. ``n_train_per_class=10``.
    """
    config = preset_config(preset, **overrides)
    check_int("seed", seed, 0)
    info = get_dataset(config.preset)
    classes = class_subset(info.n_classes, info.official_mismatched_indices, config.n_classes)
    position = {c: i for i, c in enumerate(classes)}
    mismatched = [position[c] for c in info.official_mismatched_indices if c in position]
    return generate(config, seed, [info.classnames[c] for c in classes], mismatched)


def class_subset(n_total: int, mismatched: list[int], n: int | None) -> list[int]:
    """The classes (indices, sorted) of a problem with ``n`` of a preset's ``n_total`` classes: the
    mismatched classes keep their share (the first share × n of them, rounded half up), the other
    places go to the first classes in class order. ``None``: every class."""
    if n is None or n == n_total:
        return list(range(n_total))
    keep = sorted(mismatched)[:math.floor(len(mismatched) * n / n_total + 0.5)]
    others = [c for c in range(n_total) if c not in set(mismatched)][:n - len(keep)]
    return sorted(keep + others)


def generate(config: SimConfig, seed: int, classnames: list[str], mismatched: list[int]) -> SimProblem:
    """The generator, step by step; the steps draw from one random stream in this order."""
    rng = np.random.default_rng(seed)
    geometry = class_means(rng, len(classnames), config)
    text_error = text_errors(rng, geometry, config)
    pairs, text_drift = planted_confusion(rng, geometry, mismatched, config)
    away = planted_mismatch(rng, geometry)
    draw_images = image_sampler(rng, geometry, config)
    train_x, train_y = draw_images(config.n_train_per_class)
    test_x, test_y = draw_images(config.n_test_per_class)

    def name_directions(noise: float) -> np.ndarray:
        """What each class name says, before the text offset: its image direction, the text error,
        planted drift and mismatch."""
        t = _unit(geometry.means + noise * text_error + text_drift)
        rho = config.mismatch_alignment
        t[mismatched] = _unit(rho * t[mismatched] + np.sqrt(1 - rho**2) * away[mismatched])
        return t

    def class_texts(noise: float) -> np.ndarray:
        return _unit(config.text_gap * geometry.text_offset + name_directions(noise))

    noise = config.text_noise
    if config.target_zero_shot is not None:
        noise = _calibrate(class_texts, train_x, train_y, config.target_zero_shot / 100)
    desc = descriptions(rng, geometry, config, name_directions(noise))
    scale = config.logit_scale
    if config.target_zero_shot_ece is not None:
        scale = _calibrate_scale(train_x @ class_texts(noise).T, train_y, config)
    return SimProblem(
        config=config, seed=seed, classnames=classnames,
        train_features=train_x, train_labels=train_y, test_features=test_x, test_labels=test_y,
        text_features=class_texts(noise).astype(np.float32), descriptions=desc.features,
        description_quality=desc.quality, description_kinds=desc.kinds,
        mismatched=sorted(mismatched), confusion_pairs=pairs, families=geometry.families,
        class_means=geometry.means.astype(np.float32), calibrated_text_noise=float(noise), logit_scale=float(scale),
    )


class Geometry:
    """The shared structure every step builds on: modality offsets, families and class directions."""

    def __init__(self, rng, n_classes: int, config: SimConfig):
        self.rng, self.n_classes, self.dim = rng, n_classes, config.dim
        self.image_offset, self.text_offset = self.directions(2)
        a = config.modality_alignment
        if a:  # the text offset leans toward the image offset: image–text cosines share a constant part
            other = _unit(self.text_offset - (self.text_offset @ self.image_offset) * self.image_offset)
            self.text_offset = a * self.image_offset + np.sqrt(1 - a**2) * other
        n_families = max(1, round(n_classes / config.family_size))
        self.families = rng.permutation(np.arange(n_classes) % n_families)
        wf = config.family_weight
        self.means = _unit(np.sqrt(wf) * self.directions(n_families)[self.families]
                           + np.sqrt(1 - wf) * self.directions(n_classes))
        # An orthonormal basis of everything an image can look like (class directions and the offset).
        self.image_basis = np.linalg.qr(np.vstack([self.means, self.image_offset]).T)[0]

    def directions(self, *shape: int) -> np.ndarray:
        return _unit(self.rng.standard_normal((*shape, self.dim)))

    def away_from_images(self, n: int) -> np.ndarray:
        """``n`` random unit directions orthogonal to every class direction and the image offset."""
        v = self.directions(n)
        return _unit(v - (v @ self.image_basis) @ self.image_basis.T)


def class_means(rng, n_classes: int, config: SimConfig) -> Geometry:
    """Class image directions in families of near neighbours (``family_weight`` of a shared family
    direction), and the image and text offsets (the modality gap)."""
    return Geometry(rng, n_classes, config)


def text_errors(rng, g: Geometry, config: SimConfig) -> np.ndarray:
    """Per class: part a random mix of the other classes' directions (mostly its family's: the text
    leans toward neighbours), part a direction no image has (the text is vaguer), with a per-class
    size, so some classes' texts fit their images better than others'."""
    C = g.n_classes
    same_family = g.families[:, None] == g.families[None, :]
    mix = rng.standard_normal((C, C)) * np.where(same_family, 1.0, 0.3)
    np.fill_diagonal(mix, 0.0)
    vague = g.away_from_images(C)
    w = config.text_error_mix
    size = np.exp(config.text_noise_spread * rng.standard_normal(C))[:, None]
    return size * (np.sqrt(w) * _unit(mix @ g.means) + np.sqrt(1 - w) * vague)


def planted_confusion(rng, g: Geometry, mismatched: list[int], config: SimConfig):
    """Concept confusion: disjoint pairs (a, b) whose text of a drifts toward b's images
    (``confusion_strength`` times b's direction). Returns (pairs, per-class text drift)."""
    pairs = _confusion_pairs(rng, g.families, mismatched, config.confusion_fraction)
    drift = np.zeros((g.n_classes, g.dim))
    for a, b in pairs:
        drift[a] = config.confusion_strength * g.means[b]
    return pairs, drift


def planted_mismatch(rng, g: Geometry) -> np.ndarray:
    """Where mismatched texts point: orthogonal to every class direction and the image offset, so
    no image looks like them (one direction per class; only the mismatched classes use theirs)."""
    return g.away_from_images(g.n_classes)


def image_sampler(rng, g: Geometry, config: SimConfig):
    """A function drawing ``n`` images per class: the class direction plus the image offset plus
    noise in a low-rank subspace; ``hard_fraction`` of the images sit between their class and a
    sibling (past halfway they look like the sibling)."""
    C = g.n_classes
    noise_basis = np.linalg.qr(rng.standard_normal((g.dim, min(config.noise_rank, g.dim))))[0].T

    def sibling(c: int) -> int:
        pool = np.flatnonzero((g.families == g.families[c]) & (np.arange(C) != c))
        return int(rng.choice(pool)) if len(pool) else int(rng.choice(np.delete(np.arange(C), c)))

    def images(n_per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(C), n_per_class)
        centres = g.means[labels]
        hard = np.flatnonzero(rng.random(len(labels)) < config.hard_fraction)
        pull = rng.uniform(0.2, 0.8, len(hard))[:, None]
        siblings = np.array([sibling(c) for c in labels[hard]], dtype=int).reshape(-1)
        centres[hard] = (1 - pull) * centres[hard] + pull * g.means[siblings]
        noise = rng.standard_normal((len(labels), len(noise_basis))) @ noise_basis / np.sqrt(len(noise_basis))
        x = config.image_gap * g.image_offset + centres + config.image_noise * noise
        return _unit(x).astype(np.float32), labels

    return images


DESCRIPTION_KINDS = ("vague", "sibling", "informative")


@dataclass(frozen=True)
class Descriptions:
    features: np.ndarray  # (C, n, d) unit text features, with the text offset
    kinds: np.ndarray  # (C, n) index into DESCRIPTION_KINDS
    quality: np.ndarray  # (C, n) cosine of the description (before the text offset) with the class's image direction


def descriptions(rng, g: Geometry, config: SimConfig, names: np.ndarray) -> Descriptions:
    """Candidate descriptions of every class (the simulated LLM descriptions), built from what the
    class name says (``names``: unit directions before the text offset) so that a description is
    only as good as its content:

    * vague: the name plus wording noise (fits the images no better than the name);
    * sibling: the name leaning a share s of the way toward a sibling class's image direction;
    * informative: the name moved a share s of the way toward the class's own image direction;

    s uniform in ``description_shift``; every description gets wording noise of size
    ``description_paraphrase`` (a random direction). The kind of each candidate is drawn with the
    preset's probabilities, so no candidate is exact and some classes have no informative one."""
    C, n = g.n_classes, config.n_descriptions
    p = [config.description_vague, config.description_sibling, config.description_informative]
    kinds = rng.choice(len(DESCRIPTION_KINDS), size=(C, n), p=p)
    shift = rng.uniform(*config.description_shift, size=(C, n, 1))
    siblings = np.array([[_sibling(rng, g.families, c) for _ in range(n)] for c in range(C)])
    target = np.where((kinds == DESCRIPTION_KINDS.index("sibling"))[..., None], g.means[siblings], g.means[:, None])
    moved = np.where((kinds == DESCRIPTION_KINDS.index("vague"))[..., None], 0.0, shift)
    content = _unit((1 - moved) * names[:, None] + moved * target + config.description_paraphrase * g.directions(C, n))
    quality = np.einsum("cnd,cd->cn", content, g.means)
    features = _unit(config.text_gap * g.text_offset + content).astype(np.float32)
    return Descriptions(features, kinds, quality)


def _sibling(rng, families: np.ndarray, c: int) -> int:
    """A random other class of ``c``'s family (any other class when it has none)."""
    pool = np.flatnonzero((families == families[c]) & (np.arange(len(families)) != c))
    if not len(pool):
        pool = np.delete(np.arange(len(families)), c)
    return int(rng.choice(pool))


def _confusion_pairs(rng, families: np.ndarray, mismatched: list[int], fraction: float) -> list[tuple[int, int]]:
    """Disjoint (a, b) pairs of non-mismatched classes, preferably from one family."""
    n_pairs = int(round(fraction * len(families) / 2))
    free = [c for c in rng.permutation(len(families)) if c not in set(mismatched)]
    pairs: list[tuple[int, int]] = []
    while len(pairs) < n_pairs and len(free) >= 2:
        a = free.pop(0)
        siblings = [c for c in free if families[c] == families[a]]
        b = siblings[0] if siblings else free[0]
        free.remove(b)
        pairs.append((int(a), int(b)))
    return sorted(pairs)


def _calibrate(class_texts, features: np.ndarray, labels: np.ndarray, target: float) -> float:
    """Text-noise size whose zero-shot accuracy on ``features`` is closest to ``target``."""

    def accuracy(noise: float) -> float:
        return float(((features @ class_texts(noise).T.astype(np.float32)).argmax(1) == labels).mean())

    low, high = 0.0, 1.0
    while accuracy(high) > target and high < 64:
        low, high = high, high * 2
    for _ in range(30):  # accuracy falls as the noise grows
        mid = (low + high) / 2
        low, high = (mid, high) if accuracy(mid) > target else (low, mid)
    best = min((low, high), key=lambda n: abs(accuracy(n) - target))
    if abs(accuracy(best) - target) > 0.02:
        log.warning("zero-shot accuracy %.1f%% is the closest reachable to the target %.1f%%",
                    accuracy(best) * 100, target * 100)
    return best


def _calibrate_scale(cosines: np.ndarray, labels: np.ndarray, config: SimConfig) -> float:
    """The logit scale whose zero-shot ECE (15 bins, percent) on images with these class-text
    ``cosines`` is closest to ``config.target_zero_shot_ece``, at most ``config.logit_scale``.

    Confidence rises with the scale while predictions stay. Below the scale where mean confidence
    meets accuracy the model is underconfident; above it the ECE grows with the scale, so the search
    stays above it (zero-shot CLIP is overconfident) and stops there, at the lowest ECE, when the
    target lies below."""
    cosines = np.asarray(cosines, dtype=np.float64)
    correct = cosines.argmax(1) == labels
    target, highest = config.target_zero_shot_ece, config.logit_scale

    def confidence(scale: float) -> np.ndarray:
        logits = scale * (cosines - cosines.max(1, keepdims=True))
        return 1 / np.exp(logits).sum(1)  # the max softmax probability (its logit is 0)

    def ece(scale: float) -> float:
        return expected_calibration_error(confidence(scale), correct, 15)

    def bisect(too_low, low: float, high: float) -> float:
        for _ in range(40):
            mid = (low + high) / 2
            low, high = (mid, high) if too_low(mid) else (low, mid)
        return high

    if confidence(highest).mean() <= correct.mean() or ece(highest) <= target:
        return highest
    met = bisect(lambda s: confidence(s).mean() < correct.mean(), 0.0, highest)
    if ece(met) >= target:
        log.warning("zero-shot ECE %.1f%% (where confidence meets accuracy) is the closest reachable to the target "
                    "%.1f%%", ece(met), target)
        return met
    return bisect(lambda s: ece(s) < target, met, highest)
