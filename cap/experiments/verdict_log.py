"""The committed record of the verdicts: a snapshot per change, and the changelog of every flip.

``python -m cap verdicts --records ... --snapshot FILE`` judges every claim from the records and,
when a verdict, the rule's version or the code differs from the file's last snapshot, appends a new
one (claim, verdict, effect, interval, rule version and fingerprint, code fingerprint and commit,
simulator fingerprint). The file is committed with the code, so every change of a verdict is seen
in review; the claims page shows the changelog: each flip, old → new, and what changed between
the two snapshots (code, simulator, rule).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from cap.atomic import atomic_write
from cap.errors import CapError
from cap.experiments import claims as claim_rule
from cap.experiments.provenance import PACKAGE, code_version, fingerprint


def simulator_fingerprint() -> str:
    """The fingerprint of the simulator's own code (``cap/sim``), to tell its changes apart."""
    return fingerprint(PACKAGE / "sim")


def _number(value):
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else round(float(value), 3)


def snapshot(table: pd.DataFrame, profile: str = "sim") -> dict:
    """The verdicts of a :func:`cap.experiments.claims.claims_table` with what made them."""
    code = code_version()
    rule = claim_rule.rule()
    return {
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rule_version": rule["version"], "rule_fingerprint": claim_rule.rule_fingerprint(),
        "code_fingerprint": code["fingerprint"], "commit": code["commit"], "dirty": code["dirty"],
        "simulator_fingerprint": simulator_fingerprint(), "profile": profile,
        "verdicts": {row["id"]: {"verdict": row[f"{profile}_verdict"], "effect": _number(row.get(f"{profile}_effect")),
                                 "low": _number(row.get(f"{profile}_low")), "high": _number(row.get(f"{profile}_high"))}
                     for row in table.to_dict("records")},
    }


def read_history(path: str | Path) -> list[dict]:
    """The snapshots in ``path``, oldest first (none when the file does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        history = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CapError(f"{path} is not a verdict history ({err}): restore it from version control") from err
    if not isinstance(history, list) or not all(isinstance(s, dict) and "verdicts" in s for s in history):
        raise CapError(f"{path} is not a verdict history (a JSON list of snapshots): restore it from version control")
    return history


def _same(a: dict, b: dict) -> bool:
    keys = ("rule_version", "rule_fingerprint", "code_fingerprint", "simulator_fingerprint")
    return all(a.get(k) == b.get(k) for k in keys) and \
        {c: v["verdict"] for c, v in a["verdicts"].items()} == {c: v["verdict"] for c, v in b["verdicts"].items()}


def record_snapshot(path: str | Path, new: dict) -> bool:
    """Append ``new`` to the history in ``path`` unless its verdicts, rule and code are the last
    snapshot's; return whether it was appended. A snapshot with runs missing is never recorded."""
    history = read_history(path)
    if any(v["verdict"] in ("no runs", claim_rule.TOO_FEW) for v in new["verdicts"].values()):
        return False
    if history and _same(history[-1], new):
        return False
    text = json.dumps(history + [new], indent=1, sort_keys=True) + "\n"
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))
    return True


def changelog(history: list[dict]) -> pd.DataFrame:
    """Every verdict that changed between consecutive snapshots: when, the claim, old → new, the
    effects, what changed between them (code, simulator, rule) and why, in words: the newer
    snapshot's ``note``, written into the committed history with the change that caused it."""
    rows = []
    for old, new in zip(history, history[1:]):
        changed = [name for name, key in (("rule", "rule_fingerprint"), ("simulator", "simulator_fingerprint"),
                                          ("code", "code_fingerprint")) if old.get(key) != new.get(key)]
        if "simulator" in changed and "code" in changed:
            changed.remove("code")  # the simulator is part of the code: name the narrower change
        for claim, verdict in new["verdicts"].items():
            before = old["verdicts"].get(claim, {"verdict": "absent", "effect": None})
            if before["verdict"] != verdict["verdict"]:
                rows.append({"when": new["written"][:10], "claim": claim, "old": before["verdict"],
                             "new": verdict["verdict"], "old effect": before.get("effect"),
                             "new effect": verdict.get("effect"), "what changed": ", ".join(changed) or "nothing",
                             "why": new.get("note", "—"),
                             "rule": f"{old.get('rule_version')} → {new.get('rule_version')}",
                             "commit": (new.get("commit") or "")[:10]})
    return pd.DataFrame(rows, columns=["when", "claim", "old", "new", "old effect", "new effect", "what changed", "why",
                                       "rule", "commit"])
