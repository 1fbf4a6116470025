"""Checkpoints of a run: atomic writes, safe reads, the trainable state of a model."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from cap.errors import CapError


class RunInterrupted(CapError):
    """Raised after the checkpoint of the epoch a test asked to stop at (simulates a killed run)."""


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic: a kill during the write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pt")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated file from a killed write of an older version
        raise CapError(f"checkpoint {path} cannot be read ({err}); delete it to restart the run") from err


def trainable_state(module: torch.nn.Module) -> dict:
    """Only the parameters that train (prompts), so checkpoints stay small on the CLIP backend."""
    return {name: p.detach().cpu().clone() for name, p in module.named_parameters() if p.requires_grad}


def load_trainable_state(module: torch.nn.Module, state: dict) -> None:
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device))
