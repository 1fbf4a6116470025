"""Run experiment matrices: select runs, skip finished ones, execute the run notebook.

``run_matrices`` is what ``make runs`` calls. The selected runs (deduplicated across matrices by
record key) run on one of three executors (:mod:`cap.experiments.executors`):

* ``inprocess`` (the default): each dataset × paradigm with work left is one papermill execution
  of ``notebooks/run.md`` on this machine, a few at a time;
* ``local``: one submitit job per run on this machine's GPU slots, the next run starting as soon
  as a slot frees;
* ``slurm``: one submitit job per run on a Slurm cluster (a job array), requeued on preemption.

Every way leaves executed notebooks beside the records and one record per run. A run whose record
exists is skipped unless forced; a run that another runner is executing (its per-run lock is held)
or whose job is queued is skipped too, so concurrent runners split a selection. A failed run
leaves a ``failed-<key>.json`` record with its traceback and the others go on. Every run uses one
thread per process (torch, BLAS, OpenMP) whatever the executor and the worker count, so its numbers
do not depend on them; a directory where a run's record or lock file goes stops the runner before
anything trains.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cap.data.registry import get_dataset
from cap.errors import CapError, ParameterError
from cap.experiments.executors import (RUN_NOTEBOOK, RUN_THREADS, RunJob, SubmitLock, die_with_parent,
                                       live_statuses, make_executor, remove_stale_marker_temporaries, slurm_queue,
                                       write_marker)
from cap.experiments.locks import MOVE_IT_AWAY, RunLock
from cap.experiments.matrix import PlannedRun, get_profile, load_matrix, matrix_names, plan
from cap.experiments.records import DEFAULT_RECORDS, RunStatus, check_run_paths, record_status, run_path_problem

log = logging.getLogger(__name__)

DEFAULT_NOTEBOOKS = Path("book/_generated/runs")
POLL_SECONDS = 2.0
MAX_RESUBMITS = 2  # a job that ended without a record (cancelled, node failure) is submitted again
# Fields that choose runs; overrides change how the selected runs train, not which runs they are.
SELECTION_FIELDS = ("dataset", "paradigm", "method", "seed")


class RunsFailed(CapError):
    """Some runs of a group failed; their failure records hold the tracebacks."""


def select(profile: str, matrices=None, datasets=None, paradigms=None, methods=None, seeds=None,
           overrides: dict | None = None, keys=None) -> list[PlannedRun]:
    """The runs of ``matrices`` (default: all) under ``profile``, once per record key; ``overrides``
    (RunConfig fields, e.g. ``{"epochs": 2}``) change every selected run (and so its key); ``keys``
    keeps only those record keys."""
    chosen = sorted(set(overrides or {}) & set(SELECTION_FIELDS))
    if chosen:
        raise ParameterError(f"overrides cannot change {chosen}: select runs with --dataset, --paradigm, "
                             "--method and --seeds instead")
    runs, seen = [], set()
    for name in matrices or matrix_names():
        for run in plan(name, profile, datasets, paradigms, methods, seeds, overrides):
            if run.key not in seen and (keys is None or run.key in keys):
                seen.add(run.key)
                runs.append(run)
    return runs


def todo(runs: list[PlannedRun], records_dir: str | Path, force: bool = False) -> list[PlannedRun]:
    """The runs without a current record (all of them if forced)."""
    return [r for r in runs if force or record_status(r.key, records_dir).state != "done"]


def not_busy(runs: list[PlannedRun], records_dir: str | Path, force: bool = False) -> list[PlannedRun]:
    """The runs of :func:`todo` less those another runner is executing (their lock is held) or has
    queued as a job: what a runner starts or submits."""
    states = live_statuses([r.key for r in runs], records_dir)
    busy = {"running", "queued"} if force else {"done", "running", "queued"}
    return [r for r in runs if states[r.key].state not in busy]


@contextmanager
def single_threaded():
    """torch, and the BLAS and OpenMP pools of this process, at :data:`RUN_THREADS` thread(s)
    inside; as they were after."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(RUN_THREADS)
    try:
        with threadpool_limits(RUN_THREADS):
            yield
    finally:
        torch.set_num_threads(before)


def execute(run: PlannedRun, records_dir: str | Path, force: bool = False) -> RunStatus:
    """One run, in this process, under its lock, on one thread; a run another process holds is
    left to it (state ``running``); a failure is recorded (by :func:`cap.experiments.runs.run`)
    and returned, as is a directory where one of the run's files goes (before it trains)."""
    from cap.experiments.runs import run as run_config

    blocked = run_path_problem(run.key, records_dir)
    if blocked:  # it would train, then fail to write its record
        log.error("run %s (%s) not started: %s: %s", run.key, run.labels, blocked, MOVE_IT_AWAY)
        return RunStatus("failed", f"{blocked}: {MOVE_IT_AWAY}")
    with RunLock(run.key, records_dir) as lock:
        if not lock.held:
            return RunStatus("running", "running in another process")
        if not force and record_status(run.key, records_dir).state == "done":
            return RunStatus("done", "finished by another process")
        resumed = not force and _has_checkpoint(run, records_dir)
        try:
            with single_threaded():  # identical numbers whatever the worker count or executor
                run_config(run.config, records_dir, force=force)
        except Exception as err:  # recorded as failed-<key>.json with its traceback; the others go on
            log.error("run %s (%s) failed: %s: %s", run.key, run.labels, type(err).__name__, err)
            return RunStatus("failed", f"{type(err).__name__}: {err}")
    return RunStatus("done", "resumed from its checkpoint" if resumed else "")


def mark_out_of_date(page: Path) -> None:
    """Date an existing executed notebook to the epoch before it is executed again outside make
    (`make runs` re-executes a group's page): a render killed midway writes nothing (the notebook
    is written atomically), and the old page it leaves is then out of date for make, which renders
    it again next time (``make book``). A render that succeeds replaces it."""
    try:
        os.utime(page, (0, 0))
    except FileNotFoundError:
        pass


def _has_checkpoint(run: PlannedRun, records_dir: str | Path) -> bool:
    checkpoints = Path(records_dir) / "checkpoints" / run.key
    return checkpoints.is_dir() and any(checkpoints.iterdir())


def _group_name(dataset: str, paradigm: str) -> str:
    return f"{dataset}-{paradigm}"


@dataclass(frozen=True)
class Selection:
    """What ``make runs`` selected: the arguments of :func:`select`."""

    profile: str = "sim"
    matrices: tuple | None = None
    datasets: tuple | None = None
    paradigms: tuple | None = None
    methods: tuple | None = None
    seeds: tuple | None = None
    overrides: dict = field(default_factory=dict)

    def runs(self) -> list[PlannedRun]:
        return select(self.profile, self.matrices, self.datasets, self.paradigms, self.methods, self.seeds,
                      self.overrides or None)

    def notebook_parameters(self, records_dir, dataset: str, paradigm: str, keys=(), force=False) -> dict:
        """The parameters of ``notebooks/run.md`` that run this selection's ``dataset`` × ``paradigm``
        (only ``keys`` if given)."""
        return {"profile": self.profile, "matrices": ",".join(self.matrices or []), "dataset": dataset,
                "paradigm": paradigm, "methods": ",".join(self.methods or []),
                "seeds": ",".join(str(s) for s in self.seeds or []), "records_dir": str(records_dir),
                "overrides": json.dumps(self.overrides) if self.overrides else "", "keys": ",".join(keys),
                "force": force}


def _notebook_command(parameters: dict, output: Path) -> list[str]:
    command = [sys.executable, "-m", "cap", "notebook", "run", str(RUN_NOTEBOOK), str(output)]
    for name, value in parameters.items():  # JSON quoting: the command line reads YAML, "1" must stay a string
        command += ["-p", name, json.dumps(value)]
    return command


def run_matrices(profile: str = "sim", matrices=None, datasets=None, paradigms=None, methods=None, seeds=None,
                 force: bool = False, records_dir: str | Path | None = None, notebooks_dir: str | Path | None = None,
                 workers: int | None = None, executor: str = "inprocess", gpus: list[int] | None = None,
                 slurm: dict | None = None, overrides: dict | None = None, detach: bool = False) -> dict[str, int]:
    """Run every selected run that has no current record; return counts of the runs' states (done,
    failed, running or queued elsewhere, missing). ``executor``: ``inprocess``, ``local`` (on
    ``gpus``) or ``slurm`` (with ``slurm`` options, see :func:`cap.experiments.executors.slurm_options`);
    ``detach``: return once everything is submitted (Slurm) instead of following the jobs."""
    tuple_or_none = lambda value: None if value is None else tuple(value)  # noqa: E731
    selection = Selection(profile, tuple_or_none(matrices), tuple_or_none(datasets), tuple_or_none(paradigms),
                          tuple_or_none(methods), tuple_or_none(seeds), dict(overrides or {}))
    records_dir = Path(records_dir or DEFAULT_RECORDS / profile)
    notebooks_dir = Path(notebooks_dir or DEFAULT_NOTEBOOKS / profile)
    runs = selection.runs()
    pending = not_busy(runs, records_dir, force)
    check_run_paths([run.key for run in pending], records_dir)  # before anything trains
    log.info("%s profile: %d runs selected, %d to run (%s executor)", profile, len(runs), len(pending), executor)
    if executor == "inprocess":
        _run_here(selection, runs, pending, records_dir, notebooks_dir, force, workers)
    else:
        target = make_executor(executor, notebooks_dir / "jobs", gpus, slurm)
        try:
            _submit_and_follow(target, selection, runs, pending, records_dir, notebooks_dir, force, detach)
        except KeyboardInterrupt:
            if target.name != "slurm":
                raise  # local jobs end with this runner
            log.warning("stopped following the Slurm jobs; they stay queued: `python -m cap runs --watch ...` "
                        "follows them, and `make runs` again submits whatever ended without a record")
    states = live_statuses([run.key for run in runs], records_dir)
    return dict(Counter(status.state for status in states.values()))


def _run_here(selection: Selection, runs, pending, records_dir: Path, notebooks_dir: Path, force: bool,
              workers: int | None) -> None:
    """One notebook per dataset × paradigm with work left, ``workers`` at a time, on this machine."""
    from tqdm.auto import tqdm

    groups: dict[tuple[str, str], list[PlannedRun]] = defaultdict(list)
    for run in pending:
        groups[(run.config.dataset, run.config.paradigm)].append(run)
    in_process = not RUN_NOTEBOOK.is_file()  # an installed package has no notebooks: runs go in this process
    workers = 1 if in_process else max(1, min(workers or get_profile(selection.profile).workers, len(groups) or 1))
    # One thread per process even with one worker: identical numbers whatever the worker count.
    env = dict(os.environ) | {name: str(RUN_THREADS) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}

    def launch(group):
        if in_process:
            statuses = [execute(run, records_dir, force) for run in groups[group]]
            failed = [status for status in statuses if status.state == "failed"]
            return group, int(bool(failed)), [f"{len(failed)} runs failed" if failed else ""]
        output = notebooks_dir / f"{_group_name(*group)}.ipynb"
        mark_out_of_date(output)
        parameters = selection.notebook_parameters(records_dir, *group, force=force)
        # The notebook (and so its kernel) ends with this runner, however the runner ends.
        done = subprocess.run(_notebook_command(parameters, output), env=env, capture_output=True, text=True,
                              preexec_fn=die_with_parent)
        return group, done.returncode, (done.stderr or "").strip().splitlines()[-1:] or [""]

    # Longest groups first, so the last notebook to finish is a short one.
    order = sorted(groups, key=lambda g: -sum(_cost(r) for r in groups[g]))
    since = time.time()  # records written by this invocation (stale and forced runs had older ones)
    finished = len(runs) - len(pending)
    with tqdm(total=len(runs), initial=finished, desc=f"runs ({selection.profile})", unit="run") as bar, \
            ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(launch, g) for g in order}
        while futures:  # the bar follows the records as they appear, not just whole notebooks
            done, futures = wait(futures, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                group, code, last_line = future.result()
                if code != 0:
                    log.error("run notebook %s: %s", _group_name(*group), last_line[0])
            bar.update(finished + sum(_written(r.key, records_dir, since) for r in pending) - bar.n)


@dataclass
class _Submitted:
    run: PlannedRun
    job: object
    slot: int | None
    since: float


def _job_for(run: PlannedRun, selection: Selection, records_dir: Path, notebooks_dir: Path, force: bool,
             threads: int | None) -> RunJob:
    c = run.config
    parameters = selection.notebook_parameters(records_dir.resolve(), c.dataset, c.paradigm, keys=[run.key])
    # Beside the job logs, not among the book's run pages (one notebook per dataset and paradigm).
    output = notebooks_dir.resolve() / "jobs" / f"{_group_name(c.dataset, c.paradigm)}-{run.key}.ipynb"
    return RunJob(run.key, parameters, str(output), str(records_dir.resolve()), fresh=force, threads=threads)


def _submit(target, batch: list[tuple[PlannedRun, bool]], slots, make_job, records_dir: Path) -> dict:
    """Submit ``batch`` (run, forced) less what another runner has queued or is running meanwhile,
    and leave a job marker for each run."""
    with SubmitLock(records_dir):
        remove_stale_marker_temporaries(records_dir)  # what killed marker writers left
        forced = {run.key for run, force in batch if force}
        batch = [r for r in not_busy([run for run, _ in batch], records_dir, True)
                 if r.key in forced or record_status(r.key, records_dir).state != "done"]
        if not batch:
            return {}
        slots = list(slots)[:len(batch)] if slots is not None else [None] * len(batch)
        jobs = target.submit([make_job(r, r.key in forced) for r in batch], slots)
        submitted = {}
        for run, job, slot in zip(batch, jobs, slots):
            write_marker(run.key, records_dir, target.marker(job, slot) | {
                "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr), "submitted": time.time()})
            submitted[run.key] = _Submitted(run, job, slot, time.time())
    log.info("submitted %d runs as %s jobs", len(submitted), target.name)
    return submitted


def _outcome(key: str, records_dir: Path, sub: _Submitted) -> str:
    """What a finished job left: done, failed (its run wrote a failure record), running (another
    process holds the run) or lost (cancelled, killed, or it failed before its run could say why:
    its log has the error). A lost run is submitted again, a failed one is not."""
    status = live_statuses([key], records_dir)[key]
    if status.state in ("done", "running", "queued"):
        return status.state
    failed = records_dir / f"failed-{key}.json"
    return "failed" if failed.is_file() and failed.stat().st_mtime >= sub.since - 1 else "lost"


def _submit_and_follow(target, selection: Selection, runs, pending, records_dir: Path, notebooks_dir: Path,
                       force: bool, detach: bool) -> None:
    """Submit the pending runs (longest first; on local slots, as slots free) and follow them until
    each has a result, submitting again a job that ended without one."""
    from tqdm.auto import tqdm

    make_job = lambda run, fresh: _job_for(run, selection, records_dir, notebooks_dir, fresh, RUN_THREADS)  # noqa: E731
    waiting = [(run, force) for run in sorted(pending, key=lambda r: -_cost(r))]
    active: dict[str, _Submitted] = {}
    resubmits: Counter = Counter()
    with tqdm(total=len(runs), initial=len(runs) - len(pending), desc=f"runs ({target.name})", unit="run") as bar:
        while waiting or active:
            queue = slurm_queue() if target.name == "slurm" and active else None
            for key in [k for k, s in active.items() if _finished(target, s.job, queue)]:
                sub = active.pop(key)
                outcome = _outcome(key, records_dir, sub)
                if outcome == "lost" and resubmits[key] < MAX_RESUBMITS:
                    resubmits[key] += 1
                    log.warning("job %s of run %s ended without a record: submitting it again", sub.job.job_id, key)
                    waiting.insert(0, (sub.run, False))  # resumes from its checkpoint
                else:
                    bar.update(1)
            free = None if target.slots is None else \
                [s for s in target.slots if s not in {a.slot for a in active.values()}]
            batch = waiting if free is None else waiting[:len(free)]
            if batch:
                waiting = waiting[len(batch):]
                active |= _submit(target, batch, free, make_job, records_dir)
            if detach and not waiting:
                return
            time.sleep(POLL_SECONDS if active else 0)


def _finished(target, job, queue) -> bool:
    return target.finished(job, queue) if target.name == "slurm" else target.finished(job)


def _written(key: str, records_dir: Path, since: float) -> bool:
    """Whether a pending run has written its record (or failure record) since ``since``: a cheap
    check for the progress bar."""
    paths = [records_dir / f"{kind}-{key}.json" for kind in ("run", "failed")]
    return any(p.is_file() and p.stat().st_mtime >= since for p in paths)


def _cost(run: PlannedRun) -> float:
    """Rough relative cost of a run, to start the long groups first."""
    c = run.config
    classes = c.sim_classes or get_dataset(c.dataset).n_classes
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
