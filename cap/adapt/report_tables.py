"""What the `cap adapt` report shows, as tables computed from the run's ``results.json``; the
report notebook (``notebooks/adapt_report.md``) only draws them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cap.core.metrics import imbalance_ratio, normalized_entropy
from cap.errors import CapError


def load_results(adapt_dir: str | Path) -> dict:
    path = Path(adapt_dir) / "results.json"
    if not path.is_file():
        raise CapError(f"{path} does not exist: give the output folder of a finished `cap adapt`")
    return json.loads(path.read_text(encoding="utf-8"))


def overview(results: dict) -> pd.DataFrame:
    """One row per fact: inputs, device, times, budget, the score on the test images."""
    inputs, test, seconds = results["inputs"], results["test"], results["seconds"]
    facts = {
        "classes": len(results["classnames"]),
        "images adapted to": f"{inputs['n_images']} in {inputs['images']}",
        "images skipped (unreadable)": len(inputs["skipped"]),
        "labelled images (training / held out)": (f"{inputs['n_labelled_training']} / {test['n']}"
                                                  if test["kind"].startswith("held-out") else "none given"),
        "descriptions": inputs["descriptions_file"] or "none given",
        "backbone": f"{results['config']['backbone']} ({results['config']['pretrained']})",
        "device": results["device"],
        "schedule": f"{results['config']['epochs']} epochs x {results['config']['iters_per_epoch']} steps, "
                    f"batch {results['config']['batch_size']}",
        "gradient steps / images seen": f"{results['budget']['gradient_steps']} / {results['budget']['images_seen']}",
        "time: setup / training / total (s)": " / ".join(f"{seconds[k]:.1f}" for k in ("setup", "train", "total")),
    }
    return pd.DataFrame({"": list(facts.values())}, index=list(facts))


def balance_table(results: dict) -> pd.DataFrame:
    """Per class: how many folder images zero-shot CLIP and the adapted model assign to it, and the
    size of its pseudolabel set D_PL at each stage (zero-shot leaderboards, after concept
    alignment, after the last refresh)."""
    table = pd.DataFrame({"zero-shot predictions": results["predicted_counts"]["zero_shot"],
                          "adapted predictions": results["predicted_counts"]["adapted"]},
                         index=pd.Index(results["classnames"], name="class"))
    for stage, counts in results["dpl_counts"].items():
        table[f"D_PL {stage.replace('_', '-')}"] = counts
    return table


def balance_summary(results: dict) -> pd.DataFrame:
    """Imbalance ratio (max / min count) and normalised entropy (1 = balanced) of the predictions."""
    rows = {name: {"imbalance ratio": imbalance_ratio(counts), "normalised entropy": normalized_entropy(counts)}
            for name, counts in (("zero-shot", results["predicted_counts"]["zero_shot"]),
                                 ("adapted", results["predicted_counts"]["adapted"]))}
    return pd.DataFrame(rows).T.round(3)


def flagged_table(results: dict) -> pd.DataFrame:
    """The classes mismatch detection flagged, and what concept alignment did with each."""
    rows = [{"class": f["name"], "alignment": "aligned with" if f["described"] else "skipped: no descriptions given",
             "description": f["description"] or ""} for f in results["flagged"]]
    return pd.DataFrame(rows, columns=["class", "alignment", "description"])


def confusion_table(results: dict) -> pd.DataFrame:
    """The class pairs the margin pushed apart most in the last epoch (label class, competing class,
    margin in logits), with how many folder images moved between them from zero-shot to adapted."""
    names = results["classnames"]
    last = next((entry for entry in reversed(results["history"]) if entry.get("margin_largest")), None)
    rows = [{"label class": names[y], "competing class": names[j], "margin": value}
            for y, j, value in (last["margin_largest"] if last else []) if value > 0]
    return pd.DataFrame(rows, columns=["label class", "competing class", "margin"])


def moved_between(predictions: pd.DataFrame, pairs: pd.DataFrame) -> list[int]:
    """For each pair, the images zero-shot CLIP put in the competing class that the adapted model puts
    in the label class, plus those moved the other way."""
    z, a = predictions["zero_shot_class"], predictions["adapted_class"]
    return [int(((z == j) & (a == y)).sum() + ((z == y) & (a == j)).sum())
            for y, j in zip(pairs["label class"], pairs["competing class"])]


def curves(results: dict) -> pd.DataFrame:
    """Per epoch: loss, share of confident unlabelled draws (q > τ), mean and largest margin, and the
    test score where it was logged (every 10 epochs, and the final one)."""
    rows = [{"epoch": e["epoch"] + 1, "loss": e["loss"], "confident share": e["masked_share"],
             "margin mean": e["margin_mean"], "margin max": e["margin_max"],
             "test": (e.get("test") or {}).get("top1")} for e in results["history"]]
    table = pd.DataFrame(rows).set_index("epoch")
    if len(table):
        table.loc[table.index[-1], "test"] = results["test"]["adapted"]
    return table


def held_out_table(results: dict) -> pd.DataFrame | None:
    """Per-class accuracy on the held-out labelled images, zero-shot and adapted; None without them."""
    test = results["test"]
    if "zero_shot" not in test:
        return None
    table = pd.DataFrame({"images": test["counts"], "zero-shot %": test["per_class_zero_shot"],
                          "adapted %": test["per_class_adapted"]}, index=pd.Index(results["classnames"], name="class"))
    table.loc["all"] = [test["n"], test["zero_shot"], test["adapted"]]
    return table.round(1)
