"""The one interface the training engine sees, whichever backend runs underneath.

A backend turns a batch (pixels for open_clip, feature vectors for the feature backend) and the
class list into L2-normalised image and text features. The pseudolabelling, mismatch detection,
margin, losses and training loop only use these methods.
"""

from __future__ import annotations

import torch
from torch import nn


class Backbone(nn.Module):
    """Abstract backend. Subclasses set ``feature_dim`` and ``logit_scale`` (CLIP's frozen exp(scale))."""

    feature_dim: int
    logit_scale: float
    prompt_lr_scale: float = 1.0  # the prompts learn at this times a method's learning rate

    def encode_text(self) -> torch.Tensor:
        """(C, d) normalised class text features from the current (learnable) prompts.

        The engine calls this once per step and shares it between all streams."""
        raise NotImplementedError

    def encode_image(self, images) -> torch.Tensor:
        """(B, d) normalised image features through the current (learnable) prompts."""
        raise NotImplementedError

    @torch.no_grad()
    def zero_shot_text(self) -> torch.Tensor:
        """(C, d) normalised text features of the frozen model for the class prompts (no learning)."""
        raise NotImplementedError

    @torch.no_grad()
    def zero_shot_image(self, images) -> torch.Tensor:
        """(B, d) normalised image features of the frozen model (no prompts)."""
        raise NotImplementedError

    def prompt_parameters(self) -> list[nn.Parameter]:
        """The trainable prompt parameters (the only backend parameters that may change)."""
        raise NotImplementedError

    def reset_prompts(self) -> None:
        """Re-initialise the prompts (GRIP and CPL start every round from scratch)."""
        raise NotImplementedError
