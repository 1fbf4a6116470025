"""The divergences page: CAP with one official-code option switched against the official setting,
seed by seed (:func:`analysis.paired_differences`), as a compact options × datasets table, every
seed folded below it, and the largest effect. The page only shows what these return."""

from __future__ import annotations

from html import escape

import numpy as np
import pandas as pd

from cap.data.registry import get_dataset
from cap.experiments import analysis, report


def _title(dataset: str) -> str:
    return get_dataset(dataset).title


def option_label(variant: str, paradigm: str, labels: dict) -> str:
    """The switched option in words; a paradigm other than UL named after it."""
    return labels[variant] + ("" if paradigm == "ul" else f" ({report.PARADIGM_TITLES[paradigm]})")


def _compact_cell(row: dict, runs: pd.DataFrame, largest: float, links) -> str:
    if np.isnan(row["difference"]):
        return report.NOT_RUN
    group = runs[(runs["variant"] == row["variant"]) & (runs["dataset"] == row["dataset"])
                 & (runs["paradigm"] == row["paradigm"])]
    seeds = report.seed_links(group.to_dict("records"), links)
    diff = report.number(row["difference"], signed=True)
    text = (f"{'<strong>' + diff + '</strong>' if np.isclose(abs(row['difference']), largest) else diff}<br><small>"
            f"{report.mean_std(row['switched'])} vs {report.mean_std(row['official'])}</small>")
    return text + (f"<br><small>{seeds}</small>" if seeds else "")


def compact_html(runs: pd.DataFrame, labels: dict, links=None) -> str:
    """Options × datasets: the mean paired difference (switched − official) over replicates, both means
    below it, each replicate linking to its run; the largest change of each dataset in bold."""
    pairs = analysis.paired_differences(runs)
    if not len(pairs):
        return "<p>No runs planned.</p>"
    largest = pairs.assign(size=pairs["difference"].abs()).groupby("dataset")["size"].max()
    cells = {}
    for row in pairs.to_dict("records"):
        option = escape(option_label(row["variant"], row["paradigm"], labels))
        cells.setdefault(option, {})[escape(_title(row["dataset"]))] = _compact_cell(row, runs, largest[row["dataset"]],
                                                                                    links)
    frame = pd.DataFrame.from_dict(cells, orient="index").fillna("not run for this dataset")
    frame.columns.name = "switched − official (points)"
    return report.wrap_table(frame.to_html(escape=False, border=0, classes="table"),
                             "Bold: the largest change on each dataset. Below it: switched vs official, "
                             "mean ± std over replicates.")


def per_seed_frame(runs: pd.DataFrame, labels: dict) -> pd.DataFrame:
    """Every option, dataset and paradigm: both means ± std, the mean difference and each seed's."""
    pairs = analysis.paired_differences(runs)
    return pd.DataFrame({
        "switched": [labels[v] for v in pairs["variant"]],
        "dataset": [_title(d) for d in pairs["dataset"]],
        "paradigm": [report.PARADIGM_TITLES[p] for p in pairs["paradigm"]],
        "switched (mean ± std)": [report.mean_std(v) for v in pairs["switched"]],
        "official (mean ± std)": [report.mean_std(v) for v in pairs["official"]],
        "switched − official": pairs["difference"],
        "per seed": [", ".join(f"{s}: {report.number(d, signed=True)}" for s, d in p.items()) or report.NOT_RUN
                     for p in pairs["per_seed"]]})


def per_seed_html(runs: pd.DataFrame, labels: dict) -> str:
    """:func:`per_seed_frame` folded under "every seed"."""
    return report.details("every seed", report.html_table(per_seed_frame(runs, labels),
                                                          missing={"switched − official": report.NOT_RUN}))


def largest_text(runs: pd.DataFrame, labels: dict) -> str:
    """The largest paired effect in words: the option, the dataset and the points."""
    pairs = analysis.paired_differences(runs).dropna(subset=["difference"])
    if not len(pairs):
        return "none yet (no results)"
    largest = pairs.loc[pairs["difference"].abs().idxmax()]
    return (f"{labels[largest['variant']]} on {_title(largest['dataset'])}, "
            f"{report.number(largest['difference'], signed=True)} points")
