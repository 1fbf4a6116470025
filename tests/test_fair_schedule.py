"""The fair-schedule rule and the training budget every record carries.

Rule (cap/experiments/matrices/profiles.yml): in both profiles every method runs its official
schedule unscaled (the verdict-bearing matrices are checked in tests/test_protocol.py); a
``schedule_factor`` f, which scales every count of epochs alike, is for quick runs by hand only.
"""

import math

import pytest

from cap.config import SCALED_EPOCHS, make_config, resolve
from cap.data.registry import get_dataset
from cap.errors import ParameterError
from cap.experiments.matrix import matrix_names, plan
from cap.experiments.records import read_current_record as load
from cap.experiments.runs import run

OFFICIAL = {"iters_per_epoch": 50, "batch_size": 32, "baseline_batch_size": 64, "warmup_epochs": 1}
DIAGNOSTIC = "diagnostics"  # matrices named diagnostics_* change the schedule on purpose


def scaled(f: float) -> dict:
    return {key: max(1, math.floor(f * official + 0.5)) for key, official in SCALED_EPOCHS.items()}


def test_scaled_schedule_by_hand():
    config = resolve(make_config(dataset="cub", schedule_factor=0.1))
    # 50 epochs × 0.1 = 5; 50 epochs per round × 0.1 = 5; refresh every 5 × 0.1 = 0.5 → 1 (halves up)
    assert (config.epochs, config.baseline_epochs, config.refresh_every) == (5, 5, 1)
    assert config.rounds == 5 and config.iters_per_epoch == 50  # CUB's official rounds; iterations untouched
    assert resolve(config) == config  # resolving twice changes nothing
    assert resolve(make_config(dataset="cub")).epochs == 50  # no factor: the official schedule
    with pytest.raises(ParameterError, match="epochs cannot be set as well"):
        resolve(make_config(dataset="cub", schedule_factor=0.1, epochs=7))
    with pytest.raises(ParameterError, match="schedule_factor must be > 0"):
        resolve(make_config(dataset="cub", schedule_factor=0.0))


def test_every_sim_run_is_on_the_official_schedule():
    seen_methods = set()
    for name in matrix_names():
        for planned in plan(name, "sim"):
            c = planned.config
            seen_methods.add(c.method)
            assert c.schedule_factor is None and c.rounds == get_dataset(c.dataset).rounds, (name, planned.labels)
            assert (c.batch_size, c.baseline_batch_size) == (32, 64), (name, planned.labels)
            if name.startswith(DIAGNOSTIC) and c.iters_per_epoch != OFFICIAL["iters_per_epoch"]:
                # fewer iterations per epoch keep the number of steps and the schedule's shape
                assert c.epochs * c.iters_per_epoch == 50 * 50 and c.warmup_epochs * c.iters_per_epoch == 50
                assert c.refresh_every * c.iters_per_epoch == 5 * 50, planned.labels
                continue
            assert {k: getattr(c, k) for k in SCALED_EPOCHS} == scaled(1.0), (name, planned.labels)
            assert {k: getattr(c, k) for k in OFFICIAL} == OFFICIAL, (name, planned.labels)
    assert seen_methods == {"zero_shot", "fpl", "grip", "cpl", "cap"}


def test_paper_profile_is_the_official_schedule():
    for name in matrix_names():
        for planned in plan(name, "paper"):
            c = planned.config
            assert c.schedule_factor is None and (c.epochs, c.baseline_epochs, c.refresh_every) == (50, 50, 5)
            assert c.iters_per_epoch == 50 and c.rounds == get_dataset(c.dataset).rounds
            assert c.batch_size == (128 if planned.variant == "batch_128" else 32), planned.labels


SMALL = dict(dataset="eurosat", sim_train_per_class=20, sim_test_per_class=4, concept_alignment=False,
             epochs=2, iters_per_epoch=3, baseline_epochs=2, rounds=2)


@pytest.mark.parametrize("paradigm, streams", [("ul", 2), ("ssl", 3)])
def test_cap_budget_counts_its_steps_and_streams(tmp_path, paradigm, streams):
    results = load(run(make_config(**SMALL, paradigm=paradigm, method="cap", batch_size=8), tmp_path))["results"]
    # 2 epochs × 3 steps; each step trains D_PL (8), the unlabelled strong view (8) and, in SSL, the labelled (8)
    assert results["budget"] == {"gradient_steps": 6, "images_seen": 6 * streams * 8}
    assert [h["gradient_steps"] for h in results["history"]] == [3, 3]
    assert all(0.0 <= h["sigma_zero_share"] <= 1.0 for h in results["history"])


def test_baseline_budgets_count_their_steps(tmp_path):
    # UL EuroSAT, 200 images: FPL (Menghini's code) trains on 80 % of 16 per class = 128 of 160
    # pseudolabels, keeping the last short batch: 2 steps of 64 per epoch
    fpl = load(run(make_config(**SMALL, method="fpl"), tmp_path))["results"]
    assert fpl["budget"] == {"gradient_steps": 2 * 2, "images_seen": 2 * 128}
    # GRIP, 2 rounds: budgets 10 then 20 per class, at most 100 and 200 pseudolabels (a leaderboard
    # drops an entry a better image replaces, as the official code does, so round 2 may hold fewer);
    # 80 % of them trained on, each epoch ⌈n / 64⌉ batches: 100 → 80 → 2 steps per epoch
    grip = load(run(make_config(**SMALL, method="grip"), tmp_path))["results"]
    sizes = [h["size"] for h in grip["history"]]
    trained = [int(n * 0.8) for n in sizes]
    assert [h["per_class"] for h in grip["history"]] == [10, 20] and sizes[0] == 100 and 128 <= sizes[1] <= 200
    assert [h["gradient_steps"] for h in grip["history"]] == [2 * -(-n // 64) for n in trained]
    assert grip["budget"] == {"gradient_steps": sum(2 * -(-n // 64) for n in trained), "images_seen": 2 * sum(trained)}
    zero_shot = load(run(make_config(**SMALL, method="zero_shot"), tmp_path))["results"]
    assert zero_shot["budget"] == {"gradient_steps": 0, "images_seen": 0}
