"""Figure 9's page: the numbers its text quotes and its diagnostic tables, from the scores of
:mod:`cap.experiments.calibration`. The page only shows what these return."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cap.experiments import calibration
from cap.experiments.claims import judge_calibration
from cap.experiments.report import number

VIEWS = ("groups", "planted")
MEASURES = ("accuracy", "ece")
# (knob setting in words, variant with the margin, variant without it), diagnostics_cap.yml
KNOB_SETTINGS = [("preset confusion", "official", "no_margin"),
                 ("no planted confusion", "confusion_0", "confusion_0_no_margin"),
                 ("confusion twice as strong", "confusion_2", "confusion_2_no_margin"),
                 ("CLIP's logit scale 100 (overconfident zero-shot)", "scale_100", "scale_100_no_margin"),
                 ("30 % ambiguous images (FGVC)", "hard_03", "hard_03_no_margin")]


def claim_texts(scores: pd.DataFrame) -> dict[str, str]:
    """Per view and measure, the text's numbers (``f9_<view>_<measure>``...): the margin's plain
    change (with − without, points; NaN-dash without units), the datasets that agree with the
    paper, disagree and count, and the verdict by the claims page's rule."""
    texts = {}
    for view in VIEWS:
        for measure in MEASURES:
            judged = judge_calibration(scores, measure, view)
            sign = -1 if measure == "ece" else 1  # judged effects point the paper's way; show the plain change
            key = f"f9_{view}_{measure}"
            texts[key] = number(sign * judged["effect"] if judged["units"] else np.nan, signed=True)
            texts |= {f"{key}_{part}": number(judged[part], decimals=0) for part in ("agree", "disagree", "units")}
            texts[f"{key}_verdict"] = judged["verdict"]
    return texts


def sigma_zero_shares(curves: pd.DataFrame) -> dict[str, float]:
    """The mean share (percent) of classes with σ = 0 in the first epoch with the margin and in the
    last epoch with and without it (``curves``: ``analysis.sigma_zero_curves``); NaN without curves."""
    if not len(curves):
        return {"first_margin": np.nan, "first_no_margin": np.nan, "last_margin": np.nan, "last_no_margin": np.nan}
    first = curves[curves["epoch"] == 0]
    last = curves[curves["epoch"] == curves["epoch"].max()]
    return {f"{when}_{variant}": frame[frame["variant"] == variant]["share"].mean()
            for when, frame in (("first", first), ("last", last)) for variant in ("margin", "no_margin")}


def diagnostics_texts(change: dict, curves: pd.DataFrame) -> dict[str, str]:
    """The diagnostics' numbers in the text: the margin's change of the whole test set's confidence,
    accuracy and ECE (``change``: ``calibration.whole_test_set_change``), the sentence reading them,
    and the σ = 0 shares of :func:`sigma_zero_shares`."""
    shares = sigma_zero_shares(curves)
    return {"f9_conf_change": number(change["confidence"], signed=True),
            "f9_acc_change": number(change["accuracy"], signed=True),
            "f9_ece_change": number(change["ece"], signed=True),
            "f9_ece_up_pairs": number(change["ece_up"], decimals=0),
            "f9_pairs": number(change["pairs"], decimals=0),
            "f9_conf_reading": calibration.confidence_reading(change),
            **{f"f9_sigma0_{when}_{variant}": number(shares[f"{when}_{variant}"], decimals=0)
               for variant in ("margin", "no_margin") for when in ("first", "last")}}


def knob_effects_shown(effects: pd.DataFrame) -> pd.DataFrame:
    """:func:`calibration.margin_effects` without the settings that have neither a planted-pair nor a
    whole-test-set number (a setting run on other datasets only)."""
    return effects.dropna(how="all", subset=["victim accuracy", "ECE (whole test set)"])


def margin_scale_means(whole: pd.DataFrame) -> pd.DataFrame:
    """Per margin scale m and dataset, the mean over replicates of the whole test set's confidence,
    accuracy and ECE (``whole``: ``analysis.confidence_and_accuracy`` of Figure 10's runs, m in its
    ``sweep`` column), ordered by dataset, then m."""
    if not len(whole):
        return pd.DataFrame(columns=["m", "dataset", "confidence", "accuracy", "ece"])
    table = whole.rename(columns={"sweep": "m"}).groupby(["m", "dataset"])[["confidence", "accuracy", "ece"]]
    return table.mean().reset_index().sort_values(["dataset", "m"])


def margin_scale_shown(means: pd.DataFrame, titles) -> pd.DataFrame:
    """:func:`margin_scale_means` for the page: dataset titles and the columns' units."""
    return pd.DataFrame({"dataset": [titles(d) for d in means["dataset"]], "m": means["m"],
                         "confidence (%)": means["confidence"], "accuracy (%)": means["accuracy"],
                         "ECE (%)": means["ece"]})
