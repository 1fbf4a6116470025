"""The book's table of contents names only sources or make targets (the small book is built and
opened in a browser by test_site.py)."""

import re

import yaml

from cap.data.registry import dataset_names
from cap.experiments.matrix import matrix_names
from cap.experiments.runner import select


def toc_entries(toc: dict) -> tuple[list[str], list[str]]:
    """(files, globs) named by the table of contents."""
    files, globs = [toc["root"]], []
    for part in toc.get("parts", []):
        for entry in [e for chapter in part["chapters"] for e in [chapter, *chapter.get("sections", [])]]:
            (files if "file" in entry else globs).append(entry.get("file") or entry["glob"])
    return files, globs


def makefile_list(makefile: str, name: str) -> list[str]:
    return re.search(rf"^{name} := (.*)$", makefile, re.M).group(1).split()


def test_toc_names_only_sources_or_make_targets(root):
    toc = yaml.safe_load((root / "book/_toc.yml").read_text())
    makefile = (root / "Makefile").read_text()
    presets = makefile_list(makefile, "PRESETS")
    assert presets == dataset_names()
    pages = [name for var in ("PAGES", "ABLATION_PAGES", "SWEEP_PAGES") for name in makefile_list(makefile, var)]
    shown_elsewhere = [m for m in matrix_names() if m.startswith("diagnostics_")]  # on the claims and result pages
    assert set(matrix_names()) - set(shown_elsewhere) <= set(pages), "one page per experiment matrix"
    generated = {f"_generated/sim/{p}" for p in presets} | {"_generated/status", "_generated/figures"} | \
        {f"_generated/pages/{p}" for p in pages}
    files, globs = toc_entries(toc)
    assert generated <= set(files), \
        "every simulator page, result page, the figures page and the status page are in the book"
    assert files[:2] == ["intro", "method"] or files[:3] == ["intro", "_generated/pages/claims", "method"], \
        "the method comes right after the introduction (and the claims)"
    for name in files:
        assert name in generated or (root / "book" / f"{name}.md").is_file(), name
    assert globs == ["_generated/runs/*/*"], "every executed run notebook is in the book"


def test_every_sim_run_group_has_a_run_page_target(root):
    makefile = (root / "Makefile").read_text()
    groups = {f"{d}-{p}" for d in makefile_list(makefile, "PRESETS") for p in makefile_list(makefile, "PARADIGMS")}
    planned = {f"{r.config.dataset}-{r.config.paradigm}" for r in select("sim")}
    assert planned == groups, "make book leaves one run page per dataset and paradigm the sim profile runs"
