"""benchmarks/gpu_speed.py on a CPU: a clear stop without CUDA, and the GPU settings it passes on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu_speed  # noqa: E402
import official_speed  # noqa: E402


@pytest.fixture()
def official(tmp_path) -> Path:
    """A stand-in for the official work tree: only the file the argument check looks for."""
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "cacm.py").write_text("")
    return tmp_path


def test_without_cuda_it_stops_naming_the_need_and_the_cpu_script(official, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(official_speed, "main", lambda argv: pytest.fail("must not measure without CUDA"))
    with pytest.raises(SystemExit, match=r"needs a CUDA GPU.*is_available\(\) is False.*official_speed\.py"):
        gpu_speed.main(["--official", str(official)])


def test_gpu_settings_are_passed_on_and_options_override_them(official, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(official_speed, "main", lambda argv: calls.append(official_speed.parse_args(argv)) or {})
    gpu_speed.main(["--official", str(official)])
    gpu_speed.main(["--official", str(official), "--steps", "4", "--classes", "100"])
    default, overridden = calls
    assert (default.device, default.official_precision, default.project_precision) == ("cuda", "fp16", "amp")
    assert (default.steps, default.warmup, default.images, default.workers, default.classes) == (10, 3, 512, 8, [10, 200])
    assert (overridden.steps, overridden.classes, overridden.device) == (4, [100], "cuda")


def test_bad_options_fail_before_the_device_check(official, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("the options are checked first"))
    with pytest.raises(SystemExit) as stop:
        gpu_speed.main(["--official", str(official), "--steps", "0"])
    assert stop.value.code == 2 and "--steps" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        gpu_speed.main(["--official", str(official / "missing")])
    assert stop.value.code == 2 and "not a work tree of the official CAP code" in capsys.readouterr().err
