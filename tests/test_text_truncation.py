"""The prompted text pass runs on the first ``text_length`` positions only (the longest prompt's end
token + 1): CLIP's text transformer is causal, so features and gradients equal the full 77-position
pass up to float summation order. Tiny CLIP (tests/tiny_clip.py), MaPLe at depth 3 and CoOp."""

from __future__ import annotations

import pytest
import torch
from tiny_clip import TINY_B, tiny_config

from cap.models.openclip_backbone import OpenClipBackbone

# Every word is one BPE token, so the end-token positions can be counted by hand.
CLASSES = ["forest", "annual crop land", "residential buildings or homes or apartments"]
# start token + context tokens + fixed words + class words + "." ; the end token follows.
# MaPLe "X X of a {name}.": 1 + 2 + 2 + 6 + 1 = 12 -> end token at 12, text_length 13.
# CoOp  "X x16 {name}.":    1 + 16 + 6 + 1    = 24 -> end token at 24, text_length 25.
EXPECTED = {"maple": ([7, 9, 12], 13), "coop": ([19, 21, 24], 25)}


@pytest.fixture(scope="module", params=["maple", "coop"])
def prompted(request, weights):
    torch.manual_seed(0)
    backbone = OpenClipBackbone(tiny_config(weights=str(weights[TINY_B]), prompt=request.param), CLASSES)
    with torch.no_grad():  # away from the initialisation, so every deep prompt matters
        for p in backbone.prompt_parameters():
            p.add_(0.5 * torch.randn_like(p))
    return request.param, backbone


def features(backbone: OpenClipBackbone, full_length: bool) -> torch.Tensor:
    prompts = backbone.prompts
    return backbone._text_features(prompts.text_embeddings(), prompts.deep_text_prompts(), full_length=full_length)


def test_text_length_is_the_longest_prompt_end_plus_one(prompted):
    kind, backbone = prompted
    ends, length = EXPECTED[kind]
    assert backbone.prompts.eot.tolist() == ends
    assert backbone.prompts.text_length == length == backbone.prompts.layout.text_length


def test_truncated_pass_runs_text_length_positions(prompted):
    _, backbone = prompted
    seen = []
    hook = backbone.clip.transformer.resblocks[0].register_forward_pre_hook(lambda _m, a: seen.append(a[0].shape[1]))
    try:
        features(backbone, full_length=False)
        features(backbone, full_length=True)
    finally:
        hook.remove()
    assert seen == [backbone.prompts.text_length, 77]


def test_truncated_features_equal_full_length(prompted):
    _, backbone = prompted
    with torch.no_grad():
        short, full = features(backbone, False), features(backbone, True)
    assert short.abs().max() > 0.1  # not trivially small
    torch.testing.assert_close(short, full, atol=1e-5, rtol=0)


def test_truncated_gradients_equal_full_length(prompted):
    """The gradients of a loss on the features w.r.t. every prompt parameter agree."""
    _, backbone = prompted
    target = torch.randn(len(CLASSES), backbone.feature_dim, generator=torch.Generator().manual_seed(1))
    grads = []
    for full_length in (False, True):
        loss = (features(backbone, full_length) * target).sum()
        grads.append(torch.autograd.grad(loss, backbone.prompt_parameters(), allow_unused=True))
    used = [(a, b) for a, b in zip(*grads) if a is not None]
    assert used and all(b is not None for a, b in zip(*grads) if a is not None)
    for short, full in used:
        torch.testing.assert_close(short, full, atol=1e-5, rtol=1e-5)


def test_encode_text_is_the_truncated_pass(prompted):
    _, backbone = prompted
    with torch.no_grad():
        expected = torch.nn.functional.normalize(features(backbone, True), dim=-1)
        torch.testing.assert_close(backbone.encode_text(), expected, atol=1e-5, rtol=0)
