"""cap/experiments/calibration_page.py: the numbers and tables of Figure 9's page, on hand-made scores."""

import numpy as np
import pandas as pd
import pytest

from cap.experiments import calibration_page


def _scores():
    """Two datasets, three seeds: the margin adds 4 points of local accuracy and takes 2 off local
    ECE on every seed (zero-shot groups only; no planted pairs)."""
    rows = [{"dataset": d, "variant": v, "seed": s, "view": "groups", "groups": 2, "accuracy": acc, "ece": ece}
            for d in ("dtd", "cub") for s in (1, 2, 3)
            for v, acc, ece in (("margin", 64 + s, 5), ("no_margin", 60 + s, 7))]
    return pd.DataFrame(rows)


def test_claim_texts_show_the_plain_change_and_the_verdict():
    texts = calibration_page.claim_texts(_scores())
    # every pair gains exactly 4 points: the interval is [4, 4], both datasets agree
    assert texts["f9_groups_accuracy"] == "+4.0" and texts["f9_groups_accuracy_verdict"] == "supported"
    assert (texts["f9_groups_accuracy_agree"], texts["f9_groups_accuracy_disagree"],
            texts["f9_groups_accuracy_units"]) == ("2", "0", "2")
    # ECE falls by 2: judged +2 in the paper's direction, shown as the plain change −2.0
    assert texts["f9_groups_ece"] == "\u22122.0" and texts["f9_groups_ece_verdict"] == "supported"
    # no planted pairs: no units, a dash, and "no runs"
    assert texts["f9_planted_accuracy"] == "—" and texts["f9_planted_ece_units"] == "0"
    assert texts["f9_planted_ece_verdict"] == "no runs"
    assert len(texts) == 2 * 2 * 5


def _curves():
    # epoch 0: margin 40 and 60 (mean 50), no margin 30; last epoch 2: margin 10, no margin 20 and 40 (30)
    rows = [("margin", 0, 40), ("margin", 0, 60), ("no_margin", 0, 30), ("margin", 1, 99),
            ("margin", 2, 10), ("no_margin", 2, 20), ("no_margin", 2, 40)]
    return pd.DataFrame([{"dataset": "dtd", "variant": v, "seed": 1, "epoch": e, "share": s} for v, e, s in rows])


def test_sigma_zero_shares_in_the_first_and_last_epoch():
    assert calibration_page.sigma_zero_shares(_curves()) == pytest.approx(
        {"first_margin": 50, "first_no_margin": 30, "last_margin": 10, "last_no_margin": 30})
    empty = calibration_page.sigma_zero_shares(_curves().iloc[:0])
    assert all(np.isnan(v) for v in empty.values()) and len(empty) == 4


def test_diagnostics_texts():
    change = {"confidence": 5.0, "accuracy": 1.0, "ece": 0.5, "ece_up": 1, "pairs": 2}
    texts = calibration_page.diagnostics_texts(change, _curves())
    assert (texts["f9_conf_change"], texts["f9_acc_change"], texts["f9_ece_change"]) == ("+5.0", "+1.0", "+0.5")
    assert (texts["f9_ece_up_pairs"], texts["f9_pairs"]) == ("1", "2")
    assert texts["f9_conf_reading"].startswith("Confidence gains 4.0 points more than accuracy")
    assert (texts["f9_sigma0_first_margin"], texts["f9_sigma0_last_margin"], texts["f9_sigma0_last_no_margin"]) == \
        ("50", "10", "30")
    no_runs = calibration_page.diagnostics_texts(change | {"pairs": 0}, _curves().iloc[:0])
    assert no_runs["f9_conf_reading"] == "" and no_runs["f9_sigma0_first_margin"] == "—"


def test_knob_effects_drop_settings_without_numbers():
    effects = pd.DataFrame({"setting": ["a", "b", "c"], "victim accuracy": [1.0, np.nan, np.nan],
                            "ECE (whole test set)": [np.nan, 2.0, np.nan]})
    assert list(calibration_page.knob_effects_shown(effects)["setting"]) == ["a", "b"]
    assert [s[0] for s in calibration_page.KNOB_SETTINGS][0] == "preset confusion"  # the conclusion reads this row


def test_margin_scale_means_by_hand():
    whole = pd.DataFrame([{"dataset": d, "sweep": m, "seed": s, "confidence": c, "accuracy": a, "ece": e}
                          for d, m, s, c, a, e in (("eurosat", 6.0, 1, 80, 60, 20), ("eurosat", 6.0, 2, 90, 70, 20),
                                                   ("eurosat", 0.0, 1, 70, 60, 10), ("dtd", 6.0, 1, 50, 40, 10))])
    means = calibration_page.margin_scale_means(whole)
    assert list(zip(means["dataset"], means["m"])) == [("dtd", 6.0), ("eurosat", 0.0), ("eurosat", 6.0)]
    assert means.iloc[2][["confidence", "accuracy", "ece"]].tolist() == [85, 65, 20]
    shown = calibration_page.margin_scale_shown(means, str.upper)
    assert list(shown.columns) == ["dataset", "m", "confidence (%)", "accuracy (%)", "ECE (%)"]
    assert list(shown["dataset"]) == ["DTD", "EUROSAT", "EUROSAT"]
    assert calibration_page.margin_scale_means(whole.iloc[:0]).empty
