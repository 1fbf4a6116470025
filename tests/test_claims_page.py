"""cap/experiments/claims_page.py: the claims page's tables and sentences, on hand-made rows."""

import pandas as pd

from cap.experiments import claims_page


def _table():
    base = {"kind": "paired", "matrix": "table1", "paper_done": 0, "paper_planned": 0, "paper_verdict": "no runs",
            "sim_reason": "", "sim_effect": 1.0, "sim_low": 0.5, "sim_high": 1.5, "sim_units": 3, "sim_agree": 2,
            "sim_disagree": 0, "sim_replicates": 3, "sim_short_units": 0, "sim_p_better": 0.9, "sim_relative": None}
    return pd.DataFrame([
        base | {"id": "abstract", "claim": "CAP beats CPL <on average>", "page": "table1", "sim_verdict": "supported"},
        base | {"id": "figure6_k", "claim": "Robust to k", "page": "figure6_k", "sim_verdict": "contradicted",
                "kind": "robust", "paper_planned": 4, "matrix": "figure6_k"},
        base | {"id": "figure8", "claim": "Descriptions help", "page": "figure8_alignment",
                "sim_verdict": "not testable here", "kind": "untestable", "sim_reason": "the simulator designs it."},
    ])


def test_links_show_the_papers_names_and_claims_are_escaped():
    rows = claims_page.verdict_rows(_table())
    first = rows.iloc[0, 0]
    assert "CAP beats CPL &lt;on average&gt;" in first and ">Table 1</a>" in first and "table1.html" in first
    assert ">Figure 6</a>" in rows.iloc[1, 0]
    assert rows.iloc[0, 1] == ("<strong>✔ supported</strong>: +1.0 points, 95 % interval [+0.5, +1.5]; better in a "
                               "random cell with probability 0.90; 2 of 3 dataset × paradigm cells agree on their own, "
                               "0 disagree; 3+ replicates each")
    assert claims_page.page_title("no_such_page") == "no such page"


def test_real_status_by_state():
    table = _table().to_dict("records")
    assert claims_page.real_status(table[0]) == "not run on real data"
    assert claims_page.real_status(table[1]).startswith("pending: <code>")
    assert claims_page.real_status(table[1] | {"paper_done": 2, "paper_verdict": "supported"}).startswith(
        "✔ supported (2 of 4 runs); rest: <code>")
    assert claims_page.real_status(table[2]).startswith("no verdict")


def test_counts_lists_and_bounds():
    table = _table()
    assert claims_page.verdict_counts(table) == {"supported": 1, "contradicted": 1, "inconclusive": 0,
                                                 "not testable here": 1}
    assert claims_page.untestable_list(table) == ("- **Descriptions help** The simulator designs it. "
                                                  "([Figure 8](figure8_alignment.ipynb)).")
    assert claims_page.contradicted_list(table) == ("- **Robust to k** The [Figure 6 page](figure6_k.ipynb) shows the "
                                                    "effect dataset by dataset; no diagnostic isolates it yet.")
    assert claims_page.contradicted_list(table.iloc[:1]) == "The simulator contradicts none of the claims."
    assert claims_page.forest_bound({"test": {"kind": "robust", "tolerance": 3.0}}) == 3.0
    assert claims_page.forest_bound({"test": {"kind": "close", "tolerance": 2.0}}) == -2.0
    assert claims_page.forest_bound({"test": {"kind": "detection"}}) == 50.0
    assert claims_page.forest_bound({"test": {"kind": "paired"}}) == 0.0
    assert claims_page.last_snapshot_text([]).startswith("no snapshot")
    assert claims_page.last_snapshot_text([{"written": "2026-12-07T20:00", "rule_version": 2, "code_fingerprint": "ab",
                                            "commit": "0123456789abc"}]) == (
        "the last of 1 snapshots was written on 2026-12-07 under rule version 2 by code `ab` (commit `0123456789`)")


def test_sweep_exclusions_come_from_the_rule():
    values, why = claims_page.sweep_exclusions("figure10_margin_scale")
    assert values == [0.0] and why.startswith("m = 0 is no margin at all")
    assert claims_page.sweep_exclusions("figure6_k") == ([], "")


def test_rule_values_and_versions():
    rule = {"version": 3, "confidence": 0.95, "resamples": 2000, "min_replicates": 3,
            "history": [{"version": 1, "rule": "first"}, {"version": 2, "rule": "intervals stratified"}]}
    assert claims_page.rule_values(rule, "abc") == {
        "claims_rule_version": 3, "claims_rule_fingerprint": "abc", "claims_confidence": 95,
        "claims_resamples": 2000, "claims_min_replicates": 3}
    assert claims_page.rule_versions_text(rule) == "**Versions of the rule.** 1: first. 2: intervals stratified."


def test_count_values_add_the_total_and_the_real_runs():
    table = _table()
    table.loc[1, "paper_done"] = 2  # one claim has real-data results
    assert claims_page.count_values(table) == {"claims_supported": 1, "claims_contradicted": 1,
                                               "claims_inconclusive": 0, "claims_not_testable_here": 1,
                                               "claims_total": 3, "claims_real_done": 1}


def test_forest_panels_are_the_rules_claims_with_rows_and_their_titles():
    from cap.experiments.claims import claims

    ids = [c["id"] for c in claims()]
    forest = pd.DataFrame({"id": [ids[2], ids[0], ids[0], "no_such_claim"]})
    assert [c["id"] for c in claims_page.judged_claims(forest)] == [ids[0], ids[2]]  # the rule's order
    assert claims_page.panel_title({"page": "figure6_k", "id": "figure6_k"}) == "Figure 6 (figure6 k)"
