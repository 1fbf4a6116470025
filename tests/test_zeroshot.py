"""Zero-shot predictions and their scores per paradigm (hand-computed cases), the end-to-end run on a
generated dataset with a tiny CLIP, and the real-data run notebook."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from datagen import write_dataset
from tiny_clip import TINY_B, tiny_config

from cap.data.splits import trzsl_split
from cap.errors import ParameterError, UnknownNameError
from cap.sources.feature_cache import CACHE_ENV
from cap.models.clip import WEIGHTS_ENV
from cap.models.openclip_backbone import OpenClipBackbone
from cap.experiments.notebooks import NotebookError, run_notebook
from cap.experiments.records import read_records
from cap.methods.zero_shot import evaluate_zero_shot, run_zero_shot, zero_shot_predictions

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "zero_shot_real.md"


# ----------------------------------------------------------------------------- predictions
def test_predictions_softmax_of_scaled_cosines_by_hand():
    image = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, -1.0]])
    text = np.array([[1.0, 0.0], [0.0, 1.0]])
    pred, probs = zero_shot_predictions(image, text, logit_scale=2.0)
    np.testing.assert_array_equal(pred, [0, 1, 0])
    e = math.e
    expected = np.array([[e**2 / (e**2 + 1), 1 / (e**2 + 1)],
                         [e**1.2 / (e**1.2 + e**1.6), e**1.6 / (e**1.2 + e**1.6)],
                         [1 / (1 + e**-2), e**-2 / (1 + e**-2)]])
    np.testing.assert_allclose(probs, expected, rtol=1e-12)


def test_predictions_stay_finite_at_clip_scale_and_reject_bad_shapes():
    rng = np.random.default_rng(0)
    image, text = rng.normal(size=(50, 8)), rng.normal(size=(4, 8))
    pred, probs = zero_shot_predictions(10 * image, text, logit_scale=100.0)  # logits in the thousands
    assert np.isfinite(probs).all() and np.allclose(probs.sum(1), 1) and probs.shape == (50, 4)
    np.testing.assert_array_equal(pred, (image @ text.T).argmax(1))
    with pytest.raises(ParameterError, match="must be"):
        zero_shot_predictions(image, rng.normal(size=(4, 7)), 100.0)


# ----------------------------------------------------------------------------- scores
@pytest.mark.parametrize("paradigm", ["ul", "ssl", "UL"])
def test_top1_and_per_class_by_hand(paradigm):
    result = evaluate_zero_shot([0, 1, 2, 2], [0, 1, 1, 2], paradigm, n_classes=4)
    assert result["top1"] == 75.0 and result["n_test"] == 4 and "harmonic_mean" not in result
    np.testing.assert_array_equal(result["per_class"], [100.0, 100.0, 50.0, np.nan])


def test_trzsl_seen_unseen_and_harmonic_mean_by_hand():
    """EuroSAT-sized: seed 500 splits 10 classes into 6 seen and 4 unseen. Four test images of seen
    classes (one predicted as an unseen class: wrong, the argmax runs over all classes) and two of
    unseen classes (one predicted as a seen class): seen 75 %, unseen 50 %, H = 2·75·50/125 = 60 %."""
    seen, unseen = trzsl_split(10, 500)
    assert (seen, unseen) == ([0, 2, 3, 4, 5, 9], [1, 6, 7, 8])
    labels = [0, 2, 3, 4, 1, 6]
    predicted = [0, 2, 3, 7, 1, 5]
    image = np.eye(10)[predicted]  # each image points exactly at the class it should be predicted as
    pred, _ = zero_shot_predictions(image, np.eye(10), logit_scale=100.0)
    np.testing.assert_array_equal(pred, predicted)
    result = evaluate_zero_shot(labels, pred, "trzsl", n_classes=10, split_seed=500)
    assert (result["seen"], result["unseen"], result["harmonic_mean"]) == (75.0, 50.0, 60.0)
    assert result["seen_classes"] == seen and result["unseen_classes"] == unseen
    assert result["per_class"][4] == 0.0 and result["per_class"][6] == 0.0 and np.isnan(result["per_class"][8])
    other_split = evaluate_zero_shot(labels, pred, "trzsl", n_classes=10, split_seed=0)
    assert other_split["seen_classes"] != seen


def test_score_errors():
    with pytest.raises(UnknownNameError, match="trzsl"):
        evaluate_zero_shot([0], [0], "zsl", n_classes=2)
    with pytest.raises(ParameterError, match="same length"):
        evaluate_zero_shot([0, 1], [0], "ul", n_classes=2)
    with pytest.raises(ParameterError, match="0..1"):
        evaluate_zero_shot([0, 2], [0, 1], "ul", n_classes=2)
    with pytest.raises(ParameterError, match="unseen classes"):  # no test image of an unseen class
        evaluate_zero_shot([0, 2], [0, 2], "trzsl", n_classes=10)


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_dataset("eurosat", root, n_train=1, n_val=0, n_test=2)
    return root


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    for name in (WEIGHTS_ENV, CACHE_ENV, "CAP_DATA_ROOT"):
        monkeypatch.delenv(name, raising=False)


def test_run_zero_shot_end_to_end_and_cache_reuse(weights, data, tmp_path, monkeypatch):
    config = tiny_config(weights=str(weights[TINY_B]), prompt="coop")
    images_through_model = []
    original = OpenClipBackbone.zero_shot_image

    def counted(self, images):
        images_through_model.append(len(images))
        return original(self, images)

    monkeypatch.setattr(OpenClipBackbone, "zero_shot_image", counted)
    run = run_zero_shot("EuroSAT", "trzsl", data_root=data, model_config=config, batch_size=8, cache=tmp_path)
    assert sum(images_through_model) == 20 and not run["features_from_cache"]
    assert (run["dataset"], run["paradigm"], run["n_test"], run["n_classes"]) == ("eurosat", "trzsl", 20, 10)
    assert run["prompts"][0] == "a photo of a {}annual crop land" and len(run["prompts"]) == 10
    metrics = run["metrics"]
    assert {"seen", "unseen", "harmonic_mean", "per_class", "n_test"} <= set(metrics)
    assert all(0 <= metrics[k] <= 100 for k in ("seen", "unseen", "harmonic_mean"))
    assert metrics["per_class"].shape == (10,) and run["predictions"].shape == run["labels"].shape == (20,)
    assert run["weights"]["file"] == str(Path(weights[TINY_B]).resolve()) and run["precision"] == "fp32"
    assert ((run["confidence"] > 0) & (run["confidence"] <= 1)).all()

    again = run_zero_shot("eurosat", "ul", data_root=data, model_config=config, batch_size=8, cache=tmp_path)
    assert sum(images_through_model) == 20 and again["features_from_cache"]
    np.testing.assert_array_equal(again["predictions"], run["predictions"])
    assert again["metrics"]["top1"] == pytest.approx(100 * np.mean(run["predictions"] == run["labels"]))


# ----------------------------------------------------------------------------- the run notebook
@pytest.fixture
def kernel_knows_tiny_models(tmp_path, monkeypatch):
    """The notebook kernel is a fresh process: an IPython startup file registers the tiny configs there."""
    startup = tmp_path / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    tests = Path(__file__).resolve().parent
    (startup / "00-tiny-clip.py").write_text(f"import sys\nsys.path.insert(0, {str(tests)!r})\nimport tiny_clip\n")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


def test_notebook_runs_and_writes_a_record(weights, data, tmp_path, monkeypatch, kernel_knows_tiny_models):
    monkeypatch.setenv(WEIGHTS_ENV, str(weights[TINY_B]))
    parameters = {"dataset": "eurosat", "paradigm": "trzsl", "data_root": str(data), "backbone": TINY_B,
                  "batch_size": 16, "record_dir": str(tmp_path / "records")}
    out = run_notebook(NOTEBOOK, tmp_path / "page.ipynb", parameters)
    (record,) = read_records(tmp_path / "records", "zero_shot_real")
    assert record["config"]["dataset"] == "eurosat" and record["config"]["backbone"] == TINY_B
    assert record["config"]["weights"] == str(Path(weights[TINY_B]).resolve())
    results = record["results"]
    assert {"seen", "unseen", "harmonic_mean", "per_class_accuracy", "reference", "prompts"} <= set(results)
    assert results["reference"]["value"] == 30.5 and results["reference"]["verified"] is True
    assert results["reference"]["difference"] == pytest.approx(results["harmonic_mean"] - 30.5)
    assert results["n_test"] == 20 and len(results["per_class_accuracy"]) == 10
    page = json.loads(out.read_text())
    text = json.dumps(page)
    assert "This page is real data, not a simulation" in text
    assert "# Zero-shot CLIP on real data: eurosat, trzsl" in text
    assert "image/png" in text  # the per-class figure
    assert "ours - published" in text


def test_notebook_fails_with_the_cap_error_when_data_is_missing(tmp_path):
    parameters = {"dataset": "eurosat", "paradigm": "ul", "data_root": str(tmp_path / "nowhere"),
                  "record_dir": str(tmp_path / "records")}
    with pytest.raises(NotebookError, match=r"DataRootError: data root .*nowhere is not a directory"):
        run_notebook(NOTEBOOK, tmp_path / "page.ipynb", parameters)
    assert not (tmp_path / "records").exists() and not (tmp_path / "page.ipynb").exists()


def test_notebook_parameters_are_papermill_readable():
    import jupytext

    from cap.experiments.notebooks import declared_parameters

    declared = declared_parameters(jupytext.read(NOTEBOOK))
    assert declared["data_root"]["type"] == "Optional[str]" and declared["template_bug"]["type"] == "bool"
    assert {"dataset", "paradigm", "weights", "backbone", "split_seed", "record_dir"} <= set(declared)


def test_run_zero_shot_missing_data_or_weights_are_cap_errors(weights, data, tmp_path):
    from cap.data import DataRootError
    from cap.errors import CapError

    with pytest.raises(DataRootError, match="CAP_DATA_ROOT"):
        run_zero_shot("eurosat", "ul", model_config=tiny_config(prompt="coop"), cache=tmp_path)
    missing = tiny_config(weights=str(tmp_path / "nowhere.pt"), prompt="coop")
    with pytest.raises(CapError, match=f"nowhere.pt.*{WEIGHTS_ENV}"):
        run_zero_shot("eurosat", "ul", data_root=data, model_config=missing, cache=tmp_path)
