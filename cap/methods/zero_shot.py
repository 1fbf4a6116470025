"""Zero-shot CLIP on a real dataset's test split, evaluated as each paradigm is (spec 1.1, 1.5).

Zero-shot CLIP is the first row of the paper's Table 1 and the number a re-implementation must
reproduce before anything else: it checks the weights (QuickGELU), the preprocessing, the class
names and the prompt (with the official ``"a photo of a {}" + name`` bug) in one go. The same
predictions are scored per paradigm: UL and SSL by top-1 accuracy, TRZSL by the harmonic mean of
seen- and unseen-class accuracy with the argmax over all classes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from cap.data.readers import read_dataset
from cap.data.splits import trzsl_split
from cap.data.registry import check_paradigm
from cap.errors import ParameterError, check_int
from cap.core.metrics import paradigm_scores, per_class_accuracy
from cap.core.numeric import softmax
from cap.models.model_config import ModelConfig

log = logging.getLogger(__name__)


def zero_shot_predictions(image_features, text_features, logit_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(pred, probs): argmax and softmax over classes of ``logit_scale · image · textᵀ``.

    Features are expected L2-normalised, so the product is the cosine similarity; ``logit_scale``
    is CLIP's exp(logit_scale) (≈ 100), which sets how peaked the pseudolabel probabilities are."""
    image = np.asarray(image_features, dtype=np.float64)
    text = np.asarray(text_features, dtype=np.float64)
    if image.ndim != 2 or text.ndim != 2 or image.shape[1] != text.shape[1]:
        raise ParameterError(f"image features {image.shape} and text features {text.shape} must be (N, d) and (C, d)")
    logits = float(logit_scale) * image @ text.T
    return logits.argmax(axis=1), softmax(logits, axis=1)


def evaluate_zero_shot(test_labels, pred, paradigm: str, n_classes: int, split_seed: int = 500) -> dict:
    """Accuracies in percent: UL/SSL ``{"top1"}``; TRZSL ``{"seen", "unseen", "harmonic_mean"}``.

    TRZSL classes are split as the official code does (:func:`cap.data.splits.trzsl_split`);
    seen (unseen) accuracy is over the test images whose true class is seen (unseen), with the
    prediction taken over all classes, so an image of a seen class predicted as an unseen class
    is an error. Every paradigm also gets ``per_class`` (recall per class, NaN for a class
    without test images) and ``n_test``; TRZSL adds the ``seen_classes`` and ``unseen_classes``."""
    paradigm = check_paradigm(paradigm)
    n_classes = check_int("n_classes", n_classes, minimum=1)
    labels, pred = np.asarray(test_labels), np.asarray(pred)
    if labels.ndim != 1 or labels.shape != pred.shape:
        raise ParameterError(f"test_labels {labels.shape} and pred {pred.shape} must be 1-D of the same length")
    for name, values in (("test_labels", labels), ("pred", pred)):
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise ParameterError(f"{name} must be class indices in 0..{n_classes - 1}, "
                                 f"got {values.min()}..{values.max()}")
    result: dict = {"n_test": int(labels.size), "per_class": per_class_accuracy(pred, labels, n_classes)}
    if paradigm != "trzsl":
        return result | paradigm_scores(pred, labels)
    seen, unseen = trzsl_split(n_classes, split_seed)
    return result | paradigm_scores(pred, labels, seen) | {"seen_classes": seen, "unseen_classes": unseen}


def run_zero_shot(dataset: str, paradigm: str, data_root: str | Path | None = None,
                  model_config: ModelConfig | None = None, split_seed: int = 500, batch_size: int = 256,
                  cache: str | Path | None = None) -> dict:
    """Zero-shot CLIP on the test split of a real dataset, end to end.

    Reads the dataset (``data_root`` or ``$CAP_DATA_ROOT``), loads CLIP (``model_config``,
    default the paper's ViT-B/32 with OpenAI weights), extracts (or reuses cached) test-image
    features and scores the predictions for ``paradigm``. Returns the metrics of
    :func:`evaluate_zero_shot` under ``"metrics"`` together with what produced them: the prompts,
    the weights, the precision, the test labels and predictions, and timings."""
    # Imported here so that scoring alone (the functions above) needs numpy only, not torch.
    from cap.sources.feature_cache import extract_image_features, feature_cache, weights_identity, zero_shot_text_features
    from cap.models.openclip_backbone import OpenClipBackbone

    paradigm = check_paradigm(paradigm)
    started = time.perf_counter()
    files = read_dataset(dataset, data_root)
    backbone = OpenClipBackbone(model_config or ModelConfig(), files.classnames)
    loaded = time.perf_counter()
    paths = files.test.paths
    cached = feature_cache(backbone, paths, cache=cache).load() is not None
    image_features = extract_image_features(backbone, paths, batch_size=batch_size, cache=cache)
    extracted = time.perf_counter()
    pred, probs = zero_shot_predictions(image_features, zero_shot_text_features(backbone), backbone.logit_scale)
    metrics = evaluate_zero_shot(files.test.labels, pred, paradigm, len(files.classnames), split_seed)
    log.info("zero-shot %s on %s (%s): %s", backbone.config.backbone, files.name, paradigm,
             {k: round(v, 2) for k, v in metrics.items() if isinstance(v, float)})
    return {
        "dataset": files.name,
        "paradigm": paradigm,
        "split_seed": split_seed,
        "n_test": len(paths),
        "n_classes": len(files.classnames),
        "classnames": list(files.classnames),
        "prompts": list(backbone.zero_shot_prompts),
        "backbone": backbone.config.backbone,
        "pretrained": backbone.config.pretrained,
        "weights": weights_identity(backbone),
        "precision": backbone.precision,
        "device": str(backbone.device),
        "logit_scale": backbone.logit_scale,
        "features_from_cache": cached,
        "metrics": metrics,
        "labels": files.test.labels,
        "predictions": pred,
        "confidence": probs.max(axis=1),
        "seconds": {"load": loaded - started, "features": extracted - loaded,
                    "total": time.perf_counter() - started},
    }
