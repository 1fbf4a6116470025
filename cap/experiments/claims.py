"""The paper's claims and the rule that judges them from the records.

``claims.yml`` holds the rule (its version, the interval's confidence and resamples) and every
claim with its test. The rule, in one sentence per kind of test:

* paired (Tables 1-3, the abstract): the effect is the mean over units (dataset × paradigm cells)
  of the mean over replicates of ``better`` − ``worse``, paired on the replicate (the same
  simulated draw and seed); supported when its 95 % interval (a bootstrap over replicates,
  stratified by unit: :mod:`cap.experiments.statistics`) lies above 0, contradicted when below 0,
  inconclusive when it contains 0;
* calibration (Figure 9): the same, per dataset, on local accuracy or local ECE of confusion groups;
* robust (Figures 6, 7, 10, "robust to x"): an equivalence test: the largest change is the largest,
  over datasets, of the range of the swept values' means; supported when its interval lies inside
  the tolerance, contradicted when it lies outside, inconclusive otherwise;
* close (Figure 11, a non-inferiority test): supported when the interval of ``better`` − ``worse``
  lies above −tolerance, contradicted when it lies below, inconclusive otherwise;
* detection (Appendix D.3): the mean recall of the known mismatched classes; supported when its
  interval lies above 50 %, contradicted when below;
* untestable: the simulator or the protocol decides the outcome by construction: no verdict.

A unit's own interval (a forest plot's row) says whether that unit agrees (its interval on the
paper's side), disagrees (on the other side) or is undecided; the verdict is the overall interval's.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd
import yaml

from cap.experiments import statistics
from cap.experiments.analysis import planted_mismatch

VERDICTS = ("supported", "contradicted", "inconclusive", "not testable here")
TOO_FEW = "too few replicates"  # no unit has the rule's minimum of replicates: no verdict yet
RULE_TEXT = {
    "paired": "mean paired effect over dataset × paradigm cells; supported when its 95 % interval is above 0, "
              "contradicted when below 0",
    "calibration": "mean paired effect of the margin over datasets (accuracy, or the fall of local ECE, on "
                   "zero-shot confusion groups); supported when its 95 % interval is above 0, contradicted when below",
    "robust": "equivalence: the largest change across the swept values (the largest over datasets of the range of "
              "the values' means); supported when its 95 % interval is inside the tolerance, contradicted when "
              "outside (the largest of noisy ranges leans high: a claim near its tolerance reads inconclusive)",
    "close": "non-inferiority: mean paired effect over datasets; supported when its 95 % interval is above "
             "−tolerance, contradicted when below",
    "detection": "mean recall of the known mismatched classes over datasets; supported when its 95 % interval is "
                 "above 50 %, contradicted when below",
    "untestable": "not testable here: the outcome is decided by construction (see the reason)",
}


# -- the rule file ----------------------------------------------------------------------------
@cache
def _file() -> dict:
    data = yaml.safe_load(resources.files("cap.experiments").joinpath("claims.yml").read_text())
    if not isinstance(data, dict) or set(data) != {"rule", "claims"}:
        raise ValueError("claims.yml must hold a mapping with the keys 'rule' and 'claims'")
    return data


def rule() -> dict:
    """The rule's settings: version, confidence, resamples, the history of its versions."""
    return dict(_file()["rule"])


def claims() -> tuple[dict, ...]:
    """The paper's claims the book tests, in the paper's order."""
    return tuple(_file()["claims"])


PROSE = ("reason", "exclude_reason")  # explanations of a test, which decide no verdict


def rule_fingerprint() -> str:
    """A hash of everything that decides a verdict: the rule's settings (its history aside) and
    every claim's test (its explanations aside). A change to any threshold changes it; tests pin it
    to the rule's version."""
    settings = {k: v for k, v in rule().items() if k not in ("version", "history")}
    tests = {c["id"]: {k: v for k, v in c["test"].items() if k not in PROSE} for c in claims()}
    text = json.dumps({"rule": settings, "tests": tests}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rule_table() -> pd.DataFrame:
    """One row per claim: how its verdict is decided, its tolerance, what is left out and why."""
    rows = []
    for claim in claims():
        test = claim["test"]
        exclusions = ", ".join(str(v) for v in test.get("exclude", []))
        rows.append({"id": claim["id"], "claim": claim["claim"], "kind": test["kind"],
                     "decided by": RULE_TEXT[test["kind"]],
                     "tolerance (points)": test.get("tolerance", float("nan")),
                     "left out": f"{test['matrix']} values {exclusions}: {test['exclude_reason']}" if exclusions
                     else (test.get("reason", "") if test["kind"] == "untestable" else "nothing")})
    return pd.DataFrame(rows)


# -- intervals ---------------------------------------------------------------------------------
def _interval(strata, per_unit=statistics.mean_of_replicates, combine=lambda x: x.mean(-1)):
    settings = rule()
    if settings.get("interval") != "corrected_stratified_bootstrap":
        raise ValueError(f"claims.yml: unknown interval {settings.get('interval')!r}")
    return statistics.stratified_bootstrap(strata, per_unit, combine, confidence=settings["confidence"],
                                           resamples=settings["resamples"])


def _unit_rows(keys: list[dict], strata, per_unit=statistics.mean_of_replicates) -> pd.DataFrame:
    settings = rule()
    rows = []
    for key, stratum, (effect, low, high) in zip(keys, strata, statistics.unit_intervals(
            strata, per_unit, settings["confidence"], settings["resamples"])):
        rows.append(key | {"effect": effect, "low": low, "high": high, "replicates": len(stratum)})
    return pd.DataFrame(rows)


def _verdict(low: float, high: float, lower_bound: float = 0.0) -> str:
    """Supported when the interval lies above ``lower_bound``, contradicted when below."""
    return "supported" if low > lower_bound else "contradicted" if high < lower_bound else "inconclusive"


def _evidence(units: pd.DataFrame, effect: float, low: float, high: float, verdict: str, bound: float = 0.0,
              **extra) -> dict:
    agree = int((units["low"] > bound).sum()) if len(units) else 0
    disagree = int((units["high"] < bound).sum()) if len(units) else 0
    return {"effect": effect, "low": low, "high": high, "units": len(units), "agree": agree,
            "disagree": disagree, "replicates": int(units["replicates"].min()) if len(units) else 0,
            "verdict": verdict, "table": units} | extra


def _no_units(columns, verdict: str = "no runs") -> dict:
    return {"effect": float("nan"), "low": float("nan"), "high": float("nan"), "units": 0, "agree": 0, "disagree": 0,
            "replicates": 0, "verdict": verdict, "table": pd.DataFrame(columns=columns)}


def _enough(keys: list, strata: list) -> tuple[list, list, int]:
    """The units with at least the rule's ``min_replicates`` (a bootstrap of fewer has no spread to
    speak of), and how many were left out."""
    kept = [(k, s) for k, s in zip(keys, strata) if len(s) >= rule()["min_replicates"]]
    return [k for k, _ in kept], [s for _, s in kept], len(keys) - len(kept)


# -- the judges --------------------------------------------------------------------------------
def _selected(runs: pd.DataFrame, selector: dict) -> pd.DataFrame:
    done = runs[runs["state"] == "done"]
    mask = np.ones(len(done), dtype=bool)
    for key, value in selector.items():
        mask &= (done[key] == value).to_numpy()
    return done[mask]


def replicate_pairs(runs: pd.DataFrame, better: dict, worse: dict, unit=("dataset", "paradigm"),
                    value: str = "value") -> list[tuple[dict, pd.DataFrame]]:
    """Per unit, the replicates (seeds) both sides have: (unit labels, frame of seed, better, worse)."""
    unit = list(unit)
    sides = {name: _selected(runs, sel).groupby(unit + ["seed"])[value].mean()
             for name, sel in (("better", better), ("worse", worse))}
    joined = pd.concat(sides, axis=1).dropna()
    out = []
    for key, group in joined.groupby(level=list(range(len(unit))), sort=False):
        labels = dict(zip(unit, key if isinstance(key, tuple) else (key,)))
        out.append((labels, group.reset_index()[["seed", "better", "worse"]]))
    return out


def judge_paired(runs: pd.DataFrame, better: dict, worse: dict, relative: bool = False,
                 unit=("dataset", "paradigm")) -> dict:
    """Evidence for "``better`` beats ``worse``": the mean paired effect with its interval, each
    unit's, the probability of improvement on a random unit and (``relative``) the mean relative
    gain in percent of ``worse``, with its interval."""
    columns = list(unit) + ["effect", "low", "high", "replicates"]
    pairs = replicate_pairs(runs, better, worse, unit)
    if not pairs:
        return _no_units(columns)
    pairs, _, short = _enough(pairs, [f for _, f in pairs])
    if not pairs:
        return _no_units(columns, TOO_FEW) | {"short_units": short}
    keys = [labels for labels, _ in pairs]
    diffs = [(f["better"] - f["worse"]).to_numpy() for _, f in pairs]
    effect, low, high, own = _interval(diffs)
    units = _unit_rows(keys, diffs).assign(better=[f["better"].mean() for _, f in pairs],
                                           worse=[f["worse"].mean() for _, f in pairs])
    extra = {"p_better": statistics.probability_of_improvement(own), "short_units": short}
    if relative:  # per replicate, the gain relative to the unit's mean of ``worse``
        gains = [100 * d / f["worse"].mean() for d, (_, f) in zip(diffs, pairs)]
        extra |= dict(zip(("relative", "relative_low", "relative_high"), _interval(gains)[:3]))
    return _evidence(units, effect, low, high, _verdict(low, high), **extra)


def judge_close(runs: pd.DataFrame, better: dict, worse: dict, tolerance: float) -> dict:
    """Evidence for "``better`` is at most ``tolerance`` below ``worse``" (non-inferiority), per dataset."""
    judged = judge_paired(runs, better, worse, unit=("dataset",))
    if not judged["units"]:
        return judged
    return _evidence(judged["table"], judged["effect"], judged["low"], judged["high"],
                     _verdict(judged["low"], judged["high"], -tolerance), bound=-tolerance,
                     short_units=judged["short_units"])


def judge_robust(runs: pd.DataFrame, tolerance: float, exclude=()) -> dict:
    """Evidence for "robust to the swept value": per dataset the range of the swept values' means
    over the replicates that have every value; the largest over datasets is the effect. Supported
    when its interval lies inside ``tolerance``, contradicted when it lies outside."""
    done = runs[(runs["state"] == "done") & ~runs["sweep"].isin(list(exclude))]
    keys, strata = [], []
    for dataset, group in done.groupby("dataset", sort=False):
        wide = group.pivot_table(index="seed", columns="sweep", values="value").dropna()
        if len(wide) and wide.shape[1] > 1:
            keys.append({"dataset": dataset, "values": wide.shape[1]})
            strata.append(wide.to_numpy())
    columns = ["dataset", "values", "effect", "low", "high", "replicates"]
    if not strata:
        return _no_units(columns)
    keys, strata, short = _enough(keys, strata)
    if not strata:
        return _no_units(columns, TOO_FEW) | {"short_units": short}
    effect, low, high, _ = _interval(strata, statistics.sweep_range, lambda x: x.max(-1))
    units = _unit_rows(keys, strata, statistics.sweep_range)
    verdict = "supported" if high <= tolerance else "contradicted" if low > tolerance else "inconclusive"
    evidence = _evidence(units, effect, low, high, verdict, short_units=short)
    # a dataset agrees when its own interval is inside the tolerance, disagrees when outside
    return evidence | {"agree": int((units["high"] <= tolerance).sum()), "disagree": int((units["low"] > tolerance).sum())}


def judge_calibration(scores: pd.DataFrame, measure: str, view: str, with_margin: str = "margin",
                      without: str = "no_margin") -> dict:
    """Evidence for a Figure 9 claim on one view (``scores`` from ``calibration.calibration_scores``):
    per dataset, replicate by replicate, accuracy(with) − accuracy(without), or ECE(without) −
    ECE(with) (positive: the margin lowers the error)."""
    frame = scores[scores["view"] == view].assign(state="done", paradigm="ul")
    sign = -1.0 if measure == "ece" else 1.0
    frame = frame.assign(value=sign * frame[measure]) if len(frame) else frame.assign(value=[])
    return judge_paired(frame, {"variant": with_margin}, {"variant": without}, unit=("dataset",))


def judge_detection(runs: pd.DataFrame) -> dict:
    """Evidence for "detection finds the mismatched classes": per dataset with known mismatched
    classes, the recall (percent) of each replicate; supported when the interval of the mean over
    datasets lies above 50 %."""
    rows = []
    for row in runs[(runs["state"] == "done") & (runs["method"] == "cap")].itertuples(index=False):
        alignment = row.record["results"].get("setup", {}).get("concept_alignment")
        known = planted_mismatch(row.record, row.dataset)
        if alignment is None or not known:
            continue
        found = set(alignment["mismatched"])
        rows.append({"dataset": row.dataset, "recall": 100 * len(found & known) / len(known),
                     "precision": 100 * len(found & known) / len(found) if found else float("nan")})
    frame = pd.DataFrame(rows, columns=["dataset", "recall", "precision"])
    if not len(frame):
        return _no_units(["dataset", "effect", "low", "high", "replicates"])
    by_dataset = list(frame.groupby("dataset", sort=False))
    groups, strata, short = _enough(by_dataset, [g["recall"].to_numpy() for _, g in by_dataset])
    if not strata:
        return _no_units(["dataset", "effect", "low", "high", "replicates"], TOO_FEW) | {"short_units": short}
    effect, low, high, _ = _interval(strata)
    units = _unit_rows([{"dataset": d} for d, _ in groups], strata).assign(
        precision=[g["precision"].mean() for _, g in groups])
    return _evidence(units, effect, low, high, _verdict(low, high, 50.0), bound=50.0,
                     precision=float(frame["precision"].mean()), short_units=short)


def judge_claim(test: dict, runs_of) -> dict:
    """Evidence and verdict of one claim's ``test``; ``runs_of(matrix)`` gives a matrix's runs
    (:func:`cap.experiments.report.collect` for one profile)."""
    from cap.experiments.calibration import calibration_scores, confusion_groups_by_dataset

    kind = test["kind"]
    if kind == "untestable":
        return {"verdict": "not testable here", "reason": test["reason"], "units": 0, "agree": 0, "disagree": 0,
                "effect": float("nan"), "low": float("nan"), "high": float("nan"), "replicates": 0}
    runs = runs_of(test["matrix"])
    if kind == "paired":
        return judge_paired(runs, test["better"], test["worse"], test.get("relative", False))
    if kind == "robust":
        return judge_robust(runs, test["tolerance"], test.get("exclude", ()))
    if kind == "close":
        return judge_close(runs, test["better"], test["worse"], test["tolerance"])
    if kind == "calibration":
        scores = calibration_scores(runs, confusion_groups_by_dataset(runs_of("figure1_2")))
        return judge_calibration(scores, test["measure"], test["view"])
    if kind == "detection":
        return judge_detection(runs)
    raise ValueError(f"claims.yml: unknown test kind {kind!r}")


def claims_table(records_root, profiles=("sim", "paper")) -> tuple[pd.DataFrame, dict]:
    """One row per claim: its verdict and evidence in each profile (``<profile>_<field>`` columns)
    and how many of its runs have a result; and per claim and profile the units' table (the forest
    plot's rows)."""
    from cap.experiments import report

    collected = {}

    def runs_of(profile):
        def get(matrix):
            if (matrix, profile) not in collected:
                collected[(matrix, profile)] = report.collect(matrix, profile, records_root)
            return collected[(matrix, profile)]
        return get

    rows, tables = [], {}
    for claim in claims():
        test = claim["test"]
        row = {"id": claim["id"], "claim": claim["claim"], "page": claim["page"], "matrix": test["matrix"],
               "kind": test["kind"]}
        for profile in profiles:
            runs = runs_of(profile)(test["matrix"])
            row[f"{profile}_done"], row[f"{profile}_planned"] = int((runs["state"] == "done").sum()), len(runs)
            result = judge_claim(test, runs_of(profile)) if row[f"{profile}_done"] or test["kind"] == "untestable" \
                else {"verdict": "no runs"}
            tables[(claim["id"], profile)] = result.pop("table", None)
            row |= {f"{profile}_{key}": value for key, value in result.items()}
        rows.append(row)
    return pd.DataFrame(rows), tables


def forest_rows(tables: dict, table: pd.DataFrame, profile: str = "sim") -> pd.DataFrame:
    """Every judged claim's units and its overall effect, with intervals: a forest plot's rows."""
    rows = []
    for row in table.to_dict("records"):
        units = tables.get((row["id"], profile))
        if units is None or not len(units) or row.get(f"{profile}_verdict") in ("no runs", "not testable here"):
            continue
        for unit in units.to_dict("records"):
            name = " ".join(str(unit[k]) for k in ("dataset", "paradigm") if k in unit)
            rows.append({"id": row["id"], "unit": name, "effect": unit["effect"], "low": unit["low"],
                         "high": unit["high"], "overall": False})
        rows.append({"id": row["id"], "unit": "overall", "effect": row[f"{profile}_effect"],
                     "low": row[f"{profile}_low"], "high": row[f"{profile}_high"], "overall": True})
    return pd.DataFrame(rows, columns=["id", "unit", "effect", "low", "high", "overall"])


def evidence_text(row: dict, profile: str = "sim") -> str:
    """One line of evidence for a row of :func:`claims_table`: the effect with its interval, the
    probability of improvement, how many units' own intervals agree, the replicates."""
    from cap.experiments.report import number

    get = lambda key: row.get(f"{profile}_{key}")  # noqa: E731
    kind = row["kind"]
    if kind == "untestable":
        return get("reason")
    if get("verdict") == TOO_FEW:
        return f"no unit has {rule()['min_replicates']} replicates with a result yet"
    if get("verdict") == "no runs" or not get("units"):
        return "no runs with a result yet"
    noun = {"paired": "dataset × paradigm cells"}.get(kind, "datasets")
    interval = f"[{number(get('low'), signed=kind != 'detection')}, {number(get('high'), signed=kind != 'detection')}]"
    units = f"{int(get('agree'))} of {int(get('units'))} {noun} agree on their own, {int(get('disagree'))} disagree"
    reps = f"{int(get('replicates'))}+ replicates each"
    if get("short_units"):
        reps += f" ({int(get('short_units'))} with fewer left out)"
    if kind == "robust":
        return f"largest change across the swept values {number(get('effect'))} points, 95 % interval {interval}; " \
               f"{units}; {reps}"
    if kind == "detection":
        return f"recall {number(get('effect'), 0)} %, 95 % interval {interval}; {units}; {reps}"
    text = f"{number(get('effect'), signed=True)} points, 95 % interval {interval}"
    if kind == "paired" and get("relative") is not None and not np.isnan(get("relative")):
        text += f" ({number(get('relative'), signed=True)} % relative, [{number(get('relative_low'), signed=True)}, " \
                f"{number(get('relative_high'), signed=True)}])"
    if kind == "paired":
        text += f"; better in a random cell with probability {number(get('p_better'), 2)}"
    return f"{text}; {units}; {reps}"


def findings(table: pd.DataFrame, profile: str = "sim", largest: int = 4) -> str:
    """A short abstract of what the records show (Markdown): the verdict counts, the ``largest``
    judged effects in points with their intervals, what contradicts the paper, and the caveat."""
    from cap.experiments.report import number

    verdicts = table[f"{profile}_verdict"]
    counts = {v: int((verdicts == v).sum()) for v in VERDICTS}
    judged = table[verdicts.isin(("supported", "contradicted", "inconclusive"))
                   & table["kind"].isin(("paired", "calibration", "close"))]
    if not len(judged):
        return "No claim has runs with a result yet: `make book` runs the simulated study."
    text = (f"Of the paper's {len(table)} claims checked here, the concept simulator supports {counts['supported']}, "
            f"contradicts {counts['contradicted']} and leaves {counts['inconclusive']} inconclusive; "
            f"{counts['not testable here']} are not testable in a simulation. ")
    top = judged.reindex(judged[f"{profile}_effect"].abs().sort_values(ascending=False).index)[:largest]
    text += "The largest effects (mean over datasets and paradigms, 95 % interval over replicates): " + "; ".join(
        f"{row['claim'].split(' (')[0].rstrip('.')}: {number(row[f'{profile}_effect'], signed=True)} points "
        f"[{number(row[f'{profile}_low'], signed=True)}, {number(row[f'{profile}_high'], signed=True)}]"
        for row in top.to_dict("records")) + ". "
    against = table[verdicts == "contradicted"]["claim"].tolist()
    text += ("Contradicted: " + "; ".join(c.split(" (")[0].rstrip(".") for c in against) + ". ") if against else \
        "Nothing the simulator can test contradicts the paper. "
    return text + ("These are simulations: they test whether CAP's mechanisms do what the paper says where the "
                   "ground truth is known, not the paper's numbers, which need CLIP on the real datasets.")
