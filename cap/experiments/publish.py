"""What the built site serves besides its pages: every record, one CSV of all runs, the figures.

:func:`publish_records` copies each record (one JSON per run) under ``records/<profile>/`` of a
folder the book serves at its root (``html_extra_path``) and writes ``records/runs.csv``, one row
per record. :func:`notebook_figures` lists the figures of an executed page notebook with their
captions, for the figures page's thumbnails and the landing page's headline figure.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cap.experiments.records import RECORD_VERSION, code_problem, record_problem

CSV_NAME = "runs.csv"
RESULT_KEYS = ("top1", "seen", "unseen", "harmonic_mean")
RESULT_COLUMNS = ["profile", "record", "key", "state", "headline", *RESULT_KEYS, "wall_seconds", "train_seconds",
                  "device", "written", "code", "commit", "dirty", "python", "torch", "open_clip_torch"]


def site_folder(records_root: str | Path) -> Path:
    """The folder served at the site's root: ``site`` beside the records folder."""
    return Path(records_root).parent / "site"


def record_row(profile: str, path: Path) -> dict:
    """One CSV row: where the record is, its state, its results and every config field."""
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return {"profile": profile, "record": path.name, "state": f"unreadable: {err}"}
    problem = record_problem(record, path)
    if problem and not problem.startswith("record version"):  # not a record of any layout
        return {"profile": profile, "record": path.name, "state": f"stale ({problem})"}
    results, config, env = record.get("results", {}), record.get("config", {}), record.get("environment", {})
    metrics = results.get("metrics", {})
    state = results.get("status", "?")
    if record.get("version", 1) != RECORD_VERSION:
        state = f"stale (record version {record.get('version', 1)})"
    elif code_problem(record):
        state = "stale (made by other code)"
    code = record.get("code") if isinstance(record.get("code"), dict) else {}
    row = {"profile": profile, "record": path.name, "key": record.get("key"), "state": state,
           "headline": results.get("headline"), **{k: metrics.get(k) for k in RESULT_KEYS},
           "wall_seconds": results.get("wall_seconds"), "train_seconds": results.get("train_seconds"),
           "device": results.get("device"), "written": record.get("written"), "code": code.get("fingerprint"),
           "commit": code.get("commit"), "dirty": code.get("dirty"), "python": env.get("python"),
           "torch": env.get("versions", {}).get("torch"), "open_clip_torch": env.get("versions", {}).get("open_clip_torch"),
           "error": results.get("error")}
    return row | {f"config.{k}": v for k, v in config.items()}


def record_files(records_root: str | Path) -> tuple[list[Path], list[str]]:
    """The record files under ``records_root/<profile>/`` that may be published, and why each other
    entry named like a record was skipped. Only regular files count, reached without following a
    link: a link (even to a record), a dangling link, a FIFO or a folder is never read or copied,
    so nothing outside the records folder reaches the site and nothing blocks the build."""
    records_root = Path(records_root)
    files, skipped = [], []
    entries = sorted(records_root.iterdir()) if records_root.is_dir() else []
    skipped += [f"{entry.name}: a link (not followed)" for entry in entries if entry.is_symlink()]
    for folder in (entry for entry in entries if not entry.is_symlink() and entry.is_dir()):
        for path in sorted(folder.iterdir()):
            if not path.name.startswith(("run-", "failed-")) or not path.name.endswith(".json"):
                continue
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                skipped.append(f"{folder.name}/{path.name}: a link (not followed)")
            elif not stat.S_ISREG(mode):
                skipped.append(f"{folder.name}/{path.name}: not a regular file")
            else:
                files.append(path)
    return files, skipped


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """A text cell a spreadsheet would run as a formula (starting with =, +, -, @, tab or CR) gets a
    leading apostrophe (OWASP's advice for CSV injection); numbers and other text are unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def runs_table(records_root: str | Path) -> pd.DataFrame:
    """Every record under ``records_root/<profile>/`` (runs and failures), one row each."""
    files, _ = record_files(records_root)
    frame = pd.DataFrame([record_row(path.parent.name, path) for path in files])
    for column in RESULT_COLUMNS:
        if column not in frame:
            frame[column] = pd.Series(dtype=object)
    return frame


def publish_records(records_root: str | Path, out: str | Path | None = None) -> pd.DataFrame:
    """Copy every record file (:func:`record_files`) to ``<out>/records/<profile>/`` and write
    ``<out>/records/runs.csv`` (text cells safe to open in a spreadsheet); return the table written,
    whose ``attrs["skipped"]`` lists the entries left out and why. Records no longer present are
    removed from ``out``."""
    records_root = Path(records_root)
    target = Path(out or site_folder(records_root)) / "records"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    files, skipped = record_files(records_root)
    for path in files:
        (target / path.parent.name).mkdir(exist_ok=True)
        shutil.copyfile(path, target / path.parent.name / path.name)
    table = runs_table(records_root)
    table.map(spreadsheet_safe).to_csv(target / CSV_NAME, index=False)
    table.attrs["skipped"] = skipped
    return table


@dataclass(frozen=True)
class NotebookFigure:
    """A figure of an executed notebook: its PNG, its caption (Markdown) and its name (label)."""

    png: bytes
    caption: str
    name: str
    tags: tuple[str, ...]


GLUE_FIGURE = re.compile(r"(?:```|:::)\{glue:figure\}\s+(\S+)[^\n]*\n((?::\w+:[^\n]*\n)*)(.*?)(?:```|:::)", re.S)


def _glue_figures(notebook) -> dict[str, tuple[str, str]]:
    """key -> (caption, name) of every ``{glue:figure}`` directive in the notebook's Markdown."""
    out = {}
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for key, options, caption in GLUE_FIGURE.findall(cell.source):
                name = re.search(r":name:\s*(\S+)", options)
                out[key] = (" ".join(caption.split()), name.group(1) if name else "")
    return out


def notebook_figures(path: str | Path) -> list[NotebookFigure]:
    """Every figure of ``path`` (an executed notebook) as the page shows it, in page order: a PNG
    output with the caption its cell gives it (``mystnb.figure`` cell metadata; empty when none),
    or a glued PNG with the caption of the ``{glue:figure}`` directive that pastes it (glued
    figures no directive pastes are not on the page and are left out)."""
    import nbformat

    notebook = nbformat.read(Path(path), as_version=4)
    glued = _glue_figures(notebook)
    figures = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        options = (cell.metadata.get("mystnb") or {}).get("figure") or {}
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" not in data:
                continue
            key = (output.get("metadata", {}).get("scrapbook") or {}).get("name")
            if key is not None and key not in glued:
                continue
            caption, name = glued[key] if key is not None else (str(options.get("caption", "")),
                                                                  str(options.get("name", "")))
            figures.append(NotebookFigure(base64.b64decode(data["image/png"]), caption, name,
                                          tuple(cell.metadata.get("tags", []))))
    return figures


SOURCE_PATTERNS = ("cap/**/*.py", "cap/**/*.yml", "notebooks/**/*.md")


def publish_sources(root: str | Path, out: str | Path) -> list[str]:
    """Copy the library's and the notebooks' sources (``SOURCE_PATTERNS`` under ``root``) to
    ``<out>/source/<path>.txt``, readable in a browser, with an ``index.html`` listing them; return
    the paths published."""
    from html import escape

    root, target = Path(root), Path(out) / "source"
    shutil.rmtree(target, ignore_errors=True)
    paths = sorted({p.relative_to(root).as_posix() for pattern in SOURCE_PATTERNS for p in root.glob(pattern)
                    if "__pycache__" not in p.parts})
    for path in paths:
        (target / f"{path}.txt").parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / path, target / f"{path}.txt")
    items = "".join(f'<li><a href="{escape(p)}.txt">{escape(p)}</a></li>' for p in paths)
    (target / "index.html").write_text(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Sources of the CAP companion</title></head>'
        '<body><h1>Sources of the CAP companion</h1><p>The library (<code>cap/</code>) and the notebooks '
        '(<code>notebooks/</code>) this site was built from, as plain text. <a href="../index.html">Back to the site'
        f"</a>.</p><ul>{items}</ul></body></html>")
    return paths
