"""Tiny generated datasets in the six on-disk layouts the official code reads (see cap.data.readers).

Every class of the official class list gets ``n_train`` train, ``n_val`` val and ``n_test`` test
images of 8x8 pixels. The metadata files have the format of the real ones, so the readers are
tested on exactly what they parse. CUB has no val split: its train split gets ``n_train + n_val``.
EuroSAT's pool is every image in the class folders; its test images are among them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

from cap.data.registry import dataset_names, get_dataset

SIZE = 8
_jpeg_cache: dict[int, bytes] = {}


def jpeg_bytes(k: int) -> bytes:
    """A small valid JPEG whose colour depends on ``k`` (cached: encoding is the slow part)."""
    key = k % 64
    if key not in _jpeg_cache:
        buffer = io.BytesIO()
        Image.new("RGB", (SIZE, SIZE), (key * 4 % 256, key * 37 % 256, key * 91 % 256)).save(buffer, "JPEG")
        _jpeg_cache[key] = buffer.getvalue()
    return _jpeg_cache[key]


def _image(path: Path, k: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(k))


def _lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def expected_sizes(name: str, n_train: int = 1, n_val: int = 1, n_test: int = 1) -> dict[str, int]:
    """``split_sizes`` that the reader should report for a generated dataset."""
    c = get_dataset(name).n_classes
    if name == "eurosat":
        return {"class folders": c * (n_train + n_val + n_test), "test": c * n_test}
    if name == "cub":
        return {"train": c * (n_train + n_val), "test": c * n_test}
    return {"train": c * n_train, "val": c * n_val, "test": c * n_test}


def write_dataset(name: str, root: Path, n_train: int = 1, n_val: int = 1, n_test: int = 1) -> Path:
    """Write one dataset under ``root`` in its official layout; returns the dataset folder."""
    info = get_dataset(name)
    folder = Path(root) / info.folder
    counts = {"train": n_train, "val": n_val, "test": n_test}
    {"flowers102": _flowers, "resisc45": _resisc, "dtd": _dtd, "eurosat": _eurosat, "cub": _cub,
     "fgvc_aircraft": _fgvc}[info.name](info.classnames, folder, counts)
    return folder


def write_all(root: Path, n_train: int = 1, n_val: int = 1, n_test: int = 1) -> Path:
    for name in dataset_names():
        write_dataset(name, root, n_train, n_val, n_test)
    return Path(root)


def _numbered_lists(classnames, folder: Path, counts: dict[str, int], relative) -> None:
    """DTD/Flowers/FGVC: ``<split>.txt`` lines '<split>.zip@<relative> <label>', images under <split>/."""
    serial = 0
    for split, n in counts.items():
        lines = []
        for label, name in enumerate(classnames):
            for _ in range(n):
                serial += 1
                rel = relative(label, name, serial)
                _image(folder / split / rel, serial)
                lines.append(f"{split}.zip@{rel} {label}")
        _lines(folder / f"{split}.txt", lines)


def _dtd(classnames, folder, counts):
    _lines(folder / "class_names.txt", list(classnames))
    _numbered_lists(classnames, folder, counts, lambda label, name, k: f"{name}/{name}_{k:04d}.jpg")


def _flowers(classnames, folder, counts):
    _lines(folder / "class_names.txt", list(classnames))
    _numbered_lists(classnames, folder, counts, lambda label, name, k: f"{label:03d}/image_{k:05d}.jpg")


def _fgvc(classnames, folder, counts):
    _lines(folder / "labels.txt", list(classnames))
    _numbered_lists(classnames, folder, counts, lambda label, name, k: f"{name}/{k:07d}.jpg")


def _resisc(classnames, folder, counts):
    class_folders = [name.replace(" ", "_") for name in classnames]
    categories = [{"id": i, "name": f} for i, f in enumerate(class_folders)]
    serial = 0
    for split, n in counts.items():
        images, annotations = [], []
        for label, class_folder in enumerate(class_folders):
            for _ in range(n):
                serial += 1
                rel = f"{class_folder}/{class_folder}_{serial:03d}.jpg"
                _image(folder / rel, serial)
                images.append({"id": serial, "width": SIZE, "height": SIZE, "file_name": f"images.zip@{rel}"})
                annotations.append({"id": serial, "image_id": serial, "category_id": label})
        data = {"images": images, "annotations": annotations, "categories": categories}
        (folder / f"{split}.json").write_text(json.dumps(data), encoding="utf-8")


def _eurosat(classnames, folder, counts):
    _lines(folder / "class_names.txt", list(classnames))
    test_lines = []
    for label, name in enumerate(classnames):
        class_folder = get_dataset("eurosat").class_folders[name]
        total = counts["train"] + counts["val"] + counts["test"]
        for k in range(1, total + 1):
            _image(folder / class_folder / f"{class_folder}_{k}.jpg", label * 100 + k)
            if k > total - counts["test"]:
                test_lines.append(f"2750.zip@{class_folder}/{class_folder}_{k}.jpg {label}")
    _lines(folder / "test.txt", test_lines)


def cub_folder_name(label: int, name: str) -> str:
    """'black footed albatross' -> '001.Black_Footed_Albatross' (the reader lower-cases it back)."""
    return f"{label + 1:03d}." + "_".join(word.capitalize() for word in name.split(" "))


def _cub(classnames, folder, counts):
    base = folder / "CUB_200_2011"
    _lines(base / "classes.txt", [f"{i + 1} {cub_folder_name(i, n)}" for i, n in enumerate(classnames)])
    images, flags, image_id = [], [], 0
    for label, name in enumerate(classnames):
        class_folder = cub_folder_name(label, name)
        for k in range(counts["train"] + counts["val"] + counts["test"]):
            image_id += 1
            rel = f"{class_folder}/{class_folder.split('.')[1]}_{k:04d}_{image_id}.jpg"
            _image(base / "images" / rel, image_id)
            images.append(f"{image_id} {rel}")
            flags.append(f"{image_id} {int(k < counts['train'] + counts['val'])}")
    _lines(base / "images.txt", images)
    _lines(base / "train_test_split.txt", flags)
