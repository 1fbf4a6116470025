"""Run experiment matrices: select runs, skip finished ones, execute the run notebook per group.

``run_matrices`` is what ``make runs`` calls. The selected runs (deduplicated across matrices by
record key) are grouped by dataset and paradigm; each group with work left is one papermill
execution of ``notebooks/run.md``, which leaves an executed notebook beside the records and one
record per run. A run whose record exists is skipped unless forced; a failed run leaves a
``failed-<key>.json`` record with its traceback and the others go on.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import sys
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from cap.data.registry import get_dataset
from cap.errors import CapError
from cap.experiments.matrix import PlannedRun, get_profile, load_matrix, matrix_names, plan
from cap.experiments.records import DEFAULT_RECORDS, RunStatus, record_status

log = logging.getLogger(__name__)

# The repository's run notebook; an installed package without it runs each group in-process.
RUN_NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "run.md"
DEFAULT_NOTEBOOKS = Path("book/_generated/runs")
POLL_SECONDS = 5.0


class RunsFailed(CapError):
    """Some runs of a group failed; their failure records hold the tracebacks."""


def select(profile: str, matrices=None, datasets=None, paradigms=None, methods=None, seeds=None) -> list[PlannedRun]:
    """The runs of ``matrices`` (default: all) under ``profile``, once per record key."""
    runs, seen = [], set()
    for name in matrices or matrix_names():
        for run in plan(name, profile, datasets, paradigms, methods, seeds):
            if run.key not in seen:
                seen.add(run.key)
                runs.append(run)
    return runs


def todo(runs: list[PlannedRun], records_dir: str | Path, force: bool = False) -> list[PlannedRun]:
    return [r for r in runs if force or record_status(r.key, records_dir).state != "done"]


def execute(run: PlannedRun, records_dir: str | Path, force: bool = False) -> RunStatus:
    """One run, in this process; a failure is recorded (by :func:`cap.experiments.runs.run`) and returned."""
    from cap.experiments.runs import run as run_config

    try:
        run_config(run.config, records_dir, force=force)
    except Exception as err:  # recorded as failed-<key>.json with its traceback; the others go on
        log.error("run %s (%s) failed: %s: %s", run.key, run.labels, type(err).__name__, err)
        return RunStatus("failed", f"{type(err).__name__}: {err}")
    return RunStatus("done")


def _group_name(dataset: str, paradigm: str) -> str:
    return f"{dataset}-{paradigm}"


def _notebook_command(profile, matrices, dataset, paradigm, methods, seeds, force, records_dir, output) -> list[str]:
    params = {"profile": profile, "matrices": ",".join(matrices or []), "dataset": dataset, "paradigm": paradigm,
              "methods": ",".join(methods or []), "seeds": ",".join(str(s) for s in seeds or []),
              "records_dir": str(records_dir)}
    command = [sys.executable, "-m", "cap", "notebook", "run", str(RUN_NOTEBOOK), str(output)]
    for name, value in params.items():  # JSON quoting: the command line reads YAML, "1" must stay a string
        command += ["-p", name, json.dumps(value)]
    return command + ["-p", "force", "true" if force else "false"]


def run_matrices(profile: str = "sim", matrices=None, datasets=None, paradigms=None, methods=None, seeds=None,
                 force: bool = False, records_dir: str | Path | None = None, notebooks_dir: str | Path | None = None,
                 workers: int | None = None) -> dict[str, int]:
    """Run every selected run that has no current record; return counts of done / failed runs."""
    from tqdm.auto import tqdm

    prof = get_profile(profile)
    records_dir = Path(records_dir or DEFAULT_RECORDS / profile)
    notebooks_dir = Path(notebooks_dir or DEFAULT_NOTEBOOKS / profile)
    runs = select(profile, matrices, datasets, paradigms, methods, seeds)
    pending = todo(runs, records_dir, force)
    groups: dict[tuple[str, str], list[PlannedRun]] = defaultdict(list)
    for run in pending:
        groups[(run.config.dataset, run.config.paradigm)].append(run)
    in_process = not RUN_NOTEBOOK.is_file()  # an installed package has no notebooks: runs go in this process
    workers = 1 if in_process else max(1, min(workers or prof.workers, len(groups) or 1))
    env = dict(os.environ)
    if workers > 1:  # several torch processes on a few cores: one thread each, or they fight
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log.info("%s profile: %d runs selected, %d to run in %d notebooks, %d at a time",
             profile, len(runs), len(pending), len(groups), workers)

    def launch(group):
        dataset, paradigm = group
        if in_process:
            failed = [r for r in groups[group] if execute(r, records_dir, force).state == "failed"]
            return group, int(bool(failed)), [f"{len(failed)} runs failed" if failed else ""]
        output = notebooks_dir / f"{_group_name(dataset, paradigm)}.ipynb"
        command = _notebook_command(profile, matrices, dataset, paradigm, methods, seeds, force, records_dir, output)
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        return group, done.returncode, (done.stderr or "").strip().splitlines()[-1:] or [""]

    # Longest groups first, so the last notebook to finish is a short one.
    order = sorted(groups, key=lambda g: -sum(_cost(r) for r in groups[g]))
    notebook_errors = []
    finished = len(runs) - len(pending)
    since = time.time()  # records written by this invocation (stale and forced runs had older ones)
    with tqdm(total=len(runs), initial=finished, desc=f"runs ({profile})", unit="run") as bar, \
            ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(launch, g) for g in order}
        while futures:  # the bar follows the records as they appear, not just whole notebooks
            done, futures = wait(futures, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                group, code, last_line = future.result()
                if code != 0:
                    notebook_errors.append(f"{_group_name(*group)}: {last_line[0]}")
            now = finished + sum(_written(r.key, records_dir, since) for r in pending)
            bar.update(now - bar.n)
    states = defaultdict(int)
    for run in runs:
        states[record_status(run.key, records_dir).state] += 1
    for line in notebook_errors:
        log.error("run notebook %s", line)
    return dict(states)


def _written(key: str, records_dir: Path, since: float) -> bool:
    """Whether a pending run has written its record (or failure record) since ``since``: a cheap
    check for the progress bar."""
    paths = [records_dir / f"{kind}-{key}.json" for kind in ("run", "failed")]
    return any(p.is_file() and p.stat().st_mtime >= since for p in paths)


def _cost(run: PlannedRun) -> float:
    """Rough relative cost of a run, to start the long groups first."""
    c = run.config
    classes = get_dataset(c.dataset).n_classes
    steps = {"zero_shot": 0, "fpl": c.baseline_epochs, "grip": c.baseline_epochs * c.rounds,
             "cpl": c.baseline_epochs * c.rounds}.get(c.method, c.epochs * c.iters_per_epoch * c.batch_size / 100)
    return classes * (1 + steps)


def describe(run: PlannedRun) -> str:
    """E.g. ``dtd ul cap no_ca seed 2`` or ``dtd ul cap k=8 seed 1``."""
    parts = [run.config.dataset, run.config.paradigm, run.config.method]
    if run.variant != "default":
        parts.append(run.variant)
    if run.sweep_value is not None:
        parts.append(f"{load_matrix(run.matrix).sweep_field}={run.sweep_value}")
    return " ".join(parts) + f" seed {run.config.seed}"

