"""The registry of the paper's six datasets: every per-dataset fact, loaded from ``registry.yml``.

Names, class lists, split sizes, folder names, expected image counts, the official code's
hard-coded mismatch lists and per-dataset overrides, GRIP/CPL rounds and CPL's hyper-parameters
all live in that one file; this module only loads and checks them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import yaml

from cap.errors import CapError, UnknownNameError

PARADIGMS = ("ul", "ssl", "trzsl")


@dataclass(frozen=True)
class CplHyper:
    """CPL's per-dataset values (run-textPT_ALL.sh): α, β in UL/SSL, γ for TRZSL's β = 1 − γ/C_unseen."""

    alpha: float
    beta: float
    gamma: float


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    classnames: tuple[str, ...]
    train_per_class: int
    test_per_class: int
    official_mismatched: tuple[str, ...]
    folder: str  # under the data root, spelled as in the official code
    expected_counts: dict[str, int | None] = field(hash=False)  # images per split file (None: not fixed)
    official_overrides: dict[str, float] = field(hash=False)  # the official code's per-dataset config changes
    rounds: int = 10  # GRIP/CPL iterations
    cpl: CplHyper = CplHyper(0.75, 0.95, 2.0)
    class_folders: dict[str, str] | None = field(default=None, hash=False)  # EuroSAT: class name -> folder
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

    @property
    def official_mismatched_indices(self) -> list[int]:
        """The classes with a hard-coded description in the official code, as sorted indices."""
        return self.class_indices(self.official_mismatched)


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@cache
def _registry() -> dict[str, DatasetInfo]:
    raw_all = yaml.safe_load(resources.files("cap.data").joinpath("registry.yml").read_text())
    infos = {}
    for name, raw in raw_all.items():
        text = resources.files("cap.data").joinpath("classnames", raw["classnames"]).read_text()
        infos[name] = DatasetInfo(
            name=name,
            title=raw["title"],
            classnames=tuple(line.strip() for line in text.splitlines() if line.strip()),
            train_per_class=raw["train_per_class"],
            test_per_class=raw["test_per_class"],
            official_mismatched=tuple(raw["official_mismatched"]),
            folder=raw["folder"],
            expected_counts=dict(raw["expected_counts"]),
            official_overrides=dict(raw.get("official_overrides") or {}),
            rounds=raw["rounds"],
            cpl=CplHyper(**raw["cpl"]),
            class_folders=raw.get("class_folders"),
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
