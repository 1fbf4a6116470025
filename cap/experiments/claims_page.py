"""The claims page's tables and sentences, from :func:`claims.claims_table` and the verdict
history: the page only draws what these return."""

from __future__ import annotations

from html import escape

import pandas as pd

from cap.experiments.claims import TOO_FEW, claims, evidence_text
from cap.experiments.matrix import command, load_matrix

VERDICT_STYLE = {"supported": "✔ supported", "contradicted": "✘ contradicted", "inconclusive": "? inconclusive",
                 "no runs": "not run yet", "not testable here": "not testable here", TOO_FEW: "too few replicates yet"}
OWN_EXPLANATIONS = {"table1": "table1-contradictions", "figure9_calibration": "figure9-why"}  # pages with diagnostics


def page_title(page: str) -> str:
    """The paper's name of a page's table or figure ("Figure 6"), from its matrix's title."""
    try:
        return load_matrix(page).title.split(":")[0]
    except Exception:  # a page without a matrix of its own
        return page.replace("_", " ")


def real_status(row: dict) -> str:
    """Real data: the verdict once runs exist, else pending with the command that runs them (HTML)."""
    done, planned = row["paper_done"], row["paper_planned"]
    run = f"<code>{escape(command('paper', row['matrix']))}</code>"
    if row["kind"] == "untestable" and row["id"] != "table4":
        return "no verdict; its page shows the measure once real runs exist"
    if not planned:
        return "not run on real data"
    if not done:
        return f"pending: {run}"
    return f"{VERDICT_STYLE.get(row['paper_verdict'], row['paper_verdict'])} ({done} of {planned} runs); rest: {run}"


def verdict_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The verdicts table (HTML cells): the claim linked to its page by the paper's name, the
    simulator's verdict with its evidence, the real-data status."""
    records = table.to_dict("records")
    return pd.DataFrame({
        "claim of the paper (its page)": [
            f'{escape(r["claim"])} <a href="../../_generated/pages/{r["page"]}.html">{escape(page_title(r["page"]))}</a>'
            for r in records],
        "concept simulator: verdict and evidence": [
            f"<strong>{VERDICT_STYLE.get(r['sim_verdict'], r['sim_verdict'])}</strong>: {escape(evidence_text(r, 'sim'))}"
            for r in records],
        "real data": [real_status(r) for r in records],
    })


def verdict_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many claims the simulator supports, contradicts, leaves inconclusive, cannot test."""
    counts = table["sim_verdict"].value_counts()
    return {v: int(counts.get(v, 0)) for v in ("supported", "contradicted", "inconclusive", "not testable here")}


def forest_bound(claim: dict) -> float:
    """Where a claim's forest-plot panel draws its boundary: 0, −tolerance (non-inferiority), the
    tolerance (robustness: the largest change must stay left of it), 50 % (detection recall)."""
    test = claim["test"]
    if test["kind"] == "robust":
        return float(test["tolerance"])
    if test["kind"] == "close":
        return -float(test.get("tolerance", 0))
    return 50.0 if test["kind"] == "detection" else 0.0


def last_snapshot_text(history: list[dict]) -> str:
    """A sentence on the newest snapshot of the verdict history."""
    if not history:
        return "no snapshot has been recorded yet (it is written by `make book` once every run has a result)"
    last = history[-1]
    return (f"the last of {len(history)} snapshots was written on {last['written'][:10]} under rule version "
            f"{last['rule_version']} by code `{last['code_fingerprint']}` (commit `{(last.get('commit') or 'none')[:10]}`)")


def untestable_list(table: pd.DataFrame) -> str:
    """A Markdown list of the claims the simulator cannot test, each with its reason and page."""
    return "\n".join(f"- **{row['claim']}** {row['sim_reason'][0].upper() + row['sim_reason'][1:]} "
                     f"([{page_title(row['page'])}]({row['page']}.ipynb))."
                     for _, row in table[table["kind"] == "untestable"].iterrows())


def contradicted_list(table: pd.DataFrame) -> str:
    """A Markdown list of the contradicted claims, each pointing to the page that explains it."""
    def explanation(row) -> str:
        link = f"[{page_title(row['page'])} page]({row['page']}.ipynb)"
        if row["page"] in OWN_EXPLANATIONS:
            return f"The {link} explains it with diagnostic runs."
        return f"The {link} shows the effect dataset by dataset; no diagnostic isolates it yet."

    contradicted = table[table["sim_verdict"] == "contradicted"]
    return "\n".join(f"- **{row['claim']}** {explanation(row)}" for _, row in contradicted.iterrows()) or \
        "The simulator contradicts none of the claims."


def sweep_exclusions(matrix: str) -> tuple[list[float], str]:
    """The swept values a robustness claim on ``matrix`` leaves out, and why ([] and "" for none)."""
    for claim in claims():
        test = claim["test"]
        if test["kind"] == "robust" and test.get("matrix") == matrix and test.get("exclude"):
            return [float(v) for v in test["exclude"]], test.get("exclude_reason", "")
    return [], ""


def rule_values(rule: dict, fingerprint: str) -> dict:
    """The rule's facts the page's text quotes: version, fingerprint, confidence (percent),
    bootstrap resamples and the fewest replicates a unit needs."""
    return {"claims_rule_version": rule["version"], "claims_rule_fingerprint": fingerprint,
            "claims_confidence": int(100 * rule["confidence"]), "claims_resamples": rule["resamples"],
            "claims_min_replicates": rule["min_replicates"]}


def rule_versions_text(rule: dict) -> str:
    """Every version of the rule with what it changed, oldest first (Markdown)."""
    return "**Versions of the rule.** " + " ".join(f"{h['version']}: {h['rule']}." for h in rule["history"])


def count_values(table: pd.DataFrame) -> dict[str, int]:
    """The verdict paragraph's counts: claims per simulator verdict, all claims, and the claims
    with a real-data result."""
    counts = {f"claims_{verdict.replace(' ', '_')}": n for verdict, n in verdict_counts(table).items()}
    return counts | {"claims_total": len(table), "claims_real_done": int((table["paper_done"] > 0).sum())}


def panel_title(claim: dict) -> str:
    """A forest panel's title: the paper's name of the claim's page and the claim's id in words."""
    return page_title(claim["page"]) + f" ({claim['id'].replace('_', ' ')})"


def judged_claims(forest: pd.DataFrame) -> list[dict]:
    """The claims, in the rule's order, that have a row in the forest plot."""
    return [c for c in claims() if c["id"] in set(forest["id"])]
