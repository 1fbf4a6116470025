"""Baselines on the same engine: zero-shot CLIP, FPL, GRIP and CPL (the method page's baselines).

FPL trains the prompts once on the zero-shot top-16 leaderboards. GRIP grows the per-class
budget over rounds and re-labels with the previous round's model. CPL follows GRIP's schedule with
candidate label sets, class-balanced selection and the partial-label loss. No adapters, no margin;
the prompts are the backbone's (CoOp on open_clip). How each one trains (schedule, batches,
held-out pseudolabels, labelled images, prompts between rounds) is its official code's by default:
Menghini et al.'s for FPL and GRIP, CPL's for CPL (``cap.config.OFFICIAL_BASELINES``).

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
from cap.core.pseudolabels import balanced_selection, cpl_candidates, cpl_pool_caps, grip_budget, leaderboard_topk
from cap.methods.checkpoints import (RunInterrupted, load_checkpoint, load_trainable_state, save_checkpoint,
                                     trainable_state)
from cap.methods.engine import (batch_order, check_finite_losses, dpl_accuracy, evaluate, flatten, zero_shot_leaderboards,
                                pseudolabel_probs, predict_test, sgd, training_budget, zero_shot_probs)

FPL_PER_CLASS = 16  # Menghini et al.'s FPL: top-16 zero-shot pseudolabels per class
HOLD_OUT_FROM = 10  # Menghini: pseudolabels are split train/validation when the per-class budget is >= 10
CPL_LAMBDA = 1.0  # official LAMBDA: weight of the pseudolabel loss beside the labelled cross-entropy


@torch.no_grad()
def model_probs(backbone, source, config: RunConfig) -> np.ndarray:
    """(N_train, C) probabilities of the current prompted model (weak view)."""
    text = backbone.encode_text()
    order = np.arange(len(source.train_labels))
    logits = torch.cat([backbone.logit_scale * backbone.encode_image(b["weak"].to(text.device)) @ text.T
                        for b in source.batches(order, 512, ("weak",), None, drop_last=False)]).cpu().numpy()
    return pseudolabel_probs(logits, source, config)


def kept_for_training(n: int, ratio: float, seed: int) -> np.ndarray:
    """Positions of the ``int(n · ratio)`` of ``n`` items the Menghini code trains on (its
    ``np.random.seed(seed); np.random.choice(range(n), int(n · ratio), replace=False)``); all for ratio 1."""
    if ratio >= 1.0:
        return np.arange(n)
    return np.random.RandomState(seed).choice(n, size=int(n * ratio), replace=False)


def _labelled_batches(labelled: np.ndarray, size: int, seed: int, round_: int):
    """The CPL code's TrainSampler: consecutive chunks of a permutation of the labelled images, a new
    permutation when one is used up (the last chunk of a permutation may be short)."""
    rng = np.random.default_rng([seed, round_, 5])
    while True:
        order = rng.permutation(labelled)
        for start in range(0, len(order), size):
            yield order[start:start + size]


def epoch_plan(n: int, batch_size: int, last_batch: str) -> tuple[int, int, int]:
    """(batch size, steps per epoch, rows drawn per epoch) for a pool of ``n``: "dropped" (CPL's
    DataLoader drop_last: ⌊n/B⌋ steps, none under a batch), "kept" (Menghini's: ⌈n/B⌉ steps, the last
    one short), "at_least_one" (⌊n/B⌋ steps, one batch of all n when n < B)."""
    if last_batch == "dropped":
        return batch_size, n // batch_size, (n // batch_size) * batch_size
    b = max(1, min(batch_size, n))
    if last_batch == "kept":
        return b, -(-n // b) if n else 0, n
    return b, max(1, n // b), max(1, n // b) * b


def _menghini_loss(logits: torch.Tensor, labels: torch.Tensor, labelled: torch.Tensor, paradigm: str,
                   weight: float, seen: list[int]) -> torch.Tensor:
    """Menghini's per-batch loss (mean cross-entropy per group, an empty group counting 0): SSL
    ``w·CE(labelled) + CE(pseudolabelled)``, TRZSL ``CE(seen-class rows) + w·CE(unseen-class rows)``."""
    def ce(mask):
        return F.cross_entropy(logits[mask], labels[mask]) if bool(mask.any()) else logits.sum() * 0.0

    if paradigm == "ssl":
        return weight * ce(labelled) + ce(~labelled)
    is_seen = torch.isin(labels, torch.as_tensor(seen, device=labels.device))
    return ce(is_seen) + weight * ce(~is_seen)


def _training_pool(source, config: RunConfig, index: np.ndarray, targets: torch.Tensor, hold_out: bool):
    """(index, targets, the labelled images trained on, the number of pseudolabelled rows): the
    pseudolabels (``hold_out``: only ``baseline_train_ratio`` of them, Menghini's validation split),
    then the labelled images (always split by that ratio), joined unless they come separately."""
    ratio, seed = config.baseline_train_ratio, config.validation_seed
    if hold_out:
        keep = kept_for_training(len(index), ratio, seed)
        index, targets = np.asarray(index)[keep], targets[torch.as_tensor(keep, dtype=torch.long)]
    n_pseudo = len(index)
    labelled = np.asarray(source.split.labelled, dtype=np.int64)
    labelled = labelled[kept_for_training(len(labelled), ratio, seed)]
    if len(labelled) and config.baseline_labelled != "separate":
        index = np.concatenate([index, labelled])
        targets = torch.cat([targets, F.one_hot(torch.as_tensor(source.train_labels[labelled]), source.n_classes).float()])
    return index, targets, labelled, n_pseudo


def _optimiser(params: list, config: RunConfig, lr_scale: float, steps_per_epoch: int):
    """SGD under the warm-up + cosine schedule, counted in epochs (``baseline_schedule="per_epoch"``,
    the official codes) or in steps."""
    unit = 1 if config.baseline_schedule == "per_epoch" else steps_per_epoch
    return sgd(params, config.baseline_lr * lr_scale, config.momentum, config.baseline_weight_decay,
               config.baseline_epochs * unit, config.baseline_warmup_epochs * unit)


def fit(backbone, source, config: RunConfig, index: np.ndarray, targets: torch.Tensor, round_: int,
        hold_out: bool = False) -> dict:
    """Train the prompts on (index, targets): targets are C-wide candidate rows (0/1, soft in CPL's
    round 1, one-hot for plain labels), so one loop serves FPL, GRIP (single candidate = cross-entropy)
    and CPL; labelled images (SSL, TRZSL) come as ``baseline_labelled`` says (:func:`_training_pool`).
    Returns the mean loss and the budget: gradient steps and images seen."""
    index, targets, labelled, n_pseudo = _training_pool(source, config, index, targets, hold_out)
    separate = len(labelled) > 0 and config.baseline_labelled == "separate"
    labels = single_labels(targets)  # FPL, GRIP: one label per image, so the loss is plain cross-entropy
    menghini = None
    if config.baseline_labelled == "weighted" and labels is not None and config.paradigm != "ul":
        # Menghini's group weight: FPL SSL |P|/|L|, GRIP SSL and TRZSL |L|/|P|
        weight = (n_pseudo / max(1, len(labelled)) if config.paradigm == "ssl" and config.method == "fpl"
                  else len(labelled) / max(1, n_pseudo))
        menghini = (torch.arange(len(index)) >= n_pseudo, weight, list(source.split.seen))
    b, steps_per_epoch, rows_per_epoch = epoch_plan(len(index), config.baseline_batch_size, config.baseline_last_batch)
    params = list(backbone.prompt_parameters())
    optimizer, scheduler = _optimiser(params, config, backbone.prompt_lr_scale, steps_per_epoch)
    per_epoch = config.baseline_schedule == "per_epoch"
    device = next(iter(params)).device
    if separate:  # CPL: bs = clamp(B · n_labelled / n_pseudolabelled, 8, 256)
        size = int(min(max(len(labelled) / max(1, len(index)) * config.baseline_batch_size, 8), 256))
        labelled_batches = _labelled_batches(labelled, size, config.seed, round_)
    losses, images = [], 0
    for epoch in range(config.baseline_epochs):
        positions = batch_order(np.arange(len(index)), rows_per_epoch, config.seed, round_ * 10_000 + epoch, 3)
        epoch_losses = []
        for step, batch in enumerate(source.batches(index[positions], b, ("weak",), None, drop_last=False)):
            rows = positions[step * b:(step + 1) * b]
            text = backbone.logit_scale * backbone.encode_text()  # the scale applied to C rows, not B × C logits
            inputs = batch["weak"].to(device)
            if separate:
                extra = next(labelled_batches)
                inputs = torch.cat([inputs, next(source.batches(extra, len(extra), ("weak",), None))["weak"].to(device)])
            logits = backbone.encode_image(inputs) @ text.T
            loss = _pool_loss(logits[:len(rows)], rows, labels, targets, menghini, config.paradigm)
            if separate:  # CPL: CE on the labelled batch + λ · the pseudolabel loss
                loss = F.cross_entropy(logits[len(rows):].float(), torch.as_tensor(source.train_labels[extra],
                                                                                  device=device)) + CPL_LAMBDA * loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.baseline_grad_clip:
                torch.nn.utils.clip_grad_norm_(params, max_norm=config.baseline_grad_clip)
            optimizer.step()
            if not per_epoch:
                scheduler.step()
            epoch_losses.append(loss.detach())
            images += len(rows) + (len(extra) if separate else 0)
        if per_epoch:
            scheduler.step()
        if epoch_losses:
            losses.append(torch.stack(epoch_losses).cpu())
            check_finite_losses(losses[-1], f"{config.method} round {round_}, epoch {epoch}",
                                f"lower baseline_lr (now {config.baseline_lr})")
    steps = sum(len(epoch_losses) for epoch_losses in losses)
    return {"loss": float(np.mean(torch.cat(losses).numpy().astype(np.float64))) if losses else 0.0,
            "gradient_steps": steps, "images_seen": images}


def _pool_loss(logits: torch.Tensor, rows: np.ndarray, labels, targets: torch.Tensor, menghini, paradigm: str):
    """The loss on a batch of the pool's ``rows``: Menghini's weighted groups (``menghini`` = (is
    labelled, weight, seen classes)), cross-entropy of single labels, or CPL's partial-label loss."""
    device = logits.device
    if menghini is not None:
        is_labelled, weight, seen = menghini
        return _menghini_loss(logits.float(), labels[rows].to(device), is_labelled[rows].to(device), paradigm,
                              weight, seen)
    if labels is not None:
        return F.cross_entropy(logits.float(), labels[rows].to(device))
    return partial_label_loss(logits, targets[rows].to(device))


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


def train_in_rounds(config: RunConfig, source, backbone, n_rounds: int, one_round: Callable[[int, np.ndarray, list], dict],
                    run_dir: Path | None = None, stop_after_round: int | None = None) -> dict:
    """Rounds 1..``n_rounds``: ``one_round(round_, probs, history)`` trains the prompts and returns the
    round's history entry, from ``probs``, the pseudolabel probabilities of the previous round's model
    (zero-shot before round 1), and the entries of the rounds before. With ``run_dir``, a checkpoint after every round, from which a
    killed run resumes; ``stop_after_round`` raises RunInterrupted after that round's checkpoint."""
    started = time.perf_counter()
    state = _restore_round(run_dir, backbone) or {"round": 0, "history": [], "elapsed": 0.0,
                                                  "probs": zero_shot_probs(source, config)}
    for round_ in range(state["round"] + 1, n_rounds + 1):
        state["history"].append(one_round(round_, state["probs"], list(state["history"])))
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


def _leaderboard_options(config: RunConfig) -> dict:
    """Menghini's leaderboards: unsorted appends, lists kept as left (their order decides the hold-out)."""
    menghini = config.baseline_leaderboard == "menghini"
    return {"order": "official" if menghini else "sorted", "sort_on_append": not menghini}


def train_fpl(config: RunConfig, source, backbone, run_dir=None, stop_after=None) -> dict:
    """FPL: one round on the zero-shot top-16 leaderboards (``stop_after``: stop after that round)."""
    unlabelled = np.asarray(source.split.unlabelled, dtype=np.int64)

    def one_round(round_: int, probs: np.ndarray, history: list) -> dict:
        dpl = zero_shot_leaderboards(probs, unlabelled, source.split.pseudolabel_classes, FPL_PER_CLASS,
                                     **_leaderboard_options(config))
        entry = {"round": round_, "per_class": FPL_PER_CLASS} | dpl_accuracy(dpl, source.train_labels)
        return entry | fit(backbone, source, config, *_one_hot(dpl, source.n_classes), round_,
                           hold_out=FPL_PER_CLASS >= HOLD_OUT_FROM)

    return train_in_rounds(config, source, backbone, 1, one_round, run_dir, stop_after)


def grip_pseudolabels(config: RunConfig, source, probs: np.ndarray, budget: int, round_: int = 1,
                      previous_counts: dict | None = None):
    """GRIP's pseudolabels of one round: the top-``budget`` leaderboards of the unlabelled pool."""
    unlabelled = np.asarray(source.split.unlabelled, dtype=np.int64)
    classes = source.split.pseudolabel_classes
    boards = leaderboard_topk(probs[unlabelled], budget, classes=classes, **_leaderboard_options(config))
    dpl = {c: unlabelled[rows].tolist() for c, rows in boards.items()}
    index, targets = _one_hot(dpl, source.n_classes)
    return index, targets, dpl_accuracy(dpl, source.train_labels)


def cpl_pseudolabels(config: RunConfig, source, probs: np.ndarray, budget: int, round_: int = 1,
                     previous_counts: dict | None = None):
    """CPL's pseudolabels of one round: candidate sets, class-balanced selection of ``budget`` per
    class (``cpl_quota="pools"``: the official capacities grown from ``previous_counts``, the
    previous round's per-class counts); round-1 targets soft with ``cpl_soft_first_round``."""
    unlabelled = np.asarray(source.split.unlabelled, dtype=np.int64)
    classes = source.split.pseudolabel_classes
    p = probs[unlabelled]
    candidates = np.zeros_like(p, dtype=bool)
    candidates[:, classes] = cpl_candidates(p[:, classes], config.cpl_alpha, cpl_beta(config, len(classes)))
    capacity = budget
    if config.cpl_quota == "pools" and previous_counts:
        fills = [int(previous_counts.get(c, previous_counts.get(str(c), 0))) for c in classes]
        capacity = dict(zip(classes, cpl_pool_caps(fills, budget)))
    pools = balanced_selection(p, candidates, capacity, classes=classes)
    rows = np.asarray(sorted({r for pool in pools.values() for r in pool}), dtype=np.int64)
    index = unlabelled[rows]
    info = dpl_accuracy({c: unlabelled[pool].tolist() for c, pool in pools.items()}, source.train_labels) | {
        "mean_candidates": float(candidates[rows].sum(1).mean()) if len(rows) else 0.0,
        "true_label_in_candidates": float(candidates[rows, source.train_labels[index]].mean() * 100)
        if len(rows) else None}
    if config.cpl_soft_first_round and round_ == 1:  # official grip_* round 1: candidate-renormalised probabilities
        soft = np.where(candidates[rows], p[rows], 0.0)
        return index, torch.as_tensor(soft / soft.sum(1, keepdims=True)).float(), info
    return index, torch.as_tensor(candidates[rows]).float(), info


def train_rounds(config: RunConfig, source, backbone, pseudolabels, run_dir: Path | None = None,
                 stop_after_round: int | None = None) -> dict:
    """GRIP's schedule: each round, ``pseudolabels`` picks a growing per-class budget from the
    previous round's model (zero-shot in round 1); the prompts start the round as
    ``baseline_reinit`` says (carried over, the initial ones again, or a fresh draw)."""
    n_unlabelled = len(source.split.unlabelled)
    n_classes = len(source.split.pseudolabel_classes)
    initial = trainable_state(backbone)  # as built, before round 1 (a resumed run builds the same)

    def one_round(round_: int, probs: np.ndarray, history: list) -> dict:
        budget = grip_budget(round_, n_unlabelled, n_classes, config.rounds, rounding=config.budget_rounding)
        previous = history[-1].get("per_class_count") if history else None
        index, targets, entry = pseudolabels(config, source, probs, budget, round_=round_, previous_counts=previous)
        if config.baseline_reinit == "initial":
            load_trainable_state(backbone, initial)
        elif config.baseline_reinit == "fresh":
            backbone.reset_prompts()
        return entry | {"round": round_, "per_class": budget} | fit(backbone, source, config, index, targets, round_,
                                                                    hold_out=budget >= HOLD_OUT_FROM)

    return train_in_rounds(config, source, backbone, config.rounds, one_round, run_dir, stop_after_round)


def train_grip(config: RunConfig, source, backbone, run_dir=None, stop_after=None) -> dict:
    """GRIP (``stop_after``: stop after that round, 1-based)."""
    return train_rounds(config, source, backbone, grip_pseudolabels, run_dir, stop_after)


def train_cpl(config: RunConfig, source, backbone, run_dir=None, stop_after=None) -> dict:
    """CPL (``stop_after``: stop after that round, 1-based)."""
    return train_rounds(config, source, backbone, cpl_pseudolabels, run_dir, stop_after)
