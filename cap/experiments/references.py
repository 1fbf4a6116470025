"""Published numbers we compare against (``reference_numbers.yml``), each with its provenance."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

from cap.data.registry import check_paradigm, get_dataset


@dataclass(frozen=True)
class ReferenceNumber:
    method: str
    paradigm: str
    dataset: str
    value: float
    source: str
    cite: str
    verified: bool
    label: str = ""  # where the number comes from, as pages name it (e.g. "GRIP README", "CAP paper")


@cache
def _read() -> dict:
    return yaml.safe_load(resources.files("cap.experiments").joinpath("reference_numbers.yml").read_text())


@cache
def reference_numbers() -> tuple[ReferenceNumber, ...]:
    """Every published number we compare against, with its provenance."""
    raw = _read()
    out = []
    for entry in raw["entries"]:
        source = raw["sources"][entry["source"]]
        out.append(ReferenceNumber(**entry, cite=source["cite"], verified=source["status"] == "verified",
                                   label=source["label"]))
    return tuple(out)


def reference_training_minutes() -> dict:
    """Appendix D.2's training times (minutes on EuroSAT) with their provenance."""
    raw = _read()["training_minutes"]
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


def reference_zero_shot_calibration(dataset: str) -> dict:
    """Published zero-shot CLIP calibration of ``dataset`` per backbone (``{backbone: {accuracy,
    ece}}``, empty when none is known) with the source's citation and status."""
    raw = _read()["zero_shot_calibration"]
    dataset = get_dataset(dataset).name
    values = {backbone: numbers[dataset] for backbone, numbers in raw.items() if backbone != "source"
              and dataset in numbers}
    return {"cite": raw["source"]["cite"], "verified": raw["source"]["status"] == "verified", "values": values}
