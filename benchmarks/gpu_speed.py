"""The official-against-project speed table on a CUDA GPU, with mixed precision, in one command.

    python benchmarks/gpu_speed.py --official PATH [--official-python PY] [--classes 10 200]
                                   [--steps 10] [--warmup 3] [--rounds 1] [--images 512] [--workers 8]

Runs ``benchmarks/official_speed.py`` (same settings, same table: one CAP iteration at 10 and 200
classes, official against project, and zero-shot extraction in images/s) with GPU settings:
``--device cuda``; the official code in fp16, its own ``PREC: fp16`` (fp16 weights and prompts,
its ``.half()`` casts real); the project with ``precision="amp"`` (fp32 weights, fp16 autocast,
fp32 prompts); more timed iterations (``--steps 10 --warmup 3``) and a larger extraction
(``--images 512``, ``--workers 8`` decoding processes for the project, one image per forward for
the official code, as its pseudolabel code does). Any of these can be given again to override
it, and every other option of ``official_speed.py`` passes through.

Both interpreters need a CUDA build of torch; the official one also needs the official code's
packages (``official_speed.py`` lists them). Without a CUDA device it stops at once, saying so.
"""

from __future__ import annotations

import argparse
import sys

if __package__:  # imported as benchmarks.gpu_speed (the tests; python -m benchmarks.gpu_speed)
    from . import official_speed
else:  # run as a script: its folder, benchmarks/, is first on sys.path
    import official_speed

GPU_SETTINGS = ["--device", "cuda", "--official-precision", "fp16", "--project-precision", "amp",
                "--steps", "10", "--warmup", "3", "--images", "512", "--workers", "8"]


def gpu_argv(argv: list[str]) -> list[str]:
    """The ``official_speed.py`` command line: the GPU settings, then ``argv`` (argparse keeps the last
    value of an option given twice, so ``argv`` overrides them)."""
    return GPU_SETTINGS + list(argv)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """``official_speed.py``'s options for ``argv`` under the GPU settings; bad options exit here (status 2)."""
    return official_speed.parse_args(gpu_argv(argv))


def require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit(f"benchmarks/gpu_speed.py needs a CUDA GPU, and this interpreter's torch "
                         f"{torch.__version__} sees none (torch.cuda.is_available() is False). Run it on a machine "
                         f"with a GPU and a CUDA build of torch; on a CPU use benchmarks/official_speed.py.")


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(__doc__)
    parse_args(argv)  # bad options fail here, before the device check
    require_cuda()
    return official_speed.main(gpu_argv(argv))


if __name__ == "__main__":
    main()
