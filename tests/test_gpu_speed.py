"""benchmarks/gpu_speed.py and the figures it reports (benchmarks/official_speed.py), on a CPU.

Nothing here is timed and nothing is mocked: the GPU options are parsed by the real parser and
followed into the command of a measuring child process, the stop without CUDA is the real one,
and the arithmetic of the table (intervals, rates, best and median, extrapolation, speed-ups) is
checked on hand-made clock readings against values worked out by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks import gpu_speed, official_speed


@pytest.fixture()
def official(tmp_path) -> Path:
    """A stand-in for the official work tree: only the file the argument check looks for."""
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "cacm.py").write_text("")
    return tmp_path


# -- options ------------------------------------------------------------------------------------

def test_gpu_settings_and_overrides_as_parsed(official):
    args = gpu_speed.parse_args(["--official", str(official)])
    # GPU_SETTINGS by hand: cuda, fp16 official, amp project, 10 timed + 3 warm-up, 512 images, 8 workers;
    # the rest are official_speed.py's defaults (both class counts without --side, one round, batch 32)
    assert (args.device, args.official_precision, args.project_precision) == ("cuda", "fp16", "amp")
    assert (args.steps, args.warmup, args.images, args.workers) == (10, 3, 512, 8)
    assert (args.classes, args.rounds, args.batch, args.side) == ([10, 200], 1, 32, None)
    # an option given again wins (argparse keeps the last value); the others keep the GPU settings
    args = gpu_speed.parse_args(["--official", str(official), "--steps", "4", "--classes", "100", "--device", "cuda:1"])
    assert (args.steps, args.classes, args.device, args.warmup, args.images) == (4, [100], "cuda:1", 3, 512)


def test_the_gpu_settings_reach_each_measuring_process(official):
    args = gpu_speed.parse_args(["--official", str(official), "--images", "64"])
    command = official_speed.child_command(args, "project", "extract", 10, official_speed.ROOT, args.project_precision)
    assert Path(command[1]) == Path(official_speed.__file__).resolve()
    options = dict(zip(command[2::2], command[3::2]))  # after the interpreter and the script: option, value pairs
    assert len(command) == 2 + 2 * len(options)
    assert options | {"--official": "", "--weights": "", "--project-root": ""} == {
        "--side": "project", "--task": "extract", "--classes": "10", "--official": "", "--steps": "10",
        "--warmup": "3", "--batch": "32", "--images": "64", "--extract-batch": "256", "--workers": "8",
        "--device": "cuda", "--weights": "", "--official-precision": "fp16", "--project-precision": "amp",
        "--project-root": ""}


def test_bad_options_fail_before_the_device_check(official, capsys):
    # On a CPU a device check first would end in the CUDA message, not argparse's status 2.
    with pytest.raises(SystemExit) as stop:
        gpu_speed.main(["--official", str(official), "--steps", "0"])
    assert stop.value.code == 2 and "--steps" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        gpu_speed.main(["--official", str(official / "missing")])
    assert stop.value.code == 2 and "not a work tree of the official CAP code" in capsys.readouterr().err


def test_without_cuda_it_stops_naming_the_need_and_the_cpu_script(official, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without CUDA, also where one exists
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"")  # present, so a run that went on would not spend seconds writing 337 MiB
    with pytest.raises(SystemExit, match=r"needs a CUDA GPU.*is_available\(\) is False.*official_speed\.py"):
        gpu_speed.main(["--official", str(official), "--weights", str(weights)])


# -- the figures of the table ------------------------------------------------------------------

def test_intervals_and_rates_leave_out_the_warm_up():
    marks = [(0.0, 0.0), (1.0, 0.5), (3.0, 1.5), (6.0, 3.0)]  # (wall, CPU) after each iteration
    # by hand, first interval (warm-up) dropped: wall 3-1, 6-3; CPU 1.5-0.5, 3-1.5
    assert official_speed.intervals(marks, 1) == {"seconds": [2.0, 3.0], "cpu_seconds": [1.0, 1.5]}
    marks = [(0.0, 0.0), (1.0, 1.0), (2.0, 2.0), (4.0, 3.0), (10.0, 10.0), (18.0, 12.0)]  # (start, end) pairs
    # by hand, 8 images, first pair dropped: wall 8/(4-2), 8/(18-10); CPU 8/(3-2), 8/(12-10)
    assert official_speed.rates(marks, 8, 1) == {"images_per_s": [4.0, 1.0], "cpu_images_per_s": [8.0, 4.0],
                                                 "images": 8}


def test_summary_best_median_extrapolation_and_speed_ups():
    step = "step, {} classes (s/iteration)".format
    extract = "extraction, 64 images (images/s)"
    measured = {
        "values": {
            step(10): {"official": {"wall": [4.0, 2.0, 3.0], "cpu": [8.0, 4.0, 6.0]},
                       "project": {"wall": [1.0, 0.5, 2.0], "cpu": [2.0, 1.0, 4.0]}},
            step(20): {"official": {"wall": [6.0, 4.0], "cpu": [12.0, 8.0]},
                       "project": {"wall": [1.0], "cpu": [2.0]}},
            step(30): {"project": {"wall": [3.0], "cpu": [6.0]}},  # official not run (--official-max-classes)
            extract: {"official": {"wall": [10.0, 20.0], "cpu": [5.0, 15.0]},
                      "project": {"wall": [40.0, 30.0], "cpu": [20.0, 10.0]}},
        },
        "classes": {step(10): 10, step(20): 20, step(30): 30, extract: 0},
    }
    rows = {row["setting"]: row for row in official_speed.summary(measured)}
    approx = pytest.approx
    # times: best = least; official at 10 classes: best 2, median 3, CPU median 6 (3 values)
    assert rows[step(10)]["official"] == {"best": 2.0, "median": 3.0, "cpu_median": 6.0, "n": 3}
    assert rows[step(10)]["project"] == {"best": 0.5, "median": 1.0, "cpu_median": 2.0, "n": 3}
    # speed-up of a time: official / project = 2/0.5, 3/1, 6/2
    assert rows[step(10)]["speed-up project"] == approx({"best": 4.0, "median": 3.0, "cpu_median": 3.0})
    assert rows[step(20)]["official"] == {"best": 4.0, "median": 5.0, "cpu_median": 10.0, "n": 2}
    assert rows[step(20)]["speed-up project"] == approx({"best": 4.0, "median": 5.0, "cpu_median": 5.0})
    # 30 classes: the line through the official 10- and 20-class values: best 2, 4 -> 6; median 3, 5 -> 7;
    # CPU median 6, 10 -> 14; speed-ups 6/3, 7/3, 14/6
    extrapolated = rows[step(30)]["official"]
    assert extrapolated["extrapolated_from"] == [10, 20]
    assert {k: extrapolated[k] for k in ("best", "median", "cpu_median")} == approx(
        {"best": 6.0, "median": 7.0, "cpu_median": 14.0})
    assert rows[step(30)]["speed-up project"] == approx({"best": 2.0, "median": 7 / 3, "cpu_median": 7 / 3})
    # rates: best = highest; speed-up of a rate: project / official = 40/20, 35/15, 15/10
    assert rows[extract]["official"] == {"best": 20.0, "median": 15.0, "cpu_median": 10.0, "n": 2}
    assert rows[extract]["speed-up project"] == approx({"best": 2.0, "median": 7 / 3, "cpu_median": 1.5})
    # one measured class count is no line: nothing extrapolated, so no official value and no speed-up
    del measured["values"][step(20)], measured["classes"][step(20)]
    rows = {row["setting"]: row for row in official_speed.summary(measured)}
    assert set(rows[step(30)]) == {"setting", "project"}


def test_class_names_of_the_step():
    assert official_speed.classnames(10)[:3] == ["annual crop land", "forest", "brushland or shrubland"]  # EuroSAT
    names = official_speed.classnames(202)  # CUB's 200, then numbered repeats
    assert names[:2] == ["black footed albatross", "laysan albatross"]
    assert names[200:] == ["black footed albatross 1", "laysan albatross 1"] and len(set(names)) == 202
