"""Facts about the paper's six datasets: names, class lists, split sizes, published numbers.

The facts live in ``cap/presets/*.yml``; this module only loads and checks them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

from cap.errors import CapError, UnknownNameError

PARADIGMS = ("ul", "ssl", "trzsl")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    classnames: tuple[str, ...]
    train_per_class: int
    test_per_class: int
    official_mismatched: tuple[str, ...]
    aliases: tuple[str, ...] = ()

    @property
    def n_classes(self) -> int:
        return len(self.classnames)

    def class_indices(self, names: tuple[str, ...] | list[str]) -> list[int]:
        """Indices of ``names`` in the class list; a name not in the list is an error."""
        index = {c: i for i, c in enumerate(self.classnames)}
        missing = [n for n in names if n not in index]
        if missing:
            raise CapError(f"{self.name}: class names {missing} are not in the class list {self.name}.txt")
        return sorted(index[n] for n in names)


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _read_preset(filename: str) -> dict:
    return yaml.safe_load(resources.files("cap.presets").joinpath(filename).read_text())


@cache
def _registry() -> dict[str, DatasetInfo]:
    infos = {}
    for name, raw in _read_preset("datasets.yml").items():
        text = resources.files("cap.classnames").joinpath(raw["classnames"]).read_text()
        infos[name] = DatasetInfo(
            name=name,
            title=raw["title"],
            classnames=tuple(line.strip() for line in text.splitlines() if line.strip()),
            train_per_class=raw["train_per_class"],
            test_per_class=raw["test_per_class"],
            official_mismatched=tuple(raw["official_mismatched"]),
            aliases=tuple(raw.get("aliases", ())),
        )
    return infos


def dataset_names() -> list[str]:
    """Canonical dataset names, in the paper's order."""
    return list(_registry())


def get_dataset(name: str) -> DatasetInfo:
    """Look a dataset up by canonical name or alias (case and punctuation ignored)."""
    if not isinstance(name, str):
        raise UnknownNameError("dataset", name, dataset_names())
    key = _normalise(name)
    for info in _registry().values():
        if key in {_normalise(info.name), *map(_normalise, info.aliases)}:
            return info
    raise UnknownNameError("dataset", name, dataset_names())


def check_paradigm(paradigm: str) -> str:
    if not isinstance(paradigm, str) or paradigm.lower() not in PARADIGMS:
        raise UnknownNameError("paradigm", paradigm, PARADIGMS)
    return paradigm.lower()


@dataclass(frozen=True)
class ReferenceNumber:
    method: str
    paradigm: str
    dataset: str
    value: float
    source: str
    cite: str
    verified: bool


@cache
def reference_numbers() -> tuple[ReferenceNumber, ...]:
    """Every published number we compare against, with its provenance."""
    raw = _read_preset("reference_numbers.yml")
    out = []
    for entry in raw["entries"]:
        source = raw["sources"][entry["source"]]
        out.append(ReferenceNumber(**entry, cite=source["cite"], verified=source["status"] == "verified"))
    return tuple(out)


def reference_training_minutes() -> dict:
    """Appendix D.2's training times (minutes on EuroSAT) with their provenance."""
    raw = _read_preset("reference_numbers.yml")["training_minutes"]
    return {"cite": raw["source"]["cite"], "verified": raw["source"]["status"] == "verified",
            "minutes": {k: v for k, v in raw.items() if k != "source"}}


def reference_number(method: str, paradigm: str, dataset: str) -> ReferenceNumber | None:
    """The published number for one cell, or None when we know none."""
    dataset = get_dataset(dataset).name
    paradigm = check_paradigm(paradigm)
    for ref in reference_numbers():
        if (ref.method, ref.paradigm, ref.dataset) == (method, paradigm, dataset):
            return ref
    return None
