"""Training steps on the feature backend (the simulator's): speed, arithmetic and share of peak,
this checkout against an earlier revision, side by side in one run.

    python benchmarks/feature_step.py [--before REV] [--presets eurosat resisc45 cub] [--steps 300]
                                      [--rounds 3]

For each preset (its class count sets the size of the text pass) and each trained method's step
(CAP's ``CapTrainer.step``; the baselines' ``fit`` step: GRIP's and FPL's one-hot cross-entropy,
CPL's partial-label loss), on one thread:

* steps per second of process CPU time (per core), measured in a fresh process per measurement,
  with this checkout's library and with the library of ``--before`` (checked out into a temporary
  git worktree; default ``HEAD``, the last commit), alternated over ``--rounds`` rounds, best of each;
* MFLOP per step, counted by ``torch.utils.flop_counter.FlopCounterMode`` over the timed steps
  (matrix products; element-wise work is not counted);
* the share of this CPU's matmul peak each rate reaches: the peak is measured here as the best
  GFLOP/s of ``torch.mm`` at the step's largest product shapes (32-96 rows times the feature
  dimension squared), so the share says how far a step is from being pure arithmetic.

The numbers as a Markdown table, then one JSON line. Nothing here runs in ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("cap", "grip", "cpl")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="HEAD", help="git revision to compare with (default: HEAD)")
    parser.add_argument("--presets", nargs="+", default=["eurosat", "resisc45", "cub"])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternated before/after rounds (best of)")
    parser.add_argument("--one", nargs=2, metavar=("PRESET", "METHOD"), help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args(argv)
    if args.steps < 1 or args.rounds < 1:
        parser.error("--steps and --rounds must be >= 1")
    return args


# -- one measurement (a child process, importing whichever library PYTHONPATH puts first) ---------

def _steps(preset: str, method: str, steps: int):
    """(source, a function running about ``steps`` steps, the exact number of steps it runs)."""
    import numpy as np
    import torch

    from cap.config import make_config, resolve
    from cap.methods.baselines import fit
    from cap.methods.cap import CapTrainer
    from cap.sources import make_source

    device = torch.device("cpu")
    if method == "cap":  # τ = 0 and a non-zero margin: every term of the loss is active
        config = resolve(make_config(dataset=preset, paradigm="ul", backend="sim", method="cap",
                                     iters_per_epoch=steps, tau=0.0))
        source = make_source(config)
        trainer = CapTrainer(config, source, source.make_backbone(config, "maple", device),
                             Path(tempfile.gettempdir()), device)
        board, _ = trainer.initial_dpl()
        margin = trainer.margin(board, np.arange(source.n_classes) + 1.0)
        return source, lambda: trainer.train_epoch(1, board, margin), steps
    config = resolve(make_config(dataset=preset, paradigm="ul", backend="sim", method=method))
    source = make_source(config)
    backbone = source.make_backbone(config, "coop", device)
    index = np.asarray(source.split.unlabelled, dtype=np.int64)
    targets = torch.nn.functional.one_hot(torch.as_tensor(source.train_labels[index]), source.n_classes).float()
    if method == "cpl":  # two or three candidates per row: the partial-label loss
        rng = np.random.default_rng(0)
        for row in range(len(index)):
            targets[row, rng.choice(source.n_classes, size=2)] = 1.0
    per_epoch = max(1, len(index) // min(config.baseline_batch_size, len(index)))
    epochs = -(-steps // per_epoch)
    run = config.replace(baseline_epochs=epochs)
    return source, lambda: fit(backbone, source, run, index, targets, 1), epochs * per_epoch


def measure_one(preset: str, method: str, steps: int) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(1)
    source, run, n = _steps(preset, method, steps)
    run()  # warm-up: allocator, first-call costs
    with FlopCounterMode(display=False) as counter:
        run()
    start = time.process_time()
    run()
    seconds = time.process_time() - start
    return {"steps_per_s": n / seconds, "mflop_per_step": counter.get_total_flops() / n / 1e6,
            "dim": int(source.zero_shot_image.shape[1]), "classes": int(source.n_classes)}


def matmul_peak(dim: int, repeats: int = 200) -> float:
    """Best GFLOP/s of torch.mm on one thread at a step's largest product shapes."""
    import torch

    torch.set_num_threads(1)
    best = 0.0
    for rows in (32, 64, 96):
        a, b = torch.randn(rows, dim), torch.randn(dim, dim)
        for left, right in ((a, b), (a.T.contiguous(), a)):
            torch.mm(left, right)
            start = time.perf_counter()
            for _ in range(repeats):
                torch.mm(left, right)
            flop = 2 * left.shape[0] * left.shape[1] * right.shape[1]
            best = max(best, flop * repeats / (time.perf_counter() - start) / 1e9)
    return best


# -- the comparison --------------------------------------------------------------------------------

def _child(library: Path, preset: str, method: str, steps: int) -> dict:
    env = os.environ | {"PYTHONPATH": str(library), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", preset, method, "--steps", str(steps)],
                         env=env, cwd=library, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"the measurement of {method} on {preset} with the library in {library} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(args: argparse.Namespace, before_tree: Path) -> list[dict]:
    rows = []
    for preset in args.presets:
        for method in METHODS:
            best: dict[str, dict] = {}
            for _ in range(args.rounds):
                for label, tree in (("before", before_tree), ("after", ROOT)):
                    result = _child(tree, preset, method, args.steps)
                    if label not in best or result["steps_per_s"] > best[label]["steps_per_s"]:
                        best[label] = result
            rows.append({"preset": preset, "method": method, "classes": best["after"]["classes"],
                         "dim": best["after"]["dim"], "before": best["before"], "after": best["after"]})
    peaks = {dim: matmul_peak(dim) for dim in {row["dim"] for row in rows}}
    for row in rows:
        row["peak_gflops"] = peaks[row["dim"]]
        for label in ("before", "after"):
            side = row[label]
            side["peak_share"] = side["mflop_per_step"] * side["steps_per_s"] / 1e3 / row["peak_gflops"]
    return rows


def main(argv=None) -> list[dict] | dict:
    args = parse_args(argv)
    if args.one:
        result = measure_one(*args.one, args.steps)
        print(json.dumps(result))
        return result
    revision = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), revision], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            rows = compare(args, tree)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    print(f"one thread per process, before = {args.before} ({revision}), after = this checkout; {args.steps} steps, "
          f"best of {args.rounds} alternated rounds")
    print("| preset (classes) | step | MFLOP/step before → after | steps/s/core before → after | × | share of matmul peak |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        b, a = r["before"], r["after"]
        print(f"| {r['preset']} ({r['classes']}) | {r['method']} | {b['mflop_per_step']:.1f} → {a['mflop_per_step']:.1f} | "
              f"{b['steps_per_s']:.0f} → {a['steps_per_s']:.0f} | {a['steps_per_s'] / b['steps_per_s']:.2f} | "
              f"{100 * b['peak_share']:.0f} % → {100 * a['peak_share']:.0f} % (peak {r['peak_gflops']:.0f} GFLOP/s) |")
    print(json.dumps({"python": sys.version.split()[0], "before": revision, "rows": rows}))
    return rows


if __name__ == "__main__":
    main()
