"""The interface every data source implements, and the paradigm split of its training pool."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from cap.config import RunConfig
from cap.data.splits import ParadigmSplit, make_split

log = logging.getLogger(__name__)


@dataclass
class Source:
    """Common part: class names, labels (true labels are used for logging and evaluation only),
    the paradigm split and frozen zero-shot features of every training image."""

    classnames: list[str]
    train_labels: np.ndarray
    test_labels: np.ndarray
    split: ParadigmSplit
    zero_shot_image: np.ndarray  # (N_train, d) frozen image features
    zero_shot_text: np.ndarray  # (C, d) frozen class-prompt features
    logit_scale: float

    @property
    def n_classes(self) -> int:
        return len(self.classnames)

    def batches(self, order: np.ndarray, batch_size: int, views: tuple[str, ...], generator: torch.Generator | None,
                drop_last: bool = True) -> Iterator[dict]:
        """Batches of the training images ``order`` in that order: {"index", and each view in ``views``}
        ("weak": CLIP preprocessing; "strong": the augmented view drawn with ``generator``)."""
        raise NotImplementedError

    def test_batches(self, batch_size: int) -> Iterator[tuple[object, torch.Tensor]]:
        raise NotImplementedError

    def description_features(self, classes: list[int]) -> dict[int, np.ndarray]:
        """Candidate description embeddings (n, d) for each class that has descriptions."""
        raise NotImplementedError

    def make_backbone(self, config: RunConfig, prompt: str, device: torch.device):
        """The trainable model for these inputs, with ``prompt`` prompts ("maple" or "coop") where
        the backbone has prompts (a :class:`~cap.models.backbone.Backbone`)."""
        raise NotImplementedError


def paradigm_split(config: RunConfig, train_labels: np.ndarray, n_classes: int) -> ParadigmSplit:
    split = make_split(config.paradigm, train_labels, n_classes, split_seed=config.split_seed,
                       validation_seed=config.validation_seed, n_label=config.n_label)
    if config.unlabelled_fraction < 1.0:  # the paper's Fig. 11: use part of the unlabelled data
        rng = np.random.default_rng(config.seed)
        keep = max(1, int(round(config.unlabelled_fraction * len(split.unlabelled))))
        split.unlabelled = sorted(rng.choice(split.unlabelled, size=keep, replace=False).tolist())
    return split
