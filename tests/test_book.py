"""The book's table of contents names only sources or make targets (the small book is built and
opened in a browser by test_site.py)."""

import re

import yaml

from cap.data.registry import dataset_names
from cap.experiments.matrix import matrix_names


def toc_files(toc: dict) -> list[str]:
    files = [toc["root"]]
    for part in toc.get("parts", []):
        for chapter in part["chapters"]:
            files.append(chapter["file"])
            files += [section["file"] for section in chapter.get("sections", [])]
    return files


def test_toc_names_only_sources_or_make_targets(root):
    toc = yaml.safe_load((root / "book/_toc.yml").read_text())
    makefile = (root / "Makefile").read_text()
    presets = re.search(r"^PRESETS := (.*)$", makefile, re.M).group(1).split()
    assert presets == dataset_names()
    pages = [name for var in ("PAGES", "ABLATION_PAGES", "SWEEP_PAGES")
             for name in re.search(rf"^{var} := (.*)$", makefile, re.M).group(1).split()]
    assert set(pages) == set(matrix_names()), "one page per experiment matrix"
    generated = {f"_generated/sim/{p}" for p in presets} | {"_generated/status"} | {f"_generated/pages/{p}" for p in pages}
    files = toc_files(toc)
    assert generated <= set(files), "every simulator page, result page and the status page are in the book"
    for name in files:
        assert name in generated or (root / "book" / f"{name}.md").is_file(), name
