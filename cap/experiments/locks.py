"""Per-run locks: one lock file per record key, held by the process that executes the run.

The lock is an ``fcntl.flock`` on ``<records>/locks/<key>.lock``. The kernel drops a flock when
the process holding it dies, however it dies, so a killed run never leaves a stale lock; the file
holds the holder's host and process id only so that status displays can name it. On a shared
records folder (NFS) Linux maps flock onto the server's byte-range locks, so runners on several
machines exclude each other too.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from cap.errors import CapError

LOCKS_DIR = "locks"
# A status probe holds a shared lock for microseconds; an acquirer that meets one tries again.
_ACQUIRE_TRIES = 5
_ACQUIRE_PAUSE_S = 0.02


def lock_path(key: str, records_dir: str | Path) -> Path:
    return Path(records_dir) / LOCKS_DIR / f"{key}.lock"


class LockPathError(CapError):
    """Something other than a lock file where a run's lock file goes: the run cannot start."""


# What to do about something in the way of a run's file (the lock, record and failure record alike).
MOVE_IT_AWAY = "move it away (or delete it if it holds nothing you need), then run again"


def not_a_file(path: Path) -> str | None:
    """``"a directory"`` (or another kind of non-file) where ``path`` should be a file; None when
    ``path`` is a file or does not exist."""
    if path.is_dir():
        return "a directory"
    if path.exists() and not path.is_file():
        return "not a regular file"
    return None


def lock_path_problem(key: str, records_dir: str | Path) -> str | None:
    """What stands where run ``key``'s lock file (or the locks folder) goes, or None."""
    path = lock_path(key, records_dir)
    if path.parent.exists() and not path.parent.is_dir():
        return f"{path.parent} is a file where the locks folder goes"
    odd = not_a_file(path)
    return f"{path} is {odd} where run {key}'s lock file goes" if odd else None


class RunLock:
    """``with RunLock(key, records) as lock: if lock.held: ...`` — never blocks."""

    def __init__(self, key: str, records_dir: str | Path):
        self.key, self.records_dir = key, records_dir
        self.path = lock_path(key, records_dir)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock if no other process holds it; return whether this process holds it now."""
        if self._fd is not None:
            return True
        problem, fix = lock_path_problem(self.key, self.records_dir), MOVE_IT_AWAY
        if problem is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                problem = f"{self.path} cannot be opened: {err.strerror or err}"
                fix = "make the records folder writable, then run again"
        if problem:
            raise LockPathError(f"run {self.key} cannot take its lock ({problem}): {fix}")
        for attempt in range(_ACQUIRE_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(_ACQUIRE_PAUSE_S * (attempt + 1))
        else:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(key: str, records_dir: str | Path) -> str | None:
    """``"host pid"`` of the process running ``key`` now (``"unknown"`` while it is starting), or None
    when no process holds its lock."""
    path = lock_path(key, records_dir)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file (or something in its way, which no process can hold): not running
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 256, 0).decode(errors="replace").strip() or "unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
