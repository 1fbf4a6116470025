"""Throughput of the frozen CLIP image encoder: images/second at batch 1 and at a chosen batch.

    python benchmarks/extract.py [--backbone ViT-B-32] [--batch 256] [--n-images 2048] [--device auto]
                                 [--precision auto] [--weights FILE] [--with-decode] [--workers 4]

Why: feature extraction is the one pass over every image that all methods share, and it must be
batched (``cap.sources.feature_cache``). This measures what batching buys on the current device. The encoder
is fed synthetic tensors already on the device, so the number is the model's, not JPEG decoding's
or the disk's; ``--with-decode`` adds an end-to-end run of ``cap.sources.feature_cache.extract_image_features``
over generated JPEGs (decode, preprocess, transfer, forward, cache write).

Without a weights file (``--weights`` or ``$CAP_CLIP_WEIGHTS``) the model is randomly initialised:
throughput does not depend on the weight values. On CUDA the default precision is fp16, as in
the library. Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cap.models.clip import WEIGHTS_ENV, autocast_context, load_clip, resolve_device, resolve_precision
from cap.models.model_config import ModelConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="ViT-B-32", help="open_clip model name")
    parser.add_argument("--batch", type=int, default=256, help="the batch size compared with batch 1")
    parser.add_argument("--n-images", type=int, default=2048, help="images timed per setting (after warm-up)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1 ...")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16", "amp"),
                        help="auto: fp16 on CUDA, fp32 on CPU (as cap.models)")
    parser.add_argument("--weights", default=None, help=f"weights file (default ${WEIGHTS_ENV}; none: random init)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed forward passes per setting")
    parser.add_argument("--with-decode", action="store_true", help="also time extraction over generated JPEGs")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="DataLoader workers for --with-decode")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.n_images < 1 or args.warmup < 0 or args.workers < 0:
        parser.error("--batch and --n-images must be >= 1, --warmup and --workers >= 0")
    return args


def load_model(args: argparse.Namespace, device: torch.device, precision: str):
    """(model, preprocess, tokenizer, config, description of the weights)."""
    import open_clip

    config = ModelConfig(backbone=args.backbone, weights=args.weights, precision=precision, device=str(device),
                         prompt="coop")
    if args.weights or os.environ.get(WEIGHTS_ENV):
        model, preprocess, tokenizer = load_clip(config)
        return model, preprocess, tokenizer, config, f"file {args.weights or os.environ[WEIGHTS_ENV]}"
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(
        config.backbone, pretrained=None, device=device, precision="fp32" if precision == "amp" else precision,
        force_quick_gelu=True)
    model.eval().requires_grad_(False)
    return (model, preprocess, open_clip.get_tokenizer(config.backbone), config,
            "random initialisation (throughput does not depend on weight values)")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def encoder_throughput(model, batch: int, n_images: int, warmup: int, device: torch.device, precision: str) -> dict:
    """Images/second of ``model.encode_image`` on synthetic inputs already on the device."""
    size = model.visual.image_size
    size = size if isinstance(size, tuple) else (size, size)
    dtype = model.visual.conv1.weight.dtype
    images = torch.randn(batch, 3, *size, device=device).to(dtype)
    steps = math.ceil(n_images / batch)
    with torch.inference_mode(), autocast_context(precision, device):
        for _ in range(warmup):
            model.encode_image(images)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            model.encode_image(images)
        synchronize(device)
        seconds = time.perf_counter() - start
    return {"batch": batch, "images": steps * batch, "seconds": seconds, "images_per_s": steps * batch / seconds}


def decode_throughput(model, preprocess, tokenizer, config: ModelConfig, args: argparse.Namespace) -> dict:
    """Images/second of ``extract_image_features`` over generated 320x240 JPEGs (fresh cache)."""
    from PIL import Image

    from cap.sources.feature_cache import extract_image_features
    from cap.models.openclip_backbone import OpenClipBackbone

    backbone = OpenClipBackbone.from_model(model, tokenizer, ["object"], config, preprocess=preprocess)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for k in range(args.n_images):
            pixels = rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
            paths.append(str(Path(folder) / f"{k:06d}.jpg"))
            Image.fromarray(pixels).save(paths[-1], "JPEG", quality=90)
        start = time.perf_counter()
        extract_image_features(backbone, paths, batch_size=args.batch, num_workers=args.workers,
                               cache=Path(folder) / "cache")
        seconds = time.perf_counter() - start
    return {"batch": args.batch, "images": args.n_images, "seconds": seconds, "images_per_s": args.n_images / seconds,
            "workers": args.workers}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    model, preprocess, tokenizer, config, weights = load_model(args, device, precision)
    rows = {"encoder, batch 1": encoder_throughput(model, 1, args.n_images, args.warmup, device, precision),
            f"encoder, batch {args.batch}": encoder_throughput(model, args.batch, args.n_images, args.warmup, device,
                                                               precision)}
    if args.with_decode:
        rows[f"decode + extract, batch {args.batch}"] = decode_throughput(model, preprocess, tokenizer, config, args)
    speedup = rows[f"encoder, batch {args.batch}"]["images_per_s"] / rows["encoder, batch 1"]["images_per_s"]

    print(f"backbone {config.backbone}, {precision} on {device} ({device_name(device)})")
    print(f"weights: {weights}")
    print(f"{'setting':<32}{'images':>8}{'seconds':>10}{'images/s':>12}")
    for name, row in rows.items():
        print(f"{name:<32}{row['images']:>8}{row['seconds']:>10.2f}{row['images_per_s']:>12.1f}")
    print(f"batch {args.batch} / batch 1 throughput: {speedup:.1f}x")
    result = {"backbone": config.backbone, "device": str(device), "device_name": device_name(device),
              "precision": precision, "weights": weights, "settings": rows, "speedup": speedup,
              "torch": torch.__version__, "python": sys.version.split()[0]}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
