"""A folder of one's own images as the :class:`~cap.sources.source.Source` of a CAP run.

The training pool is the folder's readable images (unlabelled) followed by the labelled images
chosen for training; everything else is :class:`~cap.sources.real_images.ImageSource`'s: the
frozen-CLIP features (cached, resumable), the class prompts, the description features, the weak
and strong views, the MaPLe backbone.

**Labelled images.** Per class, a seeded draw of min(``n_label``, half the class's labelled
images) trains as the SSL stream; the rest are held out and make the test split, on which the run
reports accuracy. Without held-out images the test split is a seeded sample of at most
``AGREEMENT_SAMPLE`` folder images labelled with their zero-shot prediction: the trainer's test
numbers are then the adapted model's agreement with zero-shot CLIP, not an accuracy.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from cap.adapt.user_inputs import AdaptInputs
from cap.config import RunConfig, resolve
from cap.data.splits import ParadigmSplit
from cap.errors import check_int
from cap.sources.real_images import ImageSource, default_workers
from cap.sources.source import Source

log = logging.getLogger(__name__)

UNKNOWN = -1  # the label of an unlabelled image (the trainer uses pool labels for logging only)
AGREEMENT_SAMPLE = 1000


def split_labelled(labels: np.ndarray, n_label: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices that train, indices held out) of the labelled images, each sorted: per class a
    seeded draw of min(n_label, count // 2) trains, so at least half of every class is held out."""
    rng = np.random.RandomState(seed)
    train = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        train += rng.choice(members, size=min(n_label, len(members) // 2), replace=False).tolist()
    train = np.array(sorted(train), dtype=np.int64)
    return train, np.setdiff1d(np.arange(len(labels)), train)


class FolderSource(ImageSource):
    """The user's images through a frozen CLIP; see the module docstring for the split.

    Extra attributes: ``n_folder`` (the folder's images come first in the pool), ``heldout``
    (whether the test split is held-out labelled images) and ``descriptions_file``."""

    def __init__(self, config: RunConfig, inputs: AdaptInputs, *, device: str = "auto", num_workers: int | None = None,
                 cache: str | os.PathLike | None = None, extract_batch_size: int = 256):
        config = resolve(config)
        self.device = device
        self.num_workers = default_workers() if num_workers is None else check_int("num_workers", num_workers, 0)
        check_int("extract_batch_size", extract_batch_size, 1)
        train, held = split_labelled(inputs.labelled_labels, config.n_label, config.validation_seed)
        self.n_folder = len(inputs.images)
        self.train_paths = inputs.images + [inputs.labelled_paths[i] for i in train]
        train_labels = np.concatenate([np.full(self.n_folder, UNKNOWN, dtype=np.int64), inputs.labelled_labels[train]])
        self.descriptions = inputs.descriptions
        self.descriptions_file = inputs.descriptions_file
        self.descriptions_source = inputs.descriptions_file or "none given"
        self.descriptions_provenance = None
        image, text, logit_scale = self._prepare(config, inputs.classnames, cache, extract_batch_size)
        self.heldout = len(held) > 0
        if self.heldout:
            self.test_paths, test_labels = [inputs.labelled_paths[i] for i in held], inputs.labelled_labels[held]
        else:
            sample = np.sort(np.random.RandomState(config.seed).permutation(self.n_folder)[:AGREEMENT_SAMPLE])
            self.test_paths = [inputs.images[i] for i in sample]
            test_labels = (image[sample] @ text.T).argmax(1).astype(np.int64)
        labelled = list(range(self.n_folder, len(self.train_paths)))
        Source.__init__(self, classnames=list(inputs.classnames), train_labels=train_labels, test_labels=test_labels,
                        split=ParadigmSplit("ssl" if labelled else "ul", labelled, list(range(self.n_folder)), [], [],
                                            list(range(len(inputs.classnames)))),
                        zero_shot_image=image, zero_shot_text=text, logit_scale=logit_scale)
        log.info("%d folder images, %d labelled images for training, %d test images (%s); zero-shot features %s",
                 self.n_folder, len(labelled), len(self.test_paths),
                 "held-out labelled images" if self.heldout else "a sample of the folder, scored against zero-shot",
                 "from the cache" if self.features_from_cache else "extracted")
