"""Figure 8's page: per flagged class, the pseudolabel accuracy of its initial D_PL without and
with concept alignment, the numbers its text quotes, and the gain by the kind of description
chosen, from :func:`analysis.alignment_classes`. The page only shows what these return."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cap.experiments.analysis import alignment_classes
from cap.experiments.report import number

DESCRIPTION_KINDS_SHOWN = ("informative", "vague", "sibling")


def per_class(classes: pd.DataFrame) -> pd.DataFrame:
    """Mean over replicates per flagged class: without, with (``with_``), gain, and the description kind
    chosen most often; planted classes first, each group from the smallest gain up."""
    if not len(classes):
        return classes
    out = classes.groupby(["dataset", "class", "planted"], sort=False).agg(
        seeds=("seed", "count"), without=("without", "mean"), with_=("with", "mean"), gain=("gain", "mean"),
        description=("description", lambda k: k.mode().iloc[0] if k.notna().any() else None)).reset_index()
    return out.sort_values(["planted", "gain"], ascending=[False, True])


def class_table(classes: pd.DataFrame, titles) -> pd.DataFrame:
    """:func:`per_class` for the page; the chosen description's kind only where one is known."""
    shown = pd.DataFrame({"dataset": [titles(d) for d in classes["dataset"]], "class": classes["class"],
                          "known mismatched": classes["planted"],
                          "without alignment (%)": classes["without"], "with alignment (%)": classes["with_"],
                          "gain (points)": classes["gain"]})
    if classes["description"].notna().any():
        shown["chosen description (kind)"] = classes["description"].fillna("—").values
    return shown


def gain_texts(judged: dict) -> dict[str, str]:
    """The text's numbers from :func:`analysis.alignment_gains`."""
    return {"f8_planted_gain": number(judged["effect"], signed=True),
            "f8_planted_n": number(judged["units"], decimals=0),
            "f8_planted_agree": number(judged["gain"], decimals=0),
            "f8_planted_disagree": number(judged["loss"], decimals=0),
            "f8_over_60": number(judged["over_60"], decimals=0),
            "f8_other_gain": number(judged["other_gain"], signed=True, missing="no such class"),
            "f8_other_n": number(judged["other_classes"], decimals=0)}


def description_kind_texts(classes: pd.DataFrame) -> dict[str, str]:
    """Over the planted classes and seeds: the share (percent) of cases whose chosen description is
    of each kind, and their mean gain ("never chosen" for a kind never chosen)."""
    chosen = classes[classes["planted"].astype(bool)] if len(classes) else classes
    by_kind = chosen.groupby("description")["gain"].agg(["count", "mean"]) if len(chosen) else \
        pd.DataFrame(columns=["count", "mean"])
    texts = {}
    for kind in DESCRIPTION_KINDS_SHOWN:
        texts[f"f8_kind_{kind}_share"] = number(100 * by_kind["count"].get(kind, 0) / max(1, len(chosen)), decimals=0)
        texts[f"f8_kind_{kind}_gain"] = number(by_kind["mean"].get(kind, np.nan), signed=True, missing="never chosen")
    return texts


def first_candidate_gain_text(divergence_runs: pd.DataFrame) -> str:
    """The planted classes' mean gain when aligned the official code's way (the divergences
    matrix's ``code_lists`` runs: each aligned with its first candidate description)."""
    first = alignment_classes(divergence_runs[divergence_runs["variant"] == "code_lists"])
    first = first[first["planted"].astype(bool)] if len(first) else first
    return number(first["gain"].mean() if len(first) else np.nan, signed=True, missing="not run yet")
