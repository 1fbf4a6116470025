"""ImageSource (real images through a frozen tiny CLIP), the shipped description files, and CAP / FPL
runs end to end on the open_clip backend with a generated RESISC45 (45 classes, 90 pool images;
FPL on a generated EuroSAT)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datagen import write_dataset
from PIL import Image
from tiny_clip import TINY_B, tiny_config

from cap.config import make_config, resolve
from cap.data.images import load_rgb
from cap.data.registry import dataset_names, get_dataset
from cap.data.description_texts import (PROVENANCE_KEYS, DescriptionsError, load_descriptions,
                              load_descriptions_file)
from cap.sources.feature_cache import CACHE_ENV
from cap.sources.real_images import ImageSource
from cap.experiments.runs import run
from cap.methods.cap import CapTrainer
from cap.models.clip import WEIGHTS_ENV
from cap.models.openclip_backbone import OpenClipBackbone

DATASET = "resisc45"
RESISC = get_dataset(DATASET)
CHAPARRAL, TERRACE, AIRPLANE = (RESISC.classnames.index(n) for n in ("chaparral", "terrace", "airplane"))
PROVENANCE = {"written_by": "a test", "date": "2026-11-22", "prompt": "none", "method": "typed by hand"}


@pytest.fixture(scope="module", autouse=True)
def clean_env():
    with pytest.MonkeyPatch.context() as mp:
        for name in (WEIGHTS_ENV, CACHE_ENV, "CAP_DATA_ROOT"):
            mp.delenv(name, raising=False)
        yield


@pytest.fixture(scope="module")
def weights(weights) -> str:
    """The tiny ViT-B weights file (the session's tiny weights, conftest.py)."""
    return str(weights[TINY_B])


def _gradient(k: int) -> Image.Image:
    """64x48 image: red rises left to right (so a mirror image is detectable), green set by ``k``."""
    red = np.broadcast_to(np.linspace(0, 255, 64), (48, 64))
    blue = np.broadcast_to(np.linspace(0, 255, 48)[:, None], (48, 64))
    pixels = np.stack([red, np.full((48, 64), (37 * k) % 256), blue], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_dataset(DATASET, root, n_train=1, n_val=1, n_test=1)
    for k, path in enumerate(sorted((root / "RESICS45").rglob("*.jpg"))):  # images with structure
        _gradient(k).save(path, "JPEG", quality=95)
    return root


def _config(weights, data, **changes):
    return make_config(**{"dataset": DATASET, "backend": "openclip", "backbone": TINY_B, "weights": weights,
                          "precision": "fp32", "prompt_depth": 2, "data_root": str(data), **changes})


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def source(weights, data, cache) -> ImageSource:
    return ImageSource(_config(weights, data), num_workers=0, cache=cache)


@pytest.fixture(scope="module")
def frozen(weights, source) -> OpenClipBackbone:
    return OpenClipBackbone(tiny_config(weights=weights, prompt="coop"), source.classnames)


# ----------------------------------------------------------------------------- features and batches
def test_features_labels_and_split(source, frozen):
    assert len(source.classnames) == 45 and source.n_classes == 45
    assert source.zero_shot_image.shape == (90, 32) and source.zero_shot_text.shape == (45, 32)
    assert source.train_labels.shape == (90,) and source.test_labels.shape == (45,)
    assert source.split.unlabelled == list(range(90)) and source.split.labelled == []
    assert source.logit_scale == pytest.approx(frozen.logit_scale)
    np.testing.assert_allclose(np.linalg.norm(source.zero_shot_image, axis=1), 1, atol=1e-5)
    # the zero-shot text is the official bugged prompt "a photo of a {}<class>"
    np.testing.assert_allclose(source.zero_shot_text, frozen.zero_shot_text().numpy(), atol=1e-6)
    assert frozen.zero_shot_prompts[0] == "a photo of a {}airplane"
    images = torch.stack([frozen.preprocess(load_rgb(p)) for p in source.train_paths[:4]])
    np.testing.assert_allclose(source.zero_shot_image[:4], frozen.zero_shot_image(images).numpy(), atol=1e-5)


def test_batches_follow_the_order_and_weak_is_clip_preprocessing(source, frozen):
    order = np.array([7, 3, 88, 3, 41, 0, 12, 5, 60, 2])
    batches = list(source.batches(order, 4, ("weak",), None))
    assert [b["index"].tolist() for b in batches] == [[7, 3, 88, 3], [41, 0, 12, 5]]  # drop_last
    assert set(batches[0]) == {"index", "weak"} and batches[0]["weak"].shape == (4, 3, 32, 32)
    torch.testing.assert_close(batches[0]["weak"][2], frozen.preprocess(load_rgb(source.train_paths[88])))
    tail = list(source.batches(order, 4, ("weak",), None, drop_last=False))
    assert [len(b["index"]) for b in tail] == [4, 4, 2]


def test_strong_view_is_flipped_random_crop_and_differs_from_weak(source):
    batch = next(source.batches(np.arange(8), 8, ("weak", "strong"), torch.Generator().manual_seed(0)))
    weak, strong = batch["weak"], batch["strong"]
    assert strong.shape == weak.shape == (8, 3, 32, 32)
    assert not torch.allclose(weak, strong)
    red_left_to_right = lambda x: x[:, 0, :, -1].mean(1) - x[:, 0, :, 0].mean(1)  # noqa: E731
    assert (red_left_to_right(weak) > 0).all()  # red rises to the right in the files
    assert (red_left_to_right(strong) < 0).all()  # the strong view is always mirrored (p = 1)


def test_batches_are_deterministic_given_the_generator_seed(weights, data, cache, source):
    order = np.array([5, 9, 1, 30, 31, 77])

    def strong(src, seed):
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([b["strong"] for b in src.batches(order, 3, ("weak", "strong"), gen)])

    first, again, other = strong(source, 1), strong(source, 1), strong(source, 2)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other)
    # per-image seeds: the same tensors with two worker processes
    workers = ImageSource(_config(weights, data), num_workers=2, cache=cache)
    torch.testing.assert_close(strong(workers, 1), first, rtol=0, atol=0)
    # no generator: the seeds come from torch's global generator
    torch.manual_seed(3)
    a = next(source.batches(order, 3, ("strong",), None))["strong"]
    torch.manual_seed(3)
    torch.testing.assert_close(next(source.batches(order, 3, ("strong",), None))["strong"], a, rtol=0, atol=0)


def test_test_batches(source, frozen):
    batches = list(source.test_batches(16))
    assert [len(y) for _, y in batches] == [16, 16, 13]
    np.testing.assert_array_equal(torch.cat([y for _, y in batches]).numpy(), source.test_labels)
    torch.testing.assert_close(batches[1][0][0], frozen.preprocess(load_rgb(source.test_paths[16])))


def test_second_construction_reads_the_cache_and_leaves_the_rng_alone(weights, data, cache, source, monkeypatch):
    calls = []
    original = OpenClipBackbone.zero_shot_image
    monkeypatch.setattr(OpenClipBackbone, "zero_shot_image", lambda self, x: calls.append(len(x)) or original(self, x))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    again = ImageSource(_config(weights, data), num_workers=0, cache=cache)
    torch.testing.assert_close(torch.rand(3), expected)  # building the source drew nothing from torch's RNG
    assert calls == [] and again.features_from_cache
    np.testing.assert_array_equal(again.zero_shot_image, source.zero_shot_image)
    clean = ImageSource(_config(weights, data, template_bug=False), num_workers=0, cache=cache)
    assert calls == [] and not np.allclose(clean.zero_shot_text, source.zero_shot_text)


# ----------------------------------------------------------------------------- descriptions
def _write_yaml(path: Path, classes: dict, provenance: dict | None = None) -> Path:
    path.write_text(json.dumps({"provenance": provenance or PROVENANCE, "classes": classes}))  # JSON is YAML
    return path


def test_shipped_descriptions_are_encoded_raw(source, frozen):
    assert source.descriptions_source == "cap/data/descriptions/resisc45.yml"
    features = source.description_features([AIRPLANE, CHAPARRAL, TERRACE])
    assert sorted(features) == [CHAPARRAL, TERRACE] and features[CHAPARRAL].shape == (5, 32)
    expected = frozen.encode_raw_text(load_descriptions(DATASET)["terrace"]).numpy()  # no template
    np.testing.assert_allclose(features[TERRACE], expected, atol=1e-6)


def test_user_descriptions_file(weights, data, cache, frozen, tmp_path):
    texts = {"airplane": ["a white plane on grey tarmac", "an airliner seen from above"],
             "chaparral": ["brown scrub on hills", "dry shrubs", "olive bushes on tan soil"]}
    mine = str(_write_yaml(tmp_path / "mine.yml", texts))
    src = ImageSource(_config(weights, data).replace(descriptions=mine), num_workers=0, cache=cache)
    assert src.descriptions_source == str(tmp_path / "mine.yml")
    features = src.description_features(range(45))
    assert sorted(features) == [AIRPLANE, CHAPARRAL]
    for name, index in (("airplane", AIRPLANE), ("chaparral", CHAPARRAL)):
        np.testing.assert_allclose(features[index], frozen.encode_raw_text(texts[name]).numpy(), atol=1e-6)


def test_bad_descriptions_file_fails_before_loading_clip(weights, data, tmp_path, monkeypatch):
    bad = _write_yaml(tmp_path / "bad.yml", {"chaparral": ["ok"], "jungle": ["x"], "moon base": ["y"]})
    monkeypatch.setattr(OpenClipBackbone, "__init__", lambda *a, **k: pytest.fail("CLIP loaded"))
    with pytest.raises(DescriptionsError, match=r"bad\.yml: class names \['jungle', 'moon base'\] are not classes"):
        ImageSource(_config(weights, data).replace(descriptions=str(bad)), num_workers=0)


@pytest.mark.parametrize("content, message", [
    ({"provenance": PROVENANCE, "classes": {"chaparral": []}}, "'chaparral' needs a non-empty list"),
    ({"provenance": PROVENANCE, "classes": {"chaparral": ["fine", " "]}}, "not non-empty strings"),
    ({"provenance": PROVENANCE, "classes": {"chaparral": "one string"}}, "needs a non-empty list"),
    ({"provenance": {"written_by": "me"}, "classes": {}}, r"provenance lacks \['date', 'prompt', 'method'\]"),
    ({"classes": {}}, "exactly the keys 'provenance' and 'classes'"),
    ({"provenance": PROVENANCE, "classes": {}, "extra": 1}, "exactly the keys"),
    ({"provenance": PROVENANCE, "classes": ["chaparral"]}, "'classes' must be a mapping"),
])
def test_descriptions_validation(tmp_path, content, message):
    path = tmp_path / "d.yml"
    path.write_text(json.dumps(content))
    with pytest.raises(DescriptionsError, match=f"{path}.*{message}|{message}.*{path}"):
        load_descriptions(DATASET, path)


def test_descriptions_file_errors(tmp_path):
    with pytest.raises(DescriptionsError, match="does not exist"):
        load_descriptions(DATASET, tmp_path / "missing.yml")
    broken = tmp_path / "broken.yml"
    broken.write_text("classes: [unclosed\n")
    with pytest.raises(DescriptionsError, match="broken.yml is not valid YAML"):
        load_descriptions(DATASET, broken)
    twice = tmp_path / "twice.yml"
    twice.write_text(f"provenance: {json.dumps(PROVENANCE)}\nclasses:\n  terrace: [a]\n  terrace: [b]\n")
    with pytest.raises(DescriptionsError, match="'terrace' appears twice"):
        load_descriptions(DATASET, twice)


@pytest.mark.parametrize("dataset", dataset_names())
def test_shipped_descriptions_files(dataset):
    info = get_dataset(dataset)
    file = load_descriptions_file(dataset)
    assert set(file.classes) == set(info.official_mismatched)  # EuroSAT: none
    assert set(file.classes) <= set(info.classnames)
    for texts in file.classes.values():
        assert len(texts) == 5 and len(set(texts)) == 5 and all(t.endswith(".") for t in texts)
    assert set(PROVENANCE_KEYS) <= set(file.provenance)
    assert file.provenance["date"] == "2026-11-22" and "{class}" in file.provenance["prompt"]
    assert "large language model" in file.provenance["written_by"]
    assert "not validated" in file.provenance["method"].lower()


# ----------------------------------------------------------------------------- training on images
def test_one_cap_step_changes_only_prompts_and_adapters(weights, data, source, tmp_path):
    config = resolve(_config(weights, data, iters_per_epoch=1, batch_size=4, warmup_epochs=0, tau=0.0))
    backbone = OpenClipBackbone(tiny_config(weights=weights, prompt_depth=2), source.classnames)
    trainer = CapTrainer(config, source, backbone, tmp_path, torch.device("cpu"))
    board, _ = trainer.initial_dpl()
    margin = trainer.margin(board, np.ones(45, dtype=np.int64))  # D_PL prototypes through the source
    assert margin.shape == (45, 45)
    clip_before = {k: v.clone() for k, v in backbone.clip.state_dict().items()}
    prompts_before = {k: v.detach().clone() for k, v in backbone.prompts.named_parameters()}
    adapters_before = {k: v.detach().clone() for k, v in trainer.adapters.named_parameters()}
    out = trainer.train_epoch(0, board, margin)
    assert np.isfinite(out["loss"]) and out["masked_share"] == 1.0  # tau = 0: every draw trains phi^p
    for name, value in backbone.clip.state_dict().items():  # every CLIP weight and buffer bit-identical
        assert torch.equal(value, clip_before[name]), name
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == {f"prompts.{n}" for n in prompts_before}
    changed = [n for n, p in backbone.prompts.named_parameters() if not torch.equal(p, prompts_before[n])]
    assert "ctx" in changed and any(n.startswith("deep") for n in changed), changed
    for part in ("text", "main", "pseudo"):
        assert any(not torch.equal(p, adapters_before[n]) for n, p in trainer.adapters.named_parameters()
                   if n.startswith(part)), part


def test_cap_and_fpl_runs_write_records(weights, data, cache, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(cache))
    base = dict(epochs=1, iters_per_epoch=2, batch_size=4, mismatch_source="official")
    record = json.loads(run(_config(weights, data, method="cap", **base), tmp_path).read_text())
    results = record["results"]
    assert results["status"] == "ok" and record["config"]["backend"] == "openclip"
    assert 0 <= results["headline"] <= 100 and len(results["metrics"]["per_class_accuracy"]) == 45
    assert results["setup"]["concept_alignment"]["described"] == [CHAPARRAL, TERRACE]
    assert len(results["history"]) == 1 and results["device"] == "cpu"
    # FPL (CoOp prompts) on EuroSAT: 10 classes keep its top-16 boards small (a few steps). The batch
    # stays below the board size (44 entries): baselines.fit mis-slices targets when it is larger.
    write_dataset("eurosat", data, n_train=2, n_val=0, n_test=1)
    fpl = run(_config(weights, data, dataset="eurosat", method="fpl", baseline_epochs=1, baseline_batch_size=16),
              tmp_path)
    fpl = json.loads(fpl.read_text())["results"]
    assert fpl["status"] == "ok" and fpl["history"][0]["round"] == 1 and len(fpl["metrics"]["per_class_accuracy"]) == 10
