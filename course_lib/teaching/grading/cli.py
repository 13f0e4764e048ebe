"""Command line of the autograder: ``python -m course_lib.teaching.grading SUBMISSIONS_DIR --out RESULTS_DIR``."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from course_lib.teaching.grading.gradebook import STATUSES
from course_lib.teaching.grading.grader import grade
from course_lib.teaching.grading.sandbox import BoxLimits
from course_lib.teaching.grading.session import Limits

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m course_lib.teaching.grading", description=(
        "Grade submitted notebooks: run each in a fresh kernel, grade each exercise with the hidden tests in "
        "its own process, write RESULTS_DIR/gradebook.csv, gradebook.json and feedback/<student>.md."))
    p.add_argument("submissions", type=Path, metavar="SUBMISSIONS_DIR",
                   help="folder of <student>.ipynb files or <student>/ folders")
    p.add_argument("--out", type=Path, required=True, metavar="RESULTS_DIR", help="where the results go")
    p.add_argument("--hidden", type=Path, default=None, metavar="HIDDEN_DIR",
                   help="folder of the hidden test modules nbNN.py (default: none, public checks only)")
    p.add_argument("--cell-timeout", type=float, default=Limits.cell_timeout, metavar="S",
                   help=f"time limit of one notebook cell (default {Limits.cell_timeout:g})")
    p.add_argument("--notebook-timeout", type=float, default=Limits.notebook_timeout, metavar="S",
                   help=f"time limit of a whole notebook run (default {Limits.notebook_timeout:g})")
    p.add_argument("--exercise-timeout", type=float, default=Limits.exercise_timeout, metavar="S",
                   help=f"time limit of the hidden tests of one exercise (default {Limits.exercise_timeout:g})")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--fast", dest="fast", action="store_true", default=True,
                      help="run with COURSE_FAST=1 (default)")
    mode.add_argument("--full", dest="fast", action="store_false", help="run with COURSE_FAST=0")
    p.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel (default 1)")
    p.add_argument("--no-run", dest="run", action="store_false",
                   help="do not execute the notebooks (exercises and scans only; no per-cell report)")
    p.add_argument("--notebook", default=None, metavar="NN_slug",
                   help="grade every submission as this course notebook (default: recognise it)")
    p.add_argument("--notebooks", type=Path, default=None, metavar="DIR",
                   help="folder of the instructor sources NN_slug.py (default: notebooks/ of the repository)")
    p.add_argument("--network", choices=("auto", "namespace", "guard"), default="auto",
                   help="network isolation: a network namespace when available (auto), required, or the Python "
                        "socket guard only")
    p.add_argument("--memory-mb", type=int, default=BoxLimits.memory_mb, metavar="MB",
                   help=f"address-space limit of every sandboxed process (default {BoxLimits.memory_mb})")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier run in RESULTS_DIR (default: refuse)")
    p.add_argument("--unsafe", action="store_true",
                   help="grade even where the sandbox (bubblewrap) cannot start; every gradebook row says so")
    args = p.parse_args(argv)
    limits = Limits(args.cell_timeout, args.notebook_timeout, args.exercise_timeout, fast=args.fast,
                    box=BoxLimits(memory_mb=args.memory_mb))
    try:
        rows = grade(args.submissions, args.out, args.hidden, limits, jobs=args.jobs, run_notebooks=args.run,
                     notebook=args.notebook, notebook_dir=args.notebooks, network=args.network,
                     log=lambda m: print(m, flush=True), overwrite=args.overwrite, unsafe=args.unsafe)
    except (FileNotFoundError, FileExistsError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = Counter(r.status for r in rows)
    print(f"{len(rows)} row(s): " + ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s]))
    print(f"wrote {args.out / 'gradebook.csv'}, {args.out / 'gradebook.json'}, {args.out / 'feedback'}/")
    return 0
