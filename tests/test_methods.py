"""The training engine on the feature backend: switches, resumption, records, baselines."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from cap.config import make_config, resolve
from cap.errors import ParameterError, UnknownNameError
from cap.experiments.records import read_current_record as load
from cap.experiments.runs import run
from cap.methods.cap import CapTrainer
from cap.methods.engine import zero_shot_probs
from cap.data.registry import get_dataset
from cap.sources.simulated import SimSource
from cap.methods.checkpoints import RunInterrupted
from cap.methods.engine import batch_order, warmup_cosine

# Detection (K-means rounds) is the slow part of a small run; tests that need it turn it back on.
SMALL = dict(dataset="dtd", sim_train_per_class=24, sim_test_per_class=8, epochs=3, iters_per_epoch=4, batch_size=16,
             concept_alignment=False)


def results(tmp_path, **changes):
    return load(run(make_config(**(SMALL | changes)), tmp_path))["results"]


def trainer(tmp_path, **changes):
    config = resolve(make_config(**(SMALL | changes)))
    source = SimSource(config)
    backbone = source.make_backbone(config, "maple", torch.device("cpu"))
    return CapTrainer(config, source, backbone, tmp_path / "run", torch.device("cpu")), source


def informative_choices(problem, description_index: dict) -> list[int]:
    """The classes whose chosen description is of the simulator's informative kind."""
    from cap.sim.generator import DESCRIPTION_KINDS

    kind = DESCRIPTION_KINDS.index("informative")
    return sorted(c for c, i in description_index.items() if problem.description_kinds[c][i] == kind)


def test_warmup_cosine_and_batch_order():
    f = warmup_cosine(total_steps=10, warmup_steps=2)
    assert [f(0), f(1), f(2)] == [0.0, 0.5, 1.0]
    assert f(6) == pytest.approx(0.5) and f(10) == pytest.approx(0.0)
    order = batch_order(np.arange(5), 12, seed=1, epoch=0, stream=0)
    assert len(order) == 12 and sorted(order[:5]) == list(range(5)) and sorted(order[5:10]) == list(range(5))
    np.testing.assert_array_equal(order, batch_order(np.arange(5), 12, seed=1, epoch=0, stream=0))
    assert not np.array_equal(order, batch_order(np.arange(5), 12, seed=1, epoch=1, stream=0))


def test_record_holds_what_the_book_needs(tmp_path):
    record = load(run(make_config(**SMALL), tmp_path))
    r = record["results"]
    assert record["config"]["k"] == 16 and record["environment"]["versions"]["torch"]
    assert set(r["metrics"]) >= {"top1", "per_class_accuracy"} and len(r["metrics"]["per_class_accuracy"]) == 47
    assert [h["epoch"] for h in r["history"]] == [0, 1, 2]
    assert all(len(h["sigma"]) == 47 for h in r["history"])
    assert r["history"][0]["margin_max"] == 0.0 and r["history"][1]["margin_max"] > 0
    assert [f["epoch"] for f in r["refreshes"]] == [0]
    assert r["setup"]["zero_shot_dpl"]["size"] == 47 * 16
    assert r["wall_seconds"] > 0 and r["device"] == "cpu"
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


def test_finished_run_is_skipped_unless_forced(tmp_path):
    path = run(make_config(**SMALL), tmp_path)
    stamp = path.stat().st_mtime_ns
    assert run(make_config(**SMALL), tmp_path) == path and path.stat().st_mtime_ns == stamp
    run(make_config(**SMALL), tmp_path, force=True)
    assert path.stat().st_mtime_ns != stamp


def test_killed_run_resumes_to_the_same_result(tmp_path):
    whole = results(tmp_path / "a")
    with pytest.raises(RunInterrupted):
        run(make_config(**SMALL), tmp_path / "b", stop_after=1)
    assert not list((tmp_path / "b").glob("run-*.json"))
    resumed = load(run(make_config(**SMALL), tmp_path / "b"))["results"]
    assert resumed["metrics"] == whole["metrics"]
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in whole["history"]]
    assert resumed["refreshes"] == whole["refreshes"]


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    a, b = results(tmp_path / "a"), results(tmp_path / "b")
    assert a["metrics"] == b["metrics"]
    c = results(tmp_path / "c", seed=2)
    assert [h["loss"] for h in c["history"]] != [h["loss"] for h in a["history"]]


def test_concept_alignment_switch(tmp_path):
    on, source = trainer(tmp_path / "on", concept_alignment=True, mismatch_source="detect", description_choice="best_of_n")
    off, _ = trainer(tmp_path / "off")
    _, info_on = on.initial_dpl()
    dpl_off, info_off = off.initial_dpl()
    assert "concept_alignment" in info_on and "concept_alignment" not in info_off
    found = info_on["concept_alignment"]["mismatched"]
    hits = sorted(set(found) & set(source.problem.mismatched))
    assert hits, (found, source.problem.mismatched)
    official, _ = trainer(tmp_path / "official", concept_alignment=True, mismatch_source="official",
                          description_choice="best_of_n")
    dpl_official, info_official = official.initial_dpl()
    aligned = info_official["concept_alignment"]
    assert aligned["mismatched"] == get_dataset(official.config.dataset).official_mismatched_indices
    # alignment helps a planted class only as much as its chosen description is informative (the simulator
    # page): with an informative one its pseudolabels are more often right than zero-shot ones
    informative = informative_choices(source.problem, aligned["description_index"])
    assert informative, aligned["description_index"]
    for c in informative:
        assert (source.train_labels[dpl_official[c]] == c).mean() > (source.train_labels[dpl_off[c]] == c).mean()
    # on a subset of the classes the official list is matched by name: 4 × 20 / 47 = 1.7, so 2 of DTD's stay
    subset, source = trainer(tmp_path / "subset", concept_alignment=True, mismatch_source="official", sim_classes=20)
    found = subset.initial_dpl()[1]["concept_alignment"]["mismatched"]
    assert len(found) == 2 and found == source.problem.mismatched
    assert {source.classnames[c] for c in found} <= set(get_dataset("dtd").official_mismatched)


def test_description_choice_switch(tmp_path):
    best, source = trainer(tmp_path / "best", concept_alignment=True, mismatch_source="detect", description_choice="best_of_n")
    first, _ = trainer(tmp_path / "first", concept_alignment=True, mismatch_source="detect", description_choice="first")
    a = best.initial_dpl()[1]["concept_alignment"]
    b = first.initial_dpl()[1]["concept_alignment"]
    assert set(b["description_index"].values()) <= {0}
    quality = source.problem.description_quality
    assert np.mean([quality[int(c), i] for c, i in a["description_index"].items()]) >= \
        np.mean([quality[int(c), 0] for c in a["description_index"]])


def test_margin_switch_scale_and_delta(tmp_path):
    base = results(tmp_path / "m12")
    off = results(tmp_path / "off", margin=False)
    assert all(h["margin_max"] == 0.0 for h in off["history"])
    double = results(tmp_path / "m24", margin_scale=24.0)
    # epoch 0 is identical (no margin yet), so the epoch-1 margin doubles exactly
    assert double["history"][1]["margin_max"] == pytest.approx(2 * base["history"][1]["margin_max"])
    paper = results(tmp_path / "paper", delta="paper")
    assert paper["history"][1]["margin_mean"] > base["history"][1]["margin_mean"]  # 1−r ≥ (1−r)/(1+r)


def test_independent_adapters_switch(tmp_path):
    shared, _ = trainer(tmp_path / "shared", independent_adapters=False)
    independent, _ = trainer(tmp_path / "independent")
    assert not shared.adapters.independent and independent.adapters.independent
    assert len(list(shared.adapters.parameters())) == 8 and len(list(independent.adapters.parameters())) == 12
    assert results(tmp_path / "a", independent_adapters=False)["metrics"] != results(tmp_path / "b")["metrics"]


def test_k_tau_and_batch_size(tmp_path):
    assert results(tmp_path / "k", k=4)["setup"]["zero_shot_dpl"]["size"] == 47 * 4
    assert all(h["masked_share"] == 1.0 for h in results(tmp_path / "t0", tau=0.0)["history"])
    assert all(h["masked_share"] == 0.0 for h in results(tmp_path / "t1", tau=1.0)["history"])
    big = results(tmp_path / "b", batch_size=32, tau=0.0)
    assert sum(big["history"][0]["sigma"]) == 4 * 32  # every draw of the epoch is counted


def test_unlabelled_fraction(tmp_path):
    half = SimSource(resolve(make_config(**SMALL, unlabelled_fraction=0.5)))
    full = SimSource(resolve(make_config(**SMALL)))
    assert len(half.split.unlabelled) == len(full.split.unlabelled) // 2
    assert set(half.split.unlabelled) <= set(full.split.unlabelled)


def test_trzsl_pseudolabel_space_switch():
    config = resolve(make_config(**SMALL, paradigm="trzsl", trzsl_probs_over="unseen"))
    source = SimSource(config)
    probs = zero_shot_probs(source, config)
    assert probs[:, source.split.seen].sum() == 0 and np.allclose(probs.sum(1), 1)
    full = zero_shot_probs(source, config.replace(trzsl_probs_over="all"))
    assert (full[:, source.split.seen] > 0).all()


def test_paradigms_and_baselines_run(tmp_path):
    for paradigm in ("ssl", "trzsl"):
        r = results(tmp_path / paradigm, paradigm=paradigm)
        if paradigm == "trzsl":
            assert {"seen", "unseen", "harmonic_mean"} <= set(r["metrics"])
            assert r["headline"] == r["metrics"]["harmonic_mean"]
    zs = results(tmp_path / "zs", method="zero_shot")
    source = SimSource(resolve(make_config(**SMALL)))
    assert zs["headline"] == pytest.approx(source.problem.zero_shot_accuracy("test"))
    # The training budget of each round, by hand. SMALL in UL: all 47 x 24 = 1128 images unlabelled; baseline
    # batch 64, one epoch per round. FPL and GRIP as Menghini's code: 80 % of the pseudolabels trained on (the
    # budget is >= 10), the last short batch kept, so a round on n images is ceil(0.8 n / 64) steps seeing int(0.8 n).
    # FPL: 16 per class, 16 x 47 = 752 images, 601 trained: 10 steps.
    # GRIP and CPL, 2 rounds: K_i = floor(i x floor(1128 / 2) / 47) = 12, then 24 per class.
    # GRIP's leaderboards fill up (overflow): 12 x 47 = 564 images (451 trained: 8 steps), then 1128 (902: 15).
    assert (len(source.split.unlabelled), source.n_classes) == (1128, 47)
    by_hand = {"fpl": [(16, 752, 10, 601)], "grip": [(12, 564, 8, 451), (24, 1128, 15, 902)]}
    for method in ("fpl", "grip", "cpl"):
        r = results(tmp_path / method, method=method, rounds=2, baseline_epochs=1, baseline_warmup_epochs=0)
        rounds = [(h["per_class"], h["size"], h["gradient_steps"], h["images_seen"]) for h in r["history"]]
        if method == "cpl":  # class-balanced: at most K_i per class, each image in one class's pool
            assert [per_class for per_class, *_ in rounds] == [12, 24]
            for h, (per_class, size, steps, images) in zip(r["history"], rounds):
                assert max(h["per_class_count"].values()) <= per_class and sum(h["per_class_count"].values()) == size
                assert (steps, images) == (size // 64, size // 64 * 64) and h["mean_candidates"] >= 1
        else:
            assert rounds == by_hand[method]
        steps, images = sum(s for *_, s, _ in rounds), sum(i for *_, i in rounds)
        assert r["budget"] == {"gradient_steps": steps, "images_seen": images}  # FPL 10, 601; GRIP 23, 1353
        test = r["metrics"]["test_predictions"]  # scored against the simulator's own test labels, in order
        assert test["label"] == source.test_labels.tolist()
        assert r["headline"] == pytest.approx(100 * np.mean(np.asarray(test["pred"]) == source.test_labels))
        assert r["headline"] != pytest.approx(zs["headline"]), f"{method} trained: its predictions moved"


def test_bad_config_values():
    with pytest.raises(ParameterError, match="unknown config key"):
        make_config(dataset="dtd", epoch=3)
    with pytest.raises(ParameterError, match="'margin' must be bool, got str 'maybe'"):
        resolve(make_config(dataset="dtd", margin="maybe"))
    with pytest.raises(UnknownNameError, match="fpl, grip"):
        resolve(make_config(dataset="dtd", method="upl"))
    with pytest.raises(UnknownNameError, match="paradigm"):
        resolve(make_config(dataset="dtd", paradigm="zsl"))


def test_dataset_overrides_both_ways():
    assert resolve(make_config(dataset="flowers102")).k == 6
    assert resolve(make_config(dataset="flowers102", official_flowers_k=False)).k == 16
    fgvc = resolve(make_config(dataset="fgvc_aircraft"))
    assert (fgvc.tau, fgvc.max_main_ratio, fgvc.margin_scale) == (0.5, 0.6, 12.0)
    assert resolve(make_config(dataset="fgvc_aircraft", official_fgvc_margin=False)).margin_scale == 14.0
    assert resolve(make_config(dataset="cub")).rounds == 5


def test_cli_run(tmp_path):
    cmd = [sys.executable, "-m", "cap", "run", "--dataset", "eurosat", "--method", "fpl", "--out", str(tmp_path),
           "--set", "sim_train_per_class=10", "sim_test_per_class=5", "baseline_epochs=1"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "fpl on eurosat (ul, seed 1)" in done.stdout
    (path,) = tmp_path.glob("run-*.json")
    assert json.loads(path.read_text())["config"]["method"] == "fpl"
    bad = subprocess.run(cmd[:-3] + ["--set", "epochz=3"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown config key(s) ['epochz']" in bad.stderr


def test_cap_beats_zero_shot_and_fpl_and_balances_predictions(tmp_path):
    """The headline claim on a small preset with planted mismatch (simulated RESISC45, short schedule)."""
    from cap.core import metrics

    claim = dict(dataset="resisc45", sim_train_per_class=60, sim_test_per_class=30, epochs=20, iters_per_epoch=20)
    zs, fpl, cap = (load(run(make_config(**claim, method=m, baseline_epochs=20), tmp_path))["results"]
                    for m in ("zero_shot", "fpl", "cap"))
    assert cap["headline"] > fpl["headline"] > zs["headline"], (zs["headline"], fpl["headline"], cap["headline"])
    entropy = {name: metrics.normalized_entropy(r["metrics"]["predicted_counts"]) for name, r in
               (("zero_shot", zs), ("cap", cap))}
    assert entropy["cap"] > entropy["zero_shot"] + 0.05, entropy
    # concept alignment found planted mismatched classes and made their pseudolabels better
    setup = cap["setup"]
    problem = SimSource(resolve(make_config(**claim))).problem
    hits = set(setup["concept_alignment"]["mismatched"]) & set(problem.mismatched)
    assert hits
    informative = informative_choices(problem, {int(c): i for c, i in setup["concept_alignment"]["description_index"].items()})
    assert set(informative) & hits, "no planted class got an informative description: the check would be empty"
    for c in set(informative) & hits:  # JSON keys are strings
        aligned = setup["concept_alignment"]["dpl"]["per_class_accuracy"][str(c)]
        assert aligned > setup["zero_shot_dpl"]["per_class_accuracy"][str(c)]


def test_defaults_follow_the_official_code(tmp_path):
    """With every switch at its default, concept alignment does what the official code does: it replaces
    the D_PL of the classes the code hard-codes (for DTD: lacelike, gauzy, veined, pitted; copied here by
    hand) with the k = 16 training images closest to each one's first description, and keeps the zero-shot
    leaderboards of the others. (The default leaderboard order and margin prototypes: the two tests below.)"""
    aligning, source = trainer(tmp_path / "a", concept_alignment=True)
    dpl, info = aligning.initial_dpl()
    zero_shot, _ = trainer(tmp_path / "b", concept_alignment=False)
    before, _ = zero_shot.initial_dpl()
    mismatched = info["concept_alignment"]["mismatched"]
    assert sorted(source.classnames[c] for c in mismatched) == ["gauzy", "lacelike", "pitted", "veined"]
    assert info["concept_alignment"]["description_index"] == {c: 0 for c in mismatched}  # the first description
    images = source.zero_shot_image / np.linalg.norm(source.zero_shot_image, axis=1, keepdims=True)
    for c in mismatched:
        first = source.problem.descriptions[c][0]
        cosine = images @ (first / np.linalg.norm(first))
        chosen = np.asarray(dpl[c])
        rest = np.setdiff1d(np.arange(len(images)), chosen)
        assert len(set(dpl[c])) == 16 and cosine[chosen].min() >= cosine[rest].max()  # the 16 closest images
        assert (np.diff(cosine[chosen]) <= 0).all() and dpl[c] != before[c]  # closest first; replaced
    assert all(dpl[c] == before[c] for c in dpl if c not in mismatched)


def test_leaderboard_order_switch(tmp_path):
    """The trainer's initial D_PL in each order, on a 2-class pool of 8 images whose zero-shot
    probabilities are set by hand (k = 2), worked out as the official code walks the images."""
    p0 = [0.9, 0.8, 0.7, 0.6, 0.85, 0.75, 0.75, 0.75]  # P(class 0) of the pool's images u0..u7, in pool order
    # u0, u1 (0.9, 0.8) fill class 0. u2 (0.7 < 0.8, the last entry) overflows to class 1: [u2 (0.3)];
    # u3 (0.6) overflows too and is appended unsorted: [u2 (0.3), u3 (0.4)]. u4 (0.85 > 0.8) joins class 0,
    # whose weakest, u1, is dropped (not re-assigned): [u0, u4]. u5-u7 (0.75 < 0.85) overflow, but class 1
    # is full and 0.25 < 0.4, its last entry: they join nothing.
    # Official order: {0: [u0, u4], 1: [u2, u3]}; sorted by probability: {0: [u0, u4], 1: [u3, u2]}.
    tiny = dict(sim_classes=2, sim_train_per_class=4, sim_test_per_class=2, k=2)
    boards = {}
    for order in (None, "sorted"):  # None: the default, the official order
        built, source = trainer(tmp_path / str(order), **tiny, **({"leaderboard_order": order} if order else {}))
        u = built.unlabelled
        assert len(u) == len(source.train_labels) == 8 and built.classes == [0, 1]
        logits = np.zeros((8, 2))  # softmax(log p0, log(1 - p0)) = (p0, 1 - p0) with text = I, scale 1
        logits[u] = np.log(np.stack([p0, 1 - np.asarray(p0)], axis=1))
        source.zero_shot_image, source.zero_shot_text, source.logit_scale = logits, np.eye(2), 1.0  # new arrays
        boards[order] = built.initial_dpl()[0]
    assert boards[None] == {0: [u[0], u[4]], 1: [u[2], u[3]]}
    assert boards["sorted"] == {0: [u[0], u[4]], 1: [u[3], u[2]]}


def test_margin_prototypes_switch(tmp_path):
    once, source = trainer(tmp_path / "a")  # the default: official
    every, _ = trainer(tmp_path / "b", margin_prototypes="every_entry")
    sigma = np.arange(source.n_classes) + 1
    dpl = once.initial_dpl()[0]
    repeated = len({i for v in dpl.values() for i in v}) < sum(len(v) for v in dpl.values())
    assert repeated  # the zero-shot overflow puts some images in several classes
    assert not torch.allclose(once.margin(dpl, sigma, 1), every.margin(dpl, sigma, 1))
    # official, worked out here: walk the D_PL entries (class by class) in the epoch's seeded shuffle
    # (generator [seed, epoch, 4]) and give each image to the first class met; that D_PL, every entry counted
    # once, gives the official margin of the epoch, and another epoch's shuffle gives another margin.
    entries = [(i, c) for c in sorted(dpl) for i in dpl[c]]
    for epoch in (1, 2):
        owner = {}
        for position in np.random.default_rng([once.config.seed, epoch, 4]).permutation(len(entries)):
            owner.setdefault(entries[position][0], entries[position][1])
        counted_once = {c: [i for i in v if owner[i] == c] for c, v in dpl.items()}
        assert torch.allclose(once.margin(dpl, sigma, epoch), every.margin(counted_once, sigma, epoch), atol=1e-6)
    assert not torch.allclose(once.margin(dpl, sigma, 1), once.margin(dpl, sigma, 2))
    unique = {c: [i for i in v if sum(i in w for w in dpl.values()) == 1] for c, v in dpl.items()}
    assert torch.allclose(once.margin(unique, sigma, 1), every.margin(unique, sigma, 1))


def test_the_step_schedule_sets_the_learning_rates_lambda_lr_would_and_resumes():
    from cap.methods.engine import sgd, warmup_cosine

    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer, schedule = sgd(params, 0.01, 0.9, 0.1, total_steps=30, warmup_steps=5)
    reference = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.01)
    lambda_lr = torch.optim.lr_scheduler.LambdaLR(reference, warmup_cosine(30, 5))
    ours, theirs = [], []
    for _ in range(32):
        ours.append(optimizer.param_groups[0]["lr"])
        theirs.append(reference.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
        reference.step()
        lambda_lr.step()
    assert ours == theirs  # the same floats, step by step
    assert ours[0] == 0.0 and ours[5] == 0.01 and ours[30] == 0.0  # by hand: warm-up from 0, cosine to 0 at step 30
    assert ours[3] == 0.01 * 3 / 5
    resumed_opt, resumed = sgd([torch.nn.Parameter(torch.zeros(2))], 0.01, 0.9, 0.1, total_steps=30, warmup_steps=5)
    resumed.load_state_dict(schedule.state_dict())
    assert resumed.last_epoch == 32 and resumed_opt.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
