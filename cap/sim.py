"""The concept simulator: CLIP-like features with planted concept mismatch and confusion.

Image features of each class form a cluster on the unit sphere. Classes come in families of near
neighbours (as in fine-grained datasets), and all image features share a common offset, as do all
text features (the modality gap). The text feature of a class points at its image cluster, up to a
text error made of its neighbours' directions; the error's size is calibrated so that zero-shot
top-1 matches CLIP ViT-B/32 on the mirrored dataset. On top of that, two planted faults:

* concept mismatch: the class text points almost entirely away from every image, so the class
  is (almost) never predicted and its images are spread over other classes;
* concept confusion (a, b): the text of a drifts toward the images of b, so b is predicted as a.

Every class also gets candidate descriptions (text vectors) of known quality, the simulated
counterpart of LLM descriptions; the best candidate of every class is good.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cache
from importlib import resources

import numpy as np
import yaml

from cap.datasets import dataset_names, get_dataset
from cap.errors import ParameterError, UnknownNameError, check_float, check_int
from cap.numeric import unit as _unit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimConfig:
    """Everything that determines a simulated problem (with the seed)."""

    preset: str
    n_train_per_class: int
    n_test_per_class: int
    target_zero_shot: float | None  # percent; None: use ``text_noise`` as given
    dim: int = 512
    family_size: int = 5
    family_weight: float = 0.6
    image_noise: float = 1.0
    noise_rank: int = 64  # image noise lives in a subspace of this rank (CLIP features are anisotropic)
    hard_fraction: float = 0.2  # share of images drawn between their class and a sibling class
    image_gap: float = 2.5  # norm of the offset all image features share
    text_gap: float = 1.2  # norm of the offset all text features share
    text_noise: float = 0.5  # size of each class text's error; overwritten by calibration
    text_error_mix: float = 0.0  # share of the text error that leans toward other classes' images
    text_noise_spread: float = 0.3  # log-normal spread of the per-class text-error size
    mismatch_alignment: float = 0.0  # weight of a mismatched text's own image direction (0: none)
    confusion_fraction: float = 0.3  # share of classes in a planted confusion pair
    confusion_strength: float = 2.0  # weight of b's image direction in a's text
    n_descriptions: int = 5
    logit_scale: float = 100.0

    def validate(self) -> SimConfig:
        check_int("n_train_per_class", self.n_train_per_class, 1)
        check_int("n_test_per_class", self.n_test_per_class, 1)
        check_int("dim", self.dim, 16)
        check_int("family_size", self.family_size, 1)
        check_int("noise_rank", self.noise_rank, 1)
        check_int("n_descriptions", self.n_descriptions, 1)
        if self.target_zero_shot is not None:
            check_float("target_zero_shot", self.target_zero_shot, 0.0, 100.0)
        check_float("family_weight", self.family_weight, 0.0, 0.99)
        for name in ("image_noise", "image_gap", "text_gap", "text_noise", "confusion_strength"):
            check_float(name, getattr(self, name), 0.0)
        check_float("mismatch_alignment", self.mismatch_alignment, 0.0, 1.0)
        check_float("confusion_fraction", self.confusion_fraction, 0.0, 1.0)
        check_float("hard_fraction", self.hard_fraction, 0.0, 1.0)
        check_float("text_error_mix", self.text_error_mix, 0.0, 1.0)
        check_float("text_noise_spread", self.text_noise_spread, 0.0)
        check_float("logit_scale", self.logit_scale, 0.0)
        return self


@dataclass
class SimProblem:
    """A simulated dataset with its ground truth. Features are L2-normalised float32."""

    config: SimConfig
    seed: int
    classnames: list[str]
    train_features: np.ndarray  # (N, d)
    train_labels: np.ndarray  # (N,)
    test_features: np.ndarray
    test_labels: np.ndarray
    text_features: np.ndarray  # (C, d), the "a photo of a {class}" texts
    descriptions: np.ndarray  # (C, n_descriptions, d)
    description_quality: np.ndarray  # (C, n_descriptions), in [0, 1]; 1 = points at the class images
    mismatched: list[int]  # planted concept mismatch, sorted
    confusion_pairs: list[tuple[int, int]]  # (a, b): a's text drifts toward b's images
    families: np.ndarray  # (C,) family id of each class
    class_means: np.ndarray = field(repr=False)  # (C, d) class image directions, before offset and noise
    calibrated_text_noise: float = 0.0

    @property
    def n_classes(self) -> int:
        return len(self.classnames)

    @property
    def confused_classes(self) -> list[int]:
        return sorted({c for pair in self.confusion_pairs for c in pair})

    def logits(self, features: np.ndarray, text: np.ndarray | None = None) -> np.ndarray:
        """CLIP logits: logit_scale * cosine(features, text); text defaults to the class texts."""
        text = self.text_features if text is None else text
        return self.config.logit_scale * features @ text.T

    def zero_shot_predictions(self, split: str = "test") -> np.ndarray:
        features = {"train": self.train_features, "test": self.test_features}[split]
        return self.logits(features).argmax(1)

    def zero_shot_accuracy(self, split: str = "test") -> float:
        labels = {"train": self.train_labels, "test": self.test_labels}[split]
        return float((self.zero_shot_predictions(split) == labels).mean() * 100)

    def ground_truth(self) -> dict:
        """The planted structure, as plain Python (for records and tables)."""
        return {
            "mismatched": [self.classnames[c] for c in self.mismatched],
            "confusion_pairs": [(self.classnames[a], self.classnames[b]) for a, b in self.confusion_pairs],
            "calibrated_text_noise": self.calibrated_text_noise,
            "config": asdict(self.config),
            "seed": self.seed,
        }


@cache
def _sim_presets() -> dict[str, dict]:
    return yaml.safe_load(resources.files("cap.presets").joinpath("sim.yml").read_text())


def preset_names() -> list[str]:
    return dataset_names()


def preset_config(preset: str, **overrides) -> SimConfig:
    """The resolved config of a preset; overrides must name SimConfig fields."""
    if not isinstance(preset, str):
        raise UnknownNameError("simulator preset", preset, preset_names())
    try:
        info = get_dataset(preset)
    except UnknownNameError:
        raise UnknownNameError("simulator preset", preset, preset_names()) from None
    valid = {f.name for f in fields(SimConfig)} - {"preset"}
    unknown = set(overrides) - valid
    if unknown:
        raise ParameterError(f"unknown simulator parameter(s) {sorted(unknown)}; valid: {', '.join(sorted(valid))}")
    config = SimConfig(
        preset=info.name,
        n_train_per_class=info.train_per_class,
        n_test_per_class=info.test_per_class,
        **_sim_presets()[info.name],
    )
    return replace(config, **overrides).validate()


def make_problem(preset: str, seed: int = 0, **overrides) -> SimProblem:
    """Generate the simulated problem of ``preset`` (a dataset name); same seed, same arrays.

    ``overrides`` replace fields of :class:`SimConfig`, e.g. ``n_train_per_class=10``.
    """
    config = preset_config(preset, **overrides)
    check_int("seed", seed, 0)
    info = get_dataset(config.preset)
    return _generate(config, seed, list(info.classnames), info.class_indices(info.official_mismatched))


def _generate(config: SimConfig, seed: int, classnames: list[str], mismatched: list[int]) -> SimProblem:
    rng = np.random.default_rng(seed)
    C, d = len(classnames), config.dim

    def directions(*shape: int) -> np.ndarray:
        return _unit(rng.standard_normal((*shape, d)))

    image_offset, text_offset = directions(2)
    n_families = max(1, round(C / config.family_size))
    families = rng.permutation(np.arange(C) % n_families)
    wf = config.family_weight
    means = _unit(np.sqrt(wf) * directions(n_families)[families] + np.sqrt(1 - wf) * directions(C))

    # Text error, per class: part a random mix of the other classes' directions (mostly its
    # family's: the text leans toward neighbours), part a direction no image has (the text is
    # vaguer), with a per-class size, so some classes' texts fit their images better than others'.
    same_family = families[:, None] == families[None, :]
    mix = rng.standard_normal((C, C)) * np.where(same_family, 1.0, 0.3)
    np.fill_diagonal(mix, 0.0)
    basis = np.linalg.qr(np.vstack([means, image_offset]).T)[0]
    vague = directions(C)
    vague = _unit(vague - (vague @ basis) @ basis.T)
    w = config.text_error_mix
    size = np.exp(config.text_noise_spread * rng.standard_normal(C))[:, None]
    text_error = size * (np.sqrt(w) * _unit(mix @ means) + np.sqrt(1 - w) * vague)

    pairs = _confusion_pairs(rng, families, mismatched, config.confusion_fraction)
    text_drift = np.zeros((C, d))
    for a, b in pairs:
        text_drift[a] = config.confusion_strength * means[b]
    # Where mismatched texts point: orthogonal to every class direction and the image offset,
    # so no image looks like them.
    away = directions(C)
    away = _unit(away - (away @ basis) @ basis.T)

    def class_texts(noise: float) -> np.ndarray:
        t = _unit(means + noise * text_error + text_drift)
        rho = config.mismatch_alignment
        t[mismatched] = _unit(rho * t[mismatched] + np.sqrt(1 - rho**2) * away[mismatched])
        return _unit(config.text_gap * text_offset + t)

    noise_basis = np.linalg.qr(rng.standard_normal((d, min(config.noise_rank, d))))[0].T

    def sibling(c: int) -> int:
        pool = np.flatnonzero((families == families[c]) & (np.arange(C) != c))
        return int(rng.choice(pool)) if len(pool) else int(rng.choice(np.delete(np.arange(C), c)))

    def images(n_per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(C), n_per_class)
        centres = means[labels]
        # Hard images sit between their class and a sibling; past halfway they look like the sibling.
        hard = np.flatnonzero(rng.random(len(labels)) < config.hard_fraction)
        pull = rng.uniform(0.2, 0.8, len(hard))[:, None]
        siblings = np.array([sibling(c) for c in labels[hard]], dtype=int).reshape(-1)
        centres[hard] = (1 - pull) * centres[hard] + pull * means[siblings]
        noise = rng.standard_normal((len(labels), len(noise_basis))) @ noise_basis / np.sqrt(len(noise_basis))
        x = config.image_gap * image_offset + centres + config.image_noise * noise
        return _unit(x).astype(np.float32), labels

    train_x, train_y = images(config.n_train_per_class)
    test_x, test_y = images(config.n_test_per_class)

    noise = config.text_noise
    if config.target_zero_shot is not None:
        noise = _calibrate(class_texts, train_x, train_y, config.target_zero_shot / 100)
    text = class_texts(noise).astype(np.float32)

    quality = np.stack([rng.permutation(np.linspace(1.0, 0.0, config.n_descriptions + 1)[:-1]) for _ in range(C)])
    wrong = _unit(directions(C, config.n_descriptions) + means[rng.integers(0, C, (C, config.n_descriptions))])
    desc = _unit(quality[..., None] * means[:, None] + (1 - quality[..., None]) * wrong)
    desc = _unit(config.text_gap * text_offset + desc).astype(np.float32)

    return SimProblem(
        config=config,
        seed=seed,
        classnames=classnames,
        train_features=train_x,
        train_labels=train_y,
        test_features=test_x,
        test_labels=test_y,
        text_features=text,
        descriptions=desc,
        description_quality=quality,
        mismatched=sorted(mismatched),
        confusion_pairs=pairs,
        families=families,
        class_means=means.astype(np.float32),
        calibrated_text_noise=float(noise),
    )


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
