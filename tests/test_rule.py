"""The rule comes before the results: its version is pinned to what it decides with, and every
change of a verdict lands in the committed history with what changed."""

import copy
import json

import pandas as pd
import pytest

from cap.errors import CapError
from cap.experiments import claims, verdict_log

# Each version of the rule and the fingerprint of its settings and tests (claims.rule_fingerprint).
# A new threshold, tolerance, exclusion or test needs a new version in claims.yml and a line here.
RULE_VERSIONS = {2: "01f5da8531fe997a"}


def test_the_rule_version_names_its_thresholds():
    version = claims.rule()["version"]
    assert version in RULE_VERSIONS, f"rule version {version} is not pinned here: add its fingerprint"
    assert claims.rule_fingerprint() == RULE_VERSIONS[version], (
        "a threshold, tolerance, exclusion or test in claims.yml changed without a new rule version: bump "
        "rule.version, say what changed in rule.history and pin the new fingerprint in RULE_VERSIONS")
    assert [h["version"] for h in claims.rule()["history"]][-1] == version


def test_a_changed_tolerance_changes_the_fingerprint(monkeypatch):
    edited = copy.deepcopy(claims._file())
    next(c for c in edited["claims"] if c["id"] == "figure6")["test"]["tolerance"] = 4.0
    before = claims.rule_fingerprint()
    monkeypatch.setattr(claims, "_file", lambda: edited)
    assert claims.rule_fingerprint() != before  # so the pin above fails until the version is bumped


def test_the_rule_table_states_every_exclusion_with_its_reason():
    table = claims.rule_table().set_index("id")
    assert "m = 0 is no margin at all" in table.loc["figure10", "left out"]
    assert table.loc["figure6", "tolerance (points)"] == 3.0 and table.loc["figure6", "left out"] == "nothing"
    assert table.loc["appendix_time", "kind"] == "untestable" and "steps" in table.loc["appendix_time", "left out"]
    assert {"figure8", "appendix_time", "figure1_2"} <= set(table.index[table["kind"] == "untestable"])


def _table(verdicts: dict) -> pd.DataFrame:
    return pd.DataFrame([{"id": c, "sim_verdict": v, "sim_effect": e, "sim_low": e - 1, "sim_high": e + 1}
                         for c, (v, e) in verdicts.items()])


def test_snapshots_are_added_only_when_something_changed(tmp_path):
    path = tmp_path / "verdicts.json"
    first = verdict_log.snapshot(_table({"table1_grip": ("supported", 1.5), "figure6": ("inconclusive", 2.5)}))
    assert verdict_log.record_snapshot(path, first) and len(verdict_log.read_history(path)) == 1
    assert not verdict_log.record_snapshot(path, first | {"written": "2030-01-01T00:00:00+00:00"})  # same verdicts
    missing = verdict_log.snapshot(_table({"table1_grip": ("no runs", float("nan")), "figure6": ("supported", 1.0)}))
    assert not verdict_log.record_snapshot(path, missing)  # a build with runs missing records nothing
    flipped = verdict_log.snapshot(_table({"table1_grip": ("contradicted", -1.2), "figure6": ("inconclusive", 2.0)}))
    flipped |= {"simulator_fingerprint": "0" * 16, "code_fingerprint": "1" * 16, "written": "2030-01-02T00:00:00+00:00",
                "note": "the simulator's confusion halved"}
    assert verdict_log.record_snapshot(path, flipped)
    (flip,) = verdict_log.changelog(verdict_log.read_history(path)).to_dict("records")
    assert (flip["claim"], flip["old"], flip["new"], flip["old effect"], flip["new effect"]) == \
        ("table1_grip", "supported", "contradicted", 1.5, -1.2)
    assert flip["what changed"] == "simulator" and flip["when"] == "2030-01-02"
    assert flip["why"] == "the simulator's confusion halved"
    assert json.loads(path.read_text())[0]["verdicts"]["figure6"] == {"verdict": "inconclusive", "effect": 2.5,
                                                                     "low": 1.5, "high": 3.5}


def test_a_damaged_history_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "verdicts.json"
    path.write_text("{not json")
    with pytest.raises(CapError, match="restore it from version control"):
        verdict_log.read_history(path)
    path.write_text('{"verdicts": {}}')
    with pytest.raises(CapError, match="a JSON list of snapshots"):
        verdict_log.read_history(path)


def test_the_verdicts_command_records_nothing_while_runs_are_missing(tmp_path, capsys):
    from cap.cli import main

    history = tmp_path / "verdicts.json"
    assert main(["book", "verdicts", "--records", str(tmp_path / "records"), "--history", str(history)]) == 0
    out = capsys.readouterr().out
    assert "no runs" in out and "unchanged" in out and not history.exists()


def test_an_explanation_is_not_part_of_the_fingerprint(monkeypatch):
    edited = copy.deepcopy(claims._file())
    next(c for c in edited["claims"] if c["id"] == "table4")["test"]["reason"] = "reworded"
    before = claims.rule_fingerprint()
    monkeypatch.setattr(claims, "_file", lambda: edited)
    assert claims.rule_fingerprint() == before  # prose decides no verdict
