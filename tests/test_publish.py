"""What the site serves besides its pages: the records, one CSV of all runs, the figures."""

import base64
import json

import nbformat
import pandas as pd

from cap.config import as_dict
from cap.experiments.matrix import plan
from cap.experiments.publish import notebook_figures, publish_records, publish_sources, site_folder
from cap.experiments.provenance import current_fingerprint
from cap.experiments.records import write_record


def test_every_record_is_published_with_one_csv_row(tmp_path):
    records = tmp_path / "records"
    a, b = plan("table1", "sim", datasets=["eurosat"], paradigms=["trzsl"], methods=["cap"], seeds=[1, 2])
    write_record(records / "sim", "run", as_dict(a.config),
                 {"status": "ok", "headline": 61.5, "metrics": {"top1": 70.0, "seen": 80.0, "unseen": 50.0,
                                                                "harmonic_mean": 61.5}, "wall_seconds": 3.0})
    write_record(records / "sim", "failed", as_dict(b.config), {"status": "failed", "error": "RuntimeError: boom"})
    (records / "sim" / "notes.txt").write_text("not a record")
    table = publish_records(records)
    out = site_folder(records) / "records"
    assert out == tmp_path / "site" / "records"
    assert sorted(p.name for p in (out / "sim").iterdir()) == sorted([f"run-{a.key}.json", f"failed-{b.key}.json"])
    csv = pd.read_csv(out / "runs.csv").set_index("key")
    assert len(csv) == len(table) == 2
    assert csv.loc[a.key, "harmonic_mean"] == 61.5 and csv.loc[a.key, "config.method"] == "cap"
    assert csv.loc[b.key, "state"] == "failed" and csv.loc[b.key, "error"] == "RuntimeError: boom"
    assert csv.loc[a.key, "code"] == current_fingerprint()  # every row names the code that made it
    record = json.loads((records / "sim" / f"run-{a.key}.json").read_text())
    record["code"]["fingerprint"] = "0" * 16
    (records / "sim" / f"run-{a.key}.json").write_text(json.dumps(record))
    assert publish_records(records).set_index("key").loc[a.key, "state"] == "stale (made by other code)"
    (records / "sim" / f"failed-{b.key}.json").unlink()
    publish_records(records)
    assert not (out / "sim" / f"failed-{b.key}.json").exists(), "a record removed is unpublished"


def test_notebook_figures_come_with_their_captions(tmp_path):
    png = b"\x89PNG\r\n\x1a\nfake"
    image = nbformat.v4.new_output("display_data", {"image/png": base64.b64encode(png).decode()})
    with_caption = nbformat.v4.new_code_cell("plot()", metadata={
        "mystnb": {"figure": {"caption": "Accuracy per class.", "name": "fig-acc"}}, "tags": ["headline"]})
    with_caption.outputs = [image]
    bare = nbformat.v4.new_code_cell("plot()")
    bare.outputs = [image, nbformat.v4.new_output("display_data", {"text/plain": "x"})]
    glued = nbformat.v4.new_code_cell("glue('f8', fig)")
    glued.outputs = [nbformat.v4.new_output("display_data", {"image/png": base64.b64encode(png).decode()},
                                            metadata={"scrapbook": {"name": "f8"}}),
                     nbformat.v4.new_output("display_data", {"image/png": base64.b64encode(png).decode()},
                                            metadata={"scrapbook": {"name": "unused"}})]
    pasted = nbformat.v4.new_markdown_cell("Text.\n\n```{glue:figure} f8\n:name: fig-f8\n\nPseudolabel accuracy,\n"
                                           "with and without alignment.\n```\n")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"), with_caption, bare, glued, pasted])
    path = tmp_path / "page.ipynb"
    nbformat.write(notebook, path)
    first, second, third = notebook_figures(path)
    assert (first.png, first.caption, first.name, first.tags) == (png, "Accuracy per class.", "fig-acc", ("headline",))
    assert second.caption == "" and json.dumps(second.tags) == "[]"
    assert (third.caption, third.name) == ("Pseudolabel accuracy, with and without alignment.", "fig-f8"), \
        "a glued figure takes the caption of the directive that pastes it; one never pasted is not on the page"


def test_sources_are_published_as_text_with_an_index(tmp_path):
    (tmp_path / "cap/core").mkdir(parents=True)
    (tmp_path / "cap/core/margin.py").write_text("M = 1\n")
    (tmp_path / "cap/core/__pycache__").mkdir()
    (tmp_path / "cap/core/__pycache__/margin.py").write_text("skip")
    (tmp_path / "notebooks/pages").mkdir(parents=True)
    (tmp_path / "notebooks/pages/table1.md").write_text("# Table 1\n")
    assert publish_sources(tmp_path, tmp_path / "site") == ["cap/core/margin.py", "notebooks/pages/table1.md"]
    assert (tmp_path / "site/source/cap/core/margin.py.txt").read_text() == "M = 1\n"
    index = (tmp_path / "site/source/index.html").read_text()
    assert '<a href="notebooks/pages/table1.md.txt">notebooks/pages/table1.md</a>' in index


def test_only_regular_record_files_are_published_and_the_others_are_named(tmp_path):
    """A records folder with links out of it, a FIFO and a dangling link builds a site holding
    none of them, and says which it skipped."""
    import os

    records = tmp_path / "records"
    (run,) = plan("table1", "sim", datasets=["eurosat"], paradigms=["ul"], methods=["cap"], seeds=[1])
    write_record(records / "sim", "run", as_dict(run.config), {"status": "ok", "headline": 50.0, "error": "=HYPERLINK(1)"})
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    (records / "sim" / "run-aaaaaaaaaaaa.json").symlink_to(secret)
    (records / "sim" / "run-bbbbbbbbbbbb.json").symlink_to(tmp_path / "missing.json")
    os.mkfifo(records / "sim" / "failed-cccccccccccc.json")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "run-dddddddddddd.json").write_text("{}")
    (records / "linked").symlink_to(outside)
    table = publish_records(records)
    out = site_folder(records) / "records"
    published = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert published == ["runs.csv", f"sim/run-{run.key}.json"] and len(table) == 1
    assert sorted(table.attrs["skipped"]) == ["linked: a link (not followed)",
                                              "sim/failed-cccccccccccc.json: not a regular file",
                                              "sim/run-aaaaaaaaaaaa.json: a link (not followed)",
                                              "sim/run-bbbbbbbbbbbb.json: a link (not followed)"]
    assert "password" not in (out / "runs.csv").read_text()
    # a text cell that a spreadsheet would run as a formula is written as text
    assert pd.read_csv(out / "runs.csv")["error"].tolist() == ["'=HYPERLINK(1)"]
