"""Classifying image files with a prompted backbone, and the predictions CSV.

The adapted model classifies as the paper evaluates it (:func:`cap.methods.engine.predict_test`:
the MaPLe prompts, no adapters, argmax over the classes of the softmax of the scaled cosine
similarity). Images are decoded in DataLoader workers; a file that cannot be decoded is skipped
and reported, never fatal.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from cap.atomic import atomic_write
from cap.data.images import ImageReadError, load_rgb
from cap.methods.engine import predict_test


class _Files(Dataset):
    """Item i: {"index", "ok", "image"} with the weak view (zeros when the file cannot be read)."""

    def __init__(self, paths: Sequence[str], preprocess, size: int):
        self.paths, self.preprocess, self.size = list(paths), preprocess, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        try:
            return {"index": i, "ok": True, "why": "", "image": self.preprocess(load_rgb(self.paths[i]))}
        except ImageReadError as err:
            why = str(err.__cause__ or err).splitlines()[0]
            return {"index": i, "ok": False, "why": why, "image": torch.zeros(3, self.size, self.size)}


class ImageFiles:
    """Image files as the test split of a source, for :func:`predict_test`; unreadable files are left
    out of the batches and listed in ``skipped`` (path, why) once iterated."""

    def __init__(self, paths: Sequence[str], preprocess, image_size: int, workers: int = 0):
        self.paths, self.workers = list(paths), workers
        self.dataset = _Files(self.paths, preprocess, image_size)
        self.skipped: list[tuple[str, str]] = []

    def test_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.skipped = []
        loader = DataLoader(self.dataset, batch_size=batch_size, num_workers=self.workers,
                            pin_memory=torch.cuda.is_available())
        for batch in loader:
            ok = batch["ok"]
            self.skipped += [(self.paths[int(i)], why) for i, why, good in zip(batch["index"], batch["why"], ok)
                             if not good]
            if ok.any():
                yield batch["image"][ok], batch["index"][ok]


def image_size(backbone) -> int:
    size = backbone.clip.visual.image_size
    return size if isinstance(size, int) else size[0]


def classify_files(backbone, paths: Sequence[str], batch_size: int = 256, workers: int = 0):
    """(index into ``paths`` of each readable image, predicted class, confidence, skipped (path, why))."""
    files = ImageFiles(paths, backbone.preprocess, image_size(backbone), workers)
    pred, index, confidence = predict_test(backbone, files, batch_size)
    return index, pred, confidence, files.skipped


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence]) -> Path:
    """A CSV file written atomically (a kill never leaves half of it)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            out = csv.writer(handle)
            out.writerow(header)
            out.writerows(rows)

    atomic_write(Path(path), write)
    return Path(path)


def prediction_rows(paths: Sequence[str], classnames: Sequence[str], columns: dict[str, tuple]) -> list[list]:
    """One row per path: the path, then for each column group (name -> (class index, confidence) arrays
    aligned with ``paths``) its class name and its confidence rounded to 4 digits."""
    rows = []
    for i, path in enumerate(paths):
        row = [path]
        for pred, confidence in columns.values():
            row += [classnames[int(pred[i])], round(float(confidence[i]), 4)]
        rows.append(row)
    return rows
