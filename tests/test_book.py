"""A small version of the book (one preset, small sizes) builds with warnings as errors."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from cap.datasets import dataset_names
from cap.notebooks import run_notebook
from cap.results import read_records


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
    generated = {f"_generated/sim/{p}" for p in presets} | {"_generated/status"}
    files = toc_files(toc)
    assert generated <= set(files), "every simulator page and the status page are in the book"
    for name in files:
        assert name in generated or (root / "book" / f"{name}.md").is_file(), name


def test_small_book_builds(tmp_path, root):
    book = tmp_path / "book"
    book.mkdir()
    for name in ("_config.yml", "intro.md", "simulator.md"):
        shutil.copy(root / "book" / name, book / name)
    generated = book / "_generated"
    run_notebook(
        root / "notebooks/sim_zero_shot.md",
        generated / "sim/eurosat.ipynb",
        {"preset": "eurosat", "n_train_per_class": 30, "n_test_per_class": 20, "record_dir": str(generated / "records")},
    )
    run_notebook(root / "notebooks/status.md", generated / "status.ipynb", {"generated_dir": str(generated)})
    toc = {
        "format": "jb-book",
        "root": "intro",
        "parts": [
            {"caption": "The concept simulator",
             "chapters": [{"file": "simulator", "sections": [{"file": "_generated/sim/eurosat"}]}]},
            {"caption": "About this build", "chapters": [{"file": "_generated/status"}]},
        ],
    }
    (book / "_toc.yml").write_text(yaml.safe_dump(toc))

    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run([jupyter_book, "build", str(book), "--warningiserror", "--keep-going"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    html = book / "_build/html"
    page = (html / "_generated/sim/eurosat.html").read_text()
    assert "Simulated EuroSAT: zero-shot pseudolabels" in page
    assert "This page is a simulation" in page
    images = re.findall(r'<img[^>]+src="([^"]+)"', page)
    assert len(images) >= 2, "the two figures are on the page"
    for src in images:
        assert (html / "_generated/sim" / src).resolve().is_file(), src
    status = (html / "_generated/status.html").read_text()
    assert "sim/eurosat" in status and "n_train_per_class" in status
    assert (html / "intro.html").is_file()

    (record,) = read_records(generated / "records", "sim_zero_shot")
    assert record["config"]["preset"] == "eurosat"
    assert 0 <= record["results"]["zero_shot_top1"] <= 100
