"""The project's CPL against stored outputs of the official CPL code: a differential fixture.

``benchmarks/official_cpl_fixture.py`` ran the official functions of github.com/vanillaer/CPL-ICML2024
(the commit in ``tests/data/official_cpl/manifest.json``; textual prompts, ``MODEL=grip_textual``,
``LOSS_TYPE=cc``, run-textPT_ALL.sh's environment) on the small inputs the manifest holds and stored
what they computed: per-round quotas, the LR of every epoch, batches per epoch, the cc loss and its
gradient, candidate sets, the class-balanced selection of rounds 1-3 with its pool capacities, and
whole rounds of ``TrainingStrategy.train`` (UL two rounds, SSL and TRZSL one) with a stub text
encoder acting as ``t + t W`` on fixed class texts, which is the project's feature backbone with
its text map W as the only prompt.

Where the project differs from the official code, the test selects the official behaviour through
the RunConfig options proposed in ``OFFICIAL`` below (and the function arguments named in each
test); those tests fail until the options exist.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cap.config import RunConfig, resolve
from cap.core.losses import partial_label_loss
from cap.core.pseudolabels import balanced_selection, cpl_candidates, grip_budget
from cap.data.splits import ParadigmSplit
from cap.methods import baselines
from cap.models.feature_backbone import FeatureBackbone
from cap.sources.source import Source

DATA = Path(__file__).parent / "data" / "official_cpl"
MANIFEST = json.loads((DATA / "manifest.json").read_text())
OUT = json.loads((DATA / "outputs.json").read_text())
INPUTS = MANIFEST["inputs"]

# The RunConfig options selecting the official CPL behaviour (names and official values): CPL's
# defaults (cap.config.OFFICIAL_BASELINES and the baseline fields' defaults).
OFFICIAL = {
    "budget_rounding": "official",  # K_i = ⌊i·⌊|U|/I⌋ / C⌋ (grip_train), not ⌊i·|U| / (I·C)⌋
    "cpl_quota": "pools",  # per-class cap min(fill_{i-1} + K_i − max fill_{i-1}, K_i), not K_i
    "cpl_soft_first_round": True,  # round 1 targets: probabilities renormalised over the candidates
    "baseline_schedule": "per_epoch",  # the LR changes once per epoch (scheduler.step() per epoch)
    "baseline_warmup_epochs": 2,  # WARMUP_EPOCHS of grip_textual_config_PLL.yml; epoch 0 has LR 0
    "baseline_grad_clip": 0.8,  # clip_grad_norm_(max_norm=0.8) before every step
    "baseline_last_batch": "dropped",  # a pool smaller than a batch gives no step (DataLoader drop_last)
    "baseline_labelled": "separate",  # SSL/TRZSL: own labelled batch each step, CE + LAMBDA·cc
    "baseline_reinit": "initial",  # every round restarts from the prompts drawn before round 1
    "baseline_trzsl_probs_over": "unseen",  # TRZSL pseudolabels: softmax over the unseen classes only
    "baseline_train_ratio": 1.0,  # nothing held out
}

TOL_LOSS = 1e-5  # relative, float32 arithmetic on both sides
TOL_PROMPT = 5e-5  # |W_project − W_official|_max / |W_official − W_0|_max after a round of 50 steps


def config(paradigm: str = "ul", official: bool = False, **changes) -> RunConfig:
    c = resolve(RunConfig(dataset="eurosat", paradigm=paradigm, method="cpl"))
    return c.replace(**changes, **(OFFICIAL if official else {}))


class ArraySource(Source):
    """A source over fixed feature vectors (the fixture's)."""

    def __init__(self, features, labels, text, split, logit_scale):
        super().__init__(classnames=[f"c{i}" for i in range(text.shape[0])], train_labels=np.asarray(labels),
                         test_labels=np.asarray(labels), split=split, zero_shot_image=features,
                         zero_shot_text=text, logit_scale=logit_scale)
        self._x = torch.as_tensor(features)

    def batches(self, order, batch_size, views, generator, drop_last=True):
        stop = len(order) - batch_size + 1 if drop_last else len(order)
        for start in range(0, max(stop, 0), batch_size):
            index = torch.as_tensor(np.asarray(order[start:start + batch_size]))
            yield {"index": index, "weak": self._x[index]}

    def test_batches(self, batch_size):
        yield self._x, torch.as_tensor(self.train_labels)


class TextPromptBackbone(FeatureBackbone):
    """The official stub's model: text = normalize(t + t W), images unchanged, W the only prompt."""

    def __init__(self, text, logit_scale, w0):
        super().__init__(torch.as_tensor(text), logit_scale)
        with torch.no_grad():
            self.text_map.copy_(torch.as_tensor(w0))

    def encode_image(self, images):
        return F.normalize(images, dim=1)

    def prompt_parameters(self):
        return [self.text_map]


def training_source(paradigm: str) -> tuple[ArraySource, dict]:
    t = INPUTS["training"]
    run = OUT["training"][paradigm]
    labels = np.asarray(t["labels"])
    c = t["c"]
    if paradigm == "trzsl":
        seen, unseen = run["classes_seen"], run["classes_unseen"]
        split = ParadigmSplit(paradigm, run["labelled"], run["unlabelled"], seen, unseen, unseen)
    else:
        split = ParadigmSplit(paradigm, run["labelled"], run["unlabelled"], [], [], list(range(c)))
    source = ArraySource(np.asarray(t["features"], dtype=np.float32), labels,
                         np.asarray(t["text"], dtype=np.float32), split, run["logit_scale"])
    return source, run


# --------------------------------------------------------------------------- hyper-parameters
def test_cpl_defaults_are_the_official_behaviour():
    ours = config()
    assert {key: getattr(ours, key) for key in OFFICIAL} == OFFICIAL


def test_official_config_is_the_projects_cpl_config():
    """run-textPT_ALL.sh + grip_textual_config_PLL.yml, as set_obj_conf resolved them."""
    conf = MANIFEST["official_config"]["ul"]
    ours = config()
    assert (conf["LR"], conf["DECAY"], conf["BATCH_SIZE"], conf["EPOCHS"]) == (
        ours.baseline_lr, ours.baseline_weight_decay, ours.baseline_batch_size, ours.baseline_epochs)
    assert conf["OPTIM"] == "SGD" and ours.momentum == 0.9  # momentum=0.9 is hard-coded in define_model
    assert int(100 / conf["STEP_QUANTILE"]) == ours.rounds
    assert conf["PartialY_CFG"]["CONF_QUANTILE"] / 100 == ours.cpl_alpha
    assert conf["PartialY_CFG"]["REGULAR_THRESHOLD"] == ours.cpl_beta
    assert conf["LOSS_CFG"]["LOSS_TYPE"] == "cc" and conf["LAMBDA"] == 1.0
    assert conf["PartialY_CFG"]["USE_SOFT_PARTIAL"] is False and conf["MODEL"] == "grip_textual"


def test_official_warmup_epochs():
    conf = MANIFEST["official_config"]["ul"]
    assert (conf["SCHEDULER"], conf["WARMUP_EPOCHS"]) == ("cosine", 2)
    assert config(official=True).baseline_warmup_epochs == conf["WARMUP_EPOCHS"]


def test_trzsl_beta_from_gamma():
    """train(): REGULAR_THRESHOLD "auto*γ" becomes 1 − γ / C_unseen in round 1."""
    run = OUT["training"]["trzsl"]
    gamma = float(MANIFEST["regular_threshold"]["trzsl"].split("*")[1])
    n_unseen = len(run["classes_unseen"])
    assert run["rounds"][0]["beta"] == pytest.approx(1 - gamma / n_unseen)
    from cap.config import cpl_beta

    cfg = config("trzsl")
    with mock.patch("cap.config.get_dataset") as get:  # the fixture's γ instead of EuroSAT's 3.0
        get.return_value.cpl.gamma = gamma
        assert cpl_beta(cfg, n_unseen) == pytest.approx(run["rounds"][0]["beta"])


# --------------------------------------------------------------------------- quotas, schedule, steps
def test_quota_per_round_official_rounding():
    """grip_train: N_PSEUDOSHOTS of round i is int(i · int(|U| / I) / C), capped at ⌊|U| / C⌋."""
    for q in OUT["quotas"]:
        ours = [grip_budget(i, q["n_unlabelled"], q["n_classes"], q["rounds"], rounding="official")
                for i in range(1, q["rounds"] + 1)]
        assert ours == q["per_class"], q


def test_quota_per_round_where_both_roundings_agree():
    for q in OUT["quotas"]:
        if q["n_unlabelled"] % q["rounds"] == 0:
            assert [grip_budget(i, q["n_unlabelled"], q["n_classes"], q["rounds"])
                    for i in range(1, q["rounds"] + 1)] == q["per_class"], q


def _fit_recording(cfg, source, backbone, index, targets, round_=1):
    """Our fit, with the LR of every optimizer step recorded."""
    lrs = []
    step = torch.optim.SGD.step

    def recording_step(self, *a, **k):
        lrs.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    with mock.patch.object(torch.optim.SGD, "step", recording_step):
        result = baselines.fit(backbone, source, cfg, index, targets, round_)
    return result, lrs


def _ul_pool(n: int):
    t = INPUTS["training"]
    feats = np.asarray(t["features"], dtype=np.float32)
    reps = -(-n // len(feats))
    feats = np.tile(feats, (reps, 1))[:n]
    labels = np.tile(np.asarray(t["labels"]), reps)[:n]
    split = ParadigmSplit("ul", [], list(range(n)), [], [], list(range(t["c"])))
    source = ArraySource(feats, labels, np.asarray(t["text"], dtype=np.float32), split, 100.0)
    backbone = TextPromptBackbone(source.zero_shot_text, 100.0, np.zeros((t["d"], t["d"]), np.float32))
    targets = F.one_hot(torch.as_tensor(labels), t["c"]).float()
    return source, backbone, np.arange(n), targets


def test_learning_rate_of_every_step_is_the_official_epoch_lr():
    """make_scheduler: LambdaLR stepped once per epoch, 2 warm-up epochs (epoch 0 at LR 0), cosine to epoch 50."""
    sched = OUT["schedule"]
    source, backbone, index, targets = _ul_pool(200)  # 3 batches of 64 per epoch
    per_epoch = next(s["batches_per_epoch"] for s in OUT["steps_per_epoch"] if s["pool"] == 200)
    _, lrs = _fit_recording(config(official=True), source, backbone, index, targets)
    expected = [lr for lr in sched["lr_per_epoch"] for _ in range(per_epoch)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12, atol=1e-15)


def test_steps_per_epoch_drop_last():
    """_before_train: DataLoader(batch_size=64, shuffle=True, drop_last=True): ⌊n / 64⌋ steps, none below 64."""
    for entry in OUT["steps_per_epoch"]:
        source, backbone, index, targets = _ul_pool(entry["pool"])
        result, _ = _fit_recording(config(official=True, baseline_epochs=2), source, backbone, index, targets)
        assert result["gradient_steps"] == 2 * entry["batches_per_epoch"], entry


def test_steps_per_epoch_where_the_pool_fills_a_batch():
    for entry in OUT["steps_per_epoch"]:
        if entry["pool"] >= entry["batch_size"]:
            source, backbone, index, targets = _ul_pool(entry["pool"])
            result, _ = _fit_recording(config(baseline_epochs=2), source, backbone, index, targets)
            assert result["gradient_steps"] == 2 * entry["batches_per_epoch"], entry


# --------------------------------------------------------------------------- loss
@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_partial_label_loss_value_and_gradient(kind):
    """PLL_loss('cc'): mean of −log Σ_j softmax(z)_j y_j, y 0/1 (rounds ≥ 2) or soft (round 1)."""
    inp = INPUTS["losses"]
    expected = OUT["losses"][f"cc_{kind}"]
    x = torch.tensor(inp["logits"], dtype=torch.float32, requires_grad=True)
    loss = partial_label_loss(x, torch.tensor(inp[kind], dtype=torch.float32))
    loss.backward()
    assert float(loss.detach()) == pytest.approx(expected["loss"], rel=TOL_LOSS)
    np.testing.assert_allclose(x.grad.numpy(), expected["grad"], rtol=1e-4, atol=1e-7)


# --------------------------------------------------------------------------- candidates and selection
def _selection_probs(round_: int) -> np.ndarray:
    logits = torch.tensor(INPUTS["selection"]["logits"][str(round_)], dtype=torch.float32)
    return F.softmax(logits, dim=-1).numpy()


@pytest.mark.parametrize("round_", [1, 2, 3])
def test_candidate_sets(round_):
    """gererate_partialY (CPL): intra-instance α-quantile ∩ inter-instance β-quantile; empty rows dropped."""
    expected = OUT["candidates"][f"ul_round{round_}"]
    got = cpl_candidates(_selection_probs(round_), expected["alpha"], expected["beta"])
    np.testing.assert_array_equal(got.astype(int), expected["candidates"])
    np.testing.assert_array_equal(got.any(1).astype(int), expected["kept_rows"])


def test_selection_round_1():
    """InstanceSelector.select_topk_for_eachcls in round 1 (every pool's capacity is K_1)."""
    r = OUT["selection"]["rounds"][0]
    cand = OUT["candidates"]["ul_round1"]
    p = _selection_probs(1)
    pools = balanced_selection(p, np.asarray(cand["candidates"], bool), r["quota"])
    assert {c: sorted(v) for c, v in pools.items()} == {c: sorted(v) for c, v in enumerate(r["pools"])}


def test_pool_capacity_grows_from_the_previous_fill():
    """select_topk_for_eachcls: cap_c = min(fill_c + K_i − max_c' fill_c', K_i), fills of the previous round."""
    from cap.core.pseudolabels import cpl_pool_caps

    for r in OUT["selection"]["rounds"]:
        assert cpl_pool_caps(r["fills_before"], r["quota"]) == r["pool_caps"], r["round"]


@pytest.mark.parametrize("round_", [2, 3])
def test_selection_later_rounds_with_official_pool_caps(round_):
    r = OUT["selection"]["rounds"][round_ - 1]
    cand = np.asarray(OUT["candidates"][f"ul_round{round_}"]["candidates"], bool)
    caps = dict(enumerate(r["pool_caps"]))
    pools = balanced_selection(_selection_probs(round_), cand, caps)
    assert {c: sorted(v) for c, v in pools.items()} == {c: sorted(v) for c, v in enumerate(r["pools"])}


def _selection_source():
    s = INPUTS["selection"]
    labels = np.arange(s["n"]) % s["c"]
    split = ParadigmSplit("ul", [], list(range(s["n"])), [], [], list(range(s["c"])))
    return ArraySource(np.zeros((s["n"], 2), np.float32), labels, np.zeros((s["c"], 2), np.float32), split, 100.0)


def test_cpl_pseudolabels_over_three_rounds():
    """cpl_pseudolabels with the official quota and targets: rows and targets of rounds 1-3
    (round 1 soft: probabilities renormalised over the candidate set; later rounds 0/1)."""
    source = _selection_source()
    cand = OUT["candidates"]["ul_round1"]
    cfg = config(official=True, cpl_alpha=cand["alpha"], cpl_beta=cand["beta"])
    previous = None
    for r in OUT["selection"]["rounds"]:
        index, targets, info = baselines.cpl_pseudolabels(cfg, source, _selection_probs(r["round"]), r["quota"],
                                                          round_=r["round"], previous_counts=previous)
        previous = info["per_class_count"]
        got = {int(i): row for i, row in zip(index, targets.numpy())}
        want = {int(i): np.asarray(row) for i, row in zip(r["selected_rows"], r["targets"])}
        assert sorted(got) == sorted(want), r["round"]
        for i in want:
            np.testing.assert_allclose(got[i], want[i], rtol=1e-5, atol=1e-7)


def test_cpl_pseudolabels_rows_where_all_pools_fill():
    """The training scenario: every pool fills its K = 16, so the current quota gives the official rows."""
    source, run = training_source("ul")
    cfg = config(cpl_alpha=0.75, cpl_beta=0.8)
    logits = np.asarray(INPUTS["training"]["logits"]["2"], dtype=np.float32)
    probs = F.softmax(torch.tensor(logits), -1).numpy()
    index, targets, _ = baselines.cpl_pseudolabels(cfg, source, probs, run["n_pseudoshots"])
    rnd = run["rounds"][1]
    assert sorted(index.tolist()) == sorted(rnd["train_rows"])
    want = {i: np.asarray(t) for i, t in zip(rnd["train_rows"], rnd["targets"])}
    for i, t in zip(index.tolist(), targets.numpy()):
        np.testing.assert_array_equal(t, want[i])


def test_trzsl_pseudolabels_softmax_over_unseen():
    """TRZSL: CLIP's forward over the unseen classes only, pools for the unseen classes, targets mapped
    to all classes (convert_trzsl_pred_label); round 1 soft."""
    source, run = training_source("trzsl")
    rnd = run["rounds"][0]
    cfg = config("trzsl", official=True, cpl_alpha=0.75, cpl_beta=rnd["beta"])
    logits = np.asarray(INPUTS["training"]["logits"]["1"], dtype=np.float32)
    probs = baselines.pseudolabel_probs(logits, source, cfg)
    index, targets, _ = baselines.cpl_pseudolabels(cfg, source, probs, run["n_pseudoshots"], round_=1)
    want = {i: np.asarray(t) for i, t in zip(rnd["train_rows"][:len(rnd["targets"])], rnd["targets"])}
    assert sorted(index.tolist()) == sorted(want)
    for i, t in zip(index.tolist(), targets.numpy()):
        np.testing.assert_allclose(t, want[i], rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- whole rounds of training
def _train_round(paradigm: str, round_index: int, cfg: RunConfig):
    source, run = training_source(paradigm)
    rnd = run["rounds"][round_index]
    n_pl = len(rnd["targets"])
    index = np.asarray(rnd["train_rows"][:n_pl])
    targets = torch.tensor(rnd["targets"], dtype=torch.float32)
    backbone = TextPromptBackbone(source.zero_shot_text, run["logit_scale"], np.asarray(rnd["initial_prompt"]))
    losses = []
    backward = torch.Tensor.backward

    def recording_backward(self, *a, **k):  # the loss of every step
        losses.append(float(self.detach()))
        return backward(self, *a, **k)

    with mock.patch.object(torch.Tensor, "backward", recording_backward):
        result, lrs = _fit_recording(cfg, source, backbone, index, targets, round_index + 1)
    return backbone, rnd, result, lrs, losses


@pytest.mark.parametrize("paradigm,round_index", [("ul", 0), ("ul", 1), ("ssl", 0), ("trzsl", 0)])
def test_training_round_matches_official(paradigm, round_index):
    """TrainingStrategy.train: 50 epochs of one batch of 64 pseudolabelled images (one batch, so the
    shuffled order cannot matter), SGD(momentum 0.9, wd 0.05), clip 0.8, per-epoch warm-up cosine;
    SSL/TRZSL add a labelled batch (the whole labelled set here) to every step, loss CE + cc."""
    backbone, rnd, result, lrs, losses = _train_round(paradigm, round_index,
                                                       config(paradigm, official=True))
    assert result["gradient_steps"] == len(rnd["steps"])
    np.testing.assert_allclose(lrs, [s["lr"] for s in rnd["steps"]], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(losses, rnd["losses"], rtol=1e-4)
    w0 = np.asarray(rnd["initial_prompt"])
    final = np.asarray(rnd["steps"][-1]["prompt"])
    got = backbone.text_map.detach().numpy()
    assert np.abs(got - final).max() <= TOL_PROMPT * np.abs(final - w0).max()


def test_training_round_with_the_current_options_differs():
    """Guard that the comparison above is sensitive: the project's earlier schedule (1 warm-up epoch,
    per step, no clipping) ends a UL round away from the official prompt."""
    earlier = config(baseline_schedule="per_step", baseline_warmup_epochs=1, baseline_grad_clip=0.0)
    backbone, rnd, *_ = _train_round("ul", 1, earlier)
    w0 = np.asarray(rnd["initial_prompt"])
    final = np.asarray(rnd["steps"][-1]["prompt"])
    assert np.abs(backbone.text_map.detach().numpy() - final).max() > TOL_PROMPT * np.abs(final - w0).max()


def test_every_round_restarts_from_the_same_initial_prompt():
    """define_model: TextPrefixModel(copy.deepcopy(self.initial_prefix)), drawn once before round 1."""
    rounds = OUT["training"]["ul"]["rounds"]
    assert rounds[0]["initial_prompt"] == rounds[1]["initial_prompt"] == INPUTS["training"]["w0"]

    class RandomPrompt(TextPromptBackbone):  # CoOp-like: reset draws N(0, 0.02²) from torch's RNG
        def reset_prompts(self):
            with torch.no_grad():
                self.text_map.normal_(0.0, 0.02)

    source, run = training_source("ul")
    torch.manual_seed(0)
    backbone = RandomPrompt(source.zero_shot_text, run["logit_scale"], np.asarray(INPUTS["training"]["w0"]))
    starts = []

    def fake_fit(backbone, source, config, index, targets, round_, **_):
        starts.append(backbone.text_map.detach().clone())
        with torch.no_grad():
            backbone.text_map.add_(1.0)  # training moves the prompt
        return {"loss": 0.0, "gradient_steps": 0, "images_seen": 0}

    def pseudolabels(config, source, probs, budget, **kwargs):
        return np.arange(4), torch.eye(4), {}

    cfg = config(official=True, rounds=3)
    with mock.patch.object(baselines, "fit", fake_fit):
        baselines.train_rounds(cfg, source, backbone, pseudolabels)
    assert len(starts) == 3
    for s in starts[1:]:
        torch.testing.assert_close(s, starts[0], rtol=0, atol=0)
