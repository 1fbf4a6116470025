"""Results records: one JSON file per run, written atomically, keyed by a hash of its config."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cache
from importlib import metadata
from pathlib import Path

from cap.atomic import atomic_write
from cap.errors import CapError
from cap.experiments.locks import MOVE_IT_AWAY, lock_path_problem, not_a_file
from cap.experiments.provenance import code_version, current_fingerprint, describe_code

log = logging.getLogger(__name__)


def _plain(value):
    """JSON-ready copy of numpy scalars/arrays, tuples and paths inside ``value``."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# Where records go unless a records folder is given: the book's, relative to the working directory.
DEFAULT_RECORDS = Path("book/_generated/records")

# Version of the record layout (which fields a record has and what they mean); a record of another
# layout is stale. Which code made a record's numbers is its code fingerprint
# (:mod:`cap.experiments.provenance`), checked on every read, so a change to the library needs no
# bump here. 7: every record names its code (fingerprint, commit, uncommitted changes).
RECORD_VERSION = 7


def config_hash(config: dict) -> str:
    """Short stable hash of a fully resolved config."""
    text = json.dumps(_plain(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@cache
def environment() -> dict:
    """Versions and hardware, stored with every record (read once per process: package metadata is slow)."""
    versions = {}
    for package in ("cap", "numpy", "torch", "open_clip_torch", "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "versions": versions,
    }


class RecordPathError(CapError):
    """Something other than a file where a run's record, failure record or lock file goes."""


# A record that could not go where it belongs (something else is in the way) is kept beside it
# under this suffix, which no reader of ``<kind>-<key>.json`` files picks up.
RESCUED_SUFFIX = ".rescued"


def write_record(directory: str | Path, kind: str, config: dict, results: dict) -> Path:
    """Write ``{kind}-{hash}.json`` into ``directory`` atomically and return its path. If a
    directory (or another non-file) stands there, the record is kept as ``<that name>.rescued``
    and RecordPathError says how to put it in place: a computed result is never lost."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = config_hash(config)
    record = {"kind": kind, "version": RECORD_VERSION, "key": key, "config": config, "results": results,
              "code": code_version(), "environment": environment(), "written": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    # No indentation: json's C encoder, several times faster than its indenting Python one on the
    # long per-image lists of a run record (pages and the CSV are the readable views).
    text = json.dumps(_plain(record), allow_nan=True)
    path = directory / f"{kind}-{key}.json"
    odd = not_a_file(path)
    if odd is None:
        try:
            return atomic_write(path, lambda tmp: tmp.write_text(text))
        except IsADirectoryError:  # a directory made there meanwhile
            odd = "a directory"
    rescued = atomic_write(path.with_name(path.name + RESCUED_SUFFIX), lambda tmp: tmp.write_text(text))
    raise RecordPathError(f"{path} is {odd}, so run {key}'s {kind} record was saved as {rescued} instead: move "
                          f"{path.name} away, then `mv {rescued} {path}` (nothing is recomputed)")


def run_path_problem(key: str, records_dir: str | Path) -> str | None:
    """What stands where run ``key`` writes a file (its record, failure record or lock file): a
    directory or another non-file; None when nothing is in the way."""
    records_dir = Path(records_dir)
    for kind, what in (("run", "record"), ("failed", "failure record")):
        path = records_dir / f"{kind}-{key}.json"
        odd = not_a_file(path)
        if odd:
            return f"{path} is {odd} where run {key}'s {what} file goes"
    return lock_path_problem(key, records_dir)


def check_run_paths(keys, records_dir: str | Path) -> None:
    """RecordPathError, before any of runs ``keys`` starts, if something other than a file stands
    where one of them writes a file (it would train, then fail to write its record)."""
    problems = [problem for key in keys if (problem := run_path_problem(key, records_dir))]
    if problems:
        more = f" (and {len(problems) - 1} more like it: `python -m cap runs --list` names them)" \
            if problems[1:] else ""
        raise RecordPathError(f"{problems[0]}{more}; no run was started: {MOVE_IT_AWAY}")


# What every record holds, and what the results of a run or a failure record must hold besides.
_RECORD_FIELDS = {"kind": str, "version": int, "key": str, "config": dict, "results": dict}
_RESULT_FIELDS = {"run": {"status": str, "headline": (int, float)}, "failed": {"error": str}}


def record_problem(record: object, path: str | Path) -> str | None:
    """Why ``record`` (as read from ``path``, named ``<kind>-<key>.json``) is not a usable record of
    this layout (another version, a missing or mistyped field, a key that is not its config's hash),
    or None when it is one."""
    if not isinstance(record, dict):
        return f"it holds a JSON {type(record).__name__}, not a record"
    version = record.get("version", 1)
    if version != RECORD_VERSION:
        return f"record version {version}, this code writes {RECORD_VERSION}"
    kind, _, key = Path(path).stem.rpartition("-")
    fields = _RECORD_FIELDS | {f"results.{name}": t for name, t in _RESULT_FIELDS.get(kind, {}).items()}
    for name, types in fields.items():
        parent, _, leaf = name.rpartition(".")
        value = (record[parent] if parent else record).get(leaf)
        if isinstance(value, bool) or not isinstance(value, types):
            return f"field {name!r} is missing or not a {getattr(types, '__name__', 'number')}"
    headline = record["results"].get("headline")
    if kind == "run" and not (isinstance(headline, (int, float)) and 0 <= headline <= 100):
        return f"its headline {headline!r} is not an accuracy in [0, 100]"
    if (record["kind"], record["key"]) != (kind, key):
        return f"its kind and key ({record['kind']}, {record['key']}) do not match its file name"
    if config_hash(record["config"]) != key:
        return "its key is not the hash of its config (edited by hand?)"
    return None


def code_problem(record: dict) -> str | None:
    """Why ``record``'s numbers are not this code's (another code fingerprint), or None."""
    code = record.get("code") if isinstance(record.get("code"), dict) else None
    if code is None or code.get("fingerprint") != current_fingerprint():
        return f"made by {describe_code(code)}; the library is now code {current_fingerprint()}"
    return None


class StaleRecordError(CapError):
    """A record that is unreadable, invalid, of another layout version or made by other code: rerun its run."""


def read_current_record(path: str | Path) -> dict:
    """The record at ``path``; StaleRecordError if it cannot be read, is not a valid record, has
    another layout version or was made by code other than this (another fingerprint)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StaleRecordError(f"{path} cannot be read ({err})") from err
    problem = record_problem(record, path) or code_problem(record)
    if problem:
        raise StaleRecordError(f"{problem} ({Path(path).name})")
    return record


def read_records(directory: str | Path, kind: str | None = None) -> list[dict]:
    """Every valid current record in ``directory`` (optionally of one kind); a file that is not one
    is left out with a warning naming it (its run is rerun where runs are skipped)."""
    records = []
    for path in sorted(Path(directory).glob(f"{kind or '*'}-*.json")):
        try:
            records.append(read_current_record(path))
        except StaleRecordError as err:
            log.warning("left out %s: %s; rerun its run or notebook to replace it", path, err)
    return records


@dataclass(frozen=True)
class RunStatus:
    state: str  # done, failed, stale, missing
    detail: str = ""
    record: dict | None = field(default=None, compare=False, repr=False)  # the record, when done


def record_status(key: str, records_dir: str | Path) -> RunStatus:
    """What the records folder holds for run ``key``: a current record (done, with the record), one
    that is unreadable, of another layout version or made by other code (stale: rerun it), a failure
    record of this code (failed, with its error), a directory where one of its files goes (failed,
    naming it) or nothing (a failure of other code is not this code's: the run is tried again)."""
    records_dir = Path(records_dir)
    path = records_dir / f"run-{key}.json"
    if path.is_file():
        try:
            return RunStatus("done", record=read_current_record(path))
        except StaleRecordError as err:
            return RunStatus("stale", str(err))
    blocked = run_path_problem(key, records_dir)
    if blocked:  # the run could not write its record: failed until someone moves the thing away
        return RunStatus("failed", f"{blocked}: {MOVE_IT_AWAY}")
    failed = records_dir / f"failed-{key}.json"
    if failed.is_file():
        try:
            record = json.loads(failed.read_text())
            problem = record_problem(record, failed)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            problem = f"cannot be read ({err})"
        if problem:
            return RunStatus("failed", f"{failed.name} (unreadable: {problem})")
        other_code = code_problem(record)
        if other_code:  # a failure of other code says nothing of this code's: try again
            return RunStatus("missing", f"failed with other code: {other_code}")
        return RunStatus("failed", record["results"]["error"])
    return RunStatus("missing")
