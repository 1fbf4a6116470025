"""Read the six real datasets from disk, in the layout the official code expects.

The official CAP code (a fork of Menghini et al.'s, sharing data loading with CPL) reads the
ELEVATER split files under ``$DATASET_DIR/<Folder>/`` (``utils/prepare_data.py``) and resolves
image paths as ``data/dataset.py`` does. This module reproduces what those two files read, so a
copy that runs the official code reads here too, and the same images get the same labels:

* the training pool is the train + val split files (CUB: the official train split);
* class indices follow ``cap/data/classnames/<name>.txt``, which equals the official class files;
  the class list on disk is checked against it;
* images come in split-file order (train lines, then val lines), as the official code reads them,
  so the per-class SSL draw picks the same images. Where the official code lists a directory
  (EuroSAT's class folders, ``os.listdir``: arbitrary order) the names are sorted instead.

Every problem is a :class:`DataError` saying what is wrong and what to do.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cap.data.registry import DatasetInfo, dataset_names, get_dataset
from cap.errors import CapError

log = logging.getLogger(__name__)

DATA_ROOT_ENV = "CAP_DATA_ROOT"

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff"})

LAYOUTS = {
    "flowers102": """\
Flowers102/
  class_names.txt               102 class names, one a line, in label order
  train.txt val.txt test.txt    one image a line: <zip>@<NNN>/image_<n>.jpg <label>
  train/<NNN>/image_<n>.jpg     and the same under val/ and test/""",
    "resisc45": """\
RESICS45/                       (sic: the official code's spelling)
  train.json val.json test.json {"images": [{"file_name": "<zip>@<class_folder>/<image>.jpg", ...}, ...],
                                 "categories": [{"name": "<class_folder>", ...}, ...]} (label order)
  <class_folder>/<image>.jpg    e.g. baseball_diamond/baseball_diamond_001.jpg""",
    "dtd": """\
DTD/
  class_names.txt               47 class names, one a line, in label order
  train.txt val.txt test.txt    one image a line: <zip>@<class>/<image>.jpg <label>
  train/<class>/<image>.jpg     and the same under val/ and test/""",
    "eurosat": """\
EuroSAT/
  class_names.txt               10 descriptive class names, one a line, in label order
  test.txt                      one test image a line: <zip>@<Folder>/<Folder>_<n>.jpg <label>
  AnnualCrop/ Forest/ HerbaceousVegetation/ Highway/ Industrial/
  Pasture/ PermanentCrop/ Residential/ River/ SeaLake/
                                every image, test images included: <Folder>_<n>.jpg""",
    "cub": """\
CUB/
  CUB_200_2011/                 the official CUB-200-2011 archive, unpacked
    classes.txt                 <class id> <NNN>.<Class_Name>
    images.txt                  <image id> <NNN>.<Class_Name>/<image>.jpg
    train_test_split.txt        <image id> <1 = train, 0 = test>
    images/<NNN>.<Class_Name>/<image>.jpg""",
    "fgvc_aircraft": """\
FGVCAircraft/
  labels.txt                    100 variant names, one a line, in label order
  train.txt val.txt test.txt    one image a line: <zip>@<variant>/<image>.jpg <label>
                                (variant names may contain spaces; the folder gives the class)
  train/<variant>/<image>.jpg   and the same under val/ and test/""",
}


class DataError(CapError):
    """A dataset on disk that cannot be read the way the official code reads it."""


class DataRootError(DataError):
    """No data root given, or it does not exist."""


class DatasetFolderError(DataError):
    """A dataset's folder, or a class folder inside it, is missing."""


class SplitFileError(DataError):
    """A split or class file that is missing, malformed or inconsistent with the images."""


@dataclass
class ImageList:
    """Image files (absolute paths) and their class indices, in a fixed order."""

    paths: list[str]
    labels: np.ndarray

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.shape != (len(self.paths),):
            raise ValueError(f"{len(self.paths)} paths but labels of shape {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class DatasetFiles:
    """One dataset as read from disk.

    ``train`` is the training pool every paradigm draws from; ``split_sizes`` counts the images
    each split file (or EuroSAT's class folders) contributed, for comparison with ELEVATER.
    """

    name: str
    root: Path
    classnames: tuple[str, ...]
    train: ImageList
    test: ImageList
    split_sizes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Item:
    path: Path
    label: int
    where: str  # "file:line" (or "file images[k]"), for error messages


_Parsed = tuple[list[_Item], list[_Item], dict[str, int]]  # training pool, test split, split sizes


def data_root(root: str | Path | None = None) -> Path:
    """The folder that holds the dataset folders: ``root`` if given, else ``$CAP_DATA_ROOT``."""
    if root is None:
        root = os.environ.get(DATA_ROOT_ENV) or None
    if root is None:
        raise DataRootError(
            f"no data root given: pass --root DIR (root=... in Python) or set {DATA_ROOT_ENV} to the "
            f"folder that holds {', '.join(get_dataset(n).folder for n in dataset_names())}; book/getting_the_data.md says where "
            "to get them")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataRootError(
            f"data root {path} is not a directory: pass --root DIR or set {DATA_ROOT_ENV} to the "
            f"folder that holds {', '.join(get_dataset(n).folder for n in dataset_names())}")
    return path.resolve()


def read_dataset(name: str, root: str | Path | None = None, eurosat_test_in_pool: bool = True) -> DatasetFiles:
    """Read one dataset's training pool and test split.

    ``eurosat_test_in_pool`` keeps the official EuroSAT quirk: the pool is every image in the
    class folders, test images included (the published numbers were produced so). ``False``
    removes the test images from the pool (a clean protocol). Other datasets ignore it.
    """
    info = get_dataset(name)
    folder = data_root(root) / info.folder
    if not folder.is_dir():
        raise DatasetFolderError(
            f"{info.title}: folder {folder} does not exist. Expected layout:\n{LAYOUTS[info.name]}\n"
            f"Get the data as book/getting_the_data.md describes, then run "
            f"`python -m cap data check {info.name}`.")
    if info.name == "eurosat":
        pool, test, sizes = _read_eurosat(info, folder, eurosat_test_in_pool)
    else:
        pool, test, sizes = _READERS[info.name](info, folder)
    for part, items in (("training pool", pool), ("test split", test)):
        if not items:
            raise SplitFileError(f"{info.title}: the {part} under {folder} is empty. Expected layout:\n"
                                 f"{LAYOUTS[info.name]}")
    _require_files(info, pool + test)
    log.info("%s: %d training-pool and %d test images under %s", info.title, len(pool), len(test), folder)
    return DatasetFiles(info.name, folder, info.classnames, _image_list(pool), _image_list(test), sizes)


def _image_list(items: list[_Item]) -> ImageList:
    return ImageList([str(item.path) for item in items], np.array([item.label for item in items], dtype=np.int64))


def _require_files(info: DatasetInfo, items: list[_Item]) -> None:
    missing = [item for item in items if not item.path.is_file()]
    if missing:
        first = missing[0]
        raise SplitFileError(
            f"{info.title}: {len(missing)} image(s) named in the split files do not exist; the first: "
            f"{first.where} names {first.path}. Re-download the dataset or fix the layout:\n"
            f"{LAYOUTS[info.name]}")


def _read_text(path: Path, info: DatasetInfo) -> str:
    """The UTF-8 text of a split or class file; binary or otherwise undecodable content is a SplitFileError."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SplitFileError(f"{info.title}: {path} is not a UTF-8 text file (byte {err.object[err.start]:#04x} at "
                             f"offset {err.start}); replace it with the text split file of the official layout "
                             "(book/getting_the_data.md)") from None


def _text_lines(path: Path, info: DatasetInfo) -> list[tuple[int, str]]:
    """Numbered non-blank lines of a split or class file; a missing file is an error."""
    if not path.is_file():
        raise SplitFileError(f"{info.title}: {path} is missing. Expected layout:\n{LAYOUTS[info.name]}")
    lines = _read_text(path, info).splitlines()
    return [(number, line.strip()) for number, line in enumerate(lines, 1) if line.strip()]


def _class_index(info: DatasetInfo, disk_names: list[str], source: Path) -> dict[str, int]:
    """Map the class names found on disk to indices of the shipped class list (checked equal as sets)."""
    shipped = set(info.classnames)
    only_disk = sorted(set(disk_names) - shipped)
    only_shipped = sorted(shipped - set(disk_names))
    if only_disk or only_shipped or len(disk_names) != len(shipped):
        duplicates = sorted({n for n in disk_names if disk_names.count(n) > 1})
        raise SplitFileError(
            f"{info.title}: the classes in {source} differ from cap/data/classnames/{info.name}.txt "
            f"(the official class list): only on disk {only_disk}, only in the class list {only_shipped}"
            + (f", repeated on disk {duplicates}" if duplicates else "")
            + ". Use the class files of the official code (see book/getting_the_data.md).")
    if tuple(disk_names) != info.classnames:
        log.warning("%s: %s lists the classes in another order; labels follow cap/data/classnames/%s.txt",
                    info.title, source, info.name)
    return {name: info.classnames.index(name) for name in disk_names}


def _index_line(text: str, where: str, info: DatasetInfo) -> tuple[str, str]:
    """Split an ELEVATER index line ``<zip>@<relative path> <label>`` into path and label text."""
    parts = text.rsplit(maxsplit=1)
    if len(parts) != 2:
        raise SplitFileError(f"{info.title}: {where}: malformed line {text!r}; expected "
                             "'<zip>@<relative path> <label>'")
    return parts[0].split("@")[-1].lstrip("/"), parts[1]


def _label(label_text: str, n_classes: int, where: str, info: DatasetInfo, names_file: str) -> int:
    try:
        label = int(label_text)
    except ValueError:
        raise SplitFileError(f"{info.title}: {where}: label {label_text!r} is not an integer") from None
    if not 0 <= label < n_classes:
        raise SplitFileError(f"{info.title}: {where}: label {label} is outside 0..{n_classes - 1}, "
                             f"the classes of {names_file}")
    return label


def _read_split_lists(info: DatasetInfo, folder: Path, names_file: str, class_of) -> _Parsed:
    """train/val/test.txt lists of "relative-path label" lines, classes named in ``names_file``;
    ``class_of(relative, label_text, where, names)`` says which of those names a line belongs to."""
    names = [line for _, line in _text_lines(folder / names_file, info)]
    index = _class_index(info, names, folder / names_file)
    splits = {}
    for split in ("train", "val", "test"):
        items = []
        for number, text in _text_lines(folder / f"{split}.txt", info):
            where = f"{split}.txt:{number}"
            relative, label_text = _index_line(text, where, info)
            items.append(_Item(folder / split / relative, index[class_of(relative, label_text, where, names)], where))
        splits[split] = items
    return splits["train"] + splits["val"], splits["test"], {s: len(v) for s, v in splits.items()}


def _read_numbered_lists(info: DatasetInfo, folder: Path, names_file: str = "class_names.txt") -> _Parsed:
    """DTD and Flowers102: the integer label indexes the dataset's own class file."""

    def class_of(relative, label_text, where, names):
        return names[_label(label_text, len(names), where, info, names_file)]

    return _read_split_lists(info, folder, names_file, class_of)


def _read_fgvc(info: DatasetInfo, folder: Path) -> _Parsed:
    """FGVC-Aircraft: the class is the image's folder (a name in labels.txt); the label number is unused."""

    def class_of(relative, label_text, where, names):
        variant = relative.split("/")[0].strip()
        if "/" not in relative or variant not in names:
            raise SplitFileError(f"{info.title}: {where}: class folder {variant!r} of {relative!r} "
                                 "is not a variant of labels.txt")
        return variant

    return _read_split_lists(info, folder, "labels.txt", class_of)


def _load_json(path: Path, info: DatasetInfo) -> dict:
    if not path.is_file():
        raise SplitFileError(f"{info.title}: split file {path} is missing. Expected layout:\n{LAYOUTS[info.name]}")
    try:
        data = json.loads(_read_text(path, info))
    except json.JSONDecodeError as err:
        raise SplitFileError(f"{info.title}: {path.name}:{err.lineno}: not valid JSON ({err.msg}); "
                             "re-download the split files") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise SplitFileError(f"{info.title}: {path.name} has no 'images' list. Expected layout:\n{LAYOUTS[info.name]}")
    return data


def _read_resisc(info: DatasetInfo, folder: Path) -> _Parsed:
    """RESISC45 (COCO-style JSON): the class is the image's folder, with '_' read as a space."""
    train = _load_json(folder / "train.json", info)
    categories = train.get("categories")
    if not isinstance(categories, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str)
                                                   for c in categories):
        raise SplitFileError(f"{info.title}: train.json has no 'categories' list of {{'name': ...}} entries")
    index = _class_index(info, [c["name"].replace("_", " ") for c in categories], folder / "train.json")
    splits = {}
    for split in ("train", "val", "test"):
        data = train if split == "train" else _load_json(folder / f"{split}.json", info)
        items = []
        for k, image in enumerate(data["images"]):
            where = f"{split}.json images[{k}]"
            file_name = image.get("file_name") if isinstance(image, dict) else None
            if not isinstance(file_name, str):
                raise SplitFileError(f"{info.title}: {where} has no 'file_name'")
            relative = file_name.split("@")[-1].lstrip("/")
            classname = relative.split("/")[0].replace("_", " ")
            if "/" not in relative or classname not in index:
                raise SplitFileError(f"{info.title}: {where}: class folder of {file_name!r} is not a category "
                                     "of train.json")
            items.append(_Item(folder / relative, index[classname], where))
        splits[split] = items
    return splits["train"] + splits["val"], splits["test"], {s: len(v) for s, v in splits.items()}


def _read_eurosat(info: DatasetInfo, folder: Path, test_in_pool: bool) -> _Parsed:
    """EuroSAT: the pool is every image in the class folders; test.txt names the test images."""
    names = [line for _, line in _text_lines(folder / "class_names.txt", info)]
    index = _class_index(info, names, folder / "class_names.txt")
    pool = []
    for classname in info.classnames:  # class order, as the official loop over classes
        class_folder = folder / info.class_folders[classname]
        if not class_folder.is_dir():
            raise DatasetFolderError(f"{info.title}: class folder {class_folder} is missing. Expected layout:\n"
                                     f"{LAYOUTS[info.name]}")
        files = sorted(p for p in class_folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        pool += [_Item(p, index[classname], f"{class_folder.name}/") for p in files]
    by_folder = {f: c for c, f in info.class_folders.items()}
    test = []
    for number, text in _text_lines(folder / "test.txt", info):
        where = f"test.txt:{number}"
        relative, label_text = _index_line(text, where, info)
        classname = names[_label(label_text, len(names), where, info, "class_names.txt")]
        base = relative.split("/")[-1]
        prefix = base.split("_")[0]
        if by_folder.get(prefix) != classname:
            raise SplitFileError(f"{info.title}: {where}: {base} is labelled {classname!r} but its name puts "
                                 f"it in folder {prefix}/, which holds {by_folder.get(prefix, 'no class')!r}")
        test.append(_Item(folder / prefix / base, index[classname], where))
    sizes = {"class folders": len(pool), "test": len(test)}
    if not test_in_pool:
        test_paths = {item.path for item in test}
        pool = [item for item in pool if item.path not in test_paths]
    return pool, test, sizes


def _cub_classname(folder_name: str) -> str:
    """'001.Black_footed_Albatross' -> 'black footed albatross', as the official code cleans them."""
    return folder_name.split(".")[-1].replace("_", " ").lower()


def _read_cub(info: DatasetInfo, folder: Path) -> _Parsed:
    """CUB-200-2011: images.txt and train_test_split.txt joined by image id; the folder gives the class."""
    base = folder / "CUB_200_2011"

    def columns(filename: str) -> list[tuple[str, str, str]]:
        rows = []
        for number, text in _text_lines(base / filename, info):
            parts = text.split(maxsplit=1)
            if len(parts) != 2:
                raise SplitFileError(f"{info.title}: {filename}:{number}: malformed line {text!r}; "
                                     "expected '<id> <value>'")
            rows.append((f"{filename}:{number}", parts[0], parts[1]))
        return rows

    index = _class_index(info, [_cub_classname(name) for _, _, name in columns("classes.txt")], base / "classes.txt")
    is_train = {}
    for where, image_id, flag in columns("train_test_split.txt"):
        if flag not in ("0", "1"):
            raise SplitFileError(f"{info.title}: {where}: split flag {flag!r} is neither 1 (train) nor 0 (test)")
        is_train[image_id] = flag == "1"
    train, test = [], []
    for where, image_id, relative in columns("images.txt"):
        classname = _cub_classname(relative.split("/")[0])
        if "/" not in relative or classname not in index:
            raise SplitFileError(f"{info.title}: {where}: class folder of {relative!r} is not a class of classes.txt")
        if image_id not in is_train:
            raise SplitFileError(f"{info.title}: {where}: image id {image_id} has no line in train_test_split.txt")
        (train if is_train[image_id] else test).append(_Item(base / "images" / relative, index[classname], where))
    return train, test, {"train": len(train), "test": len(test)}


_READERS: dict[str, Callable[[DatasetInfo, Path], _Parsed]] = {
    "flowers102": _read_numbered_lists,
    "resisc45": _read_resisc,
    "dtd": _read_numbered_lists,
    "cub": _read_cub,
    "fgvc_aircraft": _read_fgvc,
}
