"""The adapted classifier as one file: the trained MaPLe prompts and the three adapters, with what
is needed to rebuild the model around them (class names, backbone, weights, prompt settings).

The file holds only tensors, numbers, strings, lists and dicts, and is read with
``torch.load(weights_only=True)``: loading one never runs code from it. CLIP's own weights are
not in it (hundreds of MB, and the same for every classifier): they come from the file recorded
at training time, ``--weights``, ``$CAP_CLIP_WEIGHTS`` or open_clip's download, in that order.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from cap.adapt.user_inputs import InputError
from cap.atomic import atomic_write
from cap.config import RunConfig, as_dict
from cap.methods.checkpoints import plain_state, trainable_state
from cap.models.clip import resolve_weights
from cap.models.model_config import ModelConfig

FORMAT = "cap adapted classifier"
VERSION = 1
_NOT_SAVED = ("weights", "device")  # machine-specific: given again where the classifier is used


def save_classifier(path: str | Path, backbone, adapters: torch.nn.Module, config: RunConfig) -> Path:
    """Write the classifier of a finished run to ``path`` (atomically)."""
    weights = resolve_weights(backbone.config)
    state = plain_state({
        "format": FORMAT, "version": VERSION,
        "classnames": list(backbone.classnames),
        "model": {k: v for k, v in dataclasses.asdict(backbone.config).items() if k not in _NOT_SAVED},
        "weights": {"file": os.path.realpath(weights), "size": os.path.getsize(weights)} if weights else None,
        "prompts": trainable_state(backbone),
        "adapters": {k: v.detach().cpu() for k, v in adapters.state_dict().items()},
        "config": as_dict(config),
    })
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))
    return Path(path)


def read_classifier(path: str | Path) -> dict:
    """The contents of a classifier file; an InputError naming the file if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"classifier file {path} does not exist; give the classifier.pt that `cap adapt` wrote")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, foreign, or holding pickled objects
        first = str(err).splitlines()[0] if str(err) else "empty or truncated"
        raise InputError(f"classifier file {path} cannot be read ({type(err).__name__}: {first[:200]}); give the "
                         "classifier.pt that `cap adapt` wrote, or run `cap adapt` again to rewrite it") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(f"{path} is not a classifier written by `cap adapt` (a CLIP weights file or a training "
                         "checkpoint?); give the classifier.pt from the output folder of `cap adapt`")
    if state.get("version") != VERSION:
        raise InputError(f"classifier file {path} has version {state.get('version')}, this code reads version "
                         f"{VERSION}; run `cap adapt` again with this code")
    return state


def weights_for(state: dict, weights: str | None) -> str | None:
    """The CLIP weights to load: ``weights`` if given, else the file used in training if it is
    still there, else None (``$CAP_CLIP_WEIGHTS`` or open_clip's download)."""
    if weights is not None:
        return weights
    saved = (state.get("weights") or {}).get("file")
    return saved if saved and os.path.isfile(saved) else None


def load_classifier(path: str | Path, weights: str | None = None, device: str = "auto"):
    """(MaPLe backbone with the trained prompts, adapters state, file contents) of a classifier file."""
    from cap.models.openclip_backbone import OpenClipBackbone

    state = read_classifier(path)
    config = ModelConfig(**state["model"], weights=weights_for(state, weights), device=device)
    backbone = OpenClipBackbone(config, state["classnames"])
    params = dict(backbone.named_parameters())
    wrong = [name for name, value in state["prompts"].items()
             if name not in params or params[name].shape != value.shape]
    if wrong or set(state["prompts"]) != {n for n, p in params.items() if p.requires_grad}:
        raise InputError(f"classifier file {path}: its prompts ({wrong[:3] or 'their names'}) do not fit "
                         f"{config.backbone} with prompt depth {config.prompt_depth}; the file was changed or "
                         "written by another version of the code: run `cap adapt` again")
    with torch.no_grad():
        for name, value in state["prompts"].items():
            params[name].copy_(value.to(params[name].device))
    return backbone.eval(), state["adapters"], state
