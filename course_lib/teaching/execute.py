"""Executed notebooks: run the generated ``notebooks/NN_slug.ipynb`` in full mode and store their outputs.

Run it from the repository root (it takes a while: about 8 minutes for all nine notebooks on a quiet
2-core CPU machine; one line per notebook as it goes)::

    python -m course_lib.teaching.assign execute            # every notebook, full mode (COURSE_FAST=0)
    python -m course_lib.teaching.assign execute 02 05      # some notebooks (number or slug)
    python -m course_lib.teaching.assign execute --stale    # only those with a code cell not yet executed

Each notebook is written as soon as it has run (an interrupted run resumes with ``--stale``); a notebook
that fails is left as it was and reported, and the command exits 1. The outputs are what GitHub,
Colab and the course website show, and what nbval compares the cells marked ``# NBVAL_CHECK_OUTPUT``
with. ``sync`` keeps the outputs of every cell whose source did not change (see
:func:`course_lib.teaching.assign.keep_outputs`); student copies never carry outputs.

Figures are stored as PNG at :data:`FIGURE_DPI` dots per inch; progress bars are switched off
(``TQDM_DISABLE=1``) and absolute paths in the outputs are replaced by ``<repo>`` and ``<python>``,
so the stored notebooks do not depend on the machine that ran them.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import nbformat

from course_lib.files import REPO_ROOT

__all__ = ["FIGURE_DPI", "strip_remote_stylesheets", "execute_notebook", "is_executed", "select", "execute_all"]

#: Resolution of the stored figures (matplotlib's default is 100; 80 keeps the notebooks small).
FIGURE_DPI = 80

_PREAMBLE = f"""\
%config InlineBackend.figure_formats = ["png"]
import matplotlib
matplotlib.rcParams["figure.dpi"] = {FIGURE_DPI}
"""

_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# matplotlib's HTML animations link Font Awesome 4 from a CDN; their buttons use the page's own icons
_REMOTE_STYLESHEET_RE = re.compile(r'<link rel="stylesheet"\s+href="https?://[^"]*"\s*/?>\n?')


def strip_remote_stylesheets(text: str) -> str:
    """``text`` (an HTML output) without ``<link rel="stylesheet">`` tags that load from the internet."""
    return _REMOTE_STYLESHEET_RE.sub("", text)


def is_executed(nb) -> bool:
    """True when every code cell of ``nb`` has an execution count (the notebook ran to the end)."""
    return all(c.get("execution_count") for c in nb.cells if c.get("cell_type") == "code")


def _sanitize_text(text: str) -> str:
    for prefix, name in ((str(REPO_ROOT), "<repo>"), (sys.prefix, "<python>"), (str(Path.home()), "~")):
        text = text.replace(prefix, name)
    return text


def _clean_outputs(outputs) -> list:
    """Outputs as stored: no widget views (progress bars), no machine-specific paths, no metadata noise."""
    kept = []
    for out in outputs:
        if out.get("output_type") == "stream":
            out["text"] = _sanitize_text("".join(out.get("text", "")))
        elif out.get("output_type") in ("display_data", "execute_result"):
            data = out.get("data", {})
            data.pop(_WIDGET_MIME, None)
            if not data:
                continue
            for mime in ("text/plain", "text/html"):
                if mime in data:
                    data[mime] = _sanitize_text("".join(data[mime]))
            if "text/html" in data:
                data["text/html"] = strip_remote_stylesheets(data["text/html"])
        elif out.get("output_type") == "error":
            out["traceback"] = [_sanitize_text(line) for line in out.get("traceback", [])]
        kept.append(out)
    return kept


def execute_notebook(path: Path, timeout: int = 1800) -> nbformat.NotebookNode:
    """Run the notebook ``path`` top to bottom in full mode (working directory: its folder) and return it
    with the outputs stored (the cells themselves unchanged). Raises ``nbclient`` errors on failure."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    run = nbformat.from_dict(nb)
    run.cells.insert(0, nbformat.v4.new_code_cell(_PREAMBLE))
    env = {"COURSE_FAST": "0", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}  # figures inline even where Agg is set
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the environment of this process
    try:
        client = NotebookClient(run, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        client.execute()
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    for cell, done in zip(nb.cells, run.cells[1:]):
        if cell.get("cell_type") == "code":
            cell["outputs"] = _clean_outputs(done.get("outputs", []))
            cell["execution_count"] = done.get("execution_count") - 1 if done.get("execution_count") else None
    return nb


def select(paths: list[Path], wanted: list[str], stale: bool) -> list[Path]:
    """The notebooks to run: those named in ``wanted`` (number ``"02"`` or slug; all when empty), and with
    ``stale`` only those not fully executed yet."""
    chosen = [p for p in paths if not wanted or any(p.stem == w or p.stem[:2] == w for w in wanted)]
    unknown = [w for w in wanted if not any(p.stem == w or p.stem[:2] == w for p in paths)]
    if unknown:
        raise SystemExit(f"no notebook {', '.join(unknown)} (give a number such as 02 or a slug)")
    if stale:
        chosen = [p for p in chosen if not is_executed(nbformat.read(p, as_version=4))]
    return chosen


def execute_all(paths: list[Path], write) -> int:
    """Execute ``paths`` one after the other, printing a line per notebook; ``write(path, nb)`` stores
    each executed notebook as soon as it ran. Returns the number of notebooks that failed."""
    failed = 0
    total = time.perf_counter()
    for i, path in enumerate(paths, 1):
        print(f"[{i}/{len(paths)}] {path.stem}: running (full mode) ...", flush=True)
        start = time.perf_counter()
        try:
            nb = execute_notebook(path)
        except Exception as exc:  # report, leave the stored notebook as it was, go on with the next one
            failed += 1
            first = str(exc).strip().splitlines()[-1:] or [type(exc).__name__]
            print(f"[{i}/{len(paths)}] {path.stem}: FAILED after {time.perf_counter() - start:.0f} s: {first[0]}",
                  flush=True)
            continue
        write(path, nb)
        figures = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
        size = path.stat().st_size / 1024
        print(f"[{i}/{len(paths)}] {path.stem}: done in {time.perf_counter() - start:.0f} s, {figures} figure(s), "
              f"{size:.0f} KiB", flush=True)
    print(f"{len(paths) - failed} of {len(paths)} notebook(s) executed in {time.perf_counter() - total:.0f} s"
          + (f"; {failed} failed (rerun them with --stale)" if failed else ""), flush=True)
    return failed
