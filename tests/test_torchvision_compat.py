"""cap/_torchvision.py: torchvision and open_clip import on a CPU torch with a CUDA torchvision wheel."""

from conftest import run_python


def test_cap_modules_that_need_torchvision_make_it_importable():
    # nothing but importing the package's own modules: views imports torchvision, clip open_clip
    result = run_python("import cap.data.views, cap.models.clip, open_clip, torchvision\nprint('ok')")
    assert result.returncode == 0, result.stderr


def test_import_cap_alone_changes_nothing():
    # a CPU torch with a CUDA torchvision wheel (this machine) cannot import torchvision by itself;
    # `import cap` no longer patches the import system, so it still cannot
    result = run_python("import sys, torch\nimport cap\nassert not any('torchvision' in type(f).__name__.lower() "
                        "for f in sys.meta_path)\nimport torchvision\n")
    if result.returncode == 0:  # a matching install: torchvision's own ops load
        assert "operator torchvision::nms does not exist" not in result.stderr
    else:
        assert "torchvision::nms does not exist" in result.stderr, result.stderr


def test_ensure_then_open_clip_and_torchvision():
    result = run_python(
        "import cap; cap.ensure_torchvision_importable()\nimport open_clip, torch, torchvision\n"
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
