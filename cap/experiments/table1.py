"""Table 1's page: the methods × datasets tables, the averages and wins its text quotes, each
method's budget beside the official one, the cells where CAP trails the best baseline, what the
diagnostics say about each, EuroSAT's pool and zero-shot CLIP's spread in TRZSL. The page only
draws what these return."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from cap.config import METHOD_TITLES
from cap.data.registry import get_dataset
from cap.experiments.analysis import (NOISE_FLOOR, budget_table, explain_gap, gap_to_baselines, method_summary,
                                      official_budget)
from cap.experiments.claims import judge_paired
from cap.experiments.references import reference_number
from cap.experiments.report import PARADIGM_TITLES, cell_table, details, number, state_counts, summarise, wide_html


def _title(dataset: str) -> str:
    return get_dataset(dataset).title


def budget_columns(runs: pd.DataFrame) -> pd.DataFrame:
    """UL budgets, one row per dataset and one column per training method: "steps (the official
    schedule's steps on the real pool) / images seen in thousands", means over replicates."""
    budgets = budget_table(runs[runs["paradigm"] == "ul"])
    if not len(budgets):
        return pd.DataFrame()
    steps = budgets.pivot_table(index="dataset", columns="method", values="gradient_steps", sort=False)
    images = budgets.pivot_table(index="dataset", columns="method", values="images_seen", sort=False)
    shown = pd.DataFrame({"dataset": [_title(d) for d in steps.index]})
    for method in (m for m in METHOD_TITLES if m in steps and m != "zero_shot"):
        official = [official_budget(method, d)["gradient_steps"] for d in steps.index]
        shown[METHOD_TITLES[method]] = [f"{number(n, 0)} ({number(o, 0)}) / {number(i / 1000)}"
                                        for n, o, i in zip(steps[method].values, official, images[method].values)]
    return shown


def trailing(gaps: pd.DataFrame) -> pd.DataFrame:
    """The cells of :func:`analysis.gap_to_baselines` where CAP's mean is below the best baseline's
    by more than CAP's seed spread (at least the noise floor)."""
    return gaps[gaps["gap"] < -np.fmax(NOISE_FLOOR, gaps["cap_std"].fillna(0))]


def trailing_text(behind: pd.DataFrame) -> str:
    """E.g. "CUB UL (−1.2 against GRIP), …", or "none"."""
    return ", ".join(f"{_title(d)} {PARADIGM_TITLES[p]} ({number(g, signed=True)} against {METHOD_TITLES[b]})"
                     for d, p, b, g in zip(behind["dataset"], behind["paradigm"], behind["best_baseline"],
                                           behind["gap"])) or "none"


def _gap(frame: pd.DataFrame, dataset: str) -> float:
    return frame.set_index("dataset")["gap"].get(dataset, np.nan) if len(frame) else np.nan


def explanations(gaps: pd.DataFrame, behind: pd.DataFrame, margin_effect: pd.Series, diagnoses: dict) -> list[dict]:
    """Per dataset where CAP trails (``behind``), its UL gap (``gaps``) and, per diagnostic, the gap
    before and after the diagnostic's change with :func:`analysis.explain_gap`'s verdict.
    ``diagnoses``: name -> (what changed, gaps of the diagnostic's reference runs, gaps after the
    change); ``margin_effect``: per dataset, CAP without its margin minus CAP (the "w/o CACM" row)."""
    ul = gaps[gaps["paradigm"] == "ul"].set_index("dataset")["gap"]
    rows = []
    for dataset in sorted(set(behind["dataset"]), key=_title):
        gap = ul.get(dataset, np.nan)
        pairs = {name: (_gap(before, dataset), _gap(after, dataset)) for name, (_, before, after) in diagnoses.items()}
        pairs["w/o CACM"] = (gap, gap + margin_effect.get(dataset, np.nan))
        verdicts = {name: "not run" if np.isnan(before) else "not behind" if before >= 0 else explain_gap(before, after)
                    for name, (before, after) in pairs.items()}
        rows.append({"dataset": dataset, "gap": gap, "pairs": pairs, "verdicts": verdicts})
    return rows


def explanation_table(rows: list[dict]) -> pd.DataFrame:
    """:func:`explanations` as a table: "before → after (verdict)" per diagnostic."""
    return pd.DataFrame([{"dataset": _title(r["dataset"]), "CAP − best baseline (UL)": r["gap"],
                          **{name: "not run" if r["verdicts"][name] == "not run" else
                             f"{number(before, signed=True)} → {number(after, signed=True)} ({r['verdicts'][name]})"
                             for name, (before, after) in r["pairs"].items()}}
                         for r in rows])


REASONS = {  # diagnostic that explains a gap -> what that means
    "30 % ambiguous": "the preset's share of ambiguous images decides it: **a property of the simulated preset**",
    "w/o CACM": "the calibrated margin costs CAP here: **an effect of the method** in this setting, which the paper "
                "does not report",
}


def explanation_text(rows: list[dict], what: dict) -> str:
    """One sentence per dataset from :func:`explanations`' verdicts: which explanation the
    diagnostics support (``what``: diagnostic -> what it changed, in words)."""
    what = what | {"w/o CACM": "the margin removed"}
    sentences = []
    for r in rows:
        title, gap = _title(r["dataset"]), number(r["gap"], signed=True)
        explains = [n for n, v in r["verdicts"].items() if v == "explains"]
        partly = [n for n, v in r["verdicts"].items() if v == "partly"]

        def said(names):
            return " and ".join(f"{what[n]} ({number(r['pairs'][n][0], signed=True)} → "
                                f"{number(r['pairs'][n][1], signed=True)})" for n in names)

        if r["gap"] >= 0:
            sentences.append(f"**{title}** trails only in SSL or TRZSL; in UL, where the diagnostics run, CAP is not behind.")
        elif not explains:
            sentences.append(f"**{title}**: no diagnostic closes half of the gap of {gap} points"
                             + (f"; {said(partly)} narrow it" if partly else "")
                             + ". **Not explained by the diagnostics run here**: it may be a genuine effect of CAP on a "
                             "dataset of this kind or a property of the simulator not varied here; the real-data runs "
                             "decide.")
        else:
            reasons = [REASONS[n] for n in explains if n in REASONS]
            sentences.append(f"**{title}**: most of the gap of {gap} points closes with {said(explains)}. "
                             + ". ".join(reason[0].upper() + reason[1:] for reason in reasons) + ("." if reasons else ""))
    if not sentences:
        return ("In no cell is CAP's mean below the best baseline's by more than CAP's seed spread: there is no gap to "
                "explain.")
    return (" ".join(sentences) + " None of the diagnostics points to an implementation error: the margin, the loss, "
            "σ, S and the adapters are tested against the official code's formulas by hand-computed tests "
            "(`tests/test_losses_margin.py`, `tests/test_cap_step.py`).")


def pool_verdicts(pools: dict[str, pd.DataFrame], methods=("zero_shot", "fpl", "grip", "cpl")) -> pd.DataFrame:
    """CAP against each method on each pool (``pools``: column title -> runs of one dataset and
    paradigm): the mean paired effect, its interval and the verdict by the claims page's rule."""
    rows = []
    for method in methods:
        row = {"CAP against": METHOD_TITLES[method]}
        for name, runs in pools.items():
            judged = judge_paired(runs, {"method": "cap"}, {"method": method})
            row[name] = (f"{number(judged['effect'], signed=True)} [{number(judged['low'], signed=True)}, "
                         f"{number(judged['high'], signed=True)}] {judged['verdict']}" if judged["units"] else "not run yet")
        rows.append(row)
    return pd.DataFrame(rows)


def baseline_ranking(runs: pd.DataFrame) -> str:
    """CPL against GRIP over every cell of ``runs`` (the paper: CPL ahead in every published table,
    its whole contribution), as the mean paired effect with its interval and the rule's verdict."""
    judged = judge_paired(runs, {"method": "cpl"}, {"method": "grip"})
    if not judged["units"]:
        return "CPL against GRIP: no paired runs yet."
    effect = (f"{number(judged['effect'], signed=True)} points [{number(judged['low'], signed=True)}, "
              f"{number(judged['high'], signed=True)}] over {judged['units']} cells")
    if judged["verdict"] == "supported":
        reading = "CPL is ahead of GRIP, as in every published table"
    elif judged["verdict"] == "contradicted":
        reading = ("GRIP is ahead of CPL, the reverse of every published table. Apart from the training settings "
                   "(all three baselines use CPL's; the differences table's last row), both now train as their "
                   "official code does, so the candidates left are the simulator (the confusion diagnostic below), "
                   "those settings, and CPL's smaller step budget where its class pools fill short (the budget "
                   "table above)")
    else:
        reading = "the simulation cannot tell CPL and GRIP apart (the interval contains 0), where the paper puts CPL ahead"
    return f"CPL minus GRIP: {effect}. By the claims page's rule, {reading}."


def ranking_by_variant(runs: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    """CPL against GRIP in each variant of ``runs`` (``diagnostics_baselines.yml``): the mean paired
    effect over datasets and replicates, its interval and the rule's verdict."""
    rows = []
    for variant, group in runs.groupby("variant", sort=False):
        judged = judge_paired(group, {"method": "cpl"}, {"method": "grip"})
        rows.append({"setting": labels.get(variant, variant),
                     "CPL − GRIP (points)": (f"{number(judged['effect'], signed=True)} [{number(judged['low'], signed=True)}, "
                                             f"{number(judged['high'], signed=True)}]") if judged["units"] else "not run yet",
                     "verdict": judged["verdict"] if judged["units"] else "—"})
    return pd.DataFrame(rows)


# -- the tables and the numbers the page's text quotes ---------------------------------------------
CELL_LABELS = ["dataset", "method"]


def paradigm_tables(runs: pd.DataFrame, paradigm: str, title: str, links=None) -> list:
    """What the page displays for one paradigm: its title, a compact methods × datasets table
    (``report.wide_html``), then every seed, source and difference folded below it."""
    from IPython.display import HTML, Markdown

    cells = summarise(runs[runs["paradigm"] == paradigm], ["dataset", "paradigm", "method"])
    return [Markdown(f"**{title}**"), HTML(wide_html(cells, links=links)),
            HTML(details("every seed, the published number's source and the difference", cell_table(cells, CELL_LABELS)))]


def summary_texts(runs: pd.DataFrame) -> dict[str, str]:
    """The averages-and-wins paragraph's numbers: the runs' states, each method's mean over the
    cells every method has and its wins (:func:`analysis.method_summary`), the cells, CAP minus CPL
    and minus the best baseline on average, and the CPL-against-GRIP sentence."""
    summary = method_summary(summarise(runs, ["dataset", "paradigm", "method"], paper=False)).set_index("method")
    texts = {"t1_sim_runs": state_counts(runs)}
    for method in METHOD_TITLES:
        texts[f"t1_avg_{method}"] = number(summary["average"].get(method, np.nan))
        texts[f"t1_wins_{method}"] = number(summary["wins"].get(method, np.nan), decimals=0)
    texts["t1_cells"] = number(summary["cells"].max() if len(summary) else np.nan, decimals=0)
    texts["t1_cap_minus_cpl"] = number(summary["average"].get("cap", np.nan) - summary["average"].get("cpl", np.nan),
                                       signed=True)
    baselines = summary["average"].drop(["cap", "zero_shot"], errors="ignore").dropna()
    best = baselines.idxmax() if len(baselines) else None
    texts["t1_cap_minus_best"] = (f"{number(summary['average'].get('cap', np.nan) - baselines[best], signed=True)} points "
                                  f"from {METHOD_TITLES[best]}'s (the best baseline on average)" if best else "—")
    return texts | {"t1_ranking": baseline_ranking(runs)}


def trailing_texts(gaps: pd.DataFrame, behind: pd.DataFrame) -> dict[str, str]:
    """The cells where CAP trails (:func:`trailing_text`), how many, and of how many cells."""
    return {"t1_behind": trailing_text(behind), "t1_behind_n": number(len(behind), decimals=0),
            "t1_cells_n": number(len(gaps), decimals=0)}


def one_change_table(effects: pd.DataFrame, labels: dict) -> pd.DataFrame:
    """CAP's diagnostics one setting at a time (``effects``: ``analysis.paired_differences``): one
    row per changed setting (``labels``: variant -> words), one column per dataset."""
    wide = effects.pivot_table(index="variant", columns="dataset", values="difference", sort=False)
    shown = pd.DataFrame({"CAP with": [labels[v] for v in wide.index]})
    for dataset in wide.columns:
        shown[_title(dataset)] = wide[dataset].values
    return shown


def margin_effect(effects: pd.DataFrame) -> pd.Series:
    """Per dataset, CAP without its margin minus CAP (the diagnostics' ``no_margin`` row)."""
    return effects[effects["variant"] == "no_margin"].set_index("dataset")["difference"] if len(effects) else pd.Series()


def ambiguity_gaps(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """CAP's gap to the best baseline with the preset's ambiguous images and with 30 % of them
    (``diagnostics_ambiguity.yml``)."""
    return gap_to_baselines(runs, variant="official"), gap_to_baselines(runs, variant="hard_03")


def ambiguity_texts(gaps: tuple[pd.DataFrame, pd.DataFrame]) -> dict[str, str]:
    """:func:`ambiguity_gaps` for the text; a dash for both until both have run."""
    both = all(len(g) for g in gaps)
    return {key: number(g["gap"].iloc[0] if both else np.nan, signed=True)
            for key, g in zip(("t1_amb_preset", "t1_amb_fewer"), gaps)}


def zero_shot_texts(zero_shot_runs: pd.DataFrame) -> dict[str, str]:
    """Zero-shot CLIP's harmonic mean on EuroSAT TRZSL over independently drawn problems
    (``diagnostics_zero_shot.yml``): its smallest, largest and mean value, beside the published
    number, and FGVC-Aircraft's published UL accuracy."""
    done = zero_shot_runs[zero_shot_runs["state"] == "done"]
    spread = done.groupby(["dataset", "paradigm"])["value"].agg(["mean", "min", "max"]).reset_index()
    eurosat = spread[(spread["dataset"] == "eurosat") & (spread["paradigm"] == "trzsl")]
    texts = {f"t1_zs_eurosat_trzsl_{stat}": number(eurosat[stat].iloc[0] if len(eurosat) else np.nan)
             for stat in ("min", "max", "mean")}
    return texts | {"t1_zs_eurosat_trzsl_published": number(reference_number("zero_shot", "trzsl", "eurosat").value),
                    "t1_zs_fgvc_published": number(reference_number("zero_shot", "ul", "fgvc_aircraft").value)}


ONE_CLASS_SHARE = 0.9  # an epoch in which one class holds at least this share of CAP's confident draws...
MIN_CONFIDENT_SHARE = 0.1  # ...and at least this share of the epoch's draws is confident (a few draws prove nothing)


def one_class_epochs(history: list[dict], share: float = ONE_CLASS_SHARE,
                     min_confident: float = MIN_CONFIDENT_SHARE) -> list[int]:
    """The epochs of a CAP run in which a single class holds at least ``share`` of the confident
    weak-view draws (σ, the counts the next epoch's margin is made from), among epochs where at
    least ``min_confident`` of the draws are confident."""
    epochs = []
    for entry in history:
        sigma = np.asarray(entry["sigma"], dtype=float)
        if entry["masked_share"] >= min_confident and sigma.sum() > 0 and sigma.max() / sigma.sum() >= share:
            epochs.append(int(entry["epoch"]))
    return epochs


def one_class_phase(runs: list[pd.DataFrame], variant_labels: dict[str, str]) -> pd.DataFrame:
    """One row per finished CAP run of the frames ``runs``: its setting (paradigm and the variant's
    label; Table 1's own runs have none), the replicate, the share of confident draws in epoch 0,
    the one-class epochs (how many, first to last), the largest margin of the first margin epoch and
    the headline value."""
    rows = []
    for frame in runs:
        for run in frame[(frame["state"] == "done") & (frame["method"] == "cap")].to_dict("records"):
            history = run["record"]["results"]["history"]
            epochs = one_class_epochs(history)
            first_margin = next((e["margin_max"] for e in history if e["margin_max"] > 0), 0.0)
            correct = [e["masked_accuracy"] for e in history if e["epoch"] in epochs and e["masked_accuracy"] is not None]
            variant = variant_labels.get(run["variant"])
            rows.append({"setting": PARADIGM_TITLES[run["paradigm"]] + (f", {variant}" if variant else ""),
                         "replicate": run["seed"],
                         "confident draws, epoch 0 (%)": number(100 * history[0]["masked_share"]) if history else "–",
                         "one-class epochs": f"{len(epochs)} ({epochs[0]}–{epochs[-1]})" if epochs else "0",
                         "their pseudolabels correct (%)": number(np.mean(correct)) if correct else "–",
                         "largest margin (logits)": number(first_margin), "result": number(run["value"])})
    return pd.DataFrame(rows)


def one_class_text(table: pd.DataFrame) -> str:
    """How many of :func:`one_class_phase`'s runs have a one-class epoch, and the longest phase's runs."""
    if not len(table):
        return "No CAP run on FGVC-Aircraft has finished yet."
    lengths = table["one-class epochs"].str.split(" ").str[0].astype(int)
    longest = table[lengths == lengths.max()]
    runs = ", ".join(f"{r['setting']}, replicate {r['replicate']}: {r['result']}" for r in longest.to_dict("records"))
    return (f"{int((lengths > 0).sum())} of these {len(table)} runs have one-class epochs; the longest phase lasts "
            f"{int(lengths.max())} epochs (result of {runs}).")


BASELINE_DIFFERENCES = Path(__file__).with_name("baseline_differences.yml")


def baseline_differences(path: Path = BASELINE_DIFFERENCES) -> pd.DataFrame:
    """The baselines against their official code, one row per option (``baseline_differences.yml``):
    FPL's and GRIP's official behaviour (Menghini et al.'s code), CPL's, what the companion did before
    the differential fixtures, the source lines, and whether the default now matches."""
    rows = yaml.safe_load(path.read_text())
    return pd.DataFrame([{"option": r["option"], "what": r["what"], "FPL, GRIP (Menghini)": r["menghini"],
                          "CPL": r["cpl"], "before": r["before"],
                          "default": "official" if r.get("matched", True) else f"not matched: {r['why'].strip()}",
                          "official source": r["source"]} for r in rows])
