"""Simulator presets: one :class:`SimConfig` per dataset of the paper (``presets.yml``)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import cache
from importlib import resources

import yaml

from cap.data.registry import dataset_names, get_dataset
from cap.errors import ParameterError, UnknownNameError, check_float, check_int


@dataclass(frozen=True)
class SimConfig:
    """Everything that determines a simulated problem (with the seed)."""

    preset: str
    n_train_per_class: int
    n_test_per_class: int
    target_zero_shot: float | None  # percent; None: use ``text_noise`` as given
    n_classes: int | None = None  # a subset of the preset's classes (diagnostics); None: all of them
    dim: int = 256  # CLIP ViT-B/32 has 512; 256 holds every preset's class directions (at most 200) and
    # quarters the cost of the feature backbone's maps
    family_size: int = 5
    family_weight: float = 0.6
    image_noise: float = 1.0
    noise_rank: int = 64  # image noise lives in a subspace of this rank (CLIP features are anisotropic)
    hard_fraction: float = 0.2  # share of images drawn between their class and a sibling class
    image_gap: float = 1.2  # norm of the offset all image features share (unrelated class means: cosine ≈ 0.6)
    text_gap: float = 1.5  # norm of the offset all text features share (unrelated class texts: cosine ≈ 0.7)
    modality_alignment: float = 0.4  # cosine between the image and the text offset: sets the modality gap to about
    # CLIP's 0.82 (Liang et al. 2022) and gives image–text cosines their shared part (0: a random, nearly orthogonal pair)
    text_noise: float = 0.5  # size of each class text's error; overwritten by calibration
    text_error_mix: float = 0.0  # share of the text error that leans toward other classes' images
    text_noise_spread: float = 0.3  # log-normal spread of the per-class text-error size
    mismatch_alignment: float = 0.0  # weight of a mismatched text's own image direction (0: none)
    confusion_fraction: float = 0.3  # share of classes in a planted confusion pair
    confusion_strength: float = 1.0  # weight of b's image direction in a's text (presets.yml says why 1.0)
    n_descriptions: int = 5
    # Candidate descriptions (the simulated LLM descriptions): each is drawn as one of three kinds with
    # these probabilities, so a class may have no informative one at all.
    description_vague: float = 0.4  # a paraphrase of the class name: fits the images no better than it
    description_sibling: float = 0.2  # leans toward a sibling class's images (misleading)
    description_informative: float = 0.4  # moves from the class name toward the class's images
    description_shift: tuple[float, float] = (0.3, 0.7)  # range of that move (informative) or lean (sibling)
    description_paraphrase: float = 0.3  # size of the random wording noise on every description
    logit_scale: float = 100.0  # CLIP's; with a target ECE, the most the calibrated scale may reach
    # Confidence: the simulated cosines spread wider than CLIP's (an image's class text stands out more),
    # so at CLIP's scale of 100 zero-shot confidence is far too high (ECE 23-57 points). The scale that
    # turns cosines into logits is calibrated instead, so that zero-shot confidence is as (mis)calibrated
    # as published for CLIP; it changes no prediction (the argmax of a scaled row is the same).
    target_zero_shot_ece: float | None = None  # percent (15 bins); None: use ``logit_scale`` as given

    def validate(self) -> SimConfig:
        check_int("n_train_per_class", self.n_train_per_class, 1)
        check_int("n_test_per_class", self.n_test_per_class, 1)
        check_int("dim", self.dim, 16)
        check_int("family_size", self.family_size, 1)
        check_int("noise_rank", self.noise_rank, 1)
        check_int("n_descriptions", self.n_descriptions, 1)
        if self.n_classes is not None:
            check_int("n_classes", self.n_classes, 2)
        if self.target_zero_shot is not None:
            check_float("target_zero_shot", self.target_zero_shot, 0.0, 100.0)
        if self.target_zero_shot_ece is not None:
            check_float("target_zero_shot_ece", self.target_zero_shot_ece, 0.0, 100.0)
        check_float("family_weight", self.family_weight, 0.0, 0.99)
        for name in ("image_noise", "image_gap", "text_gap", "text_noise", "confusion_strength"):
            check_float(name, getattr(self, name), 0.0)
        check_float("mismatch_alignment", self.mismatch_alignment, 0.0, 1.0)
        check_float("modality_alignment", self.modality_alignment, 0.0, 0.99)
        check_float("confusion_fraction", self.confusion_fraction, 0.0, 1.0)
        check_float("hard_fraction", self.hard_fraction, 0.0, 1.0)
        check_float("text_error_mix", self.text_error_mix, 0.0, 1.0)
        check_float("text_noise_spread", self.text_noise_spread, 0.0)
        check_float("logit_scale", self.logit_scale, 0.0)
        kinds = (self.description_vague, self.description_sibling, self.description_informative)
        for name, value in zip(("description_vague", "description_sibling", "description_informative"), kinds):
            check_float(name, value, 0.0, 1.0)
        if abs(sum(kinds) - 1.0) > 1e-9:
            raise ParameterError(f"description_vague + description_sibling + description_informative must be 1, got "
                                 f"{sum(kinds)}: they are the probabilities of the three kinds of description")
        low, high = self.description_shift
        if not 0.0 <= low <= high <= 1.0:
            raise ParameterError(f"description_shift must be (low, high) with 0 <= low <= high <= 1, got {self.description_shift}")
        check_float("description_paraphrase", self.description_paraphrase, 0.0)
        return self


@cache
def _sim_presets() -> dict[str, dict]:
    return yaml.safe_load(resources.files("cap.sim").joinpath("presets.yml").read_text())


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
    config = replace(config, **overrides).validate()
    if config.n_classes is not None and config.n_classes > info.n_classes:
        raise ParameterError(f"n_classes={config.n_classes}, but {info.title} has {info.n_classes} classes: a simulated "
                             f"problem can take a subset of a preset's classes, not more")
    return config
