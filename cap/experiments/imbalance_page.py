"""Figures 1 and 2's page: how imbalanced zero-shot CLIP's predictions are, per dataset, from
:func:`analysis.first_replicate_per_class`. The page only shows what these return."""

from __future__ import annotations

import numpy as np

from cap.experiments import analysis, report

BALANCE_COLUMNS = {"below_10": "classes below 10 % accuracy", "classes": "classes",
                   "under_predicted": "under-predicted share (%)", "imbalance_ratio": "most / least predicted",
                   "entropy": "normalised entropy"}
BALANCE_NOTE = ("Under-predicted: predicted fewer than half as often as the class occurs in the test split. "
                "Normalised entropy: 1 when every class is predicted equally often.")


def balance_frame(data: dict[str, tuple], titles):
    """:func:`analysis.balance_table` with its columns named for readers."""
    return analysis.balance_table(data, titles).rename(columns=BALANCE_COLUMNS)


def balance_html(data: dict[str, tuple], titles) -> str:
    """:func:`balance_frame` as the page's table, with the note that defines its columns."""
    return report.html_table(balance_frame(data, titles), decimals={"most / least predicted": 1, "normalised entropy": 2},
                             note=BALANCE_NOTE)


def under_predicted_text(data: dict[str, tuple]) -> str:
    """The mean over datasets of the share of classes predicted under half as often as they occur,
    e.g. "33.3 %"."""
    under = [analysis.zero_shot_balance(*values)["under_predicted"] for values in data.values()]
    return f"{100 * np.mean(under):.1f} %" if under else "no simulated class yet (no results)"
