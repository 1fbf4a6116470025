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


def run(config: RunConfig, out_dir: str | Path, force: bool = False, stop_after_epoch: int | None = None) -> Path:
    """Run ``config`` unless its record exists; return the record's path."""
    config = resolve(config)
    key = config_hash(as_dict(config))
    out_dir = writable_folder(out_dir, "records folder", "choose another one (--out of `python -m cap run`, "
                              "--records of `python -m cap runs`) or make it writable")
    remove_stale_temporaries(out_dir)  # half-written records of killed runs
    path = out_dir / f"run-{key}.json"
    if path.exists() and not force:
        try:
            read_current_record(path)
            log.info("record %s exists: skipped", path)
            return path
        except StaleRecordError as err:  # an older layout (or a broken file) is rerun, never reused
            log.info("record %s is stale (%s): rerunning", path, err)
    run_dir = out_dir / "checkpoints" / key
    if force:
        shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    method = get_method(config.method)
    try:
        source = make_source(config)
        backbone = source.make_backbone(config, method.prompt, device)
        results = method.train(config, source, backbone, run_dir, stop_after_epoch)
    except RunInterrupted:
        raise
    except Exception as err:
        write_record(out_dir, "failed", as_dict(config), {"status": "failed", "error": f"{type(err).__name__}: {err}",
                                                          "traceback": traceback.format_exc()})
        raise
    results |= {
        "status": "ok",
        "headline": headline(results["metrics"], config.paradigm),
        "classnames": source.classnames,
        "seen": list(source.split.seen),
        "ground_truth": source.ground_truth() if hasattr(source, "ground_truth") else None,  # simulator only
        "wall_seconds": time.perf_counter() - started,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "descriptions": {"source": getattr(source, "descriptions_source", "simulator description vectors"),
                         "provenance": getattr(source, "descriptions_provenance", None)},
    }
    written = write_record(out_dir, "run", as_dict(config), results)
    (out_dir / f"failed-{key}.json").unlink(missing_ok=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    log.info("%s %s %s seed %d: %.2f (%s)", config.method, config.dataset, config.paradigm, config.seed,
             results["headline"], written)
    return written
