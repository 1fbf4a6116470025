"""cap/experiments/page_figures.py: what each page figure plots, on hand-made data."""

import matplotlib

matplotlib.use("Agg")  # no display in tests

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from cap.experiments import page_figures  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_grid_shape():
    assert page_figures.grid_shape(6) == (2, 3)
    assert page_figures.grid_shape(4) == (2, 3)
    assert page_figures.grid_shape(2) == (1, 2)


def test_ranked_class_values_best_first():
    accuracy, predicted, true = np.array([50.0, np.nan, 90.0]), np.array([0, 30, 10]), np.array([10, 0, 10])
    assert page_figures.ranked_class_values(accuracy, predicted, true, "accuracy").tolist() == [90, 50, 0]
    # predicted / true, a class without test images divided by 1: 0, 30, 1
    assert page_figures.ranked_class_values(accuracy, predicted, true, "counts").tolist() == [30, 1, 0]


def test_ranked_classes_figure_draws_one_panel_per_dataset():
    data = {"dtd": (np.array([20.0, 80.0]), np.array([1, 3]), np.array([2, 2])),
            "cub": (np.array([10.0, 30.0, 60.0]), np.array([1, 1, 1]), np.array([1, 1, 1]))}
    fig = page_figures.ranked_classes_figure(data, "counts", str.upper)
    axes = fig.axes
    assert len(axes) == 2 and [ax.get_title() for ax in axes] == ["DTD", "CUB"]
    assert [p.get_height() for p in axes[0].patches] == [1.5, 0.5]
    assert axes[0].get_legend().get_texts()[0].get_text() == "predicted as often as it occurs"
    assert axes[1].get_legend() is None  # the legend is drawn once, on the first panel


def test_sweep_lines_and_the_official_star():
    cells = pd.DataFrame({"dataset": ["dtd", "dtd", "cub"], "sweep": [1.0, 0.5, 0.5], "mean": [70.0, 60.0, np.nan],
                          "std": [2.0, np.nan, 1.0]})
    (line,) = page_figures.sweep_lines(cells, scale=100)  # cub has no mean: no line
    assert line["dataset"] == "dtd" and line["x"].tolist() == [50, 100]
    assert line["mean"].tolist() == [60, 70] and line["std"].tolist() == [0, 2]
    assert page_figures.official_point(line, 1.0, 100) == (100.0, 70.0)
    assert page_figures.official_point(line, 0.75, 100) is None and page_figures.official_point(line, None) is None


def test_alignment_figure_colours_planted_classes():
    classes = pd.DataFrame({"dataset": ["dtd", "dtd"], "class": ["a", "b"], "planted": [True, False],
                            "without": [10.0, 20.0], "with_": [70.0, 25.0]})
    fig = page_figures.alignment_figure(classes, "flagged", str.upper)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["DTD: a", "DTD: b"]
    with_bars = ax.patches[2:]
    assert [b.get_width() for b in with_bars] == [70, 25]
    assert matplotlib.colors.to_hex(with_bars[0].get_facecolor()) == page_figures.PLANTED_COLOURS[True]


def test_calibration_figure_puts_its_legends_above_the_bars():
    scores = pd.DataFrame([{"dataset": "dtd", "variant": v, "seed": s, "view": "groups", "accuracy": a, "ece": 5.0}
                           for v, a in (("margin", 60.0), ("no_margin", 50.0)) for s in (1, 2)])
    fig = page_figures.calibration_figure(scores, "groups", "title", {"margin": "with", "no_margin": "without"})
    for ax in fig.axes:
        legend = ax.get_legend()
        assert [t.get_text() for t in legend.get_texts()] == ["with", "without"]
        assert legend._loc == 3 and tuple(legend.get_bbox_to_anchor()._bbox.bounds[:2]) == (0, 1.0)  # lower left, above
    assert sorted(p.get_height() for p in fig.axes[0].patches if p.get_height()) == [50, 60]


def test_sigma_zero_figure_axes():
    curves = pd.DataFrame({"dataset": "dtd", "variant": ["margin", "no_margin"], "seed": 1, "epoch": [0, 0],
                           "share": [40.0, 30.0]})
    ax = page_figures.sigma_zero_figure(curves, {"margin": "with", "no_margin": "without"}).axes[0]
    assert ax.get_ylabel() == "classes with σ = 0 (%)" and ax.get_xlabel() == "epoch"


def test_forest_heights_follow_the_tallest_panel_of_each_row():
    forest = pd.DataFrame({"id": ["a"] * 10 + ["b"] + ["c"] * 2 + ["d"]})
    assert page_figures.panel_height(10) == pytest.approx(3.0) and page_figures.panel_height(1) == 2.0
    # rows of three panels: (a, b, c) -> 3.0; (d) -> 2.0
    assert page_figures.forest_height(forest, ["a", "b", "c", "d"]) == pytest.approx(5.0)


def test_forest_figure_panels_and_the_empty_case():
    forest = pd.DataFrame({"id": ["a", "a"], "unit": ["dtd_ul", "overall"], "effect": [1.0, 2.0], "low": [0.0, 1.0],
                           "high": [2.0, 3.0], "overall": [False, True]})
    fig = page_figures.forest_figure(forest, [{"id": "a"}], lambda claim: 0.5, lambda claim: "Claim " + claim["id"])
    ax = fig.axes[0]
    assert ax.get_title() == "Claim a"
    # the first unit on top, the overall effect at the bottom
    assert dict(zip(ax.get_yticks(), (t.get_text() for t in ax.get_yticklabels()))) == {1: "dtd ul", 0: "overall"}
    assert ax.lines[-1].get_xdata()[0] == 0.5  # the boundary
    empty = page_figures.forest_figure(forest.iloc[:0], [], None, None)
    assert empty.axes[0].texts[0].get_text() == "no judged claim has runs yet"
