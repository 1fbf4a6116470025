"""Speed of the official CAP code against the project's: one CAP iteration and zero-shot extraction.

    python benchmarks/official_speed.py --official PATH [--official-python PY] [--project-python PY]
                                        [--classes 10 200] [--steps 3] [--warmup 1] [--rounds 1]
                                        [--images 64] [--device cpu] [--before-root CHECKOUT]
    python benchmarks/official_speed.py --side official|project --task step|extract --official PATH
                                        [--classes N] [--steps S] [--warmup W] [--weights FILE]

``PATH`` is a work tree of github.com/Noahwangyuchen/CAP; nothing of it is copied here, its functions
are imported from that path and called. Both codes run on the same seeded ViT-B/32 weights
(``benchmarks/official_weights.py``, written once as a TorchScript archive to ``--weights``, default
``$TMPDIR/cap-official-speed/ViT-B-32.pt``; times do not depend on the weight values), fp32 on
CPU, with torch's default number of threads.

What is timed, in the process that runs it (warm-up excluded; wall time, ``time.perf_counter``, and
the process's CPU time, ``time.process_time``, which other jobs on a shared machine move less; a
CUDA synchronisation before each reading on a GPU):

* ``step``: one CAP iteration, UL, batch 32 per stream (``--batch``), MaPLe depth 8, τ = 0 (every
  draw trains the pseudo adapter) and one fixed non-zero margin matrix (the per-epoch margin is
  outside the iteration in both codes). Official: ``TextualFPL._train_epoch`` with
  ``ITER_PER_EPOCH = warm-up + steps`` on in-memory batches, ``compute_margin`` returning the fixed
  margin; an iteration ends at its ``update_scheduler`` call, so each is timed separately. It
  runs the model once per stream (D_PL, weak view, strong view), each time re-encoding every class
  prompt with gradients. Project: ``CapTrainer.step`` on the same batch sizes: one text pass shared
  by the streams, the weak view without gradients, one image pass for D_PL and the strong view.
  Class names: EuroSAT's 10 and CUB's 200 (``cap/data/classnames/``; other counts repeat CUB's).
* ``extract``: zero-shot image features of ``--images`` generated 320x240 JPEGs, decoding
  included. Official: ``compute_pseudo_labels`` as its pseudolabel code calls it, one image per
  forward; the timed part is its loop over the images (its one text pass and its pickle write
  are outside). Project: ``cap.sources.feature_cache.extract_image_features`` (batch
  ``--extract-batch``, ``--workers`` decoding processes, a fresh cache each repetition). Each of
  ``--steps`` repetitions gives one images/s figure.

The official side needs what the official functions import (the pip ``clip`` package, named
``openai-clip``, ``setuptools<81``, accelerate, pandas, scipy, scikit-learn) and the shims of
``benchmarks/official_fixture.py`` (``LambdaLR`` without ``verbose``, ``clip._download`` to the local
file, a CPU ``extract_features``, a ``.module`` wrapper, ``Tensor.half`` as the identity in fp32);
the project side needs the project's environment (open_clip). They may be two virtual
environments: ``--official-python /tmp/offvenv/bin/python`` (see ``official_fixture.py`` for how it
was made) and ``--project-python .venv/bin/python`` (default: this interpreter for both, enough
when one environment imports both codes).

Without ``--side`` the script measures both codes in one interleaved run: every round runs, for
each setting, the official process and then the project one (``--before-root``: also the project
from another checkout, e.g. ``git worktree add /tmp/cap-before HEAD~1``, to measure a change), and
prints per setting the best (least time, highest rate) and the median over every timed iteration or
repetition of every round, the speed-ups (official time / project time, project images/s /
official images/s) of the best values, of the medians and of the CPU-time medians, then one JSON
line. With ``--side``
it measures one code in this process and prints one JSON line (for ``farm-bench`` or scripts).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSNAMES = ROOT / "cap" / "data" / "classnames"
DEFAULT_WEIGHTS = Path(tempfile.gettempdir()) / "cap-official-speed" / "ViT-B-32.pt"
MARGIN_SEED, MARGIN_MAX = 0, 6.0
TEMPLATE = "a photo of a {}"  # the official EuroSAT template: only the text pass of `extract` uses it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, type=Path, help="work tree of the official CAP repository")
    parser.add_argument("--side", choices=("official", "project"), default=None,
                        help="measure one code in this process (default: both, interleaved, in child processes)")
    parser.add_argument("--task", choices=("step", "extract"), default="step", help="with --side: what to time")
    parser.add_argument("--classes", type=int, nargs="+", default=None,
                        help="class counts of the step (default 10 200; with --side: one, default 10)")
    parser.add_argument("--steps", type=int, default=3, help="timed iterations (extract: repetitions) per process")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations (extract: repetitions) first")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds over every setting")
    parser.add_argument("--batch", type=int, default=32, help="batch size of each stream (official 32)")
    parser.add_argument("--images", type=int, default=64, help="images per extraction repetition")
    parser.add_argument("--extract-batch", type=int, default=256, help="project extraction batch size")
    parser.add_argument("--workers", type=int, default=0, help="project extraction decoding processes")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (benchmarks/gpu_speed.py sets cuda)")
    parser.add_argument("--official-precision", default="fp32", choices=("fp32", "fp16"),
                        help="official PREC (its configs say fp16, which is a GPU setting)")
    parser.add_argument("--project-precision", default="fp32", choices=("fp32", "fp16", "amp"),
                        help="the project's ModelConfig.precision")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="ViT-B/32 TorchScript archive "
                        "(written from benchmarks/official_weights.py if missing)")
    parser.add_argument("--official-python", default=sys.executable, help="interpreter of the official side")
    parser.add_argument("--project-python", default=sys.executable, help="interpreter of the project side")
    parser.add_argument("--project-root", type=Path, default=ROOT, help="with --side project: checkout to import cap from")
    parser.add_argument("--official-max-classes", type=int, default=0,
                        help="time the official step only up to this many classes (0: no limit) and extrapolate it, "
                             "linear in the class count, to the larger ones (its memory grows with the classes)")
    parser.add_argument("--also-precision", default=None, choices=("fp32", "fp16", "amp"),
                        help="also measure the project in this precision (a column of its own), e.g. amp: "
                             "bf16 autocast on a CPU that has bf16 instructions")
    parser.add_argument("--before-root", type=Path, default=None,
                        help="also measure the project from this checkout (a 'before' column)")
    args = parser.parse_args(argv)
    args.classes = args.classes or ([10] if args.side else [10, 200])
    if min(args.steps, args.rounds, args.batch, args.images, args.extract_batch, *args.classes) < 1:
        parser.error("--steps, --rounds, --batch, --images, --extract-batch and --classes must be >= 1")
    if args.warmup < 0 or args.workers < 0:
        parser.error("--warmup and --workers must be >= 0")
    if args.side and len(args.classes) != 1:
        parser.error("with --side give one --classes value")
    if not (args.official / "methods" / "cacm.py").is_file():
        parser.error(f"--official {args.official} is not a work tree of the official CAP code (no methods/cacm.py)")
    return args


def sibling(name: str):
    """The module ``name`` of benchmarks/: ``benchmarks.<name>`` when this module was imported from the
    package (the tests; ``python -m benchmarks.official_speed``), else ``<name>`` itself, found in this
    script's folder, which Python puts first on ``sys.path`` for ``python benchmarks/official_speed.py``."""
    return importlib.import_module(f"{__package__}.{name}" if __package__ else name)


# ----------------------------------------------------------------------------------- shared inputs
def classnames(n: int) -> list[str]:
    """EuroSAT's 10 names for n = 10, else the first n of CUB's 200 (repeated past 200, numbered)."""
    source = "eurosat.txt" if n == 10 else "cub.txt"
    names = [line.strip() for line in (CLASSNAMES / source).read_text().splitlines() if line.strip()]
    return [names[i % len(names)] + (f" {i // len(names)}" if i >= len(names) else "") for i in range(n)]


def fixed_margin(n: int, device: str):
    import torch

    margin = MARGIN_MAX * torch.rand(n, n, generator=torch.Generator().manual_seed(MARGIN_SEED))
    return margin.fill_diagonal_(0).to(device)


def random_images(n: int, device: str, seed: int):
    import torch

    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed)).to(device)


def write_jpegs(folder: Path, n: int) -> list[str]:
    """``n`` 320x240 JPEGs: smooth colour fields plus noise, seeded."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:240, 0:320].astype(np.float64)
    paths = []
    for k in range(n):
        phase = rng.uniform(0, 6.3, size=3)
        image = 128 + 80 * np.sin(x[..., None] / 37 + y[..., None] / 23 + phase) + rng.normal(0, 12, (240, 320, 3))
        paths.append(str(folder / f"{k:05d}.jpg"))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(paths[-1], "JPEG", quality=90)
    return paths


def ensure_weights(path: Path) -> Path:
    if not path.is_file():
        sibling("official_weights").save_torchscript(path)
    return path


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def clock(device: str) -> tuple[float, float]:
    """(wall, process CPU) seconds after the device has finished its work."""
    synchronize(device)
    return time.perf_counter(), time.process_time()


def intervals(marks: list[tuple[float, float]], skip: int) -> dict:
    """Wall and CPU seconds between consecutive ``marks``, the first ``skip`` (warm-up) left out."""
    pairs = list(zip(marks, marks[1:]))[skip:]
    return {"seconds": [b[0] - a[0] for a, b in pairs], "cpu_seconds": [b[1] - a[1] for a, b in pairs]}


def rates(marks: list[tuple[float, float]], images: int, skip: int) -> dict:
    """Images/s of wall and of process CPU time for each (start, end) pair of ``marks``, warm-up left out."""
    pairs = list(zip(marks[::2], marks[1::2]))[skip:]
    return {"images_per_s": [images / (b[0] - a[0]) for a, b in pairs],
            "cpu_images_per_s": [images / (b[1] - a[1]) for a, b in pairs], "images": images}


# ----------------------------------------------------------------------------------- official side
def official_shims(args: argparse.Namespace) -> None:
    """The fixture's shims; on a GPU the official fp16 casts stay real (its own fp16 runs)."""
    import torch

    sys.path.insert(0, str(ROOT))
    import cap  # noqa: F401  (import hook: a CUDA torchvision wheel on CPU-only torch)

    sys.path.insert(0, str(args.official.resolve()))
    half = torch.Tensor.half
    sibling("official_fixture").apply_shims(args.weights)
    if args.official_precision == "fp16":
        torch.Tensor.half = half


class _Batches:
    """Stands in for the official loaders: every ``next`` gives the same batch."""

    def __init__(self, item):
        self.item = item
        self.data_loader = type("Loader", (), {"dataset": type("Dataset", (), {"filepaths": []})()})()

    def __next__(self):
        return self.item


def official_model(args: argparse.Namespace, names: list[str], iterations: int):
    from methods import TextualFPL

    DDPLike, official_config = sibling("official_fixture").DDPLike, sibling("official_fixture").official_config
    config = official_config(args.official.resolve(), Path(tempfile.gettempdir()), BATCH_SIZE=args.batch,
                             ITER_PER_EPOCH=iterations, WARMUP_EPOCHS=0, PREC=args.official_precision)
    label_to_idx = {c: i for i, c in enumerate(names)}
    model = TextualFPL(config, label_to_idx, tempfile.gettempdir(), unlabeled_files=[], classes=names,
                       seen_classes=names, unseen_classes=names, device=args.device, dataset_obj=None)
    model.define_model(names)
    model.model = DDPLike(model.model)
    model.threshold = 0.0
    margin = fixed_margin(len(names), args.device)
    model.compute_margin = lambda: margin
    return model


def official_step(args: argparse.Namespace) -> dict:
    import torch

    official_shims(args)
    names = classnames(args.classes[0])
    iterations = args.warmup + args.steps
    model = official_model(args, names, iterations)
    b, n = args.batch, len(names)
    labels = torch.arange(b, device=args.device) % n
    paths = [f"image_{i}.jpg" for i in range(b)]
    main = _Batches((random_images(b, args.device, 1),) * 3 + (labels, paths))
    weak, strong = random_images(b, args.device, 2), random_images(b, args.device, 3)
    unlabelled = _Batches((weak, strong, weak, labels, paths))
    marks, update = [], model.update_scheduler

    def timed_update():
        update()
        marks.append(clock(args.device))

    model.update_scheduler = timed_update
    marks.append(clock(args.device))
    model._train_epoch(None, 0, 1, 0, main, None, unlabelled)
    return intervals(marks, args.warmup) | {"classes": n}


class _LoopTimer:
    """Replaces the official pseudolabel code's ``tqdm``: times the loop over the images."""

    def __init__(self, device: str):
        self.device, self.marks = device, []

    def __call__(self, iterable, *_, **__):
        start = clock(self.device)
        yield from iterable
        self.marks += [start, clock(self.device)]


def official_extract(args: argparse.Namespace, paths: list[str], work: Path) -> dict:
    official_shims(args)
    import clip
    from utils import clip_pseudolabels

    model, transform = clip.load("ViT-B/32", device=args.device)
    if args.official_precision == "fp32":
        model.float()
    timer = _LoopTimer(args.device)
    clip_pseudolabels.tqdm = timer
    names = classnames(10)
    for _ in range(args.warmup + args.steps):
        clip_pseudolabels.compute_pseudo_labels(16, TEMPLATE, paths, names, transform, model,
                                                {c: i for i, c in enumerate(names)}, args.device,
                                                str(work / "pseudolabels.pickle"))
    return rates(timer.marks, len(paths), args.warmup)


# ----------------------------------------------------------------------------------- project side
def project_backbone(args: argparse.Namespace, names: list[str], prompt: str = "maple"):
    sys.path.insert(0, str(args.project_root.resolve()))
    import cap  # noqa: F401  (before open_clip: CPU torchvision fix)
    from cap.models.model_config import ModelConfig
    from cap.models.openclip_backbone import OpenClipBackbone

    config = ModelConfig(backbone="ViT-B-32", weights=str(args.weights), precision=args.project_precision,
                         device=args.device, prompt=prompt, prompt_depth=8)
    return OpenClipBackbone(config, names)


def project_step(args: argparse.Namespace) -> dict:
    import torch

    names = classnames(args.classes[0])
    backbone = project_backbone(args, names)
    RandomSource = sibling("train_step").RandomSource
    from cap.config import make_config, resolve
    from cap.methods.cap import CapTrainer, StepBatch

    device = torch.device(args.device)
    source = RandomSource(len(names), "ul", (224, 224), backbone.feature_dim, device)
    config = resolve(make_config(dataset="cub", paradigm="ul", backend="openclip", tau=0.0, batch_size=args.batch,
                                 iters_per_epoch=args.warmup + args.steps, prompt_depth=8))
    trainer = CapTrainer(config, source, backbone, Path(tempfile.gettempdir()), device)
    b, n = args.batch, len(names)
    batch = StepBatch(dpl=random_images(b, args.device, 1), dpl_labels=torch.arange(b, device=device) % n,
                      weak=random_images(b, args.device, 2), strong=random_images(b, args.device, 3),
                      unlabelled_index=torch.arange(b))
    margin, marks = fixed_margin(n, args.device), [clock(args.device)]
    for _ in range(args.warmup + args.steps):
        trainer.step(batch, margin)
        marks.append(clock(args.device))
    return intervals(marks, args.warmup) | {"classes": n, "cap_module": sys.modules["cap"].__file__}


def project_extract(args: argparse.Namespace, paths: list[str], work: Path) -> dict:
    backbone = project_backbone(args, classnames(10))
    from cap.sources.feature_cache import extract_image_features

    marks = []
    for rep in range(args.warmup + args.steps):
        start = clock(args.device)
        extract_image_features(backbone, paths, batch_size=args.extract_batch, num_workers=args.workers,
                               cache=work / f"cache-{rep}")
        marks += [start, clock(args.device)]
    return rates(marks, len(paths), args.warmup) | {"cap_module": sys.modules["cap"].__file__}


def measure_one(args: argparse.Namespace) -> dict:
    """One code, one setting, in this process."""
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: this interpreter's torch {torch.__version__} sees no CUDA device")
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cap-speed-") as folder:
        work = Path(folder)
        if args.task == "extract":
            paths = write_jpegs(work, args.images)
            run = official_extract if args.side == "official" else project_extract
            result = run(args, paths, work)
        else:
            result = (official_step if args.side == "official" else project_step)(args)
    return result | {"side": args.side, "task": args.task, "device": args.device, "threads": torch.get_num_threads(),
                     "torch": torch.__version__, "load_1min": [load_start, os.getloadavg()[0]],
                     "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                     "precision": args.official_precision if args.side == "official" else args.project_precision}


# ----------------------------------------------------------------------------------- both, interleaved
def child_command(args: argparse.Namespace, side: str, task: str, classes: int, root: Path,
                  precision: str) -> list[str]:
    python = args.official_python if side == "official" else args.project_python
    return [python, str(Path(__file__).resolve()), "--side", side, "--task", task, "--classes", str(classes),
            "--official", str(args.official), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--batch", str(args.batch), "--images", str(args.images), "--extract-batch", str(args.extract_batch),
            "--workers", str(args.workers), "--device", args.device, "--weights", str(args.weights),
            "--official-precision", args.official_precision, "--project-precision", precision,
            "--project-root", str(root)]


def run_child(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise SystemExit(f"{' '.join(command)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def columns(args: argparse.Namespace) -> list[tuple[str, str, Path, str]]:
    """(column name, side, project checkout, project precision)."""
    out = [("official", "official", ROOT, args.project_precision)]
    if args.before_root:
        out.append(("project before", "project", args.before_root.resolve(), args.project_precision))
    out.append(("project", "project", ROOT, args.project_precision))
    if args.also_precision:
        out.append((f"project {args.also_precision}", "project", ROOT, args.also_precision))
    return out


def skipped(args: argparse.Namespace, side: str, task: str, classes: int) -> bool:
    return side == "official" and task == "step" and 0 < args.official_max_classes < classes


def measure_all(args: argparse.Namespace) -> dict:
    """Every setting, every column, ``--rounds`` times, interleaved: {setting: {column: {"wall", "cpu"}}}."""
    ensure_weights(args.weights)
    settings = [(f"step, {c} classes (s/iteration)", "step", c) for c in args.classes]
    settings.append((f"extraction, {args.images} images (images/s)", "extract", 0))
    values: dict = {name: {} for name, _, _ in settings}
    details: list[dict] = []
    for _ in range(args.rounds):
        for name, task, classes in settings:
            for column, side, root, precision in columns(args):
                if skipped(args, side, task, classes):
                    continue
                result = run_child(child_command(args, side, task, classes or 10, root, precision))
                kind = "seconds" if task == "step" else "images_per_s"
                cell = values[name].setdefault(column, {"wall": [], "cpu": []})
                cell["wall"] += result[kind]
                cell["cpu"] += result["cpu_" + kind]
                details.append(result | {"setting": name, "column": column})
                print(f"  {name}, {column}: wall {result[kind]}, CPU {result['cpu_' + kind]}", file=sys.stderr,
                      flush=True)
    return {"values": values, "classes": {name: classes for name, _, classes in settings}, "runs": details}


def statistics_of(cell: dict, rate: bool) -> dict:
    return {"best": (max if rate else min)(cell["wall"]), "median": statistics.median(cell["wall"]),
            "cpu_median": statistics.median(cell["cpu"]), "n": len(cell["wall"])}


def extrapolate(points: dict[int, dict], classes: int) -> dict | None:
    """Least-squares line through (class count, value) of the measured official steps, at ``classes``."""
    if len(points) < 2:
        return None
    xs = list(points)
    out = {"extrapolated_from": xs}
    for key in ("best", "median", "cpu_median"):
        slope, intercept = statistics.linear_regression(xs, [points[x][key] for x in xs])
        out[key] = intercept + slope * classes
    return out


def summary(measured: dict) -> list[dict]:
    """Per setting and column: best (least time, highest rate), median and CPU-time median; the
    official step where it was not run extrapolated from the class counts where it was; speed-ups."""
    values, counts = measured["values"], measured["classes"]
    rows = {name: {column: statistics_of(cell, "images/s" in name) for column, cell in by_column.items()}
            for name, by_column in values.items()}
    timed = {counts[name]: row["official"] for name, row in rows.items() if counts[name] and "official" in row}
    for name, row in rows.items():
        if "official" not in row and counts[name] and extrapolate(timed, counts[name]):
            row["official"] = extrapolate(timed, counts[name])
    out = []
    for name, row in rows.items():
        rate = "images/s" in name
        ups = {}
        for column in row:
            if column != "official" and "official" in row:
                ups[f"speed-up {column}"] = {key: (row[column][key] / row["official"][key] if rate else
                                                   row["official"][key] / row[column][key])
                                             for key in ("best", "median", "cpu_median")}
        out.append({"setting": name} | row | ups)
    return out


def print_table(rows: list[dict], args: argparse.Namespace, load: tuple[float, float, float]) -> None:
    names = [c for c, _, _, _ in columns(args)]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, device {args.device}; 1-minute load "
          f"{load[0]:.2f} before, {load[1]:.2f}-{load[2]:.2f} during the runs (start and end of each, this run's own "
          f"processes included); {args.rounds} round(s) x {args.steps} timed per cell")
    print(f"{'setting':<40}" + "".join(f"{n + ' best / median':>30}" for n in names)
          + "".join(f"{'speed-up ' + n:>32}" for n in names[1:]))
    for row in rows:
        cells = "".join(f"{'-':>30}" if n not in row else
                        f"{'*' if 'extrapolated_from' in row[n] else '':>9}{row[n]['best']:>9.2f} / {row[n]['median']:<9.2f}"
                        for n in names)
        ups = "".join(f"{'-':>32}" if f"speed-up {n}" not in row else
                      f"{row['speed-up ' + n]['best']:>12.2f}x / {row['speed-up ' + n]['median']:.2f}x"
                      f" ({row['speed-up ' + n]['cpu_median']:.2f}x)" for n in names[1:])
        print(f"{row['setting']:<40}{cells}{ups}")
    print("speed-up: official time / project time, or project images/s / official images/s: best / median "
          "(in brackets: medians of process CPU time, less sensitive to other jobs on the machine)")
    extrapolated = [r for r in rows if "extrapolated_from" in r.get("official", {})]
    if extrapolated:
        print(f"* official step not run at this class count (--official-max-classes {args.official_max_classes}): "
              f"extrapolated, linear in the class count, from the official steps at "
              f"{extrapolated[0]['official']['extrapolated_from']} classes")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    args.weights = args.weights.resolve()
    if args.side:
        ensure_weights(args.weights)
        result = measure_one(args)
    else:
        before = os.getloadavg()[0]
        measured = measure_all(args)
        during = [x for run in measured["runs"] for x in run["load_1min"]]
        result = {"rows": summary(measured), "load_1min_before": before,
                  "load_1min_during": [min(during), max(during)], "runs": measured["runs"]}
        print_table(result["rows"], args, (before, min(during), max(during)))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
