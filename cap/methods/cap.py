"""CAP: concept alignment, confusion-aware calibrated margin, independent adapters, self-training.

Follows the official training loop (spec §2.7): initial D_PL from zero-shot leaderboards with
concept-aligned replacements; every epoch a margin from D_PL prototypes and last epoch's confident
predictions; each step one text pass shared by the D_PL, labelled and unlabelled streams; D_PL
refreshed every ``refresh_every`` epochs with a growing k; final model evaluated without adapters.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cap.concepts import align_concepts, choose_descriptions, cluster_centroids, find_mismatch
from cap.config import RunConfig, prompt_lr
from cap.losses import margin_cross_entropy, masked_margin_cross_entropy
from cap.margin import class_prototypes, class_similarity, confusion_margin
from cap.methods.common import board_accuracy, flatten, initial_pseudolabels, zero_shot_probs
from cap.models.adapters import Adapters
from cap.pseudolabels import confident_leaderboard, refresh_dpl, refresh_k
from cap.sources import official_mismatched
from cap.training import (RunInterrupted, batch_order, epoch_generator, evaluate, load_checkpoint,
                          load_trainable_state, predict_test, save_checkpoint, sgd, trainable_state)

log = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 60.0  # a killed run loses at most about a minute; short runs skip the disk writes


def concept_alignment(config: RunConfig, source, probs: np.ndarray, board: dict) -> dict:
    """Detect mismatched pseudolabel classes and replace their leaderboards (spec §2.2–2.3)."""
    classes = source.split.unseen
    unlabelled = np.asarray(source.split.unlabelled)
    if config.mismatch_source == "detect":
        pred = np.asarray(classes)[probs[unlabelled][:, classes].argmax(1)]
        local = {c: i for i, c in enumerate(classes)}
        found = find_mismatch(source.zero_shot_image[unlabelled], source.zero_shot_text[classes],
                              np.array([local[c] for c in pred]), logit_scale=source.logit_scale, seed=config.cluster_seed)
        mismatched = [classes[i] for i in found.mismatched]
    else:
        mismatched = [c for c in official_mismatched(config) if c in set(classes)]
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
    board = dict(board) | aligned
    return {"board": board, "mismatched": sorted(mismatched), "described": sorted(chosen),
            "description_index": {int(c): int(i) for c, i in chosen.items()}}


class CapTrainer:
    """One CAP run on any backend; ``run()`` returns the results dict of the record."""

    def __init__(self, config: RunConfig, source, backbone, run_dir: Path, device: torch.device):
        self.config, self.source, self.backbone, self.device = config, source, backbone, device
        self.run_dir = Path(run_dir)
        split = source.split
        self.classes = list(split.unseen)  # classes that receive pseudolabels (TRZSL: unseen)
        self.seen = list(split.seen)
        self.labelled = np.asarray(split.labelled, dtype=np.int64)
        self.unlabelled = np.asarray(split.unlabelled, dtype=np.int64)
        self.unlabelled_per_class = len(self.unlabelled) // len(self.classes)
        self.train_labels_t = torch.as_tensor(source.train_labels)
        torch.manual_seed(config.seed)
        self.adapters = Adapters(backbone.feature_dim, independent=config.independent_adapters).to(device)
        total = config.epochs * config.iters_per_epoch
        warmup = config.warmup_epochs * config.iters_per_epoch
        self.prompt_opt, self.prompt_sched = sgd(backbone.prompt_parameters(), prompt_lr(config, config.lr), config.momentum,
                                                 config.weight_decay, total, warmup)
        self.adapter_opt, self.adapter_sched = sgd(self.adapters.parameters(), config.lr, config.momentum,
                                                   config.weight_decay, total, warmup)

    # -- setup ---------------------------------------------------------------------------------
    def initial_board(self) -> tuple[dict, dict]:
        probs = zero_shot_probs(self.source, self.config)
        board = initial_pseudolabels(probs, self.unlabelled, self.classes, self.config.k)
        info = {"zero_shot_board": board_accuracy(board, self.source.train_labels)}
        if self.config.concept_alignment:
            aligned = concept_alignment(self.config, self.source, probs, board)
            board = aligned.pop("board")
            info["concept_alignment"] = aligned | {"board": board_accuracy(board, self.source.train_labels)}
        return board, info

    # -- margin --------------------------------------------------------------------------------
    @torch.no_grad()
    def margin(self, board: dict, sigma: np.ndarray) -> torch.Tensor:
        text = self.backbone.encode_text()
        index, label = flatten(board)
        if self.config.paradigm == "trzsl":  # seen classes: up to k labelled images, for prototypes only
            extra = [(i, c) for c in self.seen for i in self.labelled[self.source.train_labels[self.labelled] == c][: self.config.k]]
            if extra:
                index = np.concatenate([index, [i for i, _ in extra]])
                label = np.concatenate([label, [c for _, c in extra]])
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

    # -- training ------------------------------------------------------------------------------
    def train_epoch(self, epoch: int, board: dict, margin: torch.Tensor | None) -> dict:
        config, s = self.config, self.backbone.logit_scale
        n = config.iters_per_epoch * config.batch_size
        gen = epoch_generator(config.seed, epoch)
        dpl_index, dpl_label = flatten(board)
        dpl_label_t = torch.as_tensor(dpl_label)
        # D_PL is sampled by position, so an image in two classes keeps both labels.
        dpl_positions = batch_order(np.arange(len(dpl_index)), n, config.seed, epoch, 0)
        streams = {"dpl": self.source.batches(dpl_index[dpl_positions], config.batch_size, ("weak",), gen),
                   "unlabelled": self.source.batches(batch_order(self.unlabelled, n, config.seed, epoch, 1),
                                                     config.batch_size, ("weak", "strong"), gen)}
        if len(self.labelled):
            streams["labelled"] = self.source.batches(batch_order(self.labelled, n, config.seed, epoch, 2),
                                                      config.batch_size, ("weak",), gen)
        # Per-step results stay on the device; one transfer at the end of the epoch (no sync per step).
        steps = {"pred": [], "conf": [], "mask": [], "index": [], "loss": []}
        for it in range(config.iters_per_epoch):
            m = next(streams["dpl"])
            u = next(streams["unlabelled"])
            y_m = dpl_label_t[dpl_positions[it * config.batch_size:(it + 1) * config.batch_size]].to(self.device)
            l = next(streams["labelled"]) if "labelled" in streams else None

            text = self.adapters.text(self.backbone.encode_text())  # one text pass for every stream
            with torch.no_grad():
                weak = self.adapters.main(self.backbone.encode_image(self._to(u["weak"])))
                conf, pseudo = F.softmax(s * weak @ text.detach().T, dim=1).max(1)
                mask = conf > config.tau
            parts = [self._to(m["weak"])] + ([self._to(l["weak"])] if l is not None else []) + [self._to(u["strong"])]
            features = self.backbone.encode_image(torch.cat(parts))  # one image pass for the trained streams
            b = config.batch_size
            loss = margin_cross_entropy(s * self.adapters.main(features[:b]) @ text.T, y_m, margin)
            if l is not None:
                y_l = self.train_labels_t[l["index"]].to(self.device)
                loss = loss + margin_cross_entropy(s * self.adapters.main(features[b:2 * b]) @ text.T, y_l, margin)
            strong = self.adapters.pseudo(features[-b:])
            loss = loss + masked_margin_cross_entropy(s * strong @ text.T, pseudo, mask, margin)

            self.prompt_opt.zero_grad(set_to_none=True)
            self.adapter_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.prompt_opt.step()
            self.adapter_opt.step()
            self.prompt_sched.step()
            self.adapter_sched.step()

            for key, value in (("pred", pseudo), ("conf", conf), ("mask", mask), ("index", u["index"]),
                               ("loss", loss.detach())):
                steps[key].append(value)
        mask = torch.cat(steps["mask"]).cpu()
        pred = torch.cat(steps["pred"]).cpu()[mask]
        index = torch.cat(steps["index"])[mask]
        n_masked, n_correct = int(mask.sum()), int((pred == self.train_labels_t[index]).sum())
        return {
            "loss": float(torch.stack(steps["loss"]).double().mean()),
            "sigma": np.bincount(pred.numpy(), minlength=self.source.n_classes),
            "draws": {"pred": pred.numpy(), "conf": torch.cat(steps["conf"]).cpu()[mask].numpy(), "index": index.numpy()},
            "masked_share": n_masked / n,
            "masked_accuracy": 100 * n_correct / n_masked if n_masked else None,
        }

    def run(self, stop_after_epoch: int | None = None) -> dict:
        config = self.config
        checkpoint_path = self.run_dir / "checkpoint.pt"
        state = load_checkpoint(checkpoint_path)
        started = last_saved = time.perf_counter()
        if state is None:
            board, setup = self.initial_board()
            sigma = np.zeros(self.source.n_classes, dtype=np.int64)
            history, refreshes, first_epoch, elapsed = [], [], 0, 0.0
        else:
            load_trainable_state(self.backbone, state["backbone"])
            self.adapters.load_state_dict(state["adapters"])
            for obj, key in ((self.prompt_opt, "prompt_opt"), (self.adapter_opt, "adapter_opt"),
                             (self.prompt_sched, "prompt_sched"), (self.adapter_sched, "adapter_sched")):
                obj.load_state_dict(state[key])
            board, setup, sigma = state["board"], state["setup"], state["sigma"]
            history, refreshes, elapsed = state["history"], state["refreshes"], state["elapsed"]
            first_epoch = state["epoch"] + 1
            log.info("resuming %s from epoch %d", self.run_dir, first_epoch)

        for epoch in range(first_epoch, config.epochs):
            margin = self.margin(board, sigma) if config.margin and epoch > 0 else None
            out = self.train_epoch(epoch, board, margin)
            sigma = out["sigma"]
            entry = {"epoch": epoch, "loss": out["loss"], "sigma": sigma.tolist(),
                     "masked_share": out["masked_share"], "masked_accuracy": out["masked_accuracy"],
                     "margin_mean": float(margin.sum() / max(1, margin.numel() - len(margin))) if margin is not None else 0.0,
                     "margin_max": float(margin.max()) if margin is not None else 0.0}
            if epoch % config.refresh_every == 0:
                draws = out["draws"]
                new = confident_leaderboard(draws["pred"], draws["conf"], draws["index"], self.classes,
                                            current=flatten(board)[0])
                k_e = refresh_k(epoch, config.k, self.unlabelled_per_class, config.epochs, config.max_main_ratio)
                board = refresh_dpl(board, new, k_e)
                refreshes.append({"epoch": epoch, "k": k_e} | board_accuracy(board, self.source.train_labels))
            if (epoch + 1) % 10 == 0 and epoch + 1 < config.epochs:  # logging only, as in the official code
                pred, labels, _ = predict_test(self.backbone, self.source)
                entry["test"] = {k: v for k, v in evaluate(pred, labels, self.source.n_classes, config.paradigm,
                                                             self.seen).items() if not isinstance(v, list)}
            history.append(entry)
            stopping = stop_after_epoch is not None and epoch == stop_after_epoch
            if stopping or time.perf_counter() - last_saved >= CHECKPOINT_SECONDS:
                save_checkpoint(checkpoint_path, {
                    "epoch": epoch, "backbone": trainable_state(self.backbone), "adapters": self.adapters.state_dict(),
                    "prompt_opt": self.prompt_opt.state_dict(), "adapter_opt": self.adapter_opt.state_dict(),
                    "prompt_sched": self.prompt_sched.state_dict(), "adapter_sched": self.adapter_sched.state_dict(),
                    "board": board, "setup": setup, "sigma": sigma, "history": history, "refreshes": refreshes,
                    "elapsed": elapsed + time.perf_counter() - started,
                })
                last_saved = time.perf_counter()
            if stopping:
                raise RunInterrupted(f"stopped after epoch {epoch} as asked")

        pred, labels, confidence = predict_test(self.backbone, self.source)
        final = evaluate(pred, labels, self.source.n_classes, config.paradigm, self.seen, confidence)
        return {
            "metrics": final,
            "setup": setup,
            "history": history,
            "refreshes": refreshes,
            "train_seconds": elapsed + time.perf_counter() - started,
        }
