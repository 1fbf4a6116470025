"""What is labelled in each learning paradigm (UL, SSL, TRZSL), drawn as the official code draws it.

All three paradigms share one training pool; only the labelled part changes:

* UL: nothing is labelled, every pool image is unlabelled.
* SSL: ``n_label`` images per class are labelled, drawn per class with the validation seed, so
  every optimisation seed sees the same labelled images.
* TRZSL: 62 % of the classes are *seen* and all their images labelled; the images of the other
  38 % (*unseen*) are unlabelled.

The official code draws with the global ``np.random`` state after ``np.random.seed``. Here every
draw uses its own ``np.random.RandomState`` with the same seed, which gives the identical numbers
without touching (or depending on) the global state that drives optimisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cap.data.registry import check_paradigm
from cap.errors import ParameterError, check_int

TRZSL_SEEN_FRACTION = 0.62
_MAX_SEED = 2**32 - 1  # numpy's legacy seeding accepts 0 .. 2**32 - 1


def _check_seed(name: str, seed: object) -> int:
    seed = check_int(name, seed, minimum=0)
    if seed > _MAX_SEED:
        raise ParameterError(f"{name} must be <= {_MAX_SEED}, got {seed}")
    return seed


def trzsl_split(n_classes: int, seed: int) -> tuple[list[int], list[int]]:
    """Seen and unseen class indices (each sorted) of the TRZSL protocol.

    Same draw as the official ``np.random.seed(seed); np.random.choice(range(C), int(0.62 * C),
    replace=False)`` over the classes in the official order (seeds 500, 0 and 200 give the class
    lists of Menghini et al.'s ``data/data_splits/*.json``).
    """
    n_classes = check_int("n_classes", n_classes, minimum=1)
    rng = np.random.RandomState(_check_seed("split seed", seed))
    seen = rng.choice(range(n_classes), size=int(n_classes * TRZSL_SEEN_FRACTION), replace=False)
    seen_set = {int(c) for c in seen}
    return sorted(seen_set), [c for c in range(n_classes) if c not in seen_set]


def _labels_array(labels: Sequence[int], n_classes: int | None) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ParameterError(f"labels must be a 1-D sequence of class indices, got shape {array.shape} "
                             f"dtype {array.dtype}")
    if array.size and (array.min() < 0 or (n_classes is not None and array.max() >= n_classes)):
        bound = f"0..{n_classes - 1}" if n_classes is not None else ">= 0"
        raise ParameterError(f"labels must lie in {bound}, got values from {array.min()} to {array.max()}")
    return array.astype(np.int64)


def ssl_shots(labels: Sequence[int], n_per_class: int = 2, seed: int = 0, *, n_classes: int | None = None) -> list[int]:
    """Indices (sorted) of the ``n_per_class`` labelled images per class of the SSL protocol.

    As the official code: for each class, reseed with ``seed`` and choose ``n_per_class`` of the
    class's indices (in pool order) without replacement. Each class gets a fresh
    ``RandomState(seed)``, so the draw never depends on the global numpy or torch state.
    ``n_classes`` makes every class in ``0..n_classes-1`` required; otherwise the classes are
    those present in ``labels``.
    """
    n_per_class = check_int("n_per_class", n_per_class, minimum=1)
    seed = _check_seed("validation seed", seed)
    if n_classes is not None:
        n_classes = check_int("n_classes", n_classes, minimum=1)
    array = _labels_array(labels, n_classes)
    classes = range(n_classes) if n_classes is not None else np.unique(array).tolist()
    chosen: list[int] = []
    for c in classes:
        members = np.flatnonzero(array == c)
        if len(members) < n_per_class:
            raise ParameterError(f"class {c} has {len(members)} training image(s), fewer than the "
                                 f"{n_per_class} labelled images per class that SSL draws")
        chosen += np.random.RandomState(seed).choice(members, size=n_per_class, replace=False).tolist()
    return sorted(chosen)


@dataclass
class ParadigmSplit:
    """Which pool images are labelled, and which classes get pseudolabels.

    ``labelled``/``unlabelled`` index the training pool. ``seen``/``unseen`` are TRZSL's class
    split (both empty in UL and SSL). ``pseudolabel_classes`` are the classes whose images receive
    pseudolabels: the unseen classes in TRZSL, every class in UL and SSL.
    """

    paradigm: str
    labelled: list[int]
    unlabelled: list[int]
    seen: list[int]
    unseen: list[int]
    pseudolabel_classes: list[int]


def make_split(paradigm: str, train_labels: Sequence[int], n_classes: int, split_seed: int = 500,
               validation_seed: int = 0, n_label: int = 2) -> ParadigmSplit:
    """Split the training pool for one paradigm.

    ``split_seed`` matters only for TRZSL (the class split), ``validation_seed`` and ``n_label``
    only for SSL (the labelled draw), as in the official configs.
    """
    paradigm = check_paradigm(paradigm)
    n_classes = check_int("n_classes", n_classes, minimum=1)
    labels = _labels_array(train_labels, n_classes)
    everything = list(range(len(labels)))
    all_classes = list(range(n_classes))
    if paradigm == "ul":
        return ParadigmSplit(paradigm, [], everything, [], [], all_classes)
    if paradigm == "ssl":
        labelled = ssl_shots(labels, n_label, validation_seed, n_classes=n_classes)
        chosen = set(labelled)
        return ParadigmSplit(paradigm, labelled, [i for i in everything if i not in chosen], [], [], all_classes)
    seen, unseen = trzsl_split(n_classes, split_seed)
    is_seen = np.isin(labels, seen)
    return ParadigmSplit(paradigm, np.flatnonzero(is_seen).tolist(), np.flatnonzero(~is_seen).tolist(), seen, unseen,
                         unseen)
