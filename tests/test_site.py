"""The site, checked as a reader would: a small book with real result pages, served on localhost
and opened page by page in headless Chromium (Debian's package, installed by `make test`).

Every page must load with no broken image or link (links into another page's anchor included),
no `nan`, no table cell with more than two decimals, no figure without a caption, every formula
rendered by the bundled MathJax, and no request to a host other than localhost. Screenshots of the
landing page, Table 1, the method and a run page are saved in ``book/_build/site-test-screenshots/``
(the test prints the folder)."""

import functools
import html as html_module
import http.server
import json
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
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=5000"]  # scripts (MathJax) finish before the DOM is read
SCREENSHOTS = Path(__file__).resolve().parents[1] / "book/_build/site-test-screenshots"
SCREENSHOT_PAGES = {"landing": "intro.html", "table1": "_generated/pages/table1.html", "method": "method.html",
                    "run": "_generated/runs/sim/eurosat-ul.html"}
MORE_THAN_TWO_DECIMALS = re.compile(r"(?<![\w.=:/-])[-+\u2212]?\d+\.\d{3,}(?![\w.])")


class Page(HTMLParser):
    """What a rendered page refers to and holds: links, images, ids, table cells, figures without
    a caption, math elements MathJax did not render, and the visible text."""

    def __init__(self):
        super().__init__()
        self.links, self.images, self.ids, self.cells, self.uncaptioned, self.text = [], [], set(), [], [], []
        self.bad_alts = []  # images of the article whose alt text is missing or a file path
        self.math, self.unrendered = 0, 0
        self._cell, self._figures, self._math, self._skip, self._article = None, [], [], 0, 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        elif tag == "link" and attrs.get("href") and "stylesheet" in (attrs.get("rel") or ""):
            self.links.append(attrs["href"])
        elif tag == "script" and attrs.get("src"):
            self.links.append(attrs["src"])
        if tag in ("script", "style", "mjx-assistive-mml", "pre", "code"):  # code is not text a reader reads as a result
            self._skip += 1
        if tag == "article":
            self._article += 1
        if tag in ("td", "th"):
            self._cell = []
        if tag == "figure":
            self._figures.append({"caption": False, "images": 0})
        if tag == "figcaption" and self._figures:
            self._figures[-1]["caption"] = True
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])
            alt = (attrs.get("alt") or "").strip()
            if self._article and (not alt or re.fullmatch(r"\S*[/\\]\S*\.(png|svg|jpe?g)|\S+\.(png|svg|jpe?g)", alt)):
                self.bad_alts.append(f"{attrs['src'][:50]} (alt {alt!r})")
            if self._figures:
                self._figures[-1]["images"] += 1
            elif self._article:
                self.uncaptioned.append(attrs["src"])
        if tag in ("span", "div") and "math" in classes:
            self.math += 1
            self._math.append({"tag": tag, "rendered": False, "depth": 0})
        if tag == "mjx-container" and self._math:
            self._math[-1]["rendered"] = True
        if self._math and tag == self._math[-1]["tag"]:
            self._math[-1]["depth"] += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style", "mjx-assistive-mml", "pre", "code"):
            self._skip = max(0, self._skip - 1)
        if tag == "article":
            self._article -= 1
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append(" ".join(self._cell))
            self._cell = None
        if tag == "figure" and self._figures:
            figure = self._figures.pop()
            if figure["images"] and not figure["caption"]:
                self.uncaptioned.append("a figure without a caption")
        if self._math and tag == self._math[-1]["tag"]:
            self._math[-1]["depth"] -= 1
            if self._math[-1]["depth"] == 0:
                self.unrendered += not self._math.pop()["rendered"]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if not self._skip:
            self.text.append(data)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a browser closing a connection early is not a failure of the site


def chromium(*args: str, net_log: Path | None = None) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        extra = [f"--log-net-log={net_log}"] if net_log else []
        return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, *args],
                              capture_output=True, text=True, timeout=120)


def page_requests(net_log: Path) -> list[str]:
    """The URLs a page asked for (the browser's own background requests have no page origin)."""
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in log["events"] if e["type"] == start
            and str(e.get("params", {}).get("initiator", "")).startswith("http")]


def small_toc(root) -> dict:
    """The book's own table of contents with one simulator preset (EuroSAT) instead of six."""
    toc = yaml.safe_load((root / "book/_toc.yml").read_text())
    for part in toc["parts"]:
        for chapter in part["chapters"]:
            if chapter["file"] == "simulator":
                chapter["sections"] = [{"file": "_generated/sim/eurosat"}]
    return toc


def makefile_pages(root) -> list[tuple[str, str | None]]:
    """(page, template) for every result page the Makefile builds."""
    makefile = (root / "Makefile").read_text()
    pages = []
    for kind, template in (("PAGES", None), ("ABLATION_PAGES", "ablation"), ("SWEEP_PAGES", "sweep")):
        pages += [(page, template) for page in re.search(rf"^{kind} := (.*)$", makefile, re.M).group(1).split()]
    return pages


@pytest.fixture(scope="module")
def site(tmp_path_factory, root):
    """Build a small book from the real sources: every result page, a run page, the figures and
    status pages, from tiny simulator runs (EuroSAT, UL, seed 1: Table 1's methods and CAP without
    the margin), and one simulator preset page. Served on localhost for the duration of the tests."""
    base = tmp_path_factory.mktemp("site")
    book = base / "book"
    generated = book / "_generated"
    records = generated / "records"
    matrices = ("table1", "figure9_calibration")
    runs = [r for m in matrices for r in plan(m, "sim", datasets=["eurosat"], paradigms=["ul"], seeds=[1])]
    for run in runs:
        assert execute(run, records / "sim").state == "done"
    book.mkdir(exist_ok=True)
    for page in root.joinpath("book").glob("*.md"):
        shutil.copy(page, book / page.name)
    shutil.copytree(root / "book/_static", book / "_static")
    shutil.copy(root / "book/_config.yml", book / "_config.yml")
    (book / "_toc.yml").write_text(yaml.safe_dump(small_toc(root)))
    run_notebook(root / "notebooks/sim_zero_shot.md", generated / "sim/eurosat.ipynb",
                 {"preset": "eurosat", "n_train_per_class": 30, "n_test_per_class": 20, "record_dir": str(records)})
    for page, template in makefile_pages(root):
        params = {"records_root": str(records)} | ({"matrix": page} if template else {})
        run_notebook(root / f"notebooks/pages/{template or page}.md", generated / f"pages/{page}.ipynb", params)
    run_notebook(root / "notebooks/run.md", generated / "runs/sim/eurosat-ul.ipynb",
                 {"profile": "sim", "matrices": ",".join(matrices), "dataset": "eurosat", "paradigm": "ul", "seeds": "1",
                  "records_dir": str(records / "sim")})
    run_notebook(root / "notebooks/figures.md", generated / "figures.ipynb", {"generated_dir": str(generated)})
    run_notebook(root / "notebooks/status.md", generated / "status.ipynb", {"generated_dir": str(generated)})
    result = subprocess.run([Path(sys.executable).with_name("jupyter-book"), "build", str(book), "--warningiserror",
                             "--keep-going"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = subprocess.run([sys.executable, "-m", "cap", "book", "summary", "--strict", "--generated", str(generated),
                              "--matrix", *matrices, "--dataset", "eurosat", "--paradigm", "ul", "--seeds", "1"],
                             capture_output=True, text=True, cwd=root, timeout=300)
    assert summary.returncode == 0, summary.stdout + summary.stderr  # what `make book STRICT=1` checks at its end
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
    status = html_module.unescape(re.sub(r"<[^>]+>", "", (html / "_generated/status.html").read_text()))
    assert "sim/eurosat" in status and "eurosat ul cap seed 1" in status, "every run is on the status page"
    (key,) = [r.key for r in plan("table1", "sim", datasets=["eurosat"], paradigms=["ul"], methods=["cap"], seeds=[1])]
    published = json.loads((html / f"records/sim/run-{key}.json").read_text())
    assert published["key"] == key, "each record is published with the site"
    assert f"sim,run-{key}.json,{key},ok" in (html / "records/runs.csv").read_text(), "and one CSV holds them all"
    for page in ("table1", "table2", "table3", "table4", "figure1_2", "figure6_k", "figure9_calibration", "appendix",
                 "divergences"):
        text = html_module.unescape(re.sub(r"<[^>]+>", "", (html / f"_generated/pages/{page}.html").read_text()))
        assert "make runs PROFILE=paper" in text, f"{page} gives the command for its real-data runs"
        assert "Simulation" in text or page == "table4", f"{page} says which part is a simulation"


def test_chromium_is_installed():
    assert CHROMIUM, "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"


def _fetch(url: str):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, ""


def _problems(name: str, page: Page) -> list[str]:
    """What a reader must never see on a page."""
    problems = []
    text = " ".join(page.text)
    shown_nan = re.search(r".{0,60}\bnan\b.{0,20}", text, re.I | re.S)
    if shown_nan:
        problems.append(f"{name}: shows 'nan': …{shown_nan.group(0)}…")
    problems += [f"{name}: a table cell with more than 2 decimals: {cell.strip()[:80]!r}" for cell in page.cells
                 if MORE_THAN_TWO_DECIMALS.search(cell)]
    problems += [f"{name}: figure without a caption ({src[:60]})" for src in page.uncaptioned]
    problems += [f"{name}: an image whose alt text says nothing of what it shows: {bad}" for bad in page.bad_alts]
    numbered = re.search(r"\bFig\. \d+", text)
    if numbered:  # Sphinx's running numbers would contradict the paper's, which captions carry
        problems.append(f"{name}: a figure numbered by the site, not the paper: {numbered.group(0)!r}")
    if page.unrendered:
        problems.append(f"{name}: {page.unrendered} of {page.math} formulas were not rendered by MathJax")
    return problems


def test_every_page_loads_cleanly_offline(site, tmp_path):
    """Loaded in Chromium: no broken image or link (anchors included), no nan, no cell with more
    than two decimals, no figure without a caption or with a path for an alt text, no figure
    numbered by the site, every formula rendered, no request off localhost."""
    assert CHROMIUM, "Debian's chromium is missing: `make test` installs it"
    html, origin, _ = site
    pages = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                   if not p.relative_to(html).parts[0].startswith(("_static", "source")))  # templates, plain sources
    assert {"intro.html", "method.html", "_generated/pages/table1.html", "_generated/runs/sim/eurosat-ul.html",
            "_generated/figures.html"} <= set(pages)
    images_seen, problems, dom_ids, fragments = 0, [], {}, []
    for number, name in enumerate(pages):
        url = urljoin(origin, name)
        redirect = re.search(r'http-equiv="refresh" content="0; url=([^"]+)"', (html / name).read_text(), re.I)
        if redirect:  # the book's index.html only forwards to the first page
            assert _fetch(urljoin(url, redirect.group(1)))[0] == 200, f"{name} forwards to a missing page"
            continue
        net_log = tmp_path / f"net-{number}.json"
        loaded = chromium("--dump-dom", url, net_log=net_log)
        assert loaded.returncode == 0, f"{name}: chromium exited {loaded.returncode}: {loaded.stderr[-2000:]}"
        assert "<main" in loaded.stdout or "<body" in loaded.stdout, f"{name} rendered no document"
        assert "404" not in re.sub(r"<[^>]+>", "", loaded.stdout)[:200], f"{name} is an error page"
        page = Page()
        page.feed(loaded.stdout)
        dom_ids[urldefrag(url).url] = page.ids
        problems += _problems(name, page)
        problems += [f"{name}: asked {request} for something, not localhost" for request in page_requests(net_log)
                     if urlparse(request).hostname not in ("127.0.0.1", "localhost")]
        for src in page.images:
            status, kind = _fetch(urljoin(url, src))
            assert status == 200 and kind.startswith("image/"), f"{name}: broken image {src} ({status}, {kind})"
            images_seen += 1
        for href in page.links:
            target, fragment = urldefrag(urljoin(url, href))
            if urlparse(target).netloc != urlparse(origin).netloc:
                continue  # external links are not fetched: the test runs offline
            status, _ = _fetch(target)
            assert status == 200, f"{name}: broken internal link {href} ({status})"
            if fragment and target.endswith(".html"):
                fragments.append((name, href, target, fragment))
    for name, href, target, fragment in fragments:  # every anchor a link points at exists
        if target not in dom_ids:
            dom_ids[target] = _ids(target)
        if fragment not in dom_ids[target]:
            problems.append(f"{name}: link {href} points at an anchor that does not exist")
    assert not problems, "\n".join(problems[:40])
    assert images_seen >= 2, "the figure pages show their figures"
    into_method = [f for f in fragments if f[2].endswith("/method.html")]
    assert len(into_method) >= 3, "pages link into the method page's sections"


def _ids(url: str) -> set[str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return set(re.findall(r'\bid="([^"]+)"', response.read().decode()))


def test_the_method_page_has_its_equations_each_with_the_function_behind_it(site):
    html, origin, _ = site
    dom = chromium("--dump-dom", urljoin(origin, "method.html")).stdout
    page = Page()
    page.feed(dom)
    assert page.math >= 20 and page.unrendered == 0, "the equations render offline"
    text = html_module.unescape((html / "method.html").read_text())  # the TeX, before MathJax typesets it
    for symbol in ("M_{yj} = m \\cdot \\Delta \\cdot \\delta_y \\cdot S_{yj}", "\\frac{1 - r_c}{1 + r_c}", "1 - r_c",
                   "k_e"):
        assert symbol in text, f"the method page states {symbol}"
    code_links = re.findall(r'<a class="reference internal" href="(api\.html#cap\.[\w.]+)"', dom)
    assert len(code_links) >= 15, "each equation is followed by a link to the function implementing it"
    api = _ids(urljoin(origin, "api.html"))
    assert all(link.split("#")[1] in api for link in code_links), "and each link lands on that function"
    assert _fetch(urljoin(origin, "_modules/cap/core/margin.html"))[0] == 200, "whose source is on the site"


def test_screenshots_of_the_landing_table1_method_and_a_run_page(site):
    assert CHROMIUM, "Debian's chromium is missing: `make test` installs it"
    html, origin, _ = site
    dom = chromium("--dump-dom", urljoin(origin, "_generated/pages/table1.html")).stdout
    tables = re.findall(r"<table.*?</table>", dom, re.S)
    text = re.sub(r"<[^>]+>", " ", " ".join(tables))
    assert "Zero-shot CLIP" in text and "CAP" in text and "EuroSAT" in text
    assert re.search(r"\b\d{1,3}\.\d\b", text), "simulated cells show numbers with one decimal"
    plain = html_module.unescape(re.sub(r"<[^>]+>", "", dom))
    assert "make runs PROFILE=paper MATRIX=table1" in plain, "the command for the missing runs is on the page"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, page in SCREENSHOT_PAGES.items():
        shot = SCREENSHOTS / f"{name}.png"
        taken = chromium(f"--screenshot={shot}", "--window-size=1280,2400", "--hide-scrollbars", urljoin(origin, page))
        assert taken.returncode == 0, taken.stderr[-2000:]
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, f"{name}: a real screenshot, not an empty image"
    print(f"screenshots: {SCREENSHOTS}")
