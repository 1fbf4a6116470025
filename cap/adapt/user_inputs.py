"""What `cap adapt` reads: a folder of unlabelled images, a class-names file, and optionally a few
labelled images per class and candidate descriptions per class.

* **Images**: every file with an image suffix under the folder, at any depth, in sorted path order
  (hidden files and folders skipped). Each is decoded once before anything else; a file that
  cannot be decoded is skipped and listed, never fatal.
* **Class names**: a UTF-8 text file, one name a line, blank lines ignored. Names are the class
  prompts ("a photo of a " + name), so write them as words ("sea lake", not "SeaLake").
* **Labelled images** (optional, the SSL paradigm): a folder with one sub-folder per class, named
  as in the class-names file (spaces may be underscores); images at any depth inside it.
* **Descriptions** (optional): a YAML or JSON mapping class name -> list of candidate visual
  descriptions (a single string is a list of one)::

      crane: ["a tall long-legged grey bird standing in shallow water", "a wading bird with a long neck"]

Every problem is an :class:`InputError` naming the file and saying what to do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from torch.utils.data import DataLoader, Dataset

from cap.data.description_texts import DuplicateKeyError, load_unique_keys
from cap.data.images import ImageReadError, load_rgb
from cap.data.readers import IMAGE_SUFFIXES
from cap.errors import CapError

log = logging.getLogger(__name__)

SUFFIXES = frozenset(IMAGE_SUFFIXES | {".bmp", ".webp", ".gif"})


class InputError(CapError):
    """An input file or folder of `cap adapt` / `cap predict` that cannot be used as it is."""


@dataclass
class AdaptInputs:
    """Everything read from the user's files, before any model is loaded."""

    classnames: list[str]
    images: list[str]  # readable unlabelled images, sorted
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why) of unreadable images
    labelled_paths: list[str] = field(default_factory=list)
    labelled_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    descriptions: dict[str, list[str]] = field(default_factory=dict)
    descriptions_file: str | None = None


def _decode_utf8(path: Path, what: str, fix: str) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[:err.start].count(b"\n") + 1
        raise InputError(f"{what} {path} is not UTF-8 text (byte {err.start}, line {line}): {fix}") from None
    except OSError as err:
        raise InputError(f"{what} {path} cannot be read ({err.strerror or err}): {fix}") from None


def read_classnames(path: str | Path) -> list[str]:
    """The class names of ``path``, one a line, blank lines ignored; at least two, no duplicates
    (compared case-insensitively: two prompts that differ only in case are one class to CLIP)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"class names file {path} does not exist; give a text file with one class name a line")
    text = _decode_utf8(path, "class names file", "save it as UTF-8 (one class name a line)")
    names, first_line = [], {}
    for number, line in enumerate(text.splitlines(), 1):
        name = " ".join(line.split())
        if not name:
            continue
        if name.casefold() in first_line:
            raise InputError(f"class names file {path}: {name!r} on line {number} repeats line "
                             f"{first_line[name.casefold()]}; each class must be named once")
        first_line[name.casefold()] = number
        names.append(name)
    if len(names) < 2:
        raise InputError(f"class names file {path} names {len(names)} class{'' if len(names) == 1 else 'es'}; CAP "
                         "tells classes apart, so give at least two, one a line")
    return names


def find_images(folder: str | Path, what: str = "image folder") -> list[str]:
    """Every image file under ``folder`` (any depth; hidden entries skipped), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{what} {folder} does not exist or is not a folder; give the folder that holds the images")
    found, others = [], 0
    for path in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts) or not path.is_file():
            continue
        if path.suffix.lower() in SUFFIXES:
            found.append(str(path))
        else:
            others += 1
    if not found:
        raise InputError(f"{what} {folder} holds no images ({others} other files); images are files ending in "
                         f"{', '.join(sorted(SUFFIXES))}, at any depth")
    return found


class _Probe(Dataset):
    """Item i: "" if image i decodes, else why not (decoded in DataLoader workers)."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> str:
        try:
            load_rgb(self.paths[i])
            return ""
        except ImageReadError as err:
            return str(err.__cause__ or err).splitlines()[0] or type(err.__cause__).__name__


def readable_images(paths: list[str], workers: int = 0) -> tuple[list[str], list[tuple[str, str]]]:
    """(the paths that decode, [(path, why) of those that do not]), each in the given order."""
    loader = DataLoader(_Probe(paths), batch_size=64, num_workers=workers, collate_fn=list)
    problems = [p for batch in loader for p in batch]
    skipped = [(path, why) for path, why in zip(paths, problems) if why]
    for path, why in skipped:
        log.warning("skipped %s: it cannot be read as an image (%s)", path, why)
    return [path for path, why in zip(paths, problems) if not why], skipped


def _class_folder_index(classnames: list[str]) -> dict[str, int]:
    index = {}
    for i, name in enumerate(classnames):
        for spelling in (name, name.replace(" ", "_")):
            index[spelling.casefold()] = i
    return index


def read_labelled(folder: str | Path, classnames: list[str], workers: int = 0):
    """(paths, labels, skipped) of the labelled images: one sub-folder per class name."""
    folder = Path(folder)
    paths = find_images(folder, "labelled image folder")
    index = _class_folder_index(classnames)
    top = {Path(p).relative_to(folder).parts[0] for p in paths}
    loose = sorted(t for t in top if (folder / t).is_file())
    if loose:
        raise InputError(f"labelled image folder {folder} has images outside class sub-folders ({loose[:3]}); put "
                         f"each image in a sub-folder named after its class, e.g. {folder / classnames[0]}/")
    unknown = sorted(t for t in top if t.casefold() not in index)
    if unknown:
        raise InputError(f"labelled image folder {folder}: sub-folders {unknown} are not class names of the class "
                         f"names file; name each sub-folder exactly as its class ({', '.join(classnames)})")
    paths, skipped = readable_images(paths, workers)
    labels = np.array([index[Path(p).relative_to(folder).parts[0].casefold()] for p in paths], dtype=np.int64)
    return paths, labels, skipped


_FORMAT = 'a mapping class name -> list of descriptions, e.g. {"crane": ["a tall grey wading bird", "..."]}'


def _parse_descriptions(path: Path):
    text = _decode_utf8(path, "descriptions file", f"save it as UTF-8 YAML or JSON: {_FORMAT}")
    try:
        return load_unique_keys(text)
    except DuplicateKeyError as err:
        raise InputError(f"descriptions file {path}: class {err.key!r} is given twice (the second time on line "
                         f"{err.mark.line + 1}); give each class once, with all its descriptions in one list") from None
    except yaml.YAMLError as err:
        raise InputError(f"descriptions file {path} is not valid YAML or JSON ({str(err).splitlines()[0]}): "
                         f"it must be {_FORMAT}") from None


def read_descriptions(path: str | Path, classnames: list[str]) -> dict[str, list[str]]:
    """{class name: candidate descriptions} of the file at ``path``; classes may be left out."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"descriptions file {path} does not exist; give a YAML or JSON file: {_FORMAT}")
    data = _parse_descriptions(path)
    if not isinstance(data, dict):
        raise InputError(f"descriptions file {path} holds a {type(data).__name__}; it must be {_FORMAT}")
    names = {name.casefold(): name for name in classnames}
    unknown = [str(k) for k in data if str(k).casefold() not in names]
    if unknown:
        raise InputError(f"descriptions file {path}: {unknown} are not in the class names file; use the class "
                         f"names as listed there ({', '.join(classnames)})")
    out = {}
    for key, items in data.items():
        items = [items] if isinstance(items, str) else items
        if not isinstance(items, list) or not items or not all(isinstance(d, str) and d.strip() for d in items):
            raise InputError(f"descriptions file {path}: class {key!r} needs a non-empty list of non-empty strings, "
                             f"got {items!r}")
        out[names[str(key).casefold()]] = [" ".join(d.split()) for d in items]
    return out


def read_inputs(images: str | Path, classnames: str | Path, labelled: str | Path | None = None,
                descriptions: str | Path | None = None, workers: int = 0) -> AdaptInputs:
    """Read and check every input; decode every image once, skipping (and listing) unreadable ones."""
    names = read_classnames(classnames)
    described = read_descriptions(descriptions, names) if descriptions is not None else {}
    paths = find_images(images)
    labelled_paths, labels, labelled_skipped = ([], np.zeros(0, dtype=np.int64), [])
    if labelled is not None:
        labelled_paths, labels, labelled_skipped = read_labelled(labelled, names, workers)
        # a labelled folder inside the image folder: its images are labelled, not unlabelled as well
        # (a held-out image must never be trained on)
        known = {Path(p).resolve() for p in labelled_paths} | {Path(p).resolve() for p, _ in labelled_skipped}
        paths = [p for p in paths if Path(p).resolve() not in known]
    readable, skipped = readable_images(paths, workers)
    if not readable:
        raise InputError(f"image folder {images}: none of its {len(paths)} images can be read (first: "
                         f"{skipped[0][0]}: {skipped[0][1]}); check the files are images")
    return AdaptInputs(names, readable, skipped + labelled_skipped, labelled_paths, labels, described,
                       str(descriptions) if descriptions is not None else None)
