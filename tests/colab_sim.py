"""Driver of the Colab simulation (``tests/test_colab.py``): run with the Python of the clean virtual
environment, it executes each notebook given on the command line as Colab would.

For each notebook: a copy without outputs goes into its own empty folder (outside any checkout); a first
cell imports the stand-in ``google.colab`` (on Colab the module is imported when the runtime starts),
then nbclient runs the notebook top to bottom in fast mode with the kernel of this environment, so the
stamped setup cell pip-installs course_lib from the repository URL. One JSON line per notebook on stdout:
``{"notebook": ..., "ok": ..., "seconds": ..., "error": ..., "setup": <the setup cell's printed text>}``.

Standard library, nbformat and nbclient only: course_lib is not installed before the setup cell runs.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def run(notebook: Path, workdir: Path, timeout: int) -> dict:
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.cells.insert(0, nbformat.v4.new_code_cell("import google.colab  # imported at start-up on Colab"))
    folder = workdir / notebook.stem
    folder.mkdir(parents=True)
    start = time.perf_counter()
    result = {"notebook": notebook.stem, "ok": True, "error": ""}
    try:
        resources = {"metadata": {"path": str(folder)}}
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources=resources)
        client.execute()
    except Exception as exc:  # reported to the test, which fails with the message
        result.update(ok=False, error=str(exc)[-3000:])
    result["seconds"] = round(time.perf_counter() - start, 1)
    setup = nb.cells[2] if len(nb.cells) > 2 else None
    streams = [o for o in (setup.outputs if setup else []) if o.get("output_type") == "stream"]
    result["setup"] = "".join(o.get("text", "") for o in streams)
    return result


def main(argv: list[str]) -> int:
    workdir, timeout, notebooks = Path(argv[0]), int(argv[1]), [Path(p) for p in argv[2:]]
    for notebook in notebooks:
        print(json.dumps(run(notebook, workdir, timeout)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
