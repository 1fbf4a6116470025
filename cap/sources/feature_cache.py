"""Frozen-CLIP feature extraction: batched, cached on disk, resumable.

Zero-shot pseudolabels, mismatch detection and the feature backend all need the frozen CLIP
features of thousands of images; computing them is the slow part of every run on real data, so
it is done once per (model, weights, precision, preprocessing, file list) and kept on disk.

A cache entry is a folder ``<cache>/features/<key>/`` named by a hash of everything that changes
the numbers (:func:`cache_key_parts`). While extracting, features are written in chunks
(``chunk-<start>-<stop>.npy``, every ``chunk_batches`` batches), each atomically, so a crash, a
kill or a corrupt image keeps what was computed and the next call continues after the last
chunk. A finished entry is one ``features.npy``; its chunks are then removed. Every array file has
a ``.sha256`` file beside it; a file that does not match its checksum, cannot be read or has the
wrong shape is reported (a warning naming it), removed and computed again.

Image files are identified by path only: rewriting an image in place does not invalidate the
entry (that is what lets a rerun after replacing a corrupt file reuse the chunks before it).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cap.atomic import atomic_write, writable_folder
from cap.data.images import ImageDataset
from cap.errors import CapError, ParameterError, check_int
from cap.models.clip import resolve_weights
from cap.models.openclip_backbone import OpenClipBackbone

log = logging.getLogger(__name__)

CACHE_ENV = "CAP_CACHE_DIR"
# Bump when the stored layout or the meaning of the features changes: old entries are then ignored.
FORMAT_VERSION = 1
_FINAL = "features.npy"
_CHUNK = re.compile(r"chunk-(\d+)-(\d+)\.npy")


def cache_dir(path: str | Path | None = None) -> Path:
    """The cache root: ``path`` if given, else ``$CAP_CACHE_DIR``, else ``~/.cache/cap``."""
    if path is None:
        path = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cap"
    return Path(path).expanduser()


def weights_identity(backbone: OpenClipBackbone) -> dict:
    """What identifies the backbone's weights: the resolved file with its size and mtime, or the
    open_clip download tag. Size and mtime catch a file replaced under the same name.

    Resolved from the backbone's config (``weights``, else ``$CAP_CLIP_WEIGHTS``): a model wrapped
    with ``OpenClipBackbone.from_model`` is identified by its config, not by its tensors."""
    path = resolve_weights(backbone.config)
    if path is None:
        return {"file": None, "download": backbone.config.pretrained}
    stat = os.stat(path)
    return {"file": os.path.realpath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _describe_transform(transform: Callable) -> str:
    """The transform's repr without memory addresses, which differ between processes."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(transform))


def cache_key_parts(backbone: OpenClipBackbone, paths: Sequence[str | Path], transform: Callable) -> dict:
    """Everything the cached features depend on; any change gives a new cache entry."""
    listing = "\n".join(str(p) for p in paths)
    return {
        "format": FORMAT_VERSION,
        "backbone": backbone.config.backbone,
        "pretrained": backbone.config.pretrained,
        "weights": weights_identity(backbone),
        "precision": backbone.precision,
        "transform": _describe_transform(transform),
        "n_images": len(paths),
        "files_sha256": hashlib.sha256(listing.encode()).hexdigest(),
    }


def _checksum_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _save_array(path: Path, array: np.ndarray) -> None:
    """``path`` and its checksum file, each written atomically (the checksum first: an array file
    of this layout always has one)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    data = buffer.getvalue()
    atomic_write(_checksum_file(path), lambda tmp: tmp.write_text(hashlib.sha256(data).hexdigest()))
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _array_problem(path: Path, rows: int) -> tuple[np.ndarray | None, str | None]:
    """(the float32 array of ``rows`` rows stored at ``path``, None) or (None, what is wrong with it)."""
    try:
        data = path.read_bytes()
        checksum = _checksum_file(path)
        if checksum.is_file() and hashlib.sha256(data).hexdigest() != checksum.read_text().strip():
            return None, f"its content does not match {checksum.name}"
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        return None, f"it cannot be read: {err}"
    if array.ndim != 2 or len(array) != rows or array.dtype != np.float32:
        return None, f"it holds {array.dtype} of shape {array.shape}, not {rows} float32 feature rows"
    return array, None


def _load_array(path: Path, rows: int) -> np.ndarray | None:
    """The array at ``path``, or None after removing it (with a warning naming it) when it is damaged."""
    array, problem = _array_problem(path, rows)
    if problem:
        log.warning("feature cache file %s is damaged (%s): removed; its features are computed again", path, problem)
        path.unlink(missing_ok=True)
        _checksum_file(path).unlink(missing_ok=True)
    return array


class FeatureCache:
    """One cache entry: completed chunks while extracting, a single array once finished."""

    def __init__(self, root: str | Path | None, parts: dict):
        self.parts = parts
        key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]
        self.folder = cache_dir(root) / "features" / key
        self.n_images = parts["n_images"]

    def _writable(self) -> None:
        if not self.folder.is_dir():
            writable_folder(self.folder, "feature cache folder",
                            f"set {CACHE_ENV} to a folder you can write (default ~/.cache/cap), or pass cache=...")

    def load(self) -> np.ndarray | None:
        """The finished features, or None when the entry is not complete."""
        path = self.folder / _FINAL
        return _load_array(path, self.n_images) if path.is_file() else None

    def chunks(self) -> list[tuple[int, int, Path]]:
        """The chunks that cover images 0..done-1 without a gap, in order."""
        found = {}
        for path in self.folder.glob("chunk-*.npy"):
            match = _CHUNK.fullmatch(path.name)
            if match:
                found[int(match.group(1))] = (int(match.group(1)), int(match.group(2)), path)
        contiguous, start = [], 0
        while start in found:
            contiguous.append(found[start])
            start = found[start][1]
        return contiguous

    def done(self) -> int:
        """How many leading images are already stored in intact chunks. The first damaged chunk is
        removed with every chunk after it, and extraction resumes from there."""
        done = 0
        for start, stop, path in self.chunks():
            if _load_array(path, stop - start) is None:
                for later in self.folder.glob("chunk-*.npy*"):
                    match = _CHUNK.fullmatch(later.name.removesuffix(".sha256"))
                    if match and int(match.group(1)) > start:
                        later.unlink(missing_ok=True)
                break
            done = stop
        return done

    def write_chunk(self, start: int, features: np.ndarray) -> None:
        self._writable()
        _save_array(self.folder / f"chunk-{start:09d}-{start + len(features):09d}.npy", features)

    def finish(self) -> np.ndarray:
        """Join the chunks into the final array and remove them."""
        parts = [_load_array(path, stop - start) for start, stop, path in self.chunks()]
        features = np.concatenate([p for p in parts if p is not None]) if parts else np.zeros((0, 0), np.float32)
        if len(features) != self.n_images or any(p is None for p in parts):
            raise CapError(f"feature cache {self.folder}: its chunks hold {len(features)} of {self.n_images} "
                           "images (changed while extracting?); delete that folder and rerun")
        _save_array(self.folder / _FINAL, features)
        for path in self.folder.glob("chunk-*.npy*"):
            path.unlink()
        return features

    def write_description(self) -> None:
        """A human-readable ``key.json`` saying what the entry holds (first checking the folder can be written)."""
        self._writable()
        text = json.dumps(self.parts, indent=1)
        atomic_write(self.folder / "key.json", lambda tmp: tmp.write_text(text))


def feature_cache(backbone: OpenClipBackbone, paths: Sequence[str | Path], transform: Callable | None = None,
                  cache: str | Path | None = None) -> FeatureCache:
    """The cache entry that :func:`extract_image_features` would use for these arguments."""
    return FeatureCache(cache, cache_key_parts(backbone, paths, _transform(backbone, transform)))


def _transform(backbone: OpenClipBackbone, transform: Callable | None) -> Callable:
    """Default: the model's own evaluation preprocessing (resize, centre crop, normalise)."""
    transform = backbone.preprocess if transform is None else transform
    if not callable(transform):
        raise ParameterError("no image transform: pass transform=..., or build the backbone with its preprocess "
                             "(OpenClipBackbone(config, ...) does; from_model needs preprocess=...)")
    return transform


def extract_image_features(backbone: OpenClipBackbone, paths: Sequence[str | Path], batch_size: int = 256,
                           num_workers: int = 0, cache: str | Path | None = None, transform: Callable | None = None,
                           *, chunk_batches: int = 20) -> np.ndarray:
    """(N, d) float32 L2-normalised frozen-CLIP features of the images at ``paths``, in order.

    Batches go through a DataLoader (decoding in ``num_workers`` processes) and
    ``backbone.zero_shot_image`` under inference mode, in the backbone's precision (fp16 on CUDA
    by default). Results are cached under :func:`cache_dir` (``cache``); every ``chunk_batches``
    batches are written to disk, so an interrupted call resumes where it stopped. A corrupt image
    raises :class:`cap.data.images.ImageReadError` naming the file; the chunks before it stay.
    """
    batch_size = check_int("batch_size", batch_size, minimum=1)
    num_workers = check_int("num_workers", num_workers, minimum=0)
    chunk_batches = check_int("chunk_batches", chunk_batches, minimum=1)
    paths = [str(p) for p in paths]
    if not paths:
        raise ParameterError("paths is empty: there are no images to extract features from")
    transform = _transform(backbone, transform)
    entry = FeatureCache(cache, cache_key_parts(backbone, paths, transform))
    features = entry.load()
    if features is not None:
        log.info("image features of %d images from the cache %s", len(paths), entry.folder)
        return features
    entry.write_description()
    start = entry.done()
    if start:
        log.info("resuming feature extraction at image %d of %d (%s)", start, len(paths), entry.folder)
    _extract_into(entry, backbone, paths, start, transform, batch_size, num_workers, chunk_batches)
    return entry.finish()


def _extract_into(entry: FeatureCache, backbone: OpenClipBackbone, paths: list[str], start: int, transform: Callable,
                  batch_size: int, num_workers: int, chunk_batches: int) -> None:
    """Compute images ``start..N-1`` and store them in chunks of ``chunk_batches`` batches."""
    remaining = paths[start:]
    if not remaining:
        return
    dataset = ImageDataset(remaining, np.zeros(len(remaining), dtype=np.int64), {"image": transform})
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=backbone.device.type == "cuda")
    pending: list[np.ndarray] = []
    chunk_start = start
    with torch.inference_mode(), tqdm(total=len(paths), initial=start, unit="img", desc="image features") as bar:
        for batch_index, batch in enumerate(loader, 1):
            pending.append(backbone.zero_shot_image(batch["image"]).cpu().numpy().astype(np.float32, copy=False))
            bar.update(len(batch["image"]))
            if batch_index % chunk_batches == 0 or batch_index == len(loader):
                chunk = np.concatenate(pending)
                entry.write_chunk(chunk_start, chunk)
                chunk_start += len(chunk)
                pending = []


def zero_shot_text_features(backbone: OpenClipBackbone) -> np.ndarray:
    """(C, d) frozen-CLIP features of the zero-shot class prompts (``backbone.zero_shot_prompts``).

    Not cached: one text-encoder pass over C prompts costs less than reading a file."""
    with torch.inference_mode():
        return backbone.zero_shot_text().cpu().numpy().astype(np.float32, copy=False)
