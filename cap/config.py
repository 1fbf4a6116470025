"""The run configuration: one frozen dataclass, every switch of the paper and every official-code
quirk as a named field, per-dataset overrides made explicit in :func:`resolve`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields, replace
from typing import Any

from cap.data.registry import check_paradigm, get_dataset
from cap.errors import ParameterError, UnknownNameError, check_float, check_int, matches_types

METHOD_TITLES = {"zero_shot": "Zero-shot CLIP", "fpl": "FPL", "grip": "GRIP", "cpl": "CPL", "cap": "CAP"}  # as the paper names them
METHOD_NAMES = tuple(METHOD_TITLES)  # registered in cap.methods, in this order
BACKENDS = ("sim", "openclip")

@dataclass(frozen=True)
class RunConfig:
    """One run. ``None`` means "the default for this dataset", filled in by :func:`resolve`."""

    dataset: str
    paradigm: str = "ul"
    method: str = "cap"
    seed: int = 1  # the replicate: optimisation seed (initialisation, data order, augmentation) and, on the
    # simulator, the problem's draw unless sim_seed fixes it
    backend: str = "sim"  # sim: concept simulator features; openclip: CLIP on real images

    # data and paradigm
    split_seed: int = 500  # TRZSL seen/unseen draw
    validation_seed: int = 0  # SSL labelled draw (independent of ``seed``)
    n_label: int = 2  # SSL labels per class
    unlabelled_fraction: float = 1.0  # share of the unlabelled pool used (the paper's Fig. 11)
    eurosat_test_in_pool: bool = True  # official quirk: EuroSAT test images may be in the pool
    sim_seed: int | None = None  # simulator problem seed (backend sim); None: the replicate's seed, so each
    # replicate is a new draw of the problem and a new optimisation seed (methods pair on both)
    sim_train_per_class: int | None = None  # simulator pool size override (None: preset)
    sim_test_per_class: int | None = None
    sim_confusion_strength: float | None = None  # planted confusion strength override (None: preset; diagnostics)
    sim_hard_fraction: float | None = None  # share of hard images override (None: preset; diagnostics)
    sim_mismatch_alignment: float | None = None  # how much of a mismatched text still points at its images (None: preset; diagnostics)
    sim_logit_scale: float | None = None  # a fixed logit scale instead of the one calibrated to CLIP's zero-shot ECE (diagnostics)
    sim_classes: int | None = None  # simulate only this many of the dataset's classes (None: all; diagnostics)
    sim_prompt_lr_scale: float = 0.1  # the feature backend's maps learn at this times the prompt lr (see models/features.py)

    # schedule (official values)
    schedule_factor: float | None = None  # f: epochs (CAP), epochs per round (baselines) and the D_PL
    # refresh period all become round(f × official); None: the values below as given
    epochs: int = 50
    iters_per_epoch: int = 50
    batch_size: int = 32  # 128 reproduces the 4-process run.sh of the official code
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.1
    warmup_epochs: int = 1

    # CAP
    k: int | None = None  # initial pseudolabels per class; None: 16, or 6 for Flowers102 (official_flowers_k)
    official_flowers_k: bool = True  # official code uses k = 6 for Flowers102; False: the paper's 16
    tau: float | None = None  # self-training threshold; None: 0.85 (FGVC-Aircraft 0.5)
    max_main_ratio: float | None = None  # final D_PL size per class / unlabelled per class; None: 0.8 (FGVC 0.6)
    refresh_every: int = 5
    margin: bool = True  # confusion-aware calibrated margin on every cross-entropy term
    margin_scale: float | None = None  # m; None: 12 (FGVC-Aircraft 14 only when official_fgvc_margin is False)
    official_fgvc_margin: bool = True  # official: the FGVC 14.0 is overwritten by the environment's 12
    delta: str = "code"  # δ_c: "code" (1−r)/(1+r) or "paper" 1−r
    concept_alignment: bool = True
    cluster_seed: int = 42  # K-means seed of mismatch detection and description choice (official notebook: 42);
    # an offline step in the paper, so the same for every optimisation seed
    # official: the code's hard-coded mismatched classes (cap/data/registry.yml); detect: the paper's clustering
    mismatch_source: str = "official"
    # first: one fixed description per class, as the code has (the companion's own descriptions, first of
    # each list); best_of_n: the paper's choice of the description closest to the class's image cluster
    description_choice: str = "first"
    leaderboard_order: str = "official"  # initial D_PL as the code leaves it (overflow unsorted); sorted: by confidence
    # official: a margin prototype counts an image in several classes' D_PL once (the first class met in a
    # seeded shuffle, as the code's shuffled loader); every_entry: once per D_PL entry
    margin_prototypes: str = "official"
    independent_adapters: bool = True  # False: one visual adapter for pseudolabels and self-training
    trzsl_probs_over: str = "all"  # TRZSL zero-shot pseudolabels: softmax over "all" classes or "unseen" only

    # baselines (FPL, GRIP, CPL): CPL's training settings for all three (its config, which also re-runs
    # GRIP; Menghini's own GRIP/FPL config is lr 0.1, wd 0.1, batch 16, 150 epochs: about 10 times the steps)
    baseline_lr: float = 0.02
    baseline_weight_decay: float = 0.05
    baseline_batch_size: int = 64
    baseline_epochs: int = 50  # epochs per round (one round for FPL)
    baseline_warmup_epochs: int = 2  # CPL's WARMUP_EPOCHS (Menghini's: 5 of 150)
    rounds: int | None = None  # GRIP/CPL rounds; None: 10 (CUB 5)
    cpl_alpha: float | None = None  # None: per-dataset table
    cpl_beta: float | None = None
    # How each baseline trains, as its official code does (tests/test_official_menghini.py for FPL and
    # GRIP, tests/test_official_cpl.py for CPL). None: the method's official value (OFFICIAL_BASELINES).
    budget_rounding: str = "official"  # K_i = ⌊i·⌊|U|/I⌋/C⌋ (both codes); "exact" ⌊i·|U|/(I·C)⌋
    baseline_schedule: str = "per_epoch"  # the LR changes once per epoch (both codes); "per_step"
    baseline_grad_clip: float | None = None  # gradient-norm clip before every step; 0: none (Menghini), CPL 0.8
    baseline_last_batch: str | None = None  # "kept" (Menghini), "dropped" (CPL: none under a batch), "at_least_one"
    baseline_labelled: str | None = None  # SSL/TRZSL labelled images: "weighted" (Menghini: one dataset, per-group
    # weights), "separate" (CPL: a labelled batch of its own each step, CE + cc), "joint" (one plain mean)
    baseline_reinit: str | None = None  # prompts at each round: "carry" (Menghini: its parameter aliases the initial
    # prompt, so rounds continue), "initial" (CPL: the prompts drawn before round 1), "fresh" (a new draw)
    baseline_train_ratio: float | None = None  # Menghini 0.8: 20 % of the labelled images, and of the pseudolabels
    # when the per-class budget is >= 10, held out for validation (never trained on); CPL 1
    baseline_leaderboard: str = "menghini"  # FPL/GRIP leaderboards: "menghini" appends unsorted; "sorted"
    baseline_trzsl_probs_over: str = "unseen"  # the baselines' TRZSL pseudolabel softmax (both codes); "all"
    cpl_quota: str = "pools"  # CPL per-class cap: "pools" grows each pool from its last fill (official); "budget" K_i
    cpl_soft_first_round: bool = True  # CPL round-1 targets: probabilities renormalised over the candidates

    # open_clip backend
    backbone: str = "ViT-B-32"
    pretrained: str = "openai"
    weights: str | None = None
    precision: str = "auto"
    prompt_depth: int = 8  # MaPLe depth (official 8; vanilla MaPLe 9)
    template_bug: bool = True  # official prompt string "a photo of a {}<class>"
    data_root: str | None = None
    descriptions: str | None = None  # YAML of class descriptions for concept alignment; None: cap/data/descriptions/<dataset>.yml

    def replace(self, **changes: Any) -> RunConfig:
        return replace(self, **changes)


CHOICES = {
    "method": METHOD_NAMES,
    "backend": BACKENDS,
    "delta": ("code", "paper"),
    "mismatch_source": ("detect", "official"),
    "description_choice": ("best_of_n", "first"),
    "trzsl_probs_over": ("all", "unseen"),
    "leaderboard_order": ("official", "sorted"),
    "margin_prototypes": ("official", "every_entry"),
    "budget_rounding": ("exact", "official"),
    "baseline_schedule": ("per_step", "per_epoch"),
    "baseline_last_batch": (None, "kept", "dropped", "at_least_one"),
    "baseline_labelled": (None, "weighted", "separate", "joint"),
    "baseline_reinit": (None, "carry", "initial", "fresh"),
    "baseline_leaderboard": ("menghini", "sorted"),
    "baseline_trzsl_probs_over": ("all", "unseen"),
    "cpl_quota": ("budget", "pools"),
}


def make_config(**values: Any) -> RunConfig:
    """A RunConfig from keyword values; unknown keys are errors naming the valid ones."""
    valid = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ParameterError(f"unknown config key(s) {unknown}; valid keys: {', '.join(sorted(valid))}")
    if "dataset" not in values:
        raise ParameterError("a run needs a dataset")
    return RunConfig(**values)


def _check_types(config: RunConfig) -> None:
    """Every field holds a value of its declared type (a YAML or command-line value may not)."""
    for f in fields(RunConfig):
        value = getattr(config, f.name)
        if not matches_types(value, [t.strip() for t in str(f.type).split("|")]):
            raise ParameterError(f"config field {f.name!r} must be {f.type}, got {type(value).__name__} {value!r}")


def _check_baseline_settings(config: RunConfig) -> None:
    check_int("baseline_warmup_epochs", config.baseline_warmup_epochs, 0)
    if config.baseline_grad_clip is not None:
        check_float("baseline_grad_clip", config.baseline_grad_clip, 0.0)
    if config.baseline_train_ratio is not None:
        check_float("baseline_train_ratio", config.baseline_train_ratio, 0.01, 1.0)


def resolve(config: RunConfig) -> RunConfig:
    """Validate ``config`` and fill every dataset-dependent default (the official per-dataset overrides)."""
    _check_types(config)
    info = get_dataset(config.dataset)
    paradigm = check_paradigm(config.paradigm)
    if config.sim_seed is None:
        config = replace(config, sim_seed=config.seed)
    for key, choices in CHOICES.items():
        if getattr(config, key) not in choices:
            raise UnknownNameError(key, getattr(config, key), choices)
    for key in ("seed", "split_seed", "validation_seed", "sim_seed", "cluster_seed"):
        check_int(key, getattr(config, key), 0)
    for key in ("epochs", "iters_per_epoch", "batch_size", "refresh_every", "baseline_batch_size", "baseline_epochs",
                "n_label", "prompt_depth"):
        check_int(key, getattr(config, key), 1)
    check_int("warmup_epochs", config.warmup_epochs, 0)
    _check_baseline_settings(config)
    check_float("unlabelled_fraction", config.unlabelled_fraction, 0.01, 1.0)
    check_float("momentum", config.momentum, 0.0, 1.0)
    for key in ("lr", "weight_decay", "baseline_lr", "baseline_weight_decay", "sim_prompt_lr_scale"):
        check_float(key, getattr(config, key), 0.0)

    if config.sim_classes is not None:
        check_int("sim_classes", config.sim_classes, 2)
        if config.backend != "sim":
            raise ParameterError(f"sim_classes={config.sim_classes} simulates a subset of the classes, which only the "
                                 f"concept simulator can do: use backend 'sim' or leave sim_classes unset")
        if config.sim_classes > info.n_classes:
            raise ParameterError(f"sim_classes={config.sim_classes}, but {info.title} has {info.n_classes} classes: "
                                 f"give at most {info.n_classes}")

    official = info.official_overrides  # the official code's per-dataset changes (cap/data/registry.yml)
    k = config.k if config.k is not None else int(official.get("k", 16) if config.official_flowers_k else 16)
    margin_scale = config.margin_scale
    if margin_scale is None:  # the official code's dataset value is overwritten by the environment's 12
        margin_scale = 12.0 if config.official_fgvc_margin else float(official.get("margin_scale", 12.0))
    changes = dict(
        dataset=info.name,
        paradigm=paradigm,
        k=check_int("k", k, 1),
        tau=check_float("tau", config.tau if config.tau is not None else float(official.get("tau", 0.85)), 0.0, 1.0),
        max_main_ratio=check_float("max_main_ratio", config.max_main_ratio if config.max_main_ratio is not None
                                   else float(official.get("max_main_ratio", 0.8)), 0.0, 1.0),
        margin_scale=check_float("margin_scale", margin_scale, 0.0),
        rounds=check_int("rounds", config.rounds if config.rounds is not None else info.rounds, 1),
        cpl_alpha=check_float("cpl_alpha", config.cpl_alpha if config.cpl_alpha is not None else info.cpl.alpha, 0.0, 1.0),
        cpl_beta=config.cpl_beta,  # TRZSL's beta depends on the number of unseen classes: see cpl_beta()
    )
    if config.cpl_beta is None and paradigm != "trzsl":
        changes["cpl_beta"] = info.cpl.beta
    if changes["cpl_beta"] is not None:
        check_float("cpl_beta", changes["cpl_beta"], 0.0, 1.0)
    changes |= {key: value for key, value in OFFICIAL_BASELINES.get(config.method, {}).items() if getattr(config, key) is None}
    resolved = replace(config, **changes, **scaled_schedule(config))
    for f in fields(RunConfig):  # every float field is finite, those without a range above too
        if "float" in str(f.type) and getattr(resolved, f.name) is not None:
            check_float(f.name, getattr(resolved, f.name))
    return resolved


# Each baseline's official behaviour where the two official codes differ: Menghini et al.'s for FPL
# and GRIP (github.com/BatsResearch/menghini-neurips23-code), CPL's for CPL (vanillaer/CPL-ICML2024).
_MENGHINI = {"baseline_grad_clip": 0.0, "baseline_last_batch": "kept", "baseline_labelled": "weighted",
             "baseline_reinit": "carry", "baseline_train_ratio": 0.8}
OFFICIAL_BASELINES = {"fpl": _MENGHINI, "grip": _MENGHINI,
                      "cpl": {"baseline_grad_clip": 0.8, "baseline_last_batch": "dropped", "baseline_labelled": "separate",
                              "baseline_reinit": "initial", "baseline_train_ratio": 1.0}}


# What ``schedule_factor`` scales: every count of epochs in the official schedules (CAP: 50 epochs,
# a D_PL refresh every 5; FPL, GRIP and CPL: 50 epochs per round). Iterations per epoch, rounds,
# batch sizes and the one warm-up epoch stay official.
SCALED_EPOCHS = {"epochs": 50, "baseline_epochs": 50, "refresh_every": 5}


def scaled_schedule(config: RunConfig) -> dict[str, int]:
    """The epoch counts for ``config.schedule_factor`` f: max(1, round(f × official)), rounding
    halves up; nothing without a factor. Setting f and one of those counts at once is an error."""
    f = config.schedule_factor
    if f is None:
        return {}
    check_float("schedule_factor", f, 0.0)
    if f <= 0:
        raise ParameterError(f"schedule_factor must be > 0, got {f}")
    scaled = {key: max(1, int(math.floor(f * official + 0.5))) for key, official in SCALED_EPOCHS.items()}
    changed = [key for key, official in SCALED_EPOCHS.items() if getattr(config, key) not in (official, scaled[key])]
    if changed:  # (already scaled values are fine: resolving twice changes nothing)
        raise ParameterError(f"schedule_factor {f} sets {', '.join(SCALED_EPOCHS)}; {', '.join(changed)} cannot be set "
                             "as well: drop schedule_factor or those fields")
    return scaled


def cpl_beta(config: RunConfig, n_unseen: int) -> float:
    """CPL's β: the per-dataset value in UL/SSL; 1 − γ/C_unseen in TRZSL."""
    if config.cpl_beta is not None:
        return config.cpl_beta
    return 1.0 - get_dataset(config.dataset).cpl.gamma / n_unseen


def as_dict(config: RunConfig) -> dict:
    return dataclasses.asdict(config)
