"""Makes ``import torchvision`` (and so ``import open_clip``) work on a CPU-only torch build paired
with a CUDA torchvision wheel; see :func:`ensure_torchvision_importable`. The fix runs lazily, right
before torchvision's first import (``import cap`` installs the hook), so ``import cap`` stays cheap.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

# Keeps the schema definitions registered for the life of the process.
_TORCHVISION_SCHEMAS = None


def ensure_torchvision_importable() -> bool:
    """Define the ``torchvision::nms``/``qnms`` op schemas when torchvision cannot provide them.

    A CUDA torchvision wheel on a CPU-only torch cannot load its ``_C`` extension, and its
    fake-tensor registrations then fail with ``operator torchvision::nms does not exist``.
    Defining the two schemas it registers unconditionally lets ``import torchvision`` finish.
    Nothing is defined when the extension loads (a matching install) or the ops already exist.

    Returns True when the schemas had to be defined.
    """
    global _TORCHVISION_SCHEMAS
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    import torch

    if not hasattr(torch.ops.torchvision, "nms"):
        package = Path(next(iter(spec.submodule_search_locations)))
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            if (package / f"_C{suffix}").is_file():
                try:  # what torchvision itself does first; harmless to do twice
                    torch.ops.load_library(str(package / f"_C{suffix}"))
                except OSError:
                    pass
                break
    if hasattr(torch.ops.torchvision, "nms"):
        return False
    _TORCHVISION_SCHEMAS = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        _TORCHVISION_SCHEMAS.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return True


class _BeforeTorchvisionImport(importlib.abc.MetaPathFinder):
    """Runs :func:`ensure_torchvision_importable` once, just before torchvision is first imported."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            ensure_torchvision_importable()
        return None  # the normal finders do the import


def install_hook() -> None:
    """Run the fix right before torchvision's first import (once per process)."""
    if "torchvision" not in sys.modules and not any(isinstance(f, _BeforeTorchvisionImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvisionImport())
