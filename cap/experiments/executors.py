"""Where runs execute: notebooks on this machine (``inprocess``, the default), or submitit jobs,
one run per job, on the GPU slots of this machine (``local``) or on Slurm (``slurm``).

A job is a :class:`RunJob`: one papermill execution of ``notebooks/run.md`` for one record key,
which leaves its executed notebook and the run's record exactly as a run on this machine does.
Jobs of one run each keep every GPU busy while runs remain: the local executor starts the next run
the moment a slot frees, Slurm schedules its queue. A preempted or timed-out Slurm job is
signalled by Slurm; submitit then calls :meth:`RunJob.checkpoint`, which resubmits the same job,
and the run resumes from its checkpoint under ``<records>/checkpoints/<key>/``.

Every submission leaves a job marker ``<records>/jobs/<key>.json`` (executor, job id, log
paths). With the per-run lock (:mod:`cap.experiments.locks`) it tells a second runner on the same
records folder that a run is queued or running, so that it never submits the run again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from cap.atomic import _TEMP_NAME, TEMP_PREFIX, _host, atomic_write, remove_stale_temporaries
from cap.errors import CapError
from cap.experiments.locks import RunLock, lock_holder
from cap.experiments.records import RunStatus, record_status

log = logging.getLogger(__name__)

EXECUTORS = ("inprocess", "local", "slurm")
# The repository's run notebook; an installed package without it runs each group in-process.
RUN_NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "run.md"
JOBS_DIR = "jobs"
# Threads of every run's process (torch, BLAS, OpenMP), whatever the executor and worker count:
# a reduction split over another number of threads adds in another order and ends a few ulps away.
RUN_THREADS = 1
# A job marker is written in milliseconds: a temporary file of one older than this is a leftover.
MARKER_TEMP_STALE_S = 10 * 60
# Slurm options unless the options file or --slurm says otherwise: one GPU per job.
SLURM_DEFAULTS = {"gpus_per_node": 1, "cpus_per_task": 4, "time": 180, "signal_delay_s": 120, "job_name": "cap-run"}
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # the local executor's own time limit (submitit's default is 2 minutes)
QUEUED_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "SUSPENDED", "RESIZING", "STAGE_OUT", "SIGNALING"}


class ExecutorError(CapError):
    """An executor that cannot be used as asked (unknown name, bad options, no Slurm)."""


# -- processes ---------------------------------------------------------------------------------

def die_with_parent() -> None:
    """Ask Linux to kill this process when the thread that started it ends (``preexec_fn`` of a
    child): a killed runner then leaves no notebook running on, and the notebook's kernel ends
    with it (ipykernel polls its parent)."""
    if sys.platform.startswith("linux"):
        _PRCTL(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child


_PRCTL = _load_prctl()


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _end_with(pid: int, every_s: float = 1.0) -> None:
    """End this process (and so its notebook kernel) soon after process ``pid`` ends."""
    def watch():
        while alive(pid):
            time.sleep(every_s)
        log.warning("the runner (pid %d) has ended: ending this job", pid)
        os._exit(3)

    threading.Thread(target=watch, name="end-with-runner", daemon=True).start()


# -- the submitted job -------------------------------------------------------------------------

@dataclass
class RunJob:
    """One run as a job: the run notebook for one record key. Checkpointable (submitit)."""

    key: str
    parameters: dict  # notebooks/run.md parameters selecting this run
    output: str  # the executed notebook
    records_dir: str
    fresh: bool = False  # forced: delete the run's record and checkpoints first
    threads: int | None = RUN_THREADS  # OMP/MKL threads of the kernel
    runner_pid: int | None = None  # local jobs end with the runner that started them
    notebook: str = field(default_factory=lambda: str(RUN_NOTEBOOK))

    def __call__(self) -> dict:
        from cap.experiments.notebooks import run_notebook

        if self.runner_pid is not None:
            _end_with(self.runner_pid)
        threads = str(self.threads or RUN_THREADS)
        os.environ.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        if self.fresh:
            _forget(self.key, self.records_dir)
        devices = os.environ.get("CUDA_VISIBLE_DEVICES")
        log.info("run %s on %s, CUDA_VISIBLE_DEVICES=%s", self.key, socket.gethostname(), devices)
        run_notebook(self.notebook, self.output, self.parameters)
        return {"key": self.key, "host": socket.gethostname(), "cuda_visible_devices": devices,
                "state": record_status(self.key, self.records_dir).state}

    def checkpoint(self, *args, **kwargs):
        """Called by submitit when Slurm preempts the job or its time runs out: the same job again,
        which resumes the run from its last checkpoint (never fresh: that would discard it)."""
        import submitit

        return submitit.helpers.DelayedSubmission(replace(self, fresh=False), *args, **kwargs)


def _forget(key: str, records_dir: str) -> None:
    """What a forced rerun replaces: the record, a failure record, the checkpoints of ``key``."""
    with RunLock(key, records_dir) as lock:
        if lock.held:
            for kind in ("run", "failed"):
                (Path(records_dir) / f"{kind}-{key}.json").unlink(missing_ok=True)
            shutil.rmtree(Path(records_dir) / "checkpoints" / key, ignore_errors=True)


# -- job markers -------------------------------------------------------------------------------

def marker_path(key: str, records_dir: str | Path) -> Path:
    return Path(records_dir) / JOBS_DIR / f"{key}.json"


def write_marker(key: str, records_dir: str | Path, marker: dict) -> None:
    """Write ``<records>/jobs/<key>.json`` atomically; a failed write leaves no temporary file."""
    text = json.dumps(marker, indent=1)  # an unwritable marker fails here, before any file exists
    atomic_write(marker_path(key, records_dir), lambda tmp: tmp.write_text(text))


def remove_stale_marker_temporaries(records_dir: str | Path, older_than_s: float = MARKER_TEMP_STALE_S) -> list[Path]:
    """Remove the temporary files of job markers that killed writers left in ``<records>/jobs``:
    those of a process of this machine that has ended, and those of other machines (or named by
    older versions, which did not name the writer) older than ``older_than_s`` (a marker is written
    in milliseconds). A live process's file stays. Returns what was removed."""
    folder = Path(records_dir) / JOBS_DIR
    if not folder.is_dir():
        return []
    removed = remove_stale_temporaries(folder)
    now, here = time.time(), _host()
    for path in folder.glob(f"{TEMP_PREFIX}*"):
        named = _TEMP_NAME.fullmatch(path.name)
        if named and named["host"] == here:  # this machine's: removed above once its writer has ended
            continue
        try:
            if path.is_file() and now - path.stat().st_mtime > older_than_s:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # another runner removed it first
            pass
    for path in removed:
        log.info("removed %s, a job marker's temporary file left by a killed writer", path)
    return removed


def read_marker(key: str, records_dir: str | Path) -> dict | None:
    try:
        return json.loads(marker_path(key, records_dir).read_text())
    except (OSError, json.JSONDecodeError):
        return None


class SubmitLock:
    """Held (blocking) while a runner decides what to submit and writes its markers, so two runners
    starting together do not both submit the same runs."""

    def __init__(self, records_dir: str | Path):
        self.path = Path(records_dir) / JOBS_DIR / ".submit.lock"

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a")
        fcntl.flock(self._handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        self._handle.close()


# -- executors ---------------------------------------------------------------------------------

class LocalSlots:
    """submitit's local executor on this machine's GPU slots: one job per free slot, each job
    seeing only its own slot through ``CUDA_VISIBLE_DEVICES``."""

    name = "local"

    def __init__(self, folder: str | Path, gpus: list[int]):
        if not gpus or len(set(gpus)) != len(gpus) or not all(isinstance(g, int) and g >= 0 for g in gpus):
            raise ExecutorError(f"the local executor needs distinct GPU numbers, e.g. GPUS=0,1,2,3; got {gpus!r}")
        self.folder, self.slots = Path(folder), list(gpus)

    def submit(self, jobs: list[RunJob], slots: list[int]) -> list:
        import submitit

        submitted = []
        for job, slot in zip(jobs, slots):
            executor = submitit.LocalExecutor(folder=self.folder)
            executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=1, visible_gpus=(slot,))
            submitted.append(executor.submit(replace(job, runner_pid=os.getpid())))
        return submitted

    def marker(self, job, slot) -> dict:
        return {"executor": self.name, "job_id": str(job.job_id), "host": socket.gethostname(), "slot": slot}

    @staticmethod
    def finished(job) -> bool:
        return job.done()


class SlurmQueue:
    """submitit's Slurm executor: every run of a submission is one task of a job array."""

    name = "slurm"
    slots = None  # Slurm queues them all

    def __init__(self, folder: str | Path, options: dict):
        self.folder, self.options = Path(folder), options
        if shutil.which("sbatch") is None:
            raise ExecutorError("EXECUTOR=slurm needs Slurm's sbatch and squeue on this machine's PATH")

    def submit(self, jobs: list[RunJob], slots) -> list:
        import submitit

        executor = submitit.SlurmExecutor(folder=self.folder)
        executor.update_parameters(**self.options)
        return executor.submit_array(jobs)

    def marker(self, job, slot) -> dict:
        return {"executor": self.name, "job_id": str(job.job_id), "host": socket.gethostname()}

    @staticmethod
    def finished(job, queue: dict[str, str] | None = None) -> bool:
        return job_state({"executor": "slurm", "job_id": str(job.job_id)}, queue) is None


def slurm_options(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Slurm options: the defaults, then an options file (YAML mapping), then ``overrides``. Names are
    submitit's (``partition``, ``time`` in minutes, ``mem`` e.g. ``32GB``, ``account``,
    ``cpus_per_task``, ``gpus_per_node``, ``setup`` lines, ``additional_parameters`` for any other
    sbatch flag, ...); unknown names are errors listing the valid ones."""
    import submitit

    options = dict(SLURM_DEFAULTS)
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ExecutorError(f"Slurm options file {path} cannot be read: {err}") from err
        if not isinstance(loaded, dict):
            raise ExecutorError(f"Slurm options file {path} must hold a mapping of option: value")
        options.update(loaded)
    options.update(overrides or {})
    valid = submitit.SlurmExecutor._valid_parameters()
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ExecutorError(f"unknown Slurm option(s) {unknown}; valid: {', '.join(sorted(valid))} "
                            "(any other sbatch flag goes under additional_parameters)")
    return options


def make_executor(name: str, folder: str | Path, gpus: list[int] | None = None, slurm: dict | None = None):
    if name == "local":
        return LocalSlots(folder, gpus if gpus is not None else [0])
    if name == "slurm":
        return SlurmQueue(folder, slurm if slurm is not None else slurm_options())
    raise ExecutorError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")


# -- live state of runs ------------------------------------------------------------------------

def slurm_queue() -> dict[str, str]:
    """Job id (array tasks as ``<array>_<task>``) -> state of every job Slurm still lists; empty
    when Slurm is not reachable from here."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("squeue failed (%s): queued Slurm jobs are not known", err)
        return {}
    if out.returncode != 0:
        log.warning("squeue failed: %s", out.stderr.strip())
        return {}
    return dict(line.split("|", 1) for line in out.stdout.split() if "|" in line)


def job_state(marker: dict | None, queue: dict[str, str] | None) -> str | None:
    """``queued`` or ``running`` while the marker's job is alive, else None."""
    if not marker:
        return None
    if marker.get("executor") == "local":
        same_host = marker.get("host") == socket.gethostname()
        return "running" if same_host and alive(int(marker["job_id"])) else None
    state = (queue if queue is not None else slurm_queue()).get(str(marker.get("job_id")))
    if state in QUEUED_STATES:
        return "queued"
    return "running" if state in RUNNING_STATES else None


def live_status(key: str, records_dir: str | Path, queue: dict[str, str] | None = None) -> RunStatus:
    """A run's state across runners: done / running (its lock is held, or its job runs) / queued /
    failed / stale / missing; ``detail`` names the holder, the job or the error."""
    status = record_status(key, records_dir)
    if status.state == "done":
        return status
    holder = lock_holder(key, records_dir)
    if holder is not None:
        return RunStatus("running", f"running on {holder}")
    marker = read_marker(key, records_dir)
    state = job_state(marker, queue)
    if state is not None:
        return RunStatus(state, f"{marker['executor']} job {marker['job_id']}")
    return status


def live_statuses(keys: list[str], records_dir: str | Path) -> dict[str, RunStatus]:
    """:func:`live_status` of every key, asking Slurm once."""
    markers = [read_marker(key, records_dir) for key in keys]
    queue = slurm_queue() if any(m and m.get("executor") == "slurm" for m in markers) else {}
    return {key: live_status(key, records_dir, queue) for key in keys}
