"""The sweep pages (Figures 6, 7, 10 and 11): the swept axis in words, the table of swept values
× datasets and the spread the text quotes, from a sweep matrix's runs. The page only shows what
these return."""

from __future__ import annotations

import pandas as pd

from cap.data.registry import get_dataset
from cap.experiments import analysis, report
from cap.experiments.claims_page import sweep_exclusions
from cap.experiments.matrix import load_matrix

# Axis titles in words, with units, and the factor a swept value is shown with (the unlabelled
# fraction in percent).
AXES = {"k": ("k, initial pseudolabels per class (images)", 1),
        "tau": ("confidence threshold τ (max softmax probability)", 1),
        "margin_scale": ("margin scale m (logit units)", 1),
        "unlabelled_fraction": ("unlabelled images used (% of the pool)", 100)}


def axis(field: str) -> tuple[str, float]:
    """The axis title and display factor of a swept config field (its name and 1 if unknown)."""
    return AXES.get(field, (field, 1))


def sweep_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over replicates per dataset, paradigm and swept value (no published numbers: the
    paper's sweeps are figures whose values are not transcribed)."""
    return report.summarise(runs, ["dataset", "paradigm", "sweep"], paper=False)


def table_html(cells: pd.DataFrame, matrix: str, profile: str, links=None) -> str:
    """Swept values × datasets (the best of a dataset in bold where it leads beyond the spread),
    then the official settings."""
    title, scale = axis(load_matrix(matrix).sweep_field)
    cells = cells.assign(**{title: [f"{float(v) * scale:g}" for v in cells["sweep"]]})
    official = {get_dataset(d).title: analysis.official_setting(matrix, profile, d) for d in cells["dataset"].unique()}
    where = "; ".join(f"{t} {float(v) * scale:g}" for t, v in official.items() if v is not None)
    return report.wide_html(cells, rows=title, columns="dataset", links=links) + \
        f'<p class="table-note">Official setting: {where}.</p>'


def spread_texts(matrix: str, cells: pd.DataFrame) -> tuple[float, str, str]:
    """The largest spread of a dataset's means over the swept values (0 without results), it in
    words, and the sentence on the values the claims page's robustness rule leaves out."""
    title, scale = axis(load_matrix(matrix).sweep_field)
    spread = analysis.sweep_spread(cells)
    largest = float(spread.max()) if len(spread) else 0.0
    text = f"{spread.max():.1f} points" if len(spread) else "nothing yet (no results)"
    excluded, why = sweep_exclusions(matrix)
    judged = analysis.sweep_spread(cells[~cells["sweep"].astype(float).isin(excluded)]) if excluded and len(cells) \
        else spread
    if excluded and len(judged):
        values = ", ".join(f"{title} = {v * scale:g}" for v in excluded)
        return largest, text, (f"The claims page judges the robustness claim without {values} ({why}); without it, "
                               f"accuracy moves by at most {judged.max():.1f} points on a dataset.")
    return largest, text, "The claims page judges the robustness claim on every swept value shown here."
