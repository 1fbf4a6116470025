"""Seed stacks: several seeds of one CAP configuration on the feature backend trained as one
batched model give each seed exactly the results of its run alone."""

import json

import pytest
import torch

from cap.config import as_dict, make_config, resolve
from cap.errors import ParameterError
from cap.experiments.matrix import MatrixError, PlannedRun, parse_matrix
from cap.experiments.records import config_hash, read_current_record
from cap.experiments.runner import execute_group, seed_stacks, select
from cap.experiments.runs import run, run_stack
from cap.methods.cap import CapTrainer
from cap.methods.cap_stack import SeedStack, train_cap
from cap.methods.checkpoints import RunInterrupted
from cap.sources.simulated import SimSource

SMALL = dict(dataset="dtd", sim_train_per_class=24, sim_test_per_class=8, epochs=3, iters_per_epoch=4, batch_size=16,
             concept_alignment=False, method="cap")
TIMES = ("train_seconds", "wall_seconds", "stack")


def parts(tmp_path, seed, **changes):
    """(config, source, backbone, run folder) of one run, seeded as ``runs.run`` seeds it."""
    config = resolve(make_config(**(SMALL | changes | {"seed": seed})))
    torch.manual_seed(seed)
    source = SimSource(config)
    return config, source, source.make_backbone(config, "maple", torch.device("cpu")), tmp_path / f"run-{seed}"


def stack_of(tmp_path, seeds, **changes):
    return SeedStack([CapTrainer(*parts(tmp_path, s, **changes), torch.device("cpu")) for s in seeds])


def without_times(results: dict) -> str:
    return json.dumps({k: v for k, v in results.items() if k not in TIMES}, sort_keys=True, default=str)


@pytest.mark.parametrize("changes", [
    dict(paradigm="ul"),
    dict(paradigm="ssl", margin_prototypes="official", tau=0.3),
    dict(paradigm="trzsl", independent_adapters=False),
    dict(paradigm="ul", margin=False, concept_alignment=True, mismatch_source="official"),
], ids=["ul", "ssl-official-prototypes", "trzsl-shared-adapter", "ul-no-margin-aligned"])
def test_each_stacked_seed_gets_exactly_the_results_of_its_run_alone(changes, tmp_path):
    alone = [train_cap(*parts(tmp_path / "alone", seed, **changes)) for seed in (1, 2, 3)]
    stacked = stack_of(tmp_path / "stacked", (1, 2, 3), **changes).run()
    assert [without_times(r) for r in stacked] == [without_times(r) for r in alone]
    # the seeds did train differently: a stack that mixed them up would not pass the line above
    assert len({json.dumps(r["history"][-1]["sigma"]) for r in alone}) == 3


def test_the_batched_step_equals_the_unbatched_step_up_to_float_rounding(tmp_path):
    """The open_clip backend steps through CapTrainer.step, the feature backend through the seed
    stack; on the same weights and batches both compute the same losses, gradients and updates."""
    singles = [CapTrainer(*parts(tmp_path, s, paradigm="ssl"), torch.device("cpu")) for s in (1, 2)]
    stack = stack_of(tmp_path, (1, 2), paradigm="ssl")
    stack.stack_parameters()
    states = [t.restore() for t in singles]
    margins = [t.margin(state["dpl"], torch.arange(47).numpy() + 1.0) for t, state in zip(singles, states)]
    streams = [list(t.epoch_batches(0, state["dpl"])) for t, state in zip(singles, states)]
    for step in range(4):
        batches = [stream[step] for stream in streams]
        alone = [t.step(b, m) for t, b, m in zip(singles, batches, margins)]
        together = stack.step(batches, margins)
        for i, (a, b) in enumerate(zip(alone, together)):
            torch.testing.assert_close(b.loss, a.loss, rtol=1e-5, atol=1e-6)
            assert torch.equal(b.pseudo, a.pseudo) and torch.equal(b.mask, a.mask)
            own = singles[i].backbone.prompt_parameters() + list(singles[i].adapters.parameters())
            for (stacked, _), param in zip(stack.prompt_pairs + stack.adapter_pairs, own):
                torch.testing.assert_close(stacked[i], param, rtol=1e-5, atol=1e-7)
    assert not torch.equal(stack.text_map[0], torch.zeros_like(stack.text_map[0]))  # the maps did move


def test_a_killed_stack_resumes_seed_by_seed_or_as_a_stack_to_the_same_results(tmp_path):
    configs = [parts(tmp_path, s)[0] for s in (1, 2)]
    whole = [read_current_record(p)["results"] for p in run_stack(configs, tmp_path / "whole")]
    with pytest.raises(RunInterrupted):
        run_stack(configs, tmp_path / "killed", stop_after_epoch=0)
    assert all((tmp_path / "killed" / "checkpoints" / read_key).is_dir() for read_key in whole[0]["stack"]["keys"])
    resumed_alone = read_current_record(run(configs[0], tmp_path / "killed"))["results"]
    assert without_times(resumed_alone) == without_times(whole[0])
    with pytest.raises(RunInterrupted):
        run_stack(configs, tmp_path / "again", stop_after_epoch=1)
    resumed_stack = [read_current_record(p)["results"] for p in run_stack(configs, tmp_path / "again")]
    assert [without_times(r) for r in resumed_stack] == [without_times(r) for r in whole]


def test_stack_records_name_their_stack_and_share_its_time(tmp_path):
    configs = [parts(tmp_path, s)[0] for s in (1, 2)]
    records = [read_current_record(p) for p in run_stack(configs, tmp_path)]
    keys = [r["key"] for r in records]
    assert all(r["results"]["stack"] == {"seeds": [1, 2], "keys": keys} for r in records)
    assert records[0]["results"]["wall_seconds"] == records[1]["results"]["wall_seconds"] > 0
    assert not any((tmp_path / "checkpoints").glob("*/*"))


def test_runs_that_differ_in_more_than_the_seed_do_not_stack(tmp_path):
    with pytest.raises(ParameterError, match="differ in more than the seed"):
        SeedStack([CapTrainer(*parts(tmp_path, 1), torch.device("cpu")),
                   CapTrainer(*parts(tmp_path, 2, tau=0.3), torch.device("cpu"))])
    with pytest.raises(ParameterError, match="the same seed"):
        stack_of(tmp_path, (1, 1))


def test_seeds_of_a_cap_setting_group_and_timed_runs_train_alone():
    runs = select("sim", ["table1", "table2", "appendix"], ["eurosat"], ["ul"])
    groups = seed_stacks(runs, "sim")
    assert sorted(r.key for g in groups for r in g) == sorted(r.key for r in runs)  # every run once
    stacked = [g for g in groups if len(g) > 1]
    assert stacked and all(len(g) == 3 and {r.config.method for r in g} == {"cap"} for g in stacked)
    assert all(len({json.dumps(as_dict(r.config.replace(seed=0)), sort_keys=True, default=str) for r in g}) == 1
               for g in stacked)
    timed = {r.key for r in select("sim", ["appendix"], ["eurosat"], ["ul"])}
    assert timed and all(len(g) == 1 for g in groups if g[0].key in timed)  # Table 1's CAP: its time is a result
    assert all(len(g) == 1 for g in groups if g[0].config.method != "cap")


def planned(seed, **changes) -> PlannedRun:
    config = resolve(make_config(**(SMALL | changes | {"seed": seed})))
    return PlannedRun("table2", "default", None, config, config_hash(as_dict(config)))


def test_a_group_of_seeds_trains_as_one_stack_and_falls_back_to_runs_alone_if_it_fails(tmp_path, monkeypatch):
    import cap.experiments.runs as runs_module

    runs = [planned(1), planned(2)]
    assert [s.detail for s in execute_group(runs, tmp_path / "stacked")] == ["trained in a stack of 2 seeds"] * 2

    def broken(*args, **kwargs):
        raise RuntimeError("the stack broke")

    monkeypatch.setattr(runs_module, "run_stack", broken)
    statuses = execute_group(runs, tmp_path / "alone")
    assert [(s.state, s.detail) for s in statuses] == [("done", ""), ("done", "")]
    stacked = [read_current_record(tmp_path / "stacked" / f"run-{r.key}.json")["results"] for r in runs]
    alone = [read_current_record(tmp_path / "alone" / f"run-{r.key}.json")["results"] for r in runs]
    assert [without_times(r) for r in stacked] == [without_times(r) for r in alone]
    assert "stack" in stacked[0] and "stack" not in alone[0]


def test_timed_must_be_a_boolean():
    raw = {"title": "t", "datasets": ["eurosat"], "paradigms": ["ul"], "methods": ["cap"], "seeds": [1],
           "profiles": {"sim": {}}, "timed": "yes"}
    with pytest.raises(MatrixError, match="timed must be true or false"):
        parse_matrix("example", raw)
    assert parse_matrix("example", raw | {"timed": True}).timed
