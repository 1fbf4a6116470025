"""Results records: one JSON file per run, written atomically, keyed by a hash of its config."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from cap.errors import CapError


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

# Version of the record layout. Readers treat a record of another version as stale (to be rerun),
# never as a result. 3: test labels, predictions, confidences and class counts in run records;
# cluster_seed in configs.
RECORD_VERSION = 3


def config_hash(config: dict) -> str:
    """Short stable hash of a fully resolved config."""
    text = json.dumps(_plain(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def environment() -> dict:
    """Versions and hardware, stored with every record."""
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


def write_record(directory: str | Path, kind: str, config: dict, results: dict) -> Path:
    """Write ``{kind}-{hash}.json`` into ``directory`` atomically and return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = config_hash(config)
    record = {"kind": kind, "version": RECORD_VERSION, "key": key, "config": config, "results": results,
              "environment": environment(), "written": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    path = directory / f"{kind}-{key}.json"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(_plain(record), handle, indent=1, allow_nan=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class StaleRecordError(CapError):
    """A record that is unreadable or written by another layout version: rerun its run."""


def read_current_record(path: str | Path) -> dict:
    """The record at ``path``; StaleRecordError if it cannot be read or has another layout version."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise StaleRecordError(f"{path} cannot be read ({err})") from err
    version = record.get("version", 1)
    if version != RECORD_VERSION:
        raise StaleRecordError(f"record version {version}, this code writes {RECORD_VERSION}")
    return record


def read_records(directory: str | Path, kind: str | None = None) -> list[dict]:
    """Every record in ``directory`` (optionally of one kind); unreadable files are an error naming them."""
    records = []
    for path in sorted(Path(directory).glob(f"{kind or '*'}-*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise CapError(f"results record {path} cannot be read ({err}); delete it and rerun its notebook") from err
    return records


@dataclass(frozen=True)
class RunStatus:
    state: str  # done, failed, stale, missing
    detail: str = ""
    record: dict | None = field(default=None, compare=False, repr=False)  # the record, when done


def record_status(key: str, records_dir: str | Path) -> RunStatus:
    """What the records folder holds for run ``key``: a current record (done, with the record), one
    that is unreadable or of another layout version (stale: rerun it), a failure record (failed,
    with its error) or nothing."""
    records_dir = Path(records_dir)
    path = records_dir / f"run-{key}.json"
    if path.is_file():
        try:
            return RunStatus("done", record=read_current_record(path))
        except StaleRecordError as err:
            return RunStatus("stale", str(err))
    failed = records_dir / f"failed-{key}.json"
    if failed.is_file():
        try:
            return RunStatus("failed", json.loads(failed.read_text())["results"].get("error", ""))
        except (OSError, json.JSONDecodeError, KeyError):
            return RunStatus("failed", f"{failed} (unreadable)")
    return RunStatus("missing")
