"""What pages compute from records, against hand-computed values."""

import math

import numpy as np
import pandas as pd
import pytest

from cap.experiments import analysis, calibration


def runs(rows):
    return pd.DataFrame(rows, columns=["dataset", "paradigm", "variant", "seed", "state", "value"])


def test_official_setting_of_a_sweep_is_the_official_codes_value_per_dataset():
    assert analysis.official_setting("figure6_k", "sim", "dtd") == 16
    assert analysis.official_setting("figure6_k", "sim", "flowers102") == 6, "the official code's Flowers102 k"
    assert analysis.official_setting("figure7_tau", "sim", "fgvc_aircraft") == 0.5
    assert analysis.official_setting("figure10_margin_scale", "paper", "fgvc_aircraft") == 12.0, "14 is overwritten"
    assert analysis.official_setting("figure11_unlabelled_fraction", "sim", "dtd") == 1.0
    assert analysis.official_setting("table1", "sim", "dtd") is None


def test_sweep_spread_is_max_minus_min_of_the_means():
    cells = pd.DataFrame({"dataset": ["dtd", "dtd", "dtd", "eurosat"], "mean": [40.0, 46.5, np.nan, 70.0]})
    assert analysis.sweep_spread(cells).to_dict() == {"dtd": 6.5, "eurosat": 0.0}


def test_ablation_effect_averages_the_cells_that_have_both():
    frame = runs([("dtd", "ul", "full", 1, "done", 50.0), ("dtd", "ul", "full", 2, "done", 54.0),
                  ("dtd", "ul", "no_ca", 1, "done", 49.0), ("dtd", "ul", "no_ca", 2, "failed", np.nan),
                  ("cub", "ul", "full", 1, "done", 30.0), ("cub", "ul", "no_ca", 1, "done", 33.0),
                  ("rs", "ul", "full", 1, "done", 90.0)])
    # dtd: 52 − 49 = 3; cub: 30 − 33 = −3; rs has no no_ca: mean(3, −3) = 0
    assert analysis.ablation_effect(frame, "full", "no_ca") == pytest.approx(0.0)
    assert math.isnan(analysis.ablation_effect(frame, "full", "no_margin"))


def test_paired_differences_use_only_seeds_both_have():
    frame = runs([("dtd", "ul", "official", 1, "done", 50.0), ("dtd", "ul", "official", 2, "done", 52.0),
                  ("dtd", "ul", "delta_paper", 1, "done", 51.0), ("dtd", "ul", "delta_paper", 2, "done", 55.0),
                  ("dtd", "ul", "delta_paper", 3, "done", 99.0)])
    (row,) = analysis.paired_differences(frame).to_dict("records")
    assert row["per_seed"] == {1: 1.0, 2: 3.0} and row["difference"] == 2.0, "seed 3 has no official run"


def test_explain_gap_by_hand():
    # gap −4.3: −1.1 narrows it by 3.2 ≥ half of 4.3 = 2.15 (explains); −3.5 by 0.8 > 0.5, under half (partly);
    # −4.5 widens it (no); −3.9 narrows it by 0.4 ≤ 0.5 (no); NaN: not run
    verdicts = {left: analysis.explain_gap(-4.3, left) for left in (-1.1, -3.5, -4.5, -3.9)}
    assert verdicts == {-1.1: "explains", -3.5: "partly", -4.5: "no", -3.9: "no"}
    assert analysis.explain_gap(-4.3, float("nan")) == "not run"
    # a small gap (−0.8): narrowing it by 0.5 is more than half of it but not above the noise floor
    assert analysis.explain_gap(-0.8, -0.3) == "no" and analysis.explain_gap(-0.8, 0.0) == "explains"


def test_training_times_relative_to_cap_and_the_papers_ratio():
    records = [({"dataset": "eurosat", "method": m, "seed": s},
                {"results": {"train_seconds": t, "wall_seconds": w, "device": "cpu"}})
               for m, s, t, w in (("cap", 1, 8.0, 10.0), ("cap", 2, 10.0, 12.0), ("cpl", 1, 30.0, 33.0))]
    table = analysis.training_times(records, {"eurosat": {"cap": 29, "cpl": 74}}).set_index("method")
    assert table.loc["cap", "wall"] == 11.0 and table.loc["cap", "seeds"] == 2
    assert table.loc["cpl", "relative"] == pytest.approx(3.0) and table.loc["cpl", "paper_relative"] == pytest.approx(74 / 29)


def test_detected_mismatch_against_the_official_list():
    names = [f"c{i}" for i in range(45)]
    names[5], names[38] = "chaparral", "terrace"  # RESISC45's official list: chaparral, terrace
    from cap.data.registry import get_dataset
    official = get_dataset("resisc45").class_indices(("chaparral", "terrace"))
    record = {"results": {"classnames": names, "setup": {"concept_alignment": {"mismatched": [official[0], 7]}}}}
    (row,) = analysis.detected_mismatch([({"dataset": "resisc45", "seed": 1}, record)]).to_dict("records")
    assert (row["detected"], row["official"], row["both"], row["precision"], row["recall"]) == (2, 2, 1, 0.5, 0.5)


def test_zero_shot_balance_by_hand():
    out = analysis.zero_shot_balance([90.0, 5.0, np.nan], predicted=[6, 1, 3], true=[3, 3, 4])
    # class 1 is predicted once for 3 images: 1 < 1.5, under-predicted; 6/1 = 6; entropy of (.6, .1, .3)
    entropy = -(0.6 * np.log(0.6) + 0.1 * np.log(0.1) + 0.3 * np.log(0.3)) / np.log(3)
    assert out["below_10"] == 2 and out["classes"] == 3 and out["under_predicted"] == pytest.approx(1 / 3)
    assert out["imbalance_ratio"] == 6.0 and out["entropy"] == pytest.approx(entropy)


def cap_record(paradigm="ul"):
    return {"config": {"method": "cap", "paradigm": paradigm, "epochs": 10},
            "results": {"classnames": ["a", "b", "c"], "seen": [0] if paradigm == "trzsl" else [],
                        "metrics": {"predicted_counts": [2, 2, 0], "per_class_accuracy": [50.0, 80.0, 0.0]},
                        "setup": {"zero_shot_dpl": {"size": 48, "accuracy": 70.0},
                                  "concept_alignment": {"mismatched": [2], "dpl": {"size": 48, "accuracy": 75.0}}},
                        "refreshes": [{"epoch": 0, "size": 60, "accuracy": 80.0}, {"epoch": 5, "size": 90, "accuracy": 85.0}],
                        "history": [{"epoch": 0, "loss": 2.0, "sigma": [4, 4, 0]},
                                    {"epoch": 1, "loss": 1.5, "sigma": [2, 2, 4], "margin_largest": [[2, 0, 3.5]]}]}}


def test_cap_run_curves_by_hand():
    record = cap_record()
    timeline = analysis.pseudolabel_timeline(record)
    assert timeline.values.tolist() == [[0.0, 48, 75.0], [10.0, 60, 80.0], [60.0, 90, 85.0]], "aligned D_PL first"
    balance = analysis.prediction_balance(record)
    # σ = (4, 4, 0): entropy log 2 / log 3; (2, 2, 4): (.25, .25, .5); test counts (2, 2, 0) as the first
    assert balance["entropy"].tolist() == pytest.approx([
        np.log(2) / np.log(3), -(2 * 0.25 * np.log(0.25) + 0.5 * np.log(0.5)) / np.log(3), np.log(2) / np.log(3)])
    assert balance["progress"].tolist() == [10.0, 20.0, 100.0] and balance["stage"].tolist()[-1] == "test"
    assert analysis.loss_curve(record).values.tolist() == [[10.0, 2.0], [20.0, 1.5]]
    assert analysis.margin_pairs(record).to_dict("records") == [
        {"epoch": 1, "label class": "c", "competing class": "a", "margin": 3.5}]
    assert analysis.detected_classes(record) == ["c"]


def test_trzsl_balance_counts_only_the_unseen_classes():
    balance = analysis.prediction_balance(cap_record("trzsl"))
    # unseen classes 1, 2: σ (4, 0) -> 0; (2, 4) -> entropy of (1/3, 2/3) / log 2; test (2, 0) -> 0
    third = -(1 / 3 * np.log(1 / 3) + 2 / 3 * np.log(2 / 3)) / np.log(2)
    assert balance["entropy"].tolist() == pytest.approx([0.0, third, 0.0])


def test_baseline_run_curves_by_hand():
    record = {"config": {"method": "grip", "paradigm": "ul", "epochs": 50},
              "results": {"metrics": {"predicted_counts": [1, 1]},
                          "history": [{"round": 1, "size": 10, "accuracy": 60.0, "loss": 1.0},
                                      {"round": 2, "size": 20, "accuracy": 55.0, "loss": 0.5}]}}
    assert analysis.pseudolabel_timeline(record).values.tolist() == [[0.0, 10, 60.0], [50.0, 20, 55.0]]
    assert analysis.loss_curve(record).values.tolist() == [[50.0, 1.0], [100.0, 0.5]]
    assert analysis.prediction_balance(record).values.tolist() == [[100.0, "test", 1.0]]
    assert analysis.margin_pairs(record).empty and analysis.detected_classes(record) is None


def test_per_class_against_zero_shot():
    ours = {"results": {"classnames": ["a", "b"], "metrics": {"per_class_accuracy": [60.0, 10.0]}}}
    zero_shot = {"results": {"metrics": {"per_class_accuracy": [50.0, 30.0]}}}
    table = analysis.per_class_against(ours, zero_shot)
    assert table["gain"].tolist() == [10.0, -20.0] and table["class"].tolist() == ["a", "b"]


def test_reliability_and_zero_shot_calibration_by_hand():
    # 15 bins: ceil(.55 × 15) − 1 = 8, ceil(.65 × 15) − 1 = 9, ceil(.95 × 15) − 1 = 14 (twice)
    bins = calibration.reliability([0.55, 0.65, 0.95, 0.95], [True, False, True, False], n_bins=15)
    assert bins["bin"].tolist() == [8, 9, 14] and bins["images"].tolist() == [1, 1, 2]
    assert bins["accuracy"].tolist() == [100.0, 0.0, 50.0] and bins["confidence"].tolist() == pytest.approx([55, 65, 95])
    # two classes, logit scale 1: logits (ln 3, 0) → confidence 3/4 for class 0; the second image is wrong
    text = np.eye(2)
    images = np.array([[np.log(3.0), 0.0], [np.log(3.0), 0.0]])
    result = calibration.zero_shot_calibration(images, text, [0, 1], logit_scale=1.0)
    assert result["accuracy"] == 50.0 and result["confidence"] == pytest.approx(75.0)
    assert result["ece"] == pytest.approx(25.0) and result["ece_20"] == pytest.approx(25.0)  # |50 − 75| in one bin


def _margin_scores():
    rows = []
    for seed, (acc_m, acc_n, ece_m, ece_n) in {1: (60, 50, 5, 9), 2: (70, 60, 7, 9), 3: (80, None, 1, None)}.items():
        for variant, acc, ece in (("margin", acc_m, ece_m), ("no_margin", acc_n, ece_n)):
            if acc is None:
                continue  # seed 3 has no run without the margin: unpaired
            for view in ("groups", "planted"):
                rows.append({"dataset": "dtd", "variant": variant, "seed": seed, "view": view, "groups": 2,
                             "accuracy": acc, "ece": ece, "victim_accuracy": acc - 10, "victim_to_attractor": 100 - acc})
    return pd.DataFrame(rows)


def test_margin_summary_and_paired_change_by_hand():
    scores = _margin_scores()
    # paired seeds 1 and 2: accuracy with (60 + 70) / 2 = 65, without (50 + 60) / 2 = 55, change 10;
    # ECE 6 against 9, change -3. The summary means over all seeds of each variant: seed 3's 80
    # makes "with" (60 + 70 + 80) / 3 = 70 there, the change 70 - 55 = 15.
    assert calibration.paired_change(scores, "accuracy", "margin", "no_margin", "dtd", "groups") == pytest.approx(10)
    assert calibration.paired_change(scores, "ece", "margin", "no_margin", "dtd", "groups") == pytest.approx(-3)
    table = calibration.margin_summary(scores, "groups", titles=str.upper)
    assert list(table["dataset"]) == ["DTD"] and table["pairs"].iloc[0] == 2
    assert table["local accuracy, with CACM"].iloc[0] == pytest.approx(70)
    assert table["local accuracy, w/o CACM"].iloc[0] == pytest.approx(55)
    assert table["local accuracy, change"].iloc[0] == pytest.approx(15)
    assert table["local ECE, change"].iloc[0] == pytest.approx(13 / 3 - 9)
    assert calibration.margin_summary(scores, "absent").empty


def test_margin_effects_and_whole_test_set_change_by_hand():
    scores = _margin_scores()
    whole = pd.DataFrame([{"dataset": "dtd", "variant": v, "seed": s, "confidence": c, "accuracy": a, "ece": e}
                          for v, s, c, a, e in (("margin", 1, 74, 61, 13), ("no_margin", 1, 70, 60, 11),
                                                ("margin", 2, 76, 62, 10), ("no_margin", 2, 70, 61, 11))])
    effects = calibration.margin_effects(scores, whole, [("preset", "margin", "no_margin")])
    row = effects.iloc[0]
    # victim accuracy is accuracy - 10: the same change, 10; errors toward the attractor 100 - accuracy: -10
    assert row["victim accuracy"] == pytest.approx(10) and row["victim → attractor"] == pytest.approx(-10)
    assert row["local ECE (planted)"] == pytest.approx(-3)
    assert row["ECE (whole test set)"] == pytest.approx(((13 - 11) + (10 - 11)) / 2)
    change = calibration.whole_test_set_change(whole)
    # confidence +4 and +6 -> 5; accuracy +1 and +1 -> 1; ECE +2 and -1 -> 0.5, up in 1 of 2 pairs
    assert change == pytest.approx({"confidence": 5, "accuracy": 1, "ece": 0.5, "ece_up": 1, "pairs": 2})
    assert calibration.confidence_reading(change).startswith("Confidence gains 4.0 points more than accuracy")
    assert calibration.confidence_reading(change | {"accuracy": 9}).startswith("Accuracy gains 4.0 points more")
    assert "about as much" in calibration.confidence_reading(change | {"accuracy": 4.5})
    assert calibration.whole_test_set_change(whole.iloc[:0])["pairs"] == 0


def test_balance_table_by_hand():
    # accuracies 5, 50, 95: one class below 10 %; predicted 0, 10, 20 of 10 each: class 0 predicted
    # under half as often as it occurs, 1 of 3 = 33.3 %; entropy of (0, 1/3, 2/3) over ln 3:
    # (1/3 ln 3 + 2/3 ln 1.5) / ln 3 = 0.5794
    frame = analysis.balance_table({"dtd": ([5.0, 50.0, 95.0], np.array([0, 10, 20]), np.array([10, 10, 10]))},
                                   titles=str.upper)
    row = frame.iloc[0]
    assert row["dataset"] == "DTD" and row["below_10"] == 1 and row["classes"] == 3
    assert row["under_predicted"] == pytest.approx(100 / 3)
    assert row["entropy"] == pytest.approx((np.log(3) / 3 + 2 / 3 * np.log(1.5)) / np.log(3))


def test_figure9_diagnostics_conclusion_by_hand():
    scale = pd.DataFrame([{"dataset": "dtd", "m": m, "confidence": c, "accuracy": a, "ece": e}
                          for m, c, a, e in ((0.0, 70, 60, 10), (2.0, 74, 61, 13))])
    effects = pd.DataFrame([{"setting": "preset confusion", "victim → attractor": v} for v in (-5.0, 2.0)])
    # confidence +4, accuracy +1: 3 points more confidence; ECE higher on the one dataset
    text = calibration.diagnostics_conclusion(scale, effects)
    assert "from m = 0 to 2 raises mean confidence by +4.0 points and accuracy by +1.0 (ECE higher on 1 of 1" in text
    assert "raises confidence more than accuracy" in text and "on 1 of 2 datasets" in text
    more_accurate = scale.assign(accuracy=[60, 66])  # accuracy +6 against confidence +4: 2 points more accuracy
    assert "accuracy rises 2.0 points more than confidence" in calibration.diagnostics_conclusion(more_accurate,
                                                                                                  effects.iloc[:0])
    assert calibration.diagnostics_conclusion(None, effects.iloc[:0]) == "The diagnostics have not run yet."
