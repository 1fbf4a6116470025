"""What the book's pages compute from records beyond mean ± std, one small function each.

Pages only read records; the numbers they derive (a sweep's spread, what removing a part costs,
paired differences over replicates, training-time ratios, detected classes, the per-run curves of a
run page) are computed here, so each has a test with a hand-computed value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cap.config import make_config, resolve
from cap.core import metrics
from cap.data.registry import get_dataset
from cap.experiments.matrix import get_profile, load_matrix
from cap.experiments.report import done_records
from cap.sim.generator import DESCRIPTION_KINDS


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
    """Mean training and whole-run seconds per (dataset, method) over replicates, each relative to CAP's
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


def first_replicate_per_class(runs: pd.DataFrame) -> dict[str, tuple]:
    """Per dataset, the first replicate's per-class test accuracy, predicted and true counts."""
    first = runs[runs["seed"] == runs["seed"].min()] if len(runs) else runs
    out = {}
    for labels, record in done_records(first):
        m = record["results"]["metrics"]
        out[labels["dataset"]] = (np.asarray(m["per_class_accuracy"], dtype=float), np.asarray(m["predicted_counts"]),
                                  np.asarray(m["test_counts"]))
    return out


def balance_table(data: dict[str, tuple], titles=None) -> pd.DataFrame:
    """:func:`zero_shot_balance` per dataset of :func:`first_replicate_per_class` (under-predicted share in percent)."""
    frame = pd.DataFrame([{"dataset": titles(d) if titles else d, **zero_shot_balance(*values)}
                          for d, values in data.items()],
                         columns=["dataset", "below_10", "classes", "under_predicted", "imbalance_ratio", "entropy"])
    frame["under_predicted"] = frame["under_predicted"] * 100
    return frame


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


NOISE_FLOOR = 0.5  # points: differences below this are shown as ties on the pages (never as effects)


# -- Figure 8: concept alignment, planted against other flagged classes -------------------------
def planted_mismatch(record: dict, dataset: str) -> set[int]:
    """The classes known to be mismatched: planted by the simulator (its records say which), or on
    real data the official code's hard-coded list."""
    truth = record["results"].get("ground_truth")
    if truth:
        return set(truth["mismatched_indices"])
    info = get_dataset(dataset)
    return set(info.official_mismatched_indices)


def alignment_classes(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per CAP run and flagged class: the pseudolabel accuracy of the class's initial D_PL
    without alignment (zero-shot top-k) and with it, whether the class is a known (planted)
    mismatched one, and the kind of the chosen description (simulator only)."""
    rows = []
    for labels, record in done_records(runs):
        setup = record["results"].get("setup", {})
        alignment = setup.get("concept_alignment")
        if not alignment:
            continue
        planted = planted_mismatch(record, labels["dataset"])
        truth = record["results"].get("ground_truth") or {}
        names = record["results"]["classnames"]
        for c in alignment["described"]:
            kind = None
            if truth.get("description_kinds") is not None:
                kind = DESCRIPTION_KINDS[truth["description_kinds"][c][alignment["description_index"][str(c)]]]
            rows.append({"dataset": labels["dataset"], "class": names[c], "seed": labels["seed"],
                         "planted": c in planted, "description": kind,
                         "without": setup["zero_shot_dpl"]["per_class_accuracy"][str(c)],
                         "with": alignment["dpl"]["per_class_accuracy"][str(c)]})
    columns = ["dataset", "class", "seed", "planted", "description", "without", "with"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["gain"] = frame["with"] - frame["without"]
    return frame


def alignment_gains(classes: pd.DataFrame) -> dict:
    """Figure 8's measure (not a verdict: the simulator's descriptions decide it): per planted
    mismatched class that detection flagged, the mean gain (with − without alignment) over
    replicates; how many gain (more than their seed spread and 0.5 points) or lose; how many gain
    more than 60 points; and the mean gain of the other flagged classes."""
    planted = classes["planted"].astype(bool)
    rows = [{"dataset": d, "class": c, "effect": float(g["gain"].mean()),
             "std": float(g["gain"].std(ddof=1)) if len(g) > 1 else float("nan"), "seeds": len(g)}
            for (d, c), g in classes[planted].groupby(["dataset", "class"], sort=False)]
    units = pd.DataFrame(rows, columns=["dataset", "class", "effect", "std", "seeds"])
    noise = np.fmax(units["std"].to_numpy(dtype=float), NOISE_FLOOR)
    others = classes[~planted]
    return {"effect": float(units["effect"].mean()) if len(units) else float("nan"), "units": len(units),
            "gain": int((units["effect"] > noise).sum()), "loss": int((units["effect"] < -noise).sum()),
            "over_60": int((units["effect"] > 60).sum()), "table": units,
            "other_gain": float(others["gain"].mean()) if len(others) else float("nan"),
            "other_classes": int(others[["dataset", "class"]].drop_duplicates().shape[0])}


# -- Appendix D.2 and D.3 ----------------------------------------------------------------------
def official_budget(method: str, dataset: str, per_class: int | None = None, rounds: int | None = None) -> dict:
    """Gradient steps and images seen of a method's schedule as the library runs it by default (CAP:
    50 epochs of 50 iterations of 32 per stream, D_PL and unlabelled in UL; FPL, GRIP, CPL: 50 epochs
    per round of batches of 64, each baseline's official batching and hold-out) in UL on a pool of
    ``per_class`` images per class (default: the real dataset's). GRIP and CPL train on K_i per class
    in round i (:func:`cap.core.pseudolabels.grip_budget`; CPL may select fewer)."""
    from cap.config import make_config, resolve
    from cap.core.pseudolabels import grip_budget
    from cap.methods.baselines import FPL_PER_CLASS, HOLD_OUT_FROM, epoch_plan

    info = get_dataset(dataset)
    classes, per_class = info.n_classes, per_class or info.train_per_class
    if method == "cap":
        steps = 50 * 50
        return {"gradient_steps": steps, "images_seen": steps * 64}
    c = resolve(make_config(dataset=dataset, method=method))
    n = rounds or c.rounds
    budgets = [FPL_PER_CLASS] if method == "fpl" else [
        grip_budget(r, per_class * classes, classes, n, rounding=c.budget_rounding) for r in range(1, n + 1)]
    steps = images = 0
    for budget in budgets:
        size = budget * classes
        if budget >= HOLD_OUT_FROM:
            size = int(size * c.baseline_train_ratio)
        _, per_epoch, rows = epoch_plan(size, c.baseline_batch_size, c.baseline_last_batch)
        steps, images = steps + c.baseline_epochs * per_epoch, images + c.baseline_epochs * rows
    return {"gradient_steps": steps, "images_seen": images}


# -- Table 1 in the simulator: averages, wins, budgets, and the gap to the best baseline ---------
def method_summary(cells: pd.DataFrame) -> pd.DataFrame:
    """Per method (cells from ``report.summarise`` by dataset, paradigm, method): the mean over the
    cells every method has, and in how many of those cells the method has the best mean (a tie
    counts for each method that has it)."""
    wide = cells.pivot_table(index=["dataset", "paradigm"], columns="method", values="mean").dropna()
    if not len(wide):
        return pd.DataFrame(columns=["method", "average", "wins", "cells"])
    best = wide.max(axis=1)
    wins = wide.apply(lambda column: int(np.isclose(column, best).sum()))
    order = [m for m in ("zero_shot", "fpl", "grip", "cpl", "cap") if m in wide]
    return pd.DataFrame({"method": order, "average": [float(wide[m].mean()) for m in order],
                         "wins": [int(wins[m]) for m in order], "cells": len(wide)})


def budget_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean gradient steps and images seen per (dataset, paradigm, method) over the runs that have
    a result: what each method's schedule cost under the profile's rule."""
    rows = [{"dataset": labels["dataset"], "paradigm": labels["paradigm"], "method": labels["method"],
             **record["results"].get("budget", {"gradient_steps": np.nan, "images_seen": np.nan})}
            for labels, record in done_records(runs)]
    frame = pd.DataFrame(rows, columns=["dataset", "paradigm", "method", "gradient_steps", "images_seen"])
    return frame.groupby(["dataset", "paradigm", "method"], sort=False).mean().reset_index()


def gap_to_baselines(runs: pd.DataFrame, baselines=("fpl", "grip", "cpl"), variant: str | None = None) -> pd.DataFrame:
    """Per (dataset, paradigm): CAP's mean minus the best baseline's mean (and which baseline that
    is), with the seed spread of CAP's runs; ``variant`` narrows the runs first (diagnostics)."""
    done = runs[(runs["state"] == "done") & ((runs["variant"] == variant) if variant else True)]
    means = done.groupby(["dataset", "paradigm", "method"])["value"].agg(["mean", "std"]).reset_index()
    rows = []
    for (dataset, paradigm), group in means.groupby(["dataset", "paradigm"], sort=False):
        group = group.set_index("method")
        present = [b for b in baselines if b in group.index]
        if "cap" not in group.index or not present:
            continue
        best = max(present, key=lambda b: group.loc[b, "mean"])
        rows.append({"dataset": dataset, "paradigm": paradigm, "best_baseline": best,
                     "gap": float(group.loc["cap", "mean"] - group.loc[best, "mean"]),
                     "cap_std": float(group.loc["cap", "std"])})
    return pd.DataFrame(rows, columns=["dataset", "paradigm", "best_baseline", "gap", "cap_std"])


def explain_gap(gap: float, left: float) -> str:
    """Whether a diagnostic accounts for CAP's gap to the best baseline (``gap`` < 0, points) by the
    gap it leaves (``left``): it *explains* the gap when it narrows it by at least half and by more
    than the noise floor, *partly* when by more than the noise floor only, and *no* otherwise
    (*not run* when ``left`` is missing)."""
    shift = left - gap
    if np.isnan(shift):
        return "not run"
    if shift > NOISE_FLOOR and shift >= -gap / 2:
        return "explains"
    return "partly" if shift > NOISE_FLOOR else "no"


def sigma_zero_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """Per CAP run and epoch, the share of pseudolabel classes with σ = 0 (no confident prediction
    that epoch): such a class gets δ = 1 and its margin row no longer depends on its counts."""
    rows = [{"dataset": labels["dataset"], "variant": labels["variant"], "seed": labels["seed"],
             "epoch": h["epoch"], "share": 100 * h["sigma_zero_share"]}
            for labels, record in done_records(runs) for h in record["results"].get("history", []) if "sigma_zero_share" in h]
    return pd.DataFrame(rows, columns=["dataset", "variant", "seed", "epoch", "share"])


def confidence_and_accuracy(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run: mean confidence and accuracy over the whole test set, in percent (how a change in
    calibration splits into a change of confidence and one of accuracy)."""
    rows = []
    for labels, record in done_records(runs):
        test = record["results"]["metrics"]["test_predictions"]
        correct = np.asarray(test["label"]) == np.asarray(test["pred"])
        rows.append({"dataset": labels["dataset"], "paradigm": labels["paradigm"], "variant": labels["variant"],
                     "sweep": labels["sweep"], "seed": labels["seed"], "confidence": 100 * float(np.mean(test["confidence"])),
                     "accuracy": 100 * float(correct.mean()),
                     "ece": metrics.expected_calibration_error(test["confidence"], correct)})
    return pd.DataFrame(rows, columns=["dataset", "paradigm", "variant", "sweep", "seed", "confidence", "accuracy", "ece"])
