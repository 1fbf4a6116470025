"""The fault model of the experiment harness: each reported failure ends in one clear error line
that names the file or value and what to do, and loses nothing computed.

1. a directory where a run's record, failure record or lock file goes;
2. matrix and profile files that cannot be used as written (a list for a mapping, a non-integer
   ``workers``, an unknown profile, a schedule that the profile and the matrix both set);
3. temporary files of job markers left by killed writers;
4. results that depend on the worker count (every run: one thread per process);
5. a run page whose rendering is killed midway (the next ``make book`` renders it again).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import torch

import cap.experiments.matrix as matrix_module
from cap.atomic import _host
from cap.config import as_dict, make_config, resolve
from cap.experiments import runner
from cap.experiments.executors import RUN_THREADS, RunJob, marker_path, remove_stale_marker_temporaries, write_marker
from cap.experiments.locks import LockPathError, RunLock, lock_holder
from cap.experiments.matrix import MatrixError, plan
from cap.experiments.records import (RESCUED_SUFFIX, RecordPathError, config_hash, read_current_record, record_status,
                                     write_record)
from conftest import TINY_NOTEBOOK, assert_one_clear_error, cli

ZERO_SHOT = dict(datasets=["eurosat"], paradigms=["ul"], methods=["zero_shot"], seeds=[1])
SELECT = ["--matrix", "table1", "--dataset", "eurosat", "--paradigm", "ul", "--method", "zero_shot", "--seeds", "1"]
SMALL = dict(dataset="dtd", method="zero_shot", sim_train_per_class=24, sim_test_per_class=8)


@pytest.fixture
def no_training(monkeypatch):
    """Runs go in this process (no notebook), and any run that starts training is recorded."""
    started = []
    monkeypatch.setattr(runner, "RUN_NOTEBOOK", Path("/nonexistent/run.md"))
    monkeypatch.setattr("cap.experiments.runs.run", lambda config, *args, **kwargs: started.append(config))
    return started


# -- 1. a directory where a record or a lock file goes --------------------------------------------

BLOCKERS = {  # what stands in the way -> (what to make, as a directory or a file)
    "record": ("run-{key}.json", "dir"),
    "failure record": ("failed-{key}.json", "dir"),
    "lock file": ("locks/{key}.lock", "dir"),
    "locks folder": ("locks", "file"),
}


@pytest.mark.parametrize("blocked", BLOCKERS)
def test_a_directory_where_a_run_file_goes_stops_the_runs_before_anything_trains(blocked, tmp_path, capsys,
                                                                                  no_training):
    (run,) = plan("table1", "sim", **ZERO_SHOT)
    name, kind = BLOCKERS[blocked]
    path = tmp_path / name.format(key=run.key)
    if kind == "dir":
        path.mkdir(parents=True)
        (path / "notes.txt").write_text("someone's file")
    else:
        path.write_text("not a folder")
    code, _, err = cli(capsys, "runs", *SELECT, "--records", tmp_path)
    assert_one_clear_error(code, err, str(path), "no run was started", "move it away")
    assert not no_training, "nothing trained, so nothing computed can be lost"
    assert (path / "notes.txt").is_file() if kind == "dir" else path.read_text() == "not a folder"
    status = record_status(run.key, tmp_path)  # what --list and the pages show
    assert status.state == "failed" and str(path) in status.detail and "move it away" in status.detail
    assert runner.execute(run, tmp_path).state == "failed" and not no_training  # a direct caller too
    code, out, _ = cli(capsys, "runs", *SELECT, "--records", tmp_path, "--list")
    assert code == 0 and str(path) in out


def test_a_record_that_meets_a_directory_is_rescued_not_lost(tmp_path):
    """The writer itself (a directory made while the run trained): the record is kept beside it."""
    from cap.experiments.runs import run

    config = resolve(make_config(**SMALL))
    key = config_hash(as_dict(config))
    blocking = tmp_path / f"run-{key}.json"
    blocking.mkdir(parents=True)
    with pytest.raises(RecordPathError) as caught:
        run(config, tmp_path)
    rescued = tmp_path / f"run-{key}.json{RESCUED_SUFFIX}"
    message = str(caught.value)
    assert "\n" not in message and str(blocking) in message and str(rescued) in message and "mv " in message
    assert json.loads(rescued.read_text())["results"]["status"] == "ok", "the computed result is kept"
    assert record_status(key, tmp_path).state == "failed"  # not missing: the page says why
    blocking.rmdir()
    rescued.rename(blocking)  # what the message says to do
    assert record_status(key, tmp_path).state == "done" and read_current_record(blocking)["results"]["headline"] >= 0
    (tmp_path / f"failed-{config_hash({'a': 1})}.json").mkdir()  # a failure record meets one too
    with pytest.raises(RecordPathError, match="failed record was saved as"):
        write_record(tmp_path, "failed", {"a": 1}, {"status": "failed", "error": "RuntimeError: boom"})
    assert (tmp_path / f"failed-{config_hash({'a': 1})}.json{RESCUED_SUFFIX}").is_file()


def test_a_lock_file_that_is_a_directory_is_one_clear_error_of_cap_run(tmp_path, capsys):
    key = config_hash(as_dict(resolve(make_config(**SMALL))))
    lock = tmp_path / "locks" / f"{key}.lock"
    lock.mkdir(parents=True)
    code, _, err = cli(capsys, "run", "--dataset", "dtd", "--method", "zero_shot", "--out", tmp_path,
                       "--set", "sim_train_per_class=24", "sim_test_per_class=8")
    assert_one_clear_error(code, err, str(lock), "lock file", "move it away")
    assert not list(tmp_path.glob("*.json")), "it did not train"
    with pytest.raises(LockPathError, match=f"{lock} is a directory where run {key}'s lock file goes"):
        RunLock(key, tmp_path).acquire()
    lock.rmdir()
    (tmp_path / "locks").rmdir()
    (tmp_path / "locks").write_text("")
    assert lock_holder(key, tmp_path) is None, "a status display does not crash on it"
    with pytest.raises(LockPathError, match="is a file where the locks folder goes"):
        RunLock(key, tmp_path).acquire()


# -- 2. matrix and profile files ------------------------------------------------------------------

TINY_MATRIX = {"title": "t", "datasets": ["eurosat"], "paradigms": ["ul"], "methods": ["zero_shot"], "seeds": [1],
               "profiles": {"sim": {}}}


@pytest.fixture
def matrices(tmp_path):
    """A copy of the matrix and profile files that a test may edit; the package's are untouched."""
    folder = tmp_path / "matrices"
    shutil.copytree(Path(matrix_module.__file__).parent / "matrices", folder)
    original = matrix_module.MATRICES_DIR
    matrix_module.MATRICES_DIR = folder
    matrix_module.profiles.cache_clear()
    matrix_module.load_matrix.cache_clear()
    try:
        yield folder
    finally:
        matrix_module.MATRICES_DIR = original
        matrix_module.profiles.cache_clear()
        matrix_module.load_matrix.cache_clear()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def _matrix(folder: Path, **changes) -> None:
    (folder / "t.yml").write_text(json.dumps(TINY_MATRIX | changes))  # JSON is YAML


PROFILE_CONFIG = "config: {backend: sim,"  # how profiles.yml's sim profile starts its config
BAD_FILES = {  # edit -> what the one error line must name
    "a profile is a list": (lambda d: (d / "profiles.yml").write_text("sim: [title, config]\n"),
                            ["profiles.yml", "profile 'sim'", "must be a mapping", "got a list"]),
    "workers is a word": (lambda d: _edit(d / "profiles.yml", "workers: cores", "workers: two"),
                          ["profiles.yml", "profile 'sim'", "workers", "'two'", "whole number"]),
    "workers is a fraction": (lambda d: _edit(d / "profiles.yml", "workers: cores", "workers: 1.5"),
                              ["profiles.yml", "workers", "1.5"]),
    "a profile's config value": (lambda d: _edit(d / "profiles.yml", PROFILE_CONFIG,
                                                 "config: {epochs: many, backend: sim,"),
                                 ["profiles.yml", "profile 'sim'", "config", "'epochs' must be int", "'many'"]),
    "variants is a list": (lambda d: _matrix(d, variants=["full", "no_ca"]),
                           ["t.yml", "variants", "must be a mapping", "got a list"]),
    "a scope is a list": (lambda d: _matrix(d, profiles={"sim": ["dtd"]}),
                          ["t.yml", "profile 'sim'", "must be a mapping", "got a list"]),
    "a variant's set is a list": (lambda d: _matrix(d, variants={"v": {"set": ["margin"]}}),
                                  ["t.yml", "variant 'v', set", "must be a mapping"]),
    "an unknown profile": (lambda d: _matrix(d, profiles={"sim": {}, "laptop": {}}),
                           ["t.yml", "profiles", "unknown profile 'laptop'", "valid choices: paper, sim",
                            "profiles.yml"]),
    "a schedule set twice": (lambda d: (_edit(d / "profiles.yml", PROFILE_CONFIG, "config: {schedule_factor: 0.1, "
                                                                                  "backend: sim,"),
                                        _matrix(d, config={"epochs": 3})),
                             ["profiles.yml", "t.yml", "schedule_factor 0.1", "epochs cannot be set", "agree"]),
    "the matrix is a list": (lambda d: (d / "t.yml").write_text("- title\n- datasets\n"),
                             ["t.yml", "must hold a mapping", "got a list"]),
    "not YAML": (lambda d: (d / "t.yml").write_text("title: [t\n"),
                 ["t.yml", "is not valid YAML", "line", "fix its syntax"]),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_matrix_or_profile_file_is_one_error_naming_the_file_and_key(case, matrices, capsys):
    edit, needles = BAD_FILES[case]
    _matrix(matrices)  # a good t.yml, which the matrix cases replace
    edit(matrices)
    code, _, err = cli(capsys, "runs", "--matrix", "t", "--list")
    line = assert_one_clear_error(code, err, *needles)
    assert str(matrices) in line, "the file is named by its path"
    with pytest.raises(MatrixError):  # the library raises the same error
        matrix_module.profiles.cache_clear()
        matrix_module.load_matrix.cache_clear()
        plan("t", "sim")


def test_an_unknown_profile_on_the_command_line_names_where_profiles_are_defined(capsys):
    code, _, err = cli(capsys, "runs", "--profile", "gpu", "--list")
    assert_one_clear_error(code, err, "unknown profile 'gpu'", "valid choices: paper, sim",
                           "cap/experiments/matrices/profiles.yml")


def test_the_package_files_still_load_through_the_override(matrices):
    _matrix(matrices)
    assert [r.config.method for r in plan("t", "sim")] == ["zero_shot"]
    assert matrix_module.get_profile("sim").workers == matrix_module.available_cores()


def test_workers_cores_is_one_worker_per_core_this_process_may_use(matrices, monkeypatch):
    _matrix(matrices)
    monkeypatch.setattr(matrix_module.os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    matrix_module.profiles.cache_clear()
    assert matrix_module.get_profile("sim").workers == 3
    assert matrix_module.get_profile("paper").workers == 1
    matrix_module.profiles.cache_clear()


# -- 3. temporary files of job markers --------------------------------------------------------------

def test_a_failed_marker_write_leaves_no_temporary_file(tmp_path):
    write_marker("a", tmp_path, {"executor": "local", "job_id": "1"})
    with pytest.raises(TypeError):
        write_marker("b", tmp_path, {"executor": "local", "job_id": object()})
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == ["a.json"]
    assert json.loads(marker_path("a", tmp_path).read_text()) == {"executor": "local", "job_id": "1"}


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


class _FakeExecutor:
    name, slots = "fake", [0]

    def submit(self, jobs, slots):
        return [SimpleNamespace(job_id=str(i), paths=SimpleNamespace(stdout="out", stderr="err"))
                for i, _ in enumerate(jobs)]

    def marker(self, job, slot):
        return {"executor": self.name, "job_id": job.job_id, "slot": slot}


def test_stale_marker_temporaries_are_removed_when_runs_are_submitted_and_live_ones_stay(tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    old = time.time() - 3600
    stale = {jobs / ".tmp-k3j4h5g6.json": old,  # an older version's name (tempfile.mkstemp), an hour old
             jobs / f".tmp-{_host()}-{_dead_pid()}-0a1b2c.json": None,  # this machine, its writer has ended
             jobs / ".tmp-otherhost-123-0a1b2c.json": old}  # another machine's, an hour old
    live = {jobs / ".tmp-a1b2c3d4.json": None,  # fresh: a writer may be at work
            jobs / f".tmp-{_host()}-{os.getpid()}-0d0e0f.json": old,  # this process: alive
            jobs / ".tmp-otherhost-123-0d0e0f.json": None}  # another machine's, fresh
    for path, mtime in (stale | live).items():
        path.write_text("{")
        if mtime:
            os.utime(path, (mtime, mtime))
    (run,) = plan("table1", "sim", **ZERO_SHOT)
    submitted = runner._submit(_FakeExecutor(), [(run, False)], [0], lambda r, fresh: r.key, tmp_path)
    assert list(submitted) == [run.key] and json.loads(marker_path(run.key, tmp_path).read_text())["job_id"] == "0"
    assert not [p for p in stale if p.exists()], "the leftovers of killed writers are gone"
    assert all(p.exists() for p in live), "a live or fresh writer's file stays"
    assert len(remove_stale_marker_temporaries(tmp_path, older_than_s=0)) == 2  # the fresh ones of others
    assert sorted(p.name for p in jobs.iterdir()) == [".submit.lock", f".tmp-{_host()}-{os.getpid()}-0d0e0f.json",
                                                      f"{run.key}.json"]


# -- 4. one thread per process, whatever the worker count --------------------------------------------

@pytest.mark.parametrize("workers", [1, 2])
def test_every_in_process_run_uses_one_torch_thread_whatever_the_worker_count(workers, tmp_path, monkeypatch):
    from threadpoolctl import threadpool_info

    seen = []

    def record_threads(config, *args, **kwargs):
        seen.append((torch.get_num_threads(), {pool["num_threads"] for pool in threadpool_info()}))

    monkeypatch.setattr(runner, "RUN_NOTEBOOK", Path("/nonexistent/run.md"))  # the in-process path
    monkeypatch.setattr("cap.experiments.runs.run", record_threads)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runner.run_matrices("sim", ["table1"], ["eurosat", "dtd"], ["ul"], ["zero_shot"], [1], records_dir=tmp_path,
                            notebooks_dir=tmp_path, workers=workers)
        assert torch.get_num_threads() == 2, "the process's own setting is given back"
    finally:
        torch.set_num_threads(before)
    assert seen == [(1, {1})] * 2, seen


@pytest.mark.parametrize("workers", [1, 2])
def test_run_notebooks_and_jobs_get_one_thread_whatever_the_worker_count(workers, tmp_path, monkeypatch):
    envs = []

    def fake_notebook(command, env, **kwargs):
        envs.append({name: env.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(runner.subprocess, "run", fake_notebook)
    runner.run_matrices("sim", ["table1"], ["eurosat", "dtd"], ["ul"], ["zero_shot"], [1], records_dir=tmp_path,
                        notebooks_dir=tmp_path, workers=workers)
    assert envs == [{"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}] * 2
    (run,) = plan("table1", "sim", **ZERO_SHOT)
    job = runner._job_for(run, runner.Selection(), tmp_path, tmp_path, False, RUN_THREADS)
    assert RUN_THREADS == 1 and job.threads == 1 and RunJob("k", {}, "o", "r").threads == 1


# -- 5. a run page killed while it renders -----------------------------------------------------------



def _dies_midway(notebook, output, **kwargs):
    """papermill writing the executed cells so far, then its kernel killed (out of memory, kill -9)."""
    partial = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nbformat.write(partial, output)
    from nbclient.exceptions import DeadKernelError

    raise DeadKernelError("Kernel died")


def test_a_notebook_that_dies_midway_writes_no_page_and_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    import papermill

    from cap.experiments.notebooks import NotebookError, run_notebook

    source, page = tmp_path / "page.md", tmp_path / "out" / "page.ipynb"
    source.write_text(TINY_NOTEBOOK)
    monkeypatch.setattr(papermill, "execute_notebook", _dies_midway)
    with pytest.raises(NotebookError) as caught:
        run_notebook(source, page)
    message = str(caught.value)
    assert "\n" not in message and str(source) in message and "DeadKernelError" in message and "run it again" in message
    assert not page.exists(), "no half-written page"
    assert not list(page.parent.glob(".tmp-*")), "and no temporary file"
    assert nbformat.read(page.with_name("page.failed.ipynb"), as_version=4).cells[0].source == "x = 1"
    page.write_text("the previous page")
    with pytest.raises(NotebookError):
        run_notebook(source, page)
    assert page.read_text() == "the previous page", "a previous page is not replaced by half of one"
    code, _, err = cli(capsys, "notebook", "run", "--stand-in-on-failure", source, page)
    assert code == 0 and len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    assert "Traceback" not in err and "stopped before it finished" in err
    assert "not built" in nbformat.read(page, as_version=4).cells[0].source
    assert page.stat().st_mtime == 0, "make sees the stand-in as out of date and renders the page again"


def test_a_run_page_killed_while_make_runs_renders_it_is_rendered_again_by_make(tmp_path, monkeypatch):
    """`make runs` re-executes a group's run page outside make's dependency tracking; a render
    killed midway must leave make seeing the old page as out of date."""
    pages = tmp_path / "runs"
    pages.mkdir()
    page, source = pages / "eurosat-ul.ipynb", tmp_path / "run.md"
    source.write_text("the run notebook")
    page.write_text("the previous page")
    os.utime(source, (time.time() - 60, time.time() - 60))  # the page is newer: up to date for make
    (tmp_path / "Makefile").write_text(f"{page}: {source}\n\tcp {source} {page}\n")

    def make_would_render() -> bool:
        return subprocess.run(["make", "-q", "-C", str(tmp_path), str(page)], capture_output=True).returncode != 0

    if shutil.which("make"):
        assert not make_would_render()

    dead = _dead_pid()

    def killed_midway(command, **kwargs):
        (pages / f".tmp-{_host()}-{dead}-0a1b2c.ipynb").write_text('{"cells": [')  # half written
        return subprocess.CompletedProcess(command, -9, "", "Killed")

    monkeypatch.setattr(runner.subprocess, "run", killed_midway)
    runner.run_matrices("sim", ["table1"], ["eurosat"], ["ul"], ["zero_shot"], [1], records_dir=tmp_path / "records",
                        notebooks_dir=pages)
    assert page.read_text() == "the previous page", "the old page stays readable meanwhile"
    assert page.stat().st_mtime < source.stat().st_mtime, "but is out of date"
    if shutil.which("make"):
        assert make_would_render(), "so the next `make book` renders it again"
