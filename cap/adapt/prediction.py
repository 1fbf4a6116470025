"""`cap predict`: the classifier `cap adapt` wrote, on a folder of new images, CPU or GPU."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from cap.adapt.classifier_file import load_classifier
from cap.adapt.predictions import classify_files, prediction_rows, write_csv
from cap.adapt.user_inputs import InputError, find_images
from cap.atomic import writable_folder
from cap.errors import check_int
from cap.sources.real_images import default_workers

log = logging.getLogger(__name__)


def skipped_path(csv_path: str | Path) -> Path:
    """Where the images that could not be read are listed: beside the CSV, ``<name>_skipped.csv``."""
    csv_path = Path(csv_path)
    return csv_path.with_name(csv_path.stem + "_skipped.csv")


def predict_folder(classifier: str | Path, images: str | Path, out: str | Path, weights: str | None = None,
                   device: str = "auto", workers: int | None = None, batch_size: int = 256) -> dict:
    """Classify every image under ``images`` (any depth) with the adapted classifier and write the CSV
    ``out`` (path, class, confidence); unreadable images are skipped and listed in
    :func:`skipped_path`. ``workers``: decoding processes (default min(8, CPUs)). Returns {"csv", "n",
    "skipped", "skipped_csv", "seconds", "device"}."""
    started = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise InputError(f"--out {out} should be a .csv file (the predictions are a CSV), e.g. {out}.csv")
    check_int("batch_size", batch_size, 1)
    writable_folder(out.parent, "folder of --out", "choose another --out")
    paths = find_images(images)
    backbone, _, state = load_classifier(classifier, weights, device)
    workers = default_workers() if workers is None else check_int("workers", workers, 0)
    index, pred, confidence, skipped = classify_files(backbone, paths, batch_size, workers)
    rows = prediction_rows([paths[i] for i in index], state["classnames"], {"adapted": (pred, confidence)})
    write_csv(out, ["path", "class", "confidence"], rows)
    listed = skipped_path(out)
    if skipped:
        write_csv(listed, ["path", "why"], skipped)
    else:
        listed.unlink(missing_ok=True)  # a list from an earlier call would describe other files
    return {"csv": str(out), "n": len(rows), "skipped": skipped, "skipped_csv": str(listed),
            "seconds": time.perf_counter() - started, "device": str(backbone.device)}
