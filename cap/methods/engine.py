"""The engine every method shares: zero-shot pseudolabel probabilities and the initial D_PL, the
LR schedule, reproducible batch orders, and test evaluation."""

from __future__ import annotations

import math

import numpy as np
import torch

from cap.config import RunConfig
from cap.core import metrics
from cap.errors import CapError
from cap.core.numeric import memoised, softmax
from cap.core.pseudolabels import leaderboard_topk
from cap.models.backbone import Backbone


class TrainingDiverged(CapError):
    """A training loss became NaN or infinite: the run stops and records no result."""


def check_finite_losses(losses: torch.Tensor, where: str, fix: str) -> None:
    """Raise TrainingDiverged naming the first step whose loss is not finite; ``losses`` holds one
    loss per step of the stretch of training ``where`` names (e.g. "CAP epoch 3"). Checked once per
    stretch, so the steps themselves never wait for the device."""
    finite = torch.isfinite(losses)
    if not bool(finite.all()):
        step = int((~finite).nonzero()[0])
        raise TrainingDiverged(f"training diverged: the loss is {float(losses[step])} at step {step} of {where}; the run "
                               f"stopped and records no result: {fix}, or check the data")


def training_budget(history: list[dict]) -> dict[str, int]:
    """What a run's training cost, summed over its history (epochs or rounds): gradient steps and
    images seen (the images of the trained streams of every step). Zero-shot spends none."""
    return {key: int(sum(entry.get(key, 0) for entry in history)) for key in ("gradient_steps", "images_seen")}


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
    """SGD with momentum and weight decay under the warm-up + cosine schedule (one LR factor per step).

    On the CPU the fused update (one pass over each parameter; 5-10 % of a feature-backend step
    faster than the multi-tensor one, ``benchmarks/README.md``); elsewhere ``foreach``: one
    multi-tensor kernel per update stage, not a Python loop over the parameters."""
    params = list(params)
    on_cpu = all(p.device.type == "cpu" for p in params)
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                                **({"fused": True} if on_cpu else {"foreach": True}))
    return optimizer, StepSchedule(optimizer, warmup_cosine(total_steps, warmup_steps))


class StepSchedule:
    """Sets each parameter group's learning rate to its initial one times ``factor(step)`` at every
    step: the numbers of ``torch.optim.lr_scheduler.LambdaLR`` (the same product), without its
    per-step bookkeeping, which is a visible part of a feature-backend step."""

    def __init__(self, optimizer: torch.optim.Optimizer, factor):
        self.optimizer, self.factor = optimizer, factor
        for group in optimizer.param_groups:  # as LambdaLR records it
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = 0  # LambdaLR's name for the number of steps taken
        self._set()

    def _set(self) -> None:
        factor = self.factor(self.last_epoch)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def step(self) -> None:
        self.last_epoch += 1
        self._set()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict) -> None:
        self.last_epoch, self.base_lrs = int(state["last_epoch"]), list(state["base_lrs"])
        self._set()


def batch_order(pool, n: int, seed: int, epoch: int, stream: int) -> np.ndarray:
    """``n`` indices from ``pool``: back-to-back random permutations (each image once per pass, as
    a reshuffling loader gives), a function of (seed, epoch, stream) only, so a resumed run draws
    exactly the batches an uninterrupted one would."""
    pool = np.asarray(pool)
    if len(pool) == 0 or n <= 0:
        return pool[:0]
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


def zero_shot_probs(source, config: RunConfig) -> np.ndarray:
    """(N_train, C) zero-shot probabilities of the frozen model.

    TRZSL with ``trzsl_probs_over="unseen"`` takes the softmax over the unseen classes only (the
    Menghini/CPL convention; seen columns are 0). The default "all" is what the official CAP code
    effectively used (a cache built over all classes); its indexing crash is not reproduced.
    """
    return pseudolabel_probs(source.logit_scale * source.zero_shot_image @ source.zero_shot_text.T, source, config)


BASELINES = ("fpl", "grip", "cpl")


def pseudolabel_probs(logits: np.ndarray, source, config: RunConfig) -> np.ndarray:
    """Softmax of ``logits`` over all classes, or in TRZSL over the unseen classes only (seen
    columns 0): for CAP with ``trzsl_probs_over="unseen"``, for the baselines with
    ``baseline_trzsl_probs_over="unseen"`` (both official baseline codes)."""
    over = config.baseline_trzsl_probs_over if config.method in BASELINES else config.trzsl_probs_over
    if config.paradigm == "trzsl" and over == "unseen":
        unseen = source.split.unseen
        probs = np.zeros_like(logits)
        probs[:, unseen] = softmax(logits[:, unseen])
        return probs
    return softmax(logits)


def zero_shot_leaderboards(probs: np.ndarray, unlabelled, classes, k: int, order: str = "sorted",
                           sort_on_append: bool = True) -> dict[int, list[int]]:
    """The initial D_PL of FPL and CAP: top-k leaderboards over the unlabelled pool, as indices into
    the training pool, each list in ``order`` (memoised: every seed and variant of a dataset starts
    from the same one); ``sort_on_append=False``: Menghini's boards (:func:`leaderboard_topk`)."""
    unlabelled = np.asarray(unlabelled)
    ranked = memoised("leaderboard_topk", lambda: leaderboard_topk(probs[unlabelled], k, classes=classes, order=order,
                                                                   sort_on_append=sort_on_append),
                      probs, unlabelled, np.asarray(classes), k=k, order=order, sort_on_append=sort_on_append)
    return {c: unlabelled[rows].tolist() for c, rows in ranked.items()}


def flatten(dpl: dict[int, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(indices, labels) of a per-class D_PL; an image in two classes appears twice."""
    index = [i for c in sorted(dpl) for i in dpl[c]]
    label = [c for c in sorted(dpl) for _ in dpl[c]]
    return np.asarray(index, dtype=np.int64), np.asarray(label, dtype=np.int64)


def dpl_accuracy(dpl: dict[int, list[int]], true_labels: np.ndarray) -> dict:
    """Pseudolabel accuracy overall and per class (true labels used for logging only)."""
    index, label = flatten(dpl)
    per_class = {c: (float((true_labels[np.asarray(v, dtype=int)] == c).mean() * 100) if v else None)
                 for c, v in dpl.items()}
    return {
        "size": int(len(index)),
        "accuracy": float((true_labels[index] == label).mean() * 100) if len(index) else None,
        "per_class_accuracy": per_class,
        "per_class_count": {c: len(v) for c, v in dpl.items()},
    }
