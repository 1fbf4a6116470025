"""Every run behind a verdict follows the paper's protocol: official schedules unscaled, each
dataset's real training-pool size, and at least three paired replicates, each a new draw of the
simulated problem and a new optimisation seed."""

from collections import defaultdict

import pytest

from cap.data.registry import get_dataset
from cap.experiments.claims import claims
from cap.experiments.matrix import plan
from cap.experiments.runner import select
from cap.sim.presets import preset_config

VERDICT_MATRICES = sorted({c["test"]["matrix"] for c in claims() if c["test"]["kind"] != "untestable"})
OFFICIAL = {"epochs": 50, "iters_per_epoch": 50, "batch_size": 32, "warmup_epochs": 1, "refresh_every": 5,
            "baseline_epochs": 50, "baseline_batch_size": 64}


@pytest.mark.parametrize("matrix", VERDICT_MATRICES)
def test_verdict_runs_follow_the_papers_protocol(matrix):
    runs = plan(matrix, "sim")
    assert runs, f"{matrix} plans no simulator run"
    replicates = defaultdict(set)
    for run in runs:
        c = run.config
        assert c.schedule_factor is None and {k: getattr(c, k) for k in OFFICIAL} == OFFICIAL, run.labels
        assert c.rounds == get_dataset(c.dataset).rounds
        pool = c.sim_train_per_class or preset_config(c.dataset).n_train_per_class
        assert c.sim_train_per_class is None and pool == get_dataset(c.dataset).train_per_class, run.labels
        assert c.sim_seed == c.seed, "a replicate draws a new simulated problem"
        replicates[c.replace(seed=0, sim_seed=0)].add(c.seed)
    thin = {setting.dataset: seeds for setting, seeds in replicates.items() if len(seeds) < 3}
    assert not thin, f"{matrix}: settings with fewer than 3 replicates: {thin}"
    # methods and variants of a cell are paired: every setting of a dataset and paradigm has the same replicates
    by_cell = defaultdict(set)
    for setting, seeds in replicates.items():
        by_cell[(setting.dataset, setting.paradigm)].add(frozenset(seeds))
    assert all(len(seed_sets) == 1 for seed_sets in by_cell.values())


def test_a_schedule_factor_override_derives_the_schedule_again():
    """`cap runs --set schedule_factor=...` on runs whose profile resolved the official schedule."""
    (run,) = select("sim", ["table1"], ["eurosat"], ["ul"], ["cap"], [1], overrides={"schedule_factor": 0.2})
    assert (run.config.epochs, run.config.refresh_every, run.config.baseline_epochs) == (10, 1, 10)
    (flowers,) = select("sim", ["table1"], ["flowers102"], ["ul"], ["cap"], [1], overrides={"official_flowers_k": False})
    assert flowers.config.k == 16  # derived again from the override, not kept at the resolved 6
