"""Loss functions: CAP's margin cross-entropy and CPL's partial-label loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _with_margin(logits: torch.Tensor, target: torch.Tensor, margin: torch.Tensor | None) -> torch.Tensor:
    if margin is None:
        return logits
    rows = margin.to(logits.dtype)[target]  # (B, C): M[y, :]
    rows = rows.scatter(1, target[:, None], 0.0)  # never a margin on the target itself
    return logits + rows


def margin_cross_entropy(logits: torch.Tensor, target: torch.Tensor, margin: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of −log(e^{z_y} / (e^{z_y} + Σ_{c≠y} e^{z_c + M[y,c]})).

    ``margin=None`` is plain cross-entropy. ``margin`` is C×C (row = label), in logit units.
    """
    return F.cross_entropy(_with_margin(logits, target, margin), target)


def masked_margin_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, margin: torch.Tensor | None = None
) -> torch.Tensor:
    """Σ mask·L_m / Σ mask over the batch; exactly 0 (with a graph) when no sample passes the mask."""
    per_sample = F.cross_entropy(_with_margin(logits, target, margin), target, reduction="none")
    mask = mask.to(per_sample.dtype)
    total = (per_sample * mask).sum()
    count = mask.sum()
    return total / count if count > 0 else total


def partial_label_loss(logits: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """CPL's "cc" loss: mean of −log Σ_{j∈cand(i)} softmax(z_i)_j over the batch.

    ``candidates`` is a B×C 0/1 (or soft, non-negative) tensor with at least one candidate per row."""
    log_probs = F.log_softmax(logits.float(), dim=1)
    weights = candidates.to(log_probs.dtype)
    return -logsumexp(log_probs + torch.log(weights.clamp_min(1e-30)), dim=1).mean()


def single_labels(candidates: torch.Tensor) -> torch.Tensor | None:
    """The class of every row when each row of ``candidates`` is one-hot (FPL's and GRIP's
    pseudolabels, labelled images), else None. On such rows −log Σ_{j∈{y}} softmax(z)_j is the
    cross-entropy of y, which ``F.cross_entropy`` computes in a few fused operations instead of the
    partial-label loss's dozen."""
    one_hot = bool(((candidates == 0) | (candidates == 1)).all()) and bool((candidates.sum(1) == 1).all())
    return candidates.argmax(1) if one_hot else None


# exp of an argument below about −87 underflows float32 and, on x86 CPUs, takes a slow path (20 to
# 40 times slower per element here); the non-candidates' log(1e-30) = −69 offset sends most of a
# partial-label row there.
_UNDERFLOW = -87.0


def logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``torch.logsumexp(x, dim)`` without evaluating exp where it underflows: a term below
    e^−87 ≈ 1.6·10⁻³⁸ of the row's largest cannot change a float32 sum that holds that term's 1, so
    it is left out (its gradient, the softmax, is below 10⁻³⁸ too)."""
    top = x.amax(dim, keepdim=True).detach()  # the value does not depend on the shift: no gradient needed
    shifted = x - top
    terms = torch.where(shifted > _UNDERFLOW, shifted.clamp_min(_UNDERFLOW).exp(), torch.zeros((), dtype=x.dtype))
    return (top + terms.sum(dim, keepdim=True).log()).squeeze(dim)
