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
        marker = read_marker(run.key, records_dir) if status.state in ("failed", "missing", "stale") else None
        if status.state == "failed" or marker:  # a job that ended without a record failed too
            failed = status.state == "failed"
            failures.append({"run": f"{run.matrix}: {c.dataset} {c.paradigm} {c.method} seed {c.seed}",
                             "key": run.key, "error": status.detail if failed else "its job ended without a record",
                             "record": str(Path(records_dir) / f"failed-{run.key}.json") if failed else None,
                             "log": (marker or {}).get("stderr")})
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
        files = [f"    {name} {failure[key]}" for name, key in (("record", "record"), ("job log", "log")) if failure[key]]
        lines.append("\n".join([f"failed: {failure['run']} ({failure['key']}): {failure['error']}", *files]))
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


# -- GPU hours ---------------------------------------------------------------------------------

# The schedules the appendix's times were measured with: CAP 50 epochs × 50 steps; GRIP and CPL
# 10 rounds of 50 epochs (EuroSAT). FPL is one such round, so it is taken as GRIP's time per round.
PAPER_CAP_STEPS = 50 * 50
PAPER_ROUNDS, PAPER_BASELINE_EPOCHS = 10, 50


def appendix_minutes(run) -> float:
    """The appendix's training time (minutes) for a run like ``run``, scaled by its schedule: CAP by
    its steps, GRIP and CPL by rounds × epochs, FPL as one GRIP round; zero-shot trains nothing.
    The appendix times are EuroSAT's; other datasets are taken to cost the same per step."""
    from cap.experiments.references import reference_training_minutes

    minutes = reference_training_minutes()["minutes"]["eurosat"]
    c = run.config
    baseline = c.baseline_epochs / PAPER_BASELINE_EPOCHS
    return {"zero_shot": 0.0,
            "cap": minutes["cap"] * c.epochs * c.iters_per_epoch / PAPER_CAP_STEPS,
            "fpl": minutes["grip"] / PAPER_ROUNDS * baseline,
            "grip": minutes["grip"] * c.rounds / PAPER_ROUNDS * baseline,
            "cpl": minutes["cpl"] * c.rounds / PAPER_ROUNDS * baseline}[c.method]


def gpu_hours(name: str, runs, records_dir: str | Path) -> dict:
    """One row for the runs of matrix ``name``: how many, how many done, the GPU hours the appendix's
    times predict and, once records exist, the hours measured: the records' ``wall_seconds``, plus,
    for each run still to do, the mean measured time of done runs of its method and dataset (the
    appendix's time where there is none)."""
    from cap.experiments.records import record_status

    seconds, measured = {}, {}
    for run in runs:
        status = record_status(run.key, records_dir)
        if status.state == "done" and "wall_seconds" in status.record["results"]:
            seconds[run.key] = status.record["results"]["wall_seconds"]
            measured.setdefault((run.config.method, run.config.dataset), []).append(seconds[run.key])
    appendix = {run.key: appendix_minutes(run) * 60 for run in runs}
    estimate = 0.0
    for run in runs:
        same = measured.get((run.config.method, run.config.dataset))
        estimate += seconds.get(run.key, sum(same) / len(same) if same else appendix[run.key])
    return {"matrix": name, "runs": len(runs), "done": len(seconds),
            "appendix GPU hours": round(sum(appendix.values()) / 3600, 1),
            "measured GPU hours": round(estimate / 3600, 1) if seconds else None}
