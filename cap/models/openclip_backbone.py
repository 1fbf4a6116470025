"""The paper's backend: a frozen open_clip CLIP with MaPLe (or CoOp) prompts behind :class:`Backbone`.

Prompts are injected by running our own forward over open_clip's submodules (token embedding,
positional embeddings, residual blocks, final norms and projections) rather than by patching
open_clip: the frozen model stays untouched, so the zero-shot path is plain open_clip.

MaPLe (spec 1.3, official ``models/maple.py``):
* text: the class prompts ``"X X of a {name}."`` enter with the learnable context at token
  positions 1..n_ctx; before residual block k = 1..depth-1 those positions are replaced by the
  deep text prompt of layer k. The text feature is pooled at each prompt's end token.
* vision: after the class and positional embeddings, ``proj(ctx)`` is appended as n_ctx extra
  tokens (no positional embedding), then ``ln_pre``; before block k = 1..depth-1 the last n_ctx
  tokens are replaced by ``deep_proj[k-1](deep_text[k-1])``. The image feature is the class token.
CoOp: learnable context in the text prompt only; images go through the frozen encoder.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cap._torchvision import ensure_torchvision_importable
from cap.errors import CapError, ParameterError
from cap.models.backbone import Backbone
from cap.models.clip import autocast_context, freeze, load_clip, prompt_strings, resolve_precision
from cap.models.model_config import ModelConfig
from cap.models.prompts import MaPLePrompts, make_prompts

ensure_torchvision_importable()  # before open_clip imports torchvision: see cap/_torchvision.py

log = logging.getLogger(__name__)


def _project(x: torch.Tensor, projection: nn.Module | torch.Tensor | None) -> torch.Tensor:
    """open_clip stores projections as a matrix, an nn.Linear, or nothing."""
    if projection is None:
        return x
    return projection(x) if isinstance(projection, nn.Module) else x @ projection


def _check_supported(model: nn.Module, config: ModelConfig) -> None:
    """Our forwards assume OpenAI-style CLIP towers; say so clearly for anything else."""
    import open_clip
    from open_clip.transformer import VisionTransformer

    name = config.backbone
    if not isinstance(model, open_clip.CLIP) or getattr(model, "text_pool_type", None) != "argmax":
        raise CapError(f"backbone {name}: prompts need open_clip's CLIP class with the built-in text "
                       f"transformer pooled at the end token (OpenAI-style CLIP such as ViT-B-32, ViT-L-14)")
    if not model.transformer.batch_first:
        raise CapError(f"backbone {name}: the text transformer must be batch-first")
    if config.prompt != "maple":
        return
    visual = model.visual
    if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None or visual.pool_type != "tok":
        raise CapError(f"backbone {name}: MaPLe needs a ViT image tower pooled at the class token; "
                       f"use prompt='coop' for other image towers")
    layers = min(len(model.transformer.resblocks), len(visual.transformer.resblocks))
    if config.prompt_depth > layers:
        raise ParameterError(f"prompt_depth must be <= {layers} for this model, got {config.prompt_depth}")


class OpenClipBackbone(Backbone):
    """Frozen open_clip CLIP plus learnable prompts for a fixed class list.

    ``OpenClipBackbone(config, classnames)`` loads CLIP with :func:`load_clip`;
    ``OpenClipBackbone.from_model(model, tokenizer, classnames, config)`` wraps an already loaded
    model (which is frozen in place). All features are L2-normalised float32, whatever CLIP's
    precision, so that losses never mix dtypes."""

    def __init__(self, config: ModelConfig, classnames: Sequence[str], *, model: nn.Module | None = None,
                 tokenizer: Any = None, preprocess: Any = None):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise ParameterError(f"config must be a ModelConfig, got {type(config).__name__}")
        if isinstance(classnames, str) or not classnames or not all(isinstance(c, str) for c in classnames):
            raise ParameterError(f"classnames must be a non-empty list of strings, got {classnames!r}")
        if (model is None) != (tokenizer is None):
            raise ParameterError("pass both model and tokenizer, or neither (then they are loaded from config)")
        if model is None:
            model, preprocess, tokenizer = load_clip(config)
        _check_supported(model, config)
        self.config = config
        self.classnames = list(classnames)
        self.clip = freeze(model)
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        device = model.logit_scale.device
        self.precision = resolve_precision(config.precision, device)
        maple = config.prompt == "maple"
        self.prompts = make_prompts(
            config.prompt, self.classnames, model.token_embedding, tokenizer,
            n_ctx=config.n_ctx if maple else config.coop_n_ctx,
            ctx_init=config.ctx_init if maple else config.coop_ctx_init,
            depth=config.prompt_depth, vision_width=model.visual.conv1.out_channels if maple else 0)
        self.zero_shot_prompts = prompt_strings(self.classnames, config.template, config.template_bug)
        self.register_buffer("zero_shot_tokens", tokenizer(self.zero_shot_prompts).to(device), persistent=False)
        self.logit_scale = float(model.logit_scale.exp())
        self.feature_dim = int(model.visual.output_dim)
        log.info("%s backbone %s: %d classes, %d prompt parameters, e.g. %r", config.prompt, config.backbone,
                 len(self.classnames), sum(p.numel() for p in self.prompt_parameters()), self.prompt_texts[0])

    @classmethod
    def from_model(cls, model: nn.Module, tokenizer: Any, classnames: Sequence[str], config: ModelConfig,
                   preprocess: Any = None) -> OpenClipBackbone:
        """Wrap an open_clip CLIP already in memory (tests, notebooks sharing one model)."""
        return cls(config, classnames, model=model, tokenizer=tokenizer, preprocess=preprocess)

    @property
    def device(self) -> torch.device:
        return self.zero_shot_tokens.device

    @property
    def prompt_texts(self) -> tuple[str, ...]:
        """The learnable class prompts, "X" marking context tokens (e.g. "X X of a forest.")."""
        return self.prompts.layout.texts

    def train(self, mode: bool = True) -> OpenClipBackbone:
        """CLIP stays in eval mode (no patch dropout); only the prompt module follows ``mode``."""
        super().train(mode)
        self.clip.eval()
        return self

    def _autocast(self):
        return autocast_context(self.precision, self.device)

    def _images(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.device, dtype=self.clip.visual.conv1.weight.dtype, non_blocking=True)

    # ----------------------------------------------------------------- prompted forwards
    def _text_features(self, embeds: torch.Tensor, deep: list[torch.Tensor], full_length: bool = False) -> torch.Tensor:
        """Text transformer over prompt embeddings (C, L, width); ``deep[k-1]`` replaces the context at layer k.

        The text transformer is causal, so the feature pooled at a prompt's end token depends only
        on the positions up to it: the blocks run on the first ``prompts.text_length`` positions
        (the longest prompt's end token + 1, e.g. 13 of 77 for EuroSAT's prompts), which gives the
        full-length features up to float summation order at a fraction of the cost.
        ``full_length=True`` runs every position, as CLIP and the official code do."""
        clip, n_ctx = self.clip, self.prompts.n_ctx
        length = embeds.shape[1] if full_length else self.prompts.text_length
        dtype = clip.transformer.get_cast_dtype()
        x = embeds[:, :length].to(dtype) + clip.positional_embedding[:length].to(dtype)
        mask = clip.attn_mask[:length, :length]
        for layer, block in enumerate(clip.transformer.resblocks):
            if 1 <= layer <= len(deep):
                ctx = deep[layer - 1].to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
                x = torch.cat([x[:, :1], ctx, x[:, 1 + n_ctx:]], dim=1)
            x = block(x, attn_mask=mask)
        x = clip.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), self.prompts.eot]
        return _project(x, clip.text_projection)

    def _image_features(self, images: torch.Tensor, shallow: torch.Tensor, deep: list[torch.Tensor]) -> torch.Tensor:
        """ViT over images with ``shallow`` (n_ctx, width) appended at layer 0, replaced by ``deep[k-1]`` at layer k."""
        visual = self.clip.visual
        x = visual.conv1(self._images(images))
        x = x.flatten(2).transpose(1, 2)  # (B, grid², width)
        batch = x.shape[0]
        cls = visual.class_embedding.to(x.dtype).expand(batch, 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        n_ctx = shallow.shape[0]
        x = torch.cat([x, shallow.to(x.dtype).unsqueeze(0).expand(batch, -1, -1)], dim=1)
        x = visual.ln_pre(x)
        for layer, block in enumerate(visual.transformer.resblocks):
            if 1 <= layer <= len(deep):
                ctx = deep[layer - 1].to(x.dtype).unsqueeze(0).expand(batch, -1, -1)
                x = torch.cat([x[:, :-n_ctx], ctx], dim=1)
            x = block(x)
        return _project(visual.ln_post(x[:, 0]), visual.proj)

    # ----------------------------------------------------------------- Backbone interface
    def encode_text(self) -> torch.Tensor:
        """(C, d) class text features through the current prompts: one text-encoder pass for all classes."""
        with self._autocast():
            features = self._text_features(self.prompts.text_embeddings(), self.prompts.deep_text_prompts())
        return F.normalize(features.float(), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, d) image features through the MaPLe visual prompts; CoOp: the frozen encoder."""
        if not isinstance(self.prompts, MaPLePrompts):
            return self.zero_shot_image(images)
        with self._autocast():
            shallow, deep = self.prompts.visual_prompts()
            features = self._image_features(images, shallow, deep)
        return F.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def zero_shot_text(self) -> torch.Tensor:
        """(C, d) frozen CLIP features of ``prompt_strings(classnames, template, template_bug)``."""
        return self._frozen_text(self.zero_shot_tokens)

    @torch.no_grad()
    def zero_shot_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, d) frozen CLIP image features, no prompts."""
        with self._autocast():
            features = self.clip.encode_image(self._images(images))
        return F.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def encode_raw_text(self, strings: Sequence[str]) -> torch.Tensor:
        """(N, d) frozen CLIP features of arbitrary texts (concept-alignment descriptions)."""
        return self._frozen_text(self.tokenizer(list(strings)).to(self.device))

    def _frozen_text(self, tokens: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            features = self.clip.encode_text(tokens)
        return F.normalize(features.float(), dim=-1)

    def prompt_parameters(self) -> list[nn.Parameter]:
        """MaPLe: ctx, deep text prompts, shallow and deep projections. CoOp: ctx."""
        return list(self.prompts.parameters())

    def reset_prompts(self) -> None:
        """Re-draw the prompts from their initialisation (torch's RNG for the random parts)."""
        self.prompts.reset_parameters()
