"""Seeded stand-in weights for the differential fixture against the official CAP code.

Both codes must run on the same CLIP ViT-B/32 weights, and OpenAI's real weights cannot be
downloaded here, so every tensor of OpenAI's ViT-B/32 state-dict layout is drawn from one seeded
``torch.Generator`` (CPU) in a fixed order, with a stated scale per kind of tensor:

=============================================  =============================================
tensor kind                                    value
=============================================  =============================================
LayerNorm weight / bias                        1 / 0
``logit_scale``                                ln(100) (so exp(logit_scale) = 100, as CLIP's)
text ``positional_embedding``                  N(0, 0.01²)
``token_embedding.weight``                     N(0, 0.02²)
``visual.class_embedding``,                    N(0, 0.02²)
``visual.positional_embedding``
``visual.conv1.weight`` and every Linear /     N(0, 0.05²)
attention weight (``in_proj``, ``out_proj``,
``c_fc``, ``c_proj``)
every bias of those                            N(0, 0.01²)
``text_projection``, ``visual.proj``           N(0, 1/width) (CLIP's own init scale)
=============================================  =============================================

Activations stay finite, and image features differ enough between images to give varied zero-shot
predictions: with seed 3 and std 0.05 for the weights, the fixture's 40 images are predicted as 7
of the 10 classes (seeds 2-7 were tried; with std 0.02 the predictions fall on two classes).

As in OpenAI's archives, the tensors that ``clip.model.convert_weights`` turns to fp16
(convolution, Linear and attention weights and biases, ``text_projection``, ``visual.proj``) are
stored in fp16 and the others in fp32: the official code builds its model in fp16 before loading,
so fp16-representable values make both codes see exactly the same numbers.

:func:`save_torchscript` writes them as a TorchScript archive, the one format both codes read from
a path: the pip ``clip.load`` (and the official ``load_clip_to_cpu``) call ``torch.jit.load`` and
fail on a plain state dict, and the project's ``load_clip`` reads TorchScript archives too.

:func:`learnable_tensors` is the matching recipe for the 36 trained tensors of the official model
(24 MaPLe prompt tensors, 12 adapter tensors), under their official names: the fixture script
copies them into the official model, the test into the project's, so that both start a step
from the same prompts and adapters.

Generation takes about 2.5 s on a 2-core CPU, the digest 0.7 s, saving about 1 s (337 MiB on
disk); the test writes the file once, in a temporary folder.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from pathlib import Path

import torch
from torch import nn

SEED = 3  # weights (see above)
LEARNABLE_SEED = 20250502  # prompts and adapters (the paper's arXiv number, 2505.02056)

# ViT-B/32 as OpenAI trained it.
EMBED_DIM = 512
IMAGE_SIZE, PATCH = 224, 32
VISION_WIDTH, VISION_LAYERS = 768, 12
TEXT_WIDTH, TEXT_LAYERS = 512, 12
CONTEXT_LENGTH, VOCAB_SIZE = 77, 49408

WEIGHT_STD, BIAS_STD = 0.05, 0.01
TOKEN_STD, TEXT_POSITION_STD, VISION_EMBED_STD = 0.02, 0.01, 0.02

# Official MaPLe: N_CTX 2, PROMPT_DEPTH 8 (7 deeper prompts), text width 512 -> vision width 768.
N_CTX, PROMPT_DEPTH, ADAPTER_HIDDEN = 2, 8, 128


def _block(prefix: str, width: int) -> list[tuple[str, tuple[int, ...], str]]:
    """One residual attention block: (name, shape, kind)."""
    return [
        (f"{prefix}.attn.in_proj_weight", (3 * width, width), "weight"),
        (f"{prefix}.attn.in_proj_bias", (3 * width,), "bias"),
        (f"{prefix}.attn.out_proj.weight", (width, width), "weight"),
        (f"{prefix}.attn.out_proj.bias", (width,), "bias"),
        (f"{prefix}.ln_1.weight", (width,), "ln_weight"),
        (f"{prefix}.ln_1.bias", (width,), "ln_bias"),
        (f"{prefix}.mlp.c_fc.weight", (4 * width, width), "weight"),
        (f"{prefix}.mlp.c_fc.bias", (4 * width,), "bias"),
        (f"{prefix}.mlp.c_proj.weight", (width, 4 * width), "weight"),
        (f"{prefix}.mlp.c_proj.bias", (width,), "bias"),
        (f"{prefix}.ln_2.weight", (width,), "ln_weight"),
        (f"{prefix}.ln_2.bias", (width,), "ln_bias"),
    ]


def layout() -> list[tuple[str, tuple[int, ...], str]]:
    """OpenAI's ViT-B/32 state dict: (name, shape, kind) in the order the tensors are drawn."""
    grid = IMAGE_SIZE // PATCH
    entries = [
        ("positional_embedding", (CONTEXT_LENGTH, TEXT_WIDTH), "text_position"),
        ("text_projection", (TEXT_WIDTH, EMBED_DIM), "projection"),
        ("logit_scale", (), "logit_scale"),
        ("visual.class_embedding", (VISION_WIDTH,), "vision_embed"),
        ("visual.positional_embedding", (grid * grid + 1, VISION_WIDTH), "vision_embed"),
        ("visual.proj", (VISION_WIDTH, EMBED_DIM), "projection"),
        ("visual.conv1.weight", (VISION_WIDTH, 3, PATCH, PATCH), "weight"),
        ("visual.ln_pre.weight", (VISION_WIDTH,), "ln_weight"),
        ("visual.ln_pre.bias", (VISION_WIDTH,), "ln_bias"),
    ]
    for i in range(VISION_LAYERS):
        entries += _block(f"visual.transformer.resblocks.{i}", VISION_WIDTH)
    entries += [
        ("visual.ln_post.weight", (VISION_WIDTH,), "ln_weight"),
        ("visual.ln_post.bias", (VISION_WIDTH,), "ln_bias"),
        ("token_embedding.weight", (VOCAB_SIZE, TEXT_WIDTH), "token"),
    ]
    for i in range(TEXT_LAYERS):
        entries += _block(f"transformer.resblocks.{i}", TEXT_WIDTH)
    entries += [("ln_final.weight", (TEXT_WIDTH,), "ln_weight"), ("ln_final.bias", (TEXT_WIDTH,), "ln_bias")]
    return entries


# Kinds stored in fp16, as clip.model.convert_weights leaves them in OpenAI's archives.
FP16_KINDS = ("weight", "bias", "projection")


def state_dict(seed: int = SEED) -> dict[str, torch.Tensor]:
    """Every tensor of OpenAI's ViT-B/32 layout, drawn in :func:`layout` order from one generator."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape, kind in layout():
        if kind == "ln_weight":
            tensor = torch.ones(shape)
        elif kind == "ln_bias":
            tensor = torch.zeros(shape)
        elif kind == "logit_scale":
            tensor = torch.tensor(math.log(100.0))
        else:
            std = {"weight": WEIGHT_STD, "bias": BIAS_STD, "token": TOKEN_STD, "text_position": TEXT_POSITION_STD,
                   "vision_embed": VISION_EMBED_STD, "projection": shape[0] ** -0.5}[kind]
            tensor = torch.empty(shape).normal_(0.0, std, generator=generator)
        out[name] = tensor.half() if kind in FP16_KINDS else tensor
    return out


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes, in key order: the fixture's weights' identity."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.dim() else t.reshape(1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _holder(tensors: dict[str, torch.Tensor]) -> nn.Module:
    """A module tree whose state dict is ``tensors`` (nested submodules follow the dotted names)."""
    root = nn.Module()
    for name, tensor in tensors.items():
        *path, leaf = name.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, nn.Parameter(tensor, requires_grad=False))
    return root


def save_torchscript(path: str | os.PathLike, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``tensors`` (default: :func:`state_dict`) to ``path`` as a TorchScript archive, what
    OpenAI ships and both ``clip.load`` and the project's loader read; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in torch 2.13, still works
        torch.jit.script(_holder(state_dict() if tensors is None else tensors)).save(str(path))
    return path


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> torch.Tensor:
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


def learnable_tensors(seed: int = LEARNABLE_SEED) -> dict[str, torch.Tensor]:
    """The 36 trained tensors of the official model, official names, fp32, drawn in this order:

    * ``prompt_learner.ctx`` (2, 512) and ``prompt_learner.compound_prompts_text.{0..6}`` (2, 512):
      N(0, 0.02²), the scale of token embeddings and of MaPLe's own random init;
    * ``prompt_learner.proj`` and ``prompt_learner.compound_prompt_projections.{0..6}`` (512 -> 768),
      then the adapters ``cross_adapter.textual_adapter``, ``cross_adapter.visual_adapter`` and
      ``pseudo_adapter`` (each ``fc.0`` 512 -> 128, ReLU, ``fc.2`` 128 -> 512; names relative to the
      ``DebiasModule``): weight and bias U(−1/√in, 1/√in), nn.Linear's default init scale.
    """
    generator = torch.Generator().manual_seed(seed)
    out = {"prompt_learner.ctx": torch.empty(N_CTX, TEXT_WIDTH).normal_(0.0, 0.02, generator=generator)}
    for i in range(PROMPT_DEPTH - 1):
        out[f"prompt_learner.compound_prompts_text.{i}"] = torch.empty(N_CTX, TEXT_WIDTH).normal_(
            0.0, 0.02, generator=generator)
    linears = [("prompt_learner.proj", TEXT_WIDTH, VISION_WIDTH)]
    linears += [(f"prompt_learner.compound_prompt_projections.{i}", TEXT_WIDTH, VISION_WIDTH)
                for i in range(PROMPT_DEPTH - 1)]
    for adapter in ("cross_adapter.textual_adapter", "cross_adapter.visual_adapter", "pseudo_adapter"):
        linears += [(f"{adapter}.fc.0", EMBED_DIM, ADAPTER_HIDDEN), (f"{adapter}.fc.2", ADAPTER_HIDDEN, EMBED_DIM)]
    for name, fan_in, fan_out in linears:
        bound = fan_in ** -0.5
        out[f"{name}.weight"] = _uniform((fan_out, fan_in), bound, generator)
        out[f"{name}.bias"] = _uniform((fan_out,), bound, generator)
    return out


if __name__ == "__main__":  # python benchmarks/official_weights.py OUT.pt: write the archive, print its digest
    import sys
    import time

    start = time.perf_counter()
    weights = state_dict()
    target = save_torchscript(sys.argv[1] if len(sys.argv) > 1 else "official-vit-b-32.pt", weights)
    print(f"{target}: {target.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - start:.1f} s, "
          f"digest {digest(weights)}")
