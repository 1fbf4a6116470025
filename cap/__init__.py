"""CAP companion: concept alignment and confusion-aware calibrated margin for CLIP pseudolabels.

The names a user wants, by layer (imported on first use, so ``import cap`` stays cheap):

* the paper's math (:mod:`cap.core`): ``leaderboard_topk``, ``find_mismatch``, ``align_concepts``,
  ``confusion_margin``, ``margin_cross_entropy``, ``cpl_candidates``, ``grip_budget``, ``harmonic_mean``;
* the simulator (:mod:`cap.sim`): ``make_problem``;
* runs (:mod:`cap.config`, :mod:`cap.methods`, :mod:`cap.experiments`): ``RunConfig``,
  ``make_config``, ``CapTrainer``, ``run``, ``run_matrices``;
* one's own images: the package :mod:`cap.adapt` (``cap.adapt.adaptation.adapt``,
  ``cap.adapt.prediction.predict_folder``; the commands `cap adapt` and `cap predict`).

On a CPU-only torch paired with a CUDA torchvision wheel, ``import torchvision`` (and so
``import open_clip``) fails unless :func:`ensure_torchvision_importable` runs first; the modules of
``cap`` that need torchvision call it themselves, code of your own that imports open_clip calls it
once (:mod:`cap._torchvision`). ``import cap`` itself changes nothing.
"""

from __future__ import annotations

import importlib

from cap._torchvision import ensure_torchvision_importable
from cap.errors import CapError

__version__ = "0.1.0"

_PUBLIC = {
    "leaderboard_topk": "cap.core.pseudolabels",
    "grip_budget": "cap.core.pseudolabels",
    "cpl_candidates": "cap.core.pseudolabels",
    "find_mismatch": "cap.core.concepts",
    "align_concepts": "cap.core.concepts",
    "confusion_margin": "cap.core.margin",
    "margin_cross_entropy": "cap.core.losses",
    "harmonic_mean": "cap.core.metrics",
    "make_problem": "cap.sim",
    "RunConfig": "cap.config",
    "make_config": "cap.config",
    "CapTrainer": "cap.methods.cap",
    "run": "cap.experiments.runs",
    "run_matrices": "cap.experiments.runner",
}


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cap' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = ["CapError", "__version__", "ensure_torchvision_importable", *_PUBLIC]
