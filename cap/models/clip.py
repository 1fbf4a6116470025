"""Loading a frozen open_clip CLIP the way the paper used it, and the zero-shot class prompts.

The paper's numbers come from OpenAI's CLIP, which was trained with QuickGELU; open_clip's plain
"ViT-B-32" config uses nn.GELU, so loading OpenAI weights into it silently changes every feature.
:func:`load_clip` therefore forces QuickGELU whenever ``pretrained == "openai"``.
"""

from __future__ import annotations

import logging
import os
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from typing import Any

import torch
from torch import nn

from cap._torchvision import ensure_torchvision_importable
from cap.errors import CapError, UnknownNameError
from cap.models.model_config import ModelConfig

ensure_torchvision_importable()  # before open_clip imports torchvision: see cap/_torchvision.py

log = logging.getLogger(__name__)

WEIGHTS_ENV = "CAP_CLIP_WEIGHTS"
# OpenAI's TorchScript archives carry these non-weight entries in their state dict.
_JIT_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


class WeightsError(CapError):
    """A weights file that cannot be read or does not fit the configured backbone."""


def prompt_strings(classnames: Sequence[str], template: str, template_bug: bool) -> list[str]:
    """The zero-shot class prompts.

    ``template_bug=True`` reproduces the official code (inherited from Menghini et al.), which
    concatenates instead of formatting: "a photo of a {}" + "forest" -> "a photo of a {}forest".
    Keep it to get the official pseudolabels; ``False`` gives ``template.format(name)``."""
    if template_bug:
        return [f"{template}{name}" for name in classnames]
    return [template.format(name) for name in classnames]


def resolve_device(device: str) -> torch.device:
    """"auto" -> CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" -> fp16 on CUDA (the official ``PREC: fp16``), fp32 elsewhere (CPU fp16 is slow and lossy)."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    return precision


def autocast_context(precision: str, device: torch.device) -> AbstractContextManager:
    """torch.autocast for "amp" (fp16 on CUDA, bf16 on CPU, where fp16 autocast is poorly supported)."""
    if precision != "amp":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


def resolve_weights(config: ModelConfig) -> str | None:
    """The local weights file to load (config, then ``CAP_CLIP_WEIGHTS``), or None to download.

    A path that does not exist is an error rather than a silent download: the user meant that file."""
    path, source = config.weights, "ModelConfig.weights"
    if path is None and os.environ.get(WEIGHTS_ENV):
        path, source = os.environ[WEIGHTS_ENV], f"environment variable {WEIGHTS_ENV}"
    if path is not None and not os.path.isfile(path):
        raise CapError(
            f"CLIP weights file {path!r} (from {source}) does not exist. Point ModelConfig.weights or "
            f"{WEIGHTS_ENV} at an existing weights file of {config.backbone}, or unset both to download "
            f"'{config.pretrained}' weights through open_clip.")
    return path


def freeze(model: nn.Module) -> nn.Module:
    """No CLIP weight is ever trained: only prompts and adapters are (spec 1.3)."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def load_clip(config: ModelConfig) -> tuple[nn.Module, Any, Any]:
    """(frozen open_clip CLIP, evaluation preprocess, tokenizer) for ``config``.

    Weights come from a local file (``config.weights`` or ``CAP_CLIP_WEIGHTS``) or are downloaded
    by open_clip for the ``pretrained`` tag. Precision and device are applied here."""
    import open_clip

    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    weights = resolve_weights(config)
    tag_cfg = open_clip.get_pretrained_cfg(config.backbone, config.pretrained)
    if weights is None and not tag_cfg:
        raise UnknownNameError(
            f"pretrained tag of {config.backbone} (or set ModelConfig.weights / {WEIGHTS_ENV} to a local file)",
            config.pretrained, open_clip.list_pretrained_tags_by_model(config.backbone))
    create = partial(open_clip.create_model_and_transforms, config.backbone, device=device,
                     precision="fp32" if precision == "amp" else precision,
                     force_quick_gelu=config.pretrained == "openai")
    if weights is not None:
        with _no_random_init_warning():
            model, _, preprocess = create(pretrained=None, image_mean=tag_cfg.get("mean"), image_std=tag_cfg.get("std"))
        load_weights(model, weights, config.backbone)
    else:
        try:
            model, _, preprocess = create(pretrained=config.pretrained)
        except RuntimeError as err:  # open_clip reports failed downloads as RuntimeError
            raise CapError(
                f"could not get '{config.pretrained}' weights for {config.backbone} through open_clip ({err}). "
                f"Without network access, download them elsewhere and set ModelConfig.weights or {WEIGHTS_ENV} "
                f"to the file.") from err
    log.info("loaded %s (%s weights%s) on %s in %s", config.backbone, config.pretrained,
             f" from {weights}" if weights else "", device, precision)
    return freeze(model), preprocess, open_clip.get_tokenizer(config.backbone)


@contextmanager
def _no_random_init_warning() -> Iterator[None]:
    """Hide open_clip's "initialized randomly" warning: we load the weights file right after."""
    def keep(record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()

    root = logging.getLogger()  # open_clip logs through the root logger
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _is_torchscript(path: str) -> bool:
    """OpenAI's original ``ViT-B-32.pt`` is a TorchScript archive, which ``torch.load`` refuses
    with ``weights_only=True``; ``torch.jit.load`` reads it without unpickling arbitrary code."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def _torchscript_state(path: str) -> dict[str, torch.Tensor]:
    """torch.jit.load is deprecated in torch 2.13 but remains the one safe reader of these archives."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`torch.jit.load` is deprecated", category=DeprecationWarning)
        return torch.jit.load(path, map_location="cpu").state_dict()


def _describe_file(path: str) -> str:
    """What a file that is not readable weights looks like: empty, text, a damaged archive, other bytes."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(64)
    if size == 0:
        return "an empty file (0 bytes)"
    if head.startswith(b"PK"):
        return f"a damaged or truncated zip archive ({size} bytes)"
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return f"a text file ({size} bytes, starting {head.decode()[:40]!r})"
    return f"{size} bytes of unrecognised data"


def _weights_help(model: nn.Module, backbone: str) -> str:
    """What a weights file of ``backbone`` is, and where real ones come from."""
    import open_clip

    megabytes = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e6
    source = open_clip.get_pretrained_cfg(backbone, "openai") or {}
    origin = source.get("url") or (f"the Hugging Face hub ({source['hf_hub']})" if source.get("hf_hub") else None)
    return (f"expected the weights of {backbone} (about {megabytes:.0f} MB): a torch state dict, an open_clip "
            f"checkpoint, a .safetensors file or OpenAI's TorchScript archive. Real weights: unset "
            f"ModelConfig.weights and {WEIGHTS_ENV} to let open_clip download them (needs network)"
            + (f", or download {origin} elsewhere and point {WEIGHTS_ENV} at it" if origin else "")
            + " (README: Running on real data)")


def _read_state(path: str, model: nn.Module, backbone: str) -> dict:
    from open_clip.factory import load_state_dict

    try:
        state = _torchscript_state(path) if _is_torchscript(path) else load_state_dict(path)
    except Exception as err:  # any failure to read: empty, truncated, text, a pickle of something else
        raise WeightsError(f"weights file {path!r} is {_describe_file(path)}, not readable weights "
                           f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'}); "
                           f"{_weights_help(model, backbone)}") from None
    if not isinstance(state, dict):
        raise WeightsError(f"weights file {path!r} holds a {type(state).__name__}, not a state dict; "
                           f"{_weights_help(model, backbone)}")
    return state


def load_weights(model: nn.Module, path: str, backbone: str) -> None:
    """Load a weights file into ``model`` strictly; a file that cannot be read, or does not fit, is a
    WeightsError saying what the file is, what was expected and where real weights come from.

    Reads what open_clip reads (state dict, ``{"state_dict": ...}`` checkpoint, safetensors,
    OpenAI TorchScript archive) but, unlike ``open_clip.load_checkpoint``, never resizes
    positional embeddings: weights of another backbone must fail, not be interpolated."""
    state = _read_state(path, model, backbone)
    try:
        model.load_state_dict({k: v for k, v in state.items() if k not in _JIT_EXTRA_KEYS}, strict=True)
    except (RuntimeError, KeyError, ValueError, AttributeError) as err:
        detail = " ".join(str(err).split())[:400]
        raise WeightsError(
            f"weights file {path!r} does not fit backbone {backbone!r}: {detail}. Use the weights of "
            f"{backbone}, or set ModelConfig.backbone to the model the file was saved from.") from err
