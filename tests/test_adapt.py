"""`cap adapt` and `cap predict` end to end on the tiny CLIP: a generated folder of images (two of
them corrupt), four class names (one misleading), a few labelled images and descriptions in; every
output checked; a killed run resumed to the classifier an uninterrupted run trains; the classifier
used on new images; and one clear message for each bad input."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_one_clear_error, cli
from PIL import Image
from tiny_clip import TINY_B, TINY_L, tiny_config

from cap.adapt.adaptation import OUTPUTS, AdaptRequest, adapt
from cap.adapt.classifier_file import read_classifier
from cap.adapt.folder_source import split_labelled
from cap.adapt.user_inputs import read_inputs
from cap.adapt.report_tables import balance_summary, confusion_table, curves, held_out_table
from cap.cli import main
from cap.data.images import load_rgb
from cap.methods.checkpoints import RunInterrupted
from cap.models.clip import WEIGHTS_ENV
from cap.models.openclip_backbone import OpenClipBackbone
from cap.sources.feature_cache import CACHE_ENV

# "jaguar" is the misleading name: with the seeded tiny CLIP its prompt matches no image cluster and
# zero-shot predicts it least, so mismatch detection flags it (t = ⌈4/10⌉ = 1 class).
CLASSES = ["red square", "green circle", "jaguar", "blue stripes"]
COLOURS = [(200, 30, 30), (30, 200, 30), (120, 120, 40), (30, 30, 200)]
JAGUAR_TEXTS = ["a large spotted wild cat", "a yellow sports car"]
# τ = 0.3: some unlabelled draws are confident with the tiny CLIP, so σ and the margin are not zero
SCHEDULE = ["--epochs", "3", "--set", "iters_per_epoch=2", "batch_size=4", "k=4", "prompt_depth=2", "tau=0.3"]


@pytest.fixture(scope="module", autouse=True)
def clean_env():
    with pytest.MonkeyPatch.context() as mp:
        for name in (WEIGHTS_ENV, CACHE_ENV):
            mp.delenv(name, raising=False)
        yield


def _picture(c: int, rng: np.random.Generator, size: int = 40) -> Image.Image:
    pixels = np.clip(np.array(COLOURS[c], float) + rng.normal(0, 25, (size, size, 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def _write_images(folder: Path, per_class: int, seed: int, nested: bool = True) -> None:
    rng = np.random.default_rng(seed)
    for c in range(len(CLASSES)):
        for k in range(per_class):
            path = folder / (f"batch{k % 2}/day{c}" if nested else "") / f"img_{c}_{k}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            _picture(c, rng).save(path)


def _corrupt(folder: Path) -> list[str]:
    truncated, text = folder / "broken.jpg", folder / "batch1" / "notes.png"
    truncated.write_bytes(next(folder.rglob("img_*.jpg")).read_bytes()[:100])
    text.write_text("not an image")
    (folder / "readme.txt").write_text("not an image suffix: ignored")
    return sorted(str(p) for p in (truncated, text))


@pytest.fixture(scope="module")
def files(tmp_path_factory, weights) -> dict:
    root = tmp_path_factory.mktemp("own_images")
    _write_images(root / "images", 8, seed=0)
    corrupt = _corrupt(root / "images")
    rng = np.random.default_rng(1)
    for c, name in enumerate(CLASSES):
        for k in range(3):  # one trains (n_label 2, at most half), two are held out
            path = root / "labelled" / name.replace(" ", "_") / f"{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            _picture(c, rng).save(path)
    (root / "classes.txt").write_text("\n".join(CLASSES[:2]) + "\n\n" + "\n".join(CLASSES[2:]) + "\n")
    (root / "descriptions.yml").write_text(f"jaguar: {json.dumps(JAGUAR_TEXTS)}\nred square: a red square\n")
    _write_images(root / "new", 2, seed=2, nested=False)
    (root / "new" / "empty.jpg").write_bytes(b"")
    return {"root": root, "corrupt": corrupt, "weights": str(weights[TINY_B]), "weights_l": str(weights[TINY_L])}


def _args(files: dict, out: Path, *extra: str) -> list[str]:
    root = files["root"]
    return ["adapt", root / "images", root / "classes.txt", "--out", out, "--labelled", root / "labelled",
            "--descriptions", root / "descriptions.yml", "--backbone", TINY_B, "--weights", files["weights"],
            "--workers", "0", "--cache", root / "cache", *SCHEDULE, *extra]


def _main(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


class _Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def adapted(files) -> dict:
    """`cap adapt` killed after its first epoch (the trainer's stop_after), then run again."""
    out = files["root"] / "out"
    request = AdaptRequest(images=str(files["root"] / "images"), classnames=str(files["root"] / "classes.txt"),
                           out=str(out), labelled=str(files["root"] / "labelled"),
                           descriptions=str(files["root"] / "descriptions.yml"),
                           settings={"backbone": TINY_B, "weights": files["weights"], "epochs": 3,
                                     "iters_per_epoch": 2, "batch_size": 4, "k": 4, "prompt_depth": 2, "tau": 0.3},
                           workers=0, cache=str(files["root"] / "cache"))
    with pytest.raises(RunInterrupted, match="after epoch 0"):
        adapt(request, stop_after=0)
    checkpoints = list((out / "checkpoints").rglob("checkpoint.pt"))
    written_when_killed = sorted(p.name for p in out.iterdir() if p.is_file())
    messages, logger = _Messages(), logging.getLogger("cap.methods.cap")
    level = logger.level
    logger.addHandler(messages)
    logger.setLevel(logging.INFO)
    try:
        code, stdout, stderr = _main(_args(files, out))
    finally:
        logger.removeHandler(messages)
        logger.setLevel(level)
    assert code == 0, stderr
    return {"out": out, "request": request, "stdout": stdout, "stderr": stderr, "checkpoints": checkpoints,
            "written_when_killed": written_when_killed, "log": messages.messages}


def test_killed_adapt_resumes_from_its_checkpoint_to_the_same_classifier(files, adapted, tmp_path):
    assert len(adapted["checkpoints"]) == 1 and adapted["written_when_killed"] == []
    assert any(m.startswith("resuming") and m.endswith("from epoch 1") for m in adapted["log"]), adapted["log"]
    assert not (adapted["out"] / "checkpoints").exists()  # removed once the outputs are written
    whole = AdaptRequest(**{**adapted["request"].__dict__, "out": str(tmp_path), "report": False})
    adapt(whole)
    resumed, uninterrupted = read_classifier(adapted["out"] / "classifier.pt"), read_classifier(tmp_path / "classifier.pt")
    for part in ("prompts", "adapters"):
        for name, value in uninterrupted[part].items():
            torch.testing.assert_close(resumed[part][name], value, rtol=0, atol=1e-6)
    pd.testing.assert_frame_equal(pd.read_csv(adapted["out"] / "predictions.csv"), pd.read_csv(tmp_path / "predictions.csv"))


def test_predictions_csv_lists_every_readable_image_with_both_classifiers(files, adapted):
    table = pd.read_csv(adapted["out"] / OUTPUTS["predictions"])
    images = sorted(str(p) for p in (files["root"] / "images").rglob("img_*.jpg"))
    assert list(table.columns) == ["path", "zero_shot_class", "zero_shot_confidence", "adapted_class",
                                   "adapted_confidence"]
    assert table["path"].tolist() == images  # 32 images, sorted; the corrupt ones and readme.txt left out
    assert set(table["zero_shot_class"]) | set(table["adapted_class"]) <= set(CLASSES)
    assert table[["zero_shot_confidence", "adapted_confidence"]].apply(lambda c: c.between(1 / 4, 1)).all().all()
    # the zero-shot columns are frozen CLIP's "a photo of a {}<class>" prediction, recomputed here
    frozen = OpenClipBackbone(tiny_config(weights=files["weights"], prompt="coop"), CLASSES)
    pixels = torch.stack([frozen.preprocess(load_rgb(p)) for p in images])
    probs = (frozen.logit_scale * frozen.zero_shot_image(pixels) @ frozen.zero_shot_text().T).softmax(1)
    assert table["zero_shot_class"].tolist() == [CLASSES[i] for i in probs.argmax(1)]
    np.testing.assert_allclose(table["zero_shot_confidence"], probs.max(1).values.numpy(), atol=1e-4)
    skipped = pd.read_csv(adapted["out"] / OUTPUTS["skipped"])
    assert sorted(skipped["path"]) == files["corrupt"] and skipped["why"].str.len().min() > 0
    for path in files["corrupt"]:
        assert f"skipped {path}:" in adapted["stderr"]


def test_classifier_file_holds_prompts_adapters_and_how_to_rebuild_them(files, adapted):
    state = read_classifier(adapted["out"] / OUTPUTS["classifier"])
    assert state["classnames"] == CLASSES and state["model"]["backbone"] == TINY_B
    assert state["model"]["prompt"] == "maple" and state["model"]["prompt_depth"] == 2
    assert state["weights"]["file"] == str(Path(files["weights"]).resolve())
    assert {"prompts.ctx"} <= set(state["prompts"]) and any(n.startswith("prompts.deep") for n in state["prompts"])
    assert {n.split(".")[0] for n in state["adapters"]} == {"text", "main", "pseudo"}
    assert state["config"]["epochs"] == 3 and state["config"]["mismatch_source"] == "detect"


def test_results_name_the_flagged_class_its_description_and_the_held_out_accuracy(adapted):
    results = json.loads((adapted["out"] / OUTPUTS["results"]).read_text())
    (flagged,) = results["flagged"]
    assert flagged["name"] == "jaguar" and flagged["described"] and flagged["description"] in JAGUAR_TEXTS
    assert len(flagged["zero_shot_images"]) == len(flagged["aligned_images"]) == 4  # k: the D_PL images shown
    assert f"class 'jaguar' looks mismatched" in adapted["stdout"] and "aligned with" in adapted["stdout"]
    assert results["config"]["paradigm"] == "ssl" and results["inputs"]["n_labelled_training"] == 4
    assert results["test"]["kind"] == "held-out labelled images" and results["test"]["n"] == 8
    assert results["test"]["counts"] == [2, 2, 2, 2]
    assert "accuracy on 8 held-out labelled images" in adapted["stdout"]
    assert [e["epoch"] for e in results["history"]] == [0, 1, 2] and results["budget"]["gradient_steps"] == 6
    assert sum(results["predicted_counts"]["adapted"]) == 32 and len(results["dpl_counts"]["zero_shot"]) == 4
    assert len(curves(results)) == 3 and list(balance_summary(results).index) == ["zero-shot", "adapted"]
    accuracy = held_out_table(results)
    assert accuracy.loc["all", "images"] == 8 and accuracy.loc["all", "adapted %"] == round(results["test"]["adapted"], 1)
    pairs = confusion_table(results)  # the last epoch's largest margins, by class name
    assert len(pairs) and (pairs["margin"] > 0).all() and set(pairs["label class"]) <= set(CLASSES)
    assert results["history"][-1]["margin_max"] == pytest.approx(pairs["margin"].max(), abs=1e-4)


def test_report_notebook_is_executed_with_every_section(adapted):
    notebook = nbformat.read(adapted["out"] / OUTPUTS["report"], as_version=4)
    text = "\n".join(cell.source for cell in notebook.cells)
    for heading in ("Class balance", "Flagged classes", "Confusion pairs", "Training curves", "held-out"):
        assert heading in text
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4  # balance, two image strips, curves
    shown = "".join(str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "jaguar" in shown and "imbalance ratio" in shown


def test_running_it_again_reuses_the_finished_adaptation(files, adapted):
    code, stdout, _ = _main(_args(files, adapted["out"], "--no-report"))
    assert code == 0 and stdout.strip().endswith(f"outputs in {adapted['out']}") and "already adapted" in stdout


def test_predict_classifies_new_images_and_agrees_with_adapt(files, adapted, tmp_path, capsys):
    classifier = adapted["out"] / OUTPUTS["classifier"]
    code, out, err = cli(capsys, "predict", classifier, files["root"] / "new", "--out", tmp_path / "new.csv",
                         "--device", "cpu", "--workers", "0")
    assert code == 0 and "classified 8 images on cpu" in out and "empty.jpg" in err
    table = pd.read_csv(tmp_path / "new.csv")
    assert list(table.columns) == ["path", "class", "confidence"] and len(table) == 8
    assert set(table["class"]) <= set(CLASSES)
    assert pd.read_csv(tmp_path / "new_skipped.csv")["path"].str.endswith("empty.jpg").all()
    code, _, _ = cli(capsys, "predict", classifier, files["root"] / "images", "--out", tmp_path / "again.csv",
                     "--workers", "0")
    again, adapt_csv = pd.read_csv(tmp_path / "again.csv"), pd.read_csv(adapted["out"] / OUTPUTS["predictions"])
    assert code == 0 and again["class"].tolist() == adapt_csv["adapted_class"].tolist()
    np.testing.assert_allclose(again["confidence"], adapt_csv["adapted_confidence"], atol=1e-4)


def test_a_labelled_folder_inside_the_image_folder_is_not_unlabelled_too(tmp_path):
    _write_images(tmp_path / "photos", 2, seed=3)
    for name in CLASSES[:2]:
        (tmp_path / "photos" / "labelled" / name).mkdir(parents=True)
        _picture(0, np.random.default_rng(0)).save(tmp_path / "photos" / "labelled" / name / "x.png")
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES))
    inputs = read_inputs(tmp_path / "photos", tmp_path / "classes.txt", tmp_path / "photos" / "labelled")
    assert len(inputs.images) == 8 and len(inputs.labelled_paths) == 2
    assert not set(inputs.images) & set(inputs.labelled_paths) and inputs.labelled_labels.tolist() == [1, 0]  # sorted


def test_split_labelled_holds_out_at_least_half_of_every_class():
    labels = np.array([0] * 5 + [1] * 1 + [2] * 2)
    train, held = split_labelled(labels, 2, seed=0)
    assert np.bincount(labels[train], minlength=3).tolist() == [2, 0, 1]
    assert sorted(train.tolist() + held.tolist()) == list(range(8))


# ----------------------------------------------------------------------------- bad inputs
def _bad_inputs(root: Path) -> dict:
    """name -> (arguments replacing the good ones, words the one error line must hold)."""
    def text(name, content, encoding="utf-8"):
        path = root / name
        path.write_bytes(content.encode(encoding))
        return path

    (root / "no_images").mkdir(exist_ok=True)
    (root / "no_images" / "notes.txt").write_text("x")
    (root / "all_corrupt").mkdir(exist_ok=True)
    (root / "all_corrupt" / "a.jpg").write_bytes(b"\xff\xd8 broken")
    (root / "labelled_odd" / "zebra").mkdir(parents=True, exist_ok=True)
    _picture(0, np.random.default_rng(0)).save(root / "labelled_odd" / "zebra" / "z.png")
    return {
        "duplicate class": ({"classnames": text("dup.txt", "cat\ndog\n\nCat\n")}, ["dup.txt", "'Cat' on line 4 repeats line 1"]),
        "one class": ({"classnames": text("one.txt", "cat\n\n")}, ["one.txt", "names 1 class", "at least two"]),
        "empty names file": ({"classnames": text("empty.txt", "\n  \n")}, ["empty.txt", "names 0 classes"]),
        "not UTF-8": ({"classnames": text("latin.txt", "café\nthé\n", "latin-1")}, ["latin.txt", "not UTF-8", "save it as UTF-8"]),
        "no images": ({"images": root / "no_images"}, ["no_images holds no images (1 other files)", ".jpg"]),
        "all corrupt": ({"images": root / "all_corrupt"}, ["all_corrupt: none of its 1 images can be read", "a.jpg"]),
        "missing folder": ({"images": root / "nowhere"}, ["image folder", "nowhere does not exist"]),
        "labelled sub-folder": ({"labelled": root / "labelled_odd"}, ["labelled_odd", "['zebra'] are not class names"]),
        "unknown description class": ({"descriptions": text("d1.yml", "tiger: [a big cat]\n")},
                                      ["d1.yml", "['tiger'] are not in the class names file"]),
        "descriptions not YAML": ({"descriptions": text("d2.yml", "jaguar: [unclosed\n")}, ["d2.yml", "not valid YAML"]),
        "descriptions not a list": ({"descriptions": text("d3.yml", "jaguar: [1, 2]\n")},
                                    ["d3.yml", "'jaguar' needs a non-empty list of non-empty strings"]),
        "description class twice": ({"descriptions": text("d4.yml", "jaguar: [a]\nred square: [b]\njaguar: [c]\n")},
                                    ["d4.yml", "'jaguar' is given twice (the second time on line 3)"]),
        "dataset setting": ({"set": ["dataset=eurosat"]}, ["--set dataset", "fixed for a folder of images"]),
        "unknown setting": ({"set": ["epoch=3"]}, ["--set epoch", "not a setting of a CAP run"]),
    }


def _bad_args(files: dict, out: Path, change: dict) -> list:
    root = files["root"]
    given = {"images": root / "images", "classnames": root / "classes.txt", "labelled": root / "labelled",
             "descriptions": root / "descriptions.yml", "set": ["prompt_depth=2"]} | change
    return ["adapt", given["images"], given["classnames"], "--out", out, "--labelled", given["labelled"],
            "--descriptions", given["descriptions"], "--backbone", TINY_B, "--weights", files["weights"],
            "--workers", "0", "--cache", root / "cache", "--set", *given["set"]]


def test_each_bad_input_gets_one_clear_message_before_clip_loads(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(OpenClipBackbone, "__init__", lambda *a, **k: pytest.fail("CLIP loaded"))
    for name, (change, needles) in _bad_inputs(tmp_path).items():
        code, _, err = cli(capsys, *_bad_args(files, tmp_path / "out", change))
        assert_one_clear_error(code, err, *[str(n) for n in needles])


def test_weights_of_another_backbone_are_one_clear_error(files, tmp_path, capsys):
    argv = [a if a != files["weights"] else files["weights_l"] for a in _bad_args(files, tmp_path / "out", {})]
    code, _, err = cli(capsys, *argv)
    assert_one_clear_error(code, err, files["weights_l"], f"does not fit backbone '{TINY_B}'", "Use the weights of")


def test_predict_refuses_what_is_not_a_classifier(files, tmp_path, capsys):
    code, _, err = cli(capsys, "predict", files["weights"], files["root"] / "new", "--out", tmp_path / "p.csv")
    assert_one_clear_error(code, err, files["weights"], "is not a classifier written by `cap adapt`")
    code, _, err = cli(capsys, "predict", tmp_path / "missing.pt", files["root"] / "new", "--out", tmp_path / "p.csv")
    assert_one_clear_error(code, err, "missing.pt does not exist")
    code, _, err = cli(capsys, "predict", files["weights"], files["root"] / "new", "--out", tmp_path / "p.txt")
    assert_one_clear_error(code, err, "p.txt should be a .csv file")
