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

LOCKS_DIR = "locks"
# A status probe holds a shared lock for microseconds; an acquirer that meets one tries again.
_ACQUIRE_TRIES = 5
_ACQUIRE_PAUSE_S = 0.02


def lock_path(key: str, records_dir: str | Path) -> Path:
    return Path(records_dir) / LOCKS_DIR / f"{key}.lock"


class RunLock:
    """``with RunLock(key, records) as lock: if lock.held: ...`` — never blocks."""

    def __init__(self, key: str, records_dir: str | Path):
        self.path = lock_path(key, records_dir)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock if no other process holds it; return whether this process holds it now."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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
    except FileNotFoundError:
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
