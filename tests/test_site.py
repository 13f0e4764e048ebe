"""The course website: built by its one command from the executed notebooks, then checked in a real
headless browser (Debian's Chromium driven by Playwright), served from a loopback HTTP server.

Every page is visited once (the ``visits`` fixture); the tests then check what a reader meets: no
console error, every image loaded, the maths typeset by the local MathJax (no raw ``$...$`` left),
every internal link and anchor resolves, the search finds the irreps notebook for "Wigner", and the
Colab badge of each notebook page opens that very notebook. Without Chromium (``apt-get install -y
chromium``) the browser tests are skipped with that message; CI installs it (``.ci/run``).
"""

from __future__ import annotations

import functools
import html
import http.server
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest

pytest.importorskip("sphinx", reason='the website needs the docs extra: pip install -e ".[docs]"')
pytest.importorskip("myst_nb", reason='the website needs the docs extra: pip install -e ".[docs]"')

from course_lib.teaching import site  # noqa: E402
from course_lib.teaching.assign import github_repo, source_files  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SLUGS = [s.stem for s in source_files()]

_COLLECT_JS = """
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const imgs = Array.from(document.images).map(
    i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0}));
  const links = Array.from(document.querySelectorAll('a[href]')).map(a => a.href);
  const skip = 'pre, code, script, style, .highlight, .cell_output, .output, mjx-container, .MathJax';
  const walker = document.createTreeWalker(document.querySelector('main') || document.body, NodeFilter.SHOW_TEXT);
  const raw = [];
  while (walker.nextNode()) {
    const n = walker.currentNode;
    if (n.parentElement && n.parentElement.closest(skip)) continue;
    const m = n.textContent.match(/\\$[^$\\n]+\\$|\\\\\\(|\\\\\\[/);
    if (m) raw.push(m[0].slice(0, 60));
  }
  return {imgs, links, raw,
          mathSpans: document.querySelectorAll('.math').length,
          mjx: document.querySelectorAll('mjx-container').length,
          mjxErrors: document.querySelectorAll('mjx-merror').length,
          colab: Array.from(document.querySelectorAll('a[href*="colab.research.google.com"]')).map(a => a.href)};
}
"""


@pytest.fixture(scope="module")
def built_site(tmp_path_factory) -> Path:
    """The site, built by the documented command's function (no notebook is executed)."""
    return site.build(tmp_path_factory.mktemp("site") / "html")


def test_site_has_every_page(built_site):
    for slug in SLUGS:
        page = built_site / "notebooks" / f"{slug}.html"
        assert page.is_file(), f"no page for notebook {slug}"
        assert "<img" in page.read_text(encoding="utf-8"), f"{slug}: no figure on its page"
    for page in ("index.html", "syllabus.html", "INSTRUCTORS.html", "benchmarks/README.html", "api.html",
                 "generated/course_lib.symmetry.html", "search.html", "_static/mathjax/tex-chtml.js"):
        assert (built_site / page).is_file(), page
    text = (built_site / "generated" / "course_lib.symmetry.html").read_text(encoding="utf-8")
    assert "equivariance_error" in text  # the API reference comes from the docstrings


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def server(built_site):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(built_site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium): browser tests skipped")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the docs extra)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _page(browser, base: str):
    context = browser.new_context()
    # the site must work offline: anything not served by the loopback server is refused (and shows up)
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base) else route.abort())
    page = context.new_page()
    page.set_default_timeout(30_000)
    return context, page


@pytest.fixture(scope="module")
def visits(built_site, server, browser) -> dict[str, dict]:
    """Visit every HTML page of the site once; per page: console errors, images, links, maths."""
    results = {}
    context, page = _page(browser, server)
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # a request the browser cancels because the test moves on to the next page (MathJax still fetching a font
    # after the load event) fails with net::ERR_ABORTED: not the page's fault. Refused offline requests
    # (route.abort) fail with net::ERR_FAILED and still count.
    page.on("requestfailed", lambda req: None if "ERR_ABORTED" in (req.failure or "")
            else errors.append(f"request failed: {req.url} ({req.failure})"))
    for path in sorted(built_site.rglob("*.html")):
        rel = path.relative_to(built_site).as_posix()
        if rel.startswith(("_static/", "_sources/")):
            continue
        errors.clear()
        page.goto(f"{server}/{rel}", wait_until="load")
        info = page.evaluate(_COLLECT_JS)
        info["errors"] = list(errors)
        results[rel] = info
    context.close()
    return results


def test_every_page_loads_without_console_error(visits):
    assert len(visits) > 20
    bad = {page: v["errors"] for page, v in visits.items() if v["errors"]}
    assert not bad, bad


def test_every_image_loads(visits):
    n_images = sum(len(v["imgs"]) for v in visits.values())
    assert n_images > 30, n_images
    bad = {page: [i["src"] for i in v["imgs"] if not i["ok"]] for page, v in visits.items()}
    assert not {k: v for k, v in bad.items() if v}, bad
    for slug in SLUGS:  # every notebook page shows its figures (PNG outputs) and its badge
        assert any(i["src"].endswith(".png") for i in visits[f"notebooks/{slug}.html"]["imgs"]), slug


def test_maths_renders(visits):
    pages_with_maths = [p for p, v in visits.items() if v["mathSpans"]]
    assert len(pages_with_maths) >= 8, pages_with_maths
    for page in pages_with_maths:
        v = visits[page]
        assert v["mjx"] >= v["mathSpans"] > 0, f"{page}: {v['mathSpans']} formulas, {v['mjx']} typeset"
        assert v["mjxErrors"] == 0, f"{page}: {v['mjxErrors']} TeX error(s)"
    raw = {page: v["raw"] for page, v in visits.items() if v["raw"]}
    assert not raw, f"raw TeX left in the text: {raw}"


def _anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    return {html.unescape(m) for m in re.findall(r'\bid="([^"]+)"', text)}


def test_every_internal_link_resolves(visits, built_site, server):
    anchors: dict[Path, set[str]] = {}
    broken = []
    n_links = 0
    for page, v in visits.items():
        for link in v["links"]:
            if not link.startswith(server):
                continue
            n_links += 1
            url, fragment = urldefrag(link)
            target = built_site / unquote(urlparse(url).path).lstrip("/")
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{page} -> {link}")
            elif fragment and target.suffix == ".html":
                if fragment not in anchors.setdefault(target, _anchors(target)):
                    broken.append(f"{page} -> {link} (no anchor)")
    assert n_links > 100, n_links
    assert not broken, broken


def test_search_finds_the_wigner_notebook(browser, server):
    context, page = _page(browser, server)
    page.goto(f"{server}/search.html?q=Wigner", wait_until="load")
    page.wait_for_selector("ul.search li a", timeout=30_000)
    hrefs = page.eval_on_selector_all("ul.search li a", "els => els.map(a => a.getAttribute('href'))")
    context.close()
    assert any("06_irreps_tensor_products" in h for h in hrefs), hrefs


def test_colab_badge_of_each_notebook_opens_that_notebook(visits):
    repo = github_repo()
    for slug in SLUGS:
        badges = visits[f"notebooks/{slug}.html"]["colab"]
        expected = f"https://colab.research.google.com/github/{repo}/blob/main/notebooks/{slug}.ipynb"
        assert badges and badges[0] == expected, (slug, badges)
