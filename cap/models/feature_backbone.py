"""The feature backend: CAP's heads on fixed feature vectors (simulator or cached CLIP features).

Prompts cannot act on fixed features, so their role is played by two learnable linear maps shared
by all classes, initialised at zero so training starts exactly at zero-shot CLIP:
text t' = normalize(t + A t), image v' = normalize(v + B v). Like prompts, they move every class
together; weight decay pulls them back toward zero-shot. The maps are far more expressive than a
few prompt tokens, so they learn at ``prompt_lr_scale`` times a method's prompt learning rate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cap.models.backbone import Backbone


class FeatureBackbone(Backbone):
    def __init__(self, text_features: torch.Tensor, logit_scale: float = 100.0, prompt_lr_scale: float = 1.0):
        super().__init__()
        self.prompt_lr_scale = float(prompt_lr_scale)
        self.register_buffer("text", F.normalize(torch.as_tensor(text_features, dtype=torch.float32), dim=1))
        dim = self.text.shape[1]
        self.feature_dim = dim
        self.logit_scale = float(logit_scale)
        self.text_map = nn.Parameter(torch.zeros(dim, dim))
        self.image_map = nn.Parameter(torch.zeros(dim, dim))

    # t + t A and v + v B as one fused multiply-add each (one op, one backward node, per step)
    def encode_text(self) -> torch.Tensor:
        return F.normalize(torch.addmm(self.text, self.text, self.text_map), dim=1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(torch.addmm(images, images, self.image_map), dim=1)

    @torch.no_grad()
    def zero_shot_text(self) -> torch.Tensor:
        return self.text.clone()

    @torch.no_grad()
    def zero_shot_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(images.float(), dim=1)

    def prompt_parameters(self) -> list[nn.Parameter]:
        return [self.text_map, self.image_map]

    def reset_prompts(self) -> None:
        with torch.no_grad():
            self.text_map.zero_()
            self.image_map.zero_()
