"""Two numpy helpers the library uses everywhere: L2 normalisation and a stable softmax."""

from __future__ import annotations

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    """Rows (last axis) scaled to unit length; zero rows stay zero."""
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis``, shifted by the maximum so CLIP-scale logits (≈100·cos) stay finite."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
