"""Confusion-aware calibrated margin (CAP §3.2; official ``compute_margin``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cap.errors import UnknownNameError

DELTA_VARIANTS = ("code", "paper")


def confusion_margin(similarity: torch.Tensor, counts: torch.Tensor, scale: float = 12.0, delta: str = "code") -> torch.Tensor:
    """C×C margin, zero diagonal: M[y, j] = scale · Δ · δ[y] · similarity[y, j].

    r = counts / max(counts); δ = (1 − r)/(1 + r) (``"code"``, the official code) or 1 − r
    (``"paper"``); Δ = 1 − min(r). All-zero counts give a zero margin (the official code divides by
    zero there).
    """
    if delta not in DELTA_VARIANTS:
        raise UnknownNameError("margin delta variant", delta, DELTA_VARIANTS)
    counts = torch.as_tensor(counts, dtype=torch.float32, device=similarity.device)
    n = similarity.shape[0]
    if counts.max() <= 0:
        return torch.zeros(n, n, device=similarity.device)
    r = counts / counts.max()
    per_class = (1 - r) / (1 + r) if delta == "code" else 1 - r
    imbalance = 1 - r.min()
    margin = scale * imbalance * per_class[:, None] * similarity.float()
    return margin.fill_diagonal_(0.0)


def largest_entries(margin: torch.Tensor, n: int = 5) -> list[list]:
    """The ``n`` largest off-diagonal entries of a margin matrix as ``[y, j, value]`` (label class y,
    competing class j), largest first: which pairs the margin pushes apart most."""
    values = margin.detach().float().cpu().clone()
    values.fill_diagonal_(float("-inf"))
    n = min(n, values.numel() - len(values))
    top = torch.topk(values.flatten(), n) if n > 0 else None
    if top is None:
        return []
    width = values.shape[1]
    return [[int(i) // width, int(i) % width, round(float(v), 4)] for v, i in zip(top.values, top.indices)]


def class_similarity(text: torch.Tensor, prototypes: torch.Tensor, rescale: bool = True) -> torch.Tensor:
    """S[i, j] = max(cos(v̄_i, v̄_j), cos(w_i, w_j)) for normalised text features ``text`` and image
    prototypes ``prototypes`` (rows L2-normalised here).

    ``rescale`` applies the official per-row min-max calibration a_i + (S − a_i)/(b_i − a_i)·(1 − a_i),
    a_i = min_j S, b_i = max_j S; with b_i = S_ii = 1 it changes nothing (kept for fidelity)."""
    text, prototypes = F.normalize(text.float(), dim=1), F.normalize(prototypes.float(), dim=1)
    s = torch.maximum(text @ text.T, prototypes @ prototypes.T)
    if rescale:
        low, high = s.min(1, keepdim=True).values, s.max(1, keepdim=True).values
        s = low + (s - low) / (high - low).clamp_min(1e-12) * (1 - low)
    return s


def first_entry_per_image(index, order) -> np.ndarray:
    """Which D_PL entries the official prototypes count: walking the entries in ``order`` (a
    permutation of positions; the official code's shuffled loader), only an image's first entry.
    ``index`` holds each entry's image; an image in several classes' D_PL counts for one class only."""
    index, order = np.asarray(index), np.asarray(order, dtype=np.int64)
    _, first = np.unique(index[order], return_index=True)  # each image's first place in the walk
    keep = np.zeros(len(index), dtype=bool)
    keep[order[first]] = True
    return keep


def class_prototypes(features: torch.Tensor, labels: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Normalised mean feature per class; a class without samples takes its ``fallback`` row
    (the official code uses the class text feature)."""
    n_classes = fallback.shape[0]
    sums = torch.zeros(n_classes, features.shape[1], device=features.device, dtype=torch.float32)
    sums.index_add_(0, labels, F.normalize(features.float(), dim=1))
    counts = torch.bincount(labels, minlength=n_classes)
    means = torch.where((counts > 0)[:, None], sums / counts.clamp_min(1)[:, None], fallback.float())
    return F.normalize(means, dim=1)
