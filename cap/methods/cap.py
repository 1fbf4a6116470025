"""CAP: concept alignment, confusion-aware calibrated margin, independent adapters, self-training.

Follows the official training loop (the method page's training loop): the initial D_PL from
zero-shot leaderboards with concept-aligned replacements; every epoch a margin from D_PL
prototypes and last epoch's confident predictions; each :meth:`CapTrainer.step` one text pass
shared by the D_PL, labelled and unlabelled streams; D_PL refreshed every ``refresh_every``
epochs with a growing size k_e; the final model evaluated without adapters.

One implementation on every backbone: the book's runs, the command line, the tests and the
official-code equivalence test all train through :class:`CapTrainer` (:func:`train_cap`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cap.config import RunConfig
from cap.core.concepts import align_concepts, choose_descriptions, cluster_centroids, find_mismatch
from cap.core.losses import margin_cross_entropy, masked_margin_cross_entropy
from cap.core.margin import class_prototypes, class_similarity, confusion_margin, first_entry_per_image, largest_entries
from cap.core.pseudolabels import confident_leaderboard, dpl_size, refresh_dpl
from cap.data.registry import get_dataset
from cap.methods.checkpoints import (RunInterrupted, load_checkpoint, load_trainable_state, save_checkpoint,
                                     trainable_state)
from cap.methods.engine import (batch_order, check_finite_losses, dpl_accuracy, epoch_generator, evaluate, flatten,
                                zero_shot_leaderboards, predict_test, sgd, training_budget, zero_shot_probs)
from cap.models.adapters import Adapters

log = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 60.0  # a killed run loses at most about a minute; short runs skip the disk writes


def concept_alignment(config: RunConfig, source, probs: np.ndarray, dpl: dict) -> dict:
    """Detect mismatched pseudolabel classes and replace their part of D_PL (method page: alignment)."""
    classes = source.split.pseudolabel_classes
    unlabelled = np.asarray(source.split.unlabelled)
    if config.mismatch_source == "detect":
        pred = np.asarray(classes)[probs[unlabelled][:, classes].argmax(1)]
        local = {c: i for i, c in enumerate(classes)}
        found = find_mismatch(source.zero_shot_image[unlabelled], source.zero_shot_text[classes],
                              np.array([local[c] for c in pred]), logit_scale=source.logit_scale, seed=config.cluster_seed)
        mismatched = [classes[i] for i in found.mismatched]
    else:
        official = set(get_dataset(config.dataset).official_mismatched)  # by name: a source may hold a subset of classes
        mismatched = [c for c in classes if source.classnames[c] in official]
    candidates = source.description_features(mismatched)
    missing = sorted(set(mismatched) - set(candidates))
    if missing:
        log.warning("no descriptions for classes %s: their zero-shot pseudolabels are kept",
                    [source.classnames[c] for c in missing])
    centroids = None
    if config.description_choice == "best_of_n" and candidates:
        centroids = cluster_centroids(source.zero_shot_image[unlabelled], len(classes), seed=config.cluster_seed)
    chosen = choose_descriptions(candidates, centroids, config.description_choice)
    aligned = align_concepts(source.zero_shot_image, {c: candidates[c][i] for c, i in chosen.items()},
                             k=config.k, logit_scale=source.logit_scale)
    return {"dpl": dict(dpl) | aligned, "mismatched": sorted(mismatched), "described": sorted(chosen),
            "description_index": {int(c): int(i) for c, i in chosen.items()}}


@dataclass
class StepBatch:
    """The inputs of one CAP step: a D_PL batch with its pseudolabels, an unlabelled batch (weak
    and strong views) and, in SSL and TRZSL, a labelled batch with its labels."""

    dpl: torch.Tensor
    dpl_labels: torch.Tensor
    weak: torch.Tensor
    strong: torch.Tensor
    unlabelled_index: torch.Tensor
    labelled: torch.Tensor | None = None
    labels: torch.Tensor | None = None


@dataclass
class StepResult:
    """What one step returns: the loss (already back-propagated) and the weak view's pseudolabels."""

    loss: torch.Tensor
    pseudo: torch.Tensor
    confidence: torch.Tensor
    mask: torch.Tensor


class CapTrainer:
    """One CAP run on any backbone; ``run()`` returns the results dict of the record."""

    def __init__(self, config: RunConfig, source, backbone, run_dir: Path, device: torch.device):
        self.config, self.source, self.backbone, self.device = config, source, backbone, device
        self.run_dir = Path(run_dir)
        split = source.split
        self.classes = list(split.pseudolabel_classes)  # TRZSL: the unseen classes
        self.seen = list(split.seen)
        self.labelled = np.asarray(split.labelled, dtype=np.int64)
        self.unlabelled = np.asarray(split.unlabelled, dtype=np.int64)
        self.unlabelled_per_class = len(self.unlabelled) // len(self.classes)
        self.train_labels_t = torch.as_tensor(source.train_labels)
        torch.manual_seed(config.seed)
        self.adapters = Adapters(backbone.feature_dim, independent=config.independent_adapters).to(device)
        self.prompt_opt, self.prompt_sched = self.optimiser(backbone.prompt_parameters(), self.prompt_lr)
        self.adapter_opt, self.adapter_sched = self.optimiser(self.adapters.parameters(), config.lr)

    @property
    def prompt_lr(self) -> float:
        return self.config.lr * self.backbone.prompt_lr_scale

    def optimiser(self, params, lr: float):
        """SGD with the run's momentum and weight decay under its warm-up + cosine schedule (one
        step per iteration): the prompts' (at ``prompt_lr``) and the adapters' (at ``lr``)."""
        c = self.config
        return sgd(params, lr, c.momentum, c.weight_decay, c.epochs * c.iters_per_epoch, c.warmup_epochs * c.iters_per_epoch)

    # -- setup ---------------------------------------------------------------------------------
    def initial_dpl(self) -> tuple[dict, dict]:
        """Zero-shot leaderboards, then concept alignment of the mismatched classes."""
        probs = zero_shot_probs(self.source, self.config)
        dpl = zero_shot_leaderboards(probs, self.unlabelled, self.classes, self.config.k, self.config.leaderboard_order)
        info = {"zero_shot_dpl": dpl_accuracy(dpl, self.source.train_labels)}
        if self.config.concept_alignment:
            aligned = concept_alignment(self.config, self.source, probs, dpl)
            dpl = aligned.pop("dpl")
            info["concept_alignment"] = aligned | {"dpl": dpl_accuracy(dpl, self.source.train_labels)}
        return dpl, info

    # -- margin --------------------------------------------------------------------------------
    @torch.no_grad()
    def margin(self, dpl: dict, sigma: np.ndarray, epoch: int = 0) -> torch.Tensor:
        """M = m·Δ·δ·S from D_PL prototypes (main adapter) and last epoch's confident counts σ."""
        text = self.backbone.encode_text()
        index, label = flatten(dpl)
        if self.config.paradigm == "trzsl":  # seen classes: up to k labelled images, for prototypes only
            extra = [(i, c) for c in self.seen for i in self.labelled[self.source.train_labels[self.labelled] == c][: self.config.k]]
            if extra:
                index = np.concatenate([index, [i for i, _ in extra]])
                label = np.concatenate([label, [c for _, c in extra]])
        if self.config.margin_prototypes == "official":  # an image counts once, for the class met first
            keep = first_entry_per_image(index, np.random.default_rng([self.config.seed, epoch, 4]).permutation(len(index)))
            index, label = index[keep], label[keep]
        features = torch.cat([self.adapters.main(self.backbone.encode_image(self._to(batch["weak"])))
                              for batch in self.source.batches(index, 256, ("weak",), None, drop_last=False)])
        prototypes = class_prototypes(features, torch.as_tensor(label, device=self.device), text)
        similarity = class_similarity(text, prototypes, rescale=True)
        counts = torch.as_tensor(sigma, dtype=torch.float32)
        if self.seen:  # official: r = 1 for seen classes, r = σ / max σ (over all classes) otherwise
            counts[self.seen] = counts.max()
        return confusion_margin(similarity, counts.to(self.device), self.config.margin_scale, self.config.delta)

    def _to(self, x):
        return x.to(self.device, non_blocking=True) if torch.is_tensor(x) else x

    # -- one step ------------------------------------------------------------------------------
    def step(self, batch: StepBatch, margin: torch.Tensor | None) -> StepResult:
        """One CAP iteration, stream by stream as in the method page's table:

        ========================  ===============================  =====================================
        stream                    features                         loss
        ========================  ===============================  =====================================
        D_PL                      prompts → main adapter φ^m       L_PL = L_m(y_m, z_m)
        labelled (SSL, TRZSL)     prompts → main adapter φ^m       L_L  = L_m(y_l, z_l)
        unlabelled, weak view     prompts → φ^m, no gradient       ŷ, q = argmax, max softmax; mask q > τ
        unlabelled, strong view   prompts → pseudo adapter φ^p     L_UL = masked mean L_m(ŷ, z_ps)
        ========================  ===============================  =====================================

        Every stream's text goes through the text adapter ψ^a; one text pass is shared by all of
        them and one image pass by the trained streams. L = L_PL + L_L + L_UL, one backward pass,
        then both optimisers and both schedulers step.
        """
        b = len(batch.dpl)
        # the logit scale applied once to the adapted class texts, shared by every stream's logits
        text = self.backbone.logit_scale * self.adapters.text(self.backbone.encode_text())
        with torch.no_grad():
            weak = self.adapters.main(self.backbone.encode_image(batch.weak))
            confidence, pseudo = F.softmax(weak @ text.detach().T, dim=1).max(1)
            mask = confidence > self.config.tau
        parts = [batch.dpl] + ([batch.labelled] if batch.labelled is not None else []) + [batch.strong]
        features = self.backbone.encode_image(torch.cat(parts))
        n_main = len(features) - len(batch.strong)  # D_PL and labelled rows: one main-adapter pass
        main = self.adapters.main(features[:n_main]) @ text.T
        loss = margin_cross_entropy(main[:b], batch.dpl_labels, margin)
        if batch.labelled is not None:
            loss = loss + margin_cross_entropy(main[b:], batch.labels, margin)
        strong = self.adapters.pseudo(features[n_main:])
        loss = loss + masked_margin_cross_entropy(strong @ text.T, pseudo, mask, margin)

        self.prompt_opt.zero_grad(set_to_none=True)
        self.adapter_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.prompt_opt.step()
        self.adapter_opt.step()
        self.prompt_sched.step()
        self.adapter_sched.step()
        return StepResult(loss.detach(), pseudo, confidence, mask)

    def epoch_batches(self, epoch: int, dpl: dict):
        """The epoch's ``iters_per_epoch`` step batches, a function of (seed, epoch) only."""
        config, b = self.config, self.config.batch_size
        n = config.iters_per_epoch * b
        gen = epoch_generator(config.seed, epoch)
        dpl_index, dpl_label = flatten(dpl)
        dpl_label_t = torch.as_tensor(dpl_label)
        # D_PL is sampled by position, so an image in two classes keeps both labels.
        positions = batch_order(np.arange(len(dpl_index)), n, config.seed, epoch, 0)
        dpl_batches = self.source.batches(dpl_index[positions], b, ("weak",), gen)
        unlabelled = self.source.batches(batch_order(self.unlabelled, n, config.seed, epoch, 1), b, ("weak", "strong"), gen)
        labelled = (self.source.batches(batch_order(self.labelled, n, config.seed, epoch, 2), b, ("weak",), gen)
                    if len(self.labelled) else None)
        for it in range(config.iters_per_epoch):
            m, u = next(dpl_batches), next(unlabelled)
            l = next(labelled) if labelled is not None else None
            yield StepBatch(
                dpl=self._to(m["weak"]), dpl_labels=dpl_label_t[positions[it * b:(it + 1) * b]].to(self.device),
                weak=self._to(u["weak"]), strong=self._to(u["strong"]), unlabelled_index=u["index"],
                labelled=self._to(l["weak"]) if l is not None else None,
                labels=self.train_labels_t[l["index"]].to(self.device) if l is not None else None)

    def train_epoch(self, epoch: int, dpl: dict, margin: torch.Tensor | None) -> dict:
        """Every step of one epoch; σ and the confident draws for the next margin and refresh."""
        steps = self.new_epoch_log()
        for batch in self.epoch_batches(epoch, dpl):
            self.log_step(steps, batch, self.step(batch, margin))
        return self.summarise_epoch(epoch, steps)

    @staticmethod
    def new_epoch_log() -> dict:
        # Per-step results stay on the device; one transfer at the end of the epoch (no sync per step).
        return {"pred": [], "conf": [], "mask": [], "index": [], "loss": [], "images": 0}

    @staticmethod
    def log_step(steps: dict, batch: StepBatch, out: StepResult) -> None:
        """Keep one step's results; the budget counts the images of the trained streams (D_PL,
        labelled, unlabelled)."""
        steps["images"] += len(batch.dpl) + len(batch.strong) + (len(batch.labelled) if batch.labelled is not None else 0)
        for key, value in (("pred", out.pseudo), ("conf", out.confidence), ("mask", out.mask),
                           ("index", batch.unlabelled_index), ("loss", out.loss)):
            steps[key].append(value)

    def summarise_epoch(self, epoch: int, steps: dict) -> dict:
        """The epoch's mean loss, σ, confident draws and budget from its logged steps."""
        losses = torch.stack(steps["loss"])
        check_finite_losses(losses, f"CAP epoch {epoch}", f"lower lr (now {self.config.lr})")
        n = self.config.iters_per_epoch * self.config.batch_size
        mask = torch.cat(steps["mask"]).cpu()
        pred = torch.cat(steps["pred"]).cpu()[mask]
        index = torch.cat(steps["index"])[mask]
        n_masked, n_correct = int(mask.sum()), int((pred == self.train_labels_t[index]).sum())
        return {
            "loss": float(losses.double().mean()),
            "sigma": np.bincount(pred.numpy(), minlength=self.source.n_classes),
            "draws": {"pred": pred.numpy(), "conf": torch.cat(steps["conf"]).cpu()[mask].numpy(), "index": index.numpy()},
            "masked_share": n_masked / n,
            "masked_accuracy": 100 * n_correct / n_masked if n_masked else None,
            "gradient_steps": len(steps["loss"]), "images_seen": steps["images"],
        }

    def refresh(self, epoch: int, dpl: dict, draws: dict) -> tuple[dict, int]:
        """New confident leaderboards first, then old D_PL entries, up to k_e per class."""
        new = confident_leaderboard(draws["pred"], draws["conf"], draws["index"], self.classes, current=flatten(dpl)[0])
        k_e = dpl_size(epoch, self.config.k, self.unlabelled_per_class, self.config.epochs, self.config.max_main_ratio)
        return refresh_dpl(dpl, new, k_e), k_e

    # -- the loop ------------------------------------------------------------------------------
    def run(self, stop_after: int | None = None) -> dict:
        """Setup, then per epoch: margin, steps, refresh every ``refresh_every`` epochs, test
        logging every 10; the final model is evaluated without adapters."""
        state = self.restore()
        started = last_saved = time.perf_counter()
        for epoch in range(state["epoch"] + 1, self.config.epochs):
            margin = self.epoch_margin(state, epoch)
            self.end_epoch(state, epoch, self.train_epoch(epoch, state["dpl"], margin), margin)
            stopping = stop_after is not None and epoch == stop_after
            if stopping or time.perf_counter() - last_saved >= CHECKPOINT_SECONDS:
                self.save(state, state["elapsed"] + time.perf_counter() - started)
                last_saved = time.perf_counter()
            if stopping:
                raise RunInterrupted(f"stopped after epoch {epoch} as asked")
        return self.results(state, state["elapsed"] + time.perf_counter() - started)

    def epoch_margin(self, state: dict, epoch: int) -> torch.Tensor | None:
        """The margin of ``epoch``: none in the first epoch (no σ yet) or when the margin is off."""
        return self.margin(state["dpl"], state["sigma"], epoch) if self.config.margin and epoch > 0 else None

    def end_epoch(self, state: dict, epoch: int, out: dict, margin: torch.Tensor | None) -> None:
        """Log the epoch ``train_epoch`` returned, refresh D_PL when due and test every 10 epochs."""
        config = self.config
        state["sigma"] = out["sigma"]
        entry = {"epoch": epoch, "loss": out["loss"], "sigma": out["sigma"].tolist(),
                 "masked_share": out["masked_share"], "masked_accuracy": out["masked_accuracy"],
                 "margin_mean": float(margin.sum() / max(1, margin.numel() - len(margin))) if margin is not None else 0.0,
                 "margin_max": float(margin.max()) if margin is not None else 0.0,
                 "margin_largest": largest_entries(margin) if margin is not None else [],
                 # σ = 0 gives δ = 1: the class's margin row is then the same whatever the pair
                 "sigma_zero_share": float((out["sigma"][self.classes] == 0).mean()),
                 "gradient_steps": out["gradient_steps"], "images_seen": out["images_seen"]}
        if epoch % config.refresh_every == 0:
            state["dpl"], k_e = self.refresh(epoch, state["dpl"], out["draws"])
            state["refreshes"].append({"epoch": epoch, "k": k_e} | dpl_accuracy(state["dpl"], self.source.train_labels))
        if (epoch + 1) % 10 == 0 and epoch + 1 < config.epochs:  # logging only, as in the official code
            entry["test"] = self._test_log()
        state["history"].append(entry)
        state["epoch"] = epoch

    def results(self, state: dict, train_seconds: float) -> dict:
        """The run's results: the final model tested without adapters, with the run's history."""
        pred, labels, confidence = predict_test(self.backbone, self.source)
        return {
            "metrics": evaluate(pred, labels, self.source.n_classes, self.config.paradigm, self.seen, confidence),
            "setup": state["setup"],
            "history": state["history"],
            "refreshes": state["refreshes"],
            "train_seconds": train_seconds,
            "budget": training_budget(state["history"]),
        }

    def _test_log(self) -> dict:
        pred, labels, _ = predict_test(self.backbone, self.source)
        return {k: v for k, v in evaluate(pred, labels, self.source.n_classes, self.config.paradigm,
                                          self.seen).items() if not isinstance(v, list)}

    # -- checkpoints ---------------------------------------------------------------------------
    _OPTIMISERS = ("prompt_opt", "adapter_opt", "prompt_sched", "adapter_sched")
    _STATE = ("epoch", "dpl", "setup", "sigma", "history", "refreshes", "elapsed")

    def restore(self) -> dict:
        """The run's state: from the last checkpoint of a killed attempt, or freshly set up."""
        saved = load_checkpoint(self.run_dir / "checkpoint.pt", ("backbone", "adapters", *self._OPTIMISERS, *self._STATE))
        if saved is None:
            dpl, setup = self.initial_dpl()
            return {"epoch": -1, "dpl": dpl, "setup": setup, "sigma": np.zeros(self.source.n_classes, dtype=np.int64),
                    "history": [], "refreshes": [], "elapsed": 0.0}
        load_trainable_state(self.backbone, saved["backbone"])
        self.adapters.load_state_dict(saved["adapters"])
        for name in self._OPTIMISERS:
            getattr(self, name).load_state_dict(saved[name])
        log.info("resuming %s from epoch %d", self.run_dir, saved["epoch"] + 1)
        return {key: saved[key] for key in self._STATE} | {"sigma": np.asarray(saved["sigma"], dtype=np.int64)}

    def save(self, state: dict, elapsed: float) -> None:
        """Checkpoint ``state`` with the trainable parameters, optimisers and schedulers."""
        save_checkpoint(self.run_dir / "checkpoint.pt", state | {
            "elapsed": elapsed, "backbone": trainable_state(self.backbone), "adapters": self.adapters.state_dict(),
            **{name: getattr(self, name).state_dict() for name in self._OPTIMISERS}})


def train_cap(config: RunConfig, source, backbone, run_dir: Path, stop_after: int | None = None) -> dict:
    """One CAP run (the method registry's entry point)."""
    device = next(iter(backbone.prompt_parameters())).device
    return CapTrainer(config, source, backbone, run_dir, device).run(stop_after)
