"""Learnable prompts: MaPLe (the paper's, spec 1.3) and CoOp (the baselines' textual prompts).

Both share one text layout: every class prompt is ``"X ... X <fixed words> <classname>."`` where
each "X" is a one-token placeholder whose embedding is replaced by a learnable context vector,
the same for all classes. For MaPLe with ``ctx_init="a photo of a"`` and ``n_ctx=2`` this is
``"X X of a forest."``, exactly the official ``[ctx1][ctx2] of a {classname}.``: the official code
tokenises "a photo of a forest." and overwrites token positions 1..n_ctx, which gives the same
token positions because CLIP's BPE works word by word and "a", "photo" and "X" are one token each.

The prompt modules only hold parameters and build inputs; the forward passes through CLIP live in
:mod:`cap.models.openclip_backbone`. Learnable tensors are kept in fp32 whatever CLIP's precision
(the official code updates fp16 prompts directly, which loses small SGD updates); the backbone
casts them to CLIP's dtype on the way in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import skip_init

from cap.errors import ParameterError

PLACEHOLDER = "X"
INIT_STD = 0.02  # CoOp's and MaPLe's std for randomly initialised context vectors

Tokenizer = Callable[[list[str]], torch.Tensor]


def _n_tokens(tokenizer: Tokenizer, text: str) -> int:
    """BPE tokens of ``text`` without start/end tokens (padding id is 0 in CLIP's tokenizer)."""
    return int((tokenizer([text])[0] != 0).sum()) - 2


@dataclass(frozen=True)
class PromptLayout:
    """Token layout of the learnable class prompts.

    texts: one string per class, "X" marking the learnable context positions 1..n_ctx.
    tokens: (C, L) token ids of ``texts``. The end token has the largest id, so ``argmax`` finds
        it; every prompt's end token sits n_ctx + len(fixed words) positions after the bare
        "<classname>." one.
    init_tokens: (1, L) token ids whose embeddings at positions 1..n_ctx initialise the context
        vectors, or None for random initialisation.
    """

    texts: tuple[str, ...]
    tokens: torch.Tensor
    n_ctx: int
    init_tokens: torch.Tensor | None

    @property
    def eot(self) -> torch.Tensor:
        """(C,) position of each prompt's end-of-text token: where CLIP pools the text feature."""
        return self.tokens.argmax(dim=-1)

    @property
    def text_length(self) -> int:
        """Positions up to the last end token (the longest prompt's end + 1): all that the causal
        text transformer needs to compute every prompt's pooled feature."""
        return int(self.eot.max()) + 1


def build_layout(tokenizer: Tokenizer, classnames: Sequence[str], n_ctx: int, ctx_init: str) -> PromptLayout:
    """Place ``n_ctx`` learnable tokens before the remaining words of ``ctx_init`` and the class name.

    With ``ctx_init`` the first ``n_ctx`` words become the learnable tokens (initialised from their
    embeddings) and the other words stay fixed text; each of those first words must be one BPE
    token so that it maps to exactly one context vector. An empty ``ctx_init`` gives ``n_ctx``
    randomly initialised tokens (CoOp's and MaPLe's generic initialisation)."""
    words = ctx_init.split()
    if words and n_ctx > len(words):
        raise ParameterError(f"n_ctx={n_ctx} context tokens need at least {n_ctx} words in ctx_init "
                             f"{ctx_init!r}; use a longer ctx_init or ctx_init='' for random initialisation")
    multi_token = [w for w in words[:n_ctx] if _n_tokens(tokenizer, w) != 1]
    if multi_token:
        raise ParameterError(f"ctx_init words {multi_token} are several BPE tokens each; the first n_ctx={n_ctx} "
                             f"words of ctx_init must be single tokens (e.g. 'a photo of a')")
    prefix = " ".join([PLACEHOLDER] * n_ctx + words[n_ctx:])
    texts = tuple(f"{prefix} {name}." for name in classnames)
    init_tokens = tokenizer([" ".join(words[:n_ctx])]) if words else None
    return PromptLayout(texts=texts, tokens=tokenizer(list(texts)), n_ctx=n_ctx, init_tokens=init_tokens)


class _ContextPrompts(nn.Module):
    """The shared text context: CoOp's whole prompt and MaPLe's shallow text prompt."""

    def __init__(self, layout: PromptLayout, token_embedding: nn.Embedding):
        super().__init__()
        self.layout = layout
        self.n_ctx = layout.n_ctx
        weight = token_embedding.weight
        with torch.no_grad():
            embeds = token_embedding(layout.tokens.to(weight.device)).float()
            init = (None if layout.init_tokens is None else
                    token_embedding(layout.init_tokens.to(weight.device))[0, 1:1 + self.n_ctx].float())
        # Frozen embeddings around the context (start token; class name, ".", end token, padding).
        self.register_buffer("token_prefix", embeds[:, :1], persistent=False)
        self.register_buffer("token_suffix", embeds[:, 1 + self.n_ctx:], persistent=False)
        self.register_buffer("eot", layout.eot.to(weight.device), persistent=False)
        self.text_length = layout.text_length
        self.register_buffer("ctx_init", init, persistent=False)
        self.ctx = nn.Parameter(torch.empty(self.n_ctx, weight.shape[1], device=weight.device))

    @property
    def n_classes(self) -> int:
        return self.token_prefix.shape[0]

    def reset_parameters(self) -> None:
        """Context from ``ctx_init`` embeddings if given, else N(0, 0.02²) drawn from torch's RNG."""
        with torch.no_grad():
            if self.ctx_init is not None:
                self.ctx.copy_(self.ctx_init)
            else:
                nn.init.normal_(self.ctx, std=INIT_STD)

    def text_embeddings(self) -> torch.Tensor:
        """(C, L, width) token embeddings of all class prompts with the context in place."""
        ctx = self.ctx.unsqueeze(0).expand(self.n_classes, -1, -1)
        return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)

    def deep_text_prompts(self) -> list[torch.Tensor]:
        """Text prompts replacing the context tokens at layers 1, 2, ... (none here)."""
        return []

    def visual_prompts(self) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """(prompt tokens appended at layer 0 or None, prompts replacing them at layers 1, 2, ...)."""
        return None, []


class CoOpPrompts(_ContextPrompts):
    """CoOp: ``n_ctx`` learnable context vectors before the class name; the image encoder is untouched."""

    def __init__(self, layout: PromptLayout, token_embedding: nn.Embedding):
        super().__init__(layout, token_embedding)
        self.reset_parameters()


class MaPLePrompts(_ContextPrompts):
    """MaPLe: shallow text context plus ``depth - 1`` deeper text prompts, each mapped to a visual prompt.

    Layer 0: the text context replaces positions 1..n_ctx of the token embeddings and
    ``proj(ctx)`` is appended to the image tokens. Layer k = 1..depth-1: ``deep_text[k-1]``
    replaces the text context tokens and ``deep_proj[k-1](deep_text[k-1])`` the visual ones.
    ``depth = 1`` is shallow MaPLe."""

    def __init__(self, layout: PromptLayout, token_embedding: nn.Embedding, depth: int, vision_width: int):
        super().__init__(layout, token_embedding)
        width, device = self.ctx.shape[1], self.ctx.device
        # skip_init: reset_parameters() is the only place that draws random numbers, so that a reset
        # after torch.manual_seed(s) reproduces a construction after torch.manual_seed(s).
        self.proj = skip_init(nn.Linear, width, vision_width, device=device)
        self.deep_text = nn.ParameterList(
            [nn.Parameter(torch.empty(self.n_ctx, width, device=device)) for _ in range(depth - 1)])
        self.deep_proj = nn.ModuleList(
            [skip_init(nn.Linear, width, vision_width, device=device) for _ in range(depth - 1)])
        self.reset_parameters()

    @property
    def depth(self) -> int:
        return len(self.deep_text) + 1

    def reset_parameters(self) -> None:
        """As the official code: deep text prompts N(0, 0.02²), projections nn.Linear's default init."""
        super().reset_parameters()
        with torch.no_grad():
            for prompt in self.deep_text:
                nn.init.normal_(prompt, std=INIT_STD)
        for linear in (self.proj, *self.deep_proj):
            linear.reset_parameters()

    def deep_text_prompts(self) -> list[torch.Tensor]:
        return list(self.deep_text)

    def visual_prompts(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.proj(self.ctx), [proj(p) for proj, p in zip(self.deep_proj, self.deep_text)]


def make_prompts(kind: str, classnames: Sequence[str], token_embedding: nn.Embedding, tokenizer: Tokenizer, *,
                 n_ctx: int, ctx_init: str, depth: int = 1, vision_width: int = 0) -> CoOpPrompts | MaPLePrompts:
    """Build the prompt module ``kind`` ("maple" or "coop") for ``classnames``."""
    layout = build_layout(tokenizer, classnames, n_ctx, ctx_init)
    if kind == "maple":
        return MaPLePrompts(layout, token_embedding, depth, vision_width)
    return CoOpPrompts(layout, token_embedding)
