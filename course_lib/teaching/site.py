"""The course website: one command builds it from the executed notebooks (nothing is executed).

Run it from the repository root (needs the ``docs`` extra, ``pip install -e ".[docs]"``, and ``npm``
for the local copy of MathJax)::

    python -m course_lib.teaching.site build     # -> _build/site/index.html (about a minute)
    python -m http.server -d _build/site 8000    # then open http://127.0.0.1:8000

Tool: Sphinx with MyST-NB and the sphinx-book-theme (the stack of Jupyter Book 1, used directly).
MyST-NB renders the stored outputs of executed notebooks (``nb_execution_mode = "off"``), and Sphinx
also generates the API reference from the docstrings (autodoc/autosummary) and a client-side search,
all in one build; Jupyter Book 2 moved to the Node-based MyST engine, which has no autodoc.

The build stages its sources in ``_build/site-src``: ``docs/`` (landing page, syllabus and session plan,
API page, ``conf.py``), the generated notebooks ``notebooks/NN_slug.ipynb`` as they are committed
(with their outputs), the instructor guide, the authors' guide and the benchmark documents. Relative
links to repository files that are not pages of the site become links to the file on GitHub; the Colab
badge image is replaced by a local copy (the link keeps pointing to Colab). MathJax 3 comes from the
npm package ``mathjax`` (``npm pack``, cached in ``_build/cache``) and is served from the site itself,
so the maths renders offline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from course_lib.files import REPO_ROOT

__all__ = ["BUILD_DIR", "SITE_DIR", "PAGES", "COLAB_BADGE_URL", "stage", "mathjax", "build", "main"]

BUILD_DIR = REPO_ROOT / "_build"
SITE_DIR = BUILD_DIR / "site"
MATHJAX_SPEC = "mathjax@3.2.2"
#: Repository documents shown on the site, at the same relative path as in the repository.
PAGES = ["INSTRUCTORS.md", "notebooks/README.md", "benchmarks/README.md", "benchmarks/results/nbody.md",
         "benchmarks/nequip_official.md", "project/README.md", "project/STARTER.md", "project/REPORT_TEMPLATE.md"]
COLAB_BADGE_URL = "https://colab.research.google.com/assets/colab-badge.svg"
LOCAL_BADGE = "_static/colab-badge.svg"

_LINK_RE = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")


def _github_url(relpath: str, is_dir: bool) -> str:
    from course_lib.files import repository_url

    return f"{repository_url()}/{'tree' if is_dir else 'blob'}/main/{relpath}"


def rewrite_links(text: str, page: str, pages: set[str]) -> str:
    """Relative links of the Markdown ``text`` of ``page`` (a repository path) to files that are not
    pages of the site become GitHub links; links to pages, anchors and absolute URLs are kept."""
    base = Path(page).parent

    def fix(m: re.Match) -> str:
        target = m.group(2)
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            return m.group(0)
        path, _, anchor = target.partition("#")
        rel = os.path.normpath(base / path).replace(os.sep, "/")
        if rel in pages or rel.startswith("_static/"):
            return m.group(0)
        url = _github_url(rel, (REPO_ROOT / rel).is_dir()) + (f"#{anchor}" if anchor else "")
        return f"{m.group(1)}{url}{m.group(3)}"

    return _LINK_RE.sub(fix, text)


def _results_page() -> str:
    """A page listing the result files of the benchmarks with the command that wrote each one."""
    rows = ["# Benchmark result files", "",
            "Every benchmark script writes its numbers to `benchmarks/results/` (see the "
            "[benchmarks](../README.md)); each file on GitHub:", "",
            "| file | written by |", "|---|---|"]
    for path in sorted((REPO_ROOT / "benchmarks" / "results").glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        command = data.get("command") if isinstance(data, dict) else None
        command = command if isinstance(command, str) else " ".join(command) if isinstance(command, list) else ""
        rel = path.relative_to(REPO_ROOT).as_posix()
        rows.append(f"| [{path.name}]({_github_url(rel, False)}) | `{command.replace('|', '/')}` |"
                    if command else f"| [{path.name}]({_github_url(rel, False)}) | |")
    return "\n".join(rows) + "\n"


def _notebook_pages() -> list[str]:
    return sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _stage_notebook(src: Path, dest: Path, pages: set[str]) -> None:
    import nbformat

    from course_lib.teaching.execute import strip_remote_stylesheets

    nb = nbformat.read(src, as_version=4)
    page = src.relative_to(REPO_ROOT).as_posix()
    depth = "../" * page.count("/")
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = rewrite_links(cell.source.replace(COLAB_BADGE_URL, depth + LOCAL_BADGE), page, pages)
        for out in cell.get("outputs", []):
            if "text/html" in out.get("data", {}):
                out["data"]["text/html"] = strip_remote_stylesheets(out["data"]["text/html"])
    nbformat.write(nb, dest)


def _fill_tokens(text: str) -> str:
    """The generated parts of the landing page and the syllabus (from the notebooks and notebooks/index.json)."""
    from course_lib.teaching.assign import exercise_cells, notebook_table, read_source, repo_url, source_files

    exercises = [e for s in source_files() for e in exercise_cells(read_source(s))]
    table = notebook_table().replace(COLAB_BADGE_URL, LOCAL_BADGE)
    return (text.replace("<!-- notebook-table -->", table).replace("REPOSITORY_URL", repo_url())
            .replace("EXERCISE_COUNT", str(len(exercises)))
            .replace("EXERCISE_POINTS", str(sum(int(points) for _, points, _ in exercises))))


def stage(dest: Path) -> Path:
    """Copy the sources of the site into ``dest`` (emptied first); return ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(REPO_ROOT / "docs", dest)
    notebooks = _notebook_pages()
    pages = set(PAGES) | set(notebooks) | {"benchmarks/results/index.md", "index.md", "syllabus.md", "api.md"}
    for page in PAGES:
        text = (REPO_ROOT / page).read_text(encoding="utf-8")
        (dest / page).parent.mkdir(parents=True, exist_ok=True)
        (dest / page).write_text(rewrite_links(text, page, pages), encoding="utf-8")
    for page in ("index.md", "syllabus.md"):
        (dest / page).write_text(_fill_tokens((dest / page).read_text(encoding="utf-8")), encoding="utf-8")
    for page in notebooks:
        _stage_notebook(REPO_ROOT / page, dest / page, pages)
    (dest / "benchmarks/results/index.md").write_text(_results_page(), encoding="utf-8")
    return dest


def mathjax(static: Path, cache: Path | None = None) -> Path:
    """Put MathJax 3 (``es5/``, from the npm package) into ``static/mathjax``; the package is fetched once
    with ``npm pack`` into ``cache`` (default ``_build/cache``). Raises RuntimeError without npm."""
    cache = Path(cache or BUILD_DIR / "cache")
    cache.mkdir(parents=True, exist_ok=True)
    tarballs = sorted(cache.glob("mathjax-*.tgz"))
    if not tarballs:
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("the site needs a local MathJax: install npm (apt-get install npm), or put "
                               f"the npm package tarball ({MATHJAX_SPEC}) into {cache}")
        subprocess.run([npm, "pack", MATHJAX_SPEC, "--silent", "--pack-destination", str(cache)],
                       check=True, stdout=subprocess.DEVNULL)
        tarballs = sorted(cache.glob("mathjax-*.tgz"))
    target = static / "mathjax"
    with tarfile.open(tarballs[-1]) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("package/es5/") and m.isfile()]
        for m in members:
            m.name = m.name[len("package/es5/"):]
        tar.extractall(target, members=members, filter="data")
    return target


def build(out: Path = SITE_DIR, quiet: bool = True) -> Path:
    """Stage the sources, fetch MathJax, run Sphinx (HTML); return the folder of ``index.html``."""
    try:
        from sphinx.cmd.build import build_main
    except ImportError as exc:
        raise ImportError('the course website needs the docs extra: pip install -e ".[docs]"') from exc
    out = Path(out)
    if out.exists() and (out / ".buildinfo").exists():
        shutil.rmtree(out)  # a previous build: pages of removed sources must not linger
    src = stage(BUILD_DIR / "site-src")
    mathjax(src / "_static")
    os.environ.setdefault("COURSE_SITE_REPOSITORY", _github_url("", True).split("/tree/")[0])
    args = ["-b", "html", "-j", "auto", str(src), str(out), "-d", str(BUILD_DIR / "site-doctrees")]
    if build_main(args + (["-q"] if quiet else [])) != 0:
        raise RuntimeError(f"sphinx-build failed (run it again without -q: sphinx-build {' '.join(args)})")
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.teaching.site",
                                     description="Build the course website from the executed notebooks.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="stage the pages and build the HTML site (no notebook is executed)")
    b.add_argument("--out", type=Path, default=SITE_DIR, help=f"output folder (default {SITE_DIR})")
    b.add_argument("--verbose", action="store_true", help="show Sphinx's progress and warnings")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = build(args.out, quiet=not args.verbose)
    print(f"site built in {time.perf_counter() - start:.0f} s: {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
