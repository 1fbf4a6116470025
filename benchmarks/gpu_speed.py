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

import sys
from pathlib import Path

GPU_SETTINGS = ["--device", "cuda", "--official-precision", "fp16", "--project-precision", "amp",
                "--steps", "10", "--warmup", "3", "--images", "512", "--workers", "8"]


def require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit(f"benchmarks/gpu_speed.py needs a CUDA GPU, and this interpreter's torch "
                         f"{torch.__version__} sees none (torch.cuda.is_available() is False). Run it on a machine "
                         f"with a GPU and a CUDA build of torch; on a CPU use benchmarks/official_speed.py.")


def main(argv: list[str] | None = None) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import official_speed

    argv = GPU_SETTINGS + list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(__doc__)
    official_speed.parse_args(argv)  # bad options fail here, before the device check
    require_cuda()
    return official_speed.main(argv)


if __name__ == "__main__":
    main()
