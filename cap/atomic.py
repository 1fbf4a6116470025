"""Files written all at once, and folders proved writable before any work starts.

Every file the library writes for others to read (records, checkpoints, cached features, executed
notebooks) goes through :func:`atomic_write`: a temporary file beside the target, then one rename,
so a reader sees the old file or the new one, never half of one. The temporary file is created
with the permissions the umask gives any new file (``tempfile.mkstemp`` would make it 0600) and
is named after the machine and process that write it (``.tmp-<host>-<pid>-<random><suffix>``),
so :func:`remove_stale_temporaries` can tell the leftovers of a killed writer from the files of
one still running.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Callable
from pathlib import Path

from cap.errors import CapError

TEMP_PREFIX = ".tmp-"
_TEMP_NAME = re.compile(r"\.tmp-(?P<host>\w+)-(?P<pid>\d+)-[0-9a-f]+(\.\w+)?")


def _host() -> str:
    return re.sub(r"\W", "_", socket.gethostname()) or "host"


def temporary_path(path: str | Path) -> Path:
    """A new, empty file beside ``path`` (same suffix), created with the umask's permissions."""
    path = Path(path)
    tmp = path.with_name(f"{TEMP_PREFIX}{_host()}-{os.getpid()}-{secrets.token_hex(6)}{path.suffix}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return tmp


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file beside it, then one rename
    puts it in place. If ``write`` raises, the temporary file is removed and ``path`` is untouched
    (``write`` may move the temporary file elsewhere itself, e.g. to keep a failed notebook)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files in ``folder`` left by killed writers on this machine (their
    process is gone); files of live processes and of other machines stay. Returns what was removed."""
    removed, host = [], _host()
    for path in Path(folder).glob(f"{TEMP_PREFIX}*"):
        match = _TEMP_NAME.fullmatch(path.name)
        if match and match["host"] == host and not _alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def writable_folder(path: str | Path, what: str, fix: str) -> Path:
    """Create ``path`` if needed and prove that files can be written in it; otherwise a CapError
    naming ``what`` (e.g. "records folder"), the folder, the reason, and ``fix`` (what to do)."""
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        temporary_path(path / "probe").unlink()
    except OSError as err:
        blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        reason = f"{blocking} is a file, not a folder" if blocking else (err.strerror or str(err))
        action = "written" if path.is_dir() else "created"
        raise CapError(f"{what} {path} cannot be {action} ({reason}); {fix}") from None
    return path
