"""Candidate visual descriptions of the concept-mismatched classes (concept alignment, spec §2.3).

The paper asks an LLM (GPT-4o-mini) for n = 5 visual descriptions of each mismatched class and keeps
the one closest to the class's image cluster; the official code ships one fixed description per
class instead. This package ships five descriptions per class of the official code's mismatched
lists, written for this companion (each file's ``provenance`` says by whom, when and how), in
``cap/data/descriptions/<dataset>.yml``::

    provenance:
      written_by: ...   # who or what wrote them
      date: ...
      prompt: "..."     # the exact prompt used per class
      method: ...       # how they were produced / reviewed
    classes:
      "sweet william": ["...", "...", ...]

A user file in the same format replaces the shipped one (``load_descriptions(dataset, path)``;
runs on images take the path from the run config's ``descriptions`` field). Class names must be exactly those of
``cap/data/classnames/<dataset>.txt``; a class may be absent (it then keeps its zero-shot pseudolabels).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from cap.data.registry import get_dataset
from cap.errors import CapError

PROVENANCE_KEYS = ("written_by", "date", "prompt", "method")


class DescriptionsError(CapError):
    """A descriptions file that is missing, not valid YAML, or not in the expected format."""


@dataclass(frozen=True)
class DescriptionsFile:
    """One descriptions file: where it came from, its provenance and the descriptions per class name."""

    dataset: str
    source: str  # the file's path (shipped files: "cap/data/descriptions/<dataset>.yml")
    provenance: dict
    classes: dict[str, list[str]]


class DuplicateKeyError(yaml.YAMLError):
    """A key given twice in one YAML mapping (``key``; ``mark``: where the second one is)."""

    def __init__(self, key, mark):
        super().__init__(f"key {key!r} appears twice ({mark})")
        self.key, self.mark = key, mark


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key repeated in one mapping (plain YAML keeps the last silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise DuplicateKeyError(key, key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


def load_unique_keys(text: str):
    """``yaml.safe_load`` that refuses a key repeated in one mapping (:class:`DuplicateKeyError`)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def shipped_path(dataset: str) -> str:
    """The name of the shipped file of ``dataset`` (for messages and records)."""
    return f"cap/data/descriptions/{get_dataset(dataset).name}.yml"


def _read_text(dataset: str, path: str | os.PathLike | None) -> tuple[str, str]:
    name = get_dataset(dataset).name
    if path is None:
        resource = resources.files("cap.data").joinpath("descriptions", f"{name}.yml")
        if not resource.is_file():
            raise DescriptionsError(f"no shipped descriptions file {shipped_path(name)}; pass a file in the "
                                    f"format of cap/data/descriptions/flowers102.yml (the run config's descriptions field)")
        return resource.read_text(encoding="utf-8"), shipped_path(name)
    file = Path(path).expanduser()
    if not file.is_file():
        raise DescriptionsError(f"descriptions file {file} does not exist; point the descriptions setting at a "
                                f"YAML file in the format of {shipped_path(name)}, or leave it unset to use that file")
    return file.read_text(encoding="utf-8"), str(file)


def load_descriptions_file(dataset: str, path: str | os.PathLike | None = None) -> DescriptionsFile:
    """Read and validate the descriptions of ``dataset``: the shipped file, or the file at ``path``.

    Errors (:class:`DescriptionsError`) name the file and what is wrong: invalid YAML, a missing
    or unknown top-level key, missing provenance keys, class names not in the dataset's class
    list (all of them listed), an empty or non-string description list."""
    info = get_dataset(dataset)
    text, source = _read_text(info.name, path)
    try:
        data = load_unique_keys(text)
    except DuplicateKeyError as err:
        raise DescriptionsError(f"descriptions file {source}: {err}") from None
    except yaml.YAMLError as err:
        raise DescriptionsError(f"descriptions file {source} is not valid YAML: {err}") from None
    if not isinstance(data, dict) or set(data) != {"provenance", "classes"}:
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise DescriptionsError(f"descriptions file {source} must be a mapping with exactly the keys 'provenance' "
                                f"and 'classes' (see {shipped_path(info.name)}), found {found}")
    provenance = data["provenance"]
    if not isinstance(provenance, dict):
        raise DescriptionsError(f"descriptions file {source}: 'provenance' must be a mapping with the keys "
                                f"{list(PROVENANCE_KEYS)}")
    missing = [k for k in PROVENANCE_KEYS if provenance.get(k) in (None, "")]
    if missing:
        raise DescriptionsError(f"descriptions file {source}: provenance lacks {missing}; say who wrote the "
                                f"descriptions, when, with which prompt and how ({list(PROVENANCE_KEYS)})")
    classes = data["classes"]
    if classes is None:
        classes = {}
    if not isinstance(classes, dict):
        raise DescriptionsError(f"descriptions file {source}: 'classes' must be a mapping "
                                f"class name -> list of descriptions, got {type(classes).__name__}")
    not_str = [k for k in classes if not isinstance(k, str)]
    if not_str:
        raise DescriptionsError(f"descriptions file {source}: class names {not_str} are not strings; quote them")
    unknown = [k for k in classes if k not in set(info.classnames)]
    if unknown:
        raise DescriptionsError(f"descriptions file {source}: class names {unknown} are not classes of "
                                f"{info.title} (cap/data/classnames/{info.name}.txt); use the names exactly as listed there")
    out = {}
    for name, items in classes.items():
        if not isinstance(items, list) or not items:
            raise DescriptionsError(f"descriptions file {source}: class {name!r} needs a non-empty list of "
                                    f"descriptions, got {items!r}")
        bad = [d for d in items if not isinstance(d, str) or not d.strip()]
        if bad:
            raise DescriptionsError(f"descriptions file {source}: class {name!r} has descriptions that are not "
                                    f"non-empty strings: {bad!r}")
        out[name] = [d.strip() for d in items]
    return DescriptionsFile(info.name, source, dict(provenance), out)


def load_descriptions(dataset: str, path: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """{class name: candidate descriptions} of ``dataset`` (shipped file, or the file at ``path``)."""
    return load_descriptions_file(dataset, path).classes
