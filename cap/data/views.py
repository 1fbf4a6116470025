"""The two image views of CAP's training: weak (CLIP's own preprocessing) and strong (augmented).

Only the unlabelled images get a strong view; the reliable pseudolabel set and the labelled images
use the weak view (official code, ``utils/augmentations.py`` and ``methods/main.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cap._torchvision import ensure_torchvision_importable

ensure_torchvision_importable()  # before torchvision or open_clip: see cap/_torchvision.py
from torchvision import transforms as T  # noqa: E402

# RandomResizedCrop's scale range in the official strong view.
STRONG_CROP_SCALE = (0.08, 1.0)


def clip_normalisation() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """OpenAI CLIP's pixel mean and std (the values the official ``augmentations.py`` hard-codes)."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    return tuple(OPENAI_DATASET_MEAN), tuple(OPENAI_DATASET_STD)


def strong_view(image_size: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """The official strong view: random resized crop (bicubic), then a horizontal flip with p = 1.

    The flip probability of 1.0 is what the official code uses (spec 5.4 item 9): every strong view
    is mirrored. Kept as is for comparability; the randomness is the crop's, from torch's RNG.
    """
    return T.Compose([
        T.RandomResizedCrop(image_size, scale=STRONG_CROP_SCALE, interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(p=1.0),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])
