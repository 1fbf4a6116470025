"""CAP's residual feature adapters (official ``DebiasModule``), bypassed at evaluation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Adapter(nn.Module):
    """x -> normalize(x + scale * MLP(x)), MLP = Linear(d, hidden) -> ReLU -> Linear(hidden, d)."""

    def __init__(self, dim: int, hidden: int = 128, scale: float = 0.01):
        super().__init__()
        self.scale = scale
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x + self.scale * self.mlp(x.to(self.mlp[0].weight.dtype)).to(x.dtype), dim=-1)


class Adapters(nn.Module):
    """Text adapter ψ, main visual adapter φ^m (D_PL and labels; makes pseudolabels) and pseudo visual
    adapter φ^p (dynamic pseudolabels of the strong view). ``independent=False`` shares one visual
    adapter between both roles (the paper's Table 3 ablation)."""

    def __init__(self, dim: int, hidden: int = 128, scale: float = 0.01, independent: bool = True):
        super().__init__()
        self.text = Adapter(dim, hidden, scale)
        self.main = Adapter(dim, hidden, scale)
        self.pseudo = Adapter(dim, hidden, scale) if independent else self.main

    @property
    def independent(self) -> bool:
        return self.pseudo is not self.main
