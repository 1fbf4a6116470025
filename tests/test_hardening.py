"""Every bad input and fault gets one clear error and loses nothing.

Bad inputs go through the command line (in this process: ``cap.cli.main``): exit status 2, one
``error:`` line naming the value and the fix, no traceback. Faults (a killed run or writer, a
damaged cache, checkpoint or record) are produced on the simulator and the tiny CLIP."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from cap.atomic import atomic_write, remove_stale_temporaries, writable_folder
from cap.config import RunConfig, as_dict, make_config, resolve
from cap.errors import CapError, ParameterError, check_float
from cap.experiments import report
from cap.experiments.build_summary import build_problems
from cap.experiments.matrix import plan
from cap.experiments.publish import runs_table
from cap.experiments.records import (RECORD_VERSION, StaleRecordError, config_hash, read_current_record, read_records,
                                     record_status, write_record)
from cap.experiments.runs import run
from cap.methods.checkpoints import CheckpointError, RunInterrupted, load_checkpoint, save_checkpoint
from cap.methods.engine import TrainingDiverged, check_finite_losses
from conftest import TINY_NOTEBOOK, assert_one_clear_error, cli

SMALL = dict(dataset="dtd", sim_train_per_class=24, sim_test_per_class=8, epochs=3, iters_per_epoch=4, batch_size=16,
             concept_alignment=False)
SMALL_SET = ["sim_train_per_class=24", "sim_test_per_class=8", "epochs=3", "iters_per_epoch=4", "batch_size=16",
             "concept_alignment=false"]


def key_of(**changes) -> str:
    return config_hash(as_dict(resolve(make_config(**(SMALL | changes)))))


# -- bad inputs on the command line -------------------------------------------------------------

def _under_a_file(tmp_path: Path) -> list[str]:
    (tmp_path / "afile").write_text("x")
    return ["--out", tmp_path / "afile" / "records"]


def _binary_split_root(tmp_path: Path) -> Path:
    (tmp_path / "DTD").mkdir()
    (tmp_path / "DTD" / "class_names.txt").write_bytes(bytes(range(256)))
    return tmp_path


BAD_RUNS = {  # --set items -> what the one error line must name
    "lr=.nan": ["lr must be a finite number", "nan"],
    "tau=.nan": ["tau must be a finite number in [0.0, 1.0]", "nan"],
    "margin_scale=.inf": ["margin_scale must be a finite number >= 0.0", "inf"],
    "unlabelled_fraction=.nan": ["unlabelled_fraction must be a finite number in [0.01, 1.0]", "nan"],
    "momentum=1.5": ["momentum must be a finite number in [0.0, 1.0]", "1.5"],
    "seed=1.5": ["--set seed=1.5", "use --seed 1.5"],
    "dataset=x": ["--set dataset=x", "use --dataset x"],
    "sim_classes=48": ["sim_classes=48", "DTD has 47 classes", "at most 47"],
    "sim_classes=1": ["sim_classes must be >= 2", "1"],
}


@pytest.mark.parametrize("item", BAD_RUNS)
def test_bad_run_values_give_one_clear_error(item, capsys, tmp_path):
    code, _, err = cli(capsys, "run", "--dataset", "dtd", "--out", tmp_path, "--set", *SMALL_SET, item)
    assert_one_clear_error(code, err, *BAD_RUNS[item])
    assert not list(tmp_path.glob("*.json")), "nothing ran"


BAD_COMMANDS = {
    "out under a file": (lambda t: ["run", "--dataset", "dtd", *_under_a_file(t)],
                         ["records folder", "afile is a file, not a folder", "--out"]),
    "out not creatable": (lambda t: ["run", "--dataset", "dtd", "--out", "/proc/cap-records"],
                          ["records folder /proc/cap-records cannot be created", "--out"]),
    "runs records under a file": (lambda t: ["runs", "--matrix", "table1", "--dataset", "eurosat", "--seeds", "1",
                                              "--records", _under_a_file(t)[1]],
                                  ["records folder", "afile is a file, not a folder", "--records"]),
    "empty selection": (lambda t: ["runs", "--matrix", "table4"],
                        ["no run of profile 'sim' matches --matrix table4", "--list"]),
    "empty listing": (lambda t: ["runs", "--list", "--seeds", "99"], ["matches --seeds 99", "--list"]),
    "binary class file": (lambda t: ["data", "check", "dtd", "--root", _binary_split_root(t)],
                          ["class_names.txt is not a UTF-8 text file", "byte 0x80", "getting_the_data"]),
    "empty --out": (lambda t: ["run", "--dataset", "dtd", "--out", ""], ["--out is empty", "give a folder"]),
    "empty --records": (lambda t: ["runs", "--matrix", "table1", "--seeds", "1", "--records", " "],
                        ["--records is empty"]),
    "malformed --set": (lambda t: ["runs", "--list", "--set", "epochs=[1"],
                        ["--set epochs: '[1' is not a YAML value", "quote it"]),
    "malformed -p": (lambda t: ["notebook", "run", "notebooks/run.md", t / "x.ipynb", "-p", "seeds", "{bad"],
                     ["-p seeds: '{bad' is not a YAML value"]),
}


@pytest.mark.parametrize("case", BAD_COMMANDS)
def test_bad_commands_give_one_clear_error(case, capsys, tmp_path):
    argv, needles = BAD_COMMANDS[case]
    code, _, err = cli(capsys, *argv(tmp_path))
    assert_one_clear_error(code, err, *needles)


# Every float field of RunConfig and the range its error names, written out by hand (from the fields'
# meaning: fractions and probabilities in [0, 1], rates, decays and scales >= 0, diagnostics unbounded).
FLOAT_FIELDS = {
    "unlabelled_fraction": " in [0.01, 1.0]", "momentum": " in [0.0, 1.0]", "tau": " in [0.0, 1.0]",
    "max_main_ratio": " in [0.0, 1.0]", "cpl_alpha": " in [0.0, 1.0]", "cpl_beta": " in [0.0, 1.0]",
    "lr": " >= 0.0", "weight_decay": " >= 0.0", "baseline_lr": " >= 0.0", "baseline_weight_decay": " >= 0.0",
    "sim_prompt_lr_scale": " >= 0.0", "margin_scale": " >= 0.0", "schedule_factor": " >= 0.0",
    "baseline_grad_clip": " >= 0.0", "baseline_train_ratio": " in [0.01, 1.0]",
    "sim_confusion_strength": "", "sim_hard_fraction": "", "sim_mismatch_alignment": "", "sim_logit_scale": "",
}


@pytest.mark.parametrize("name", FLOAT_FIELDS)
def test_every_float_field_of_the_config_must_be_finite(name):
    for value, shown in ((math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")):
        with pytest.raises(ParameterError) as refused:
            resolve(make_config(dataset="dtd", **{name: value}))
        assert str(refused.value) == f"{name} must be a finite number{FLOAT_FIELDS[name]}, got {shown}"


def test_the_float_fields_listed_by_hand_are_all_of_them_and_their_bounds_are_inclusive():
    assert set(FLOAT_FIELDS) == {f.name for f in fields(RunConfig) if "float" in str(f.type)}, "new field: list it"
    config = resolve(make_config(dataset="dtd", tau=1.0, unlabelled_fraction=0.01, momentum=0.0, lr=0.0))
    assert (config.tau, config.unlabelled_fraction, config.momentum, config.lr) == (1.0, 0.01, 0.0, 0.0)
    for name, value in (("tau", 1.5), ("unlabelled_fraction", 0.005), ("momentum", -0.1), ("lr", -0.1)):
        with pytest.raises(ParameterError) as refused:
            resolve(make_config(dataset="dtd", **{name: value}))
        assert str(refused.value) == f"{name} must be a finite number{FLOAT_FIELDS[name]}, got {value}"
    assert check_float("x", 2, 0.0) == 2.0 and type(check_float("x", 2, 0.0)) is float  # an int comes back a float


def test_exponent_notation_on_the_command_line_is_a_number(capsys, tmp_path):
    code, _, err = cli(capsys, "run", "--dataset", "dtd", "--out", tmp_path, "--set", *SMALL_SET, "lr=1e400")
    assert_one_clear_error(code, err, "lr must be a finite number", "inf")  # 1e400 overflows: a float, not a string


# -- training that diverges ---------------------------------------------------------------------

def test_the_first_non_finite_loss_is_named():
    check_finite_losses(torch.tensor([1.0, 2.0]), "CAP epoch 0", "lower lr")
    with pytest.raises(TrainingDiverged, match=r"^training diverged: the loss is inf at step 1 of CAP epoch 4; .*: lower lr"):
        check_finite_losses(torch.tensor([1.0, math.inf, math.nan]), "CAP epoch 4", "lower lr")


@pytest.mark.parametrize("method, item, where", [("cap", "lr=1e30", "of CAP epoch 0"),
                                                 ("fpl", "baseline_lr=1e30", "of fpl round 1, epoch 0")])
def test_non_finite_losses_stop_the_run_naming_the_step(method, item, where, capsys, tmp_path):
    code, _, err = cli(capsys, "run", "--dataset", "dtd", "--method", method, "--out", tmp_path,
                       "--set", *SMALL_SET, "baseline_epochs=1", "baseline_warmup_epochs=0", item)
    assert_one_clear_error(code, err, "training diverged: the loss is nan at step ", where, "records no result",
                           "lower")
    assert not list(tmp_path.glob("run-*.json")), "no result"
    (failed,) = tmp_path.glob("failed-*.json")
    assert "TrainingDiverged" in read_current_record(failed)["results"]["error"]


# -- checkpoints ----------------------------------------------------------------------------------

class CodeInAPickle:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # unpickling it would create the marker folder
        return (os.mkdir, (str(self.marker),))


def _checkpoint_path(out: Path) -> Path:
    path = out / "checkpoints" / key_of() / "checkpoint.pt"
    path.parent.mkdir(parents=True)
    return path


def test_a_checkpoint_holding_a_pickled_object_is_refused_unread(capsys, tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"epoch": 0, "payload": CodeInAPickle(marker)}, _checkpoint_path(tmp_path))
    code, _, err = cli(capsys, "run", "--dataset", "dtd", "--out", tmp_path, "--set", *SMALL_SET)
    assert_one_clear_error(code, err, "holds a pickled object (", "mkdir)", "could run code", "delete it")
    assert not marker.exists(), "loading the checkpoint ran no code"


def test_a_checkpoint_missing_fields_is_a_clear_error(capsys, tmp_path):
    torch.save({"epoch": 0}, _checkpoint_path(tmp_path))
    code, _, err = cli(capsys, "run", "--dataset", "dtd", "--out", tmp_path, "--set", *SMALL_SET)
    assert_one_clear_error(code, err, "lacks adapter_opt, adapter_sched, adapters, backbone", "delete it")


def test_checkpoints_hold_plain_data_and_load_with_weights_only(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"sigma": np.arange(3), "n": np.int64(4), "dpl": {np.int64(2): [1, 2]}})
    loaded = load_checkpoint(path, ("sigma", "n", "dpl"))
    assert torch.equal(loaded["sigma"], torch.arange(3)) and loaded["n"] == 4 and loaded["dpl"] == {2: [1, 2]}
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="cannot be read.*delete it"):
        load_checkpoint(path)


def _without_time(results: dict) -> dict:
    return {k: v for k, v in results.items() if k not in ("train_seconds", "wall_seconds")}


@pytest.mark.parametrize("method", ["fpl", "grip", "cpl"])
def test_a_killed_baseline_resumes_after_its_last_round_to_the_same_result(method, tmp_path):
    config = make_config(dataset="eurosat", sim_train_per_class=16, sim_test_per_class=8, method=method, rounds=2,
                         baseline_epochs=2)
    whole = read_current_record(run(config, tmp_path / "whole"))["results"]
    with pytest.raises(RunInterrupted, match="after round 1"):
        run(config, tmp_path / "killed", stop_after=1)
    assert not list((tmp_path / "killed").glob("run-*.json"))
    assert list((tmp_path / "killed" / "checkpoints").rglob("checkpoint.pt"))
    resumed = read_current_record(run(config, tmp_path / "killed"))["results"]
    assert _without_time(resumed) == _without_time(whole)
    assert len(resumed["history"]) == (1 if method == "fpl" else 2)


# -- records --------------------------------------------------------------------------------------

def _zero_shot_run():
    (planned,) = plan("table1", "sim", datasets=["eurosat"], paradigms=["ul"], methods=["zero_shot"], seeds=[1])
    return planned


@pytest.mark.parametrize("body, problem", [([], "it holds a JSON list, not a record"),
                                           ({"version": RECORD_VERSION, "kind": "run"}, "field 'key' is missing")])
def test_a_malformed_record_is_stale_named_and_rerun(body, problem, capsys, tmp_path):
    planned = _zero_shot_run()
    records = tmp_path / "sim"
    records.mkdir()
    path = records / f"run-{planned.key}.json"
    path.write_text(json.dumps(body))
    status = record_status(planned.key, records)
    assert status.state == "stale" and problem in status.detail
    code, out, err = cli(capsys, "runs", "--list", "--matrix", "table1", "--dataset", "eurosat", "--paradigm", "ul",
                         "--method", "zero_shot", "--seeds", "1", "--records", records)
    assert code == 0 and out.startswith("stale") and problem in out, out + err
    frame = report.collect("table1", "sim", tmp_path, datasets=["eurosat"], paradigms=["ul"], methods=["zero_shot"],
                           seeds=[1])
    assert list(frame["state"]) == ["stale"] and "records are stale" in report.commands_html(frame, "sim")
    assert read_records(records) == []
    assert runs_table(tmp_path)["state"].str.startswith("stale (").all(), "the status page names it too"
    run(planned.config, records)  # where runs are skipped, a stale record is rerun
    assert read_current_record(path)["results"]["status"] == "ok"


def test_a_record_whose_key_is_not_its_config_hash_is_stale(tmp_path):
    path = write_record(tmp_path, "run", {"a": 1}, {"status": "ok", "headline": 1.0})
    record = json.loads(path.read_text())
    record["config"]["a"] = 2
    path.write_text(json.dumps(record))
    with pytest.raises(StaleRecordError, match="not the hash of its config"):
        read_current_record(path)


# -- files: modes, temporaries, writable folders ----------------------------------------------------

def _fail_halfway(tmp: Path) -> None:
    tmp.write_text("half")
    raise RuntimeError("killed")


def test_files_are_written_with_the_umask_and_no_temporary_is_left(tmp_path):
    old = os.umask(0o022)
    try:
        record = write_record(tmp_path, "run", {"a": 1}, {"status": "ok", "headline": 1.0})
        save_checkpoint(tmp_path / "c" / "checkpoint.pt", {"epoch": 0})
        assert oct(record.stat().st_mode & 0o777) == "0o644"
        assert oct((tmp_path / "c" / "checkpoint.pt").stat().st_mode & 0o777) == "0o644"
    finally:
        os.umask(old)
    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(tmp_path / "x.json", _fail_halfway)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", record.name]




def test_a_killed_writers_temporary_file_is_removed_by_the_next_notebook_run(tmp_path, root):
    from cap.experiments.notebooks import run_notebook

    writer = ("import time; from cap.atomic import atomic_write; "
              f"atomic_write({str(tmp_path / 'page.ipynb')!r}, lambda tmp: time.sleep(60))")
    proc = subprocess.Popen([sys.executable, "-c", writer], cwd=root)
    while not list(tmp_path.glob(".tmp-*")):
        assert proc.poll() is None
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    (left,) = tmp_path.glob(".tmp-*")
    other_machine = tmp_path / ".tmp-otherhost-999999999-ab.ipynb"
    other_machine.write_text("")
    (tmp_path / "tiny.md").write_text(TINY_NOTEBOOK)
    old = os.umask(0o022)
    try:
        output = run_notebook(tmp_path / "tiny.md", tmp_path / "tiny.ipynb")
    finally:
        os.umask(old)
    assert not left.exists() and other_machine.exists(), "the killed writer's file goes, another machine's stays"
    assert oct(output.stat().st_mode & 0o777) == "0o644"
    live = atomic_write(tmp_path / "mine.txt", lambda tmp: remove_stale_temporaries(tmp_path) or tmp.write_text("ok"))
    assert live.read_text() == "ok", "a live writer's temporary file stays"


def test_writable_folder_names_the_folder_the_reason_and_the_fix(tmp_path):
    assert writable_folder(tmp_path / "a" / "b", "records folder", "fix it").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(CapError, match=r"records folder .*file/sub cannot be created \(.*file is a file.*\); fix it"):
        writable_folder(tmp_path / "file" / "sub", "records folder", "fix it")


# -- weights, split files, the feature cache ------------------------------------------------------

@pytest.fixture
def tiny(weights, monkeypatch):
    from tiny_clip import TINY_B, tiny_config

    monkeypatch.delenv("CAP_CLIP_WEIGHTS", raising=False)
    monkeypatch.delenv("CAP_CACHE_DIR", raising=False)
    return weights[TINY_B], tiny_config


@pytest.mark.parametrize("content, what", [(b"", "an empty file (0 bytes)"),
                                           (b"this is not a weights file\n", "a text file"),
                                           (None, "a damaged or truncated zip archive")])
def test_an_unreadable_weights_file_says_what_it_is_and_where_real_weights_come_from(tiny, tmp_path, content, what):
    from cap.models.clip import WeightsError, load_clip

    good, tiny_config = tiny
    path = tmp_path / "w.pt"
    path.write_bytes(content if content is not None else good.read_bytes()[:5000])
    with pytest.raises(WeightsError) as caught:
        load_clip(tiny_config(weights=str(path)))
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and what in message
    assert "expected the weights of cap-tiny-b32 (about" in message and "download" in message


@pytest.fixture
def images(tmp_path) -> list[str]:
    from PIL import Image

    paths = []
    for k in range(6):
        path = tmp_path / f"img_{k}.png"
        Image.fromarray(np.random.default_rng(k).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_feature_cache_is_reported_and_recomputed(tiny, images, tmp_path, caplog, monkeypatch):
    from cap.models.openclip_backbone import OpenClipBackbone
    from cap.sources.feature_cache import FeatureCache, extract_image_features, feature_cache

    good, tiny_config = tiny
    backbone = OpenClipBackbone(tiny_config(weights=str(good), prompt="coop"), ["a", "b"])
    cache = tmp_path / "cache"
    whole = extract_image_features(backbone, images, batch_size=2, cache=cache)
    final = feature_cache(backbone, images, cache=cache).folder / "features.npy"
    for damage in (lambda p: p.write_bytes(p.read_bytes()[:100]), _flip_a_byte, lambda p: p.write_text("text")):
        damage(final)
        with caplog.at_level(logging.WARNING):
            again = extract_image_features(backbone, images, batch_size=2, cache=cache)
        assert f"feature cache file {final} is damaged" in caplog.text and np.array_equal(again, whole)
        caplog.clear()
    # a damaged chunk of an interrupted extraction: recomputed from that chunk on
    with monkeypatch.context() as patched:
        patched.setattr(FeatureCache, "finish", lambda self: None)
        extract_image_features(backbone, images, batch_size=2, cache=tmp_path / "c2", chunk_batches=1)
    entry = feature_cache(backbone, images, cache=tmp_path / "c2")
    middle = entry.folder / "chunk-000000002-000000004.npy"
    _flip_a_byte(middle)
    with caplog.at_level(logging.WARNING):
        assert entry.done() == 2
    assert f"{middle} is damaged" in caplog.text
    assert np.array_equal(extract_image_features(backbone, images, batch_size=2, cache=tmp_path / "c2"), whole)


def test_an_uncreatable_cache_dir_is_a_clear_error(tiny, images, tmp_path, monkeypatch):
    from cap.models.openclip_backbone import OpenClipBackbone
    from cap.sources.feature_cache import extract_image_features

    good, tiny_config = tiny
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("CAP_CACHE_DIR", str(tmp_path / "afile" / "cache"))
    backbone = OpenClipBackbone(tiny_config(weights=str(good), prompt="coop"), ["a", "b"])
    with pytest.raises(CapError, match="feature cache folder .* cannot be created .*afile is a file.*set CAP_CACHE_DIR"):
        extract_image_features(backbone, images)


def test_data_check_decodes_every_image_and_names_each_bad_one(capsys, tmp_path):
    from datagen import write_dataset

    folder = write_dataset("eurosat", tmp_path)
    bad = sorted(folder.glob("Forest/*.jpg"))[:2]
    for path in bad:
        path.write_bytes(path.read_bytes()[:60])
    code, out, err = cli(capsys, "data", "check", "eurosat", "--root", tmp_path)
    assert code == 1 and "Traceback" not in err
    assert all(f"cannot decode {path}" in out for path in bad)
    assert "2 image(s) cannot be decoded" in out and "images that decode" in out


# -- the book build ----------------------------------------------------------------------------------

def test_the_book_summary_lists_failed_runs_and_pages_and_strict_mode_fails(capsys, tmp_path):
    generated = tmp_path / "_generated"
    planned = plan("table1", "sim", datasets=["eurosat"], paradigms=["ul"], seeds=[1])
    for run_ in planned[1:]:
        write_record(generated / "records" / "sim", "run", as_dict(run_.config), {"status": "ok", "headline": 1.0})
    write_record(generated / "records" / "sim", "failed", as_dict(planned[0].config),
                 {"status": "failed", "error": "RuntimeError: boom"})
    select = ["--generated", generated, "--matrix", "table1", "--dataset", "eurosat", "--paradigm", "ul", "--seeds", "1"]
    code, _, err = cli(capsys, "book", "summary", *select)
    assert code == 0 and "1 of 5 sim runs have no result" in err and "RuntimeError: boom" in err and "STRICT=1" in err
    (generated / "pages").mkdir()
    (generated / "pages" / "table1.failed.ipynb").write_text("{}")
    code, _, err = cli(capsys, "book", "summary", *select, "--strict")
    assert code == 1 and "1 notebook(s) failed" in err and "table1.ipynb" in err
    (generated / "pages" / "table1.failed.ipynb").unlink()
    write_record(generated / "records" / "sim", "run", as_dict(planned[0].config), {"status": "ok", "headline": 1.0})
    code, out, _ = cli(capsys, "book", "summary", *select, "--strict")
    assert code == 0 and "all 5 sim runs have a result" in out
    assert not build_problems(generated, matrices=["table1"], datasets=["eurosat"], paradigms=["ul"], seeds=[1])



def test_two_run_commands_never_train_one_run_at_once(capsys, tmp_path):
    from cap.experiments.locks import RunLock

    key = key_of()
    with RunLock(key, tmp_path) as held:  # another `cap run` (or runner) is training it
        assert held.held
        code, _, err = cli(capsys, "run", "--dataset", "dtd", "--out", tmp_path, "--set", *SMALL_SET)
    assert_one_clear_error(code, err, f"run {key} is being trained by another process", "wait for it")
    assert not (tmp_path / f"run-{key}.json").exists()
    code, out, _ = cli(capsys, "run", "--dataset", "dtd", "--out", tmp_path, "--set", *SMALL_SET)
    assert code == 0 and (tmp_path / f"run-{key}.json").is_file()  # once free, it trains


def test_a_record_whose_headline_is_no_accuracy_is_stale(tmp_path):
    (planned,) = plan("table1", "sim", datasets=["eurosat"], paradigms=["ul"], methods=["zero_shot"], seeds=[1])
    for headline in (1e308, -1e9, float("nan")):
        write_record(tmp_path, "run", as_dict(planned.config), {"status": "ok", "headline": headline})
        status = record_status(planned.key, tmp_path)
        assert status.state == "stale" and "not an accuracy in [0, 100]" in status.detail


def test_a_sweep_of_a_selection_field_is_refused():
    from cap.experiments.matrix import MatrixError, parse_matrix

    base = {"title": "t", "datasets": ["eurosat"], "paradigms": ["ul"], "methods": ["cap"], "seeds": [1],
            "profiles": {"sim": {}}}
    for field, values in (("seed", [1, 2]), ("dataset", ["dtd"]), ("method", ["fpl"]), ("paradigm", ["ssl"])):
        with pytest.raises(MatrixError, match=f"a sweep cannot vary '{field}'"):
            parse_matrix("x", base | {"sweep": {"field": field, "values": values}})
