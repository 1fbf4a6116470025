"""Baselines on the same engine: zero-shot CLIP, FPL, GRIP and CPL (the method page's baselines).

FPL trains the prompts once on the zero-shot top-16 leaderboards. GRIP grows the per-class
budget over rounds, re-labels with the previous round's model and re-initialises the prompts
each round. CPL follows GRIP's schedule with candidate label sets, class-balanced selection and
the partial-label loss. No adapters, no margin; the prompts are the backbone's (CoOp on open_clip).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from cap.config import RunConfig, cpl_beta
from cap.core.losses import partial_label_loss
from cap.core.pseudolabels import balanced_selection, cpl_candidates, grip_budget, leaderboard_topk
from cap.methods.engine import (batch_order, dpl_accuracy, evaluate, flatten, initial_dpl, pseudolabel_probs, predict_test,
                                sgd, zero_shot_probs)

FPL_PER_CLASS = 16  # Menghini et al.'s FPL: top-16 zero-shot pseudolabels per class


@torch.no_grad()
def model_probs(backbone, source, config: RunConfig) -> np.ndarray:
    """(N_train, C) probabilities of the current prompted model (weak view)."""
    text = backbone.encode_text()
    order = np.arange(len(source.train_labels))
    logits = torch.cat([backbone.logit_scale * backbone.encode_image(b["weak"].to(text.device)) @ text.T
                        for b in source.batches(order, 512, ("weak",), None, drop_last=False)]).cpu().numpy()
    return pseudolabel_probs(logits, source, config)


def fit(backbone, source, config: RunConfig, index: np.ndarray, targets: torch.Tensor, round_: int) -> float:
    """Train the prompts on (index, targets): targets are C-wide 0/1 candidate rows (one-hot for
    plain labels), so one loss serves FPL, GRIP (single candidate = cross-entropy) and CPL."""
    labelled = np.asarray(source.split.labelled, dtype=np.int64)
    if len(labelled):
        index = np.concatenate([index, labelled])
        one_hot = F.one_hot(torch.as_tensor(source.train_labels[labelled]), source.n_classes).float()
        targets = torch.cat([targets, one_hot])
    b = min(config.baseline_batch_size, len(index))  # a pool smaller than a batch is one batch
    steps_per_epoch = max(1, len(index) // b)
    total = config.baseline_epochs * steps_per_epoch
    optimizer, scheduler = sgd(backbone.prompt_parameters(), config.baseline_lr * backbone.prompt_lr_scale,
                               config.momentum, config.baseline_weight_decay, total, steps_per_epoch)
    device = next(iter(backbone.prompt_parameters())).device
    losses = []
    for epoch in range(config.baseline_epochs):
        positions = batch_order(np.arange(len(index)), steps_per_epoch * b, config.seed, round_ * 10_000 + epoch, 3)
        batches = source.batches(index[positions], b, ("weak",), None)
        for step, batch in enumerate(batches):
            cand = targets[positions[step * b:(step + 1) * b]].to(device)
            text = backbone.encode_text()
            logits = backbone.logit_scale * backbone.encode_image(batch["weak"].to(device)) @ text.T
            loss = partial_label_loss(logits, cand)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
    return float(np.mean(losses)) if losses else 0.0


def _one_hot(dpl: dict, n_classes: int) -> tuple[np.ndarray, torch.Tensor]:
    index, label = flatten(dpl)
    return index, F.one_hot(torch.as_tensor(label), n_classes).float()


def _result(config: RunConfig, source, backbone, history: list, started: float) -> dict:
    pred, labels, confidence = predict_test(backbone, source)
    return {"metrics": evaluate(pred, labels, source.n_classes, config.paradigm, list(source.split.seen), confidence),
            "history": history, "train_seconds": time.perf_counter() - started}


def train_zero_shot(config: RunConfig, source, backbone, run_dir=None, stop_after_epoch=None) -> dict:
    """Zero-shot CLIP: no training, the class prompts as they are."""
    return _result(config, source, backbone, [], time.perf_counter())


def train_fpl(config: RunConfig, source, backbone, run_dir=None, stop_after_epoch=None) -> dict:
    """FPL: one round on the zero-shot top-16 leaderboards."""
    started = time.perf_counter()
    unlabelled = np.asarray(source.split.unlabelled, dtype=np.int64)
    dpl = initial_dpl(zero_shot_probs(source, config), unlabelled, source.split.pseudolabel_classes, FPL_PER_CLASS)
    entry = {"round": 1, "per_class": FPL_PER_CLASS} | dpl_accuracy(dpl, source.train_labels)
    entry["loss"] = fit(backbone, source, config, *_one_hot(dpl, source.n_classes), 1)
    return _result(config, source, backbone, [entry], started)


def grip_pseudolabels(config: RunConfig, source, probs: np.ndarray, budget: int):
    """GRIP's pseudolabels of one round: the top-``budget`` leaderboards of the unlabelled pool."""
    unlabelled = np.asarray(source.split.unlabelled, dtype=np.int64)
    classes = source.split.pseudolabel_classes
    dpl = {c: unlabelled[rows].tolist() for c, rows in leaderboard_topk(probs[unlabelled], budget, classes=classes).items()}
    index, targets = _one_hot(dpl, source.n_classes)
    return index, targets, dpl_accuracy(dpl, source.train_labels)


def cpl_pseudolabels(config: RunConfig, source, probs: np.ndarray, budget: int):
    """CPL's pseudolabels of one round: candidate sets, class-balanced selection of ``budget`` per class."""
    unlabelled = np.asarray(source.split.unlabelled, dtype=np.int64)
    classes = source.split.pseudolabel_classes
    p = probs[unlabelled]
    candidates = np.zeros_like(p, dtype=bool)
    candidates[:, classes] = cpl_candidates(p[:, classes], config.cpl_alpha, cpl_beta(config, len(classes)))
    pools = balanced_selection(p, candidates, budget, classes=classes)
    rows = np.asarray(sorted({r for pool in pools.values() for r in pool}), dtype=np.int64)
    index = unlabelled[rows]
    info = dpl_accuracy({c: unlabelled[pool].tolist() for c, pool in pools.items()}, source.train_labels) | {
        "mean_candidates": float(candidates[rows].sum(1).mean()) if len(rows) else 0.0,
        "true_label_in_candidates": float(candidates[rows, source.train_labels[index]].mean() * 100)
        if len(rows) else None}
    return index, torch.as_tensor(candidates[rows]).float(), info


def train_rounds(config: RunConfig, source, backbone, pseudolabels) -> dict:
    """GRIP's schedule: each round, ``pseudolabels`` picks a growing per-class budget from the
    previous round's model (zero-shot in round 1), and the prompts are trained from scratch."""
    started = time.perf_counter()
    n_unlabelled = len(source.split.unlabelled)
    n_classes = len(source.split.pseudolabel_classes)
    probs = zero_shot_probs(source, config)
    history = []
    for round_ in range(1, config.rounds + 1):
        budget = grip_budget(round_, n_unlabelled, n_classes, config.rounds)
        index, targets, entry = pseudolabels(config, source, probs, budget)
        backbone.reset_prompts()
        entry |= {"round": round_, "per_class": budget, "loss": fit(backbone, source, config, index, targets, round_)}
        history.append(entry)
        if round_ < config.rounds:
            probs = model_probs(backbone, source, config)
    return _result(config, source, backbone, history, started)


def train_grip(config: RunConfig, source, backbone, run_dir=None, stop_after_epoch=None) -> dict:
    return train_rounds(config, source, backbone, grip_pseudolabels)


def train_cpl(config: RunConfig, source, backbone, run_dir=None, stop_after_epoch=None) -> dict:
    return train_rounds(config, source, backbone, cpl_pseudolabels)
