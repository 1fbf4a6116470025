"""How pages show numbers: precision, the best of a column in bold, a missing value saying why,
links from a cell to its runs, and the one line that stands for a profile without results."""

import numpy as np
import pandas as pd

from cap.experiments import report
from cap.experiments.report import SiteLinks


def test_numbers_have_the_precision_they_deserve():
    assert report.number(42.04) == "42.0" and report.number(-1.25, signed=True) == "\u22121.2"
    assert report.number(3.0, signed=True) == "+3.0" and report.number(12.6, decimals=0) == "13"
    assert report.number(float("nan")) == "—" and report.number(None, missing="not transcribed") == "not transcribed"
    assert report.mean_std([40.0, 44.0]) == "42.0 ± 2.8" and report.mean_std([np.nan]) == report.NOT_RUN
    assert report.mean_std([51.26]) == "51.3"


def test_html_table_formats_bolds_the_best_and_says_why_a_value_is_missing():
    frame = pd.DataFrame({"dataset": ["DTD", "EuroSAT"], "top-1": [42.345, np.nan], "seeds": [3, 0],
                          "error": [0.5, 0.25]})
    html = report.html_table(frame, decimals={"error": 2}, missing={"top-1": "not run yet"},
                             best={"top-1": "max", "error": "min"})
    assert "<strong>42.3</strong>" in html and "not run yet" in html and "<strong>0.25</strong>" in html
    assert "<td>3</td>" in html and "<td>0</td>" in html, "counts are integers"
    assert "nan" not in html.lower() and 'class="table-box"' in html and "Bold: the best value" in html


def test_html_table_escapes_text_but_not_link_columns():
    frame = pd.DataFrame({"option": ["M = <class> margin"], "run": ['<a href="x.json">1</a>']})
    html = report.html_table(frame, html_columns=("run",))
    assert "M = &lt;class&gt; margin" in html and '<a href="x.json">1</a>' in html


def _cell(dataset, method, mean, seeds, profile="sim", std=np.nan):
    runs = [{"seed": s, "key": f"{method}{s}", "state": "done", "dataset": dataset, "paradigm": "ul", "profile": profile}
            for s in seeds]
    return {"dataset": dataset, "paradigm": "ul", "method": method, "mean": mean, "std": std,
            "ours": report.mean_std([mean]) if seeds else report.NOT_RUN, "runs": runs,
            "paper": np.nan, "verified": None, "difference": np.nan}


def test_wide_table_bolds_only_a_lead_beyond_the_spread_and_links_each_seed(tmp_path):
    (tmp_path / "runs/sim").mkdir(parents=True)
    (tmp_path / "runs/sim/dtd-ul.ipynb").write_text("{}")
    links = SiteLinks(tmp_path / "records")
    # DTD: 50 ± 2 against 45 ± 1, a lead of 5 > 2: bold. EuroSAT: 60 ± 3 against 58 ± 1, a lead of
    # 2 < 3: no bold. RESISC45: one value, nothing to compare: no bold.
    cells = pd.DataFrame([_cell("dtd", "cap", 50.0, [1], std=2.0), _cell("dtd", "fpl", 45.0, [1], std=1.0),
                          _cell("eurosat", "cap", 60.0, [1, 2], std=3.0), _cell("eurosat", "fpl", 58.0, [1], std=1.0),
                          _cell("resisc45", "cap", 70.0, [1]), _cell("resisc45", "fpl", np.nan, [])])
    html = report.wide_html(cells, links=links)
    assert html.count("<strong>") == 1 and "<strong>50.0</strong>" in html
    assert "leads the next best by more than either one's spread over replicates" in html
    assert '<a href="../../_generated/runs/sim/dtd-ul.html#run-cap1">1</a>' in html, "a run page where there is one"
    assert '<a href="../../records/sim/run-cap2.json">2</a>' in html, "else the record itself"
    assert "not run yet" in html and "No published line: CAP's table is not transcribed for that cell." in html


def test_a_profile_without_results_is_one_line_with_the_command_and_folded_slices():
    runs = report.collect("table1", "paper", "/nonexistent", datasets=["eurosat", "dtd"], paradigms=["ul"])
    html = report.run_state_html(runs, "paper", "table1")
    assert html.startswith("<p><strong>Real data:</strong> 0 of 30 runs have a result. Run them with "
                           "<code>make runs PROFILE=paper MATRIX=table1</code>")
    assert "<details><summary>" in html and "make runs PROFILE=paper MATRIX=table1 DATASET=dtd PARADIGM=ul" in html
    done = runs.assign(state="done")
    assert report.run_state_html(done, "paper", "table1") == "<p><strong>Real data:</strong> 30 of 30 runs have a result.</p>"


def test_rows_can_carry_anchors():
    html = report.html_table(pd.DataFrame({"run": ["a", "b"]}), row_ids=["run-1", "run-2"])
    assert '<tr id="run-1">' in html and '<tr id="run-2">' in html and html.count("<tr") == 3


def test_long_text_in_a_cell_may_wrap():
    assert report.breakable("records_root=book/_generated") == "records_<wbr>root=<wbr>book/<wbr>_<wbr>generated"
    assert report.breakable("a_b") == "a_b", "short text is left alone"


def test_a_value_that_rounds_to_zero_keeps_its_sign_only_with_a_digit_to_show_it():
    from cap.experiments.report import MINUS, number

    assert number(-0.03) == f"{MINUS}0.03" and number(0.04, signed=True) == "+0.04"
    assert number(-0.004) == "0.0" and number(-0.004, signed=True) == "0.0"
    assert number(-0.05) == f"{MINUS}0.1" and number(0.0, signed=True) == "+0.0"  # rounds away from zero: unchanged
    assert number(-0.4, decimals=0) == "0"
