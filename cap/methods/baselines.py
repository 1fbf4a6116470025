"""Baselines on the same engine: zero-shot CLIP, FPL, GRIP and CPL (spec §4).

FPL trains the prompts once on the zero-shot top-16 leaderboards. GRIP grows the per-class
budget over rounds, re-labels with the previous round's model and re-initialises the prompts
each round. CPL follows GRIP's schedule with candidate label sets, class-balanced selection and
the partial-label loss. No adapters, no margin; the prompts are the backend's (CoOp on open_clip).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from cap.config import RunConfig, cpl_beta, prompt_lr
from cap.losses import partial_label_loss
from cap.methods.common import board_accuracy, flatten, initial_pseudolabels, pseudolabel_probs, zero_shot_probs
from cap.pseudolabels import balanced_selection, cpl_candidates, grip_k, leaderboard_topk
from cap.training import batch_order, evaluate, predict_test, sgd

FPL_K = 16  # Menghini et al.'s FPL: top-16 per class


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
    optimizer, scheduler = sgd(backbone.prompt_parameters(), prompt_lr(config, config.baseline_lr), config.momentum,
                               config.baseline_weight_decay, total, steps_per_epoch)
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


def _one_hot_board(board: dict, n_classes: int) -> tuple[np.ndarray, torch.Tensor]:
    index, label = flatten(board)
    return index, F.one_hot(torch.as_tensor(label), n_classes).float()


def run_baseline(config: RunConfig, source, backbone) -> dict:
    started = time.perf_counter()
    classes = list(source.split.unseen)
    unlabelled = np.asarray(source.split.unlabelled, dtype=np.int64)
    history = []
    if config.method == "fpl":
        board = initial_pseudolabels(zero_shot_probs(source, config), unlabelled, classes, FPL_K)
        history.append({"round": 1, "k": FPL_K} | board_accuracy(board, source.train_labels))
        index, targets = _one_hot_board(board, source.n_classes)
        history[-1]["loss"] = fit(backbone, source, config, index, targets, 1)
    elif config.method in ("grip", "cpl"):
        probs = zero_shot_probs(source, config)
        for round_ in range(1, config.rounds + 1):
            k = grip_k(round_, len(unlabelled), len(classes), config.rounds)
            if config.method == "grip":
                board = {c: unlabelled[rows].tolist() for c, rows in
                         leaderboard_topk(probs[unlabelled], k, classes=classes).items()}
                index, targets = _one_hot_board(board, source.n_classes)
                entry = board_accuracy(board, source.train_labels)
            else:
                p = probs[unlabelled]
                candidates = np.zeros_like(p, dtype=bool)
                candidates[:, classes] = cpl_candidates(p[:, classes], config.cpl_alpha,
                                                        cpl_beta(config, len(classes)))
                pools = balanced_selection(p, candidates, k, classes=classes)
                rows = np.asarray(sorted({r for pool in pools.values() for r in pool}), dtype=np.int64)
                index = unlabelled[rows]
                targets = torch.as_tensor(candidates[rows]).float()
                board = {c: unlabelled[pool].tolist() for c, pool in pools.items()}
                entry = board_accuracy(board, source.train_labels) | {
                    "mean_candidates": float(candidates[rows].sum(1).mean()) if len(rows) else 0.0,
                    "true_label_in_candidates": float(candidates[rows, source.train_labels[index]].mean() * 100)
                    if len(rows) else None}
            backbone.reset_prompts()
            entry |= {"round": round_, "k": k, "loss": fit(backbone, source, config, index, targets, round_)}
            history.append(entry)
            if round_ < config.rounds:
                probs = model_probs(backbone, source, config)
    elif config.method != "zero_shot":
        raise ValueError(config.method)
    pred, labels, confidence = predict_test(backbone, source)
    return {"metrics": evaluate(pred, labels, source.n_classes, config.paradigm, list(source.split.seen), confidence),
            "history": history, "train_seconds": time.perf_counter() - started}
