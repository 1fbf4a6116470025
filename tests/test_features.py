"""Frozen-CLIP feature extraction: batching, the disk cache and its key, resuming after failures.

Tiny open_clip models (random weights, CPU) on small generated images."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tiny_clip import EMBED_DIM, TINY_B, TINY_L, save_tiny_weights, tiny_config
from torchvision import transforms as T

from cap.data.images import ImageReadError, load_rgb
from cap.errors import ParameterError
from cap.sources.feature_cache import (
    CACHE_ENV,
    cache_dir,
    extract_image_features,
    feature_cache,
    zero_shot_text_features,
)
from cap.models.clip import WEIGHTS_ENV
from cap.models.openclip_backbone import OpenClipBackbone

CLASSES = ["forest", "river", "annual crop land"]
N_IMAGES = 12


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.delenv(CACHE_ENV, raising=False)


def write_image(path, seed: int) -> None:
    """A 20x24 noise image (not square: the resize and centre crop both matter)."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "PNG")


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("images")
    files = [folder / f"img_{k:02d}.png" for k in range(N_IMAGES)]
    for k, path in enumerate(files):
        write_image(path, k)
    return [str(p) for p in files]


@pytest.fixture(scope="module")
def backbone(weights) -> OpenClipBackbone:
    return OpenClipBackbone(tiny_config(weights=str(weights[TINY_B]), prompt="coop"), CLASSES)


def count_forwards(monkeypatch, bb: OpenClipBackbone) -> dict:
    """Wrap ``bb.zero_shot_image`` to count batches and images that went through the model."""
    calls = {"batches": 0, "images": 0}
    original = bb.zero_shot_image

    def counted(images):
        calls["batches"] += 1
        calls["images"] += len(images)
        return original(images)

    monkeypatch.setattr(bb, "zero_shot_image", counted)
    return calls


def reference_features(bb: OpenClipBackbone, paths: list[str], transform=None) -> np.ndarray:
    """One image at a time through open_clip's own encode_image: what batching must reproduce."""
    transform = transform or bb.preprocess
    with torch.no_grad():
        rows = [F.normalize(bb.clip.encode_image(transform(load_rgb(p)).unsqueeze(0)), dim=-1)[0] for p in paths]
    return torch.stack(rows).numpy()


def entries(cache) -> list:
    return sorted(p.name for p in (cache / "features").iterdir()) if (cache / "features").is_dir() else []


# ----------------------------------------------------------------------------- cache location
def test_cache_dir_argument_then_env_then_home(tmp_path, monkeypatch):
    assert cache_dir() == cache_dir(None)
    assert str(cache_dir()).endswith(os.path.join(".cache", "cap"))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"


# ----------------------------------------------------------------------------- correctness
@pytest.mark.parametrize("batch_size, num_workers", [(1, 0), (5, 0), (256, 0), (4, 1)])
def test_batched_equals_unbatched_reference(backbone, paths, tmp_path, batch_size, num_workers):
    features = extract_image_features(backbone, paths, batch_size=batch_size, num_workers=num_workers, cache=tmp_path)
    assert features.shape == (N_IMAGES, EMBED_DIM[TINY_B]) and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(features, reference_features(backbone, paths), atol=1e-5, rtol=0)


def test_text_features_are_the_frozen_prompt_features(backbone):
    text = zero_shot_text_features(backbone)
    assert text.shape == (len(CLASSES), EMBED_DIM[TINY_B]) and text.dtype == np.float32
    np.testing.assert_array_equal(text, backbone.zero_shot_text().numpy())


# ----------------------------------------------------------------------------- the cache and its key
def test_second_call_reads_the_cache_without_a_forward(backbone, paths, tmp_path, monkeypatch):
    calls = count_forwards(monkeypatch, backbone)
    first = extract_image_features(backbone, paths, batch_size=5, cache=tmp_path)
    assert calls == {"batches": 3, "images": N_IMAGES}
    entry = feature_cache(backbone, paths, cache=tmp_path)
    assert sorted(p.name for p in entry.folder.iterdir()) == ["features.npy", "features.npy.sha256", "key.json"]  # chunks joined
    second = extract_image_features(backbone, paths, batch_size=7, cache=tmp_path)  # batch size is not in the key
    assert calls["batches"] == 3
    np.testing.assert_array_equal(first, second)


def test_cache_from_environment_variable(backbone, paths, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    extract_image_features(backbone, paths[:2])
    assert len(entries(tmp_path)) == 1


def _variants(weights, paths, tmp_path):
    """name -> (backbone, paths, transform) differing from the baseline in one key part."""
    copied = tmp_path / "copy.pt"
    shutil.copy(weights[TINY_B], copied)
    preprocess = T.Compose([T.Resize(32, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(32), T.ToTensor(),
                            T.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))])

    def bb(**overrides):
        config = tiny_config(**{"weights": str(weights[TINY_B]), "prompt": "coop", **overrides})
        return OpenClipBackbone(config, CLASSES)

    return {
        "weights file": (bb(weights=str(copied)), paths, None),
        "precision": (bb(precision="bf16"), paths, None),
        "transform": (bb(), paths, preprocess),
        "file order": (bb(), paths[::-1], None),
        "file list": (bb(), paths[:-1], None),
        "backbone": (bb(backbone=TINY_L, weights=str(weights[TINY_L])), paths, None),
    }


def test_each_key_part_gives_a_new_entry(weights, paths, tmp_path, monkeypatch):
    baseline = OpenClipBackbone(tiny_config(weights=str(weights[TINY_B]), prompt="coop"), CLASSES)
    cache = tmp_path / "cache"
    reference = extract_image_features(baseline, paths, batch_size=6, cache=cache)
    for name, (bb, files, transform) in _variants(weights, paths, tmp_path).items():
        calls = count_forwards(monkeypatch, bb)
        n_entries = len(entries(cache))
        features = extract_image_features(bb, files, batch_size=6, cache=cache, transform=transform)
        assert calls["images"] == len(files), name
        assert len(entries(cache)) == n_entries + 1, name
        assert len(features) == len(files), name
        if name == "file order":
            np.testing.assert_allclose(features, reference[::-1], atol=1e-6)
        calls["images"] = 0
        extract_image_features(bb, files, batch_size=6, cache=cache, transform=transform)
        assert calls["images"] == 0, f"{name}: the new entry is not reused"


def test_weights_file_rewritten_in_place_invalidates(weights, paths, tmp_path, monkeypatch):
    path = tmp_path / "w.pt"
    shutil.copy(weights[TINY_B], path)
    bb = OpenClipBackbone(tiny_config(weights=str(path), prompt="coop"), CLASSES)
    before = extract_image_features(bb, paths, cache=tmp_path / "cache")
    save_tiny_weights(path, TINY_B, seed=5)  # same name and size, other values
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    reloaded = OpenClipBackbone(tiny_config(weights=str(path), prompt="coop"), CLASSES)
    calls = count_forwards(monkeypatch, reloaded)
    after = extract_image_features(reloaded, paths, cache=tmp_path / "cache")
    assert calls["images"] == N_IMAGES and len(entries(tmp_path / "cache")) == 2
    assert not np.allclose(before, after)


# ----------------------------------------------------------------------------- failures and resuming
@pytest.mark.parametrize("num_workers", [0, 1])
def test_corrupt_image_keeps_chunks_and_rerun_computes_only_the_rest(backbone, paths, tmp_path, monkeypatch,
                                                                     num_workers):
    files = [str(tmp_path / f"copy_{k:02d}.png") for k in range(N_IMAGES)]
    for source, target in zip(paths, files):
        shutil.copy(source, target)
    with open(files[7], "wb") as handle:
        handle.write(b"not an image")
    cache = tmp_path / "cache"
    with pytest.raises(ImageReadError, match="copy_07.png"):
        extract_image_features(backbone, files, batch_size=2, num_workers=num_workers, cache=cache, chunk_batches=1)
    entry = feature_cache(backbone, files, cache=cache)
    assert entry.done() == 6 and entry.load() is None  # batches [0,2) [2,4) [4,6) are on disk

    shutil.copy(paths[7], files[7])  # the file is fixed (the key holds paths, not contents)
    calls = count_forwards(monkeypatch, backbone)
    features = extract_image_features(backbone, files, batch_size=2, num_workers=num_workers, cache=cache,
                                      chunk_batches=1)
    assert calls["images"] == N_IMAGES - 6
    np.testing.assert_allclose(features, reference_features(backbone, paths), atol=1e-5, rtol=0)
    assert sorted(p.name for p in entry.folder.iterdir()) == ["features.npy", "features.npy.sha256", "key.json"]


def test_interrupted_run_resumes_after_the_last_chunk(backbone, paths, tmp_path, monkeypatch):
    original = backbone.zero_shot_image
    seen = []

    def killed_at_third_batch(images):
        seen.append(len(images))
        if len(seen) == 3:
            raise KeyboardInterrupt
        return original(images)

    monkeypatch.setattr(backbone, "zero_shot_image", killed_at_third_batch)
    with pytest.raises(KeyboardInterrupt):
        extract_image_features(backbone, paths, batch_size=2, cache=tmp_path, chunk_batches=2)
    assert feature_cache(backbone, paths, cache=tmp_path).done() == 4
    monkeypatch.setattr(backbone, "zero_shot_image", original)
    calls = count_forwards(monkeypatch, backbone)
    features = extract_image_features(backbone, paths, batch_size=3, cache=tmp_path, chunk_batches=2)
    assert calls["images"] == N_IMAGES - 4  # a rerun may use another batch size
    np.testing.assert_allclose(features, reference_features(backbone, paths), atol=1e-5, rtol=0)


def test_bad_arguments(backbone, paths, tmp_path):
    with pytest.raises(ParameterError, match="no images"):
        extract_image_features(backbone, [], cache=tmp_path)
    with pytest.raises(ParameterError, match="batch_size"):
        extract_image_features(backbone, paths, batch_size=0, cache=tmp_path)
    bare = OpenClipBackbone.from_model(backbone.clip, backbone.tokenizer, CLASSES, backbone.config)
    with pytest.raises(ParameterError, match="transform"):
        extract_image_features(bare, paths, cache=tmp_path)
