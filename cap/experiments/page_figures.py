"""The figures of the book's result pages, drawn from what the page modules compute.

Each ``*_figure`` function returns a matplotlib figure and leaves showing it to the page. What a
figure plots (bar heights, points, layout, legend placement) comes from a small function beside it,
so a test can check the numbers behind a figure without looking at pixels. matplotlib and seaborn
are the book's dependencies, not the library's: they are imported where a figure is drawn.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cap.experiments import analysis
from cap.experiments.report import titled

# Figure 9's legends sit above the axes, in two columns, so they never cover a bar.
ABOVE_THE_AXES = {"loc": "lower left", "bbox_to_anchor": (0, 1.0), "ncol": 2}
PLANTED_COLOURS = {True: "#d62728", False: "#7f7f7f"}  # Figure 8: a known mismatched class in red


def grid_shape(panels: int, columns: int = 3) -> tuple[int, int]:
    """Rows and columns of a grid of ``panels`` panels, at most ``columns`` wide."""
    columns = min(columns, panels)
    return -(-panels // columns), columns


# -- Figures 1 and 2: zero-shot accuracy and prediction counts per class ------------------------
def ranked_class_values(accuracy, predicted, true, which: str) -> np.ndarray:
    """One panel's bars, best class first: per-class accuracy (a class without test images counts
    as 0), or ``which="counts"``: how often a class is predicted relative to how often it occurs."""
    if which == "accuracy":
        return np.sort(np.nan_to_num(np.asarray(accuracy, dtype=float)))[::-1]
    return np.sort(np.asarray(predicted) / np.maximum(np.asarray(true), 1))[::-1]


def ranked_classes_figure(data: dict[str, tuple], which: str, titles):
    """One panel per dataset (``data``: :func:`analysis.first_replicate_per_class`), classes ranked
    from best (rank 1) to worst; bars, not a line, since each class is one value."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows, cols = grid_shape(len(data))
    fig, axes = plt.subplots(rows, cols, figsize=(3.7 * cols, 2.9 * rows), squeeze=False)
    for ax, (dataset, (accuracy, predicted, true)) in zip(axes.flat, data.items()):
        rank = np.arange(1, len(accuracy) + 1)
        values = ranked_class_values(accuracy, predicted, true, which)
        if which == "accuracy":
            ax.bar(rank, values, width=1.0, linewidth=0, color="#1f4e8c")
            ax.set_ylabel("test accuracy (%)")
            ax.set_ylim(0, 100)
        else:
            ax.bar(rank, values, width=1.0, linewidth=0, color="#b5521b")
            ax.axhline(1.0, color="black", lw=1.0, ls="--", label="predicted as often as it occurs")
            ax.set_ylabel("predicted / true count")
        ax.set_title(titles(dataset))
        ax.set_xlabel("class rank (1 = highest)")
        ax.set_xlim(0.3, len(accuracy) + 0.7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
    for ax in list(axes.flat)[len(data):]:
        ax.axis("off")
    if which == "counts":
        axes.flat[0].legend(frameon=False, fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


# -- sweeps (Figures 6, 7, 10, 11) ----------------------------------------------------------------
def sweep_lines(cells: pd.DataFrame, scale: float = 1) -> list[dict]:
    """Per dataset with results (cells from ``report.summarise`` by dataset, paradigm, sweep): the
    line's x (swept value × ``scale``), mean and std over replicates (a single seed: 0), in swept order."""
    lines = []
    for dataset, group in cells.dropna(subset=["mean"]).groupby("dataset", sort=False):
        group = group.sort_values("sweep")
        lines.append({"dataset": dataset, "x": group["sweep"].astype(float).to_numpy() * scale,
                      "mean": group["mean"].to_numpy(dtype=float), "std": group["std"].fillna(0).to_numpy(dtype=float),
                      "sweep": group["sweep"].astype(float).to_numpy()})
    return lines


def official_point(line: dict, official, scale: float = 1) -> tuple[float, float] | None:
    """Where a sweep line's star goes: (official value × ``scale``, the line's mean there), or None
    when the official value was not swept (or there is none)."""
    if official is None:
        return None
    at = np.isclose(line["sweep"], float(official))
    return (float(official) * scale, float(line["mean"][at][0])) if at.any() else None


def sweep_figure(cells: pd.DataFrame, matrix: str, profile: str, axis: str, scale: float, swept, titles):
    """Accuracy against the swept value, one line per dataset with a ± 1 std band, a star at the
    official setting; ``swept``: every value of the sweep (the x ticks)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for line in sweep_lines(cells, scale):
        x, y, s = line["x"], line["mean"], line["std"]
        drawn, = ax.plot(x, y, marker="o", label=titles(line["dataset"]))
        ax.fill_between(x, y - s, y + s, alpha=0.2, color=drawn.get_color())
        star = official_point(line, analysis.official_setting(matrix, profile, line["dataset"]), scale)
        if star:
            ax.plot(*star, marker="*", ms=15, color=drawn.get_color(), markeredgecolor="black", zorder=4, ls="none")
    handles, labels = ax.get_legend_handles_labels()
    handles += [Patch(color="grey", alpha=0.3), Line2D([], [], marker="*", ms=12, color="grey", markeredgecolor="black",
                                                       ls="none")]
    labels += ["± 1 std over replicates", "official setting"]
    ax.legend(handles, labels, frameon=False, fontsize=9, loc="best")
    ax.set(xlabel=axis, ylabel="top-1 accuracy (%)")
    ax.set_xticks(sorted({float(v) * scale for v in swept}))
    fig.tight_layout()
    return fig


# -- Figure 8: pseudolabel accuracy of flagged classes --------------------------------------------
def alignment_figure(classes: pd.DataFrame, title: str, titles):
    """Without and with alignment per flagged class (``classes``: ``alignment_page.per_class``);
    planted (known) mismatched classes in red."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 0.3 * len(classes) + 1.4))
    y = np.arange(len(classes))
    ax.barh(y - 0.2, classes["without"], height=0.4, color="#bbbbbb", label="without alignment")
    ax.barh(y + 0.2, classes["with_"], height=0.4, color=[PLANTED_COLOURS[p] for p in classes["planted"]],
            label="with alignment (red: a known mismatched class)")
    ax.set_yticks(y, [f"{titles(d)}: {c}" for d, c in zip(classes["dataset"], classes["class"])])
    ax.set_xlabel("pseudolabel accuracy of the class's initial D_PL (%)")
    ax.set_title(title)
    ax.legend(frameon=False, loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


# -- Figure 9: the margin on confusion groups, and σ = 0 over training ----------------------------
def calibration_figure(scores: pd.DataFrame, view: str, title: str, labels: dict):
    """Local accuracy and local ECE per dataset, one bar per variant (``labels``: variant -> label)
    with its std over replicates; the legends sit above the axes."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    part = titled(scores[scores["view"] == view].assign(variant=lambda f: f["variant"].map(labels)))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, column, name in zip(axes, ["accuracy", "ece"], ["local accuracy (%)", "local ECE (%)"]):
        sns.barplot(data=part, x="dataset", y=column, hue="variant", ax=ax, errorbar="sd")
        ax.set_xlabel("")
        ax.set_ylabel(name)
        ax.tick_params(axis="x", rotation=30)
        ax.legend(frameon=False, fontsize=8, title="bars: mean over replicates; lines: ± 1 std", title_fontsize=7,
                  **ABOVE_THE_AXES)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def sigma_zero_figure(curves: pd.DataFrame, labels: dict):
    """The share of classes with σ = 0 per epoch (``analysis.sigma_zero_curves``), one colour per
    dataset and one line style per variant, mean over replicates."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(7, 3.4))
    shown = titled(curves.assign(variant=curves["variant"].map(labels)))
    sns.lineplot(data=shown, x="epoch", y="share", hue="dataset", style="variant", ax=ax, errorbar=None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("classes with σ = 0 (%)")
    ax.legend(frameon=False, fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


# -- the claims page's forest plot ----------------------------------------------------------------
def panel_height(units: int) -> float:
    """A forest panel's height in inches for ``units`` rows (at least 2)."""
    return max(2.0, 0.22 * units + 0.8)


def forest_height(forest: pd.DataFrame, claim_ids: list[str], columns: int = 3) -> float:
    """The forest figure's height: per row of panels, the tallest panel's :func:`panel_height`."""
    heights = [panel_height(int((forest["id"] == c).sum())) for c in claim_ids]
    return sum(max(heights[i:i + columns]) for i in range(0, len(heights), columns))


def forest_figure(forest: pd.DataFrame, judged: list[dict], bound, title, columns: int = 3):
    """One panel per judged claim: each unit's effect with its interval (the overall one in black)
    and the claim's boundary (``bound(claim)``, dashed); ``title(claim)`` names the panel."""
    import matplotlib.pyplot as plt

    if not judged:
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no judged claim has runs yet", ha="center")
        return fig
    rows, _ = grid_shape(len(judged), columns)
    fig, axes = plt.subplots(rows, columns, figsize=(12, forest_height(forest, [c["id"] for c in judged], columns)),
                             squeeze=False)
    for ax, claim in zip(axes.flat, judged):
        part = forest[forest["id"] == claim["id"]].reset_index(drop=True)
        y = list(range(len(part)))[::-1]
        colours = ["black" if o else "tab:blue" for o in part["overall"]]
        ax.errorbar(part["effect"], y, xerr=[part["effect"] - part["low"], part["high"] - part["effect"]], fmt="none",
                    ecolor=colours, elinewidth=1.2)
        ax.scatter(part["effect"], y, c=colours, s=14, zorder=3)
        ax.axvline(bound(claim), ls="--", color="grey", lw=1)
        ax.set_yticks(y, [u.replace("_", " ") for u in part["unit"]], fontsize=7)
        ax.set_title(title(claim), fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(judged):]:
        ax.axis("off")
    fig.tight_layout()
    return fig
