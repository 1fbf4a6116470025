"""cap/experiments/table1.py: what Table 1's page shows, on hand-made runs."""

import numpy as np
import pandas as pd
import pytest

from cap.experiments import analysis, table1


def _runs(values: dict) -> pd.DataFrame:
    """Done runs: {(dataset, paradigm, method): [value per seed]}; variant official."""
    rows = [{"dataset": d, "paradigm": p, "method": m, "variant": "official", "seed": seed + 1, "state": "done",
             "value": v}
            for (d, p, m), values_ in values.items() for seed, v in enumerate(values_)]
    return pd.DataFrame(rows)


def test_trailing_cells_use_caps_seed_spread_and_the_noise_floor():
    runs = _runs({("cub", "ul", "cap"): [70, 72, 74], ("cub", "ul", "grip"): [75, 75, 75],  # gap -3, std 2: behind
                  ("dtd", "ul", "cap"): [60, 64, 68], ("dtd", "ul", "cpl"): [66, 66, 66],  # gap -2, std 4: not
                  ("eurosat", "ul", "cap"): [50, 50, 50], ("eurosat", "ul", "fpl"): [50.4, 50.4, 50.4]})  # -0.4 < floor
    gaps = analysis.gap_to_baselines(runs)
    behind = table1.trailing(gaps)
    assert list(behind["dataset"]) == ["cub"] and behind["gap"].iloc[0] == pytest.approx(-3)
    assert table1.trailing_text(behind) == "CUB-200-2011 UL (−3.0 against GRIP)"
    assert table1.trailing_text(behind.iloc[:0]) == "none"


def test_explanations_and_their_sentences():
    gaps = pd.DataFrame([{"dataset": "fgvc_aircraft", "paradigm": "ul", "best_baseline": "grip", "gap": -4.0,
                          "cap_std": 1.0}])
    before = pd.DataFrame([{"dataset": "fgvc_aircraft", "gap": -4.0}])
    after = pd.DataFrame([{"dataset": "fgvc_aircraft", "gap": -1.0}])  # narrows by 3 >= half of 4: explains
    margin = pd.Series({"fgvc_aircraft": 0.8})  # without the margin CAP gains 0.8: -4 -> -3.2, partly
    rows = table1.explanations(gaps, gaps, margin, {"30 % ambiguous": ("30 % ambiguous images", before, after)})
    (row,) = rows
    assert row["verdicts"] == {"30 % ambiguous": "explains", "w/o CACM": "partly"}
    assert row["pairs"]["w/o CACM"] == pytest.approx((-4.0, -3.2))
    table = table1.explanation_table(rows)
    assert table.loc[0, "30 % ambiguous"] == "−4.0 → −1.0 (explains)"
    text = table1.explanation_text(rows, {"30 % ambiguous": "30 % ambiguous images"})
    assert "closes with 30 % ambiguous images (−4.0 → −1.0)" in text and "a property of the simulated preset" in text
    assert "In no cell is CAP's mean below" in table1.explanation_text([], {})
    missing = table1.explanations(gaps, gaps, pd.Series(dtype=float), {"30 % ambiguous": ("x", before.iloc[:0], after)})
    assert missing[0]["verdicts"]["30 % ambiguous"] == "not run"
    assert "Not explained by the diagnostics" in table1.explanation_text(missing, {"30 % ambiguous": "x"})


def test_pool_verdicts_judge_each_pool_and_say_not_run_without_runs():
    # CAP - GRIP per replicate: +2, +4, +3 -> mean +3 > 0 with an interval above 0: supported
    pool = _runs({("eurosat", "ul", "cap"): [62, 64, 63], ("eurosat", "ul", "grip"): [60, 60, 60]})
    empty = pool.iloc[:0]
    frame = table1.pool_verdicts({"500 per class": pool, "2 700 per class": empty}, methods=("grip",))
    (row,) = frame.to_dict("records")
    assert row["CAP against"] == "GRIP" and row["2 700 per class"] == "not run yet"
    assert row["500 per class"].startswith("+3.0 [") and row["500 per class"].endswith("supported")


def test_a_verdict_across_a_knob():
    from cap.experiments import sensitivity

    # with CA minus without, per seed: preset +2, +3, +4 (mean +3, supported); at 0.3: 0, +1, -1
    # (mean 0, interval around 0: inconclusive); at 0.6 not run
    rows = {("official", s): 60 + d for s, d in zip((1, 2, 3), (2, 3, 4))} | {("no_ca", s): 60 for s in (1, 2, 3)}
    rows |= {("mismatch_03", s): 60 + d for s, d in zip((1, 2, 3), (0, 1, -1))} | {("mismatch_03_no_ca", s): 60
                                                                                      for s in (1, 2, 3)}
    runs = pd.DataFrame([{"dataset": "cub", "paradigm": "ul", "method": "cap", "variant": v, "seed": s,
                          "state": "done", "value": value} for (v, s), value in rows.items()])
    table = sensitivity.alignment_across_mismatch(runs)
    assert list(table["verdict"]) == ["supported", "inconclusive", "no runs"]
    assert table["effect"].iloc[0] == pytest.approx(3) and table["effect"].iloc[1] == pytest.approx(0)
    assert table["datasets"].iloc[2] == 0
    shown = sensitivity.as_shown(table)
    assert shown["effect [95 % interval]"].iloc[0].startswith("+3.0 [") and shown["effect [95 % interval]"].iloc[2] == "—"


def test_the_baselines_ranking_sentence():
    ahead = _runs({("cub", "ul", "cpl"): [62, 64, 63], ("cub", "ul", "grip"): [60, 60, 60]})
    text = table1.baseline_ranking(ahead)
    assert text.startswith("CPL minus GRIP: +3.0 points [") and "CPL is ahead of GRIP, as in every published" in text
    behind = _runs({("cub", "ul", "cpl"): [57, 56, 58], ("cub", "ul", "grip"): [60, 60, 60]})
    assert "GRIP is ahead of CPL, the reverse of every published table" in table1.baseline_ranking(behind)
    assert table1.baseline_ranking(ahead.iloc[:0]) == "CPL against GRIP: no paired runs yet."


def test_summary_texts_by_hand():
    # two cells (cub ul, dtd ul) that every method has: CAP 70 and 60 (mean 65), CPL 72 and 56 (64);
    # CPL is best on cub, CAP on dtd: one win each
    values = {}
    for dataset, cap, cpl in (("cub", 70, 72), ("dtd", 60, 56)):
        values |= {(dataset, "ul", "cap"): [cap] * 3, (dataset, "ul", "cpl"): [cpl] * 3}
    runs = _runs(values)
    texts = table1.summary_texts(runs.assign(key=[f"k{i}" for i in range(len(runs))]))
    assert texts["t1_sim_runs"] == "12 done"
    assert (texts["t1_avg_cap"], texts["t1_avg_cpl"], texts["t1_cap_minus_cpl"]) == ("65.0", "64.0", "+1.0")
    assert texts["t1_cap_minus_best"] == "+1.0 points from CPL's (the best baseline on average)"
    assert (texts["t1_wins_cap"], texts["t1_wins_cpl"], texts["t1_cells"]) == ("1", "1", "2")
    assert texts["t1_avg_grip"] == "—" and texts["t1_ranking"] == "CPL against GRIP: no paired runs yet."


def test_paradigm_tables_are_a_title_a_compact_table_and_the_details():
    runs = _runs({("cub", "ul", "cap"): [70, 72, 74], ("cub", "ssl", "cap"): [1, 1, 1]}).assign(
        key=["a", "b", "c", "d", "e", "f"], profile="sim")
    title, compact, folded = table1.paradigm_tables(runs, "ul", "UL")
    assert title.data == "**UL**"
    assert "72.0 ± 2.0" in compact.data and "CUB-200-2011" in compact.data
    assert folded.data.startswith("<details><summary>every seed, the published number") and "1: 70.0" in folded.data


def test_trailing_texts_count_the_cells():
    gaps = pd.DataFrame([{"dataset": "cub", "paradigm": "ul", "best_baseline": "grip", "gap": -3.0, "cap_std": 1.0},
                         {"dataset": "dtd", "paradigm": "ul", "best_baseline": "cpl", "gap": 1.0, "cap_std": 1.0}])
    assert table1.trailing_texts(gaps, table1.trailing(gaps)) == {
        "t1_behind": "CUB-200-2011 UL (−3.0 against GRIP)", "t1_behind_n": "1", "t1_cells_n": "2"}


def test_one_change_table_and_the_margins_effect():
    effects = pd.DataFrame([{"variant": "no_margin", "dataset": "cub", "difference": 1.5},
                            {"variant": "no_margin", "dataset": "dtd", "difference": -0.5},
                            {"variant": "iters_10", "dataset": "cub", "difference": 2.0}])
    shown = table1.one_change_table(effects, {"no_margin": "no margin", "iters_10": "10 iterations"})
    assert list(shown.columns) == ["CAP with", "CUB-200-2011", "DTD"]
    assert list(shown["CAP with"]) == ["no margin", "10 iterations"]
    assert shown["DTD"].iloc[0] == -0.5 and np.isnan(shown["DTD"].iloc[1])
    assert table1.margin_effect(effects).to_dict() == {"cub": 1.5, "dtd": -0.5}
    assert table1.margin_effect(effects.iloc[:0]).empty


def test_ambiguity_gaps_and_texts():
    rows = []
    for variant, cap in (("official", [60, 60, 60]), ("hard_03", [66, 66, 66])):
        rows += _runs({("fgvc_aircraft", "ul", "cap"): cap, ("fgvc_aircraft", "ul", "grip"): [64, 64, 64]}).assign(
            variant=variant).to_dict("records")
    gaps = table1.ambiguity_gaps(pd.DataFrame(rows))
    assert table1.ambiguity_texts(gaps) == {"t1_amb_preset": "\u22124.0", "t1_amb_fewer": "+2.0"}
    only_preset = (gaps[0], gaps[1].iloc[:0])
    assert table1.ambiguity_texts(only_preset) == {"t1_amb_preset": "—", "t1_amb_fewer": "—"}


def test_zero_shot_texts_spread_over_draws():
    from cap.experiments.references import reference_number

    runs = _runs({("eurosat", "trzsl", "zero_shot"): [40, 50, 60, 70, 80], ("eurosat", "ul", "zero_shot"): [1, 1]})
    runs.loc[4, "state"] = "stale"  # only current records count: 40..70
    texts = table1.zero_shot_texts(runs)
    assert (texts["t1_zs_eurosat_trzsl_min"], texts["t1_zs_eurosat_trzsl_max"], texts["t1_zs_eurosat_trzsl_mean"]) == \
        ("40.0", "70.0", "55.0")
    published = reference_number("zero_shot", "trzsl", "eurosat").value
    assert texts["t1_zs_eurosat_trzsl_published"] == f"{published:.1f}"
    assert table1.zero_shot_texts(runs.iloc[:0])["t1_zs_eurosat_trzsl_min"] == "—"


def test_one_class_epochs_counts_epochs_where_one_class_holds_nine_tenths_of_the_draws():
    history = [{"epoch": 0, "sigma": [0, 0, 0], "masked_share": 0.0},  # no confident draw
               {"epoch": 1, "sigma": [9, 1, 0], "masked_share": 0.5},  # 9 / 10 = 0.9
               {"epoch": 2, "sigma": [8, 2, 0], "masked_share": 0.5},  # 0.8
               {"epoch": 3, "sigma": [0, 0, 5], "masked_share": 0.1},
               {"epoch": 4, "sigma": [0, 0, 5], "masked_share": 0.05}]  # too few confident draws to count
    assert table1.one_class_epochs(history) == [1, 3]
    assert table1.one_class_epochs(history, share=0.75) == [1, 2, 3]
    assert table1.one_class_epochs(history, min_confident=0.0) == [1, 3, 4]


def test_one_class_phase_reads_each_finished_cap_run():
    history = [{"epoch": 0, "sigma": [0, 1], "masked_share": 0.2, "margin_max": 0.0, "masked_accuracy": 100.0},
               {"epoch": 1, "sigma": [19, 1], "masked_share": 0.5, "margin_max": 11.5, "masked_accuracy": 2.0},
               {"epoch": 2, "sigma": [10, 10], "masked_share": 0.6, "margin_max": 3.0, "masked_accuracy": 40.0}]
    runs = pd.DataFrame([
        {"method": "cap", "state": "done", "paradigm": "ul", "variant": "hard_03", "seed": 2, "value": 7.84,
         "record": {"results": {"history": history}}},
        {"method": "grip", "state": "done", "paradigm": "ul", "variant": "hard_03", "seed": 2, "value": 70.0,
         "record": {"results": {"history": []}}},
        {"method": "cap", "state": "stale", "paradigm": "ul", "variant": "hard_03", "seed": 3, "value": np.nan,
         "record": None}])
    table = table1.one_class_phase([runs.iloc[:0], runs], {"hard_03": "30 % ambiguous"})
    assert table.to_dict("records") == [{"setting": "UL, 30 % ambiguous", "replicate": 2,
                                         "confident draws, epoch 0 (%)": "20.0", "one-class epochs": "2 (0–1)",
                                         "their pseudolabels correct (%)": "51.0",  # (100 + 2) / 2
                                         "largest margin (logits)": "11.5", "result": "7.8"}]
    assert table1.one_class_text(table) == ("1 of these 1 runs have one-class epochs; the longest phase lasts 2 "
                                            "epochs (result of UL, 30 % ambiguous, replicate 2: 7.8).")
    assert table1.one_class_text(table.iloc[:0]) == "No CAP run on FGVC-Aircraft has finished yet."


def test_every_baseline_difference_names_real_options_with_official_defaults():
    from dataclasses import fields

    from cap.config import RunConfig, make_config, resolve

    table = table1.baseline_differences()
    names = {f.name for f in fields(RunConfig)}
    listed = [name.strip() for cell in table["option"] for name in cell.split(",")]
    assert set(listed) <= names and len(listed) == len(set(listed))
    assert (table["default"] == "official").sum() == len(table) - 1  # only the training settings are not matched
    cpl, grip = (resolve(make_config(dataset="dtd", method=m)) for m in ("cpl", "grip"))
    # spot checks of what the table says against the defaults
    assert (grip.baseline_reinit, cpl.baseline_reinit) == ("carry", "initial")
    assert (grip.baseline_last_batch, cpl.baseline_last_batch) == ("kept", "dropped")
    assert (grip.baseline_grad_clip, cpl.baseline_grad_clip) == (0.0, 0.8)
    assert (grip.baseline_train_ratio, cpl.baseline_train_ratio) == (0.8, 1.0)


def test_ranking_by_variant_pairs_cpl_with_grip_within_each_variant():
    rows = []
    for variant, cpl_offset in (("official", -2.0), ("confusion_0", 3.0)):
        for dataset in ("dtd", "resisc45"):
            for seed in (1, 2, 3):
                rows.append(dict(dataset=dataset, paradigm="ul", method="grip", variant=variant, seed=seed,
                                 state="done", value=60.0 + seed))
                rows.append(dict(dataset=dataset, paradigm="ul", method="cpl", variant=variant, seed=seed,
                                 state="done", value=60.0 + seed + cpl_offset))
    table = table1.ranking_by_variant(pd.DataFrame(rows), {"official": "the preset"})
    assert table["setting"].tolist() == ["the preset", "confusion_0"]
    assert table["CPL − GRIP (points)"].str.split(" ").str[0].tolist() == ["\u22122.0", "+3.0"]  # every pair differs by it
    assert table["verdict"].tolist() == ["contradicted", "supported"]
