"""The claims page's analysis: the verdict rule, the judges of each kind of claim, Table 1's
summaries and the official budgets, against hand-computed values."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cap.experiments import analysis
from cap.experiments.matrix import matrix_names


def runs(rows):
    """A runs frame as report.collect makes it, from (dataset, paradigm, method, variant, sweep, seed, value)."""
    frame = pd.DataFrame(rows, columns=["dataset", "paradigm", "method", "variant", "sweep", "seed", "value"])
    return frame.assign(state="done", record=None)


def test_verdict_rule():
    assert analysis.verdict(4, 1, 6) == "supported"  # more agree, and at least half
    assert analysis.verdict(2, 1, 6) == "inconclusive"  # more agree, but fewer than half
    assert analysis.verdict(1, 3, 6) == "contradicted"
    assert analysis.verdict(3, 3, 6) == "inconclusive"
    assert analysis.verdict(0, 0, 0) == "no runs"


def test_paired_units_and_agreement_by_hand():
    frame = runs([
        # dtd: CAP − CPL = 2, 4 (mean 3, std 1.41) → agrees (3 > 1.41)
        ("dtd", "ul", "cap", "default", None, 1, 52.0), ("dtd", "ul", "cpl", "default", None, 1, 50.0),
        ("dtd", "ul", "cap", "default", None, 2, 54.0), ("dtd", "ul", "cpl", "default", None, 2, 50.0),
        # cub: −0.2, −0.4 (mean −0.3, std 0.14) → a tie: |−0.3| is under the 0.5-point floor
        ("cub", "ul", "cap", "default", None, 1, 60.0), ("cub", "ul", "cpl", "default", None, 1, 60.2),
        ("cub", "ul", "cap", "default", None, 2, 60.0), ("cub", "ul", "cpl", "default", None, 2, 60.4),
        # eurosat: −5, −1 (mean −3, std 2.83) → disagrees (−3 < −2.83); seed 3 has no CPL run: left out
        ("eurosat", "ul", "cap", "default", None, 1, 40.0), ("eurosat", "ul", "cpl", "default", None, 1, 45.0),
        ("eurosat", "ul", "cap", "default", None, 2, 44.0), ("eurosat", "ul", "cpl", "default", None, 2, 45.0),
        ("eurosat", "ul", "cap", "default", None, 3, 99.0),
    ])
    judged = analysis.judge_paired(frame, {"method": "cap"}, {"method": "cpl"}, relative=True)
    units = judged["table"].set_index("dataset")
    assert units.loc["dtd", "effect"] == pytest.approx(3.0) and units.loc["dtd", "std"] == pytest.approx(np.sqrt(2))
    assert units.loc["eurosat", "seeds"] == 2 and units.loc["eurosat", "effect"] == pytest.approx(-3.0)
    assert units["agrees"].to_dict() == {"dtd": 1, "cub": 0, "eurosat": -1}
    assert (judged["agree"], judged["disagree"], judged["units"], judged["verdict"]) == (1, 1, 3, "inconclusive")
    assert judged["effect"] == pytest.approx((3 - 0.3 - 3) / 3)
    # relative: 3/50, −0.3/60.3, −3/45 in percent, averaged
    assert judged["relative"] == pytest.approx(100 * (3 / 50 - 0.3 / 60.3 - 3 / 45) / 3)


def test_judge_robust_and_close_by_hand():
    frame = runs([
        # resisc45: means 80, 81, 79 over k (seed std 0) → spread 2 ≤ 3: robust
        *[("resisc45", "ul", "cap", "default", k, s, v) for k, v in ((4, 80.0), (8, 81.0), (16, 79.0)) for s in (1, 2)],
        # dtd: means 40, 46 → spread 6 > 3: not robust
        *[("dtd", "ul", "cap", "default", k, s, v) for k, v in ((4, 40.0), (8, 46.0)) for s in (1, 2)],
    ])
    judged = analysis.judge_robust(frame, tolerance=3.0)
    assert judged["table"].set_index("dataset")["effect"].to_dict() == {"resisc45": 2.0, "dtd": 6.0}
    assert (judged["agree"], judged["disagree"], judged["verdict"]) == (1, 1, "inconclusive")
    assert analysis.judge_robust(frame, tolerance=3.0, exclude=(4,))["agree"] == 2  # dtd's k=8 alone: spread 0
    # close: half the data (k=8 here) at most 3 points below all of it (k=4): resisc45 +1 agrees, dtd +6 agrees
    close = analysis.judge_close(frame, {"sweep": 8}, {"sweep": 4}, tolerance=3.0)
    assert (close["agree"], close["units"], close["verdict"]) == (2, 2, "supported")
    worse = analysis.judge_close(frame, {"sweep": 4}, {"sweep": 8}, tolerance=3.0)  # dtd: −6 < −3 disagrees
    assert (worse["agree"], worse["disagree"]) == (1, 1)


def test_judge_alignment_counts_planted_classes_only():
    classes = pd.DataFrame([
        {"dataset": "dtd", "class": "gauzy", "seed": 1, "planted": True, "description": "informative", "without": 10.0, "with": 80.0},
        {"dataset": "dtd", "class": "gauzy", "seed": 2, "planted": True, "description": "informative", "without": 10.0, "with": 70.0},
        {"dataset": "dtd", "class": "pitted", "seed": 1, "planted": True, "description": "sibling", "without": 20.0, "with": 0.0},
        {"dataset": "dtd", "class": "pitted", "seed": 2, "planted": True, "description": "sibling", "without": 20.0, "with": 10.0},
        {"dataset": "dtd", "class": "bumpy", "seed": 1, "planted": False, "description": "vague", "without": 90.0, "with": 60.0},
    ])
    classes["gain"] = classes["with"] - classes["without"]
    judged = analysis.judge_alignment(classes)
    # gauzy: +70, +60 (mean 65, std 7.07) agrees; pitted: −20, −10 (mean −15, std 7.07) disagrees
    assert (judged["units"], judged["agree"], judged["disagree"], judged["over_60"]) == (2, 1, 1, 1)
    assert judged["effect"] == pytest.approx(25.0) and judged["other_gain"] == pytest.approx(-30.0)
    assert judged["other_classes"] == 1


def _record(labels, preds, confidences, pairs=()):
    return {"results": {"metrics": {"test_predictions": {"label": labels, "pred": preds, "confidence": confidences}},
                        "ground_truth": {"confusion_pair_indices": [list(p) for p in pairs]}}}


def test_calibration_scores_and_judge_by_hand():
    labels = [0, 0, 1, 1, 2, 2]
    # with the margin: class 1's images right; without: one of them lost to class 0
    with_margin = _record(labels, [0, 0, 1, 1, 2, 2], [0.9] * 6, pairs=[(0, 1)])
    without = _record(labels, [0, 0, 1, 0, 2, 2], [0.9] * 6, pairs=[(0, 1)])
    frame = pd.DataFrame([
        {"dataset": "dtd", "paradigm": "ul", "method": "cap", "variant": v, "sweep": None, "seed": 1, "state": "done",
         "value": 0.0, "record": r} for v, r in (("margin", with_margin), ("no_margin", without))])
    scores = analysis.calibration_scores(frame, {("dtd", 1): [(1, 0)]})
    planted = scores[scores["view"] == "planted"].set_index("variant")
    # planted pair (0, 1): the text of 0 drifts to 1's images: victim 1, attractor 0
    assert planted.loc["no_margin", "victim_accuracy"] == 50.0 and planted.loc["no_margin", "victim_to_attractor"] == 50.0
    groups = scores[scores["view"] == "groups"].set_index("variant")
    assert groups.loc["margin", "accuracy"] == 100.0 and groups.loc["no_margin", "accuracy"] == 75.0
    # ECE of {0, 1}: with margin, all right at .9 → 10; without, 3 of 4 right at .9 → |.75 − .9| = 15
    assert groups.loc["margin", "ece"] == pytest.approx(10.0) and groups.loc["no_margin", "ece"] == pytest.approx(15.0)
    accuracy = analysis.judge_calibration(scores, "accuracy", "groups")
    ece = analysis.judge_calibration(scores, "ece", "groups")
    assert accuracy["effect"] == pytest.approx(25.0) and ece["effect"] == pytest.approx(5.0)  # ECE 15 → 10: +5 the paper's way
    assert accuracy["agree"] == ece["agree"] == 1


def test_compare_verdicts_on_two_sets_of_runs():
    def ablation(gain):  # every variant of Table 2 on two datasets and two seeds; full is `gain` above the others
        return runs([(d, "ul", "cap", v, None, seed, 60.0 + (gain if v == "full" else 0.0) + seed / 10)
                     for d in ("dtd", "cub") for v in ("full", "no_ca", "no_margin", "neither") for seed in (1, 2)])

    first, second = ablation(2.0), ablation(-2.0)  # +2 in both cells: supported; −2 in both: contradicted
    table = analysis.compare_verdicts(lambda m: first, lambda m: second, ("table2",)).set_index("id")
    assert list(table.index) == ["table2_ca", "table2_cacm", "table2_both"]
    assert set(table["first_verdict"]) == {"supported"} and set(table["second_verdict"]) == {"contradicted"}
    assert table["first_effect"].tolist() == pytest.approx([2.0] * 3) and not table["same"].any()
    same = analysis.compare_verdicts(lambda m: first, lambda m: first, ("table2",))
    assert same["same"].all() and (same["first_units"] == 2).all()


def test_official_budget_by_hand():
    assert analysis.official_budget("cap", "eurosat") == {"gradient_steps": 2500, "images_seen": 2500 * 64}
    # FPL: 16 × 10 = 160 pseudolabels → 2 batches of 64 per epoch, 50 epochs
    assert analysis.official_budget("fpl", "eurosat")["gradient_steps"] == 100
    # GRIP on 32 per class (320 images, 10 rounds): K_r = ⌊3.2 r⌋ → 30, 60, …, 320 pseudolabels →
    # 1, 1, 1, 1, 2, 2, 3, 3, 4, 5 batches of 64 (at least one) → 23 per epoch × 50
    assert analysis.official_budget("grip", "eurosat", per_class=32)["gradient_steps"] == 23 * 50


def test_method_summary_and_gap_to_baselines_by_hand():
    cells = pd.DataFrame([("dtd", "ul", "cap", 50.0), ("dtd", "ul", "cpl", 52.0), ("cub", "ul", "cap", 70.0),
                          ("cub", "ul", "cpl", 60.0), ("eurosat", "ul", "cap", 40.0)],
                         columns=["dataset", "paradigm", "method", "mean"])
    summary = analysis.method_summary(cells).set_index("method")  # eurosat: CPL missing, left out
    assert summary.loc["cap", "average"] == 60.0 and summary.loc["cpl", "average"] == 56.0
    assert summary.loc["cap", "wins"] == 1 and summary.loc["cpl", "wins"] == 1 and summary.loc["cap", "cells"] == 2
    frame = runs([("dtd", "ul", m, "default", None, s, v) for m, s, v in
                  (("cap", 1, 50.0), ("cap", 2, 52.0), ("grip", 1, 53.0), ("cpl", 1, 51.0))])
    (gap,) = analysis.gap_to_baselines(frame).to_dict("records")
    assert gap["best_baseline"] == "grip" and gap["gap"] == pytest.approx(-2.0) and gap["cap_std"] == pytest.approx(np.sqrt(2))


def test_claims_file_names_real_matrices_pages_and_kinds():
    pages = set(re.findall(r"\S+", re.search(r"^PAGES := (.*)$", Path("Makefile").read_text(), re.M).group(1)))
    pages |= {"table2", "table3", "figure6_k", "figure7_tau", "figure10_margin_scale", "figure11_unlabelled_fraction"}
    kinds = {"paired", "robust", "close", "alignment", "calibration", "training_time", "detection", "untestable"}
    claims = analysis.claims()
    assert len({c["id"] for c in claims}) == len(claims)
    for claim in claims:
        assert claim["test"]["kind"] in kinds and claim["test"]["matrix"] in matrix_names(), claim
        assert claim["page"] in pages, claim


def test_evidence_text():
    row = {"id": "abstract", "sim_verdict": "supported", "sim_units": 18.0, "sim_agree": 12.0, "sim_disagree": 2.0,
           "sim_effect": 2.345, "sim_relative": 4.56, "sim_spread": 0.71}
    assert analysis.evidence_text(row) == ("+2.3 points (+4.6 % relative); seed spread 0.7; 12 of 18 dataset × "
                                           "paradigm cells agree, 2 disagree")
    assert analysis.evidence_text({"id": "table4", "sim_reason": "no backbone"}) == "not testable in the simulator: no backbone"
    assert analysis.evidence_text({"id": "figure6", "sim_verdict": "no runs", "sim_units": 0}) == "no runs with a result yet"
