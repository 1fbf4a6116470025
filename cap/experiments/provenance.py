"""Which code made a record: a fingerprint of the source that can change its numbers, and the commit.

The fingerprint is a hash of every file of the ``cap`` package that training and evaluation read:
everything but the harness and the book's layer (``cap/experiments/`` less ``runs.py``, which seeds
and writes a run, and the command line). Those plan, schedule, lock, analyse and draw; they compute
no number of a run, so editing them (a page, a table, the runner) leaves every record current. A
file added anywhere else is covered without being listed: a new module can only make records stale,
never leave a stale one current.

A record whose fingerprint differs from the code's is stale (:mod:`cap.experiments.records`): the
runner plans its run again and the pages say so instead of showing its number.
"""

from __future__ import annotations

import hashlib
import subprocess
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # the cap package's folder
SUFFIXES = (".py", ".yml", ".yaml", ".txt", ".json")
# Code that plans, runs, analyses and shows runs but computes none of their numbers, and the
# front end for one's own images (cap/adapt), which writes no record.
PRESENTATION = ("experiments/", "adapt/", "cli.py", "__main__.py")
NUMBER_CODE = ("experiments/runs.py",)  # inside a presentation folder, but seeds and writes a run


def fingerprinted_files(package: Path = PACKAGE) -> list[Path]:
    """The package's files that can change a run's numbers, in a stable order."""
    files = []
    for path in sorted(package.rglob("*")):
        relative = path.relative_to(package).as_posix()
        if not path.is_file() or path.suffix not in SUFFIXES or "__pycache__" in relative:
            continue
        if relative.startswith(PRESENTATION) and relative not in NUMBER_CODE:
            continue
        files.append(path)
    return files


def fingerprint(package: Path = PACKAGE) -> str:
    """A short hash of :func:`fingerprinted_files` (their paths and bytes)."""
    digest = hashlib.sha256()
    for path in fingerprinted_files(package):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


@cache
def current_fingerprint() -> str:
    """The running code's fingerprint (read once per process)."""
    return fingerprint()


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(PACKAGE), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@cache
def code_version() -> dict:
    """What a record says of its code: the fingerprint, and where the package is a git checkout,
    the commit and whether the checkout had uncommitted changes (``None`` for both otherwise)."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"fingerprint": current_fingerprint(), "commit": commit,
            "dirty": None if status is None else bool(status)}


def describe_code(code: dict | None) -> str:
    """E.g. ``code 3f2a…(commit 1a2b3c4d, uncommitted changes)`` for messages and pages."""
    if not code:
        return "code of unknown version"
    commit = code.get("commit")
    where = f"commit {commit[:10]}{', uncommitted changes' if code.get('dirty') else ''}" if commit else "no commit"
    return f"code {code.get('fingerprint')} ({where})"
