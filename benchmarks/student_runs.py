"""Measure the "Your training run" section of notebooks 01-08 at full settings, on one CPU thread.

For each notebook it executes, in one namespace, every code cell of the notebook source up to the section
whose markdown heading contains "Your training run" (untimed), then the code cells of that section (up to the
next heading of the same or a higher level), timed: the time a student waits for the section at full
settings. One row per notebook is written to the results file as soon as it is finished (resumable).

    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/student_runs.py 01 02 ...   # -> benchmarks/results/student_runs.json
    python benchmarks/student_runs.py 06 --quick                                # fast mode, temporary folder

With ``--store-outputs`` the text printed by the section's checked cells (``# NBVAL_CHECK_OUTPUT``) is stored in
``notebooks/NN_slug.ipynb`` where those cells have no output yet.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def store_printed_outputs(ipynb: Path, cells: list[str], printed: list[str]) -> None:
    """Store what each checked section cell (``# NBVAL_CHECK_OUTPUT``) printed at full settings as its output in
    the generated notebook, so that nbval can compare it before the next ``assign execute`` (which stores the
    outputs of every cell)."""
    import nbformat

    from course_lib.teaching import assign

    nb = nbformat.read(ipynb, as_version=4)
    wanted = {src.strip(): text for src, text in zip(cells, printed) if src.startswith("# NBVAL_CHECK_OUTPUT")}
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    for count, cell in enumerate(code, start=1):
        text = wanted.get(cell.source.strip())
        if text is not None and not cell.get("outputs"):
            text = text.replace(str(ROOT), "<repo>")
            cell["outputs"] = [nbformat.v4.new_output("stream", name="stdout", text=text)] if text else []
            cell["execution_count"] = count  # nbval refuses stored outputs of a cell that never ran
    ipynb.write_text(assign.notebook_text(nb), encoding="utf-8", newline="\n")


def run_notebook(number: str, store_outputs: bool = False) -> dict:
    import matplotlib.pyplot as plt

    from course_lib.teaching import assign
    from course_lib.teaching.student_run import section_cells

    (path,) = sorted((ROOT / "notebooks").glob(f"{number}_*.py"))
    setup, cells = section_cells(assign.read_source(path))
    ns: dict = {"__name__": "__student_run__"}
    for i, src in enumerate(setup):
        exec(compile(src, f"{path.name}:cell {i} before the section", "exec"), ns)
        plt.close("all")
    load_before = os.getloadavg()
    printed = []
    t0 = time.perf_counter()
    for i, src in enumerate(cells):
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            exec(compile(src, f"{path.name}:section cell {i}", "exec"), ns)
        plt.close("all")
        printed.append(buffer.getvalue())
        print(printed[-1], end="", flush=True)
    seconds = time.perf_counter() - t0
    if store_outputs:
        store_printed_outputs(path.with_suffix(".ipynb"), cells, printed)
    from course_lib.utils import machine_info

    info = machine_info()
    return {"notebook": path.stem, "command": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} "
            f"python benchmarks/student_runs.py {number}", "seconds": round(seconds, 1), "cells": len(cells),
            "load_average": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()], "cpu_count": info["cpu_count"],
            "threads": info["threads"], "machine": info,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebooks", nargs="+", help="notebook numbers, e.g. 01 06")
    p.add_argument("--quick", action="store_true", help="fast mode (COURSE_FAST=1), results to a temporary folder")
    p.add_argument("--out", default=None, help="results file (default benchmarks/results/student_runs.json)")
    p.add_argument("--store-outputs", action="store_true",
                   help="store what the section's cells print in notebooks/NN_slug.ipynb (cells without output)")
    args = p.parse_args(argv)
    if args.quick:
        os.environ["COURSE_FAST"] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("TQDM_DISABLE", "1" if args.store_outputs else "0")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out or (Path(tempfile.mkdtemp()) / "student_runs.json" if args.quick
                            else ROOT / "benchmarks/results/student_runs.json"))
    data = json.loads(out.read_text()) if out.exists() else {}
    data.update(command="OMP_NUM_THREADS=1 python benchmarks/student_runs.py " + " ".join(sys.argv[1:]),
                fast=bool(args.quick))
    data.setdefault("runs", {})
    for number in args.notebooks:
        row = run_notebook(number, store_outputs=args.store_outputs and not args.quick)
        data["runs"][number] = row
        out.write_text(json.dumps(data, indent=1) + "\n")
        print(f"{number}: {row['seconds']:.0f} s (load {row['load_average'][0]:.1f} -> {row['load_after'][0]:.1f})",
              flush=True)
    print("results:", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
