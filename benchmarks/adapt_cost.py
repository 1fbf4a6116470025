"""What `cap adapt` costs: measured end to end on the tiny test CLIP, and counted in FLOPs for a real
backbone (ViT-B/32 by default) to project its time.

    python benchmarks/adapt_cost.py tiny [--classes 10] [--per-class 40] [--epochs 2] [--iters 50]
    python benchmarks/adapt_cost.py flops [--backbone ViT-B-32] [--classes 10]

``tiny`` writes a generated folder (``--classes`` × ``--per-class`` 64×64 JPEGs, a tenth of them
labelled), registers the tiny CLIP of ``tests/tiny_clip.py`` and runs ``cap adapt`` on it with
``--epochs`` × ``--iters`` steps of batch 32 (the paper's batch; the paper's schedule is 50 × 50),
without the report notebook, then ``cap predict`` on the folder; it prints the seconds of each
phase and the seconds per training step.

``flops`` counts (``torch.utils.flop_counter``) the floating-point operations of one CAP training
step (UL, batch b per stream, ``--classes`` classes, MaPLe depth 8, through ``CapTrainer.step``)
at b = 1 and 2 on the CPU with random weights (the count does not depend on them), fits
a + b·per_image and extrapolates to the paper's b = 32; and of one frozen image-encoder forward
(extraction, prediction). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cap  # noqa: F401  (before open_clip / torchvision: CPU torchvision fix)
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _folder(root: Path, classes: int, per_class: int) -> tuple[Path, Path, Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        colour = rng.integers(0, 256, 3)
        for k in range(per_class):
            labelled = k < per_class // 10
            path = root / ("labelled" if labelled else "images") / f"class {c}" / f"{k}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = np.clip(colour + rng.normal(0, 30, (64, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(path)
    (root / "classes.txt").write_text("".join(f"class {c}\n" for c in range(classes)))
    return root / "images", root / "classes.txt", root / "labelled"


def tiny(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_clip import TINY_B, register_tiny_weights

    from cap.adapt.adaptation import AdaptRequest, adapt
    from cap.adapt.prediction import predict_folder

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        weights = str(register_tiny_weights(root)[TINY_B])
        images, classnames, labelled = _folder(root, args.classes, args.per_class)
        settings = {"backbone": TINY_B, "weights": weights, "prompt_depth": 3, "epochs": args.epochs,
                    "iters_per_epoch": args.iters}
        request = AdaptRequest(str(images), str(classnames), str(root / "out"), labelled=str(labelled),
                               settings=settings, workers=args.workers, cache=str(root / "cache"), report=False)
        done = adapt(request)
        started = time.perf_counter()
        predicted = predict_folder(root / "out" / "classifier.pt", images, root / "p.csv", workers=args.workers)
        predict = time.perf_counter() - started
    steps = args.epochs * args.iters
    return {"mode": "tiny", "images": args.classes * args.per_class, "classes": args.classes, "steps": steps,
            "seconds": done["seconds"], "seconds_per_step": done["seconds"]["train"] / steps,
            "predict_seconds": predict, "predicted": predicted["n"], "threads": torch.get_num_threads()}


def _step_flops(trainer, source, batch: int, board: dict, margin) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    trainer.config = trainer.config.replace(batch_size=batch, iters_per_epoch=1)
    (step,) = list(trainer.epoch_batches(0, board))
    with FlopCounterMode(display=False) as counter:
        trainer.step(step, margin)
    return counter.get_total_flops()


def flops(args: argparse.Namespace) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    sys.path.insert(0, str(ROOT))
    from benchmarks.train_step import RandomSource, load_backbone
    from cap.config import make_config, resolve
    from cap.methods.cap import CapTrainer

    device = torch.device("cpu")
    source = RandomSource(args.classes, "ul", (224, 224), 512, device)
    backbone, _ = load_backbone(argparse.Namespace(backbone=args.backbone, weights=None, depth=8), source.classnames,
                                device, "fp32")
    config = resolve(make_config(dataset="resisc45", backend="openclip", tau=0.0, backbone=args.backbone))
    trainer = CapTrainer(config, source, backbone, Path(tempfile.gettempdir()), device)
    board = {c: np.flatnonzero(source.train_labels == c).tolist() for c in range(args.classes)}
    margin = torch.rand(args.classes, args.classes).fill_diagonal_(0)
    one, two = (_step_flops(trainer, source, b, board, margin) for b in (1, 2))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        backbone.zero_shot_image(torch.randn(1, 3, 224, 224))
    per_image = two - one
    return {"mode": "flops", "backbone": args.backbone, "classes": args.classes, "step_flops_b1": one,
            "step_flops_b2": two, "step_flops_per_batch_image": per_image,
            "step_flops_b32": one + 31 * per_image, "frozen_forward_flops_per_image": counter.get_total_flops()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("tiny", "flops"))
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--backbone", default="ViT-B-32")
    args = parser.parse_args(argv)
    result = tiny(args) if args.mode == "tiny" else flops(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
