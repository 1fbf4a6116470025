"""A simulated dataset with its ground truth (what :func:`cap.sim.make_problem` returns)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from cap.sim.presets import SimConfig


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
    description_quality: np.ndarray  # (C, n_descriptions): cosine with the class's image direction (before the offsets)
    description_kinds: np.ndarray  # (C, n_descriptions): index into cap.sim.generator.DESCRIPTION_KINDS
    mismatched: list[int]  # planted concept mismatch, sorted
    confusion_pairs: list[tuple[int, int]]  # (a, b): a's text drifts toward b's images
    families: np.ndarray  # (C,) family id of each class
    class_means: np.ndarray = field(repr=False)  # (C, d) class image directions, before offset and noise
    calibrated_text_noise: float = 0.0
    logit_scale: float = 100.0  # turns cosines into logits: calibrated to the preset's zero-shot ECE

    @property
    def n_classes(self) -> int:
        return len(self.classnames)

    @property
    def confused_classes(self) -> list[int]:
        return sorted({c for pair in self.confusion_pairs for c in pair})

    def logits(self, features: np.ndarray, text: np.ndarray | None = None) -> np.ndarray:
        """CLIP logits: logit_scale * cosine(features, text); text defaults to the class texts."""
        text = self.text_features if text is None else text
        return self.logit_scale * features @ text.T

    def zero_shot_predictions(self, split: str = "test") -> np.ndarray:
        features = {"train": self.train_features, "test": self.test_features}[split]
        return self.logits(features).argmax(1)

    def zero_shot_accuracy(self, split: str = "test") -> float:
        labels = {"train": self.train_labels, "test": self.test_labels}[split]
        return float((self.zero_shot_predictions(split) == labels).mean() * 100)

    def geometry(self, max_images: int = 2000) -> dict[str, float]:
        """Mean cosines that describe the simulated geometry, to set beside CLIP's (the simulator
        page): image–image within a class, across classes and over all pairs, class means
        (prototypes) of sibling and of unrelated classes, class texts of sibling and of unrelated
        classes and over all pairs, image–text for the true class and for other classes, and the
        modality gap (the distance between the mean image and the mean class text, as Liang et al.
        2022 measure it). Computed on (at most ``max_images``) test images."""
        take = np.random.default_rng(0).permutation(len(self.test_labels))[:max_images]
        x, y = self.test_features[take], self.test_labels[take]
        same = y[:, None] == y[None, :]
        off_diagonal = ~np.eye(len(y), dtype=bool)
        xx = x @ x.T
        means = np.stack([self.test_features[self.test_labels == c].mean(0) for c in range(self.n_classes)])
        means /= np.linalg.norm(means, axis=1, keepdims=True)
        sibling = (self.families[:, None] == self.families[None, :]) & ~np.eye(self.n_classes, dtype=bool)
        unrelated = self.families[:, None] != self.families[None, :]
        pm, tt, xt = means @ means.T, self.text_features @ self.text_features.T, x @ self.text_features.T
        true_text = np.zeros_like(xt, dtype=bool)
        true_text[np.arange(len(y)), y] = True
        all_texts = ~np.eye(self.n_classes, dtype=bool)
        return {"image_image_same_class": float(xx[same & off_diagonal].mean()),
                "image_image_other_class": float(xx[~same].mean()),
                "image_image_all": float(xx[off_diagonal].mean()),
                "text_text_all": float(tt[all_texts].mean()),
                "modality_gap": float(np.linalg.norm(x.mean(0) - self.text_features.mean(0))),
                "class_mean_sibling": float(pm[sibling].mean()) if sibling.any() else float("nan"),
                "class_mean_unrelated": float(pm[unrelated].mean()) if unrelated.any() else float("nan"),
                "text_text_sibling": float(tt[sibling].mean()) if sibling.any() else float("nan"),
                "text_text_unrelated": float(tt[unrelated].mean()) if unrelated.any() else float("nan"),
                "image_text_true_class": float(xt[true_text].mean()),
                "image_text_other_class": float(xt[~true_text].mean())}

    def ground_truth(self) -> dict:
        """The planted structure, as plain Python (for records and tables)."""
        return {
            "mismatched": [self.classnames[c] for c in self.mismatched],
            "confusion_pairs": [(self.classnames[a], self.classnames[b]) for a, b in self.confusion_pairs],
            "mismatched_indices": list(self.mismatched),
            "confusion_pair_indices": [(int(a), int(b)) for a, b in self.confusion_pairs],  # a's text drifts to b's images
            "description_kinds": self.description_kinds.tolist(),
            "calibrated_text_noise": self.calibrated_text_noise,
            "logit_scale": self.logit_scale,
            "config": asdict(self.config),
            "seed": self.seed,
        }
