"""cap/experiments/status_page.py: the status page's runs section on a hand-made records table."""

import numpy as np
import pandas as pd

from cap.experiments import status_page


def _table():
    rows = [("run-a.json", "done", "eurosat", "cap", 1, 50.0, None, 10.0, "3.11", "2.13"),
            ("run-b.json", "done", "eurosat", "cap", 2, 52.0, None, 14.0, "3.11", "2.13"),
            ("failed-c.json", "failed", "eurosat", "grip", 1, np.nan, "ValueError: x", 2.0, "3.11", "2.12")]
    return pd.DataFrame([{"record": r, "state": st, "config.dataset": d, "config.paradigm": "ul", "config.method": m,
                          "config.seed": seed, "config.epochs": 50, "headline": h, "error": e, "wall_seconds": w,
                          "device": "cpu", "written": "2026-12-07T20:00:00+00:00", "python": py, "torch": t,
                          "open_clip_torch": "3.0", "profile": "sim"}
                         for r, st, d, m, seed, h, e, w, py, t in rows])


def test_summary_counts_states_and_means_seconds():
    frame = status_page.summary(_table()).set_index("method")
    assert frame.loc["cap", "done"] == 2 and frame.loc["cap", "failed"] == 0 and frame.loc["grip", "failed"] == 1
    assert frame.loc["cap", "mean seconds"] == 12.0


def test_versions_once_or_each_with_its_count():
    table = _table()
    assert status_page.versions(table.iloc[:2]) == "every record: Python 3.11, torch 2.13, open_clip 3.0"
    assert status_page.versions(table) == ("Python 3.11, torch 2.13, open_clip 3.0 (2 records); "
                                           "Python 3.11, torch 2.12, open_clip 3.0 (1 records)")


def test_rows_link_each_record_and_failures_show_their_error():
    rows = status_page.run_rows(_table())
    assert rows.loc[0, "record"] == '<a href="../records/sim/run-a.json">run-a</a>'
    assert rows.loc[0, "run"] == "eurosat ul cap seed 1" and rows.loc[0, "parameters"] == "epochs=50"
    assert rows.loc[2, "result"] == "ValueError: x" and rows.loc[0, "result"] == 50.0


def test_the_folded_table_has_a_filter_and_escapes_its_summary():
    html = status_page.filterable("<table></table>", "every record (3) <all>")
    assert html.startswith("<details><summary>every record (3) &lt;all&gt;</summary>")
    assert 'type="search"' in html and "<table></table></details>" in html and "http" not in html
