"""Where a run's data come from: the simulator's features or real images through open_clip.

The training engine decides *which* images go in each batch (so runs are reproducible and resume
exactly); a source only turns index sequences into model inputs, efficiently for its kind.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cap.config import RunConfig
from cap.data.splits import ParadigmSplit, make_split
from cap.datasets import get_dataset

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


def _paradigm_split(config: RunConfig, train_labels: np.ndarray, n_classes: int) -> ParadigmSplit:
    split = make_split(config.paradigm, train_labels, n_classes, split_seed=config.split_seed,
                       validation_seed=config.validation_seed, n_label=config.n_label)
    if config.unlabelled_fraction < 1.0:  # the paper's Fig. 11: use part of the unlabelled data
        rng = np.random.default_rng(config.seed)
        keep = max(1, int(round(config.unlabelled_fraction * len(split.unlabelled))))
        split.unlabelled = sorted(rng.choice(split.unlabelled, size=keep, replace=False).tolist())
    return split


@functools.lru_cache(maxsize=4)
def _sim_problem(dataset: str, seed: int, sizes: tuple):
    """One simulated problem per (preset, seed, sizes) in a process: every method and seed run on a
    dataset shares it. Shared arrays: sources never modify them."""
    from cap.sim import make_problem

    return make_problem(dataset, seed=seed, **dict(sizes))


class SimSource(Source):
    """Features from the concept simulator; the strong view adds feature noise (augmentation)."""

    STRONG_NOISE = 0.75  # cos(view, image) ≈ 0.8, like a strong crop of a CLIP image feature

    def __init__(self, config: RunConfig):
        sizes = tuple((k, v) for k, v in (("n_train_per_class", config.sim_train_per_class),
                                           ("n_test_per_class", config.sim_test_per_class)) if v is not None)
        problem = _sim_problem(config.dataset, config.sim_seed, sizes)
        self.problem = problem
        super().__init__(
            classnames=problem.classnames,
            train_labels=problem.train_labels,
            test_labels=problem.test_labels,
            split=_paradigm_split(config, problem.train_labels, problem.n_classes),
            zero_shot_image=problem.train_features,
            zero_shot_text=problem.text_features,
            logit_scale=problem.config.logit_scale,
        )
        self._train = torch.from_numpy(problem.train_features)
        self._test = torch.from_numpy(problem.test_features)

    def batches(self, order, batch_size, views, generator, drop_last=True):
        stop = len(order) - batch_size + 1 if drop_last else len(order)
        for start in range(0, max(stop, 0), batch_size):
            index = torch.as_tensor(order[start:start + batch_size])
            x = self._train[index]
            batch = {"index": index}
            if "weak" in views:
                batch["weak"] = x
            if "strong" in views:
                noise = torch.randn(x.shape, generator=generator) / x.shape[1] ** 0.5
                batch["strong"] = F.normalize(x + self.STRONG_NOISE * noise, dim=1)
            yield batch

    def test_batches(self, batch_size):
        labels = torch.from_numpy(self.test_labels)
        for start in range(0, len(labels), batch_size):
            yield self._test[start:start + batch_size], labels[start:start + batch_size]

    def description_features(self, classes):
        return {c: self.problem.descriptions[c] for c in classes}

    def official_mismatched(self) -> list[int]:
        return list(self.problem.mismatched)


def make_source(config: RunConfig) -> Source:
    if config.backend == "sim":
        return SimSource(config)
    from cap.image_source import ImageSource

    return ImageSource(config)


def official_mismatched(config: RunConfig) -> list[int]:
    """The classes with a hard-coded description in the official code."""
    info = get_dataset(config.dataset)
    return info.class_indices(info.official_mismatched)
