"""Run the official CPL code's functions on tiny fixed inputs and store their outputs as test data.

    python benchmarks/official_cpl_fixture.py --official PATH [--out tests/data/official_cpl]
                                              [--official-commit HASH]

``PATH`` is a work tree of github.com/vanillaer/CPL-ICML2024 (CPL, Zhang et al., ICML 2024), e.g.
``git --git-dir=MIRROR archive HEAD | tar -x -C /tmp/cplofficial``. Nothing of it is copied into
this project: only the numbers its functions compute are written to ``--out`` (``outputs.json``, a
few tens of KB) with a manifest (``manifest.json``: official commit, package versions, every input
and the official config as ``set_obj_conf`` resolved it). ``tests/test_official_cpl.py`` runs the
project's CPL on the same inputs and compares.

What is run (the textual-prompt path of ``scripts/run-textPT_ALL.sh``, ``MODEL=grip_textual``,
``LOSS_TYPE=cc``, ``CANDIDATE_METHOD=CPL``, EuroSAT's α = 0.75 and β = 0.80, ``LR=0.02`` as in the
README; TRZSL with ``REGULAR_THRESHOLD=auto*0.8``, since the fixture has 2 unseen classes and EuroSAT's
γ = 3.0 would make β = 1 − 3/2 negative):

* ``set_obj_conf`` on ``methods_config/grip_textual_config_PLL.yml`` with the script's environment:
  the resolved hyper-parameters;
* ``TrainingStrategy.grip_train`` with ``train`` stubbed to record ``N_PSEUDOSHOTS``: the per-class
  quota K_i of every round for several pool sizes;
* ``make_scheduler``: the learning rate in force during each epoch of a round;
* ``TrainingStrategy._before_train``: the number of batches (gradient steps) per epoch for a pool;
* ``PLL_loss('cc')`` on fixed logits with hard and soft candidates, and the SSL/TRZSL
  ``define_loss_function`` (labelled cross-entropy + LAMBDA x cc): values and logit gradients;
* ``gererate_partialY``: candidate sets (α intra-instance quantile, β inter-instance quantile) on
  fixed probability matrices, UL rounds 1-3 and TRZSL (β from γ);
* ``TextualFPL_PL._create_training_dataset`` (UL, SSL, TRZSL classes) with one persistent
  ``InstanceSelector``, rounds 1-3: the class-balanced selection, the pool capacities and the
  soft (round 1) / hard candidate targets;
* ``TrainingStrategy.train`` end to end (UL two rounds, SSL and TRZSL one round each) on cached
  features, with a stub text encoder standing in for CLIP's: every step's learning rate, loss,
  clipped gradient and the prompt after each step, and the prompt each round starts from.

Not part of ``make test``: the official code needs packages the project does not; they go into
a separate virtual environment (this script installs nothing):

    python3.11 -m venv /tmp/offvenv_cpl
    /tmp/offvenv_cpl/bin/pip install -c constraints.txt torch==2.13.0 torchvision==0.28.0 \\
        'setuptools<81' accelerate numpy pandas scipy pillow tqdm pyyaml ftfy regex
    /tmp/offvenv_cpl/bin/python benchmarks/official_cpl_fixture.py --official /tmp/cplofficial

(the official tree ships its own ``clip`` package, which needs ``ftfy``, ``regex`` and the
``pkg_resources`` of ``setuptools<81``; ``accelerate``, pandas and scipy are imported at module
level). The script adds this repository to ``sys.path`` only for ``import cap``, whose import hook
makes a CUDA torchvision wheel importable on CPU-only torch.

Shims, all applied from outside the official tree, none of which changes a number:

* ``dassl`` (Dassl.pytorch, installed from git by the official README) is not on PyPI: a stub
  module provides ``compute_accuracy`` / ``AverageMeter`` / ``MetricMeter``, used only for logging;
* ``LambdaLR`` in torch 2.13 no longer takes ``verbose=``: the keyword is accepted and dropped;
* ``ClassPool`` hard-codes ``device='cuda'`` for its (empty) uncertainty tensors: set to CPU;
* ``DataLoader(num_workers=8)``: forced to 0 workers (the loader's content and order do not
  depend on the worker count);
* CLIP is not loaded. ``compute_unlabled_logits`` (CLIP's forward over the unlabelled pool) is
  replaced by the fixed probability/logit matrices below, ``prepare_features`` (CLIP image
  features) by the fixed feature matrix, and the CoOp text encoder by a stub whose "prompt" is a
  d x d matrix W acting on fixed class text features (text = t + t W), which is what the project's
  feature backbone computes. The optimiser, clipping, scheduler, loss, data loader and selection
  are the official code's.

Runs in under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import subprocess
import sys
import time
import types
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# -------------------------------------------------------------------------------- inputs
# EuroSAT's values in run-textPT_ALL.sh: CONF_QUANTILE 75, REGULAR_THRESHOLD 0.80 (UL/SSL), auto*3.0 (TRZSL).
SCRIPT_ENV = {"OPTIM_SEED": "1", "VIS_ENCODER": "ViT-B/32", "DATASET_NAME": "EuroSAT", "DATASET_DIR": "data_",
              "SPLIT_SEED": "500", "MODEL": "grip_textual", "LOSS_TYPE": "cc", "EPOCHS": "50", "LR": "0.02",
              "DECAY": "0.05", "BATCH_SIZE": "64", "CANDIDATE_METHOD": "CPL", "TEMPERATURE": "1.0",
              "CONF_QUANTILE": "75", "CONF_THRESHOLD": "quantile", "STEP_QUANTILE": "10", "USE_SOFT_PARTIAL": "False"}
REGULAR_THRESHOLD = {"ul": "0.80", "ssl": "0.80", "trzsl": "auto*0.8"}  # TRZSL: gamma 0.8 (2 unseen classes here)

QUOTA_POOLS = [(150, 5, 10), (129, 4, 10), (2040, 102, 10), (5994, 200, 20), (3760, 47, 10), (1271, 18, 10)]
STEP_POOL_SIZES = [10, 63, 64, 65, 200, 1000]
SEL_N, SEL_C, SEL_SEED = 150, 5, 3  # selection scenario: 150 images, 5 classes, class 4 weak
TRAIN_D, TRAIN_C, TRAIN_PER_CLASS, TRAIN_SEED = 8, 4, 48, 5  # training scenario
TRZSL_UNSEEN = [0, 2]  # of TRAIN_C; the last class is seen (see README: one_hot width)
LOGIT_SCALE_LOG = math.log(100.0)


def selection_logits(round_: int) -> np.ndarray:
    """(SEL_N, SEL_C) logits of round ``round_``: images of class i % C, class 4 weak and confused with 3."""
    rng = np.random.default_rng([SEL_SEED, round_])
    labels = np.arange(SEL_N) % SEL_C
    logits = rng.normal(0.0, 1.6, (SEL_N, SEL_C))
    strength = np.array([3.0, 2.6, 2.2, 2.4, 0.6]) * (1.0 + 0.15 * (round_ - 1))
    logits[np.arange(SEL_N), labels] += strength[labels] * rng.uniform(0.3, 1.4, SEL_N)
    logits[labels == 4, 3] += 1.0
    logits[:, 4] -= {1: 4.5, 2: 2.5, 3: 2.5}[round_]  # class 4: no candidate in round 1, some later
    return logits.astype(np.float32)


def training_inputs() -> dict:
    """Features (N, d), class texts (C, d), true labels, logits of rounds 1-2 and the initial prompt W."""
    rng = np.random.default_rng(TRAIN_SEED)
    common = rng.normal(size=TRAIN_D)
    common /= np.linalg.norm(common)
    text = common + 0.12 * rng.normal(size=(TRAIN_C, TRAIN_D))  # CLIP-like: class texts close together
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    labels = np.repeat(np.arange(TRAIN_C), TRAIN_PER_CLASS)
    feats = common + 0.6 * (text[labels] - common) + rng.normal(0.0, 0.04, (len(labels), TRAIN_D))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    logits = {}
    for r in (1, 2):  # pseudolabelling logits of rounds 1 (zero-shot) and 2 (the "previous model")
        noise = np.random.default_rng([TRAIN_SEED, r]).normal(0.0, 0.3 * r, (len(labels), TRAIN_C))
        logits[r] = (100.0 * feats @ text.T + noise).astype(np.float32)
    w0 = rng.normal(0.0, 0.02, (TRAIN_D, TRAIN_D))
    return {"features": feats.astype(np.float32), "text": text.astype(np.float32), "labels": labels,
            "logits": logits, "w0": w0.astype(np.float32)}


def loss_inputs() -> dict:
    rng = np.random.default_rng(11)
    logits = rng.normal(0.0, 3.0, (6, 5)).astype(np.float32)
    hard = np.zeros((6, 5), dtype=np.float32)
    for i, cands in enumerate([[0], [1, 2], [3], [0, 4], [1, 2, 3], [4]]):
        hard[i, cands] = 1.0
    soft = hard * rng.uniform(0.1, 1.0, hard.shape).astype(np.float32)
    soft /= soft.sum(1, keepdims=True)
    lab_logits = rng.normal(0.0, 3.0, (3, 5)).astype(np.float32)
    lab_labels = np.array([2, 0, 4])
    return {"logits": logits, "hard": hard, "soft": soft, "lab_logits": lab_logits, "lab_labels": lab_labels}


# -------------------------------------------------------------------------------- shims
def apply_shims(official: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from cap import ensure_torchvision_importable

    ensure_torchvision_importable()  # before torchvision: a CUDA torchvision wheel on a CPU-only torch
    import torch

    dassl, metrics, utils = (types.ModuleType(n) for n in ("dassl", "dassl.metrics", "dassl.utils"))

    class AverageMeter:  # logging only
        def __init__(self, *a, **k):
            self.val = self.avg = 0.0

        def update(self, val, n=1):
            self.val = self.avg = val

    metrics.compute_accuracy = lambda output, target, topk=(1,): [
        (output.argmax(1) == target).float().mean() * 100]
    utils.AverageMeter = utils.MetricMeter = AverageMeter
    utils.load_checkpoint = None
    dassl.metrics, dassl.utils = metrics, utils
    sys.modules.update({"dassl": dassl, "dassl.metrics": metrics, "dassl.utils": utils})

    lambda_init = torch.optim.lr_scheduler.LambdaLR.__init__

    def lambda_lr_init(self, *args, verbose=None, **kwargs):  # torch 2.13: no `verbose`
        lambda_init(self, *args, **kwargs)

    torch.optim.lr_scheduler.LambdaLR.__init__ = lambda_lr_init

    loader_init = torch.utils.data.DataLoader.__init__

    def loader_without_workers(self, *args, **kwargs):
        kwargs["num_workers"] = 0
        kwargs.pop("worker_init_fn", None)
        loader_init(self, *args, **kwargs)

    torch.utils.data.DataLoader.__init__ = loader_without_workers

    sys.path.insert(0, str(official))
    import utils.utils as official_utils

    reset = official_utils.ClassPool.reset

    def cpu_reset(self):  # ClassPool sets device = 'cuda' for its empty tensors
        self.device = "cpu"
        reset(self)

    official_utils.ClassPool.reset = cpu_reset


def official_config(paradigm: str, **env):
    """The official config object: the yml plus run-textPT_ALL.sh's environment, via set_obj_conf."""
    import yaml
    from utils import set_obj_conf

    os.environ.update(SCRIPT_ENV | {"REGULAR_THRESHOLD": REGULAR_THRESHOLD[paradigm]} | env)
    with open(OFFICIAL / "methods_config" / "grip_textual_config_PLL.yml") as f:
        config = yaml.safe_load(f)
    conf, _ = set_obj_conf(types.SimpleNamespace(learning_paradigm=paradigm), config)
    return conf


def plain(obj):
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if hasattr(obj, "to_dict"):
        return plain(obj.to_dict())
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return obj


def short(a):
    """A float32 array as nested lists of 9-significant-digit floats (exact for float32)."""
    a = np.asarray(a, dtype=np.float32)
    return np.vectorize(lambda v: float(f"{v:.9g}"), otypes=[float])(a).tolist() if a.size else a.tolist()


def tensor_list(t):
    return short(t.detach().cpu().numpy())


RECORDED_STEPS = {0, 1, 2, 3, 9, 24, 49}  # steps whose gradient and prompt are stored (all: lr and loss)


# -------------------------------------------------------------------------------- pure parts
class _Pool:
    """What grip_train reads of a dataset: its length and file list, and update_xy."""

    def __init__(self, filepaths):
        self.filepaths = filepaths

    def __len__(self):
        return len(self.filepaths)

    def update_xy(self, filepaths, labels):
        self.filepaths = filepaths


def quotas() -> list[dict]:
    """grip_train's N_PSEUDOSHOTS (per-class quota) at every round, ``train`` stubbed."""
    import methods.unsupervised_learning_new.training_strategies as ts
    import methods.unsupervised_learning_new.textual_PL as ul

    out = []
    ts.save_parameters = lambda *a, **k: None
    for n, c, step_quantile in QUOTA_POOLS:
        obj = object.__new__(ul.TextualFPL_PL)
        obj.config = official_config("ul", STEP_QUANTILE=str(step_quantile))
        obj.classes = obj.unseen_classes = [f"c{i}" for i in range(c)]
        seen = []
        obj.train = lambda *a, iter_num=None, _seen=seen, _o=obj, **k: (_seen.append(_o.config.N_PSEUDOSHOTS), (None, None))[1]
        obj.test_predictions = lambda *a, **k: 0.0
        data = _Pool([f"f{i}" for i in range(n)])
        obj.grip_train(train_data=data, unlabeled_data=data, test_data=None)
        out.append({"n_unlabelled": n, "n_classes": c, "step_quantile": step_quantile, "rounds": len(seen),
                    "per_class": seen})
    return out


def schedule() -> dict:
    """make_scheduler: the LR in force during each epoch (the scheduler steps once per epoch)."""
    import torch
    from utils import make_scheduler

    conf = official_config("ul")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=conf.LR, weight_decay=conf.DECAY, momentum=0.9)
    sched = make_scheduler(opt, conf)
    lrs = []
    for _ in range(conf.EPOCHS):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    return {"lr": conf.LR, "epochs": conf.EPOCHS, "warmup_epochs": conf.WARMUP_EPOCHS, "lr_per_epoch": lrs}


def steps_per_epoch() -> list[dict]:
    """len(train_loader) from _before_train (batch 64, drop_last) for pools of several sizes."""
    import torch
    import methods.unsupervised_learning_new.textual_PL as ul

    out = []
    for n in STEP_POOL_SIZES:
        obj = object.__new__(ul.TextualFPL_PL)
        obj.config = official_config("ul")
        obj.model = torch.nn.Linear(1, 1)
        obj.optimizer = torch.optim.SGD(obj.model.parameters(), lr=0.1)
        data = torch.utils.data.TensorDataset(torch.zeros(n, 1))
        loader, _ = obj._before_train(data, None, train_transform=None)
        out.append({"pool": n, "batches_per_epoch": len(loader), "batch_size": obj.config.BATCH_SIZE})
    return out


def losses() -> dict:
    import torch
    import torch.nn.functional as F
    import methods.semi_supervised_learning_new.textual_PL as ssl
    from utils.loss import PLL_loss

    inp = loss_inputs()
    conf = official_config("ssl")
    out = {}
    for kind in ("hard", "soft"):
        x = torch.tensor(inp["logits"], requires_grad=True)
        loss = PLL_loss(type="cc", cfg=conf.LOSS_CFG)(x, torch.tensor(inp[kind]), None)
        loss.backward()
        out[f"cc_{kind}"] = {"loss": float(loss), "grad": tensor_list(x.grad)}
    # SSL/TRZSL batch: pseudolabelled rows first, then the labelled batch (one-hot rows)
    obj = object.__new__(ssl.TextualFPL_PL)
    obj.config = conf
    obj.loss_func = PLL_loss(type="cc", cfg=conf.LOSS_CFG)
    x = torch.tensor(np.concatenate([inp["logits"], inp["lab_logits"]]), requires_grad=True)
    labs = torch.cat([torch.tensor(inp["hard"]), F.one_hot(torch.tensor(inp["lab_labels"]), 5).float()])
    loss = obj.define_loss_function(x, labs, None, [f"p{i}" for i in range(len(inp["logits"]))])
    loss.backward()
    out["ssl_batch"] = {"loss": float(loss), "grad": tensor_list(x.grad), "lambda": conf.LAMBDA}
    return out


def candidates() -> dict:
    import torch
    import torch.nn.functional as F
    from utils import gererate_partialY

    out = {}
    conf = official_config("ul")
    for r in (1, 2, 3):
        logits = torch.tensor(selection_logits(r))
        probs = F.softmax(logits, dim=-1).float()
        pl, mask = gererate_partialY(config=conf.PartialY_CFG, probs=probs, output_logits=logits)
        out[f"ul_round{r}"] = {"alpha": conf.PartialY_CFG.CONF_QUANTILE / 100,
                              "beta": conf.PartialY_CFG.REGULAR_THRESHOLD,
                              "candidates": (pl > 1e-7).int().tolist(), "kept_rows": mask.int().tolist(),
                              "conf_thr": float(torch.quantile(probs.max(1).values, conf.PartialY_CFG.CONF_QUANTILE / 100))}
    return out


# -------------------------------------------------------------------------------- selection and training
class Stub:
    """Stand-ins for CLIP: a text encoder acting on fixed class texts, a frozen logit scale."""

    def __init__(self, text, classes):
        import torch

        class TextEncoder(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("text", torch.tensor(text))
                self.index = {c: i for i, c in enumerate(classes)}

            def forward(self, prefix, cls):  # text = t + t W, W the "prompt"
                t = self.text[[self.index[c] for c in cls]]
                return t + t @ prefix[0]

        self.text_encoder = TextEncoder()
        self.clip_model = types.SimpleNamespace(logit_scale=torch.tensor(LOGIT_SCALE_LOG), eval=lambda: None)


def make_dataset(files, feats_all, files_all):
    """An official CustomDataset in features mode (what prepare_features leaves) over ``files``."""
    import torch
    from data.dataset import CustomDataset

    ds = CustomDataset(files, "root", transform=None, train=True, labels=None, label_map=None)
    ds.dataset_name = "EuroSAT"
    ds.features_all = torch.tensor(feats_all)
    ds.filepaths_all = list(files_all)
    ds.use_features_mode = True
    ds.update_xy(filepaths=ds.filepaths, labels=None)
    return ds


def build_model(paradigm, classes, seen, unseen, text, files_all, labels_all, unlabelled_files, n_pseudoshots):
    import torch
    import methods.unsupervised_learning_new.textual_PL as ul
    import methods.semi_supervised_learning_new.textual_PL as ssl
    import methods.transductive_zsl_new.textual_PL as tr
    from utils import InstanceSelector

    cls = {"ul": ul, "ssl": ssl, "trzsl": tr}[paradigm].TextualFPL_PL
    obj = object.__new__(cls)
    obj.config = official_config(paradigm)
    obj.config.N_PSEUDOSHOTS = n_pseudoshots
    obj.classes, obj.seen_classes, obj.unseen_classes = classes, seen, unseen
    obj.label_to_idx = {c: i for i, c in enumerate(classes)}
    obj.device = "cpu"
    obj.template = obj.config.PROMPT_TEMPLATE
    stub = Stub(text, classes)
    obj.text_encoder, obj.clip_model = stub.text_encoder, stub.clip_model
    obj.transform = None
    if paradigm == "trzsl":
        obj.check_unlabeled = {f: i for i, f in enumerate(unlabelled_files)}
        obj.unseen_label_to_idx = {c: obj.label_to_idx[c] for c in unseen}
        obj.Selector = InstanceSelector(label_to_idx={i: c for i, c in enumerate(unseen)}, cfg=obj.config,
                                        convert_pred_method=obj.convert_trzsl_pred_label)
    else:
        if paradigm == "ssl":
            obj.check_unlabeled = {f: i for i, f in enumerate(unlabelled_files)}
        obj.Selector = InstanceSelector(label_to_idx=obj.label_to_idx, cfg=obj.config)
    truth = {f: int(l) for f, l in zip(files_all, labels_all)}
    pool_truth = torch.tensor([truth[f] for f in unlabelled_files])
    for pool in obj.Selector.Pools.cls_pools_dict.values():
        pool.labels_true = pool_truth
    obj.all_gt_label_dict = truth
    return obj


def record(obj, module, logits_by_round):
    """Patch the official object so that train() records what it does; returns the log."""
    import torch
    import torch.nn.functional as F

    log = {"rounds": []}

    def fake_logits(dataset, transform, clip_model, tag="PL", forward_method=None):
        files = list(dataset.filepaths)
        logits = torch.tensor(logits_by_round[len(log["rounds"])])
        rows = [obj._row[f] for f in files]
        logits = logits[rows]
        if obj.config.LEARNING_PARADIGM == "trzsl":
            logits = logits[:, [obj.label_to_idx[c] for c in obj.unseen_classes]]
        return files, F.softmax(logits, dim=-1).float(), logits.float()

    module.compute_unlabled_logits = fake_logits

    define_model = obj.define_model

    def recording_define_model(*a, **k):
        define_model(*a, **k)
        log["rounds"][-1]["initial_prompt"] = tensor_list(obj.model.prefix[0])

    obj.define_model = recording_define_model

    create = obj.create_training_dataset

    def recording_create(train_data, unlabeled_data, iter_num):
        log["rounds"].append({"iter_num": iter_num, "steps": []})
        caps_before = obj.Selector.Pools.get_pool_caps()
        train_data_, partial = create(train_data, unlabeled_data, iter_num)
        entry = log["rounds"][-1]
        entry["beta"] = obj.config.PartialY_CFG.REGULAR_THRESHOLD
        entry["n_pseudoshots"] = obj.config.N_PSEUDOSHOTS
        entry["fills_before"] = caps_before
        entry["pool_caps"] = [p.pool_max_capacity for p in obj.Selector.Pools.cls_pools_dict.values()]
        entry["pool_fills"] = obj.Selector.Pools.get_pool_caps()
        entry["pools"] = [[obj._row[unlabeled_data_files[i]] for i in p.pool_idx.tolist()]
                          for p in obj.Selector.Pools.cls_pools_dict.values()]
        files = list(train_data_.filepaths)
        entry["train_rows"] = [obj._row[f] for f in files]
        entry["targets"] = tensor_list(train_data_.labels)
        if hasattr(obj, "train_labeled_sampler"):
            entry["labelled_batch_size"] = obj.train_labeled_sampler.bs
            entry["n_labelled"] = obj.train_labeled_sampler.n
        return train_data_, partial

    unlabeled_data_files = []
    obj.create_training_dataset = recording_create
    obj._unlabeled_files = unlabeled_data_files

    backprop = obj.backpropagate

    def recording_backpropagate():
        steps = log["rounds"][-1]["steps"]
        step = {"lr": obj.optimizer.param_groups[0]["lr"]}
        keep = len(steps) in RECORDED_STEPS
        if keep:
            step["grad"] = tensor_list(obj.model.prefix.grad[0])
        backprop()
        if keep:
            step["prompt"] = tensor_list(obj.model.prefix[0])
        steps.append(step)

    obj.backpropagate = recording_backpropagate
    loss_fn = obj.define_loss_function

    def recording_loss(*a, **k):
        loss = loss_fn(*a, **k)
        log["rounds"][-1].setdefault("losses", []).append(float(loss))
        return loss

    obj.define_loss_function = recording_loss
    return log


def run_training(paradigm: str, n_rounds: int, n_pseudoshots: int) -> dict:
    import torch
    import methods.unsupervised_learning_new.textual_PL as ul
    import methods.semi_supervised_learning_new.textual_PL as ssl
    import methods.transductive_zsl_new.textual_PL as tr

    inp = training_inputs()
    classes = [f"class{i}" for i in range(TRAIN_C)]
    files_all = [f"root/train/img{i:03d}.jpg" for i in range(len(inp["labels"]))]
    labels = inp["labels"]
    if paradigm == "ul":
        seen, unseen = classes, []
        labelled = []
    elif paradigm == "ssl":
        seen = unseen = classes
        labelled = [i for c in range(TRAIN_C) for i in np.flatnonzero(labels == c)[:2]]
    else:
        unseen = [classes[c] for c in TRZSL_UNSEEN]
        seen = [c for c in classes if c not in unseen]
        labelled = [i for i in range(len(labels)) if classes[labels[i]] in seen]
    unlabelled = [i for i in range(len(labels)) if i not in set(labelled)]
    module = {"ul": ul, "ssl": ssl, "trzsl": tr}[paradigm]
    unl_files = [files_all[i] for i in unlabelled]
    obj = build_model(paradigm, classes, seen, unseen, inp["text"], files_all, labels, unl_files, n_pseudoshots)
    obj._row = {f: i for i, f in enumerate(files_all)}
    obj.initial_prefix = torch.tensor(inp["w0"])[None]
    log = record(obj, module, inp["logits"])
    obj._unlabeled_files.extend(unl_files)
    names = [f.removeprefix("root/train/") for f in files_all]
    train_files = names if paradigm == "ul" else [names[i] for i in unlabelled + labelled]
    train_data = make_dataset(train_files, inp["features"], files_all)
    unlabeled = make_dataset([names[i] for i in unlabelled], inp["features"], files_all)
    torch.manual_seed(0)
    for niter in range(1, n_rounds + 1):
        obj.train(train_data=train_data, unlabeled_data=unlabeled, val_data=None, only_seen=False, iter_num=niter)
        train_data.update_xy(filepaths=[f"root/train/{f}" for f in train_files], labels=None)
        unlabeled.update_xy(filepaths=list(unl_files), labels=None)
    log.update({"paradigm": paradigm, "labelled": [int(i) for i in labelled], "unlabelled": unlabelled,
                "classes_seen": [classes.index(c) for c in seen] if paradigm == "trzsl" else [],
                "classes_unseen": [classes.index(c) for c in unseen], "n_pseudoshots": n_pseudoshots,
                "logit_scale": float(obj.clip_model.logit_scale.exp())})
    return log


def selection_rounds(paradigm: str = "ul") -> dict:
    """_create_training_dataset with one persistent InstanceSelector over rounds 1-3 (UL quotas of
    grip_train for SEL_N, SEL_C)."""
    import torch
    import torch.nn.functional as F
    import methods.unsupervised_learning_new.textual_PL as ul

    classes = [f"class{i}" for i in range(SEL_C)]
    files = [f"root/train/img{i:03d}.jpg" for i in range(SEL_N)]
    labels = np.arange(SEL_N) % SEL_C
    obj = build_model("ul", classes, classes, [], np.eye(SEL_C, dtype=np.float32), files, labels, files, 16)
    num_samples = int(SEL_N / int(100 / obj.config.STEP_QUANTILE))
    out = []
    for r in (1, 2, 3):
        obj.config.N_PSEUDOSHOTS = int(r * num_samples / SEL_C)
        logits = torch.tensor(selection_logits(r))
        probs = F.softmax(logits, dim=-1).float()
        fills_before = obj.Selector.Pools.get_pool_caps()
        data = types.SimpleNamespace(labels=None, filepaths=None)
        data.update_xy = lambda labels, filepaths, _d=data: (setattr(_d, "labels", labels), setattr(_d, "filepaths", filepaths))
        _, selected, _ = obj._create_training_dataset(data, r, files, probs, logits)
        pools = [p.pool_idx.tolist() for p in obj.Selector.Pools.cls_pools_dict.values()]
        out.append({"round": r, "quota": obj.config.N_PSEUDOSHOTS, "fills_before": fills_before,
                    "pool_caps": [p.pool_max_capacity for p in obj.Selector.Pools.cls_pools_dict.values()],
                    "pools": pools, "selected_rows": [files.index(f) for f in data.filepaths],
                    "targets": tensor_list(selected)})
    return {"paradigm": paradigm, "rounds": out}


# -------------------------------------------------------------------------------- main
def _git_head(path: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:
        return None


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "numpy", "accelerate", "scipy", "pandas", "PyYAML"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


OFFICIAL = Path(".")


def main(argv=None) -> None:
    global OFFICIAL
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, type=Path, help="work tree of vanillaer/CPL-ICML2024")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "official_cpl")
    parser.add_argument("--official-commit", default=None)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    OFFICIAL = args.official.resolve()
    apply_shims(OFFICIAL)
    import logging

    logging.disable(logging.CRITICAL)  # the official code logs every pool at INFO
    conf = {p: plain(official_config(p)) for p in ("ul", "ssl", "trzsl")}
    outputs = {
        "quotas": quotas(),
        "schedule": schedule(),
        "steps_per_epoch": steps_per_epoch(),
        "losses": losses(),
        "candidates": candidates(),
        "selection": selection_rounds("ul"),
        "training": {"ul": run_training("ul", 2, 16), "ssl": run_training("ssl", 1, 16),
                     "trzsl": run_training("trzsl", 1, 32)},
    }
    inp = training_inputs()
    manifest = {
        "official": {"repository": "github.com/vanillaer/CPL-ICML2024",
                     "commit": args.official_commit or _git_head(OFFICIAL)},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "script_env": SCRIPT_ENV, "regular_threshold": REGULAR_THRESHOLD,
        "official_config": conf,
        "inputs": {
            "quota_pools": QUOTA_POOLS, "step_pool_sizes": STEP_POOL_SIZES,
            "selection": {"n": SEL_N, "c": SEL_C, "seed": SEL_SEED,
                          "logits": {r: short(selection_logits(r)) for r in (1, 2, 3)}},
            "training": {"d": TRAIN_D, "c": TRAIN_C, "per_class": TRAIN_PER_CLASS, "seed": TRAIN_SEED,
                         "trzsl_unseen": TRZSL_UNSEEN, "features": short(inp["features"]),
                         "text": short(inp["text"]), "labels": inp["labels"].tolist(),
                         "logits": {r: short(v) for r, v in inp["logits"].items()}, "w0": short(inp["w0"])},
            "losses": {k: (short(v) if v.dtype.kind == "f" else v.tolist()) for k, v in loss_inputs().items()},
        },
        "timing_s": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "outputs.json").write_text(json.dumps(outputs) + "\n", encoding="utf-8")
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({"out": str(args.out), "timing_s": manifest["timing_s"], "official": manifest["official"]}))


if __name__ == "__main__":
    main()
