"""Several seeds of one CAP configuration on the feature backend, trained as one batched model.

On fixed features a CAP step is about a hundred small operations; launching them is about a fifth
of its time, the rest being arithmetic and the memory traffic of the updates, which grow with the
seeds. :class:`SeedStack` stacks the trainable tensors of S
runs that differ only in their seed (the feature maps and the three adapters) along a leading axis
and runs each step once for all of them with batched products (``baddbmm``, ``bmm``): one launch
per operation instead of S (three seeds step 1.2 to 1.4 times faster than one after the other,
``benchmarks/README.md``). Everything else (batches, margins, refreshes, tests, checkpoints, the
records) stays with each seed's own :class:`~cap.methods.cap.CapTrainer`.

Each seed's arithmetic does not depend on the stack: a batched product computes every item as it
would in a batch of one, the losses are each seed's own (summed, so each seed's gradient is its own
loss's), and SGD updates every element independently. A run alone on the feature backend is a
stack of one, so a seed gets exactly (bit for bit) the results of its run alone;
``tests/test_cap_stack.py`` checks it on whole runs, and that the batched step equals
:meth:`CapTrainer.step` (the open_clip backend's) up to float rounding.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cap.config import RunConfig
from cap.core.losses import margin_cross_entropy, masked_margin_cross_entropy
from cap.errors import ParameterError
from cap.methods.cap import CHECKPOINT_SECONDS, CapTrainer, StepBatch, StepResult
from cap.methods.checkpoints import RunInterrupted
from cap.models.feature_backbone import FeatureBackbone


def stackable(trainers: list[CapTrainer]) -> str | None:
    """Why these trainers cannot train as one stack (None if they can)."""
    if any(t.config.replace(seed=0) != trainers[0].config.replace(seed=0) for t in trainers):
        return "their configurations differ in more than the seed"
    if len({t.config.seed for t in trainers}) != len(trainers):
        return "two of them have the same seed"
    if not all(isinstance(t.backbone, FeatureBackbone) for t in trainers):
        return "only the feature backend stacks (open_clip runs train one at a time)"
    if not all(torch.equal(t.backbone.text, trainers[0].backbone.text) for t in trainers):
        return "their class-text features differ"
    return None


class _StackedAdapter:
    """S adapters x -> normalize(x + scale · W2 relu(W1 x + b1) + b2) as two ``baddbmm``."""

    def __init__(self, params: dict[str, torch.Tensor], prefix: str, scale: float):
        self.w1, self.b1 = params[f"{prefix}.mlp.0.weight"], params[f"{prefix}.mlp.0.bias"]
        self.w2, self.b2 = params[f"{prefix}.mlp.2.weight"], params[f"{prefix}.mlp.2.bias"]
        self.scale = scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # (S, N, d)
        hidden = torch.relu(torch.baddbmm(self.b1.unsqueeze(1), x, self.w1.mT))
        return F.normalize(x + self.scale * torch.baddbmm(self.b2.unsqueeze(1), hidden, self.w2.mT), dim=-1)


class SeedStack:
    """The trainers of S seeds of one CAP configuration, stepped as one batched model."""

    def __init__(self, trainers: list[CapTrainer]):
        reason = stackable(trainers)
        if reason:
            raise ParameterError(f"these CAP runs cannot train as one stack: {reason}")
        self.trainers = trainers
        self.config, self.logit_scale = trainers[0].config, trainers[0].backbone.logit_scale
        self.text = trainers[0].backbone.text

    def stack_parameters(self) -> None:
        """Stack the seeds' current parameters, momentum and schedules (fresh or restored)."""
        first = self.trainers[0]
        # (stacked tensor, each seed's own parameter) in each seed optimiser's order
        self.prompt_pairs = self._stack([t.backbone.prompt_parameters() for t in self.trainers])
        names = [name for name, _ in first.adapters.named_parameters()]  # a shared adapter is listed once
        self.adapter_pairs = self._stack([[dict(t.adapters.named_parameters())[n] for n in names] for t in self.trainers])
        params = dict(zip(names, (stacked for stacked, _ in self.adapter_pairs)))
        scale = first.adapters.text.scale
        self.text_adapter = _StackedAdapter(params, "text", scale)
        self.main = _StackedAdapter(params, "main", scale)
        self.pseudo = _StackedAdapter(params, "pseudo" if first.adapters.independent else "main", scale)
        self.text_map, self.image_map = (stacked for stacked, _ in self.prompt_pairs)
        self.prompt_opt, self.prompt_sched = self._optimiser("prompt", self.prompt_pairs)
        self.adapter_opt, self.adapter_sched = self._optimiser("adapter", self.adapter_pairs)

    @staticmethod
    def _stack(per_seed: list[list[torch.Tensor]]) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [(torch.stack([p.detach() for p in params]).requires_grad_(), list(params)) for params in zip(*per_seed)]

    def _optimiser(self, kind: str, pairs):
        """The seeds' ``kind`` optimiser and scheduler, rebuilt with the same settings over the
        stacked tensors and carrying on from where the seeds' are (momentum, step count)."""
        first = self.trainers[0]
        own_opt, own_sched = getattr(first, f"{kind}_opt"), getattr(first, f"{kind}_sched")
        lr = first.prompt_lr if kind == "prompt" else first.config.lr
        opt, sched = first.optimiser([stacked for stacked, _ in pairs], lr)
        for stacked, own in pairs:
            buffers = [getattr(t, f"{kind}_opt").state.get(p, {}).get("momentum_buffer") for t, p in zip(self.trainers, own)]
            if all(b is not None for b in buffers):
                opt.state[stacked]["momentum_buffer"] = torch.stack(buffers)
        sched.load_state_dict(own_sched.state_dict())
        for stacked_group, seed_group in zip(opt.param_groups, own_opt.param_groups):
            stacked_group["lr"] = seed_group["lr"]
        return opt, sched

    # -- the batched model (FeatureBackbone.encode_text / encode_image, Adapter.forward) -----------
    def encode_text(self) -> torch.Tensor:
        text = self.text.expand(len(self.trainers), *self.text.shape)
        return F.normalize(torch.baddbmm(text, text, self.text_map), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(torch.baddbmm(images, images, self.image_map), dim=-1)

    def step(self, batches: list[StepBatch], margins: list[torch.Tensor | None]) -> list[StepResult]:
        """:meth:`CapTrainer.step` for every seed at once (the same streams, losses and updates)."""
        s, b = self.logit_scale, len(batches[0].dpl)

        def stacked(name: str) -> torch.Tensor:  # (S, B, d); a stack of one is a view, not a copy
            parts = [getattr(batch, name) for batch in batches]
            return parts[0].unsqueeze(0) if len(parts) == 1 else torch.stack(parts)

        text = self.text_adapter(self.encode_text())
        with torch.no_grad():
            weak = self.main(self.encode_image(stacked("weak")))
            confidence, pseudo = F.softmax(s * weak @ text.detach().mT, dim=-1).max(-1)
            mask = confidence > self.config.tau
        labelled = batches[0].labelled is not None
        parts = [stacked("dpl")] + ([stacked("labelled")] if labelled else []) + [stacked("strong")]
        features = self.encode_image(torch.cat(parts, dim=1))
        dpl = (s * self.main(features[:, :b]) @ text.mT).unbind(0)
        if labelled:
            n = len(batches[0].labelled)
            own = (s * self.main(features[:, b:b + n]) @ text.mT).unbind(0)
        strong = (s * self.pseudo(features[:, -len(batches[0].strong):]) @ text.mT).unbind(0)
        losses = []
        for i, (batch, margin) in enumerate(zip(batches, margins)):  # each seed's own loss, as alone
            loss = margin_cross_entropy(dpl[i], batch.dpl_labels, margin)
            if labelled:
                loss = loss + margin_cross_entropy(own[i], batch.labels, margin)
            losses.append(loss + masked_margin_cross_entropy(strong[i], pseudo[i], mask[i], margin))

        self.prompt_opt.zero_grad(set_to_none=True)
        self.adapter_opt.zero_grad(set_to_none=True)
        torch.stack(losses).sum().backward()  # ∂(sum)/∂(seed's loss) = 1: each seed gets its own gradient
        self.prompt_opt.step()
        self.adapter_opt.step()
        self.prompt_sched.step()
        self.adapter_sched.step()
        return [StepResult(loss.detach(), pseudo[i], confidence[i], mask[i]) for i, loss in enumerate(losses)]

    def train_epoch(self, epoch: int, states: list[dict], margins: list[torch.Tensor | None]) -> list[dict]:
        """:meth:`CapTrainer.train_epoch` for every seed: each draws its own batches."""
        logs = [CapTrainer.new_epoch_log() for _ in self.trainers]
        streams = [t.epoch_batches(epoch, state["dpl"]) for t, state in zip(self.trainers, states)]
        for batches in zip(*streams):
            for log, batch, out in zip(logs, batches, self.step(list(batches), margins)):
                CapTrainer.log_step(log, batch, out)
        return [t.summarise_epoch(epoch, log) for t, log in zip(self.trainers, logs)]

    # -- the seeds' own models and optimisers ----------------------------------------------------
    @torch.no_grad()
    def write_back(self, optimisers: bool = False) -> None:
        """Copy the stacked parameters (and with ``optimisers``, the momentum buffers, learning rates
        and schedules) into each seed's own model and optimisers, which margins, tests and
        checkpoints read."""
        for pairs, opt, sched, attr in ((self.prompt_pairs, self.prompt_opt, self.prompt_sched, "prompt"),
                                        (self.adapter_pairs, self.adapter_opt, self.adapter_sched, "adapter")):
            for i, trainer in enumerate(self.trainers):
                own_opt, own_sched = getattr(trainer, f"{attr}_opt"), getattr(trainer, f"{attr}_sched")
                for stacked, own in pairs:
                    own[i].copy_(stacked[i])
                    if optimisers and "momentum_buffer" in opt.state.get(stacked, {}):
                        own_opt.state[own[i]]["momentum_buffer"] = opt.state[stacked]["momentum_buffer"][i].clone()
                if optimisers:
                    own_sched.load_state_dict(sched.state_dict())
                    for own_group, group in zip(own_opt.param_groups, opt.param_groups):
                        own_group["lr"] = group["lr"]

    def run(self, stop_after_epoch: int | None = None) -> list[dict]:
        """:meth:`CapTrainer.run` for every seed. Each seed checkpoints as its own run (a killed
        stack resumes as a stack or seed by seed) and is timed by its share of the stack's time."""
        states = [t.restore() for t in self.trainers]
        if len({state["epoch"] for state in states}) != 1:
            raise ParameterError("the seeds of a stack must resume from the same epoch: run them one at a time")
        self.stack_parameters()
        share = 1 / len(self.trainers)
        started = last_saved = time.perf_counter()
        elapsed = lambda state: state["elapsed"] + share * (time.perf_counter() - started)  # noqa: E731
        for epoch in range(states[0]["epoch"] + 1, self.config.epochs):
            margins = [t.epoch_margin(state, epoch) for t, state in zip(self.trainers, states)]
            outs = self.train_epoch(epoch, states, margins)
            self.write_back()
            for trainer, state, out, margin in zip(self.trainers, states, outs, margins):
                trainer.end_epoch(state, epoch, out, margin)
            stopping = stop_after_epoch is not None and epoch == stop_after_epoch
            if stopping or time.perf_counter() - last_saved >= CHECKPOINT_SECONDS:
                self.write_back(optimisers=True)
                for trainer, state in zip(self.trainers, states):
                    trainer.save(state, elapsed(state))
                last_saved = time.perf_counter()
            if stopping:
                raise RunInterrupted(f"stopped after epoch {epoch} as asked")
        return [t.results(state, elapsed(state)) for t, state in zip(self.trainers, states)]


def train_cap(config: RunConfig, source, backbone, run_dir: Path, stop_after_epoch: int | None = None) -> dict:
    """One CAP run (the method registry's entry point): a stack of one on the feature backend, so
    that its results are those it gets in a stack of seeds; :meth:`CapTrainer.run` otherwise."""
    device = next(iter(backbone.prompt_parameters())).device
    trainer = CapTrainer(config, source, backbone, run_dir, device)
    if isinstance(backbone, FeatureBackbone):
        return SeedStack([trainer]).run(stop_after_epoch)[0]
    return trainer.run(stop_after_epoch)
