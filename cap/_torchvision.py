"""Makes ``import torchvision`` (and so ``import open_clip``) work on a CPU-only torch build paired
with a CUDA torchvision wheel; see :func:`ensure_torchvision_importable`, which every module of the
package that imports torchvision or open_clip calls first (``import cap`` alone does nothing).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
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
