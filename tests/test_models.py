"""open_clip backend: config validation, CLIP loading, MaPLe/CoOp prompts, frozen zero-shot path.

Everything runs on the tiny open_clip models of :mod:`tiny_clip` (CPU, random weights)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU
from tiny_clip import (EMBED_DIM, LAYERS, TINY_B, TINY_L, create_tiny, save_tiny_weights,
                       tiny_config)

from cap.errors import CapError, ParameterError, UnknownNameError
from cap.models.clip import WEIGHTS_ENV, WeightsError, load_clip, prompt_strings
from cap.models.model_config import ModelConfig
from cap.models.openclip_backbone import OpenClipBackbone

CLASSES = ["forest", "river", "annual crop land"]


@pytest.fixture(autouse=True)
def no_weights_env(monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)


@pytest.fixture(scope="module")
def model():
    return create_tiny(TINY_B, seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    import open_clip
    return open_clip.get_tokenizer(TINY_B)


@pytest.fixture(scope="module")
def images():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def backbone(model, tokenizer, **overrides) -> OpenClipBackbone:
    return OpenClipBackbone.from_model(model, tokenizer, CLASSES, tiny_config(**overrides))


def perturb(parameters) -> None:
    with torch.no_grad():
        for p in parameters:
            p.add_(torch.randn_like(p))


# ----------------------------------------------------------------------------- config and strings
def test_config_defaults_paper_values_and_names():
    cfg = ModelConfig()
    assert (cfg.backbone, cfg.pretrained, cfg.prompt) == ("ViT-B-32", "openai", "maple")
    assert (cfg.n_ctx, cfg.ctx_init, cfg.prompt_depth, cfg.template_bug) == (2, "a photo of a", 8, True)
    assert ModelConfig(backbone="ViT-B/32").backbone == "ViT-B-32"
    assert ModelConfig(backbone="ViT-L-14").backbone == "ViT-L-14"


@pytest.mark.parametrize("field, value, choice", [
    ("backbone", "ViT-Q-99", "ViT-L-14"), ("prompt", "vpt", "coop"), ("precision", "fp8", "bf16")])
def test_config_unknown_names_list_valid_choices(field, value, choice):
    with pytest.raises(UnknownNameError, match=choice):
        ModelConfig(**{field: value})


@pytest.mark.parametrize("overrides", [
    {"n_ctx": 0}, {"prompt_depth": 13}, {"coop_n_ctx": 1.5}, {"template": "a photo of a"},
    {"template_bug": "yes"}, {"device": "gpu"}, {"weights": ""}, {"pretrained": ""}])
def test_config_bad_values_are_parameter_errors(overrides):
    with pytest.raises(ParameterError):
        ModelConfig(**overrides)


def test_config_depth_limited_by_tiny_backbone_layers():
    with pytest.raises(ParameterError, match=f"<= {LAYERS}"):
        tiny_config(prompt_depth=LAYERS + 1)
    assert tiny_config(prompt="coop", prompt_depth=8).prompt == "coop"  # depth only matters for MaPLe


def test_prompt_strings_with_and_without_the_template_bug():
    assert prompt_strings(["forest"], "a photo of a {}", True) == ["a photo of a {}forest"]
    assert prompt_strings(["forest"], "a photo of a {}", False) == ["a photo of a forest"]


# ----------------------------------------------------------------------------- prompt layout and shapes
@pytest.mark.parametrize("prompt", ["maple", "coop"])
def test_shapes_norms_and_dtypes(model, tokenizer, images, prompt):
    bb = backbone(model, tokenizer, prompt=prompt)
    d = EMBED_DIM[TINY_B]
    assert bb.feature_dim == d and bb.logit_scale == pytest.approx(float(model.logit_scale.exp()))
    outputs = {"text": bb.encode_text(), "image": bb.encode_image(images), "zs_text": bb.zero_shot_text(),
               "zs_image": bb.zero_shot_image(images), "raw": bb.encode_raw_text(["a", "b c", "d"])}
    for name, x in outputs.items():
        assert x.shape == ((4, d) if "image" in name else (3, d)) and x.dtype == torch.float32, name
        torch.testing.assert_close(x.norm(dim=-1), torch.ones(len(x)))


def test_maple_layout_end_token_shift_and_init(model, tokenizer):
    bb = backbone(model, tokenizer)
    assert bb.prompt_texts == ("X X of a forest.", "X X of a river.", "X X of a annual crop land.")
    bare = tokenizer([f"of a {name}." for name in CLASSES]).argmax(-1)
    assert torch.equal(bb.prompts.eot, bare + 2)  # the end token moves by n_ctx
    official = tokenizer([f"a photo of a {name}." for name in CLASSES])
    tokens = bb.prompts.layout.tokens
    assert torch.equal(tokens[:, 3:], official[:, 3:]) and torch.equal(tokens[:, 0], official[:, 0])
    assert torch.equal(bb.prompts.ctx.detach(), model.token_embedding(official[0, 1:3]))  # "a photo"


def test_coop_layout_sixteen_context_tokens(model, tokenizer):
    bb = backbone(model, tokenizer, prompt="coop")
    assert bb.prompt_texts[0] == " ".join(["X"] * 16) + " forest."
    assert torch.equal(bb.prompts.eot, tokenizer([f"{name}." for name in CLASSES]).argmax(-1) + 16)
    assert bb.prompts.ctx.std().item() == pytest.approx(0.02, rel=0.2)  # CoOp's generic init
    init = backbone(model, tokenizer, prompt="coop", coop_n_ctx=2, coop_ctx_init="a photo of a")
    assert init.prompt_texts[0] == "X X of a forest."


@pytest.mark.parametrize("overrides", [{"n_ctx": 5}, {"ctx_init": "photographically speaking"}])
def test_bad_context_initialisation(model, tokenizer, overrides):
    with pytest.raises(ParameterError, match="ctx_init"):
        backbone(model, tokenizer, **overrides)


def test_shallow_maple_at_init_is_clip_on_the_official_prompt(model, tokenizer):
    """Depth 1, ctx = embeddings of "a photo": our text forward must equal open_clip's on "a photo of a {c}."."""
    bb = backbone(model, tokenizer, prompt_depth=1)
    expected = model.encode_text(tokenizer([f"a photo of a {name}." for name in CLASSES]), normalize=True)
    torch.testing.assert_close(bb.encode_text(), expected, atol=1e-5, rtol=0)


def test_our_vision_forward_without_prompts_is_open_clips(model, tokenizer, images):
    bb = backbone(model, tokenizer)
    ours = bb._image_features(images, torch.zeros(0, model.visual.conv1.out_channels), [])
    torch.testing.assert_close(ours, model.encode_image(images), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- depth semantics
def _block_inputs(blocks, run) -> list[torch.Tensor]:
    seen = []
    hooks = [b.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach())) for b in blocks]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_prompts_enter_exactly_the_layers_below_depth(model, tokenizer, images, depth):
    """Layer 0 gets the shallow prompts; layer k in 1..depth-1 gets deep prompt k in place of the
    context tokens; every other layer input is exactly the previous block's output."""
    bb = backbone(model, tokenizer, prompt_depth=depth)
    p, n = bb.prompts, 2
    assert len(p.deep_text) == len(p.deep_proj) == depth - 1
    text_blocks, vision_blocks = model.transformer.resblocks, model.visual.transformer.resblocks
    text_in = _block_inputs(text_blocks, bb.encode_text)
    vision_in = _block_inputs(vision_blocks, lambda: bb.encode_image(images))
    with torch.no_grad():
        shallow_text = p.ctx + model.positional_embedding[1:1 + n]
        torch.testing.assert_close(text_in[0][:, 1:1 + n], shallow_text.expand(3, -1, -1))
        torch.testing.assert_close(vision_in[0][:, -n:], model.visual.ln_pre(p.proj(p.ctx)).expand(4, -1, -1))
        for k in range(1, LAYERS):
            positions = text_in[k - 1].shape[1]  # the prompts' text length: the causal mask's first rows
            text = text_blocks[k - 1](text_in[k - 1], attn_mask=model.attn_mask[:positions, :positions])
            vision = vision_blocks[k - 1](vision_in[k - 1])
            if k < depth:
                text[:, 1:1 + n] = p.deep_text[k - 1]
                vision[:, -n:] = p.deep_proj[k - 1](p.deep_text[k - 1])
            assert vision_in[k].shape[1] == 1 + (32 // 8) ** 2 + n
            torch.testing.assert_close(text_in[k], text)
            torch.testing.assert_close(vision_in[k], vision)


@pytest.mark.parametrize("layer", [1, 2])
def test_each_deep_prompt_below_depth_changes_both_encoders(model, tokenizer, images, layer):
    bb = backbone(model, tokenizer, prompt_depth=3)
    text, image = bb.encode_text().detach(), bb.encode_image(images).detach()
    perturb([bb.prompts.deep_text[layer - 1]])
    assert not torch.allclose(bb.encode_text(), text) and not torch.allclose(bb.encode_image(images), image)


# ----------------------------------------------------------------------------- training touches prompts only
@pytest.mark.parametrize("prompt", ["maple", "coop"])
def test_one_sgd_step_changes_only_prompt_parameters(model, tokenizer, images, prompt):
    bb = backbone(model, tokenizer, prompt=prompt).train()
    assert not model.training
    trainable = [p for p in bb.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in bb.prompt_parameters()}
    clip_before = {k: v.clone() for k, v in model.state_dict().items()}
    prompts_before = [p.detach().clone() for p in bb.prompt_parameters()]
    optimizer = torch.optim.SGD(trainable, lr=0.01, momentum=0.9, weight_decay=0.1)
    logits = bb.logit_scale * bb.encode_image(images) @ bb.encode_text().T
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    optimizer.step()
    for key, value in model.state_dict().items():
        assert torch.equal(value, clip_before[key]), key
    assert all(p.grad is None for p in model.parameters())
    for before, after in zip(prompts_before, bb.prompt_parameters()):
        assert not torch.equal(before, after)


@pytest.mark.parametrize("prompt", ["maple", "coop"])
def test_zero_shot_ignores_prompts(model, tokenizer, images, prompt):
    bb = backbone(model, tokenizer, prompt=prompt)
    text, image = bb.zero_shot_text(), bb.zero_shot_image(images)
    expected = model.encode_text(tokenizer(prompt_strings(CLASSES, "a photo of a {}", True)), normalize=True)
    torch.testing.assert_close(text, expected)
    torch.testing.assert_close(bb.encode_raw_text(["a photo of a {}forest"]), text[:1])
    perturb(bb.prompt_parameters())
    assert torch.equal(bb.zero_shot_text(), text) and torch.equal(bb.zero_shot_image(images), image)
    assert not torch.allclose(bb.encode_text(), text)


def test_template_bug_off_encodes_formatted_prompts(model, tokenizer):
    bb = backbone(model, tokenizer, template_bug=False)
    assert bb.zero_shot_prompts[0] == "a photo of a forest"
    formatted = prompt_strings(CLASSES, "a photo of a {}", False)
    torch.testing.assert_close(bb.zero_shot_text(), bb.encode_raw_text(formatted))


def test_coop_images_use_the_frozen_encoder(model, tokenizer, images):
    bb = backbone(model, tokenizer, prompt="coop")
    assert torch.equal(bb.encode_image(images), bb.zero_shot_image(images))
    assert bb.encode_text().requires_grad


@pytest.mark.parametrize("prompt", ["maple", "coop"])
def test_reset_prompts_restores_the_initial_prompts(model, tokenizer, prompt):
    torch.manual_seed(7)
    bb = backbone(model, tokenizer, prompt=prompt)
    initial = [p.detach().clone() for p in bb.prompt_parameters()]
    perturb(bb.prompt_parameters())
    torch.manual_seed(7)
    bb.reset_prompts()
    for before, after in zip(initial, bb.prompt_parameters()):
        assert torch.equal(before, after)


# ----------------------------------------------------------------------------- loading, weights, precision
def test_openai_weights_get_quickgelu_other_tags_do_not(weights):
    quick, _, _ = load_clip(tiny_config(weights=str(weights[TINY_B])))
    plain, _, _ = load_clip(tiny_config(weights=str(weights[TINY_B]), pretrained="laion2b_s34b_b79k"))
    towers = lambda m: [*m.transformer.resblocks, *m.visual.transformer.resblocks]  # noqa: E731
    assert all(isinstance(b.mlp.gelu, QuickGELU) for b in towers(quick))
    assert not any(isinstance(b.mlp.gelu, QuickGELU) for b in towers(plain))
    assert all(not p.requires_grad for p in quick.parameters()) and not quick.training


def test_weights_file_and_env_var_reload_identical_features(weights, images, tokenizer, tmp_path, monkeypatch):
    for seed, path in ((0, weights[TINY_B]), (5, save_tiny_weights(tmp_path / "seed5.pt", TINY_B, seed=5))):
        reference = OpenClipBackbone.from_model(create_tiny(TINY_B, seed=seed), tokenizer, CLASSES, tiny_config())
        from_file = OpenClipBackbone(tiny_config(weights=path), CLASSES)
        monkeypatch.setenv(WEIGHTS_ENV, str(path))
        from_env = OpenClipBackbone(tiny_config(), CLASSES)
        monkeypatch.delenv(WEIGHTS_ENV)
        for bb in (from_file, from_env):
            assert all(torch.equal(a, b) for a, b in zip(bb.clip.state_dict().values(),
                                                         reference.clip.state_dict().values()))
            assert torch.equal(bb.zero_shot_text(), reference.zero_shot_text())
            assert torch.equal(bb.zero_shot_image(images), reference.zero_shot_image(images))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_openai_torchscript_archive_loads(tmp_path, images, tokenizer):
    """OpenAI's own ViT-B-32.pt is a TorchScript archive with extra non-weight entries."""
    model = create_tiny(TINY_B, seed=3)
    model.register_buffer("input_resolution", torch.tensor(32))
    mask = model.attn_mask  # OpenAI's CLIP keeps the causal mask as a plain attribute, not in the state dict
    del model._buffers["attn_mask"]
    model.attn_mask = mask
    torch.jit.script(model).save(str(tmp_path / "jit.pt"))
    loaded = OpenClipBackbone(tiny_config(weights=str(tmp_path / "jit.pt")), CLASSES)
    reference = OpenClipBackbone.from_model(create_tiny(TINY_B, seed=3), tokenizer, CLASSES, tiny_config())
    assert torch.equal(loaded.zero_shot_image(images), reference.zero_shot_image(images))


def test_weights_of_another_backbone_are_rejected(weights):
    with pytest.raises(WeightsError, match=f"{TINY_L}.pt.*{TINY_B}"):
        load_clip(tiny_config(weights=str(weights[TINY_L])))


def test_missing_weights_file_names_path_and_env_var(tmp_path, monkeypatch):
    missing = str(tmp_path / "nowhere.pt")
    with pytest.raises(CapError, match=f"nowhere.pt.*{WEIGHTS_ENV}"):
        load_clip(tiny_config(weights=missing))
    monkeypatch.setenv(WEIGHTS_ENV, missing)
    with pytest.raises(CapError, match=f"nowhere.pt.*{WEIGHTS_ENV}"):
        load_clip(tiny_config())


def test_failed_download_and_unknown_tag_explain_the_offline_route(monkeypatch, weights):
    import open_clip.factory

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(CapError, match=WEIGHTS_ENV):
        load_clip(ModelConfig(device="cpu"))
    with pytest.raises(UnknownNameError, match="openai"):
        load_clip(tiny_config(pretrained="laion2b_s34b_b79k"))


def test_changing_only_the_backbone_switches_dimensions(weights, images):
    config_b = tiny_config()
    config_l = dataclasses.replace(config_b, backbone=TINY_L)
    for config in (config_b, config_l):
        bb = OpenClipBackbone(config, CLASSES)
        dim = EMBED_DIM[config.backbone]
        assert bb.feature_dim == dim and bb.encode_image(images).shape == (4, dim)
        assert bb.prompts.proj.out_features == bb.clip.visual.conv1.out_channels
    assert EMBED_DIM[TINY_B] != EMBED_DIM[TINY_L]


@pytest.mark.parametrize("precision", ["bf16", "amp"])
def test_low_precision_forwards_and_backprop_into_fp32_prompts(weights, images, precision):
    bb = OpenClipBackbone(tiny_config(weights=weights[TINY_B], precision=precision), CLASSES)
    expected_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    assert bb.clip.visual.conv1.weight.dtype == expected_dtype
    logits = bb.encode_image(images) @ bb.encode_text().T
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.dtype == torch.float32 and p.grad is not None for p in bb.prompt_parameters())


def test_forward_under_external_autocast(model, tokenizer, images):
    bb = backbone(model, tokenizer)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        text, image = bb.encode_text(), bb.encode_image(images)
    assert text.dtype == image.dtype == torch.float32 and torch.isfinite(image @ text.T).all()
