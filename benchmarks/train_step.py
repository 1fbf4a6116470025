"""Milliseconds per CAP training step on the open_clip backend, and peak memory.

    python benchmarks/train_step.py [--backbone ViT-B-32] [--batch 32] [--classes 100] [--steps 20]
                                    [--paradigm ul|ssl] [--depth 8] [--precision auto] [--device auto]
                                    [--weights FILE] [--warmup 2]
    python benchmarks/train_step.py --sim flowers102 [--paradigm ul] [--sim-epochs 50]
    python benchmarks/train_step.py --sim flowers102 --feature-steps 200 [--paradigm ul]

A step is exactly what ``CapTrainer.train_epoch`` does per iteration, because that method runs it:
one text-encoder pass through the MaPLe prompts shared by all streams, the weak view of the
unlabelled batch under ``no_grad`` (pseudolabels through the main adapter), one image pass for
the trained streams (D_PL, labelled in SSL, strong view), the three adapters, the margin
cross-entropy terms, one backward, both SGD steps and both scheduler steps, plus the per-step
bookkeeping (σ counts, draws). The trainer is fed by a stand-in source that returns random
input tensors already on the device, so decoding, augmentation and the host-to-device copy are
not counted (``benchmarks/extract.py --with-decode`` measures decoding). τ is 0 so every
unlabelled draw trains the pseudo adapter, and a fixed non-zero margin matrix is used: the most
expensive case, although the cost hardly depends on either.

Without a weights file (``--weights`` or ``$CAP_CLIP_WEIGHTS``) CLIP is randomly initialised:
the time of a step does not depend on the weight values. Precision follows the library: on CUDA
"auto" is fp16 weights (the official ``PREC: fp16``), on CPU fp32; peak memory is
``torch.cuda.max_memory_allocated`` over the timed steps on CUDA, the process's maximum resident
set size (``getrusage``, model loading included) on CPU.

``--sim PRESET`` instead times a whole CAP run (``--sim-epochs``, default the official 50 × 50
steps) on the feature backend, the concept simulator, through ``cap.experiments.runs.run``.

Prints a short summary and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import cap  # noqa: F401  (before open_clip / torchvision: CPU torchvision fix)
import numpy as np
import torch

from cap.config import make_config, resolve
from cap.data.splits import make_split
from cap.methods.cap import CapTrainer
from cap.models.clip import WEIGHTS_ENV, resolve_device, resolve_precision
from cap.models.model_config import ModelConfig
from cap.sources.source import Source


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="ViT-B-32", help="open_clip model name")
    parser.add_argument("--batch", type=int, default=32, help="batch size of each stream (official 32)")
    parser.add_argument("--classes", type=int, default=100, help="number of classes (text-encoder pass size)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--paradigm", default="ul", choices=("ul", "ssl"), help="ssl adds the labelled stream")
    parser.add_argument("--depth", type=int, default=8, help="MaPLe prompt depth (official 8)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16", "amp"),
                        help="auto: fp16 on CUDA, fp32 on CPU (as cap.models)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1 ...")
    parser.add_argument("--weights", default=None, help=f"weights file (default ${WEIGHTS_ENV}; none: random init)")
    parser.add_argument("--sim", default=None, metavar="PRESET",
                        help="time a full CAP run on the simulator preset instead (e.g. flowers102)")
    parser.add_argument("--sim-epochs", type=int, default=50, help="epochs of the --sim run (official 50)")
    parser.add_argument("--feature-steps", type=int, default=0, metavar="N",
                        help="with --sim: time N CAP steps and N baseline steps on the feature backend instead")
    args = parser.parse_args(argv)
    if min(args.batch, args.classes, args.steps, args.depth, args.sim_epochs) < 1 or \
            min(args.warmup, args.feature_steps) < 0:
        parser.error("--batch, --classes, --steps, --depth and --sim-epochs must be >= 1, --warmup and "
                     "--feature-steps >= 0")
    return args


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


class RandomSource(Source):
    """A stand-in source: ``16 × C`` training images whose every batch is the same random tensor on
    the device (the step's cost does not depend on pixel values)."""

    PER_CLASS = 16

    def __init__(self, n_classes: int, paradigm: str, image_size: tuple[int, int], dim: int, device: torch.device):
        rng = np.random.default_rng(0)
        labels = np.repeat(np.arange(n_classes), self.PER_CLASS)
        unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
        super().__init__(classnames=[f"class {c}" for c in range(n_classes)], train_labels=labels,
                         test_labels=np.zeros(0, dtype=np.int64), split=make_split(paradigm, labels, n_classes),
                         zero_shot_image=unit(rng.normal(size=(len(labels), dim))).astype(np.float32),
                         zero_shot_text=unit(rng.normal(size=(n_classes, dim))).astype(np.float32),
                         logit_scale=100.0)
        self.image_size, self.device = image_size, device
        self._images: dict[int, torch.Tensor] = {}

    def _batch(self, n: int) -> torch.Tensor:
        if n not in self._images:
            generator = torch.Generator().manual_seed(n)
            self._images[n] = torch.randn(n, 3, *self.image_size, generator=generator).to(self.device)
        return self._images[n]

    def batches(self, order, batch_size, views, generator, drop_last=True):
        stop = len(order) - batch_size + 1 if drop_last else len(order)
        for start in range(0, max(stop, 0), batch_size):
            index = torch.as_tensor(order[start:start + batch_size])
            yield {"index": index} | {view: self._batch(len(index)) for view in views}


def load_backbone(args: argparse.Namespace, classnames: list[str], device: torch.device, precision: str):
    """(MaPLe OpenClipBackbone, description of the weights)."""
    import open_clip

    from cap.models.openclip_backbone import OpenClipBackbone

    config = ModelConfig(backbone=args.backbone, weights=args.weights, precision=precision, device=str(device),
                         prompt="maple", prompt_depth=args.depth)
    if args.weights or os.environ.get(WEIGHTS_ENV):
        return OpenClipBackbone(config, classnames), f"file {args.weights or os.environ[WEIGHTS_ENV]}"
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(
        config.backbone, pretrained=None, device=device, precision="fp32" if precision == "amp" else precision,
        force_quick_gelu=True)
    backbone = OpenClipBackbone.from_model(model, open_clip.get_tokenizer(config.backbone), classnames, config,
                                           preprocess=preprocess)
    return backbone, "random initialisation (the time of a step does not depend on weight values)"


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated"
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kilobytes / (2**20 if sys.platform == "darwin" else 2**10), "max resident set size"


def time_steps(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    probe = ModelConfig(backbone=args.backbone, prompt="maple", prompt_depth=args.depth)  # validates the depth
    import open_clip

    cfg = open_clip.get_model_config(probe.backbone)
    size = cfg["vision_cfg"]["image_size"]
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    source = RandomSource(args.classes, args.paradigm, size, cfg["embed_dim"], device)
    backbone, weights = load_backbone(args, source.classnames, device, precision)
    config = resolve(make_config(dataset="flowers102", paradigm=args.paradigm, backend="openclip", tau=0.0,
                                 batch_size=args.batch, iters_per_epoch=args.steps, backbone=args.backbone,
                                 prompt_depth=args.depth))
    trainer = CapTrainer(config, source, backbone, Path(tempfile.gettempdir()), device)
    board = {c: np.flatnonzero(source.train_labels == c).tolist() for c in range(args.classes)}
    margin = 6.0 * torch.rand(args.classes, args.classes, generator=torch.Generator().manual_seed(0))
    margin = margin.fill_diagonal_(0).to(device)

    def epoch(steps: int, index: int) -> float:
        trainer.config = config.replace(iters_per_epoch=steps)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        trainer.train_epoch(index, board, margin)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    if args.warmup:
        epoch(args.warmup, 0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = epoch(args.steps, 1)
    memory, memory_kind = peak_memory_mb(device)
    streams = 3 if args.paradigm == "ssl" else 2
    return {
        "mode": "step", "backbone": probe.backbone, "device": str(device), "device_name": device_name(device),
        "precision": precision, "weights": weights, "paradigm": args.paradigm, "batch": args.batch,
        "classes": args.classes, "prompt_depth": args.depth, "steps": args.steps,
        "trained_images_per_step": streams * args.batch, "ms_per_step": 1000 * seconds / args.steps,
        "peak_memory_mb": memory, "peak_memory_kind": memory_kind,
        "prompt_parameters": sum(p.numel() for p in backbone.prompt_parameters()),
        "adapter_parameters": sum(p.numel() for p in trainer.adapters.parameters()),
        "torch": torch.__version__, "python": sys.version.split()[0],
    }


def time_sim(args: argparse.Namespace) -> dict:
    from cap.experiments.records import read_current_record as load
    from cap.experiments.runs import run

    config = make_config(dataset=args.sim, paradigm=args.paradigm, backend="sim", method="cap", epochs=args.sim_epochs)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        record = load(run(config, folder, force=True))
        seconds = time.perf_counter() - start
    results = record["results"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {"mode": "sim", "preset": record["config"]["dataset"], "paradigm": args.paradigm,
            "epochs": args.sim_epochs, "steps": args.sim_epochs * record["config"]["iters_per_epoch"],
            "seconds": seconds, "train_seconds": results["train_seconds"], "headline": results["headline"],
            "device": device, "device_name": device_name(torch.device(device)),
            "torch": torch.__version__, "python": sys.version.split()[0]}


def _timed(function) -> tuple[float, float]:
    """(process CPU seconds, wall seconds) of ``function()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    function()
    return time.process_time() - cpu, time.perf_counter() - wall


def time_feature_steps(args: argparse.Namespace) -> dict:
    """Steps per second on the feature backend (simulator preset): CAP's step
    (``CapTrainer.train_epoch``, the one trainer of every backend) and a baseline step."""
    from cap.methods.baselines import fit
    from cap.sources import make_source

    torch.set_num_threads(1)
    device = torch.device("cpu")
    config = resolve(make_config(dataset=args.sim, paradigm=args.paradigm, backend="sim", method="cap",
                                 iters_per_epoch=args.feature_steps, sim_train_per_class=32))
    source = make_source(config)

    single = CapTrainer(config, source, source.make_backbone(config, "maple", device), Path(tempfile.gettempdir()),
                        device)
    board, _ = single.initial_dpl()
    margin = single.margin(board, np.arange(source.n_classes) + 1.0)  # a non-zero margin on every term
    single.train_epoch(0, board, margin)  # warm-up: allocator, first-call costs
    cap_cpu, cap_wall = _timed(lambda: single.train_epoch(1, board, margin))
    baseline = config.replace(method="grip")
    backbone = source.make_backbone(baseline, "coop", device)
    index = np.asarray(source.split.unlabelled, dtype=np.int64)
    targets = torch.nn.functional.one_hot(torch.as_tensor(source.train_labels[index]), source.n_classes).float()
    per_epoch = max(1, len(index) // min(baseline.baseline_batch_size, len(index)))
    epochs = -(-args.feature_steps // per_epoch)
    fit(backbone, source, baseline.replace(baseline_epochs=1), index, targets, 1)  # warm-up
    fit_cpu, fit_wall = _timed(lambda: fit(backbone, source, baseline.replace(baseline_epochs=epochs), index, targets, 2))
    fit_steps = epochs * per_epoch
    return {"mode": "feature_steps", "preset": config.dataset, "paradigm": args.paradigm, "classes": source.n_classes,
            "dim": int(source.zero_shot_image.shape[1]), "cap_steps": args.feature_steps,
            "cap_steps_per_s_cpu": args.feature_steps / cap_cpu, "cap_steps_per_s_wall": args.feature_steps / cap_wall,
            "baseline_steps": fit_steps, "baseline_steps_per_s_cpu": fit_steps / fit_cpu,
            "baseline_steps_per_s_wall": fit_steps / fit_wall, "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": sys.version.split()[0]}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.sim and args.feature_steps:
        result = time_feature_steps(args)
        print(f"feature backend, simulator preset {result['preset']} ({result['paradigm']}, {result['classes']} classes, "
              f"dimension {result['dim']}), {result['torch_threads']} torch thread")
        for kind, title in (("cap", "CAP step (CapTrainer.step)"), ("baseline", "baseline step")):
            print(f"{title}: {result[kind + '_steps_per_s_cpu']:.0f} steps/s of CPU time, "
                  f"{result[kind + '_steps_per_s_wall']:.0f} steps/s wall")
    elif args.sim:
        result = time_sim(args)
        print(f"CAP on the simulator preset {result['preset']} ({result['paradigm']}), {result['epochs']} epochs "
              f"({result['steps']} steps) on {result['device_name']}: {result['seconds']:.1f} s in all, "
              f"{result['train_seconds']:.1f} s training; headline {result['headline']:.2f} (simulation)")
    else:
        result = time_steps(args)
        print(f"CAP step, {result['backbone']} ({result['precision']}, MaPLe depth {result['prompt_depth']}) on "
              f"{result['device']} ({result['device_name']})")
        print(f"weights: {result['weights']}")
        print(f"{result['paradigm']}: batch {result['batch']} per stream ({result['trained_images_per_step']} images "
              f"trained + {result['batch']} weak), {result['classes']} classes")
        print(f"{result['ms_per_step']:.1f} ms per step over {result['steps']} steps; peak memory "
              f"{result['peak_memory_mb']:.0f} MiB ({result['peak_memory_kind']})")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
