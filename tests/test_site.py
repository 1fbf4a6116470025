"""The site, checked as a reader would: a small book with real result pages, served on localhost
and opened page by page in headless Chromium (Debian's package, installed by `make test`)."""

import functools
import html as html_module
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import pytest
import yaml

from cap.experiments.matrix import plan
from cap.experiments.notebooks import run_notebook
from cap.experiments.records import read_records
from cap.experiments.runner import execute

CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class Links(HTMLParser):
    """Every link, image, stylesheet and script a page refers to."""

    def __init__(self):
        super().__init__()
        self.links, self.images = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        elif tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])
        elif tag == "link" and attrs.get("href") and "stylesheet" in (attrs.get("rel") or ""):
            self.links.append(attrs["href"])
        elif tag == "script" and attrs.get("src"):
            self.links.append(attrs["src"])


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a browser closing a connection early is not a failure of the site


def chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120)


def small_toc(root) -> dict:
    """The book's own table of contents with one simulator preset (EuroSAT) instead of six."""
    toc = yaml.safe_load((root / "book/_toc.yml").read_text())
    for part in toc["parts"]:
        for chapter in part["chapters"]:
            if chapter["file"] == "simulator":
                chapter["sections"] = [{"file": "_generated/sim/eurosat"}]
    return toc


@pytest.fixture(scope="module")
def site(tmp_path_factory, root):
    """Build a small book from the real sources: every result page and the status page, from tiny
    simulator runs (EuroSAT, UL, seed 1: Table 1's methods and CAP without the margin), and one
    simulator preset page. Served on localhost for the duration of the tests."""
    base = tmp_path_factory.mktemp("site")
    book = base / "book"
    generated = book / "_generated"
    records = generated / "records"
    runs = plan("table1", "sim", datasets=["eurosat"], paradigms=["ul"], seeds=[1]) + \
        plan("figure9_calibration", "sim", datasets=["eurosat"], seeds=[1])
    for run in runs:
        assert execute(run, records / "sim").state == "done"
    book.mkdir(exist_ok=True)
    for page in root.joinpath("book").glob("*.md"):
        shutil.copy(page, book / page.name)
    shutil.copy(root / "book/_config.yml", book / "_config.yml")
    (book / "_toc.yml").write_text(yaml.safe_dump(small_toc(root)))
    run_notebook(root / "notebooks/sim_zero_shot.md", generated / "sim/eurosat.ipynb",
                 {"preset": "eurosat", "n_train_per_class": 30, "n_test_per_class": 20, "record_dir": str(records)})
    makefile = (root / "Makefile").read_text()
    for kind, template in (("PAGES", None), ("ABLATION_PAGES", "ablation"), ("SWEEP_PAGES", "sweep")):
        for page in re.search(rf"^{kind} := (.*)$", makefile, re.M).group(1).split():
            source = root / f"notebooks/pages/{template or page}.md"
            params = {"records_root": str(records)} | ({"matrix": page} if template else {})
            run_notebook(source, generated / f"pages/{page}.ipynb", params)
    run_notebook(root / "notebooks/status.md", generated / "status.ipynb", {"generated_dir": str(generated)})
    result = subprocess.run([Path(sys.executable).with_name("jupyter-book"), "build", str(book), "--warningiserror",
                             "--keep-going"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    html = book / "_build/html"

    server = QuietServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield html, f"http://127.0.0.1:{server.server_address[1]}/", records
    server.shutdown()


def test_the_built_pages_hold_what_the_records_say(site):
    html, _, records = site
    page = (html / "_generated/sim/eurosat.html").read_text()
    assert "Simulated EuroSAT: zero-shot pseudolabels" in page and "This page is a simulation" in page
    (record,) = read_records(records, "sim_zero_shot")
    assert record["config"]["preset"] == "eurosat" and 0 <= record["results"]["zero_shot_top1"] <= 100
    status = (html / "_generated/status.html").read_text()
    assert "sim/eurosat" in status and "n_train_per_class" in status
    assert "dataset=eurosat, paradigm=ul, method=cap" in status, "every run is on the status page"
    for page in ("table1", "table2", "table3", "table4", "figure1_2", "figure6_k", "figure9_calibration", "appendix",
                 "divergences"):
        text = (html / f"_generated/pages/{page}.html").read_text()
        assert "not run yet" in text or "make runs PROFILE=paper" in text, f"{page} marks its missing runs"
        assert "Simulation" in text or page == "table4", f"{page} says which part is a simulation"


def test_chromium_is_installed():
    assert CHROMIUM, "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"


def _fetch(url: str):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, ""


def test_every_page_loads_with_no_broken_image_or_link(site):
    assert CHROMIUM, "Debian's chromium is missing: `make test` installs it"
    html, origin, _ = site
    pages = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                   if not p.relative_to(html).parts[0].startswith("_static"))  # theme templates, not pages
    assert {"intro.html", "_generated/pages/table1.html", "_generated/pages/figure1_2.html"} <= set(pages)
    images_seen = 0
    for page in pages:
        url = urljoin(origin, page)
        redirect = re.search(r'http-equiv="refresh" content="0; url=([^"]+)"', (html / page).read_text(), re.I)
        if redirect:  # the book's index.html only forwards to the first page
            assert _fetch(urljoin(url, redirect.group(1)))[0] == 200, f"{page} forwards to a missing page"
            continue
        loaded = chromium("--dump-dom", url)
        assert loaded.returncode == 0, f"{page}: chromium exited {loaded.returncode}: {loaded.stderr[-2000:]}"
        assert "<main" in loaded.stdout or "<body" in loaded.stdout, f"{page} rendered no document"
        assert "404" not in re.sub(r"<[^>]+>", "", loaded.stdout)[:200], f"{page} is an error page"
        parser = Links()
        parser.feed(loaded.stdout)
        for src in parser.images:
            target = urljoin(url, src)
            status, kind = _fetch(target)
            assert status == 200 and kind.startswith("image/"), f"{page}: broken image {src} ({status}, {kind})"
            images_seen += 1
        for href in parser.links:
            target = urldefrag(urljoin(url, href)).url
            if urlparse(target).netloc != urlparse(origin).netloc:
                continue  # external links are not fetched: the test runs offline
            status, _ = _fetch(target)
            assert status == 200, f"{page}: broken internal link {href} ({status})"
    assert images_seen >= 2, "the figures page shows its two figures"


def test_table1_page_shows_its_table_and_a_screenshot_is_saved(site):
    assert CHROMIUM, "Debian's chromium is missing: `make test` installs it"
    html, origin, _ = site
    url = urljoin(origin, "_generated/pages/table1.html")
    dom = chromium("--dump-dom", url).stdout
    tables = re.findall(r"<table.*?</table>", dom, re.S)
    assert len(tables) >= 6, "three paradigms, real data and simulator"
    text = re.sub(r"<[^>]+>", " ", " ".join(tables))
    assert "Zero-shot CLIP" in text and "CAP" in text and "EuroSAT" in text
    assert "not run yet" in text, "real-data cells without runs say so"
    assert re.search(r"\b\d{1,3}\.\d\d\b", text), "simulated cells show numbers"
    plain = html_module.unescape(re.sub(r"<[^>]+>", "", dom))
    assert "make runs PROFILE=paper MATRIX=table1 DATASET=eurosat PARADIGM=ul" in plain, \
        "the command for the missing runs is on the page"
    shot = html / "table1.png"
    taken = chromium(f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", url)
    assert taken.returncode == 0, taken.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, "a real screenshot, not an empty image"
