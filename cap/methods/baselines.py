"""Baselines on the same engine: zero-shot CLIP, FPL, GRIP and CPL (the method page's baselines).

FPL trains the prompts once on the zero-shot top-16 leaderboards. GRIP grows the per-class
budget over rounds, re-labels with the previous round's model and re-initialises the prompts
each round. CPL follows GRIP's schedule with candidate label sets, class-balanced selection and
the partial-label loss. No adapters, no margin; the prompts are the backbone's (CoOp on open_clip).

Every trained baseline checkpoints at the end of each round (its prompts, the pseudolabel
probabilities of the next round, its history and the RNG state), so a killed run resumes after its
last finished round with exactly the numbers an uninterrupted run gets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cap.config import RunConfig, cpl_beta
from cap.core.losses import partial_label_loss, single_labels
from cap.core.pseudolabels import balanced_selection, cpl_candidates, grip_budget, leaderboard_topk
from cap.methods.checkpoints import (RunInterrupted, load_checkpoint, load_trainable_state, save_checkpoint,
                                     trainable_state)
from cap.methods.engine import (batch_order, check_finite_losses, dpl_accuracy, evaluate, flatten, zero_shot_leaderboards,
                                pseudolabel_probs, predict_test, sgd, training_budget, zero_shot_probs)

FPL_PER_CLASS = 16  # Menghini et al.'s FPL: top-16 zero-shot pseudolabels per class


@torch.no_grad()
def model_probs(backbone, source, config: RunConfig) -> np.ndarray:
    """(N_train, C) probabilities of the current prompted model (weak view)."""
    text = backbone.encode_text()
    order = np.arange(len(source.train_labels))
    logits = torch.cat([backbone.logit_scale * backbone.encode_image(b["weak"].to(text.device)) @ text.T
                        for b in source.batches(order, 512, ("weak",), None, drop_last=False)]).cpu().numpy()
    return pseudolabel_probs(logits, source, config)


def fit(backbone, source, config: RunConfig, index: np.ndarray, targets: torch.Tensor, round_: int) -> dict:
    """Train the prompts on (index, targets): targets are C-wide 0/1 candidate rows (one-hot for
    plain labels), so one loss serves FPL, GRIP (single candidate = cross-entropy) and CPL.
    Returns the mean loss and the budget spent: gradient steps and images seen."""
    labelled = np.asarray(source.split.labelled, dtype=np.int64)
    if len(labelled):
        index = np.concatenate([index, labelled])
        one_hot = F.one_hot(torch.as_tensor(source.train_labels[labelled]), source.n_classes).float()
        targets = torch.cat([targets, one_hot])
    labels = single_labels(targets)  # FPL, GRIP: one label per image, so the loss is plain cross-entropy
    b = min(config.baseline_batch_size, len(index))  # a pool smaller than a batch is one batch
    steps_per_epoch = max(1, len(index) // b)
    total = config.baseline_epochs * steps_per_epoch
    optimizer, scheduler = sgd(backbone.prompt_parameters(), config.baseline_lr * backbone.prompt_lr_scale,
                               config.momentum, config.baseline_weight_decay, total, steps_per_epoch)
    device = next(iter(backbone.prompt_parameters())).device
    losses, images = [], 0
    for epoch in range(config.baseline_epochs):
        positions = batch_order(np.arange(len(index)), steps_per_epoch * b, config.seed, round_ * 10_000 + epoch, 3)
        batches = source.batches(index[positions], b, ("weak",), None)
        epoch_losses = []
        for step, batch in enumerate(batches):
            rows = positions[step * b:(step + 1) * b]
            text = backbone.logit_scale * backbone.encode_text()  # the scale applied to C rows, not B × C logits
            logits = backbone.encode_image(batch["weak"].to(device)) @ text.T
            loss = (F.cross_entropy(logits.float(), labels[rows].to(device)) if labels is not None
                    else partial_label_loss(logits, targets[rows].to(device)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            epoch_losses.append(loss.detach())
            images += len(rows)
        if epoch_losses:
            losses.append(torch.stack(epoch_losses).cpu())
            check_finite_losses(losses[-1], f"{config.method} round {round_}, epoch {epoch}",
                                f"lower baseline_lr (now {config.baseline_lr})")
    steps = sum(len(epoch_losses) for epoch_losses in losses)
    return {"loss": float(np.mean(torch.cat(losses).numpy().astype(np.float64))) if losses else 0.0,
            "gradient_steps": steps, "images_seen": images}


def _one_hot(dpl: dict, n_classes: int) -> tuple[np.ndarray, torch.Tensor]:
    index, label = flatten(dpl)
    return index, F.one_hot(torch.as_tensor(label), n_classes).float()


def _result(config: RunConfig, source, backbone, history: list, seconds: float) -> dict:
    pred, labels, confidence = predict_test(backbone, source)
    return {"metrics": evaluate(pred, labels, source.n_classes, config.paradigm, list(source.split.seen), confidence),
            "history": history, "train_seconds": seconds, "budget": training_budget(history)}


def _save_round(run_dir: Path, backbone, state: dict) -> None:
    rng = {"cpu": torch.get_rng_state()} | ({"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {})
    save_checkpoint(Path(run_dir) / "checkpoint.pt", state | {"backbone": trainable_state(backbone), "rng": rng})


def _restore_round(run_dir: Path | None, backbone) -> dict | None:
    """The state after the last finished round of a killed attempt, with the prompts and RNG it had."""
    saved = load_checkpoint(Path(run_dir) / "checkpoint.pt", _ROUND_STATE + ("backbone", "rng")) if run_dir else None
    if saved is None:
        return None
    load_trainable_state(backbone, saved["backbone"])
    torch.set_rng_state(saved["rng"]["cpu"])
    if "cuda" in saved["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    probs = saved["probs"]
    return {key: saved[key] for key in _ROUND_STATE} | {"probs": probs.numpy() if probs is not None else None}


_ROUND_STATE = ("round", "history", "probs", "elapsed")


def train_in_rounds(config: RunConfig, source, backbone, n_rounds: int, one_round: Callable[[int, np.ndarray], dict],
                    run_dir: Path | None = None, stop_after_round: int | None = None) -> dict:
    """Rounds 1..``n_rounds``: ``one_round(round_, probs)`` trains the prompts and returns the round's
    history entry, from ``probs``, the pseudolabel probabilities of the previous round's model
    (zero-shot before round 1). With ``run_dir``, a checkpoint after every round, from which a
    killed run resumes; ``stop_after_round`` raises RunInterrupted after that round's checkpoint."""
    started = time.perf_counter()
    state = _restore_round(run_dir, backbone) or {"round": 0, "history": [], "elapsed": 0.0,
                                                  "probs": zero_shot_probs(source, config)}
    for round_ in range(state["round"] + 1, n_rounds + 1):
        state["history"].append(one_round(round_, state["probs"]))
        state["probs"] = model_probs(backbone, source, config) if round_ < n_rounds else None
        state["round"] = round_
        if run_dir is not None:
            _save_round(run_dir, backbone, state | {"elapsed": state["elapsed"] + time.perf_counter() - started})
        if stop_after_round is not None and round_ == stop_after_round:
            raise RunInterrupted(f"stopped after round {round_} as asked")
    return _result(config, source, backbone, state["history"], state["elapsed"] + time.perf_counter() - started)


def train_zero_shot(config: RunConfig, source, backbone, run_dir=None, stop_after=None) -> dict:
    """Zero-shot CLIP: no training, the class prompts as they are."""
    return _result(config, source, backbone, [], 0.0)


def train_fpl(config: RunConfig, source, backbone, run_dir=None, stop_after=None) -> dict:
    """FPL: one round on the zero-shot top-16 leaderboards (``stop_after``: stop after that round)."""
    unlabelled = np.asarray(source.split.unlabelled, dtype=np.int64)

    def one_round(round_: int, probs: np.ndarray) -> dict:
        dpl = zero_shot_leaderboards(probs, unlabelled, source.split.pseudolabel_classes, FPL_PER_CLASS)
        entry = {"round": round_, "per_class": FPL_PER_CLASS} | dpl_accuracy(dpl, source.train_labels)
        return entry | fit(backbone, source, config, *_one_hot(dpl, source.n_classes), round_)

    return train_in_rounds(config, source, backbone, 1, one_round, run_dir, stop_after)


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


def train_rounds(config: RunConfig, source, backbone, pseudolabels, run_dir: Path | None = None,
                 stop_after_round: int | None = None) -> dict:
    """GRIP's schedule: each round, ``pseudolabels`` picks a growing per-class budget from the
    previous round's model (zero-shot in round 1), and the prompts are trained from scratch."""
    n_unlabelled = len(source.split.unlabelled)
    n_classes = len(source.split.pseudolabel_classes)

    def one_round(round_: int, probs: np.ndarray) -> dict:
        budget = grip_budget(round_, n_unlabelled, n_classes, config.rounds)
        index, targets, entry = pseudolabels(config, source, probs, budget)
        backbone.reset_prompts()
        return entry | {"round": round_, "per_class": budget} | fit(backbone, source, config, index, targets, round_)

    return train_in_rounds(config, source, backbone, config.rounds, one_round, run_dir, stop_after_round)


def train_grip(config: RunConfig, source, backbone, run_dir=None, stop_after=None) -> dict:
    """GRIP (``stop_after``: stop after that round, 1-based)."""
    return train_rounds(config, source, backbone, grip_pseudolabels, run_dir, stop_after)


def train_cpl(config: RunConfig, source, backbone, run_dir=None, stop_after=None) -> dict:
    """CPL (``stop_after``: stop after that round, 1-based)."""
    return train_rounds(config, source, backbone, cpl_pseudolabels, run_dir, stop_after)
