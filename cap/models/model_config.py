"""What determines the open_clip backbone and its prompts: one frozen, validated dataclass.

Defaults are the official CAP code's values (``methods_config/*.yml``): CLIP ViT-B/32 with OpenAI
weights, MaPLe with 2 context tokens initialised from "a photo of a", prompt depth 8, and the
zero-shot prompt built with the inherited ``f"{template}{classname}"`` bug. Running ViT-L/14 only
needs ``backbone="ViT-L-14"``: every width (prompt projections, adapters) is read from the model,
unlike the official code where ``BACKBONE`` and ``VIS_ENCODER`` must both be edited.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from cap._torchvision import ensure_torchvision_importable
from cap.errors import ParameterError, UnknownNameError, check_int

ensure_torchvision_importable()  # before open_clip imports torchvision: see cap/_torchvision.py

PRECISIONS = ("auto", "fp32", "fp16", "bf16", "amp")
PROMPTS = ("maple", "coop")


def _require_str(name: str, value: object, allow_empty: bool = True) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise ParameterError(f"{name} must be a {'' if allow_empty else 'non-empty '}string, got {value!r}")
    return value


def _backbone_layers(backbone: str) -> tuple[int, int]:
    """(text layers, vision layers) of a registered open_clip config; UnknownNameError otherwise.

    Only registered names are accepted: "hf-hub:" or "local-dir:" names would make open_clip fetch
    a config (and need a text tower our prompts do not support). open_clip is imported here, not
    at module import, so that importing the config module stays cheap."""
    import open_clip

    if backbone not in open_clip.list_models():
        raise UnknownNameError("open_clip backbone", backbone, open_clip.list_models())
    model_cfg = open_clip.get_model_config(backbone)
    vision_layers = model_cfg["vision_cfg"].get("layers", 0)
    if not isinstance(vision_layers, int):  # ModifiedResNet: no transformer to prompt
        vision_layers = 0
    return model_cfg["text_cfg"].get("layers", 0), vision_layers


@dataclass(frozen=True)
class ModelConfig:
    """The open_clip backbone, its weights and precision, and the learnable prompts.

    backbone: an open_clip model name (``open_clip.list_models()`` or a registered config);
        "ViT-B/32" is accepted and stored as "ViT-B-32".
    pretrained: the open_clip tag of the weights. With ``weights`` (or ``CAP_CLIP_WEIGHTS``) it only
        says what the file holds: "openai" selects QuickGELU and OpenAI preprocessing.
    weights: a local weights file (state dict, open_clip checkpoint or OpenAI TorchScript archive);
        None: the ``CAP_CLIP_WEIGHTS`` environment variable if set, else download through open_clip.
    precision: "auto" (fp16 on CUDA, fp32 elsewhere), "fp32", "fp16", "bf16" (weights in that dtype)
        or "amp" (fp32 weights, forwards under autocast).
    prompt: "maple" (multi-modal deep prompts, the paper's) or "coop" (text context only).
    n_ctx, ctx_init, prompt_depth: MaPLe's N_CTX, CTX_INIT, PROMPT_DEPTH (1 = shallow prompts only).
    coop_n_ctx, coop_ctx_init: CoOp's context length and initialisation; "" = CoOp's generic random
        init (std 0.02), as in the Menghini baselines, otherwise the first ``coop_n_ctx`` words.
    template, template_bug: the zero-shot class prompt. With the bug (official code) the text is
        ``f"{template}{name}"``, literally "a photo of a {}forest"; without it ``template.format(name)``.
    device: "auto" (CUDA when available) or a torch device string.
    """

    backbone: str = "ViT-B-32"
    pretrained: str = "openai"
    weights: str | None = None
    precision: str = "auto"
    prompt: str = "maple"
    n_ctx: int = 2
    ctx_init: str = "a photo of a"
    prompt_depth: int = 8
    coop_n_ctx: int = 16
    coop_ctx_init: str = ""
    template: str = "a photo of a {}"
    template_bug: bool = True
    device: str = "auto"

    def __post_init__(self) -> None:
        backbone = _require_str("backbone", self.backbone, allow_empty=False).replace("/", "-")
        object.__setattr__(self, "backbone", backbone)
        _require_str("pretrained", self.pretrained, allow_empty=False)
        if self.weights is not None:
            if not isinstance(self.weights, (str, os.PathLike)) or not str(self.weights):
                raise ParameterError(f"weights must be a file path or None, got {self.weights!r}")
            object.__setattr__(self, "weights", os.fspath(self.weights))
        if self.precision not in PRECISIONS:
            raise UnknownNameError("precision", self.precision, PRECISIONS)
        if self.prompt not in PROMPTS:
            raise UnknownNameError("prompt method", self.prompt, PROMPTS)
        check_int("n_ctx", self.n_ctx, 1)
        check_int("prompt_depth", self.prompt_depth, 1)
        check_int("coop_n_ctx", self.coop_n_ctx, 1)
        _require_str("ctx_init", self.ctx_init)
        _require_str("coop_ctx_init", self.coop_ctx_init)
        if "{}" not in _require_str("template", self.template):
            raise ParameterError(f"template must contain '{{}}' where the class name goes, got {self.template!r}")
        if not isinstance(self.template_bug, bool):
            raise ParameterError(f"template_bug must be True or False, got {self.template_bug!r}")
        self._check_device()
        text_layers, vision_layers = _backbone_layers(backbone)
        if self.prompt == "maple" and self.prompt_depth > min(text_layers, vision_layers):
            raise ParameterError(
                f"prompt_depth must be <= {min(text_layers, vision_layers)} for {backbone} "
                f"({text_layers} text / {vision_layers} vision transformer layers), got {self.prompt_depth}")

    def _check_device(self) -> None:
        if self.device == "auto":
            return
        try:
            torch.device(_require_str("device", self.device, allow_empty=False))
        except RuntimeError:
            raise ParameterError(f"device must be 'auto' or a torch device such as 'cpu' or 'cuda:0', "
                                 f"got {self.device!r}") from None
