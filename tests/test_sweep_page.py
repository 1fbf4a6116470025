"""cap/experiments/sweep_page.py: the sweep pages' axis, table and spread, on hand-made runs."""

import pandas as pd
import pytest

from cap.experiments import sweep_page


def _runs(values: dict) -> pd.DataFrame:
    """Done runs: {(dataset, swept value): [value per seed]}, UL."""
    rows = [{"dataset": d, "paradigm": "ul", "method": "cap", "variant": "official", "sweep": v, "seed": seed + 1,
             "state": "done", "value": value, "key": f"{d}-{v}-{seed}", "profile": "sim"}
            for (d, v), values_ in values.items() for seed, value in enumerate(values_)]
    return pd.DataFrame(rows)


def test_axis_in_words_and_its_scale():
    assert sweep_page.axis("unlabelled_fraction") == ("unlabelled images used (% of the pool)", 100)
    assert sweep_page.axis("k") == ("k, initial pseudolabels per class (images)", 1)
    assert sweep_page.axis("new_field") == ("new_field", 1)


def test_table_names_the_swept_values_and_the_official_setting():
    cells = sweep_page.sweep_cells(_runs({("dtd", 0.5): [60, 62], ("dtd", 1.0): [70, 70]}))
    assert list(cells["mean"]) == [61, 70] and list(cells["ours"]) == ["61.0 ± 1.4", "70.0 ± 0.0"]
    html = sweep_page.table_html(cells, "figure11_unlabelled_fraction", "sim")
    assert "unlabelled images used (% of the pool)" in html and ">50<" in html and ">100<" in html
    assert html.endswith('<p class="table-note">Official setting: DTD 100.</p>')  # the official fraction, 1.0


def test_spread_texts_with_and_without_left_out_values():
    # m = 0 (no margin) is left out by the rule: spread 80 - 60 = 20 with it, 80 - 75 = 5 without it
    cells = sweep_page.sweep_cells(_runs({("dtd", 0.0): [60], ("dtd", 6.0): [75], ("dtd", 12.0): [80]}))
    largest, text, exclusion = sweep_page.spread_texts("figure10_margin_scale", cells)
    assert largest == pytest.approx(20) and text == "20.0 points"
    assert exclusion.startswith("The claims page judges the robustness claim without margin scale m (logit units) = 0 (")
    assert exclusion.endswith("without it, accuracy moves by at most 5.0 points on a dataset.")
    k_cells = sweep_page.sweep_cells(_runs({("dtd", 4): [60], ("dtd", 16): [63]}))
    assert sweep_page.spread_texts("figure6_k", k_cells) == (
        pytest.approx(3), "3.0 points", "The claims page judges the robustness claim on every swept value shown here.")
    assert sweep_page.spread_texts("figure6_k", k_cells.iloc[:0])[:2] == (0.0, "nothing yet (no results)")
