"""Where a run's data come from: the simulator's features, or real images through open_clip.

The training engine decides *which* images go in each batch (so runs are reproducible and resume
exactly); a source only turns index sequences into model inputs, efficiently for its kind. Every
source also owns its provenance (class names, the paradigm split, frozen zero-shot features,
candidate description features).
"""

from __future__ import annotations

from cap.config import RunConfig
from cap.sources.source import Source


def make_source(config: RunConfig) -> Source:
    """The source of ``config.backend``: ``sim`` (:mod:`cap.sources.simulated`) or ``openclip``
    (:mod:`cap.sources.real_images`, imported only then: it needs open_clip)."""
    if config.backend == "sim":
        from cap.sources.simulated import SimSource

        return SimSource(config)
    from cap.sources.real_images import ImageSource

    return ImageSource(config)


__all__ = ["Source", "make_source"]
