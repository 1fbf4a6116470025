"""Real-dataset readers, paradigm splits, image views and `python -m cap data check`, on generated folders."""

import logging
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from datagen import cub_folder_name, expected_sizes, write_all, write_dataset
from PIL import Image

from cap.data import (
    DATA_ROOT_ENV,
    DataRootError,
    DatasetFolderError,
    SplitFileError,
    make_split,
    read_dataset,
    ssl_shots,
    trzsl_split,
)
from cap.data.check import check_dataset, format_check
from cap.data.images import ImageDataset, ImageReadError
from cap.data.views import clip_normalisation, strong_view
from cap.data.registry import dataset_names, get_dataset
from cap.errors import CapError, ParameterError, UnknownNameError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """All six datasets, one train / one val / one test image per class (read-only for the tests)."""
    return write_all(tmp_path_factory.mktemp("data"))


@pytest.fixture
def dtd_root(tmp_path):
    """A private DTD copy that a test may break."""
    write_dataset("dtd", tmp_path)
    return tmp_path


# ----------------------------------------------------------------------------- readers


@pytest.mark.parametrize("name", dataset_names())
def test_reader_counts_classes_and_labels(data, name):
    files = read_dataset(name, data)
    info = get_dataset(name)
    assert files.classnames == info.classnames
    assert files.split_sizes == expected_sizes(name)
    sizes = files.split_sizes
    pool = sizes["class folders"] if name == "eurosat" else sizes["train"] + sizes.get("val", 0)
    assert (len(files.train), len(files.test)) == (pool, info.n_classes)
    for part in (files.train, files.test):
        assert part.labels.dtype == np.int64
        assert all(os.path.isabs(p) and os.path.isfile(p) for p in part.paths)
        assert sorted(set(part.labels.tolist())) == list(range(info.n_classes))


def test_labels_follow_the_class_list(data):
    dtd = read_dataset("dtd", data)
    names = get_dataset("dtd").classnames
    for path, label in zip(dtd.train.paths, dtd.train.labels):
        assert os.path.basename(os.path.dirname(path)) == names[label]  # DTD folders are class names
    cub = read_dataset("cub", data)
    for path, label in zip(cub.test.paths, cub.test.labels):
        assert os.path.basename(os.path.dirname(path)) == cub_folder_name(label, get_dataset("cub").classnames[label])
    resisc = read_dataset("RESICS45", data)  # the official folder spelling is an alias
    assert resisc.name == "resisc45"
    assert all("/RESICS45/" + names.replace(" ", "_") + "/" in path
               for path, names in zip(resisc.test.paths, (resisc.classnames[y] for y in resisc.test.labels)))


def test_pool_is_train_then_val_in_file_order(data):
    files = read_dataset("flowers102", data)
    n = files.split_sizes["train"]
    assert all("/train/" in p for p in files.train.paths[:n]) and all("/val/" in p for p in files.train.paths[n:])
    assert list(files.train.labels[:n]) == list(range(102))  # the order of train.txt


def test_reading_is_deterministic(data):
    for name in ("eurosat", "resisc45"):
        a, b = read_dataset(name, data), read_dataset(name, data)
        assert a.train.paths == b.train.paths and np.array_equal(a.train.labels, b.train.labels)
    eurosat = read_dataset("eurosat", data)
    for c in range(10):  # directory listings are sorted within each class, classes in list order
        paths = [p for p, y in zip(eurosat.train.paths, eurosat.train.labels) if y == c]
        assert paths == sorted(paths)
    assert list(eurosat.train.labels) == sorted(eurosat.train.labels)


def test_class_order_on_disk_may_differ(dtd_root, caplog):
    folder = dtd_root / "DTD"
    names = (folder / "class_names.txt").read_text().splitlines()
    names[0], names[1] = names[1], names[0]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    for split in ("train", "val", "test"):  # relabel so the split files index the swapped file
        lines = (folder / f"{split}.txt").read_text().splitlines()
        swap = {"0": "1", "1": "0"}
        lines = [f"{path} {swap.get(label, label)}" for path, label in (line.rsplit(" ", 1) for line in lines)]
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="cap.data.readers"):
        files = read_dataset("dtd", dtd_root)
    assert "another order" in caplog.text
    assert files.classnames == get_dataset("dtd").classnames
    for path, label in zip(files.train.paths, files.train.labels):
        assert os.path.basename(os.path.dirname(path)) == files.classnames[label]


def test_a_different_class_set_names_the_differences(dtd_root):
    path = dtd_root / "DTD" / "class_names.txt"
    path.write_text(path.read_text().replace("banded\n", "stripy\n"))
    with pytest.raises(SplitFileError) as info:
        read_dataset("dtd", dtd_root)
    message = str(info.value)
    assert "class_names.txt" in message and "['stripy']" in message and "['banded']" in message


def test_eurosat_quirk_keeps_test_images_in_the_pool(data):
    quirk = read_dataset("eurosat", data)
    clean = read_dataset("eurosat", data, eurosat_test_in_pool=False)
    test = set(quirk.test.paths)
    assert test <= set(quirk.train.paths) and not test & set(clean.train.paths)
    assert len(quirk.train) == 30 and len(clean.train) == 20 and quirk.test.paths == clean.test.paths
    assert set(clean.train.paths) | test == set(quirk.train.paths)


# ----------------------------------------------------------------------------- errors


def test_missing_data_root(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    with pytest.raises(DataRootError, match="--root") as info:
        read_dataset("dtd")
    assert DATA_ROOT_ENV in str(info.value)
    with pytest.raises(DataRootError, match="is not a directory"):
        read_dataset("dtd", tmp_path / "nowhere")
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))  # the variable is used when no root is given
    with pytest.raises(DatasetFolderError, match=str(tmp_path / "DTD")):
        read_dataset("dtd")


@pytest.mark.parametrize("name, layout_line", [
    ("dtd", "train/<class>/<image>.jpg"), ("eurosat", "AnnualCrop/"), ("resisc45", "RESICS45/"),
    ("cub", "train_test_split.txt"), ("fgvc_aircraft", "labels.txt"), ("flowers102", "class_names.txt"),
])
def test_missing_dataset_folder_shows_layout_and_command(tmp_path, name, layout_line):
    with pytest.raises(DatasetFolderError) as info:
        read_dataset(name, tmp_path)
    message = str(info.value)
    assert "does not exist" in message and layout_line in message
    assert f"python -m cap data check {name}" in message


def test_missing_split_file(dtd_root):
    (dtd_root / "DTD" / "val.txt").unlink()
    with pytest.raises(SplitFileError, match=r"val\.txt is missing") as info:
        read_dataset("dtd", dtd_root)
    assert "train.txt val.txt test.txt" in str(info.value)  # the layout


def test_split_line_naming_a_missing_file(dtd_root):
    lines = (dtd_root / "DTD" / "train.txt").read_text().splitlines()
    relative = lines[2].split("@")[1].split(" ")[0]
    (dtd_root / "DTD" / "train" / relative).unlink()
    with pytest.raises(SplitFileError) as info:
        read_dataset("dtd", dtd_root)
    assert "train.txt:3" in str(info.value) and relative in str(info.value) and "Re-download" in str(info.value)


@pytest.mark.parametrize("line, expected", [
    ("train.zip@banded/banded_0001.jpg", "train.txt:2: malformed line"),
    ("train.zip@banded/banded_0001.jpg x", "train.txt:2: label 'x' is not an integer"),
    ("train.zip@banded/banded_0001.jpg 47", "train.txt:2: label 47 is outside 0..46"),
])
def test_malformed_split_lines_name_file_and_line(dtd_root, line, expected):
    path = dtd_root / "DTD" / "train.txt"
    lines = path.read_text().splitlines()
    lines[1] = line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SplitFileError, match=expected):
        read_dataset("dtd", dtd_root)


def test_unknown_class_folders_name_file_and_line(tmp_path):
    write_dataset("fgvc_aircraft", tmp_path)
    path = tmp_path / "FGVCAircraft" / "test.txt"
    lines = path.read_text().splitlines()
    lines[4] = "test.zip@Concorde/0000001.jpg 4"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SplitFileError, match=r"test\.txt:5: class folder 'Concorde'"):
        read_dataset("fgvc_aircraft", tmp_path)


def test_eurosat_test_line_in_the_wrong_folder(tmp_path):
    write_dataset("eurosat", tmp_path)
    path = tmp_path / "EuroSAT" / "test.txt"
    lines = path.read_text().splitlines()
    lines[0] = lines[0].rsplit(" ", 1)[0] + " 1"  # an AnnualCrop image labelled forest
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SplitFileError, match=r"test\.txt:1: AnnualCrop_3\.jpg is labelled 'forest'"):
        read_dataset("eurosat", tmp_path)


def test_resisc_and_cub_inconsistencies(tmp_path):
    write_dataset("resisc45", tmp_path)
    write_dataset("cub", tmp_path)
    path = tmp_path / "RESICS45" / "val.json"
    path.write_text(path.read_text().replace('"file_name"', '"name"', 1))
    with pytest.raises(SplitFileError, match=r"val\.json images\[0\] has no 'file_name'"):
        read_dataset("resisc45", tmp_path)
    path = tmp_path / "CUB" / "CUB_200_2011" / "train_test_split.txt"
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(SplitFileError, match=r"images\.txt:600: image id 600 has no line in train_test_split\.txt"):
        read_dataset("cub", tmp_path)


def test_unknown_dataset_and_paradigm(data):
    with pytest.raises(UnknownNameError, match="'imagenet'"):
        read_dataset("imagenet", data)
    with pytest.raises(UnknownNameError, match="paradigm 'fewshot'"):
        make_split("fewshot", [0, 1], 2)


# ----------------------------------------------------------------------------- splits

LEGACY_SEEN = {  # Menghini et al., data/data_splits/*.json: seen classes in draw order
    ("eurosat", 500): ["industrial buildings or commercial buildings", "brushland or shrubland", "lake or sea",
                       "highway or road", "annual crop land", "pasture land"],
    ("dtd", 0): ["pitted", "scaly", "polka-dotted", "bumpy", "honeycombed", "fibrous", "veined", "porous", "lined",
                 "dotted", "perforated", "potholed", "pleated", "waffled", "braided", "wrinkled", "paisley", "gauzy",
                 "meshed", "grid", "studded", "knitted", "swirly", "crosshatched", "freckled", "chequered", "grooved",
                 "smeared", "frilly"],
}


def legacy_trzsl(n_classes, seed):
    """The official code, literally (global numpy state)."""
    np.random.seed(seed)
    seen_indices = np.random.choice(range(n_classes), size=int(n_classes * 0.62), replace=False)
    unseen_indices = list(set(range(n_classes)).difference(set(seen_indices)))
    return seen_indices, unseen_indices


@pytest.mark.parametrize("n_classes", [10, 45, 47, 100, 102, 200])
@pytest.mark.parametrize("seed", [500, 0, 200, 7])
def test_trzsl_split_equals_the_legacy_global_seed_draw(n_classes, seed):
    seen_legacy, unseen_legacy = legacy_trzsl(n_classes, seed)
    np.random.seed(12345)  # the global state must not matter
    seen, unseen = trzsl_split(n_classes, seed)
    assert seen == sorted(seen_legacy.tolist()) and unseen == sorted(unseen_legacy)
    assert seen == sorted(seen) and not set(seen) & set(unseen) and len(seen) + len(unseen) == n_classes


def test_trzsl_counts_and_published_class_lists():
    counts = {"dtd": (29, 18), "eurosat": (6, 4), "flowers102": (63, 39), "fgvc_aircraft": (62, 38),
              "resisc45": (27, 18), "cub": (124, 76)}
    for name, (n_seen, n_unseen) in counts.items():
        seen, unseen = trzsl_split(get_dataset(name).n_classes, 500)
        assert (len(seen), len(unseen)) == (n_seen, n_unseen), name
    for (name, seed), names in LEGACY_SEEN.items():
        seen, _ = trzsl_split(get_dataset(name).n_classes, seed)
        assert seen == get_dataset(name).class_indices(names)


def legacy_ssl(labels, n_label, validation_seed):
    """The official per-class draw, literally (global numpy state reseeded for every class)."""
    labels = np.array(labels)
    chosen = []
    for c in sorted(set(labels.tolist())):
        np.random.seed(validation_seed)
        chosen += list(np.random.choice(np.where(labels == c)[0], size=n_label, replace=False))
    return sorted(int(i) for i in chosen)


def test_ssl_shots_match_legacy_and_ignore_optimisation_seeds():
    labels = np.random.RandomState(3).randint(0, 7, size=200)
    shots = []
    for optim_seed in (1, 2, 3):
        np.random.seed(optim_seed), torch.manual_seed(optim_seed), random.seed(optim_seed)
        np.random.rand(optim_seed)  # move the global state differently each time
        shots.append(ssl_shots(labels, n_per_class=2, seed=0))
    assert shots[0] == shots[1] == shots[2] == legacy_ssl(labels, 2, 0)
    assert np.bincount(labels[shots[0]], minlength=7).tolist() == [2] * 7
    assert ssl_shots(labels, 2, seed=1) != shots[0]
    assert ssl_shots(labels, 5, seed=0) == legacy_ssl(labels, 5, 0)


def test_ssl_shots_need_enough_images_per_class():
    with pytest.raises(ParameterError, match="class 1 has 1 training image"):
        ssl_shots([0, 0, 1, 2, 2], n_per_class=2)
    with pytest.raises(ParameterError, match="class 3 has 0 training image"):
        ssl_shots([0, 0, 1, 1, 2, 2], n_per_class=2, n_classes=4)


def test_make_split_for_the_three_paradigms(data):
    labels = read_dataset("dtd", data).train.labels  # 2 images per class
    n = len(labels)
    ul = make_split("ul", labels, 47)
    assert ul.labelled == [] and ul.unlabelled == list(range(n)) and ul.seen == [] and ul.unseen == []
    assert ul.pseudolabel_classes == list(range(47))
    ssl = make_split("SSL", labels, 47)
    assert ssl.paradigm == "ssl" and len(ssl.labelled) == 94 and ssl.unlabelled == []
    assert ssl.labelled == ssl_shots(labels, 2, 0)
    many = np.repeat(np.arange(5), 6)
    ssl = make_split("ssl", many, 5, n_label=2, validation_seed=0)
    assert sorted(ssl.labelled + ssl.unlabelled) == list(range(30)) and not set(ssl.labelled) & set(ssl.unlabelled)
    assert np.bincount(many[ssl.labelled]).tolist() == [2] * 5 and ssl.pseudolabel_classes == list(range(5))
    trzsl = make_split("trzsl", labels, 47, split_seed=500)
    assert (trzsl.seen, trzsl.unseen) == trzsl_split(47, 500) and trzsl.pseudolabel_classes == trzsl.unseen
    assert sorted(trzsl.labelled + trzsl.unlabelled) == list(range(n))
    assert set(labels[trzsl.labelled]) == set(trzsl.seen) and set(labels[trzsl.unlabelled]) == set(trzsl.unseen)
    with pytest.raises(ParameterError, match="labels must lie in 0..46"):
        make_split("ul", [0, 47], 47)


# ----------------------------------------------------------------------------- views and images


def test_strong_and_weak_views(tmp_path):
    from open_clip import image_transform

    mean, std = clip_normalisation()
    assert mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert std == pytest.approx((0.26862954, 0.26130258, 0.27577711))
    strong = strong_view(32, mean, std)
    crop, flip = strong.transforms[:2]
    assert crop.scale == (0.08, 1.0) and crop.interpolation.value == "bicubic" and flip.p == 1.0
    preprocess = image_transform(24, is_train=False, mean=mean, std=std)
    image = Image.new("RGB", (40, 30), (200, 10, 10))
    assert strong(image).shape == (3, 32, 32) and preprocess(image).shape == (3, 24, 24)


def test_strong_view_always_mirrors():
    half = np.zeros((16, 16, 3), dtype=np.uint8)
    half[:, 8:] = 255  # left black, right white
    strong = strong_view(16, (0, 0, 0), (1, 1, 1))
    strong.transforms[0].scale = (1.0, 1.0)  # whole image, so only the flip changes it
    strong.transforms[0].ratio = (1.0, 1.0)
    for _ in range(5):
        out = strong(Image.fromarray(half))
        assert out[:, :, :4].mean() > 0.9 and out[:, :, -4:].mean() < 0.1


def test_image_dataset_decodes_once_for_all_views(data, monkeypatch):
    from cap.data import images

    files = read_dataset("eurosat", data)
    opened = []
    real_open = images.Image.open
    monkeypatch.setattr(images.Image, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    mean, std = clip_normalisation()
    views = {"weak": (lambda image: torch.tensor(np.asarray(image)).permute(2, 0, 1)),
             "strong": strong_view(16, mean, std)}
    dataset = ImageDataset(files.test.paths, files.test.labels, views)
    item = dataset[3]
    assert len(dataset) == 10 and len(opened) == 1
    assert item["index"] == 3 and item["label"] == int(files.test.labels[3])
    assert item["weak"].shape == (3, 8, 8) and item["strong"].shape == (3, 16, 16)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert batch["strong"].shape == (4, 3, 16, 16) and batch["label"].tolist() == files.test.labels[:4].tolist()
    with pytest.raises(ParameterError, match="clash"):
        ImageDataset(files.test.paths, files.test.labels, {"label": (lambda x: x)})


@pytest.mark.parametrize("content", [b"not a jpeg at all", "truncated"])
def test_corrupt_image_names_the_file(data, tmp_path, content):
    good = read_dataset("dtd", data).test.paths[0]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(open(good, "rb").read()[:150] if content == "truncated" else content)
    dataset = ImageDataset([good, str(bad)], [0, 1], {"raw": lambda image: image.size})
    assert dataset[0]["raw"] == (8, 8)
    with pytest.raises(ImageReadError) as info:
        dataset[1]
    assert str(bad) in str(info.value) and "Re-download" in str(info.value)
    assert isinstance(info.value, CapError)


# ----------------------------------------------------------------------------- check and CLI


def test_check_rows(data):
    rows = check_dataset("dtd", data, paradigm="ssl")
    by_split = {row["split"]: row for row in rows}
    assert by_split["train"] == {"split": "train", "expected": 1880, "found": 47, "status": "differs"}
    assert by_split["training pool"]["expected"] == 3760 and by_split["training pool"]["found"] == 94
    assert by_split["ssl labelled"] == {"split": "ssl labelled", "expected": 94, "found": 94, "status": "ok"}
    rows = check_dataset("eurosat", data)
    assert {r["split"]: r["found"] for r in rows} == {"class folders": 30, "test": 10, "training pool": 30,
                                                      "test images in pool": 10}
    text = format_check([{"split": "test", "expected": 5, "found": 5, "status": "ok"}])
    assert "all counts match" in text
    assert all(get_dataset(n).expected_counts for n in dataset_names())


def run_cli(*args, env_root=None):
    env = {k: v for k, v in os.environ.items() if k != DATA_ROOT_ENV}
    env["PYTHONPATH"] = ROOT
    if env_root:
        env[DATA_ROOT_ENV] = str(env_root)
    return subprocess.run([sys.executable, "-m", "cap", "data", "check", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def test_cli_data_check(data, tmp_path):
    done = run_cli("flowers102", env_root=data)
    assert done.returncode == 0, done.stderr
    assert "Flowers102 under" in done.stdout and "6149" in done.stdout and "differ from the published" in done.stdout
    assert any(line.split()[:4] == ["train", "1020", "102", "differs"] for line in done.stdout.splitlines())
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_cli("cub", "--root", str(empty), "--paradigm", "trzsl")
    assert done.returncode == 2
    assert "error: CUB-200-2011: folder" in done.stderr and "CUB_200_2011/" in done.stderr
    assert "python -m cap data check cub" in done.stderr


def test_cli_without_a_root(tmp_path):
    done = run_cli("dtd")
    assert done.returncode == 2 and "--root" in done.stderr and DATA_ROOT_ENV in done.stderr
    broken = tmp_path / "broken"
    shutil.copytree(write_dataset("dtd", tmp_path / "src"), broken / "DTD")
    (broken / "DTD" / "test.txt").unlink()
    done = run_cli("dtd", "--root", str(broken))
    assert done.returncode == 2 and "test.txt is missing" in done.stderr
