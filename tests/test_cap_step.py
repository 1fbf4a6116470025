"""One CAP step on a tiny fixed batch: the loss against hand-computed values, and which adapter
sees which stream."""

import copy
import math

import numpy as np
import pytest
import torch

from cap.config import make_config, resolve
from cap.data.splits import make_split
from cap.core.losses import margin_cross_entropy, masked_margin_cross_entropy
from cap.methods.cap import CapTrainer, StepBatch
from cap.methods.engine import predict_test
from cap.models.feature_backbone import FeatureBackbone
from cap.sources import make_source
from cap.sources.source import Source

# Two classes in two dimensions, text features on the axes, logit scale 1: every logit is a cosine.
TEXT = np.eye(2, dtype=np.float32)


class TinySource(Source):
    """Two classes, two training and two test images; batches are the feature rows themselves."""

    def test_batches(self, batch_size):
        yield torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])


def tiny_trainer(tmp_path, paradigm="ul", tau=0.5, independent=True):
    config = resolve(make_config(dataset="eurosat", paradigm=paradigm, tau=tau, independent_adapters=independent))
    labels = np.array([0, 1])
    split = make_split("ssl" if paradigm == "ssl" else "ul", labels, 2, n_label=1)
    source = TinySource(classnames=["a", "b"], train_labels=labels, test_labels=labels, split=split,
                        zero_shot_image=TEXT.copy(), zero_shot_text=TEXT.copy(), logit_scale=1.0)
    backbone = FeatureBackbone(torch.as_tensor(TEXT), logit_scale=1.0)
    trainer = CapTrainer(config, source, backbone, tmp_path, torch.device("cpu"))
    with torch.no_grad():  # adapters start as the identity (up to normalisation): logits are plain cosines
        for adapter in (trainer.adapters.text, trainer.adapters.main, trainer.adapters.pseudo):
            adapter.mlp[2].weight.zero_()
            adapter.mlp[2].bias.zero_()
    return trainer


def batch(labelled=False):
    return StepBatch(dpl=torch.tensor([[1.0, 0.0]]), dpl_labels=torch.tensor([0]),
                     weak=torch.tensor([[0.0, 1.0]]), strong=torch.tensor([[0.6, 0.8]]),
                     unlabelled_index=torch.tensor([1]),
                     labelled=torch.tensor([[0.8, 0.6]]) if labelled else None,
                     labels=torch.tensor([1]) if labelled else None)


def test_step_loss_by_hand(tmp_path):
    # D_PL: logits (1, 0), label 0 -> log(1 + e^-1). Weak view (0, 1): softmax max e/(1+e) = 0.731 > 0.5,
    # pseudolabel 1. Strong view logits (0.6, 0.8), label 1 -> log(1 + e^-0.2).
    out = tiny_trainer(tmp_path).step(batch(), margin=None)
    assert out.pseudo.tolist() == [1] and out.mask.tolist() == [True]
    assert out.confidence.item() == pytest.approx(math.e / (1 + math.e), abs=1e-6)
    assert out.loss.item() == pytest.approx(math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-0.2)), abs=1e-6)


def test_step_loss_with_margin_and_labels_by_hand(tmp_path):
    # M[0, 1] = 2 on the D_PL term: log(1 + e^(0 + 2 - 1)); labelled (0.8, 0.6), label 1, M[1, 0] = 3:
    # log(1 + e^(0.8 + 3 - 0.6)); strong view, label 1: log(1 + e^(0.6 + 3 - 0.8)).
    margin = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
    out = tiny_trainer(tmp_path, paradigm="ssl").step(batch(labelled=True), margin)
    expected = math.log(1 + math.e) + math.log(1 + math.exp(3.2)) + math.log(1 + math.exp(2.8))
    assert out.loss.item() == pytest.approx(expected, abs=1e-5)


def test_no_confident_draw_means_no_self_training_loss(tmp_path):
    out = tiny_trainer(tmp_path, tau=0.9).step(batch(), margin=None)  # 0.731 < 0.9
    assert out.mask.tolist() == [False]
    assert out.loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


def test_step_moves_prompts_and_adapters(tmp_path):
    trainer = tiny_trainer(tmp_path)
    before = [p.detach().clone() for p in [*trainer.backbone.prompt_parameters(), *trainer.adapters.parameters()]]
    trainer.step(batch(), margin=None)
    trainer.step(batch(), margin=None)  # the first step has learning rate 0 (warm-up starts at 0)
    after = [*trainer.backbone.prompt_parameters(), *trainer.adapters.parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(before, after) if b.numel() > 1)


def seen_by(trainer, run):
    """Rows each adapter was given while ``run()`` ran (hooks on their inputs)."""
    seen = {"text": [], "main": [], "pseudo": []}
    hooks = [getattr(trainer.adapters, name).register_forward_hook(
        lambda module, args, out, name=name: seen[name].append(args[0].detach().clone()))
        for name in ("text", "main", "pseudo")]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return {name: torch.cat(rows).tolist() if rows else [] for name, rows in seen.items()}


def test_which_adapter_sees_which_stream(tmp_path):
    trainer = tiny_trainer(tmp_path, paradigm="ssl")
    seen = seen_by(trainer, lambda: trainer.step(batch(labelled=True), margin=None))
    # main adapter: the weak view (pseudolabels), D_PL and the labelled batch; pseudo adapter: strong view only
    assert np.allclose(sorted(seen["main"]), [[0.0, 1.0], [0.8, 0.6], [1.0, 0.0]], atol=1e-6)
    assert seen["pseudo"] == [pytest.approx([0.6, 0.8], abs=1e-6)]
    assert seen["text"] == [pytest.approx([1.0, 0.0]), pytest.approx([0.0, 1.0])]  # one text pass for every stream


def test_shared_adapter_ablation_routes_both_roles_through_one(tmp_path):
    trainer = tiny_trainer(tmp_path, independent=False)
    seen = seen_by(trainer, lambda: trainer.step(batch(), margin=None))
    assert trainer.adapters.pseudo is trainer.adapters.main
    assert len(seen["main"]) == 3  # weak view, D_PL and strong view all through the one adapter


def test_no_adapter_at_evaluation(tmp_path):
    trainer = tiny_trainer(tmp_path)
    seen = seen_by(trainer, lambda: predict_test(trainer.backbone, trainer.source))
    assert seen == {"text": [], "main": [], "pseudo": []}


def stream_by_stream_loss(trainer, b: StepBatch, margin):
    """The step's loss written as the method page's table reads, one stream at a time: each
    stream's own image pass and adapter pass, logits s · (features @ textᵀ). The step shares one
    image pass, one main-adapter pass and the scaled text between streams; it must equal this."""
    s, text = trainer.backbone.logit_scale, trainer.adapters.text(trainer.backbone.encode_text())
    main = lambda x: trainer.adapters.main(trainer.backbone.encode_image(x))  # noqa: E731
    with torch.no_grad():
        confidence, pseudo = torch.softmax(s * main(b.weak) @ text.T, dim=1).max(1)
    loss = margin_cross_entropy(s * main(b.dpl) @ text.T, b.dpl_labels, margin)
    if b.labelled is not None:
        loss = loss + margin_cross_entropy(s * main(b.labelled) @ text.T, b.labels, margin)
    strong = trainer.adapters.pseudo(trainer.backbone.encode_image(b.strong))
    return loss + masked_margin_cross_entropy(s * strong @ text.T, pseudo, confidence > trainer.config.tau, margin)


@pytest.mark.parametrize("paradigm", ["ul", "ssl"])
def test_shared_passes_equal_the_stream_by_stream_step(tmp_path, paradigm):
    """Values and gradients of a step on the simulator, against the stream-by-stream reference."""
    config = resolve(make_config(dataset="eurosat", paradigm=paradigm, backend="sim", method="cap", iters_per_epoch=1,
                                 sim_train_per_class=16, sim_test_per_class=4, tau=0.3))
    source = make_source(config)
    trainer = CapTrainer(config, source, source.make_backbone(config, "maple", torch.device("cpu")), tmp_path,
                         torch.device("cpu"))
    board, _ = trainer.initial_dpl()
    with torch.no_grad():  # leave zero-shot, so no gradient vanishes by symmetry
        for p in trainer.backbone.prompt_parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(5)))
    margin = trainer.margin(board, np.arange(source.n_classes) + 1.0)
    step = next(trainer.epoch_batches(1, board))
    reference = copy.deepcopy(trainer)
    ref_loss = stream_by_stream_loss(reference, step, margin)
    ref_loss.backward()
    out = trainer.step(step, margin)
    assert out.loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
    named = lambda t: dict(t.backbone.named_parameters()) | dict(t.adapters.named_parameters())  # noqa: E731
    grads, ref_grads = named(trainer), named(reference)
    assert len(grads) == 2 + 12  # both maps; the three adapters' two layers, weights and biases
    for name, p in grads.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        torch.testing.assert_close(p.grad, ref_grads[name].grad, atol=1e-7, rtol=1e-4, msg=name)
