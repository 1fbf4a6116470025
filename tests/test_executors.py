"""Runs as submitit jobs and the per-run lock, for real: a single-node Slurm brought up by the test
(Debian's slurm-wlm and munge), submitit's local executor on CPU slots standing in for GPUs, and
concurrent runner processes on one records folder. Tiny simulator configs keep it to minutes."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections import Counter
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from cap.config import RunConfig, as_dict
from cap.errors import ParameterError
from cap.experiments.executors import (ExecutorError, alive, read_marker, slurm_options, slurm_queue,
                                       write_marker)
from cap.experiments.locks import RunLock, lock_holder
from cap.experiments.progress import appendix_minutes, bar, format_progress, gpu_hours, progress_rows, watch
from cap.experiments.records import read_current_record, record_status, write_record
from cap.experiments.runner import run_matrices, select
from cap.experiments.runs import run as run_config
from cap.methods.checkpoints import RunInterrupted
from slurm_cluster import local_slurm, missing_programs

# Small pools and schedules, whatever the sim profile's own are (a profile that scales its schedules
# by one factor has it dropped, since these set the epochs outright).
UNSCALED = {"schedule_factor": None} if "schedule_factor" in {f.name for f in fields(RunConfig)} else {}
TINY = UNSCALED | {"sim_train_per_class": 16, "sim_test_per_class": 8, "baseline_epochs": 1, "rounds": 2, "epochs": 2,
        "iters_per_epoch": 5}
SLICE = dict(matrices=["table1"], datasets=["eurosat"], paradigms=["ul"], methods=["zero_shot", "fpl", "grip", "cap"],
             seeds=[1])
# CAP runs long enough to be cancelled in the middle.
LONG = TINY | {"epochs": 3, "iters_per_epoch": 200}  # seconds of training: a job is seen running before it ends
TEST_SLURM = {"gpus_per_node": 0, "cpus_per_task": 1, "time": 30, "signal_delay_s": 30}
LINE = re.compile(r"\(([0-9a-f]{12})\): (\w+)(, [^(]*)? \(")


def same_results(record: dict, reference: dict) -> None:
    got, want = record["results"]["metrics"], reference["results"]["metrics"]
    for name in ("top1", "per_class_accuracy", "predicted_counts"):
        assert got[name] == want[name], name
    assert got["test_predictions"]["pred"] == want["test_predictions"]["pred"]


def executed_notebook_lines(path: Path) -> list[tuple[str, str, str]]:
    """(key, state, detail) of every run the run notebook at ``path`` printed."""
    return [(key, state, detail.strip(", ")) for key, state, detail in LINE.findall(path.read_text())]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The slice's records, run in this process."""
    folder = tmp_path_factory.mktemp("reference")
    runs = select("sim", **SLICE, overrides=TINY)
    assert len(runs) == 4
    return {run.key: read_current_record(run_config(run.config, folder)) for run in runs}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = missing_programs()
    assert not missing, f"{missing} not found: `make test` installs Debian's slurm-wlm and munge"
    with local_slurm(tmp_path_factory.mktemp("slurm")) as env:
        previous = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = env["SLURM_CONF"]
        try:
            yield env
        finally:
            if previous is None:
                os.environ.pop("SLURM_CONF")
            else:
                os.environ["SLURM_CONF"] = previous


def wait_for(what: str, condition, timeout: float = 180.0, every: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


# -- options, the lock and the progress table, by hand -----------------------------------------

def test_submitit_is_a_runtime_dependency_of_both_environment_files(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert "submitit>=1.5" in project["dependencies"]
    pip = next(d["pip"] for d in yaml.safe_load((root / "environment.yml").read_text())["dependencies"]
               if isinstance(d, dict))
    assert "submitit>=1.5" in pip


def test_slurm_options_come_from_defaults_a_file_and_flags(tmp_path):
    options_file = tmp_path / "slurm.yml"
    options_file.write_text("partition: gpu\ntime: 90\naccount: lab\nadditional_parameters: {constraint: a100}\n")
    options = slurm_options(options_file, {"time": 45, "mem": "32GB"})
    assert options == {"gpus_per_node": 1, "cpus_per_task": 4, "signal_delay_s": 120, "job_name": "cap-run",
                       "partition": "gpu", "time": 45, "account": "lab", "mem": "32GB",
                       "additional_parameters": {"constraint": "a100"}}
    with pytest.raises(ExecutorError, match=r"unknown Slurm option\(s\) \['partitoin'\]; valid: .*partition"):
        slurm_options(None, {"partitoin": "gpu"})
    options_file.write_text("- partition\n")
    with pytest.raises(ExecutorError, match="must hold a mapping"):
        slurm_options(options_file)


def test_overrides_change_the_runs_but_cannot_change_the_selection():
    plain = select("sim", **SLICE)
    tiny = select("sim", **SLICE, overrides=TINY)
    assert [r.config.method for r in tiny] == [r.config.method for r in plain]
    assert all(r.config.epochs == 2 and r.config.sim_train_per_class == 16 for r in tiny)
    assert not {r.key for r in tiny} & {r.key for r in plain}
    assert [r.key for r in select("sim", **SLICE, overrides=TINY, keys=[tiny[2].key])] == [tiny[2].key]
    with pytest.raises(ParameterError, match=r"overrides cannot change \['seed'\]"):
        select("sim", **SLICE, overrides={"seed": 4})


def test_a_lock_is_held_by_one_process_and_names_it(tmp_path):
    with RunLock("abc", tmp_path) as first:
        assert first.held
        assert lock_holder("abc", tmp_path).endswith(f" {os.getpid()}")
        holder = subprocess.run([sys.executable, "-c", "from cap.experiments.locks import RunLock; "
                                 f"print(RunLock('abc', {str(tmp_path)!r}).acquire())"], capture_output=True, text=True)
        assert holder.stdout.strip() == "False", holder.stderr
    assert lock_holder("abc", tmp_path) is None
    assert lock_holder("never", tmp_path) is None


def test_progress_table_by_hand(tmp_path, reference):
    runs = select("sim", **SLICE, overrides=TINY)
    done, failing, running, missing = runs
    (tmp_path / f"run-{done.key}.json").write_text(json.dumps(reference[done.key]))
    write_record(tmp_path, "failed", as_dict(failing.config), {"status": "failed", "error": "RuntimeError: boom"})
    write_marker(missing.key, tmp_path, {"executor": "slurm", "job_id": "999999", "stderr": "/logs/999999_0_log.err"})
    with RunLock(running.key, tmp_path):
        rows, failures = progress_rows(runs, tmp_path)
        text, total = format_progress(runs, tmp_path)
    assert rows[0] | {"progress": None} == {"matrix": "table1", "dataset": "eurosat", "paradigm": "ul", "done": 1,
                                          "running": 1, "queued": 0, "failed": 1, "to run": 1, "progress": None}
    assert total["progress"] == "█████░░░░░░░░░░░░░░░  25%"  # 1 of 4: 5 of 20 cells
    assert failures == [{"run": "table1: eurosat ul fpl seed 1", "key": failing.key, "error": "RuntimeError: boom",
                         "record": str(tmp_path / f"failed-{failing.key}.json"), "log": None},
                        {"run": "table1: eurosat ul cap seed 1", "key": missing.key,
                         "error": "its job ended without a record", "record": None, "log": "/logs/999999_0_log.err"}]
    assert f"failed: table1: eurosat ul fpl seed 1 ({failing.key}): RuntimeError: boom\n    record " in text
    assert "its job ended without a record\n    job log /logs/999999_0_log.err" in text
    assert bar(2, 3, width=6) == "████░░  67%" and bar(0, 0, width=4) == "████ 100%"
    assert watch([done], tmp_path, every_s=0, show=lambda text: None)["done"] == 1


def test_gpu_hours_from_the_appendix_and_from_measured_times(tmp_path):
    paper_schedule = UNSCALED | {"epochs": 50, "iters_per_epoch": 50, "baseline_epochs": 50, "rounds": 10}
    runs = select("sim", ["table1"], ["eurosat"], ["ul"], ["fpl", "grip", "cap"], [1, 2], overrides=paper_schedule)
    cap1, _, fpl1, _, grip1, _ = sorted(runs, key=lambda r: (r.config.method, r.config.seed))
    # Appendix D.2 (EuroSAT): CAP 29 min, GRIP 102 min (10 rounds, so FPL's one round is 10.2 min)
    assert [appendix_minutes(r) for r in (fpl1, grip1, cap1)] == pytest.approx([10.2, 102.0, 29.0])
    short = select("sim", ["table1"], ["eurosat"], ["ul"], ["cap", "grip"], [1],
                   overrides=UNSCALED | {"epochs": 10, "iters_per_epoch": 10, "baseline_epochs": 5, "rounds": 3})
    # CAP 29 × 100/2500 steps = 1.16; GRIP 102 × 3/10 rounds × 5/50 epochs = 3.06
    assert sorted(appendix_minutes(r) for r in short) == pytest.approx([1.16, 3.06])
    row = gpu_hours("table1", runs, tmp_path)
    # 2 × (10.2 + 102 + 29) = 282.4 min = 4.71 h; nothing measured yet
    assert row == {"matrix": "table1", "runs": 6, "done": 0, "appendix GPU hours": 4.7, "measured GPU hours": None}
    write_record(tmp_path, "run", as_dict(fpl1.config), {"status": "ok", "headline": 50.0, "wall_seconds": 360.0})
    # measured: FPL 360 s, and 360 s for the other FPL seed; GRIP and CAP still the appendix's:
    # (2 × 360 + 2 × 6120 + 2 × 1740) / 3600 = 4.57 h
    assert gpu_hours("table1", runs, tmp_path)["measured GPU hours"] == 4.6
    assert gpu_hours("table1", runs, tmp_path)["done"] == 1


# -- the lock across runner processes ----------------------------------------------------------

def runs_command(records: Path, notebooks: Path, methods, seeds, overrides) -> list[str]:
    return [sys.executable, "-m", "cap", "runs", "--matrix", "table1", "--dataset", "eurosat", "--paradigm", "ul",
            "--method", *methods, "--seeds", *map(str, seeds), "--records", str(records), "--notebooks",
            str(notebooks), "--set", *[f"{k}={json.dumps(v)}" for k, v in overrides.items()]]


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def test_two_runners_split_a_slice_and_a_killed_runner_releases_its_lock(tmp_path, reference):
    records = tmp_path / "records"
    runners = [subprocess.Popen(runs_command(records, tmp_path / name, SLICE["methods"], [1], TINY),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    for runner in runners:
        out, err = runner.communicate(timeout=400)
        assert runner.returncode == 0, err[-2000:]
    executed = Counter()
    for name in ("a", "b"):
        notebook = tmp_path / name / "eurosat-ul.ipynb"
        for key, state, detail in executed_notebook_lines(notebook) if notebook.is_file() else []:
            if state == "done" and "another process" not in detail:
                executed[key] += 1
    assert executed == Counter({key: 1 for key in reference}), "each run executed by exactly one runner"
    for key, ref in reference.items():
        same_results(read_current_record(records / f"run-{key}.json"), ref)

    (slow,) = select("sim", ["table1"], ["eurosat"], ["ul"], ["cap"], [2], overrides=LONG)
    killed = subprocess.Popen(runs_command(records, tmp_path / "c", ["cap"], [2], LONG), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    holder = wait_for("the run's lock", lambda: (lock_holder(slow.key, records) or "unknown") != "unknown" and
                      lock_holder(slow.key, records))
    family = descendants(killed.pid)
    assert int(holder.split()[1]) in family, "the run executes in the runner's notebook kernel"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    wait_for("the killed runner's processes to end and its lock to be released",
             lambda: not [p for p in family if alive(p)] and lock_holder(slow.key, records) is None, timeout=30)
    assert RunLock(slow.key, records).acquire(), "a new runner can take the run"
    assert record_status(slow.key, records).state == "missing"


# -- submitit's local executor on CPU slots ----------------------------------------------------

def test_local_executor_runs_one_job_per_slot_and_each_sees_only_its_slot(tmp_path, reference):
    records, notebooks = tmp_path / "records", tmp_path / "runs"
    states = run_matrices("sim", **SLICE, records_dir=records, notebooks_dir=notebooks, executor="local",
                          gpus=[0, 1], overrides=TINY)
    assert states == {"done": 4}
    slots = {}
    for key, ref in reference.items():
        marker = read_marker(key, records)
        slots[key] = marker["slot"]
        text = (notebooks / "jobs" / f"eurosat-ul-{key}.ipynb").read_text()
        assert f"CUDA_VISIBLE_DEVICES={marker['slot']}\\n" in text
        assert Path(marker["stderr"]).is_file()
        same_results(read_current_record(records / f"run-{key}.json"), ref)
    assert set(slots.values()) == {0, 1}


# -- a real Slurm ------------------------------------------------------------------------------

def test_slurm_runs_the_slice_as_in_process_and_never_submits_a_run_twice(slurm, tmp_path, reference):
    records, notebooks = tmp_path / "records", tmp_path / "runs"
    options = dict(**SLICE, records_dir=records, notebooks_dir=notebooks, executor="slurm", slurm=TEST_SLURM,
                   overrides=TINY)
    run_matrices("sim", **options, detach=True)
    jobs = {key: read_marker(key, records)["job_id"] for key in reference}
    assert len(set(jobs.values())) == 4 and set(jobs.values()) <= set(slurm_queue())
    submissions = lambda: sorted((notebooks / "jobs").glob("*_submission.sh"))  # noqa: E731
    assert len(submissions()) == 1, "one job array"
    states = run_matrices("sim", **options, detach=True)  # a second runner while they are queued or running
    assert {key: read_marker(key, records)["job_id"] for key in reference} == jobs
    assert len(submissions()) == 1 and set(states) <= {"queued", "running", "done"}

    total = watch(select("sim", **SLICE, overrides=TINY), records, every_s=1, show=lambda text: None)
    assert total["done"] == 4
    wait_for("the jobs to end (their notebooks are written after the records)",
             lambda: not set(jobs.values()) & set(slurm_queue()), timeout=120)
    for key, ref in reference.items():
        same_results(read_current_record(records / f"run-{key}.json"), ref)
        assert (notebooks / "jobs" / f"eurosat-ul-{key}.ipynb").is_file()
    assert run_matrices("sim", **options) == {"done": 4} and len(submissions()) == 1


def test_a_cancelled_or_preempted_slurm_job_resumes_from_its_checkpoint(slurm, tmp_path):
    records, notebooks = tmp_path / "records", tmp_path / "runs"
    cancelled, preempted = runs = select("sim", ["table1"], ["eurosat"], ["ul"], ["cap"], [2, 3], overrides=LONG)
    references = {}
    for run in runs:
        references[run.key] = read_current_record(run_config(run.config, tmp_path / "reference"))
        with pytest.raises(RunInterrupted):  # an earlier attempt, killed after its first epoch
            run_config(run.config, records, stop_after=0)
    follower = threading.Thread(target=run_matrices, args=("sim", ["table1"], ["eurosat"], ["ul"], ["cap"], [2, 3]),
                                kwargs=dict(records_dir=records, notebooks_dir=notebooks, executor="slurm",
                                            slurm=TEST_SLURM, overrides=LONG))
    follower.start()
    running = lambda run: lock_holder(run.key, records) and read_marker(run.key, records)["job_id"]  # noqa: E731
    cancelled_job = wait_for("the first run to start", lambda: running(cancelled))
    subprocess.run(["scancel", cancelled_job], check=True)
    preempted_job = wait_for("the second run to start", lambda: running(preempted))
    subprocess.run(["scancel", "--signal=USR2", preempted_job], check=True)  # what Slurm sends before preempting
    wait_for("the requeued job", lambda: slurm_queue().get(preempted_job) == "PENDING", timeout=60)
    # Slurm holds a requeued job for a while before it may start again; the test does not wait for that.
    subprocess.run(["scontrol", "update", f"JobId={preempted_job}", "StartTime=now"], check=True)
    follower.join(timeout=400)
    assert not follower.is_alive()
    assert read_marker(cancelled.key, records)["job_id"] != cancelled_job, "the runner submitted it again"
    assert read_marker(preempted.key, records)["job_id"] == preempted_job, "the job requeued itself (checkpoint())"
    for run in runs:
        same_results(read_current_record(records / f"run-{run.key}.json"), references[run.key])
        lines = executed_notebook_lines(notebooks / "jobs" / f"eurosat-ul-{run.key}.ipynb")
        assert lines == [(run.key, "done", "resumed from its checkpoint")]
