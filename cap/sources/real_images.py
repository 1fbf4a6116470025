"""Real images through open_clip: the source of runs with ``backend="openclip"``.

``ImageSource(config)`` reads the dataset from ``config.data_root`` (the official layout, see
:mod:`cap.data.readers`), splits its training pool for the paradigm, and computes with a frozen
CLIP everything the methods need before training:

* the zero-shot image features of every training image (:func:`cap.sources.feature_cache.extract_image_features`,
  cached on disk under ``$CAP_CACHE_DIR``: a second run on the same images reads them back);
* the text features of the zero-shot class prompts (with the official ``"a photo of a {}" + name``
  string when ``config.template_bug``), and CLIP's logit scale;
* the text features of the candidate descriptions of every class that has some
  (:mod:`cap.data.description_texts`: the shipped ``cap/data/descriptions/<dataset>.yml``, or the file named by
  the run config's ``descriptions`` field), encoded as raw text without a template, as the official code does.

**One CLIP in memory at a time.** This source loads its own frozen CLIP for that setup and frees
it (``del`` + ``torch.cuda.empty_cache()``) before returning; the training backbone is loaded
afterwards by :func:`cap.methods.build_backbone`. The weights are thus read from disk twice (a
second or two for ViT-B/32), but the two models never coexist on the GPU. Descriptions are
encoded during setup, for all described classes at once (a few dozen short texts: milliseconds),
rather than lazily: which classes are needed is only known after mismatch detection, and keeping
the model alive for that, or reloading it, would cost far more. The setup runs inside
``torch.random.fork_rng`` and every loader has its own generator, so building and reading the
source does not move the run's random stream (only strong views asked for without a generator
draw their seeds from torch's global generator).

Batches are decoded from the image files by a ``DataLoader`` (``num_workers`` processes), each
image once for both its views: the weak view is the model's own preprocessing (resize, centre
crop, normalise), the strong view :func:`cap.data.views.strong_view` at the model's input size.
The strong view's randomness comes from per-image seeds drawn from the ``generator`` passed to
:meth:`ImageSource.batches`, so the same order and generator seed give identical tensors
whatever the number of workers.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cap.config import RunConfig, resolve
from cap.data.images import load_rgb
from cap.data.readers import read_dataset
from cap.data.views import clip_normalisation, strong_view
from cap.data.description_texts import load_descriptions_file
from cap.errors import ParameterError, check_int
from cap.sources.source import Source, paradigm_split

log = logging.getLogger(__name__)

VIEWS = ("weak", "strong")
_SEED_HIGH = 2**62  # per-image strong-view seeds are drawn in [0, 2**62)
_TEXT_BATCH = 256  # descriptions encoded per text-encoder pass


def default_workers() -> int:
    """DataLoader processes when none are asked for: min(8, CPU count)."""
    return min(8, os.cpu_count() or 1)


class _Views(Dataset):
    """The images ``paths[order[j]]`` in that order; item j = {"index": order[j], "weak", "strong"}.

    The strong view of item j is drawn under ``seeds[j]`` (CPU generator forked, so neither the
    worker's nor the main process's random stream matters)."""

    def __init__(self, paths: Sequence[str], order: np.ndarray, weak: Callable | None, strong: Callable | None,
                 seeds: torch.Tensor | None):
        self.paths, self.order, self.weak, self.strong, self.seeds = paths, order, weak, strong, seeds

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, j: int) -> dict:
        i = int(self.order[j])
        image = load_rgb(self.paths[i])  # one decode for both views
        item = {"index": i}
        if self.weak is not None:
            item["weak"] = self.weak(image)
        if self.strong is not None:
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(int(self.seeds[j]))
                item["strong"] = self.strong(image)
        return item


def _normalisation(preprocess: Callable) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std of the model's own preprocessing (OpenAI CLIP's for the paper's weights)."""
    for transform in getattr(preprocess, "transforms", ()):
        if hasattr(transform, "mean") and hasattr(transform, "std"):
            return tuple(transform.mean), tuple(transform.std)
    return clip_normalisation()


class ImageSource(Source):
    """Training and test images of a real dataset, with frozen-CLIP features computed at construction.

    ``num_workers``: DataLoader processes for decoding (default min(8, CPU count)); ``cache``:
    feature-cache root (default ``$CAP_CACHE_DIR``, else ``~/.cache/cap``); ``extract_batch_size``:
    images per forward pass of the zero-shot extraction. Extra attributes beyond :class:`Source`:
    ``train_paths``, ``test_paths``, ``descriptions`` (class name -> texts), ``descriptions_source``,
    ``descriptions_provenance``, ``image_size`` and ``features_from_cache``.
    """

    device = "auto"  # where both CLIPs run (ModelConfig.device): CUDA when available

    def __init__(self, config: RunConfig, *, num_workers: int | None = None, cache: str | os.PathLike | None = None,
                 extract_batch_size: int = 256):
        config = resolve(config)
        self.num_workers = default_workers() if num_workers is None else check_int("num_workers", num_workers, 0)
        check_int("extract_batch_size", extract_batch_size, 1)
        files = read_dataset(config.dataset, config.data_root, eurosat_test_in_pool=config.eurosat_test_in_pool)
        classnames = list(files.classnames)
        described = load_descriptions_file(config.dataset, config.descriptions)
        self.train_paths, self.test_paths = list(files.train.paths), list(files.test.paths)
        self.descriptions = described.classes
        self.descriptions_source = described.source
        self.descriptions_provenance = described.provenance

        image, text, logit_scale = self._prepare(config, classnames, cache, extract_batch_size)
        super().__init__(
            classnames=classnames,
            train_labels=files.train.labels,
            test_labels=files.test.labels,
            split=paradigm_split(config, files.train.labels, len(classnames)),
            zero_shot_image=image,
            zero_shot_text=text,
            logit_scale=logit_scale,
        )
        log.info("%s: %d training and %d test images, zero-shot features %s, descriptions for %d classes (%s)",
                 files.name, len(self.train_paths), len(self.test_paths),
                 "from the cache" if self.features_from_cache else "extracted", len(self._description_features),
                 self.descriptions_source)

    def _prepare(self, config: RunConfig, classnames: list[str], cache, extract_batch_size: int):
        """(image features, text features, logit scale) of ``self.train_paths`` and ``classnames``,
        the description features of ``self.descriptions`` and the two views: what every source of
        real images computes once, whatever reads its files."""
        # Forked RNG: loading the model and iterating the extraction DataLoader draw from torch's
        # generator; the run's random stream must not depend on the source.
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
            features = self._setup(config, classnames, cache, extract_batch_size)
        self._strong = strong_view(self.image_size, *_normalisation(self.preprocess))
        self._pin = torch.cuda.is_available()
        return features

    def _setup(self, config: RunConfig, classnames: list[str], cache, extract_batch_size: int):
        """Load the frozen CLIP, compute (image features, text features, logit scale) and the
        description features, then free the model."""
        from cap.sources.feature_cache import extract_image_features, feature_cache, zero_shot_text_features
        from cap.models.model_config import ModelConfig
        from cap.models.openclip_backbone import OpenClipBackbone

        # CoOp prompts: never used here, and cheaper to build than MaPLe's.
        model_config = ModelConfig(backbone=config.backbone, pretrained=config.pretrained, weights=config.weights,
                                   precision=config.precision, prompt="coop", template_bug=config.template_bug,
                                   device=self.device)
        frozen = OpenClipBackbone(model_config, classnames)
        try:
            self.preprocess = frozen.preprocess
            size = frozen.clip.visual.image_size
            self.image_size = size if isinstance(size, int) else (size[0] if size[0] == size[1] else tuple(size))
            self.features_from_cache = feature_cache(frozen, self.train_paths, cache=cache).load() is not None
            image = extract_image_features(frozen, self.train_paths, batch_size=extract_batch_size,
                                           num_workers=self.num_workers, cache=cache)
            text = zero_shot_text_features(frozen)
            logit_scale = frozen.logit_scale
            self._description_features = self._encode_descriptions(frozen, classnames)
        finally:  # the training backbone is loaded next: never keep two CLIPs
            del frozen
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return image, text, logit_scale

    def _encode_descriptions(self, frozen, classnames: list[str]) -> dict[int, np.ndarray]:
        index = {name: i for i, name in enumerate(classnames)}
        texts = [(index[name], text) for name, items in self.descriptions.items() for text in items]
        if not texts:
            return {}
        features = np.concatenate([
            frozen.encode_raw_text([t for _, t in texts[start:start + _TEXT_BATCH]]).cpu().numpy()
            for start in range(0, len(texts), _TEXT_BATCH)]).astype(np.float32, copy=False)
        owners = np.array([c for c, _ in texts])
        return {int(c): features[owners == c] for c in sorted(set(owners.tolist()))}

    # ----------------------------------------------------------------------------- Source interface
    def _loader(self, dataset: Dataset, batch_size: int, drop_last: bool) -> DataLoader:
        # A private generator: the loader's worker base seed would otherwise be drawn from torch's
        # global one (no view here depends on it: strong views carry their own seeds).
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=drop_last,
                          num_workers=self.num_workers, pin_memory=self._pin,
                          generator=torch.Generator().manual_seed(0))

    def batches(self, order, batch_size, views, generator, drop_last=True) -> Iterator[dict]:
        """Batches {"index", "weak", "strong"} of the training images ``order`` (pool indices), in
        that order; ``views`` picks the views. The strong view of image j of ``order`` is drawn
        under the j-th of ``len(order)`` seeds drawn from ``generator`` (torch's global generator
        when None), so the same order and generator state give the same batches."""
        unknown = sorted(set(views) - set(VIEWS))
        if unknown:
            raise ParameterError(f"unknown views {unknown}; valid: {list(VIEWS)}")
        check_int("batch_size", batch_size, 1)
        order = np.asarray(order, dtype=np.int64)
        if len(order) == 0:
            return
        seeds = None
        if "strong" in views:
            seeds = torch.randint(0, _SEED_HIGH, (len(order),), generator=generator, dtype=torch.int64)
        dataset = _Views(self.train_paths, order, self.preprocess if "weak" in views else None,
                         self._strong if "strong" in views else None, seeds)
        yield from self._loader(dataset, batch_size, drop_last)

    def test_batches(self, batch_size) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) of the test split in file order, weak view (CLIP preprocessing)."""
        check_int("batch_size", batch_size, 1)
        dataset = _Views(self.test_paths, np.arange(len(self.test_paths)), self.preprocess, None, None)
        labels = torch.from_numpy(self.test_labels)
        for batch in self._loader(dataset, batch_size, drop_last=False):
            yield batch["weak"], labels[batch["index"]]

    def make_backbone(self, config: RunConfig, prompt: str, device: torch.device):
        """CLIP with ``prompt`` prompts ("maple" for CAP, "coop" for the baselines); it picks its device."""
        from cap.models.model_config import ModelConfig
        from cap.models.openclip_backbone import OpenClipBackbone

        model_config = ModelConfig(backbone=config.backbone, pretrained=config.pretrained, weights=config.weights,
                                   precision=config.precision, prompt=prompt, prompt_depth=config.prompt_depth,
                                   template_bug=config.template_bug, device=self.device)
        return OpenClipBackbone(model_config, self.classnames)

    def description_features(self, classes) -> dict[int, np.ndarray]:
        """(n, d) frozen-CLIP features of the candidate descriptions of each of ``classes`` that has
        descriptions (in the file's order); classes without descriptions are absent."""
        return {int(c): self._description_features[int(c)] for c in classes if int(c) in self._description_features}
