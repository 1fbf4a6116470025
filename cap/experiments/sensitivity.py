"""How a verdict moves with a simulator knob: the same claim judged at each setting of a knob that
could decide it (the strength of the planted mismatch for concept alignment, the planted confusion
and the zero-shot calibration for the margin), from the diagnostics' paired variants."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from cap.experiments.claims import judge_calibration, judge_paired
from cap.experiments.report import number

# (knob setting in words, variant with the part, variant without it), diagnostics_cap.yml
ALIGNMENT_SETTINGS = [("mismatched texts keep none of their images' direction (preset)", "official", "no_ca"),
                      ("keep 0.3 of it", "mismatch_03", "mismatch_03_no_ca"),
                      ("keep 0.6 of it", "mismatch_06", "mismatch_06_no_ca")]
MARGIN_SETTINGS = [("no planted confusion", "confusion_0", "confusion_0_no_margin"),
                   ("preset confusion, calibrated logit scale", "official", "no_margin"),
                   ("confusion twice as strong", "confusion_2", "confusion_2_no_margin"),
                   ("preset confusion, CLIP's logit scale 100 (overconfident)", "scale_100", "scale_100_no_margin")]


def across(judge: Callable[[str, str], dict], settings) -> pd.DataFrame:
    """One row per knob setting: ``judge(with, without)``'s mean paired effect, its 95 % interval,
    how many units (datasets) had enough replicates, and the verdict."""
    rows = []
    for label, with_, without in settings:
        judged = judge(with_, without)
        rows.append({"setting": label, "effect": judged["effect"], "low": judged["low"], "high": judged["high"],
                     "datasets": judged["units"], "verdict": judged["verdict"]})
    return pd.DataFrame(rows, columns=["setting", "effect", "low", "high", "datasets", "verdict"])


def alignment_across_mismatch(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 2's concept-alignment claim (CAP beats CAP without CA) at each mismatch strength."""
    return across(lambda a, b: judge_paired(runs, {"variant": a}, {"variant": b}), ALIGNMENT_SETTINGS)


def margin_across_confusion(scores: pd.DataFrame, measure: str, view: str = "groups") -> pd.DataFrame:
    """Figure 9's claim on ``measure`` (local accuracy up, or local ECE down, with the margin) at
    each setting of the planted confusion and the zero-shot calibration."""
    return across(lambda a, b: judge_calibration(scores, measure, view, a, b), MARGIN_SETTINGS)


def as_shown(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`across`'s rows for a page: "effect [low, high]" in signed points, datasets, verdict."""
    return pd.DataFrame({"setting": table["setting"],
                         "effect [95 % interval]": [f"{number(e, signed=True)} [{number(lo, signed=True)}, "
                                                    f"{number(hi, signed=True)}]" if d else "—"
                                                    for e, lo, hi, d in zip(table["effect"], table["low"],
                                                                            table["high"], table["datasets"])],
                         "datasets": table["datasets"], "verdict": table["verdict"]})
