"""Experiment matrices: every file loads, plans the runs the paper's tables need, and bad input
gives a clear error."""

import pytest

from cap.config import make_config
from cap.data.registry import dataset_names
from cap.errors import UnknownNameError
from cap.experiments.matrix import MatrixError, command, load_matrix, matrix_names, parse_matrix, plan

BASE = {"title": "t", "datasets": ["eurosat"], "paradigms": ["ul"], "methods": ["cap"], "seeds": [1],
        "profiles": {"sim": {}}}


def test_every_matrix_file_loads_and_plans():
    assert {"table1", "table2", "table3", "table4", "figure1_2", "figure6_k", "figure7_tau", "figure8_alignment",
            "figure9_calibration", "figure10_margin_scale", "figure11_unlabelled_fraction", "appendix",
            "divergences", "diagnostics_cap", "diagnostics_ambiguity", "diagnostics_zero_shot",
            "diagnostics_eurosat_pool", "diagnostics_baselines"} == set(matrix_names())
    for name in matrix_names():
        for profile in ("sim", "paper"):
            runs = plan(name, profile)
            assert all(r.config.backend == ("sim" if profile == "sim" else "openclip") for r in runs)
            assert len({r.key for r in runs}) == len(runs), "one run per record key"


def test_table1_is_the_full_grid():
    runs = plan("table1", "paper")
    assert len(runs) == 6 * 3 * 5 * 3
    assert {r.config.dataset for r in runs} == set(dataset_names())
    assert {(r.config.paradigm, r.config.method, r.config.seed) for r in runs if r.config.dataset == "cub"} == {
        (p, m, s) for p in ("ssl", "ul", "trzsl") for m in ("zero_shot", "fpl", "grip", "cpl", "cap") for s in (1, 2, 3)}
    assert plan("table4", "sim") == [], "the simulator has no backbone: Table 4 runs on real data only"
    assert {r.config.backbone for r in plan("table4", "paper")} == {"ViT-L-14"}


def test_runs_shared_by_matrices_have_the_same_key():
    table1 = {r.key for r in plan("table1", "sim")}
    assert {r.key for r in plan("figure8_alignment", "sim")} <= table1
    assert {r.key for r in plan("figure1_2", "sim")} <= table1
    full = {r.key for r in plan("table2", "sim") if r.variant == "full"}
    assert full and full <= table1
    no_margin_t2 = {r.key for r in plan("table2", "sim") if r.variant == "no_margin"}
    assert no_margin_t2 == {r.key for r in plan("figure9_calibration", "sim") if r.variant == "no_margin"}


def test_variants_sweeps_and_scopes():
    pools = {(r.config.method, r.config.sim_train_per_class) for r in plan("diagnostics_eurosat_pool", "sim", seeds=[1])}
    assert pools == {(m, 2700) for m in ("zero_shot", "fpl", "grip", "cpl", "cap")}
    table1 = {r.key for r in plan("table1", "sim")}
    assert {r.key for r in plan("diagnostics_ambiguity", "sim") if r.variant == "official"} <= table1
    draws = {(r.config.seed, r.config.sim_seed) for r in plan("table1", "sim", datasets=["dtd"])}
    assert draws == {(1, 1), (2, 2), (3, 3)}  # each replicate its own draw of the problem
    ks = {(r.config.dataset, r.config.k) for r in plan("figure6_k", "sim", seeds=[1])}
    assert ks == {(d, k) for d in ("resisc45", "dtd") for k in (4, 8, 16, 24)}
    t2 = plan("table2", "sim", datasets=["DTD"], seeds=[2])  # aliases work in filters
    assert {(r.variant, r.config.concept_alignment, r.config.margin) for r in t2} == {
        ("full", True, True), ("no_ca", False, True), ("no_margin", True, False), ("neither", False, False)}
    div = plan("divergences", "sim", seeds=[1])
    assert {r.config.dataset for r in div if r.variant == "flowers_k16"} == {"flowers102"}
    assert {r.config.paradigm for r in div if r.variant == "trzsl_unseen"} == {"trzsl"}
    assert not [r for r in div if r.variant in ("clean_template", "batch_128")], "real-image-only variants"
    assert [r for r in plan("divergences", "paper", seeds=[1]) if r.variant == "clean_template"]


def test_command_is_exact():
    assert command("paper", "table1", "eurosat", "ul", "cap", [1, 2, 3]) == \
        'make runs PROFILE=paper MATRIX=table1 DATASET=eurosat PARADIGM=ul METHOD=cap SEEDS="1 2 3"'
    assert command("sim", "table2") == "make runs PROFILE=sim MATRIX=table2"


def test_unknown_matrix_profile_and_filters_are_clear_errors():
    with pytest.raises(UnknownNameError, match="unknown matrix 'table9'; valid choices: appendix"):
        load_matrix("table9")
    with pytest.raises(UnknownNameError, match="unknown profile 'gpu'"):
        plan("table1", "gpu")
    with pytest.raises(UnknownNameError, match="unknown dataset 'imagenet'"):
        plan("table1", "sim", datasets=["imagenet"])
    with pytest.raises(UnknownNameError, match="unknown method 'upl'"):
        plan("table1", "sim", methods=["upl"])


def test_bad_matrix_files_name_what_is_wrong():
    with pytest.raises(MatrixError, match=r"unknown key\(s\) \['seed'\]"):
        parse_matrix("bad", BASE | {"seed": [1]})
    with pytest.raises(MatrixError, match="missing key 'seeds'"):
        parse_matrix("bad", {k: v for k, v in BASE.items() if k != "seeds"})
    with pytest.raises(MatrixError, match="unknown name 'imagenet'"):
        parse_matrix("bad", BASE | {"datasets": ["imagenet"]})
    with pytest.raises(MatrixError, match="variant 'x'.*unknown config key"):
        parse_matrix("bad", BASE | {"variants": {"x": {"set": {"epoch": 3}}}})
    with pytest.raises(MatrixError, match="variant 'x'.*'k' must be"):
        parse_matrix("bad", BASE | {"variants": {"x": {"set": {"k": "many"}}}})
    with pytest.raises(MatrixError, match="variant 'x': sim_classes=50, but EuroSAT has 10 classes"):
        parse_matrix("bad", BASE | {"datasets": ["cub", "eurosat"], "variants": {"x": {"set": {"sim_classes": 50}}}})
    assert parse_matrix("good", BASE | {"variants": {"x": {"set": {"sim_classes": 50}, "datasets": ["cub"]}}})
    with pytest.raises(MatrixError, match="sweep must be"):
        parse_matrix("bad", BASE | {"sweep": {"field": "k"}})
    with pytest.raises(MatrixError, match="seeds must be a non-empty list"):
        parse_matrix("bad", BASE | {"seeds": ["one"]})
    with pytest.raises(UnknownNameError, match="unknown profile 'laptop'"):
        parse_matrix("bad", BASE | {"profiles": {"laptop": {}}})
    with pytest.raises(MatrixError, match="profile 'sim' paradigms: unknown name 'xl'"):
        parse_matrix("bad", BASE | {"profiles": {"sim": {"paradigms": ["xl"]}}})
    with pytest.raises(MatrixError, match=r"profile 'sim': unknown key\(s\) \['dataset'\]"):
        parse_matrix("bad", BASE | {"profiles": {"sim": {"dataset": ["dtd"]}}})
    good = parse_matrix("good", BASE | {"sweep": {"field": "tau", "values": [0.5, 0.9]}})
    assert [r.config.tau for r in plan(good, "sim")] == [0.5, 0.9]
    assert make_config(dataset="eurosat").k is None
