"""Run one configuration end to end and write its results record.

``run(config, out_dir)`` resolves the config, skips it when a current record exists (unless forced;
a stale record is rerun), builds the source and its backbone, trains the method (resuming from a
checkpoint when a previous attempt was killed) and writes ``run-<config hash>.json`` atomically.
"""

from __future__ import annotations

import logging
import shutil
import time
import traceback
from pathlib import Path

import torch

from cap.atomic import remove_stale_temporaries, writable_folder
from cap.config import RunConfig, as_dict, resolve
from cap.experiments.records import StaleRecordError, config_hash, read_current_record, write_record
from cap.methods import get_method
from cap.methods.checkpoints import RunInterrupted
from cap.methods.engine import headline
from cap.sources import make_source

log = logging.getLogger(__name__)


def run(config: RunConfig, out_dir: str | Path, force: bool = False, stop_after: int | None = None) -> Path:
    """Run ``config`` unless its record exists; return the record's path. ``stop_after`` (tests of
    resuming): end as a killed run would, after that epoch (CAP, 0-based) or round (the baselines,
    1-based), leaving its checkpoint and no record."""
    config = resolve(config)
    out_dir = _records_folder(out_dir)
    path = _existing_record(config, out_dir, force)
    if path:
        return path
    run_dir = _run_dir(config, out_dir, force)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    method = get_method(config.method)
    try:
        source, backbone = _inputs(config, method)
        results = method.train(config, source, backbone, run_dir, stop_after)
    except RunInterrupted:
        raise
    except Exception as err:
        _write_failure(config, out_dir, err)
        raise
    return _write_results(config, source, results, out_dir, time.perf_counter() - started)


def _records_folder(out_dir: str | Path) -> Path:
    out_dir = writable_folder(out_dir, "records folder", "choose another one (--out of `python -m cap run`, "
                              "--records of `python -m cap runs`) or make it writable")
    remove_stale_temporaries(out_dir)  # half-written records of killed runs
    return out_dir


def _existing_record(config: RunConfig, out_dir: Path, force: bool) -> Path | None:
    """The path of ``config``'s current record, unless forced (a stale record is rerun, never reused)."""
    path = out_dir / f"run-{config_hash(as_dict(config))}.json"
    if path.exists() and not force:
        try:
            read_current_record(path)
            log.info("record %s exists: skipped", path)
            return path
        except StaleRecordError as err:
            log.info("record %s is stale (%s): rerunning", path, err)
    return None


def _run_dir(config: RunConfig, out_dir: Path, force: bool) -> Path:
    """The run's checkpoint folder (emptied when forced)."""
    run_dir = out_dir / "checkpoints" / config_hash(as_dict(config))
    if force:
        shutil.rmtree(run_dir, ignore_errors=True)
    return run_dir


def _inputs(config: RunConfig, method):
    source = make_source(config)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return source, source.make_backbone(config, method.prompt, device)


def _write_failure(config: RunConfig, out_dir: Path, err: Exception) -> None:
    write_record(out_dir, "failed", as_dict(config), {"status": "failed", "error": f"{type(err).__name__}: {err}",
                                                      "traceback": traceback.format_exc()})


def _write_results(config: RunConfig, source, results: dict, out_dir: Path, wall_seconds: float) -> Path:
    """The run's record; its failure record of an earlier attempt and its checkpoints go."""
    key = config_hash(as_dict(config))
    cuda = torch.cuda.is_available()
    results = results | {
        "status": "ok",
        "headline": headline(results["metrics"], config.paradigm),
        "classnames": source.classnames,
        "seen": list(source.split.seen),
        "ground_truth": source.ground_truth() if hasattr(source, "ground_truth") else None,  # simulator only
        "wall_seconds": wall_seconds,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "descriptions": {"source": getattr(source, "descriptions_source", "simulator description vectors"),
                         "provenance": getattr(source, "descriptions_provenance", None)},
    }
    written = write_record(out_dir, "run", as_dict(config), results)
    (out_dir / f"failed-{key}.json").unlink(missing_ok=True)
    shutil.rmtree(out_dir / "checkpoints" / key, ignore_errors=True)
    log.info("%s %s %s seed %d: %.2f (%s)", config.method, config.dataset, config.paradigm, config.seed,
             results["headline"], written)
    return written
