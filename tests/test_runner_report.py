"""Running matrices and reading their records: skipping, failures, stale records, and the
tables the pages show (hand-computed)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cap.experiments import report
from cap.config import as_dict
from cap.experiments.matrix import plan
from cap.experiments.notebooks import run_notebook
from cap.errors import ParameterError
from cap.experiments.records import RECORD_VERSION, write_record
from cap.experiments.records import record_status
from cap.experiments.runner import execute, run_matrices, select, todo

ZERO_SHOT_EUROSAT = dict(datasets=["eurosat"], paradigms=["ul"], methods=["zero_shot"])


def fake_record(directory, run, value, version=RECORD_VERSION):
    path = write_record(directory, "run", as_dict(run.config), {"status": "ok", "headline": value})
    if version != RECORD_VERSION:
        record = json.loads(path.read_text())
        record["version"] = version
        path.write_text(json.dumps(record))
    return path


def test_record_states(tmp_path):
    a, b, c, d = plan("table1", "sim", datasets=["eurosat"], paradigms=["ul"], methods=["cap"], seeds=[1, 2, 3]) + \
        plan("table1", "sim", datasets=["dtd"], paradigms=["ul"], methods=["cap"], seeds=[1])
    fake_record(tmp_path, a, 50.0)
    fake_record(tmp_path, b, 50.0, version=1)
    write_record(tmp_path, "failed", as_dict(c.config), {"status": "failed", "error": "RuntimeError: boom",
                                                          "traceback": "..."})
    assert record_status(a.key, tmp_path).state == "done"
    stale = record_status(b.key, tmp_path)
    assert stale.state == "stale" and f"record version 1, this code writes {RECORD_VERSION}" in stale.detail
    assert record_status(c.key, tmp_path).state == "failed" and record_status(c.key, tmp_path).detail == "RuntimeError: boom"
    assert record_status(d.key, tmp_path).state == "missing"
    assert [r.key for r in todo([a, b, c, d], tmp_path)] == [b.key, c.key, d.key]
    assert len(todo([a, b, c, d], tmp_path, force=True)) == 4


def test_selection_deduplicates_across_matrices():
    both = select("sim", ["table1", "figure1_2"], **ZERO_SHOT_EUROSAT)
    assert len(both) == 3 and len(select("sim", ["figure1_2"], **ZERO_SHOT_EUROSAT)) == 3  # the same three runs


def test_summarise_by_hand(tmp_path):
    runs = plan("table1", "sim", datasets=["dtd"], paradigms=["ul"], methods=["zero_shot"], seeds=[1, 2, 3])
    for run, value in zip(runs[:2], (40.0, 44.0)):
        fake_record(tmp_path / "sim", run, value)
    fake_record(tmp_path / "sim", runs[2], 99.0, version=1)  # stale: never shown as a number
    frame = report.collect("table1", "sim", tmp_path, datasets=["dtd"], paradigms=["ul"], methods=["zero_shot"])
    assert list(frame["state"]) == ["done", "done", "stale"]
    (cell,) = report.summarise(frame, ["dataset", "paradigm", "method"]).to_dict("records")
    # mean 42, sample std sqrt(((−2)² + 2²)/1) = 2.83; the paper's DTD zero-shot is 43.2 (verified)
    assert cell["ours"] == "42.0 ± 2.8" and cell["done"] == "2/3"
    assert cell["seeds"] == "1: 40.0, 2: 44.0, 3: stale"
    assert cell["paper"] == 43.2 and cell["source"] == "GRIP README (verified)"
    assert cell["difference"] == pytest.approx(-1.2)
    shown = report.cell_table(pd.DataFrame([cell]), ["dataset", "method"])
    assert shown.loc[0, "dataset"] == "DTD" and shown.loc[0, "method"] == "Zero-shot CLIP"
    assert shown.loc[0, "ours − published"] == "\u22121.2"
    wide = report.wide_html(pd.DataFrame([cell]))
    # one method in the column: nothing to lead, so nothing in bold
    assert "42.0 ± 2.8<br><small>GRIP README 43.2, Δ \u22121.2</small>" in wide and "DTD" in wide
    assert "<strong>" not in wide
    assert "1 records are stale (record version 1, this code writes" in report.commands_html(frame, "sim")
    assert report.missing_commands(frame, "sim") == ['make runs PROFILE=sim MATRIX=table1 DATASET=dtd PARADIGM=ul '
                                                     'METHOD=zero_shot SEEDS="3"']


def test_cells_without_runs_say_not_run_yet(tmp_path):
    frame = report.collect("table1", "paper", tmp_path, datasets=["eurosat"], paradigms=["trzsl"], methods=["cap"])
    (cell,) = report.summarise(frame, ["dataset", "paradigm", "method"]).to_dict("records")
    assert cell["ours"] == "not run yet" and np.isnan(cell["difference"])
    assert "make runs PROFILE=paper MATRIX=table1 DATASET=eurosat PARADIGM=trzsl METHOD=cap" in \
        report.commands_html(frame, "paper")
    # ablation rows other than the full method have no published number
    t2 = report.collect("table2", "paper", tmp_path, datasets=["flowers102"], paradigms=["ul"], seeds=[1])
    cells = report.summarise(t2, ["dataset", "paradigm", "method", "variant"], reference_variant="full")
    assert cells.set_index("variant").loc["full", "paper"] == 76.80
    assert cells.set_index("variant").loc["no_ca", "source"] == "CAP paper: not transcribed"


def test_a_failing_run_is_recorded_with_its_traceback_and_the_rest_go_on(tmp_path, monkeypatch):
    monkeypatch.setenv("CAP_DATA_ROOT", str(tmp_path / "no-data"))
    (bad,) = plan("table1", "paper", **ZERO_SHOT_EUROSAT, seeds=[1])
    (good,) = plan("table1", "sim", **ZERO_SHOT_EUROSAT, seeds=[1])
    status = execute(bad, tmp_path / "records")
    assert status.state == "failed" and "EuroSAT" in status.detail
    failed = json.loads((tmp_path / "records" / f"failed-{bad.key}.json").read_text())
    assert "Traceback" in failed["results"]["traceback"]
    assert execute(good, tmp_path / "records").state == "done"
    assert record_status(bad.key, tmp_path / "records").state == "failed"


def test_make_runs_executes_the_run_notebook_skips_finished_runs_and_reports_failures(tmp_path, monkeypatch, root):
    records, notebooks = tmp_path / "records", tmp_path / "runs"
    states = run_matrices("sim", ["table1"], ["eurosat"], ["ul"], ["zero_shot", "fpl"], [1],
                          records_dir=records, notebooks_dir=notebooks)
    assert states == {"done": 2}
    executed = notebooks / "eurosat-ul.ipynb"
    assert executed.is_file() and "2 runs selected, 2 to run" in executed.read_text()
    stamps = {p.name: p.stat().st_mtime_ns for p in records.glob("run-*.json")}
    assert run_matrices("sim", ["table1"], ["eurosat"], ["ul"], ["zero_shot", "fpl"], [1],
                        records_dir=records, notebooks_dir=notebooks) == {"done": 2}
    assert {p.name: p.stat().st_mtime_ns for p in records.glob("run-*.json")} == stamps, "finished runs are skipped"

    monkeypatch.setenv("CAP_DATA_ROOT", str(tmp_path / "no-data"))
    states = run_matrices("paper", ["table1"], ["eurosat"], ["ul"], ["zero_shot"], [1], records_dir=records,
                          notebooks_dir=notebooks)
    assert states == {"failed": 1}
    assert (notebooks / "eurosat-ul.failed.ipynb").is_file(), "the failed notebook is kept for inspection"
    assert "RunsFailed" in (notebooks / "eurosat-ul.failed.ipynb").read_text()


def test_cli_lists_runs_and_rejects_unknown_names(tmp_path):
    listed = subprocess.run([sys.executable, "-m", "cap", "runs", "--matrix", "figure1_2", "--dataset", "cub", "--list",
                             "--records", str(tmp_path)], capture_output=True, text=True)
    assert listed.returncode == 0 and listed.stdout.startswith("missing") and "cub ul zero_shot seed 1" in listed.stdout
    bad = subprocess.run([sys.executable, "-m", "cap", "runs", "--matrix", "tabel1", "--list"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "unknown matrix 'tabel1'; valid choices:" in bad.stderr


def test_run_notebook_rejects_a_parameter_of_the_wrong_type(tmp_path, root):
    with pytest.raises(ParameterError, match="notebook parameter 'force' must be bool"):
        run_notebook(root / "notebooks/run.md", tmp_path / "x.ipynb", {"force": "yes"})
    with pytest.raises(ParameterError, match="unknown notebook parameter 'matrix'"):
        run_notebook(root / "notebooks/run.md", tmp_path / "x.ipynb", {"matrix": "table1"})


def test_a_stale_record_is_rerun_not_reused(tmp_path):
    from cap.experiments.runs import run as run_config

    (zero_shot,) = plan("figure1_2", "sim", datasets=["eurosat"], seeds=[1])
    path = fake_record(tmp_path, zero_shot, 99.0, version=1)
    assert run_config(zero_shot.config, tmp_path) == path
    record = json.loads(path.read_text())
    assert record["version"] == RECORD_VERSION and record["results"]["headline"] != 99.0
    assert execute(zero_shot, tmp_path).state == "done" and record_status(zero_shot.key, tmp_path).record == record
