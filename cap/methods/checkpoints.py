"""Checkpoints of a run: atomic writes, safe reads, the trainable state of a model.

A checkpoint holds only tensors, numbers, strings, lists, tuples and dicts (numpy values are turned
into tensors and numbers when saved), so it is read with ``torch.load(weights_only=True)``, which
refuses any other pickled object: reading a checkpoint never runs code from it.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from cap.atomic import atomic_write
from cap.errors import CapError


class RunInterrupted(CapError):
    """Raised after the checkpoint of the epoch a test asked to stop at (simulates a killed run)."""


class CheckpointError(CapError):
    """A checkpoint that cannot be read, holds objects other than plain data, or lacks its fields."""


def plain_state(value):
    """``value`` with numpy arrays as tensors (same dtype) and numpy scalars as Python numbers, at any depth."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value).copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {plain_state(k): plain_state(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain_state(v) for v in value)
    return value


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic: a kill during the write leaves the previous checkpoint intact."""
    plain = plain_state(state)
    atomic_write(path, lambda tmp: torch.save(plain, tmp))


def load_checkpoint(path: Path, required: Iterable[str] = ()) -> dict | None:
    """The checkpoint at ``path`` (None if there is none); a CheckpointError if it cannot be read,
    holds anything but plain data (refused unread: unpickling it could run code) or lacks a
    ``required`` field. Each message names the file and says to delete it to restart the run."""
    if not path.is_file():
        return None
    restart = f"delete it (or the folder {path.parent}) to restart the run from the beginning"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(f"checkpoint {path} holds a pickled object{what}, not only tensors, numbers, lists and "
                              f"dicts; it was not loaded, since loading it could run code: {restart}") from None
    except Exception as err:  # a truncated or foreign file
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else 'empty or truncated file'}); {restart}") from None
    missing = sorted(set(required) - set(state)) if isinstance(state, dict) else ["(not a dict)"]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)} (written by another version of the "
                              f"code?); {restart}")
    return state


def trainable_state(module: torch.nn.Module) -> dict:
    """Only the parameters that train (prompts), so checkpoints stay small on the CLIP backend."""
    return {name: p.detach().cpu().clone() for name, p in module.named_parameters() if p.requires_grad}


def load_trainable_state(module: torch.nn.Module, state: dict) -> None:
    params = dict(module.named_parameters())
    unknown = sorted(set(state) - set(params))
    if unknown:
        raise CheckpointError(f"checkpoint parameters {unknown[:3]} are not parameters of this model (a checkpoint "
                              "of another backbone or method?): delete the run's checkpoint folder to restart it")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device))
