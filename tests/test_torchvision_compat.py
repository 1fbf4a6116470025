"""cap/__init__.py: `import cap, open_clip` works on CPU torch with a CUDA torchvision wheel."""

from conftest import run_python


def test_import_cap_then_open_clip_and_torchvision():
    result = run_python(
        "import cap, open_clip, torch, torchvision\n"
        "from torchvision import transforms\n"
        "assert hasattr(torch.ops.torchvision, 'nms') and hasattr(torch.ops.torchvision, 'qnms')\n"
        "print(cap._torchvision._TORCHVISION_SCHEMAS is not None, torch.version.cuda is None)\n"
    )
    assert result.returncode == 0, result.stderr
    defined, cpu_only_torch = result.stdout.split()
    # The schemas are defined exactly when torch cannot load torchvision's CUDA ops (a CPU build).
    assert defined == cpu_only_torch


def test_nothing_is_defined_when_the_ops_exist():
    # Stands in for a matching install: the ops are already registered before cap looks.
    result = run_python(
        "import torch\n"
        "lib = torch.library.Library('torchvision', 'DEF')\n"
        "lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')\n"
        "import cap\n"
        "assert cap.ensure_torchvision_importable() is False\n"
        "assert cap._torchvision._TORCHVISION_SCHEMAS is None\n"
    )
    assert result.returncode == 0, result.stderr


def test_import_cap_alone_does_not_load_torch():
    result = run_python("import sys, cap, cap.sim, cap.core.metrics\nassert 'torch' not in sys.modules, 'torch imported'")
    assert result.returncode == 0, result.stderr
