"""Run the official CAP code's functions on fixed inputs and store their outputs as test data.

    python benchmarks/official_fixture.py --official PATH [--out tests/data/official]
                                          [--official-commit HASH] [--work DIR]

``PATH`` is a work tree of github.com/Noahwangyuchen/CAP (for example
``git --git-dir=MIRROR worktree add /tmp/official HEAD`` or ``git archive HEAD | tar -x -C /tmp/official``).
Nothing of it is copied into this project: only the numbers its functions compute are written to
``--out`` (a few hundred KB of npz and JSON), together with the inputs they were computed on
(``EuroSAT/``: 10 classes x 4 generated 64x64 JPEGs in the official layout) and a manifest
(``manifest.json``: official commit, package versions, every input and setting). The comparison
test ``tests/test_official_equivalence.py`` runs the project on the same inputs and checks each
stored quantity; ``tests/data/official/README.md`` lists them with their tolerances.

Not part of ``make test``: the official code needs packages the project does not, and they go into
a separate virtual environment (this script installs nothing):

    python3.11 -m venv /tmp/offvenv
    /tmp/offvenv/bin/pip install -c constraints.txt /path/to/torch-2.13.0+cpu-*.whl torchvision==0.28.0 \\
        openai-clip 'setuptools<81' accelerate numpy pandas scipy scikit-learn pillow tqdm pyyaml
    /tmp/offvenv/bin/python benchmarks/official_fixture.py --official /tmp/official

(``openai-clip`` is the pip name of OpenAI's ``clip`` package, which the official code imports;
``setuptools<81`` still ships the ``pkg_resources`` it imports; ``accelerate``, pandas, scipy and
scikit-learn are imported at module level by the official functions.) torch, torchvision and
Pillow must be the versions of the project's environment, so that preprocessing and arithmetic
are the same. The script adds this repository to ``sys.path`` only for ``import cap``, whose
import hook makes a CUDA torchvision wheel importable on CPU-only torch.

The official ``main()`` needs CUDA, network access, accelerate's launcher and torch < 2.13, so the
script calls the functions themselves (``TextualFPL.create_training_dataset`` ->
``pseudolabel_top_k``, ``define_model``, ``extract_features``, ``compute_margin``, ``_train_epoch``,
``compute_top_k_leaderboard``, ``update_main_samples``, ``make_scheduler``, ``build_transform``)
after these shims, all applied from outside the official tree (official_diff.md, "Running the
official functions here"):

* ``LambdaLR`` in torch 2.13 no longer takes ``verbose=``: the keyword is accepted and dropped;
* ``clip._download`` (pip ``clip`` and the official ``custom_clip``) returns the local weights file,
  written by ``benchmarks/official_weights.py`` as a TorchScript archive (the pip ``clip.load`` reads
  nothing else from a path);
* ``TextualPrompt.extract_features`` computes the features only when CUDA is available: it is
  replaced by the same code without that condition;
* ``self.model.module`` expects a DDP wrapper: the model is wrapped in one that forwards calls;
* ``Tensor.half`` is the identity: the official fp16 casts of prompt tokens and of the MaPLe
  projection are no-ops in its fp16 GPU runs, while here everything runs in fp32 (``PREC: fp32``);
  left in, they change features by up to 1e-3 and the CPU matmul of an fp16 ``proj`` fails.

Runs in about 3-4 minutes on an idle 2-core CPU (16 minutes under a load average of 5-10); the
manifest records how long it took.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# Official EuroSAT class names (data/class_files/EuroSAT/class_names.txt) and their folders
# (utils/prepare_data.py, correction_dict).
CLASSES = ["annual crop land", "forest", "brushland or shrubland", "highway or road",
           "industrial buildings or commercial buildings", "pasture land", "permanent crop land",
           "residential buildings or homes or apartments", "river", "lake or sea"]
FOLDERS = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
           "Residential", "River", "SeaLake"]
PER_CLASS, IMAGE_SIDE, IMAGE_SEED, JPEG_QUALITY = 4, 64, 7, 95

# The inputs of each stored quantity (also written to the manifest).
FEATURE_BATCH = ["AnnualCrop/AnnualCrop_1.jpg", "Highway/Highway_2.jpg", "Residential/Residential_3.jpg",
                 "SeaLake/SeaLake_4.jpg"]
# D_PL for the margin: images 1-3 of classes 0-8, none for class 9 (its prototype falls back to
# its text feature). No image is in two classes: see README, "Different".
MARGIN_DPL = {c: [f"{FOLDERS[c]}/{FOLDERS[c]}_{k}.jpg" for k in (1, 2, 3)] for c in range(9)} | {9: []}
SIGMA = [12, 3, 0, 7, 20, 1, 5, 9, 2, 4]  # σ(c): confident draws per class in the "previous epoch"
MARGIN_SCALE = 12.0
STEP_DPL = [("AnnualCrop/AnnualCrop_1.jpg", 0), ("Forest/Forest_2.jpg", 1), ("Highway/Highway_1.jpg", 3),
            ("River/River_3.jpg", 8)]
# Not in MARGIN_DPL, which stands for the current D_PL: confident draws of them enter the new leaderboard.
STEP_UNLABELLED = ["Pasture/Pasture_4.jpg", "Residential/Residential_4.jpg", "SeaLake/SeaLake_3.jpg",
                   "Industrial/Industrial_4.jpg"]
STRONG_SEEDS = [101, 102, 103, 104]  # torch.manual_seed before each strong view of STEP_UNLABELLED
STEP_LR, STEP_BATCH, STEP_EPOCHS = 0.01, 4, 50
REFRESH_TRIALS, REFRESH_SEED = 24, 11
K_UNLABELLED_PER_CLASS = [4, 30, 2700, 5000]
SMALL_K = 5  # a second zero-shot leaderboard: with k = 5, 3 official lists end unsorted, 42 entries hold 30 images
GRID = 16  # preprocessed tensors are stored subsampled: every GRID-th pixel


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, type=Path, help="work tree of the official CAP repository")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "official", help="where outputs go")
    parser.add_argument("--official-commit", default=None,
                        help="commit of the work tree (default: git rev-parse HEAD in it, if it is a checkout)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------- inputs
def image_array(label: int, k: int, seed: int = IMAGE_SEED) -> np.ndarray:
    """A 64x64 RGB image of class ``label``, number ``k``: a class colour, stripes whose direction
    and frequency depend on the class, and per-image noise, all from a seeded generator."""
    rng = np.random.default_rng([seed, label, k])
    base = np.array([(label * 71) % 200 + 30, (label * 113) % 200 + 30, (label * 37) % 200 + 30], dtype=np.float64)
    y, x = np.mgrid[0:IMAGE_SIDE, 0:IMAGE_SIDE].astype(np.float64)
    angle = math.pi * label / 10 + rng.uniform(-0.2, 0.2)
    frequency = (2 + label % 5) / IMAGE_SIDE
    phase = rng.uniform(0, 2 * math.pi)
    stripes = np.sin(2 * math.pi * frequency * (x * math.cos(angle) + y * math.sin(angle)) + phase)
    gain = rng.uniform(0.5, 1.0, size=3)
    noise = rng.normal(0, 18, size=(IMAGE_SIDE, IMAGE_SIDE, 3))
    image = base + 50 * stripes[..., None] * gain + noise
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def write_eurosat(root: Path) -> Path:
    """The official EuroSAT layout: class_names.txt, test.txt, <Folder>/<Folder>_<k>.jpg (k = 1..4);
    image 4 of each class is listed in test.txt (and stays in the pool, the official quirk)."""
    from PIL import Image

    folder = root / "EuroSAT"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "class_names.txt").write_text("".join(c + "\n" for c in CLASSES), encoding="utf-8")
    test_lines = []
    for label, name in enumerate(FOLDERS):
        (folder / name).mkdir(exist_ok=True)
        for k in range(1, PER_CLASS + 1):
            buffer = io.BytesIO()
            Image.fromarray(image_array(label, k)).save(buffer, "JPEG", quality=JPEG_QUALITY)
            (folder / name / f"{name}_{k}.jpg").write_bytes(buffer.getvalue())
        test_lines.append(f"2750.zip@{name}/{name}_{PER_CLASS}.jpg {label}\n")
    (folder / "test.txt").write_text("".join(test_lines), encoding="utf-8")
    return folder


def pool_order() -> list[str]:
    """Relative paths of the training pool in the order given to the official functions: class
    order, then file name (the project's reader order; the official one is os.listdir's)."""
    return [f"{name}/{name}_{k}.jpg" for name in FOLDERS for k in range(1, PER_CLASS + 1)]


# ----------------------------------------------------------------------------------- shims
class DDPLike:
    """Stands in for accelerate's DDP wrapper: ``.module`` is the model, calls go through."""

    def __new__(cls, module):
        import torch

        class _Wrapper(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.module = inner

            def forward(self, *args, **kwargs):
                return self.module(*args, **kwargs)

        return _Wrapper(module)


def apply_shims(weights: Path) -> None:
    import torch

    init = torch.optim.lr_scheduler.LambdaLR.__init__

    def lambda_lr_init(self, *args, verbose=None, **kwargs):  # torch 2.13: no `verbose`
        init(self, *args, **kwargs)

    torch.optim.lr_scheduler.LambdaLR.__init__ = lambda_lr_init
    torch.Tensor.half = lambda self, *args, **kwargs: self  # official fp16 casts: identity in fp32

    import clip.clip as pip_clip
    import custom_clip.clip as official_clip

    pip_clip._download = lambda url, root=None: str(weights)
    official_clip._download = lambda url, root=None: str(weights)

    from methods import cacm

    def extract_features(self, img):  # TextualPrompt.extract_features without `if torch.cuda.is_available()`
        text_features, image_features = self.model(img)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        t, v, v_ps = self.debias_module(text_features, image_features)
        t, v, v_ps = [tensor / tensor.norm(dim=-1, keepdim=True) for tensor in [t, v, v_ps]]
        return t, v, v_ps

    cacm.TextualPrompt.extract_features = extract_features


class LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def stats(t) -> dict:
    return {"mean": t.mean(dim=(-2, -1)).tolist(), "std": t.std(dim=(-2, -1)).tolist()}


# ----------------------------------------------------------------------------------- the run
def official_config(official: Path, data_dir: Path, **overrides):
    import yaml
    from data import dataset_custom_prompts
    from utils import Config

    values = yaml.safe_load((official / "methods_config" / "ul_config.yml").read_text())
    values |= {"DATASET_NAME": "EuroSAT", "DATASET_DIR": str(data_dir), "VIS_ENCODER": "ViT-B/32", "SPLIT_SEED": 500,
               "OPTIM_SEED": 1, "LR": STEP_LR, "MARGIN_SCALE": MARGIN_SCALE,
               "PROMPT_TEMPLATE": dataset_custom_prompts["EuroSAT"], "PREC": "fp32"}
    return Config(values | overrides)


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    official = args.official.resolve()
    commit = args.official_commit or _git_head(official)
    work = Path(args.work or tempfile.mkdtemp(prefix="cap-official-"))
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from cap import ensure_torchvision_importable

    ensure_torchvision_importable()  # before torchvision: a CUDA torchvision wheel on a CPU-only torch

    if __package__:  # imported as benchmarks.official_fixture
        from . import official_weights as recipe
    else:  # run as a script: its folder, benchmarks/, is first on sys.path
        import official_weights as recipe

    sys.path.insert(0, str(official))
    os.chdir(work)  # pseudolabel_top_k caches under ./pseudolabels
    (work / "pseudolabels").mkdir(exist_ok=True)

    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    data_dir = work / "data"
    data_folder = write_eurosat(data_dir)
    weight_tensors = recipe.state_dict()
    weights_digest = recipe.digest(weight_tensors)
    weights = recipe.save_torchscript(work / "ViT-B-32.pt", weight_tensors)
    del weight_tensors
    apply_shims(weights)

    import clip
    from PIL import Image
    from data import EuroSAT
    from methods import TextualFPL
    from utils import make_scheduler, pseudolabel_top_k
    from utils.augmentations import build_transform

    capture = LogCapture()
    for name in ("methods.cacm", "methods.training"):
        logging.getLogger(name).addHandler(capture)
        logging.getLogger(name).setLevel(logging.INFO)

    label_to_idx = {c: i for i, c in enumerate(CLASSES)}
    rel_paths = pool_order()
    full = {rel: f"{data_folder}/{rel}" for rel in rel_paths}
    rel_of = {v: k for k, v in full.items()}
    index_of = {rel: i for i, rel in enumerate(rel_paths)}
    labels = [CLASSES[FOLDERS.index(rel.split("/")[0])] for rel in rel_paths]
    arrays: dict[str, np.ndarray] = {}
    out: dict = {}

    # The step's schedule is built in define_model: no warm-up, so the first step has the full lr.
    config = official_config(official, data_dir, N_MAIN_SAMPLES=16, BATCH_SIZE=STEP_BATCH, ITER_PER_EPOCH=1,
                             EPOCHS=STEP_EPOCHS, WARMUP_EPOCHS=0)
    files = [rel.split("/")[1] for rel in rel_paths]  # os.listdir names, as the official prepare_data gives
    model = TextualFPL(config, label_to_idx, str(data_folder), unlabeled_files=files, classes=CLASSES,
                       seen_classes=CLASSES, unseen_classes=CLASSES, device="cpu", dataset_obj=EuroSAT)
    strong_transform = build_transform("randomresizedcrop")
    unlabelled = EuroSAT(files, str(data_folder), transform=None, augmentations=(strong_transform, None), train=True,
                         labels=labels, label_map=label_to_idx)
    labelled = EuroSAT([], str(data_folder), transform=None, augmentations=(strong_transform, None), train=True,
                       labels=[], label_map=label_to_idx)
    main_samples = EuroSAT([], str(data_folder), transform=None, augmentations=None, train=True, labels=[],
                           label_map=label_to_idx)
    assert unlabelled.filepaths == [full[r] for r in rel_paths], "EuroSAT dataset paths differ from the pool order"

    # --- zero-shot: prompts, tokens, preprocessing, features, probabilities, initial leaderboard
    t0 = time.perf_counter()
    model.create_training_dataset(labelled, unlabelled, main_samples)
    cache = work / "pseudolabels" / "EuroSAT_ViT-B32_pseudolabels_split_500.pickle"
    import pickle

    content = pickle.loads(cache.read_bytes())
    assert [rel_of[p] for p in content["filepaths"]] == rel_paths
    prompts = [f"{config.PROMPT_TEMPLATE}{' '.join(c.split('_'))}" for c in CLASSES]
    arrays["zs_tokens"] = clip.tokenize(prompts).numpy().astype(np.int32)
    arrays["zs_image_features"] = np.stack(content["image_features"]).astype(np.float32)
    arrays["zs_text_features"] = content["text_features"].astype(np.float32)
    arrays["zs_probs"] = np.stack(content["probs"]).astype(np.float32)
    weak = [model.transform(Image.open(full[rel]).convert("RGB")) for rel in rel_paths]
    arrays["weak_view_grid"] = torch.stack([w[:, ::GRID, ::GRID] for w in weak]).numpy()
    arrays["weak_view_mean"] = torch.stack([w.mean(dim=(1, 2)) for w in weak]).numpy()
    board = {int(c): [[float(conf), index_of[rel_of[path]]] for conf, path in entries]
             for c, entries in model.leaderboard.items()}
    # The same function with k = SMALL_K (reads the cached probabilities): evictions, repeats, unsorted lists.
    small_board = pseudolabel_top_k(config, config.DATASET_NAME, SMALL_K, config.PROMPT_TEMPLATE, labelled.filepaths,
                                    labelled.labels, unlabelled.filepaths, CLASSES, model.transform, model.clip_model,
                                    label_to_idx, "cpu", config.VIS_ENCODER, config.SPLIT_SEED)
    out["zero_shot"] = {"prompts": prompts, "k": config.N_MAIN_SAMPLES, "leaderboard": board,
                        "main_samples": [[index_of[rel_of[p]], int(l)] for p, l in
                                         zip(main_samples.filepaths, main_samples.labels)],
                        "small_k": SMALL_K,
                        "leaderboard_small_k": {int(c): [[float(conf), index_of[rel_of[path]]]
                                                         for conf, path in entries]
                                                for c, entries in small_board.items()}}
    timing = {"zero_shot_s": time.perf_counter() - t0}

    # --- MaPLe + adapters: initialisation, then features for the recipe's learnable tensors
    t0 = time.perf_counter()
    model.define_model(CLASSES)
    learner = model.model.prompt_learner
    arrays["maple_init_ctx"] = learner.ctx.detach().numpy().copy()
    arrays["maple_tokens"] = learner.tokenized_prompts.numpy().astype(np.int32)
    trainable = {f"prompt_learner.{n}": p for n, p in learner.named_parameters() if p.requires_grad}
    trainable |= {n: p for n, p in model.debias_module.named_parameters() if p.requires_grad}
    others = [n for n, p in model.model.named_parameters() if p.requires_grad and not n.startswith("prompt_learner.")]
    assert not others, others
    tensors = recipe.learnable_tensors()
    assert sorted(tensors) == sorted(trainable), (sorted(tensors), sorted(trainable))
    with torch.no_grad():
        for name, value in tensors.items():
            trainable[name].copy_(value)
    out["optimisers"] = {
        name: [{"lr": g["lr"], "initial_lr": g.get("initial_lr"), "momentum": g["momentum"],
                "weight_decay": g["weight_decay"], "nesterov": g["nesterov"], "dampening": g["dampening"],
                "trainable_tensors": sum(p.requires_grad for p in g["params"]),
                "trainable_numel": sum(p.numel() for p in g["params"] if p.requires_grad)}
               for g in opt.param_groups]
        for name, opt in (("prompts", model.prompt_optimizer), ("adapters", model.debias_adapter_optimizer))}
    model.model = DDPLike(model.model)
    batch = torch.stack([weak[index_of[rel]] for rel in FEATURE_BATCH])
    with torch.no_grad():
        text, image = model.model(batch)
        t, v, v_ps = model.extract_features(batch)
    scale = model.model.module.logit_scale.exp().item()
    text, image = text / text.norm(dim=-1, keepdim=True), image / image.norm(dim=-1, keepdim=True)
    arrays |= {"maple_text": text.numpy(), "maple_image": image.numpy(),
               "maple_logits": (scale * image @ text.T).numpy(),
               "adapted_text": t.numpy(), "adapted_main": v.numpy(), "adapted_pseudo": v_ps.numpy(),
               "adapted_logits": (scale * v @ t.T).numpy(), "adapted_logits_pseudo": (scale * v_ps @ t.T).numpy()}
    out["logit_scale"] = scale
    timing["maple_s"] = time.perf_counter() - t0

    # --- margin on a D_PL without repeated images, and on the zero-shot board (with repeats)
    t0 = time.perf_counter()
    zero_shot_board = model.leaderboard
    model.leaderboard = {c: [(torch.tensor(1.0), full[rel]) for rel in rels] for c, rels in MARGIN_DPL.items()}
    model.pl_per_class = {CLASSES[c]: n for c, n in enumerate(SIGMA)}
    with torch.no_grad():
        arrays["margin"] = model.compute_margin().numpy()
    # The zero-shot boards, each margin twice: with repeated images the official margin depends on the
    # order of its shuffled loader (the first class to meet an image keeps it for its prototype).
    for key, leaderboard in (("margin_zero_shot_board", zero_shot_board), ("margin_small_k_board", small_board)):
        model.leaderboard = leaderboard
        with torch.no_grad():
            arrays[key] = np.stack([model.compute_margin().numpy() for _ in range(2)])
    model.leaderboard = zero_shot_board
    timing["margin_s"] = time.perf_counter() - t0

    # --- one CAP step (_train_epoch, ITER_PER_EPOCH 1, no warm-up), margin from MARGIN_DPL and SIGMA
    t0 = time.perf_counter()
    strong = []
    for rel, seed in zip(STEP_UNLABELLED, STRONG_SEEDS):
        torch.manual_seed(seed)
        strong.append(strong_transform(Image.open(full[rel]).convert("RGB")))
    arrays["strong_view_grid"] = torch.stack([s[:, ::GRID, ::GRID] for s in strong]).numpy()
    arrays["strong_view_mean"] = torch.stack([s.mean(dim=(1, 2)) for s in strong]).numpy()
    x_m = torch.stack([weak[index_of[rel]] for rel, _ in STEP_DPL])
    x_u = torch.stack([weak[index_of[rel]] for rel in STEP_UNLABELLED])
    x_u_aug = torch.stack(strong)
    m_label = torch.tensor([c for _, c in STEP_DPL])
    u_label = torch.tensor([label_to_idx[labels[index_of[rel]]] for rel in STEP_UNLABELLED])
    with torch.no_grad():  # choose τ in the widest gap of the weak-view confidences: some draws masked, some not
        t_u, v_u, _ = model.extract_features(x_u)
        confidence = torch.softmax(scale * v_u @ t_u.T, dim=1).max(dim=1).values.sort().values.tolist()
    gaps = [(high - low, (high + low) / 2) for low, high in zip(confidence, confidence[1:])]
    tau = round(max(gaps)[1], 4)
    model.threshold = tau
    model.leaderboard = {c: [(torch.tensor(1.0), full[rel]) for rel in rels] for c, rels in MARGIN_DPL.items()}
    model.pl_per_class = {CLASSES[c]: n for c, n in enumerate(SIGMA)}
    margin_dpl_paths = [full[rel] for rels in MARGIN_DPL.values() for rel in rels]

    class Once:
        def __init__(self, item, dataset_paths=None):
            self.item = item
            self.data_loader = type("L", (), {"dataset": type("D", (), {"filepaths": dataset_paths})()})()

        def __next__(self):
            return self.item

    main_loader = Once((x_m, x_m, x_m, m_label, [full[rel] for rel, _ in STEP_DPL]), margin_dpl_paths)
    unlabelled_loader = Once((x_u, x_u_aug, x_u, u_label, [full[rel] for rel in STEP_UNLABELLED]))
    grads, after, seen_predictions = {}, {}, []
    backpropagate, top_k = model.backpropagate, model.compute_top_k_leaderboard

    def recording_backpropagate():
        grads.update({n: p.grad.detach().clone() for n, p in trainable.items() if p.grad is not None})
        backpropagate()
        after.update({n: p.detach().clone() for n, p in trainable.items()})

    def recording_top_k(predictions, paths):
        seen_predictions.extend(predictions)
        return top_k(predictions, paths)

    model.backpropagate, model.compute_top_k_leaderboard = recording_backpropagate, recording_top_k
    lr_before = [model.prompt_optimizer.param_groups[0]["lr"], model.debias_adapter_optimizer.param_groups[0]["lr"]]
    capture.messages.clear()
    loss, _, new_board = model._train_epoch(None, 0, 1, 0, main_loader, None, unlabelled_loader)
    messages = list(capture.messages)
    main_loss = float(next(m for m in messages if m.startswith("main_samples_loss")).split(": ")[1])
    st_message = next(m for m in messages if m.startswith("n_pseudo_labels"))
    n_masked = int(float(st_message.split(",")[0].split(": ")[1]))
    self_training_loss = float(st_message.split("self_training_loss: ")[1])
    assert sorted(grads) == sorted(trainable), "every trained tensor gets a gradient"
    names = sorted(trainable)
    arrays["step_grad_norm"] = np.array([grads[n].norm().item() for n in names])
    arrays["step_param_delta_norm"] = np.array([(after[n] - tensors[n]).norm().item() for n in names])
    small = [n for n in names
             if n.startswith("prompt_learner.ctx") or "compound_prompts_text" in n or n.endswith(".bias")]
    for n in small:
        arrays[f"step_grad/{n}"] = grads[n].numpy()
        arrays[f"step_after/{n}"] = after[n].numpy()
    out["step"] = {
        "tau": tau, "weak_confidences_sorted": confidence, "loss": loss.item(), "main_samples_loss": main_loss,
        "self_training_loss": self_training_loss, "n_masked": n_masked, "tensor_names": names,
        "full_tensors_stored": small, "lr_before_step": lr_before,
        "lr_after_step": [model.prompt_optimizer.param_groups[0]["lr"],
                          model.debias_adapter_optimizer.param_groups[0]["lr"]],
        "predictions": [[int(p), float(c), index_of[rel_of[path]]] for p, c, path in seen_predictions],
        "sigma_after": [model.pl_per_class[c] for c in CLASSES],
        "new_leaderboard": {int(c): [index_of[rel_of[path]] for _, path in entries]
                            for c, entries in new_board.items()},
        "logged": messages,
    }
    timing["step_s"] = time.perf_counter() - t0

    # --- D_PL refresh: compute_top_k_leaderboard + update_main_samples on random boards and draws
    t0 = time.perf_counter()
    rng = np.random.default_rng(REFRESH_SEED)
    trials = []
    for trial in range(REFRESH_TRIALS):
        epoch = int(rng.choice(range(0, 50, 5)))
        per_class = int(rng.choice([4, 8, 30]))
        old = {}
        for c in range(len(CLASSES)):  # up to 6 images per class, any class, random confidences
            chosen = rng.choice(len(rel_paths), int(rng.integers(0, 7)), replace=False)
            old[c] = [[float(rng.uniform(0.3, 1.0)), int(i)] for i in chosen]
        draws = []  # (pseudolabel, confidence, pool index); an image may be drawn several times
        for _ in range(int(rng.integers(5, 60))):
            draws.append([int(rng.integers(0, len(CLASSES))), float(rng.uniform(0.5, 1.0)),
                          int(rng.integers(0, len(rel_paths)))])
        in_dpl = sorted({i for entries in old.values() for _, i in entries})
        model.leaderboard = {c: [(conf, full[rel_paths[i]]) for conf, i in entries] for c, entries in old.items()}
        model.unlabeled_samples_per_class = per_class
        new = top_k([(p, c, full[rel_paths[i]]) for p, c, i in draws], [full[rel_paths[i]] for i in in_dpl])
        model.update_main_samples(new, main_samples, None, epoch)
        trials.append({"epoch": epoch, "unlabelled_per_class": per_class, "old": old, "draws": draws, "in_dpl": in_dpl,
                       "new": {int(c): [index_of[rel_of[p]] for _, p in e] for c, e in new.items()},
                       "updated": {int(c): [index_of[rel_of[p]] for _, p in e] for c, e in model.leaderboard.items()}})
    out["refresh"] = {"n_main_samples": config.N_MAIN_SAMPLES, "epochs": config.EPOCHS,
                      "max_main_ratio": config.MAX_MAIN_RATIO, "trials": trials}
    sizes = {}
    for per_class in K_UNLABELLED_PER_CLASS:  # k_e: the size update_main_samples gives each class
        model.unlabeled_samples_per_class = per_class
        big = {c: [(1.0, f"x/{c}/{j}") for j in range(1000)] for c in range(len(CLASSES))}
        row = []
        for epoch in range(50):
            model.leaderboard = {c: [] for c in range(len(CLASSES))}
            model.update_main_samples(big, main_samples, None, epoch)
            row.append(len(model.leaderboard[0]))
        sizes[per_class] = row
    out["refresh"]["k_e"] = {str(k): v for k, v in sizes.items()}
    timing["refresh_s"] = time.perf_counter() - t0

    # --- LR schedule with the official settings (SGD lr 0.01, 1 warm-up epoch, 50 x 50 iterations)
    schedule_config = official_config(official, data_dir)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=STEP_LR, momentum=0.9, weight_decay=0.1)
    scheduler = make_scheduler(optimizer, schedule_config)
    lrs = []
    for _ in range(schedule_config.EPOCHS * schedule_config.ITER_PER_EPOCH):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    arrays["lr_schedule"] = np.array(lrs, dtype=np.float64)
    out["lr_schedule"] = {"lr": STEP_LR, "warmup_epochs": schedule_config.WARMUP_EPOCHS,
                          "iters_per_epoch": schedule_config.ITER_PER_EPOCH, "epochs": schedule_config.EPOCHS}

    timing["total_s"] = time.perf_counter() - started
    manifest = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "official": {"repository": "github.com/Noahwangyuchen/CAP", "commit": commit},
        "environment": _versions() | {"machine": platform.machine(), "torch_threads": torch.get_num_threads()},
        "weights": {"recipe": "benchmarks/official_weights.py", "seed": recipe.SEED, "digest": weights_digest,
                    "format": "TorchScript archive (torch.jit.script of a module tree holding the state dict)"},
        "learnable": {"recipe": "benchmarks/official_weights.py:learnable_tensors", "seed": recipe.LEARNABLE_SEED},
        "images": {"folder": "EuroSAT", "generator": "benchmarks/official_fixture.py:image_array", "seed": IMAGE_SEED,
                   "per_class": PER_CLASS, "side": IMAGE_SIDE, "jpeg_quality": JPEG_QUALITY, "pool_order": rel_paths},
        "config": {k: getattr(config, k) for k in ("PARADIGM", "N_LABEL", "N_MAIN_SAMPLES", "MAX_MAIN_RATIO", "N_CTX",
                                                   "CTX_INIT", "PROMPT_DEPTH", "DECAY", "OPTIM", "SCHEDULER", "PREC",
                                                   "ITER_EPOCHS")}
                  | {"classes": CLASSES, "folders": FOLDERS, "template": config.PROMPT_TEMPLATE},
        "inputs": {"feature_batch": FEATURE_BATCH, "margin_dpl": {str(c): v for c, v in MARGIN_DPL.items()}, "sigma": SIGMA,
                   "margin_scale": MARGIN_SCALE, "step_dpl": STEP_DPL, "step_unlabelled": STEP_UNLABELLED,
                   "strong_seeds": STRONG_SEEDS, "step_lr": STEP_LR, "step_batch": STEP_BATCH, "step_epochs": STEP_EPOCHS,
                   "step_warmup_epochs": 0, "momentum": 0.9, "grid": GRID, "refresh_seed": REFRESH_SEED},
        "timing_s": {k: round(v, 1) for k, v in timing.items()},
        "arrays": sorted(arrays),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "EuroSAT"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(data_folder, target)
    np.savez_compressed(args.out / "arrays.npz", **arrays)
    (args.out / "outputs.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return manifest


def _git_head(path: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        raise SystemExit(f"{path} is not a git checkout: pass --official-commit HASH") from None


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "pillow", "numpy", "openai-clip", "accelerate", "setuptools"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    args.out = args.out.resolve()
    manifest = run(args)
    print(json.dumps({"out": str(args.out), "timing_s": manifest["timing_s"], "official": manifest["official"]}))


if __name__ == "__main__":
    main()
