"""Features from the concept simulator, as a :class:`~cap.sources.source.Source`."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from cap.config import RunConfig
from cap.models.feature_backbone import FeatureBackbone
from cap.sim import make_problem
from cap.sources.source import Source, paradigm_split


@functools.lru_cache(maxsize=8)
def _sim_problem(dataset: str, seed: int, sizes: tuple):
    """One simulated problem per (preset, seed, sizes and other overrides) in a process: every method and seed run on a
    dataset shares it. Shared arrays: sources never modify them."""
    return make_problem(dataset, seed=seed, **dict(sizes))


class SimSource(Source):
    """Features from the concept simulator; the strong view adds feature noise (augmentation)."""

    STRONG_NOISE = 0.75  # cos(view, image) ≈ 0.8, like a strong crop of a CLIP image feature

    def __init__(self, config: RunConfig):
        sizes = tuple((k, v) for k, v in (("n_train_per_class", config.sim_train_per_class),
                                           ("n_test_per_class", config.sim_test_per_class),
                                           ("confusion_strength", config.sim_confusion_strength),
                                           ("hard_fraction", config.sim_hard_fraction),
                                           ("mismatch_alignment", config.sim_mismatch_alignment),
                                           ("n_classes", config.sim_classes)) if v is not None)
        if config.sim_logit_scale is not None:
            sizes += (("target_zero_shot_ece", None), ("logit_scale", config.sim_logit_scale))
        problem = _sim_problem(config.dataset, config.sim_seed, sizes)
        self.problem = problem
        super().__init__(
            classnames=problem.classnames,
            train_labels=problem.train_labels,
            test_labels=problem.test_labels,
            split=paradigm_split(config, problem.train_labels, problem.n_classes),
            zero_shot_image=problem.train_features,
            zero_shot_text=problem.text_features,
            logit_scale=problem.logit_scale,
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

    def ground_truth(self) -> dict:
        """The planted structure of the simulated problem (for the records: pages compare with it)."""
        return self.problem.ground_truth()

    def description_features(self, classes):
        return {c: self.problem.descriptions[c] for c in classes}

    def make_backbone(self, config, prompt, device):
        """The feature backbone on the simulator's class texts (no prompts: ``prompt`` is unused)."""
        return FeatureBackbone(torch.as_tensor(self.zero_shot_text), self.logit_scale,
                               prompt_lr_scale=config.sim_prompt_lr_scale).to(device)
