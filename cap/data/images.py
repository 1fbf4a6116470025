"""A map-style dataset of image files that yields several views of each image from one decode."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from cap.data.readers import DataError
from cap.errors import ParameterError

_RESERVED = ("index", "label")


class ImageReadError(DataError):
    """An image file that cannot be opened or decoded."""


def load_rgb(path: str | Path) -> Image.Image:
    """Open and fully decode one image as RGB; a corrupt or unreadable file is an ImageReadError."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as err:  # PIL reports bad data with all three
        raise ImageReadError(
            f"cannot read image {path}: {err}. Re-download this file (or the dataset), or remove it "
            "together with its line in the split file, then run `python -m cap data check NAME`.") from err


class ImageDataset(Dataset):
    """Items ``{"index": i, "label": y, <view name>: transform(image), ...}``.

    Every transform sees the same decoded image, so a weak and a strong view cost one decode.
    """

    def __init__(self, paths: Sequence[str | Path], labels: Sequence[int] | np.ndarray,
                 transforms: Mapping[str, Callable]):
        if len(paths) != len(labels):
            raise ParameterError(f"{len(paths)} paths but {len(labels)} labels")
        clashes = [name for name in transforms if name in _RESERVED]
        if clashes:
            raise ParameterError(f"view names {clashes} clash with the item keys {list(_RESERVED)}")
        not_callable = [name for name, t in transforms.items() if not callable(t)]
        if not_callable:
            raise ParameterError(f"views {not_callable} are not callable transforms")
        self.paths = [str(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transforms = dict(transforms)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        image = load_rgb(self.paths[index])
        item = {"index": index, "label": int(self.labels[index])}
        for name, transform in self.transforms.items():
            item[name] = transform(image)
        return item
