"""cap/experiments/divergences_page.py: the divergences tables and sentence, on hand-made runs."""

import pandas as pd

from cap.experiments import divergences_page

LABELS = {"paper_delta": "δ = 1 − r", "no_refresh": "no refresh"}


def _runs():
    """dtd UL: official 60, 62; paper_delta 63, 65 (+3 each); no_refresh 59 on seed 1 only (−1).
    cub UL: official 50; paper_delta 49 (−1)."""
    rows = [("dtd", "official", 1, 60), ("dtd", "official", 2, 62), ("dtd", "paper_delta", 1, 63),
            ("dtd", "paper_delta", 2, 65), ("dtd", "no_refresh", 1, 59), ("cub", "official", 1, 50),
            ("cub", "paper_delta", 1, 49)]
    return pd.DataFrame([{"dataset": d, "paradigm": "ul", "variant": v, "seed": s, "state": "done", "value": x,
                          "key": f"{d}-{v}-{s}", "profile": "sim"} for d, v, s, x in rows])


def test_option_label_names_a_paradigm_other_than_ul():
    assert divergences_page.option_label("no_refresh", "ul", LABELS) == "no refresh"
    assert divergences_page.option_label("no_refresh", "trzsl", LABELS) == "no refresh (TRZSL)"


def test_compact_table_bolds_each_datasets_largest_change():
    html = divergences_page.compact_html(_runs(), LABELS)
    assert "<strong>+3.0</strong><br><small>64.0 ± 1.4 vs 61.0 ± 1.4</small>" in html  # dtd's largest
    assert "<strong>\u22121.0</strong><br><small>49.0 vs 50.0</small>" in html  # cub's only, so its largest
    assert "\u22121.0<br><small>59.0 vs 61.0 ± 1.4</small>" in html  # dtd's no_refresh: not bold
    assert "not run for this dataset" in html  # no_refresh on cub
    assert divergences_page.compact_html(_runs().iloc[:0], LABELS) == "<p>No runs planned.</p>"


def test_per_seed_rows_and_the_largest_effect():
    frame = divergences_page.per_seed_frame(_runs(), LABELS)
    row = frame[(frame["switched"] == "δ = 1 − r") & (frame["dataset"] == "DTD")].iloc[0]
    assert row["per seed"] == "1: +3.0, 2: +3.0" and row["switched − official"] == 3.0
    assert divergences_page.per_seed_html(_runs(), LABELS).startswith("<details><summary>every seed</summary>")
    assert divergences_page.largest_text(_runs(), LABELS) == "δ = 1 − r on DTD, +3.0 points"
    assert divergences_page.largest_text(_runs().iloc[:0], LABELS) == "none yet (no results)"
