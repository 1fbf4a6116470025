"""Pieces every method shares: schedule, batch orders, evaluation, checkpoints."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from cap import metrics
from cap.errors import CapError
from cap.models.base import Backbone


class RunInterrupted(CapError):
    """Raised after the checkpoint of the epoch a test asked to stop at (simulates a killed run)."""


def warmup_cosine(total_steps: int, warmup_steps: int):
    """LR factor per step: linear from 0 over ``warmup_steps``, then cosine down to 0 at ``total_steps``
    (the official per-iteration schedule; its WARMUP_LR is unused)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def sgd(params, lr: float, momentum: float, weight_decay: float, total_steps: int, warmup_steps: int):
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup_steps))


def batch_order(pool, n: int, seed: int, epoch: int, stream: int) -> np.ndarray:
    """``n`` indices from ``pool``: back-to-back random permutations (each image once per pass, as
    a reshuffling loader gives), a function of (seed, epoch, stream) only, so a resumed run draws
    exactly the batches an uninterrupted one would."""
    pool = np.asarray(pool)
    if len(pool) == 0:
        return pool
    rng = np.random.default_rng([seed, epoch, stream])
    passes = -(-n // len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(passes)])[:n]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


@torch.no_grad()
def predict_test(backbone: Backbone, source, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test predictions of the prompted model without adapters (the paper's inference), argmax over
    all classes: (predicted class, true label, confidence = max softmax probability)."""
    backbone.eval()
    text = backbone.encode_text()
    preds, labels, confidence = [], [], []
    for inputs, y in source.test_batches(batch_size):
        logits = backbone.logit_scale * backbone.encode_image(inputs).float() @ text.float().T
        conf, pred = logits.softmax(1).max(1)
        preds.append(pred.cpu())
        confidence.append(conf.cpu())
        labels.append(y)
    backbone.train()
    return torch.cat(preds).numpy(), torch.cat(labels).numpy(), torch.cat(confidence).numpy()


def evaluate(pred: np.ndarray, labels: np.ndarray, n_classes: int, paradigm: str, seen: list[int],
             confidence: np.ndarray | None = None) -> dict:
    """Top-1 (UL, SSL) or seen / unseen / harmonic mean (TRZSL), in percent, with per-class accuracy
    and how often each class is predicted (for balance metrics). With ``confidence``, every test
    image's label, prediction and confidence too (test order), so pages can compute calibration metrics."""
    result = {"per_class_accuracy": metrics.per_class_accuracy(pred, labels, n_classes).tolist(),
              "predicted_counts": metrics.class_counts(pred, n_classes).tolist(),
              "test_counts": metrics.class_counts(labels, n_classes).tolist(),
              **metrics.paradigm_scores(pred, labels, seen if paradigm == "trzsl" else None)}
    if confidence is not None:
        result["test_predictions"] = {"label": np.asarray(labels).tolist(), "pred": np.asarray(pred).tolist(),
                                      "confidence": np.round(np.asarray(confidence, dtype=float), 4).tolist()}
    return result


def headline(result: dict, paradigm: str) -> float:
    """The paper's number for a run: top-1, or the harmonic mean in TRZSL."""
    return result["harmonic_mean"] if paradigm == "trzsl" else result["top1"]


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic: a kill during the write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pt")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated file from a killed write of an older version
        raise CapError(f"checkpoint {path} cannot be read ({err}); delete it to restart the run") from err


def trainable_state(module: torch.nn.Module) -> dict:
    """Only the parameters that train (prompts), so checkpoints stay small on the CLIP backend."""
    return {name: p.detach().cpu().clone() for name, p in module.named_parameters() if p.requires_grad}


def load_trainable_state(module: torch.nn.Module, state: dict) -> None:
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device))
