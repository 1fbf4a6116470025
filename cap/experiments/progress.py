"""How far a selection of runs has got, across every runner and executor: ``cap runs --status``.

One row per matrix × dataset × paradigm with the number of runs done, running, queued, failed and
still to run, and a progress bar; below it, each failed run with its error and the files to read
(its failure record, and its job's log when it ran as a submitit job).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from cap.experiments.executors import live_statuses, read_marker

STATES = ("done", "running", "queued", "failed", "to run")
BAR_WIDTH = 20


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """``█████░░░░░  50%``: ``done`` of ``total`` as a bar of ``width`` cells."""
    filled = round(width * done / total) if total else width
    percent = round(100 * done / total) if total else 100
    return "█" * filled + "░" * (width - filled) + f" {percent:3d}%"


def _shown(state: str) -> str:
    return state if state in STATES else "to run"  # missing and stale runs are still to run


def progress_rows(runs, records_dir: str | Path) -> tuple[list[dict], list[dict]]:
    """The table's rows (the last one the total) and the failed runs with their error and logs."""
    statuses = live_statuses([run.key for run in runs], records_dir)
    groups: dict[tuple, Counter] = {}
    failures = []
    for run in runs:
        c, status = run.config, statuses[run.key]
        groups.setdefault((run.matrix, c.dataset, c.paradigm), Counter())[_shown(status.state)] += 1
        if status.state == "failed":
            marker = read_marker(run.key, records_dir) or {}
            failures.append({"run": f"{run.matrix}: {c.dataset} {c.paradigm} {c.method} seed {c.seed}",
                             "key": run.key, "error": status.detail,
                             "record": str(Path(records_dir) / f"failed-{run.key}.json"),
                             "log": marker.get("stderr")})
    rows = [{"matrix": m, "dataset": d, "paradigm": p, **{s: n[s] for s in STATES}} for (m, d, p), n in groups.items()]
    total = Counter()
    for row in rows:
        total.update({s: row[s] for s in STATES})
    rows.append({"matrix": "all", "dataset": "", "paradigm": "", **{s: total[s] for s in STATES}})
    for row in rows:
        row["progress"] = bar(row["done"], sum(row[s] for s in STATES))
    return rows, failures


def format_progress(runs, records_dir: str | Path) -> tuple[str, dict]:
    """The progress table and the failed runs, as text; and the total row."""
    import pandas as pd

    rows, failures = progress_rows(runs, records_dir)
    lines = [pd.DataFrame(rows).to_string(index=False)]
    for failure in failures:
        lines.append(f"failed: {failure['run']} ({failure['key']}): {failure['error']}\n"
                     f"    record {failure['record']}" + (f"\n    job log {failure['log']}" if failure["log"] else ""))
    return "\n".join(lines), rows[-1]


def watch(runs, records_dir: str | Path, every_s: float = 10.0, show=print) -> dict:
    """Show the progress every ``every_s`` seconds until no run is running or queued; return the
    last total row."""
    while True:
        text, total = format_progress(runs, records_dir)
        show(time.strftime("%H:%M:%S\n") + text)
        if not total["running"] and not total["queued"]:
            return total
        time.sleep(every_s)
