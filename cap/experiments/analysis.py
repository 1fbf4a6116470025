"""What the book's pages compute from records beyond mean ± std, one small function each.

Pages only read records; the numbers they derive (a sweep's spread, what removing a part costs,
paired differences over seeds, training-time ratios, detected classes, the per-run curves of a
run page) are computed here, so each has a test with a hand-computed value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cap.config import make_config, resolve
from cap.core import metrics
from cap.data.registry import get_dataset
from cap.experiments.matrix import get_profile, load_matrix


# -- sweeps ------------------------------------------------------------------------------------
def official_setting(matrix: str, profile: str, dataset: str):
    """The value the official code uses for ``matrix``'s swept field on ``dataset`` (e.g. k = 16,
    Flowers102 6), as the profile resolves it."""
    spec = load_matrix(matrix)
    if spec.sweep_field is None:
        return None
    config = resolve(make_config(**(get_profile(profile).config | spec.config | {"dataset": dataset})))
    return getattr(config, spec.sweep_field)


def sweep_spread(cells: pd.DataFrame) -> pd.Series:
    """Per dataset: largest minus smallest mean over the swept values (cells from ``summarise``)."""
    valid = cells.dropna(subset=["mean"])
    return valid.groupby("dataset", sort=False)["mean"].agg(lambda m: m.max() - m.min())


# -- ablations ---------------------------------------------------------------------------------
def ablation_effect(runs: pd.DataFrame, reference: str, variant: str) -> float:
    """Mean over (dataset, paradigm) cells that have both of mean(reference) − mean(variant): what
    removing a part costs, in points; NaN when no cell has both."""
    done = runs[runs["state"] == "done"]
    means = done.groupby(["dataset", "paradigm", "variant"])["value"].mean().unstack("variant")
    if reference not in means or variant not in means:
        return float("nan")
    gap = (means[reference] - means[variant]).dropna()
    return float(gap.mean()) if len(gap) else float("nan")


def paired_differences(runs: pd.DataFrame, reference: str = "official") -> pd.DataFrame:
    """Per (variant, dataset, paradigm) other than ``reference``: the variant's and the reference's
    values, and the differences variant − reference of the seeds both have."""
    done = runs[runs["state"] == "done"].set_index(["dataset", "paradigm", "seed", "variant"])["value"]
    rows = []
    for (variant, dataset, paradigm), group in runs[runs["variant"] != reference].groupby(
            ["variant", "dataset", "paradigm"], sort=False):
        pairs = [(seed, done.get((dataset, paradigm, seed, variant)), done.get((dataset, paradigm, seed, reference)))
                 for seed in group["seed"]]
        diffs = {seed: a - b for seed, a, b in pairs if a is not None and b is not None}
        base = runs[(runs["variant"] == reference) & (runs["dataset"] == dataset) & (runs["paradigm"] == paradigm)]
        rows.append({"variant": variant, "dataset": dataset, "paradigm": paradigm,
                     "switched": group["value"].tolist(), "official": base["value"].tolist(),
                     "difference": float(np.mean(list(diffs.values()))) if diffs else float("nan"),
                     "per_seed": diffs})
    return pd.DataFrame(rows, columns=["variant", "dataset", "paradigm", "switched", "official", "difference",
                                       "per_seed"])


# -- appendix ----------------------------------------------------------------------------------
def training_times(records: list[tuple[dict, dict]], minutes: dict) -> pd.DataFrame:
    """Mean training and whole-run seconds per (dataset, method) over seeds, each relative to CAP's
    on the same dataset, beside the paper's minutes and ratio (``minutes``: dataset -> method -> min)."""
    rows = [{"dataset": labels["dataset"], "method": labels["method"], "seed": labels["seed"],
             "train": record["results"]["train_seconds"], "wall": record["results"]["wall_seconds"],
             "device": record["results"]["device"]} for labels, record in records]
    if not rows:
        return pd.DataFrame(columns=["dataset", "method", "seeds", "train", "wall", "device", "relative",
                                     "paper_minutes", "paper_relative"])
    table = pd.DataFrame(rows).groupby(["dataset", "method"], sort=False).agg(
        seeds=("seed", "count"), train=("train", "mean"), wall=("wall", "mean"), device=("device", "first")).reset_index()
    cap_wall = table[table["method"] == "cap"].set_index("dataset")["wall"]
    table["relative"] = [w / cap_wall.get(d, np.nan) for d, w in zip(table["dataset"], table["wall"])]
    paper = [minutes.get(d, {}).get(m, np.nan) for d, m in zip(table["dataset"], table["method"])]
    table["paper_minutes"] = paper
    table["paper_relative"] = [p / minutes.get(d, {}).get("cap", np.nan) for p, d in zip(paper, table["dataset"])]
    return table


def detected_mismatch(records: list[tuple[dict, dict]]) -> pd.DataFrame:
    """Per CAP run that ran concept alignment: the classes detection flagged, against the official
    code's hard-coded list (precision and recall; NaN where a list is empty)."""
    rows = []
    for labels, record in records:
        alignment = record["results"].get("setup", {}).get("concept_alignment")
        if alignment is None:
            continue
        info = get_dataset(labels["dataset"])
        official = set(info.class_indices(info.official_mismatched))
        found = set(alignment["mismatched"])
        names = record["results"]["classnames"]
        both = len(found & official)
        rows.append({"dataset": labels["dataset"], "seed": labels["seed"], "detected": len(found),
                     "classes": ", ".join(names[c] for c in sorted(found)) or "none",
                     "official": len(official), "both": both,
                     "precision": both / len(found) if found else np.nan,
                     "recall": both / len(official) if official else np.nan})
    return pd.DataFrame(rows, columns=["dataset", "seed", "detected", "classes", "official", "both", "precision",
                                       "recall"])


# -- figures 1 and 2 ---------------------------------------------------------------------------
def zero_shot_balance(accuracy, predicted, true) -> dict:
    """How imbalanced one set of zero-shot predictions is: classes under 10 % accuracy, share of
    classes predicted under half as often as they occur, max/min ratio, normalised entropy."""
    return {"below_10": int((np.nan_to_num(np.asarray(accuracy, dtype=float)) < 10).sum()),
            "classes": len(accuracy),
            "under_predicted": metrics.under_predicted_share(predicted, true),
            "imbalance_ratio": metrics.imbalance_ratio(predicted),
            "entropy": metrics.normalized_entropy(predicted)}


# -- one run: the curves of a run page ------------------------------------------------------------
def _pseudolabel_classes(record: dict) -> list[int]:
    n = len(record["results"]["metrics"]["predicted_counts"])
    seen = set(record["results"].get("seen") or [])
    if record["config"]["paradigm"] != "trzsl":
        return list(range(n))
    return [c for c in range(n) if c not in seen]


def _is_cap(record: dict) -> bool:
    return record["config"]["method"] == "cap"


def pseudolabel_timeline(record: dict) -> pd.DataFrame:
    """The pseudolabel set at each refresh: ``progress`` (% of the schedule done when it is used),
    its ``size`` (images) and ``accuracy`` (% with the right label). CAP: the initial D_PL (after
    concept alignment) at 0 %, then each refresh after epoch e at (e + 1)/E; baselines: round r of
    R at (r − 1)/R."""
    results = record["results"]
    rows = []
    if _is_cap(record):
        setup = results.get("setup", {})
        start = (setup.get("concept_alignment") or {}).get("dpl") or setup.get("zero_shot_dpl")
        epochs = record["config"]["epochs"]
        if start:
            rows.append({"progress": 0.0, "size": start["size"], "accuracy": start["accuracy"]})
        rows += [{"progress": 100.0 * (r["epoch"] + 1) / epochs, "size": r["size"], "accuracy": r["accuracy"]}
                 for r in results.get("refreshes", [])]
    else:
        history = results.get("history", [])
        rows = [{"progress": 100.0 * (h["round"] - 1) / len(history), "size": h["size"], "accuracy": h["accuracy"]}
                for h in history if "size" in h]
    return pd.DataFrame(rows, columns=["progress", "size", "accuracy"])


def prediction_balance(record: dict) -> pd.DataFrame:
    """Normalised entropy (1 = every class predicted equally often) of CAP's confident predictions
    σ in each epoch, at (e + 1)/E, and of the final model's test predictions at 100 % (``stage``
    says which)."""
    classes = _pseudolabel_classes(record)
    rows = []
    if _is_cap(record):
        epochs = record["config"]["epochs"]
        rows = [{"progress": 100.0 * (h["epoch"] + 1) / epochs, "stage": "training",
                 "entropy": metrics.normalized_entropy(np.asarray(h["sigma"])[classes])}
                for h in record["results"].get("history", []) if "sigma" in h]
    test = np.asarray(record["results"]["metrics"]["predicted_counts"])
    rows.append({"progress": 100.0, "stage": "test", "entropy": metrics.normalized_entropy(test[classes])})
    return pd.DataFrame(rows, columns=["progress", "stage", "entropy"])


def loss_curve(record: dict) -> pd.DataFrame:
    """Training loss against progress: CAP's mean loss of epoch e at (e + 1)/E, a baseline's mean
    loss of round r at r/R."""
    history = [h for h in record["results"].get("history", []) if "loss" in h]
    if _is_cap(record):
        epochs = record["config"]["epochs"]
        rows = [{"progress": 100.0 * (h["epoch"] + 1) / epochs, "loss": h["loss"]} for h in history]
    else:
        rows = [{"progress": 100.0 * h["round"] / len(history), "loss": h["loss"]} for h in history]
    return pd.DataFrame(rows, columns=["progress", "loss"])


def per_class_against(record: dict, reference: dict) -> pd.DataFrame:
    """Per class: test accuracy of ``reference`` (e.g. zero-shot) and of ``record``, and the gain."""
    ours = np.asarray(record["results"]["metrics"]["per_class_accuracy"], dtype=float)
    base = np.asarray(reference["results"]["metrics"]["per_class_accuracy"], dtype=float)
    names = record["results"].get("classnames") or [str(c) for c in range(len(ours))]
    return pd.DataFrame({"class": names, "reference": base, "ours": ours, "gain": ours - base})


def margin_pairs(record: dict) -> pd.DataFrame:
    """The margin's largest entries in the last epoch that had a margin: label class y, competing
    class j and M[y, j] in logit units."""
    names = record["results"].get("classnames", [])
    for entry in reversed(record["results"].get("history", [])):
        if entry.get("margin_largest"):
            return pd.DataFrame([{"epoch": entry["epoch"], "label class": names[y] if names else y,
                                  "competing class": names[j] if names else j, "margin": value}
                                 for y, j, value in entry["margin_largest"]])
    return pd.DataFrame(columns=["epoch", "label class", "competing class", "margin"])


def detected_classes(record: dict) -> list[str] | None:
    """Names of the classes CAP's detection flagged as mismatched (None: no concept alignment)."""
    alignment = record["results"].get("setup", {}).get("concept_alignment")
    if alignment is None:
        return None
    names = record["results"]["classnames"]
    return [names[c] for c in alignment["mismatched"]]
