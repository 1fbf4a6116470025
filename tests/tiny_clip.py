"""Tiny open_clip models for CPU tests: real architecture and BPE tokenizer, random weights.

Importing this module registers two model configs in open_clip's registry:
``TINY_B`` (ViT-B/32-like: embed 32, vision width 64, patch 8) and ``TINY_L`` (ViT-L/14-like: wider,
embed 48, finer patches), both with 3-layer towers, 32-pixel images and the 77-token context.
:func:`register_tiny_weights` saves seeded weights for both and registers them under open_clip's
``"openai"`` tag, so ``ModelConfig(backbone=TINY_B)`` goes through the same code path as a real
download, offline, and changing only ``backbone`` switches models.
"""

from __future__ import annotations

from pathlib import Path

import torch

# First: importing cap's model config makes torchvision importable (cap/_torchvision.py), which
# open_clip needs on a CPU torch with a CUDA torchvision wheel, in a notebook kernel's startup too.
from cap.models.model_config import ModelConfig  # isort: skip
import open_clip  # noqa: E402
from open_clip import pretrained as oc_pretrained  # noqa: E402
from open_clip.factory import _MODEL_CONFIGS  # noqa: E402

TINY_B, TINY_L = "cap-tiny-b32", "cap-tiny-l14"
IMAGE_SIZE = 32
LAYERS = 3

_TEXT = {"context_length": 77, "vocab_size": 49408, "heads": 2, "layers": LAYERS}
CONFIGS = {
    TINY_B: {"embed_dim": 32,
             "vision_cfg": {"image_size": IMAGE_SIZE, "layers": LAYERS, "width": 64, "head_width": 32, "patch_size": 8},
             "text_cfg": {**_TEXT, "width": 48}},
    TINY_L: {"embed_dim": 48,
             "vision_cfg": {"image_size": IMAGE_SIZE, "layers": LAYERS, "width": 96, "head_width": 32, "patch_size": 4},
             "text_cfg": {**_TEXT, "width": 64}},
}
EMBED_DIM = {name: cfg["embed_dim"] for name, cfg in CONFIGS.items()}

for _name, _cfg in CONFIGS.items():
    _MODEL_CONFIGS.setdefault(_name, _cfg)


def create_tiny(name: str = TINY_B, seed: int = 0, quick_gelu: bool = True) -> torch.nn.Module:
    """A randomly initialised tiny CLIP (fp32, CPU, eval mode); the seed fixes its weights."""
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu)
    return model.eval()


def save_tiny_weights(path: Path, name: str = TINY_B, seed: int = 0) -> Path:
    """torch.save the state dict of ``create_tiny(name, seed)`` to ``path``."""
    torch.save(create_tiny(name, seed).state_dict(), path)
    return path


def register_tiny_weights(directory: Path) -> dict[str, Path]:
    """Save weights for both tiny models and register them as their open_clip "openai" tag."""
    files = {}
    for seed, name in enumerate(CONFIGS):
        files[name] = save_tiny_weights(directory / f"{name}.pt", name, seed)
        oc_pretrained._PRETRAINED[name] = {"openai": oc_pretrained._pcfg(file=str(files[name]), quick_gelu=True)}
    return files


def tiny_config(name: str = TINY_B, **overrides) -> ModelConfig:
    """A ModelConfig for a tiny model on CPU in fp32; MaPLe depth 3 (the default 8 exceeds 3 layers)."""
    return ModelConfig(**{"backbone": name, "device": "cpu", "precision": "fp32", "prompt_depth": LAYERS,
                          **overrides})
