"""Your training run: the section of every notebook (01-08) in which the student trains a model.

Each such section starts with a markdown heading that contains :data:`HEADING` ("Your training run"),
names one or two knobs at the top of its first code cell, trains with ``course_lib.train.fit`` for a
budget in epochs (never wall-clock) and ends by comparing the student's model with the *shipped* model
on the same test data, plus a symmetry check of the student's model.

What the section costs is measured, not promised: ``benchmarks/student_runs.py NN`` runs the section's
cells at full settings on one CPU thread and stores the wall time with the machine and its load in
``benchmarks/results/student_runs.json``; :func:`measured` prints that line in the notebook.
"""

from __future__ import annotations

import json
import re

from course_lib.datasets import repo_file

__all__ = ["HEADING", "RESULTS", "BUDGET_SECONDS", "section_cells", "measured", "compare"]

#: the marker every notebook's section carries in its heading (tests/test_assign.py checks it)
HEADING = "Your training run"
#: where the measured times are stored
RESULTS = "benchmarks/results/student_runs.json"
#: what a section may cost at full settings on one CPU thread (issue 19: "<= 5 minutes, fast enough to try twice")
BUDGET_SECONDS = 300


def section_cells(nb) -> tuple[list[str], list[str]]:
    """``(code cells before the section, code cells of the section)`` of a notebook (nbformat), as sources.

    The section starts at the markdown cell whose first line is a heading containing :data:`HEADING` and ends
    at the next markdown heading of the same or a higher level (anywhere in a markdown cell). The stamped
    setup cell is left out. Raises ``ValueError`` when the notebook has no such heading.
    """
    before, cells, level = [], [], None
    for cell in nb.cells:
        levels = [len(m.group(1)) for m in re.finditer(r"^(#+) ", cell.source, flags=re.M)]
        if cell.cell_type == "markdown" and level is not None and levels and min(levels) <= level:
            break
        if cell.cell_type == "markdown" and levels and HEADING in cell.source.splitlines()[0]:
            level = levels[0]
        elif cell.cell_type == "code" and "course-setup" not in cell.metadata.get("tags", []):
            (before if level is None else cells).append(cell.source)
    if level is None:
        raise ValueError(f"no markdown heading containing {HEADING!r}")
    return before, cells


def measured(notebook: str) -> str:
    """One line: the measured cost of notebook ``notebook``'s training run at full settings.

    Read from :data:`RESULTS`; says how to measure it when there is no row yet.
    """
    try:
        runs = json.loads(repo_file(RESULTS).read_text())["runs"]
    except (FileNotFoundError, RuntimeError, KeyError, json.JSONDecodeError):
        runs = {}
    row = runs.get(notebook)
    if row is None:
        return f"not measured yet: python benchmarks/student_runs.py {notebook}"
    load = row["load_average"]
    return (f"measured at full settings: {row['seconds']:.0f} s ({row['seconds'] / 60:.1f} min) on one CPU thread "
            f"of a shared {row['cpu_count']}-core machine (load average {load[0]:.1f} before, "
            f"{row['load_after'][0]:.1f} after), {row['date']}")


def compare(rows: dict[str, dict[str, float]], title: str = "") -> str:
    """A small text table: one row per model, one column per metric (the same test data for all).

    ``rows = {"shipped model": {"test MAE": 0.1, ...}, "your model": {...}}``; returns the table as text.
    """
    metrics = list(next(iter(rows.values())))
    width = max(len(name) for name in rows) + 2
    lines = [title] if title else []
    lines.append(" " * width + "".join(f"{m:>22s}" for m in metrics))
    for name, values in rows.items():
        lines.append(f"{name:<{width}s}" + "".join(f"{_fmt(values.get(m)):>22s}" for m in metrics))
    return "\n".join(lines)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}"
