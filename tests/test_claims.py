"""The claims page's analysis: the verdict rule, the judges of each kind of claim, Table 1's
summaries and the official budgets, against hand-computed values."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cap.experiments import analysis, calibration, claims
from cap.experiments.matrix import matrix_names


@pytest.fixture(autouse=True)
def one_replicate_counts(monkeypatch):
    """The hand-computed cases use one or two replicates per unit: the rule's minimum is lowered to
    one here (test_too_few_replicates_give_no_verdict checks the real minimum)."""
    settings = claims.rule() | {"min_replicates": 1}
    monkeypatch.setattr(claims, "rule", lambda: settings)


def runs(rows):
    """A runs frame as report.collect makes it, from (dataset, paradigm, method, variant, sweep, seed, value)."""
    frame = pd.DataFrame(rows, columns=["dataset", "paradigm", "method", "variant", "sweep", "seed", "value"])
    return frame.assign(state="done", record=None)


def test_paired_effect_interval_and_verdict_by_hand():
    frame = runs([
        # dtd: CAP − CPL = 2, 4 (mean 3); its own interval [2, 4] is above 0: agrees
        ("dtd", "ul", "cap", "default", None, 1, 52.0), ("dtd", "ul", "cpl", "default", None, 1, 50.0),
        ("dtd", "ul", "cap", "default", None, 2, 54.0), ("dtd", "ul", "cpl", "default", None, 2, 50.0),
        # cub: −0.2, −0.4 (mean −0.3): interval [−0.4, −0.2], below 0: disagrees
        ("cub", "ul", "cap", "default", None, 1, 60.0), ("cub", "ul", "cpl", "default", None, 1, 60.2),
        ("cub", "ul", "cap", "default", None, 2, 60.0), ("cub", "ul", "cpl", "default", None, 2, 60.4),
        # eurosat: −5, −1 (mean −3): disagrees; replicate 3 has no CPL run: left out
        ("eurosat", "ul", "cap", "default", None, 1, 40.0), ("eurosat", "ul", "cpl", "default", None, 1, 45.0),
        ("eurosat", "ul", "cap", "default", None, 2, 44.0), ("eurosat", "ul", "cpl", "default", None, 2, 45.0),
        ("eurosat", "ul", "cap", "default", None, 3, 99.0),
    ])
    judged = claims.judge_paired(frame, {"method": "cap"}, {"method": "cpl"}, relative=True)
    units = judged["table"].set_index("dataset")
    assert units["effect"].to_dict() == pytest.approx({"dtd": 3.0, "cub": -0.3, "eurosat": -3.0})
    # a unit's own interval is Student's t: dtd 3 ∓ t(0.975, 1) × sd / √2 = 3 ∓ 12.706 (two replicates say little)
    assert (units.loc["dtd", "low"], units.loc["dtd", "high"]) == pytest.approx((3 - 12.706, 3 + 12.706), abs=1e-3)
    assert units.loc["eurosat", "replicates"] == 2
    assert (judged["agree"], judged["disagree"], judged["units"]) == (0, 0, 3)  # every unit's interval holds 0
    # the mean over cells, −0.1; each cell's replicates spread about its mean by √2 before resampling, so the
    # interval lies between (3 − √2 − 0.3 − 0.1√2 − 3 − 2√2)/3 and (3 + √2 − 0.3 + 0.1√2 − 3 + 2√2)/3
    assert judged["effect"] == pytest.approx(-0.1)
    r = np.sqrt(2)
    assert (-0.3 - 3.1 * r) / 3 - 1e-9 <= judged["low"] < 0 < judged["high"] <= (-0.3 + 3.1 * r) / 3 + 1e-9
    assert judged["verdict"] == "inconclusive"
    assert judged["p_better"] == pytest.approx(1 / 3)
    # relative: per replicate 100 × difference / the cell's mean CPL: dtd 4, 8; cub −0.33, −0.66; eurosat −11.1, −2.2
    assert judged["relative"] == pytest.approx((6 - 100 * 0.3 / 60.3 - 100 * 3 / 45) / 3)


def test_an_interval_above_zero_supports_and_below_zero_contradicts():
    ahead = runs([(d, "ul", m, "default", None, seed, 50.0 + (gain if m == "cap" else 0.0) + seed)
                  for d in ("dtd", "cub") for m in ("cap", "cpl") for seed, gain in ((1, 1.0), (2, 2.0), (3, 3.0))])
    judged = claims.judge_paired(ahead, {"method": "cap"}, {"method": "cpl"})
    assert judged["verdict"] == "supported" and judged["low"] >= 1.0 and judged["effect"] == pytest.approx(2.0)
    assert claims.judge_paired(ahead, {"method": "cpl"}, {"method": "cap"})["verdict"] == "contradicted"
    assert claims.judge_paired(ahead, {"method": "cap"}, {"method": "grip"})["verdict"] == "no runs"


def test_judge_robust_and_close_by_hand():
    frame = runs([
        # resisc45: means 80, 81, 79 over k, equal replicates → range 2, interval [2, 2]
        *[("resisc45", "ul", "cap", "default", k, s, v) for k, v in ((4, 80.0), (8, 81.0), (16, 79.0)) for s in (1, 2)],
        # dtd: means 40, 46 → range 6
        *[("dtd", "ul", "cap", "default", k, s, v) for k, v in ((4, 40.0), (8, 46.0)) for s in (1, 2)],
    ])
    judged = claims.judge_robust(frame, tolerance=3.0)
    assert judged["table"].set_index("dataset")["effect"].to_dict() == {"resisc45": 2.0, "dtd": 6.0}
    # the largest change is dtd's 6, surely above the tolerance of 3: contradicted
    assert (judged["effect"], judged["low"], judged["verdict"]) == (6.0, 6.0, "contradicted")
    assert (judged["agree"], judged["disagree"]) == (1, 1)
    # without k = 4, dtd has one value left (no range) and resisc45 moves by 2: inside 3, supported
    kept = claims.judge_robust(frame, tolerance=3.0, exclude=(4,))
    assert (kept["units"], kept["effect"], kept["verdict"]) == (1, 2.0, "supported")
    # close: k=8 at most 3 points below k=4: resisc45 +1, dtd +6, mean 3.5 above −3: supported
    close = claims.judge_close(frame, {"sweep": 8}, {"sweep": 4}, tolerance=3.0)
    assert (close["effect"], close["verdict"], close["agree"]) == (3.5, "supported", 2)
    worse = claims.judge_close(frame, {"sweep": 4}, {"sweep": 8}, tolerance=3.0)  # mean −3.5, below −3
    assert (worse["effect"], worse["verdict"], worse["agree"], worse["disagree"]) == (-3.5, "contradicted", 1, 1)


def test_alignment_gains_count_planted_classes_only():
    classes = pd.DataFrame([
        {"dataset": "dtd", "class": "gauzy", "seed": 1, "planted": True, "description": "informative", "without": 10.0, "with": 80.0},
        {"dataset": "dtd", "class": "gauzy", "seed": 2, "planted": True, "description": "informative", "without": 10.0, "with": 70.0},
        {"dataset": "dtd", "class": "pitted", "seed": 1, "planted": True, "description": "sibling", "without": 20.0, "with": 0.0},
        {"dataset": "dtd", "class": "pitted", "seed": 2, "planted": True, "description": "sibling", "without": 20.0, "with": 10.0},
        {"dataset": "dtd", "class": "bumpy", "seed": 1, "planted": False, "description": "vague", "without": 90.0, "with": 60.0},
    ])
    classes["gain"] = classes["with"] - classes["without"]
    gains = analysis.alignment_gains(classes)
    # gauzy: +70, +60 (mean 65, std 7.07) gains; pitted: −20, −10 (mean −15, std 7.07) loses
    assert (gains["units"], gains["gain"], gains["loss"], gains["over_60"]) == (2, 1, 1, 1)
    assert gains["effect"] == pytest.approx(25.0) and gains["other_gain"] == pytest.approx(-30.0)
    assert gains["other_classes"] == 1


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
    scores = calibration.calibration_scores(frame, {("dtd", 1): [(1, 0)]})
    planted = scores[scores["view"] == "planted"].set_index("variant")
    # planted pair (0, 1): the text of 0 drifts to 1's images: victim 1, attractor 0
    assert planted.loc["no_margin", "victim_accuracy"] == 50.0 and planted.loc["no_margin", "victim_to_attractor"] == 50.0
    groups = scores[scores["view"] == "groups"].set_index("variant")
    assert groups.loc["margin", "accuracy"] == 100.0 and groups.loc["no_margin", "accuracy"] == 75.0
    # ECE of {0, 1}: with margin, all right at .9 → 10; without, 3 of 4 right at .9 → |.75 − .9| = 15
    assert groups.loc["margin", "ece"] == pytest.approx(10.0) and groups.loc["no_margin", "ece"] == pytest.approx(15.0)
    accuracy = claims.judge_calibration(scores, "accuracy", "groups")
    ece = claims.judge_calibration(scores, "ece", "groups")
    assert accuracy["effect"] == pytest.approx(25.0) and ece["effect"] == pytest.approx(5.0)  # ECE 15 → 10: +5 the paper's way
    assert accuracy["agree"] == ece["agree"] == 1


def test_official_budget_by_hand():
    assert analysis.official_budget("cap", "eurosat") == {"gradient_steps": 2500, "images_seen": 2500 * 64}
    # FPL (Menghini's batching): 16 × 10 = 160 pseudolabels, 128 trained → 2 batches of 64 per epoch, 50 epochs
    assert analysis.official_budget("fpl", "eurosat") == {"gradient_steps": 100, "images_seen": 50 * 128}
    # GRIP on 32 per class (320 images, 10 rounds): K_r = ⌊r · 32 / 10⌋ = 3, 6, 9, 12, 16, 19, 22, 25, 28, 32 →
    # 30, 60, 90 pseudolabels, then 80 % of 120, …, 320 (96, 128, 152, 176, 200, 224, 256) → ⌈n / 64⌉ =
    # 1, 1, 2, 2, 2, 3, 3, 4, 4, 4 batches → 26 per epoch × 50
    assert analysis.official_budget("grip", "eurosat", per_class=32)["gradient_steps"] == 26 * 50
    # CPL (drop_last, nothing held out): ⌊n / 64⌋ of 30, …, 320 = 0, 0, 1, 1, 2, 2, 3, 3, 4, 5 → 21 × 50
    assert analysis.official_budget("cpl", "eurosat", per_class=32)["gradient_steps"] == 21 * 50


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
    kinds = {"paired", "robust", "close", "calibration", "detection", "untestable"}
    every = claims.claims()
    assert len({c["id"] for c in every}) == len(every)
    for claim in every:
        assert claim["test"]["kind"] in kinds and claim["test"]["matrix"] in matrix_names(), claim
        assert claim["page"] in pages, claim


def test_evidence_text():
    row = {"id": "abstract", "kind": "paired", "sim_verdict": "supported", "sim_units": 18, "sim_agree": 12,
           "sim_disagree": 2, "sim_effect": 2.345, "sim_low": 0.61, "sim_high": 4.02, "sim_relative": 4.56,
           "sim_relative_low": 1.04, "sim_relative_high": 8.2, "sim_p_better": 0.72, "sim_replicates": 3}
    assert claims.evidence_text(row) == (
        "+2.3 points, 95 % interval [+0.6, +4.0] (+4.6 % relative, [+1.0, +8.2]); better in a random cell with "
        "probability 0.72; 12 of 18 dataset × paradigm cells agree on their own, 2 disagree; 3+ replicates each")
    assert claims.evidence_text({"id": "table4", "kind": "untestable", "sim_reason": "no backbone"}) == "no backbone"
    assert claims.evidence_text({"id": "figure6", "kind": "robust", "sim_verdict": "no runs", "sim_units": 0}) == \
        "no runs with a result yet"


def test_findings_by_hand():
    table = pd.DataFrame([
        {"id": "a", "claim": "CAP beats GRIP (Table 1).", "kind": "paired", "sim_verdict": "supported",
         "sim_effect": 1.84, "sim_low": 0.52, "sim_high": 3.1},
        {"id": "b", "claim": "The margin lowers ECE (Figure 9).", "kind": "calibration", "sim_verdict": "contradicted",
         "sim_effect": -2.5, "sim_low": -4.0, "sim_high": -1.0},
        {"id": "c", "claim": "Robust to k (Figure 6).", "kind": "robust", "sim_verdict": "supported",
         "sim_effect": 9.0, "sim_low": 8.0, "sim_high": 10.0},
        {"id": "d", "claim": "Larger backbone (Table 4).", "kind": "untestable", "sim_verdict": "not testable here",
         "sim_effect": float("nan"), "sim_low": float("nan"), "sim_high": float("nan")}])
    text = claims.findings(table, largest=1)
    assert text.startswith("Of the paper's 4 claims checked here, the concept simulator supports 2, contradicts 1 "
                           "and leaves 0 inconclusive; 1 are not testable in a simulation.")
    # the largest effect in points among paired, calibration and close claims: −2.5 (a range is not an effect)
    assert "The margin lowers ECE: −2.5 points [−4.0, −1.0]." in text and "CAP beats GRIP" not in text
    assert "Contradicted: The margin lowers ECE." in text and text.endswith("need CLIP on the real datasets.")
    assert claims.findings(table.assign(kind="untestable")).startswith("No claim has runs")



def test_too_few_replicates_give_no_verdict(monkeypatch):
    monkeypatch.undo()  # the rule as claims.yml states it: at least three replicates per unit
    assert claims.rule()["min_replicates"] == 3
    two = runs([(d, "ul", m, "default", None, seed, 50.0 + (1.0 if m == "cap" else 0.0) + seed)
                for d in ("dtd", "cub") for m in ("cap", "cpl") for seed in (1, 2)])
    judged = claims.judge_paired(two, {"method": "cap"}, {"method": "cpl"})
    assert judged["verdict"] == claims.TOO_FEW and judged["short_units"] == 2
    three = pd.concat([two, runs([("dtd", "ul", m, "default", None, 3, 53.0 + (1.0 if m == "cap" else 0.0))
                                  for m in ("cap", "cpl")])])
    judged = claims.judge_paired(three, {"method": "cap"}, {"method": "cpl"})  # dtd has 3: it alone counts
    assert (judged["units"], judged["short_units"], judged["verdict"]) == (1, 1, "supported")
    row = {"id": "x", "kind": "paired", "sim_verdict": claims.TOO_FEW, "sim_units": 0}
    assert claims.evidence_text(row) == "no unit has 3 replicates with a result yet"
