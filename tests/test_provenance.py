"""Every record names the code that made it, and a record of other code is never current.

The library is copied into a temporary folder and edited there: a change to code that computes a
run's numbers (the margin) makes the runs stale and plans them again; a change to code that only
shows results (a page helper) plans nothing."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cap
from cap.config import as_dict
from cap.experiments import provenance
from cap.experiments.matrix import plan
from cap.experiments.records import read_current_record, record_status, write_record

PACKAGE = Path(cap.__file__).parent
SELECTION = ["--matrix", "table1", "--dataset", "eurosat", "--paradigm", "ul", "--method", "cap", "--seeds", "1", "2"]


def copy_package(tmp_path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(PACKAGE, root / "cap", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def list_runs(root: Path, records: Path) -> str:
    """`python -m cap runs --list` as a user runs it, with the package at ``root``."""
    done = subprocess.run([sys.executable, "-m", "cap", "runs", "--profile", "sim", "--records", str(records),
                           "--list", *SELECTION], capture_output=True, text=True, cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {path}"
    path.write_text(text.replace(old, new))


@pytest.fixture
def records(tmp_path):
    """Records of the two selected runs, written by this code."""
    folder = tmp_path / "records"
    for run in plan("table1", "sim", datasets=["eurosat"], paradigms=["ul"], methods=["cap"], seeds=[1, 2]):
        write_record(folder, "run", as_dict(run.config), {"status": "ok", "headline": 50.0})
    return folder


def test_a_change_to_the_numbers_code_plans_the_runs_again(tmp_path, records):
    root = copy_package(tmp_path)
    assert [line.split()[0] for line in list_runs(root, records).splitlines()] == ["done", "done"]
    # halve the margin, as a user editing the library might
    edit(root / "cap/core/margin.py", "margin = scale * imbalance", "margin = 0.5 * scale * imbalance")
    lines = list_runs(root, records).splitlines()
    assert [line.split()[0] for line in lines] == ["stale", "stale"]
    assert all(f"made by code {provenance.current_fingerprint()}" in line for line in lines)


def test_a_change_to_presentation_code_plans_nothing(tmp_path, records):
    root = copy_package(tmp_path)
    edit(root / "cap/experiments/report.py", 'NOT_RUN = "not run yet"', 'NOT_RUN = "not run"')
    edit(root / "cap/cli.py", "list the selected runs and their state", "list the selected runs and their states")
    assert [line.split()[0] for line in list_runs(root, records).splitlines()] == ["done", "done"]


def test_the_fingerprint_covers_number_code_and_not_presentation(tmp_path):
    root = copy_package(tmp_path)
    before = provenance.fingerprint(root / "cap")
    assert before == provenance.current_fingerprint()  # same bytes, same fingerprint, wherever they lie
    covered = {p.relative_to(root / "cap").as_posix() for p in provenance.fingerprinted_files(root / "cap")}
    assert {"core/margin.py", "methods/cap.py", "sim/generator.py", "sim/presets.yml", "data/registry.yml",
            "experiments/runs.py", "config.py"} <= covered
    assert not covered & {"experiments/report.py", "experiments/analysis.py", "experiments/claims.yml",
                          "experiments/runner.py", "cli.py", "adapt/adaptation.py"}
    (root / "cap/sim/extra_step.py").write_text("SHIFT = 1.0\n")  # a new module is covered unlisted
    assert provenance.fingerprint(root / "cap") != before


def test_every_record_names_its_commit_and_fingerprint(tmp_path):
    provenance.code_version.cache_clear()  # read now, as git is read below (a commit may have come since import)
    path = write_record(tmp_path, "run", {"dataset": "eurosat"}, {"status": "ok", "headline": 1.0})
    code = read_current_record(path)["code"]
    head = subprocess.run(["git", "-C", str(PACKAGE), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert code["fingerprint"] == provenance.fingerprint(PACKAGE)
    assert code["commit"] == (head.stdout.strip() if head.returncode == 0 else None)
    assert code["dirty"] in ((True, False) if head.returncode == 0 else (None,))


def test_a_failure_of_other_code_is_tried_again(tmp_path, monkeypatch):
    (run,) = plan("table1", "sim", datasets=["eurosat"], paradigms=["ul"], methods=["cap"], seeds=[1])
    write_record(tmp_path, "failed", as_dict(run.config), {"status": "failed", "error": "RuntimeError: boom"})
    assert record_status(run.key, tmp_path).state == "failed"
    monkeypatch.setattr(provenance, "current_fingerprint", lambda: "0" * 16)
    monkeypatch.setattr("cap.experiments.records.current_fingerprint", lambda: "0" * 16)
    status = record_status(run.key, tmp_path)
    assert status.state == "missing" and "failed with other code" in status.detail
