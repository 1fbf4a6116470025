"""Read results records into tables for the book's pages; pages never train.

:func:`collect` lists every planned run of a matrix under a profile with what its record holds
(or why there is none: missing, failed, stale); :func:`summarise` turns runs into cells with
mean ± std over seeds, every seed's value, the paper's number, its provenance and the difference.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from cap.data.registry import get_dataset
from cap.experiments.references import reference_number
from cap.experiments.matrix import command, load_matrix, plan
from cap.experiments.records import DEFAULT_RECORDS, record_status

METHOD_TITLES = {"zero_shot": "Zero-shot CLIP", "fpl": "FPL", "grip": "GRIP", "cpl": "CPL", "cap": "CAP"}
PARADIGM_TITLES = {"ssl": "SSL", "ul": "UL", "trzsl": "TRZSL"}
NOT_RUN = "not run yet"


def collect(matrix: str, profile: str, records_root: str | Path = DEFAULT_RECORDS, **filters) -> pd.DataFrame:
    """One row per planned run: its labels, state (done / missing / failed / stale), the headline
    value (top-1, or H in TRZSL) and the record itself (``None`` unless done)."""
    records_dir = Path(records_root) / profile
    rows = []
    for run in plan(matrix, profile, **filters):
        status = record_status(run.key, records_dir)
        record = status.record
        rows.append(run.labels | {"state": status.state, "detail": status.detail,
                                  "value": record["results"]["headline"] if record else np.nan, "record": record})
    columns = ["matrix", "dataset", "paradigm", "method", "variant", "sweep", "seed", "key", "state", "detail",
               "value", "record"]
    return pd.DataFrame(rows, columns=columns)


def mean_std(values) -> str:
    """``mean ± std`` (sample std over seeds) of the finite values, or "not run yet"."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return NOT_RUN
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def _seed_values(group: pd.DataFrame) -> str:
    if (group["state"] == "missing").all():
        return "—"
    parts = []
    for seed, value, state in zip(group["seed"], group["value"], group["state"]):
        parts.append(f"{seed}: {value:.2f}" if state == "done" else f"{seed}: {state}")
    return ", ".join(parts)


def summarise(runs: pd.DataFrame, by: list[str], paper: bool = True, reference_variant: str | None = None) -> pd.DataFrame:
    """Cells of a table: mean, std and ``ours`` (mean ± std), every seed's value, how many seeds have a
    result, and with ``paper`` the published number, its source and verified flag, and ours − paper.
    With ``reference_variant``, only that variant's cells are compared with a published number (the
    reference file holds full-method numbers, not ablations)."""
    rows = []
    for key, group in runs.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        done = group[group["state"] == "done"]
        row = dict(zip(by, key))
        row |= {"mean": done["value"].mean() if len(done) else np.nan,
                "std": done["value"].std(ddof=1) if len(done) > 1 else np.nan,
                "ours": mean_std(done["value"].tolist()),
                "seeds": _seed_values(group), "done": f"{len(done)}/{len(group)}"}
        if paper:
            comparable = {"method", "paradigm", "dataset"} <= set(row) and (
                reference_variant is None or row.get("variant") == reference_variant)
            ref = reference_number(row["method"], row["paradigm"], row["dataset"]) if comparable else None
            row |= {"paper": ref.value if ref else np.nan,
                    "verified": ref.verified if ref else None,
                    "source": (ref.source + (" (verified)" if ref.verified else " (unverified)")) if ref else "not transcribed",
                    "difference": row["mean"] - ref.value if ref and len(done) else np.nan}
        rows.append(row)
    return pd.DataFrame(rows)


def missing_commands(runs: pd.DataFrame, profile: str) -> list[str]:
    """The exact commands that would produce the runs without a current record, one per dataset and paradigm."""
    lacking = runs[runs["state"] != "done"]
    commands = []
    for (matrix, dataset, paradigm), group in lacking.groupby(["matrix", "dataset", "paradigm"], sort=False):
        methods = sorted(set(group["method"]))
        method = methods[0] if len(methods) == 1 else None
        commands.append(command(profile, matrix, dataset, paradigm, method, sorted(set(group["seed"]))))
    return commands


def state_counts(runs: pd.DataFrame) -> str:
    counts = runs["state"].value_counts()
    return ", ".join(f"{n} {state}" for state, n in counts.items()) if len(runs) else "no runs planned"


def titled(frame: pd.DataFrame) -> pd.DataFrame:
    """Display names for the label columns."""
    frame = frame.copy()
    if "method" in frame:
        frame["method"] = frame["method"].map(lambda m: METHOD_TITLES.get(m, m))
    if "paradigm" in frame:
        frame["paradigm"] = frame["paradigm"].map(lambda p: PARADIGM_TITLES.get(p, p))
    if "dataset" in frame:
        frame["dataset"] = frame["dataset"].map(lambda d: get_dataset(d).title)
    return frame


def variant_labels(matrix: str) -> dict[str, str]:
    return {v.name: v.label for v in load_matrix(matrix).variants}


def done_records(runs: pd.DataFrame) -> list[tuple[dict, dict]]:
    """(labels, record) of every run that has a current record."""
    return [(row._asdict(), row.record) for row in runs.itertuples(index=False) if row.state == "done"]


def _number(value, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def cell_table(cells: pd.DataFrame, labels: list[str], paper: bool = True) -> pd.DataFrame:
    """A display table: label columns, ours (mean ± std), every seed, and the paper's number with its
    source and ours − paper."""
    shown = titled(cells)[labels].copy() if len(cells) else pd.DataFrame(columns=labels)
    shown["ours (mean ± std)"] = cells["ours"].values
    shown["per seed"] = cells["seeds"].values
    if paper:
        shown["paper"] = [_number(v) for v in cells["paper"]]
        shown["paper's source"] = cells["source"].values
        shown["ours − paper"] = [_number(v, signed=True) for v in cells["difference"]]
    return shown.reset_index(drop=True)


def wide_html(cells: pd.DataFrame, rows: str = "method", columns: str = "dataset") -> str:
    """A compact table (e.g. methods × datasets) whose cells hold ours (mean ± std) and, below it,
    the paper's number with its verified flag and the difference; returned as HTML."""
    from html import escape

    if not len(cells):
        return "<p>No runs planned.</p>"
    shown = titled(cells)
    table = {}
    for (_, cell), (_, raw) in zip(shown.iterrows(), cells.iterrows()):
        text = f"<b>{escape(cell['ours'])}</b>"
        if "paper" in cells and not (isinstance(raw["paper"], float) and math.isnan(raw["paper"])):
            flag = "verified" if raw["verified"] else "unverified"
            text += f"<br><small>paper {raw['paper']:.2f} ({flag})"
            if not math.isnan(raw["difference"]):
                text += f", Δ {raw['difference']:+.2f}"
            text += "</small>"
        table.setdefault(cell[rows], {})[cell[columns]] = text
    frame = pd.DataFrame.from_dict(table, orient="index")
    frame.columns.name = rows  # the corner cell names the row labels, no extra header row
    return frame.to_html(escape=False, border=0, classes="table", na_rep="")


def details(summary: str, frame: pd.DataFrame) -> str:
    """HTML: ``frame`` folded under ``summary`` (the per-seed detail of a compact table)."""
    from html import escape

    return (f"<details><summary>{escape(summary)}</summary>"
            f"{frame.to_html(index=False, border=0, classes='table')}</details>")


def show(frame: pd.DataFrame):
    """A table for a page: no index column."""
    return frame.style.hide(axis="index")


def commands_markdown(runs: pd.DataFrame, profile: str, limit: int = 40) -> str:
    """Markdown listing the commands for every run without a result (or saying there are none)."""
    commands = missing_commands(runs, profile)
    if not commands:
        return "Every run of this matrix has a result."
    shown = commands[:limit]
    more = f"\n\n… and {len(commands) - limit} more (`python -m cap runs --profile {profile} --list` lists them)." \
        if len(commands) > limit else ""
    problems = []
    failed = runs[runs["state"] == "failed"]
    if len(failed):
        errors = sorted(set(failed["detail"]))
        problems.append(f"{len(failed)} runs **failed** (their `failed-<key>.json` records hold the tracebacks): "
                        + "; ".join(f"`{e}`" for e in errors[:3]) + (" …" if len(errors) > 3 else ""))
    stale = runs[runs["state"] == "stale"]
    if len(stale):
        problems.append(f"{len(stale)} records are **stale** ({stale['detail'].iloc[0]}): they are not shown "
                        "as results and the commands below rerun them.")
    return "\n\n".join(problems + [
        "Runs without a result are shown as *not run yet* (or failed / stale). These commands run them (each "
        "skips what is already done):\n\n```bash\n" + "\n".join(shown) + "\n```" + more])
