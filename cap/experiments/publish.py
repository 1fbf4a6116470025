"""What the built site serves besides its pages: every record, one CSV of all runs, the figures.

:func:`publish_records` copies each record (one JSON per run) under ``records/<profile>/`` of a
folder the book serves at its root (``html_extra_path``) and writes ``records/runs.csv``, one row
per record. :func:`notebook_figures` lists the figures of an executed page notebook with their
captions, for the figures page's thumbnails and the landing page's headline figure.
"""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cap.experiments.records import RECORD_VERSION

CSV_NAME = "runs.csv"
RESULT_KEYS = ("top1", "seen", "unseen", "harmonic_mean")
RESULT_COLUMNS = ["profile", "record", "key", "state", "headline", *RESULT_KEYS, "wall_seconds", "train_seconds",
                  "device", "written", "python", "torch", "open_clip_torch"]


def site_folder(records_root: str | Path) -> Path:
    """The folder served at the site's root: ``site`` beside the records folder."""
    return Path(records_root).parent / "site"


def record_row(profile: str, path: Path) -> dict:
    """One CSV row: where the record is, its state, its results and every config field."""
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return {"profile": profile, "record": path.name, "state": f"unreadable: {err}"}
    results, config, env = record.get("results", {}), record.get("config", {}), record.get("environment", {})
    metrics = results.get("metrics", {})
    state = results.get("status", "?")
    if record.get("version", 1) != RECORD_VERSION:
        state = f"stale (record version {record.get('version', 1)})"
    row = {"profile": profile, "record": path.name, "key": record.get("key"), "state": state,
           "headline": results.get("headline"), **{k: metrics.get(k) for k in RESULT_KEYS},
           "wall_seconds": results.get("wall_seconds"), "train_seconds": results.get("train_seconds"),
           "device": results.get("device"), "written": record.get("written"), "python": env.get("python"),
           "torch": env.get("versions", {}).get("torch"), "open_clip_torch": env.get("versions", {}).get("open_clip_torch"),
           "error": results.get("error")}
    return row | {f"config.{k}": v for k, v in config.items()}


def runs_table(records_root: str | Path) -> pd.DataFrame:
    """Every record under ``records_root/<profile>/`` (runs and failures), one row each."""
    rows = [record_row(path.parent.name, path) for path in sorted(Path(records_root).glob("*/*.json"))
            if path.name.startswith(("run-", "failed-"))]
    frame = pd.DataFrame(rows)
    for column in RESULT_COLUMNS:
        if column not in frame:
            frame[column] = pd.Series(dtype=object)
    return frame


def publish_records(records_root: str | Path, out: str | Path | None = None) -> pd.DataFrame:
    """Copy every record to ``<out>/records/<profile>/`` and write ``<out>/records/runs.csv``;
    return the table written. Records no longer present are removed from ``out``."""
    records_root = Path(records_root)
    target = Path(out or site_folder(records_root)) / "records"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in sorted(records_root.glob("*/*.json")):
        if path.name.startswith(("run-", "failed-")):
            (target / path.parent.name).mkdir(exist_ok=True)
            shutil.copy2(path, target / path.parent.name / path.name)
    table = runs_table(records_root)
    table.to_csv(target / CSV_NAME, index=False)
    return table


@dataclass(frozen=True)
class NotebookFigure:
    """A figure of an executed notebook: its PNG, its caption (Markdown) and its name (label)."""

    png: bytes
    caption: str
    name: str
    tags: tuple[str, ...]


def notebook_figures(path: str | Path) -> list[NotebookFigure]:
    """Every PNG output of ``path`` (an executed notebook) with the caption its cell gives it
    (``mystnb.figure`` cell metadata; empty when it has none), in page order."""
    import nbformat

    notebook = nbformat.read(Path(path), as_version=4)
    figures = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        options = (cell.metadata.get("mystnb") or {}).get("figure") or {}
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                figures.append(NotebookFigure(base64.b64decode(data["image/png"]), str(options.get("caption", "")),
                                              str(options.get("name", "")), tuple(cell.metadata.get("tags", []))))
    return figures
