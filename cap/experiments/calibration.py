"""Calibration: CAP's margin on confusion groups (Figure 9) and the simulator's zero-shot
confidence beside CLIP's, computed from records or features for the pages, each function tested."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cap.core import metrics
from cap.experiments.report import done_records


# -- Figure 9: the margin on confusion groups and on the planted pairs --------------------------
def confusion_groups_by_dataset(zero_shot_runs: pd.DataFrame, paradigm: str = "ul") -> dict[tuple[str, int], list]:
    """Per dataset and replicate (seed: on the simulator, its draw of the problem), the confusion
    groups of zero-shot CLIP's test predictions, ties broken by the confusions' confidence, then
    class names (:func:`metrics.confusion_groups`)."""
    out = {}
    for labels, record in done_records(zero_shot_runs):
        key = (labels["dataset"], labels["seed"])
        if labels["paradigm"] != paradigm or key in out:
            continue
        test = record["results"]["metrics"]["test_predictions"]
        names = record["results"]["classnames"]
        out[key] = metrics.confusion_groups(test["label"], test["pred"], len(names),
                                            confidence=test["confidence"], names=names)
    return out


def planted_pairs(record: dict) -> list[tuple[int, int]]:
    """The simulator's planted confusion pairs of a record as (victim, attractor): the attractor's
    text drifts toward the victim's images. Empty on real data."""
    truth = record["results"].get("ground_truth") or {}
    return [(b, a) for a, b in truth.get("confusion_pair_indices", [])]


def calibration_scores(runs: pd.DataFrame, groups: dict[str, list]) -> pd.DataFrame:
    """Per run and view, local accuracy and local ECE averaged over the view's groups: ``groups``
    (zero-shot confusion groups of the run's dataset and replicate, the paper's measure) and
    ``planted`` (the simulator's planted pairs, with the victim's accuracy and its share of images
    lost to the attractor)."""
    rows = []
    for labels, record in done_records(runs):
        test = record["results"]["metrics"]["test_predictions"]
        args = (test["label"], test["pred"], test["confidence"])
        own = groups.get((labels["dataset"], labels["seed"]), [])
        views = {"groups": [metrics.group_scores(*args, g) for g in own],
                 "planted": [metrics.pair_scores(*args, v, a) for v, a in planted_pairs(record)]}
        for view, scores in views.items():
            if scores:
                rows.append({"dataset": labels["dataset"], "variant": labels["variant"], "seed": labels["seed"],
                             "view": view, "groups": len(scores)} |
                            {key: float(np.mean([s[key] for s in scores])) for key in scores[0]})
    columns = ["dataset", "variant", "seed", "view", "groups", "accuracy", "ece", "victim_accuracy",
               "victim_to_attractor"]
    return pd.DataFrame(rows, columns=columns)


def margin_summary(scores: pd.DataFrame, view: str, titles=None) -> pd.DataFrame:
    """Per dataset: one view's local accuracy and local ECE with the margin (variant ``margin``),
    without it (``no_margin``), mean over replicates, and the change (with − without). ``titles`` maps
    a dataset name to the title shown (default the name)."""
    part = scores[scores["view"] == view]
    if not len(part):
        return pd.DataFrame()
    means = part.groupby(["dataset", "variant"], sort=False)[["accuracy", "ece", "groups"]].mean().unstack("variant")
    out = pd.DataFrame({"dataset": [titles(d) if titles else d for d in means.index],
                        "pairs": means[("groups", "margin")].round().astype("Int64").values})
    for measure, title in (("accuracy", "local accuracy"), ("ece", "local ECE")):
        out[f"{title}, with CACM"] = means[(measure, "margin")].values
        out[f"{title}, w/o CACM"] = means[(measure, "no_margin")].values
        out[f"{title}, change"] = (means[(measure, "margin")] - means[(measure, "no_margin")]).values
    return out


def paired_change(frame: pd.DataFrame, column: str, with_: str, without: str, dataset: str,
                  view: str | None = None) -> float:
    """Mean over replicates of ``column`` in variant ``with_`` minus variant ``without``, on one dataset
    (and one view of :func:`calibration_scores`), seeds paired; NaN without a pair."""
    part = frame[(frame["dataset"] == dataset) & ((frame["view"] == view) if view else True)]
    a = part[part["variant"] == with_].set_index("seed")[column]
    b = part[part["variant"] == without].set_index("seed")[column]
    return float((a - b).dropna().mean())


def margin_effects(scores: pd.DataFrame, whole: pd.DataFrame, settings, titles=None) -> pd.DataFrame:
    """Per (setting, dataset): the margin's effect (with − without, mean over replicates) on the planted
    pairs' victim accuracy, their errors toward the attractor, their local ECE, and the whole test
    set's ECE (``whole``: :func:`analysis.confidence_and_accuracy`). ``settings``: (label, variant
    with the margin, variant without it)."""
    rows = []
    for label, with_, without in settings:
        for dataset in sorted(set(scores["dataset"])) if len(scores) else []:
            rows.append({"setting": label, "dataset": titles(dataset) if titles else dataset,
                         "victim accuracy": paired_change(scores, "victim_accuracy", with_, without, dataset, "planted"),
                         "victim → attractor": paired_change(scores, "victim_to_attractor", with_, without, dataset, "planted"),
                         "local ECE (planted)": paired_change(scores, "ece", with_, without, dataset, "planted"),
                         "ECE (whole test set)": paired_change(whole, "ece", with_, without, dataset)})
    return pd.DataFrame(rows)


def whole_test_set_change(whole: pd.DataFrame) -> dict:
    """The margin's change (with − without, paired by dataset and seed) of the whole test set's
    confidence, accuracy and ECE: their means, and the pairs where ECE rose and all pairs."""
    if not len(whole):
        return {"confidence": np.nan, "accuracy": np.nan, "ece": np.nan, "ece_up": 0, "pairs": 0}
    paired = whole.pivot_table(index=["dataset", "seed"], columns="variant", values=["confidence", "accuracy", "ece"])
    change = {m: (paired[(m, "margin")] - paired[(m, "no_margin")]).dropna() for m in ("confidence", "accuracy", "ece")}
    return {m: float(change[m].mean()) for m in change} | {"ece_up": int((change["ece"] > 0).sum()),
                                                           "pairs": len(change["ece"])}


def confidence_reading(change: dict, noise: float = 0.5) -> str:
    """One sentence on :func:`whole_test_set_change`: whether the margin raised confidence by more
    than accuracy (by more than twice ``noise``, points), as training with a margin predicts."""
    if not change["pairs"]:
        return ""
    excess = change["confidence"] - change["accuracy"]
    if excess > 2 * noise:
        return (f"Confidence gains {excess:.1f} points more than accuracy, as training with a margin predicts: "
                "a property of the method, not of the simulator.")
    if excess < -2 * noise:
        return f"Accuracy gains {-excess:.1f} points more than confidence here."
    return "Confidence and accuracy change by about as much here (within 1 point)."


def diagnostics_conclusion(scale: pd.DataFrame | None, effects: pd.DataFrame, noise: float = 0.5) -> str:
    """What Figure 9's diagnostics support, one clause per kind of evidence that exists: the margin
    scale's runs (``scale``: mean confidence, accuracy and ECE per dataset and m) and the margin's
    effect on the planted pairs (``effects``: :func:`margin_effects`, its "preset confusion" rows)."""
    clauses = []
    if scale is not None and len(scale):
        by_m = {c: scale.pivot_table(index="dataset", columns="m", values=c) for c in ("confidence", "accuracy", "ece")}
        low, high = min(by_m["ece"].columns), max(by_m["ece"].columns)
        gain = {c: float((by_m[c][high] - by_m[c][low]).mean()) for c in by_m}
        rising = int((by_m["ece"][high] > by_m["ece"][low]).sum())
        excess = gain["confidence"] - gain["accuracy"]
        reading = ("training with a margin that is absent at test time raises confidence more than accuracy, a genuine "
                   "effect of the method rather than of the simulator" if excess > 2 * noise else
                   f"accuracy rises {-excess:.1f} points more than confidence, so a larger margin adds no "
                   "overconfidence here (CAP is overconfident at every m: compare confidence and accuracy in the table)" if excess < -2 * noise else
                   "confidence and accuracy rise by about as much (within 1 point), so the scale alone does not "
                   "decalibrate CAP")
        clauses.append(f"raising the margin scale from m = {low:g} to {high:g} raises mean confidence by "
                       f"{gain['confidence']:+.1f} points and accuracy by {gain['accuracy']:+.1f} (ECE higher on "
                       f"{rising} of {len(by_m['ece'])} datasets): {reading}")
    preset = effects[effects["setting"] == "preset confusion"] if len(effects) else effects
    if len(preset) and preset["victim → attractor"].notna().any():
        falls = int((preset["victim → attractor"] < 0).sum())
        clauses.append(f"the margin reduces the planted victims' errors toward their attractor on {falls} of "
                       f"{int(preset['victim → attractor'].notna().sum())} datasets, so it does act on planted "
                       "confusion even where the pair's local accuracy does not rise (the victim's images can go to "
                       "other classes instead)")
    if not clauses:
        return "The diagnostics have not run yet."
    return "In the simulator the diagnostics show: " + "; ".join(clauses) + (
        ". FGVC-Aircraft's zero-shot confusions come from its ambiguous images (85 % of them lie between two "
        "sibling classes), not from drifted texts, so its confusion groups are not planted pairs. The simulated "
        "zero-shot model's calibration is set to published CLIP values (see the simulator page); the table above "
        "shows the verdicts at CLIP's uncalibrated scale as well.")


# -- the simulator's zero-shot calibration --------------------------------------------------------
def reliability(confidence, correct, n_bins: int = 15) -> pd.DataFrame:
    """A reliability diagram's bars: per non-empty equal-width confidence bin (the bins of
    :func:`metrics.expected_calibration_error`), its images, mean confidence and accuracy (percent)."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=bool)
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    rows = [{"bin": int(b), "low": 100 * b / n_bins, "high": 100 * (b + 1) / n_bins, "images": int((bins == b).sum()),
             "confidence": 100 * float(confidence[bins == b].mean()), "accuracy": 100 * float(correct[bins == b].mean())}
            for b in np.unique(bins)]
    return pd.DataFrame(rows, columns=["bin", "low", "high", "images", "confidence", "accuracy"])


def zero_shot_calibration(test_features, text_features, test_labels, logit_scale: float) -> dict:
    """Zero-shot accuracy, mean confidence (max softmax probability) and ECE (15 and 20 bins, in
    percent) of features as CLIP scores them, with the 15-bin reliability bars."""
    logits = logit_scale * np.asarray(test_features, dtype=np.float64) @ np.asarray(text_features, dtype=np.float64).T
    logits -= logits.max(1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    confidence, pred = probs.max(1), probs.argmax(1)
    correct = pred == np.asarray(test_labels)
    return {"accuracy": 100 * float(correct.mean()), "confidence": 100 * float(confidence.mean()),
            "ece": metrics.expected_calibration_error(confidence, correct, 15),
            "ece_20": metrics.expected_calibration_error(confidence, correct, 20),
            "bins": reliability(confidence, correct, 15)}
