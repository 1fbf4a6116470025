"""`cap adapt`: CAP on a folder of one's own images, from class names to an adapted classifier.

:func:`adapt` reads and checks the inputs (before any model is loaded), builds a
:class:`~cap.adapt.folder_source.FolderSource`, trains with the library's one CAP trainer
(:class:`~cap.methods.cap.CapTrainer`: zero-shot pseudolabels, mismatch detection, concept
alignment, the confusion-aware margin, the paper's schedule) and writes into the output folder:

==========================  =================================================================
``predictions.csv``         every readable image: zero-shot and adapted class and confidence
``skipped_images.csv``      every image that could not be read, and why
``classifier.pt``           the trained prompts and adapters (:mod:`cap.adapt.classifier_file`)
``results.json``            what the report shows: balance, flagged classes, margins, curves
``report.ipynb``            ``notebooks/adapt_report.md`` executed with papermill
==========================  =================================================================

A killed run resumes from the trainer's checkpoint (``checkpoints/<key>/``, about once a minute)
when the same command is run again; the key covers the settings and the inputs, so changed
settings start afresh. Features are cached as the paper's runs cache them
(:mod:`cap.sources.feature_cache`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cap.adapt.classifier_file import save_classifier
from cap.adapt.folder_source import FolderSource, split_labelled
from cap.adapt.predictions import classify_files, prediction_rows, write_csv
from cap.adapt.user_inputs import AdaptInputs, InputError, read_inputs
from cap.atomic import atomic_write, writable_folder
from cap.config import RunConfig, as_dict, make_config, resolve
from cap.core.concepts import align_concepts
from cap.errors import ParameterError
from cap.experiments.records import config_hash
from cap.methods.cap import CapTrainer
from cap.methods.engine import zero_shot_leaderboards, zero_shot_probs
from cap.methods.zero_shot import zero_shot_predictions
from cap.sources.real_images import default_workers

log = logging.getLogger(__name__)

OUTPUTS = {"predictions": "predictions.csv", "skipped": "skipped_images.csv", "classifier": "classifier.pt",
           "results": "results.json", "report": "report.ipynb"}
REPORT_NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "adapt_report.md"
SHOWN_IMAGES = 8  # images per flagged class in the report

# RunConfig takes its per-dataset defaults from a registered dataset. A folder of one's own gets
# the paper's defaults, which are those of a dataset the official code does not override.
DEFAULTS_FROM = "resisc45"
# The paper's method where the official code has a stand-in: detected mismatch, best of n descriptions.
FOLDER_DEFAULTS = {"mismatch_source": "detect", "description_choice": "best_of_n"}
SETTINGS = ("seed", "validation_seed", "n_label", "schedule_factor", "epochs", "iters_per_epoch", "batch_size", "lr",
            "momentum", "weight_decay", "warmup_epochs", "k", "tau", "max_main_ratio", "refresh_every", "margin",
            "margin_scale", "delta", "concept_alignment", "cluster_seed", "description_choice", "leaderboard_order",
            "margin_prototypes", "independent_adapters", "backbone", "pretrained", "weights", "precision",
            "prompt_depth", "template_bug")
_NOT_SHOWN = ("dataset", "data_root", "descriptions", "backend", "method")  # fixed, or given as inputs


@dataclass(frozen=True)
class AdaptRequest:
    """One `cap adapt`: the inputs, the output folder, RunConfig ``settings`` (names in SETTINGS)."""

    images: str
    classnames: str
    out: str
    labelled: str | None = None
    descriptions: str | None = None
    settings: dict = field(default_factory=dict)
    device: str = "auto"
    workers: int | None = None
    cache: str | None = None
    report: bool = True


def folder_config(settings: dict, labels: np.ndarray) -> RunConfig:
    """The resolved RunConfig of a folder run: the paper's defaults, FOLDER_DEFAULTS, ``settings``;
    SSL when some labelled images train (see :func:`~cap.adapt.folder_source.split_labelled`)."""
    other = sorted(set(settings) - set(SETTINGS))
    if other:
        valid = {f.name for f in fields(RunConfig)}
        kind = "not a setting of a CAP run" if set(other) - valid else "fixed for a folder of images"
        raise ParameterError(f"--set {', '.join(other)}: {kind}; the settings of `cap adapt` are {', '.join(SETTINGS)}")
    config = resolve(make_config(dataset=DEFAULTS_FROM, backend="openclip", method="cap",
                                 **(FOLDER_DEFAULTS | settings)))
    training = split_labelled(labels, config.n_label, config.validation_seed)[0]
    return resolve(config.replace(paradigm="ssl" if len(training) else "ul"))


def shown_config(config: RunConfig) -> dict:
    return {k: v for k, v in as_dict(config).items() if k not in _NOT_SHOWN and not k.startswith(("sim_", "cpl_"))}


def run_key(config: RunConfig, inputs: AdaptInputs) -> str:
    """What a checkpoint belongs to: the settings and every input (paths, labels, descriptions)."""
    listing = hashlib.sha256("\n".join(inputs.images + inputs.labelled_paths).encode()).hexdigest()
    return config_hash({"config": shown_config(config), "classnames": inputs.classnames, "images": listing,
                        "labels": inputs.labelled_labels.tolist(), "descriptions": inputs.descriptions})


class _TrainerWithProgress(CapTrainer):
    """The CAP trainer with a progress bar over epochs (the loop is CapTrainer.run's)."""

    bar = None

    def end_epoch(self, state: dict, epoch: int, out: dict, margin) -> None:
        super().end_epoch(state, epoch, out, margin)
        if self.bar is None:
            self.bar = tqdm(total=self.config.epochs, initial=epoch, unit="epoch", desc="CAP training")
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{out['loss']:.3f}", confident=f"{out['masked_share']:.0%}")


def train(config: RunConfig, source: FolderSource, run_dir: Path, stop_after: int | None):
    """(results of CapTrainer.run, the trained backbone, its adapters)."""
    torch.manual_seed(config.seed)
    backbone = source.make_backbone(config, "maple", None)
    trainer = _TrainerWithProgress(config, source, backbone, run_dir, backbone.device)
    try:
        results = trainer.run(stop_after)
    finally:
        if trainer.bar is not None:
            trainer.bar.close()
    return results, backbone, trainer.adapters


def adapt(request: AdaptRequest, stop_after: int | None = None, force: bool = False) -> dict:
    """Run `cap adapt`; returns {"out", "skipped", "flagged", "test", "seconds", "reused"}. ``stop_after``
    (tests of resuming): end as a killed run would, after that epoch, leaving the checkpoint."""
    started = time.perf_counter()
    workers = default_workers() if request.workers is None else request.workers
    inputs = read_inputs(request.images, request.classnames, request.labelled, request.descriptions, workers)
    config = folder_config(request.settings, inputs.labelled_labels)
    out = writable_folder(request.out, "output folder", "choose another --out or make it writable")
    key = run_key(config, inputs)
    finished = _finished(out, key)
    if finished and not force:
        log.info("%s already holds this adaptation (key %s): nothing to train (--force trains again)", out, key)
        if request.report and not (out / OUTPUTS["report"]).is_file():
            write_report(out)
        return _summary(out, finished, reused=True)
    source = FolderSource(config, inputs, device=request.device, num_workers=workers, cache=request.cache)
    prepared = time.perf_counter()
    results, backbone, adapters = train(config, source, out / "checkpoints" / key, stop_after)
    trained = time.perf_counter()
    save_classifier(out / OUTPUTS["classifier"], backbone, adapters, config)
    summary = write_outputs(out, source, inputs, backbone, results, request, config)
    summary |= {"key": key, "config": shown_config(config), "device": str(backbone.device),
                "seconds": {"setup": prepared - started, "train": trained - prepared,
                            "total": time.perf_counter() - started}}
    _write_json(out / OUTPUTS["results"], summary)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # this run's, and those of runs with other settings
    if request.report:
        write_report(out)
    return _summary(out, summary, reused=False)


def _finished(out: Path, key: str) -> dict | None:
    path = out / OUTPUTS["results"]
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return results if results.get("key") == key and (out / OUTPUTS["classifier"]).is_file() else None


def _summary(out: Path, results: dict, reused: bool) -> dict:
    return {"out": str(out), "reused": reused, "skipped": results["inputs"]["skipped"],
            "flagged": results["flagged"], "test": results["test"], "seconds": results["seconds"]}


def write_outputs(out: Path, source: FolderSource, inputs: AdaptInputs, backbone, results: dict,
                  request: AdaptRequest, config: RunConfig) -> dict:
    """predictions.csv and skipped_images.csv; returns what results.json holds besides the run's key."""
    n = source.n_folder
    zero_pred, probs = zero_shot_predictions(source.zero_shot_image[:n], source.zero_shot_text, source.logit_scale)
    zero_conf = probs.max(1)
    index, pred, confidence, unreadable = classify_files(backbone, inputs.images, workers=source.num_workers)
    if unreadable:  # a file that changed since it was read: the CSV lists only images with both predictions
        log.warning("%d images could not be read again: %s", len(unreadable), [p for p, _ in unreadable][:5])
    adapted = np.full(n, -1), np.zeros(n)
    adapted[0][index], adapted[1][index] = pred, confidence
    keep = np.flatnonzero(adapted[0] >= 0)
    rows = prediction_rows([inputs.images[i] for i in keep], inputs.classnames,
                           {"zero_shot": (zero_pred[keep], zero_conf[keep]), "adapted": (adapted[0][keep], adapted[1][keep])})
    write_csv(out / OUTPUTS["predictions"], ["path", "zero_shot_class", "zero_shot_confidence", "adapted_class",
                                             "adapted_confidence"], rows)
    skipped = inputs.skipped + unreadable
    write_csv(out / OUTPUTS["skipped"], ["path", "why"], skipped)
    c = len(inputs.classnames)
    return {
        "classnames": inputs.classnames,
        "inputs": {"images": str(request.images), "n_images": n, "classnames_file": str(request.classnames),
                   "labelled": request.labelled, "n_labelled_training": len(source.split.labelled),
                   "descriptions_file": inputs.descriptions_file, "skipped": [list(s) for s in skipped]},
        "predicted_counts": {"zero_shot": np.bincount(zero_pred[keep], minlength=c).tolist(),
                             "adapted": np.bincount(adapted[0][keep], minlength=c).tolist()},
        "dpl_counts": dpl_counts(results),
        "flagged": flagged_classes(source, config, results),
        "test": test_summary(source, backbone, results, request.cache),
        "history": results["history"], "budget": results["budget"], "train_seconds": results["train_seconds"],
    }


def dpl_counts(results: dict) -> dict:
    """D_PL images per class: zero-shot leaderboards, after alignment, after the last refresh."""
    setup = results["setup"]
    counts = {"zero_shot": setup["zero_shot_dpl"]["per_class_count"]}
    if "concept_alignment" in setup:
        counts["aligned"] = setup["concept_alignment"]["dpl"]["per_class_count"]
    if results["refreshes"]:
        counts["final"] = results["refreshes"][-1]["per_class_count"]
    return {stage: [int(per_class[c]) for c in sorted(per_class)] for stage, per_class in counts.items()}


def flagged_classes(source: FolderSource, config: RunConfig, results: dict) -> list[dict]:
    """Each class that mismatch detection flagged: its zero-shot pseudolabelled images and, when it
    has descriptions, the chosen one and the images it brought into D_PL (the trainer's own choice,
    recomputed with the same functions and inputs)."""
    alignment = results["setup"].get("concept_alignment")
    if not alignment:
        return []
    boards = zero_shot_leaderboards(zero_shot_probs(source, config), source.split.unlabelled,
                                    source.split.pseudolabel_classes, config.k, config.leaderboard_order)
    chosen = {int(c): int(i) for c, i in alignment["description_index"].items()}
    out = []
    for c in alignment["mismatched"]:
        name = source.classnames[c]
        entry = {"class": int(c), "name": name, "described": c in chosen, "description": None,
                 "zero_shot_images": [source.train_paths[i] for i in boards[c][:SHOWN_IMAGES]], "aligned_images": []}
        if c in chosen:
            feature = source.description_features([c])[c][chosen[c]]
            aligned = align_concepts(source.zero_shot_image, {c: feature}, k=min(config.k, SHOWN_IMAGES),
                                     logit_scale=source.logit_scale)
            entry["description"] = source.descriptions[name][chosen[c]]
            entry["aligned_images"] = [source.train_paths[i] for i in aligned[c]]
        out.append(entry)
    return out


def test_summary(source: FolderSource, backbone, results: dict, cache: str | None) -> dict:
    """Accuracy of zero-shot CLIP and of the adapted model on the held-out labelled images, or
    (none held out) the adapted model's agreement with zero-shot CLIP on a sample of the folder."""
    from cap.sources.feature_cache import extract_image_features

    metrics = results["metrics"]
    summary = {"kind": "held-out labelled images" if source.heldout else "agreement with zero-shot CLIP",
               "n": len(source.test_paths), "adapted": metrics["top1"],
               "per_class_adapted": metrics["per_class_accuracy"], "counts": metrics["test_counts"]}
    if source.heldout:
        features = extract_image_features(backbone, source.test_paths, num_workers=source.num_workers, cache=cache)
        pred, _ = zero_shot_predictions(features, source.zero_shot_text, source.logit_scale)
        summary["zero_shot"] = float((pred == source.test_labels).mean() * 100)
        hits = np.bincount(source.test_labels[pred == source.test_labels], minlength=source.n_classes)
        totals = np.bincount(source.test_labels, minlength=source.n_classes)
        summary["per_class_zero_shot"] = [float(100 * h / t) if t else None for h, t in zip(hits, totals)]
    return summary


def _jsonable(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _write_json(path: Path, data: dict) -> None:
    text = json.dumps(_jsonable(data), indent=1)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_report(out: str | Path) -> Path:
    """Execute the report notebook on the output folder ``out``; a failure says what was written."""
    from cap.experiments.notebooks import run_notebook

    out = Path(out)
    rerun = (f"the other outputs are in {out}; rerun the report with `python -m cap notebook run "
             f"{REPORT_NOTEBOOK} {out / OUTPUTS['report']} -p adapt_dir {out}`")
    if not REPORT_NOTEBOOK.is_file():
        raise InputError(f"the report notebook {REPORT_NOTEBOOK} is missing (cap installed without its notebooks?); "
                         + rerun.replace("rerun", "run", 1) + " from a clone of the repository")
    try:
        return run_notebook(REPORT_NOTEBOOK, out / OUTPUTS["report"], {"adapt_dir": str(out.resolve())})
    except ImportError as err:
        raise InputError(f"the report needs papermill and jupytext ({err}): `pip install -e '.[book]'`; {rerun}") from None
