"""Published numbers on CLIP's embedding geometry (``clip_geometry.yml``), beside a simulated problem's."""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml

QUANTITIES = {  # SimProblem.geometry key -> what it is, in words
    "modality_gap": "distance between the mean image and the mean text",
    "image_image_all": "cosine of two images, all pairs",
    "text_text_all": "cosine of two texts, all pairs",
    "image_text_true_class": "cosine of an image and its own class's text",
}
CLOSE = 0.1  # a simulated value within this of a single published value counts as close


@cache
def published() -> dict[str, dict]:
    """The published values, by :meth:`~cap.sim.problem.SimProblem.geometry` key."""
    return yaml.safe_load(resources.files("cap.sim").joinpath("clip_geometry.yml").read_text())


def compare(geometry: dict[str, float]) -> list[dict]:
    """One row per published quantity: the simulated value (from ``SimProblem.geometry()``), the
    published value or range, whether the simulated value is close (inside the range, or within
    ``CLOSE`` of a single value), and where the published number comes from."""
    rows = []
    for key, what in QUANTITIES.items():
        entry = published()[key]
        if "range" in entry:
            (low, high), shown = entry["range"], "{:.1f} – {:.1f}".format(*entry["range"])
        else:
            (low, high), shown = (entry["value"] - CLOSE, entry["value"] + CLOSE), f"{entry['value']:.2f}"
        rows.append({"quantity": what, "simulated": geometry[key], "CLIP, published": shown,
                     "close": bool(low <= geometry[key] <= high), "measured on": entry["measured_on"],
                     "source": entry["source"], "verified": entry["verified"], "url": entry["url"]})
    return rows
