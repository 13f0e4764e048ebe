"""The gradebook: rows, totals, per-student feedback in markdown, and the files of the results folder.

``gradebook.csv`` / ``gradebook.json`` (one row per student, notebook and exercise, columns
:data:`COLUMNS`, status one of :data:`STATUSES`), ``totals.csv``, ``runs.json`` and
``feedback/<student>.md``.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from course_lib.teaching.grading.child import cap_text
from course_lib.teaching.grading.course import CourseNotebook
from course_lib.teaching.grading.inputs import safe_name

if TYPE_CHECKING:
    from course_lib.teaching.grading.kernel import RunReport

__all__ = ["COLUMNS", "STATUSES", "Row", "Graded", "fmt", "csv_cell", "write_outputs", "STATUS_WORD", "feedback",
           "md_inline", "md_fence", "write_answers"]

COLUMNS = ("student", "notebook", "exercise", "points", "max_points", "status", "message")
STATUSES = ("pass", "partial", "fail", "error", "timeout", "missing", "flagged", "manual")


@dataclass
class Row:
    student: str
    notebook: str
    exercise: str
    points: float
    max_points: int
    status: str
    message: str
    details: list[str] = field(default_factory=list)  # feedback lines (not in the gradebook)
    output: str = ""  # what the student's code printed while graded (capped)
    answer: str = ""  # a short answer's text (status "manual": marked by hand from answers/)
    kind: str = "exercise"  # "exercise", "prediction" or "answer" (short answers: points kept apart)

    def record(self) -> dict:
        return {k: getattr(self, k) for k in COLUMNS}


@dataclass
class Graded:
    student: str
    notebook: str
    rows: list[Row]
    run: RunReport | None = None
    path: str = ""
    notes: list[str] = field(default_factory=list)


def fmt(x: float) -> str:
    return f"{x:.2f}"


def csv_cell(value) -> str:
    """A spreadsheet-safe CSV cell: text starting with ``= + - @``, a tab or a carriage return (a formula
    for Excel, LibreOffice, Google Sheets) gets a leading apostrophe."""
    text = str(value)
    return "'" + text if text[:1] in FORMULA_STARTS else text


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
MESSAGE_LIMIT = 4_000  # characters of a gradebook message (the CSV reader's default field limit is 131072)


def write_outputs(out: Path, results: list[Graded], course: dict[str, CourseNotebook],
                  run_info: dict | None = None) -> list[Row]:
    """Write the results folder ``out`` (see the module doc; ``run_info`` goes into ``run.json``)."""
    (out / "run.json").write_text(json.dumps(run_info or {}, indent=1) + "\n", encoding="utf-8")

    def order(r: Row):
        cnb = course.get(r.notebook)
        ids = [e.id for e in cnb.exercises] if cnb else []
        return (r.student, r.notebook, ids.index(r.exercise) if r.exercise in ids else len(ids), r.exercise)

    rows = sorted((r for g in results for r in g.rows), key=order)
    for r in rows:
        r.message = cap_text(" ".join(r.message.split()), MESSAGE_LIMIT)
        r.points = min(max(0.0, r.points), float(r.max_points))
        r.status = r.status if r.status in STATUSES else "error"
    with open(out / "gradebook.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([csv_cell(x) for x in (r.student, r.notebook, r.exercise, fmt(r.points), r.max_points,
                                              r.status, r.message)])
    records = [dict(r.record(), points=round(r.points, 2)) for r in rows]
    (out / "gradebook.json").write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    totals: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        t = totals.setdefault((r.student, r.notebook), [0.0, 0, 0])
        if r.kind == "answer":  # marked by hand (answered or not): kept apart from the auto-graded points
            t[2] += r.max_points
        else:
            t[0] += r.points
            t[1] += r.max_points
    with open(out / "totals.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(("student", "notebook", "points", "max_points", "manual_max_points"))
        for (student, nb), (pts, mx, manual) in sorted(totals.items()):
            w.writerow([csv_cell(student), csv_cell(nb), fmt(pts), mx, manual])
    write_answers(out, rows, course)
    runs = [{"student": g.student, "notebook": g.notebook, "submission": Path(g.path).name,
             **(g.run.record() if g.run else {"status": "not run", "message": "", "cells": [], "events": []})}
            for g in sorted(results, key=lambda g: (g.student, g.notebook))]
    (out / "runs.json").write_text(json.dumps(runs, indent=1) + "\n", encoding="utf-8")
    fb_dir = out / "feedback"
    fb_dir.mkdir(exist_ok=True)
    by_student: dict[str, list[Graded]] = {}
    for g in results:
        by_student.setdefault(g.student, []).append(g)
    for student, graded in sorted(by_student.items()):
        (fb_dir / f"{safe_name(student)}.md").write_text(feedback(student, graded, rows), encoding="utf-8")
    return rows


STATUS_WORD = {"pass": "passed", "partial": "partly passed", "fail": "failed", "error": "error",
               "timeout": "time limit", "missing": "missing", "flagged": "flagged for review",
               "manual": "marked by your instructor"}

ANSWER_LIMIT = 6_000  # characters of a short answer kept for marking


def write_answers(out: Path, rows: list[Row], course: dict[str, CourseNotebook]) -> None:
    """``answers.csv`` (one row per student and short answer, a blank ``points`` column to fill in) and
    ``answers/<notebook>.md`` (per question: the rubric, then every student's answer as a code block)."""
    manual = [r for r in rows if r.status == "manual"]
    with open(out / "answers.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(("student", "notebook", "question", "max_points", "points", "answer"))
        for r in manual:
            w.writerow([csv_cell(x) for x in (r.student, r.notebook, r.exercise, r.max_points, "",
                                              cap_text(r.answer, ANSWER_LIMIT))])
    folder = out / "answers"
    folder.mkdir(exist_ok=True)
    for slug in sorted({r.notebook for r in manual}):
        specs = {spec.id: spec for spec in course[slug].responses} if slug in course else {}
        lines = [f"# Short answers: {md_inline(slug)}", "",
                 "Mark each answer with the rubric and write the points into `answers.csv`.", ""]
        for question in dict.fromkeys(r.exercise for r in manual if r.notebook == slug):
            spec = specs.get(question)
            lines += [f"## {md_inline(question)} ({spec.points if spec else '?'} points)", "", "Rubric:", "",
                      *(spec.rubric.strip().split("\n") if spec and spec.rubric.strip() else ["(no rubric)"]), ""]
            for r in (r for r in manual if r.notebook == slug and r.exercise == question):
                lines += [f"### {md_inline(r.student)}", "",
                          *(md_fence(cap_text(r.answer, ANSWER_LIMIT)) if r.answer else ["(no answer)"]), ""]
        (folder / f"{safe_name(slug)}.md").write_text("\n".join(lines), encoding="utf-8")


def md_inline(text: str) -> str:
    """``text`` (a message, possibly with the student's own words) as one line of Markdown that renders as
    written: whitespace collapsed, no block syntax at the start (heading, list, quote, rule, table), no raw
    HTML outside code spans, and backticks kept as code spans only when they pair up."""
    text = " ".join(str(text).split())
    parts = text.split("`") if text.count("`") % 2 == 0 else [text.replace("`", "\\`")]
    parts = [p if k % 2 else p.replace("<", "\\<") for k, p in enumerate(parts)]
    text = "`".join(parts)
    if re.match(r"#{1,6}(\s|$)|[>*+=|-]", text):
        return "\\" + text
    return re.sub(r"^(\d{1,9})([.)])(?=\s|$)", r"\1\\\2", text)


def md_fence(text: str) -> list[str]:
    """``text`` as a fenced code block whose fence is longer than any run of backticks inside it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, text, fence]


def _points(r: Row) -> str:
    return "by hand" if r.status == "manual" else fmt(r.points)


def feedback(student: str, graded: list[Graded], rows: list[Row]) -> str:
    lines = [f"# Feedback for {md_inline(student)}", ""]
    grand, grand_max = 0.0, 0
    for g in sorted(graded, key=lambda g: g.notebook):
        mine = [r for r in rows if r.student == student and r.notebook == g.notebook]
        auto = [r for r in mine if r.kind != "answer"]
        pts, mx = sum(r.points for r in auto), sum(r.max_points for r in auto)
        grand, grand_max = grand + pts, grand_max + mx
        lines += [f"## {md_inline(g.notebook)}: {fmt(pts)} / {mx} points", ""]
        if g.run is not None:
            lines += [f"Notebook run: {md_inline(g.run.message)}.", ""]
        if g.notes:
            lines += [f"- note: {md_inline(n)}" for n in g.notes] + [""]
        lines += ["| exercise | points | result |", "|---|---|---|"]
        lines += [f"| {md_inline(r.exercise).replace('|', '&#124;')} | {_points(r)} / {r.max_points} | "
                  f"{STATUS_WORD.get(r.status, r.status)} |" for r in mine]
        lines.append("")
        previous = None
        for r in mine:
            same = r.message == previous and not r.details
            lines += [f"### {md_inline(r.exercise)}: {STATUS_WORD.get(r.status, r.status)} "
                      f"({_points(r)} / {r.max_points})", "", "Same as above." if same else md_inline(r.message), ""]
            previous = r.message
            if r.details and r.status != "pass":
                lines += ["What failed (messages of the checks; `[label]` names the test cases):", ""]
                lines += [f"- {md_inline(d)}" for d in r.details[:30]]
                if len(r.details) > 30:
                    lines.append(f"- ... and {len(r.details) - 30} more")
                lines.append("")
            if r.output.strip() and r.status != "pass":
                lines += ["Output of your code while it was graded (capped):", "",
                          *md_fence(cap_text(r.output.strip(), 2000)), ""]
    lines += [f"**Total: {fmt(grand)} / {grand_max} points**", "",
              "The public self-checks in your notebook are a subset of the tests the grader runs (other seeds and "
              "sizes, more symmetry transforms); each exercise cell is run on its own with the notebook's imports.",
              ""]
    return "\n".join(lines)
