"""``python -m cap data check``: read a dataset, compare its image counts with the published splits
and decode every image (a corrupt file is found here, not in the middle of a run)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from cap.data.images import ImageReadError, load_rgb
from cap.data.readers import read_dataset
from cap.data.splits import make_split
from cap.data.registry import check_paradigm, get_dataset

def _row(split: str, expected: int | None, found: int) -> dict:
    status = "-" if expected is None else ("ok" if expected == found else "differs")
    return {"split": split, "expected": expected, "found": found, "status": status}


def _decode_error(path: str) -> str | None:
    try:
        load_rgb(path)
    except ImageReadError as err:
        return str(err.__cause__ or err)
    return None


def undecodable_images(paths: Sequence[str], workers: int | None = None) -> list[tuple[str, str]]:
    """(path, error) of every image in ``paths`` that cannot be decoded, in order. Every image is
    fully decoded, in a pool of threads (Pillow decodes without holding the GIL), with a progress bar."""
    workers = workers or min(32, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        errors = list(tqdm(pool.map(_decode_error, paths, chunksize=64), total=len(paths), unit="img",
                           desc="decoding images"))
    return [(path, error) for path, error in zip(paths, errors) if error is not None]


def check_dataset(name: str, root: str | Path | None = None, paradigm: str | None = None,
                  decode: bool = False) -> list[dict]:
    """Rows ``{split, expected, found, status}``: one per split file, then the pool and test totals.

    Reading the dataset already checks the class list and that every listed image exists (a
    problem raises a DataError). With ``paradigm``, rows for its labelled/unlabelled parts follow
    (split seed 500, validation seed 0, two labels per class in SSL). With ``decode``, every image
    is decoded; a last row counts those that decode and lists the others (``bad``: path, error).
    """
    info = get_dataset(name)
    if paradigm is not None:
        paradigm = check_paradigm(paradigm)
    files = read_dataset(info.name, root)
    expected = info.expected_counts
    rows = [_row(split, count, files.split_sizes[split]) for split, count in expected.items()]
    pool_parts = [expected[s] for s in ("train", "val") if s in expected]
    pool_expected = sum(pool_parts) if pool_parts and None not in pool_parts else None
    rows.append(_row("training pool", pool_expected, len(files.train)))
    if info.name == "eurosat":  # the official quirk: test images are also in the pool
        rows.append(_row("test images in pool", None, len(set(files.test.paths) & set(files.train.paths))))
    if paradigm is not None:
        split = make_split(paradigm, files.train.labels, info.n_classes)
        labelled = 2 * info.n_classes if paradigm == "ssl" else None
        rows.append(_row(f"{paradigm} labelled", labelled, len(split.labelled)))
        rows.append(_row(f"{paradigm} unlabelled", None, len(split.unlabelled)))
    if decode:
        paths = list(dict.fromkeys(files.train.paths + files.test.paths))
        bad = undecodable_images(paths)
        rows.append(_row("images that decode", len(paths), len(paths) - len(bad)) | {"bad": bad})
    return rows


def format_check(rows: list[dict], title: str = "") -> str:
    """A plain-text table of :func:`check_dataset` rows, with a closing verdict."""
    lines = [title] if title else []
    lines.append(f"{'split':<22}{'expected':>10}{'found':>10}  status")
    for row in rows:
        expected = "" if row["expected"] is None else str(row["expected"])
        lines.append(f"{row['split']:<22}{expected:>10}{row['found']:>10}  {row['status']}")
    for row in rows:
        lines += [f"cannot decode {path}: {error}" for path, error in row.get("bad", [])]
    bad = sum(len(row.get("bad", [])) for row in rows)
    if bad:
        lines.append(f"{bad} image(s) cannot be decoded: re-download them (or the dataset), or remove them together "
                     "with their lines in the split files; a run would stop at the first one.")
    differing = sum(row["status"] == "differs" and not row.get("bad") for row in rows)
    if differing:
        lines.append(f"{differing} count(s) differ from the published splits: a partial or different copy? "
                     "See book/getting_the_data.md.")
    elif not bad:
        lines.append("all counts match the published splits; every listed image exists"
                     + ("." if not any("bad" in row for row in rows) else " and decodes."))
    return "\n".join(lines)
