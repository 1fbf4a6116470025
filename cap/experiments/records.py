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

# Version of the record layout. Readers treat a record of another version as stale (to be rerun),
# never as a result. 3: test labels, predictions, confidences and class counts in run records;
# cluster_seed in configs. 4: every run's training budget (gradient steps, images seen), the share
# of σ = 0 classes per CAP epoch, the simulator's planted ground truth. 5: CAP on the feature
# backend steps through the batched seed-stack model (other float rounding than the unbatched step);
# a stacked run's record names its stack. 6: the simulator's image and text offsets share a cosine
# of 0.4 (its modality gap is CLIP's); configs name the simulated class subset (sim_classes). A
# record's key covers its config, not the simulator's code: a change to the simulator bumps this.
RECORD_VERSION = 6


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


def write_record(directory: str | Path, kind: str, config: dict, results: dict) -> Path:
    """Write ``{kind}-{hash}.json`` into ``directory`` atomically and return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = config_hash(config)
    record = {"kind": kind, "version": RECORD_VERSION, "key": key, "config": config, "results": results,
              "environment": environment(), "written": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    # No indentation: json's C encoder, several times faster than its indenting Python one on the
    # long per-image lists of a run record (pages and the CSV are the readable views).
    text = json.dumps(_plain(record), allow_nan=True)
    return atomic_write(directory / f"{kind}-{key}.json", lambda tmp: tmp.write_text(text))


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
    if (record["kind"], record["key"]) != (kind, key):
        return f"its kind and key ({record['kind']}, {record['key']}) do not match its file name"
    if config_hash(record["config"]) != key:
        return "its key is not the hash of its config (edited by hand?)"
    return None


class StaleRecordError(CapError):
    """A record that is unreadable, invalid or written by another layout version: rerun its run."""


def read_current_record(path: str | Path) -> dict:
    """The record at ``path``; StaleRecordError if it cannot be read, is not a valid record, or has
    another layout version."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StaleRecordError(f"{path} cannot be read ({err})") from err
    problem = record_problem(record, path)
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
            return RunStatus("failed", read_current_record(failed)["results"]["error"])
        except StaleRecordError as err:
            return RunStatus("failed", f"{failed.name} (unreadable: {err})")
    return RunStatus("missing")
