"""Grading: each submission (copy, notebook run, static scan, one process per exercise) and the whole folder.

:func:`grade` is the entry point (the command line is :mod:`course_lib.teaching.grading.cli`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from course_lib.teaching.grading.course import (
    ExerciseSpec,
    Located,
    ResponseSpec,
    check_call_pattern,
    find_exercise_cell,
    identify,
    load_course,
    read_notebook,
    submission_imports,
)
from course_lib.teaching.grading.gradebook import Graded, Row, fmt, write_outputs
from course_lib.teaching.grading.inputs import Skipped, Submission, find_submissions, read_submission, safe_name
from course_lib.teaching.grading.kernel import run_notebook
from course_lib.teaching.grading.library import LibraryGuard
from course_lib.teaching.grading.runner import ExerciseRunner
from course_lib.teaching.grading.scan import import_aliases, scan_code
from course_lib.teaching.grading.session import Limits, Session
from course_lib.teaching.notebook import answer_text, cell_source, defined_names, read_prediction

__all__ = ["summarize", "merge_cases", "Grader", "grade", "dedupe", "response_rows"]


def summarize(res: dict) -> tuple[str, str, float, list[str]]:
    """status, message, fraction, details of a child result of status "checked"."""
    failed = res.get("failed", [])
    details = merge_cases(failed)
    n_passed, n_total = res.get("n_passed", 0), res.get("n_total", 0)
    cases = res.get("n_cases", 0)
    in_cases = f" in {cases} test cases" if cases > 1 else ""
    if res.get("not_implemented"):
        return "fail", "not implemented yet (the stub still raises NotImplementedError)", 0.0, details
    if res.get("error"):
        msg = f"{res['error']} (after {n_passed} passed checks)" if n_passed else res["error"]
        return "error", msg, 0.0, details
    fraction = float(res.get("fraction", 0.0))
    if fraction >= 1.0 and not failed:
        return "pass", f"all {n_total} checks passed{in_cases}", 1.0, details
    head = f"{n_passed}/{n_total} checks passed{in_cases}"
    first = failed[0] if failed else "a test case stopped early"
    return ("partial" if fraction > 0 else "fail"), f"{head}; first problem: {first}", fraction, details


def merge_cases(failed: list[str]) -> list[str]:
    """Each failure message once, whatever the test cases it came from (in order of first appearance).

    Messages of :func:`~course_lib.teaching.grading.api.run_cases` start with ``[case label]``; one
    mistake seen in three cases becomes one line that names the three cases.
    """
    cases: dict[str, list[str]] = {}
    for m in failed:
        label, text = ("", m)
        if m.startswith("[") and "] " in m:
            label, text = m[1:].split("] ", 1)
        cases.setdefault(text, []).append(label)
    details = []
    for text, labels in cases.items():
        named = list(dict.fromkeys(x for x in labels if x))
        where = f" [{'; '.join(named)}]" if named else ""
        details.append(text + where + (f" (x{len(labels)})" if len(labels) > 1 and not named else ""))
    return details


class Grader:
    def __init__(self, session: Session, forced: str | None, log: Callable[[str], None] | None = None):
        self.s = session
        self.forced = forced
        self.log = log or (lambda _msg: None)

    def grade(self, sub: Submission) -> Graded:
        """The graded submission. An internal grader error (an exception of the grader's own code, never a
        verdict on the student's work) is logged and the submission graded once more from the start, in a new
        folder and new sandboxes; a second one becomes the submission's row "internal grader error"."""
        try:
            return self._grade(sub)
        except Exception as exc:  # noqa: BLE001 - one submission must never stop the others
            first = self._internal_error(sub, exc, "grading it again from the start")
        try:
            g = self._grade(sub)
        except Exception as exc:  # noqa: BLE001
            problem = self._internal_error(sub, exc, "again: reported")
            slug = self.forced or "?"
            return Graded(sub.student, slug, [Row(sub.student, slug, "?", 0.0, 0, "error", problem)],
                          path=str(sub.path), notes=[f"the first try failed too ({first})"])
        g.notes.append(f"the grader failed once on this submission ({first}) and graded it again from the start; "
                       "these results are the second try's")
        return g

    def _internal_error(self, sub: Submission, exc: Exception, then: str) -> str:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
        problem = f"internal grader error: {type(exc).__name__}: {exc}{where}"
        self.log(f"  {sub.student} ({sub.path.name}): {problem}; {then}")
        return problem

    def _error_rows(self, student: str, slug: str | None, message: str) -> list[Row]:
        if slug is None:
            return [Row(student, "?", "?", 0.0, 0, "error", message + " (and the course notebook could not be "
                        "recognised: pass --notebook NN_slug)")]
        return [Row(student, slug, e.id, 0.0, e.points, "error", message) for e in self.s.course[slug].exercises]

    def _grade(self, sub: Submission) -> Graded:
        try:
            data = read_submission(sub.path)
        except ValueError as exc:
            return Graded(sub.student, self.forced or "?", self._error_rows(sub.student, self.forced, str(exc)),
                          path=str(sub.path))
        text = data.decode("utf-8", "replace")
        nb, problem = read_notebook(data)
        slug = self.forced or identify(text + " " + sub.path.name, self.s.course)
        if nb is None:
            return Graded(sub.student, slug or "?", self._error_rows(sub.student, slug, problem), path=str(sub.path))
        if slug is None:
            return Graded(sub.student, "?", self._error_rows(
                sub.student, None, "no exercise of a course notebook found in this notebook"), path=str(sub.path))
        cnb = self.s.course[slug]
        work = Path(tempfile.mkdtemp(prefix="sub-", dir=self.s.tmp))
        (work / "run").mkdir()
        (work / "run" / "submission.ipynb").write_bytes(data)

        cells = nb.cells
        located = {e.id: find_exercise_cell(cells, e.id, e.name) for e in cnb.exercises}
        exercise_of_cell = self._exercise_of_cell(cells, cnb.exercises, located)
        order = [located[e.id].index for e in cnb.exercises if located[e.id].index is not None]
        notes = []
        if order != sorted(order):
            notes.append("the exercise cells are not in the order of the distributed notebook")

        # static scan: exercise cells, and other code cells the student added or changed
        aliases = import_aliases([cell_source(c) for c in cells if c.get("cell_type") == "code"])
        global_flags = self._scan_other_cells(cells, cnb.student_sources, located, aliases)

        lib = None if self.s.sandboxed else self.s.student_library(work)  # the sandbox binds the pristine copy
        run = None
        if self.s.run_notebooks:
            run = run_notebook(self.s, nb, work, lib)
            self._save_executed(sub, slug, nb)
        run_flags: dict[str, list[str]] = {}
        for index, reason in (run.events if run else []):
            target = exercise_of_cell.get(index)
            if target is None:
                global_flags.append(f"{reason} (notebook run, cell {index})" if index >= 0 else
                                    f"{reason} (notebook run)")
            else:
                run_flags.setdefault(target, []).append(reason)

        setup = {"student_lib": str(lib.root.parent if lib else self.s.pristine.parent),
                 "protected": self.s.protected(lib), "hidden_dir": str(self.s.hidden) if self.s.hidden else None,
                 "checker_module": f"course_lib.teaching.exercises.nb{cnb.number}", "instructor_imports": cnb.imports}
        hidden = self.s.hidden / f"nb{cnb.number}.py" if self.s.hidden else None
        runner = ExerciseRunner(self.s, work, setup, hidden if hidden is not None and hidden.is_file() else None)
        try:
            imports = submission_imports(cells, cnb.imports)
            rows = [self._grade_exercise(sub, cnb, e, located[e.id], aliases, imports, runner, lib,
                                         global_flags, run_flags.get(e.id, [])) for e in cnb.exercises]
        finally:
            runner.close()
        rows += response_rows(sub.student, cnb, cells, exercise_of_cell)
        return Graded(sub.student, slug, rows, run, str(sub.path), notes)

    @staticmethod
    def _exercise_of_cell(cells, exercises: list[ExerciseSpec], located: dict[str, Located]) -> dict[int, str]:
        """``{cell index: exercise id}`` of the exercise cells and of their check cells."""
        exercise_of_cell = {}
        for e in exercises:
            loc = located[e.id]
            if loc.index is not None:
                exercise_of_cell[loc.index] = e.id
            check_re = check_call_pattern(e.id)
            for i, c in enumerate(cells):
                if c.get("cell_type") == "code" and check_re.search(cell_source(c)):
                    exercise_of_cell.setdefault(i, e.id)
        return exercise_of_cell

    @staticmethod
    def _scan_other_cells(cells, student_sources: set[str], located: dict[str, Located], aliases) -> list[str]:
        """Static-scan reasons of the code cells that are not exercise cells and that the student added or changed."""
        exercise_cells = {loc.index for loc in located.values() if loc.index is not None}
        global_flags = []
        for i, c in enumerate(cells):
            if c.get("cell_type") != "code" or i in exercise_cells:
                continue
            src = cell_source(c)
            if src.strip() in student_sources or not src.strip():
                continue
            global_flags += [f"cell {i} (not an exercise cell) {r}" for r in scan_code(src, aliases)]
        return global_flags

    def _grade_exercise(self, sub, cnb, e: ExerciseSpec, loc: Located, aliases, submission_imports,
                        runner: ExerciseRunner, lib: LibraryGuard, global_flags: list[str],
                        run_flags: list[str]) -> Row:
        row = Row(sub.student, cnb.slug, e.id, 0.0, e.points, "missing", "")
        notes = list(loc.notes)
        if loc.index is None or loc.how == "renamed":
            row.message = loc.problem
            static = global_flags + run_flags
            if static:
                row.status, row.message = "flagged", "flagged for review: " + "; ".join(static)
            row.details = notes
            return row
        static = scan_code(loc.source, aliases, exercise_cell=True)
        hidden = self.s.hidden / f"nb{cnb.number}.py" if self.s.hidden else None
        job = {"exercise": e.id, "slug": cnb.slug, "target": e.target, "name": e.name,
               "submission_imports": submission_imports, "cell": loc.source,
               "hidden": str(hidden) if hidden is not None and hidden.is_file() else None}
        res = runner.run(job, f"ex-{safe_name(e.id)}")
        lib_changes = [f"changed the course_lib file {rel}" for rel in lib.verify()] if lib else []
        flags = list(dict.fromkeys(static + global_flags + run_flags + res.get("flags", []) + lib_changes))
        notes += res.get("notes", [])
        notes += [f"a hidden test case crashed on this answer and scored 0 (instructor: please look at it): {t}"
                  for t in res.get("test_errors", [])]
        row.output = scrub(res.get("output", ""), self.s.hidden_lines(cnb.number))
        status = res.get("status")
        if status == "checked":
            status, message, fraction, details = summarize(res)
            row.details = details
            if res.get("source", "").startswith("public"):
                notes.append(f"graded with the {res['source']}")
            if status in ("pass", "partial"):
                row.points = min(float(e.points), max(0.0, round(e.points * fraction, 2)))
        else:
            message = res.get("message", "")
        row.status, row.message = status, message
        if flags:
            tested = {"checked": f" (before the flag: {row.message})",
                      "flagged": " (the hidden tests were not run)"}.get(res.get("status"), "")
            row.status, row.points = "flagged", 0.0
            row.message = "flagged for review: " + "; ".join(flags) + tested
        if notes:
            row.message += " [note: " + "; ".join(notes) + "]"
        return row

    def _save_executed(self, sub: Submission, slug: str, nb) -> None:
        import nbformat

        try:
            dest = self.s.out / "executed" / safe_name(sub.student) / f"{slug}.ipynb"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(nbformat.writes(nb), encoding="utf-8")
        except Exception:  # noqa: BLE001, S110 - the executed copy is a convenience
            pass


def _find_response(cells, spec: ResponseSpec, taken: dict[int, str]):
    """The submitted cell of a prediction or short answer: by its metadata, else (a prediction whose metadata
    was lost) the one code cell that assigns the prediction's variable and nothing else."""
    key = "prediction" if spec.kind == "prediction" else "answer"
    for cell in cells:
        if cell.get("metadata", {}).get(key) == spec.id:
            return cell
    if spec.kind == "prediction" and spec.name:
        matches = [c for i, c in enumerate(cells) if i not in taken and c.get("cell_type") == "code"
                   and defined_names(cell_source(c)) == [spec.name]]
        return matches[0] if len(matches) == 1 else None
    return None


def response_rows(student: str, cnb, cells, taken: dict[int, str]) -> list[Row]:
    """Rows of the predictions (read, never run: points for a committed prediction) and of the short answers
    (status "manual": collected for marking by hand)."""
    rows = []
    for spec in cnb.responses:
        cell = _find_response(cells, spec, taken)
        if spec.kind == "prediction":
            if cell is None:
                rows.append(Row(student, cnb.slug, spec.id, 0.0, spec.points, "missing", "prediction cell not found",
                                kind="prediction"))
                continue
            value, problem = read_prediction(cell_source(cell), spec.choices)
            ok = problem is None
            rows.append(Row(student, cnb.slug, spec.id, float(spec.points) if ok else 0.0, spec.points,
                            "pass" if ok else "missing", f"prediction: {value}" if ok else problem, kind="prediction"))
            continue
        text = answer_text(cell_source(cell)) if cell is not None and cell.get("cell_type") == "markdown" else ""
        words = len(text.split())
        message = (f"short answer ({words} words): marked by hand with the rubric (answers/{cnb.slug}.md)" if text
                   else "no short answer written")
        rows.append(Row(student, cnb.slug, spec.id, 0.0, spec.points, "manual" if text else "missing", message,
                        answer=text, kind="answer"))
    return rows


def grade(submissions, out, hidden=None, limits: Limits | None = None, jobs: int = 1, run_notebooks: bool = True,
          notebook: str | None = None, notebook_dir=None, network: str = "auto",
          log: Callable[[str], None] | None = None, overwrite: bool = False, unsafe: bool = False) -> list[Row]:
    """Grade every submission of ``submissions`` into ``out``; return the gradebook rows (sorted).

    The results are written into a new folder next to ``out`` and swapped in when complete; an ``out``
    that holds an earlier run is replaced only with ``overwrite``.
    """
    limits = limits or Limits()
    log = log or (lambda _msg: None)
    submissions, out = Path(submissions), Path(out)
    if not submissions.is_dir():
        raise FileNotFoundError(f"no submissions folder {submissions}")
    hidden = Path(hidden).resolve() if hidden else None
    if hidden is not None and not hidden.is_dir():
        raise FileNotFoundError(f"no hidden-tests folder {hidden}")
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite):
        raise FileExistsError(f"{out} holds the results of an earlier run (or is not a folder): choose a new "
                              "--out folder, or pass --overwrite to replace them")
    course = load_course(notebook_dir)
    if not course:
        raise RuntimeError("no notebook with exercises found (notebooks/NN_slug.py); pass --notebooks DIR")
    forced = _forced_notebook(notebook, course)
    out.parent.mkdir(parents=True, exist_ok=True)
    subs, skipped = find_submissions(submissions, exclude=[out])
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="grade-") as tmp:  # mode 0700, one per run
            session = Session(course, hidden, limits, staging, run_notebooks, network, Path(tmp), unsafe=unsafe)
            session.submissions = submissions
            results = _grade_all(session, forced, subs, skipped, jobs, log)
        rows = write_outputs(staging, dedupe(results), course, {
            "sandbox": session.describe(), "skipped": [vars(k) for k in skipped],
            "limits": {**{k: v for k, v in vars(limits).items() if k != "box"}, "box": vars(limits.box)}})
        _swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return rows


def _forced_notebook(notebook: str | None, course) -> str | None:
    if not notebook:
        return None
    matches = [s for s in course if s == notebook or s[:2] == notebook[:2] and len(notebook) <= 2]
    if len(matches) != 1:
        raise ValueError(f"--notebook {notebook!r}: choose one of {sorted(course)}")
    return matches[0]


def _grade_all(session: Session, forced, subs: list[Submission], skipped: list[Skipped], jobs: int,
               log) -> list[Graded]:
    log(f"{len(subs)} submission(s), {len(skipped)} skipped entr{'y' if len(skipped) == 1 else 'ies'}; "
        f"{session.describe()}; {'fast' if session.limits.fast else 'full'} mode; hidden tests: "
        f"{session.hidden or 'none (public checks only)'}")
    for k in skipped:
        log(f"  skipped {k.name}: {k.reason}")
    grader = Grader(session, forced, log)

    def one(sub: Submission) -> Graded:
        t0 = time.monotonic()
        g = grader.grade(sub)
        pts = sum(r.points for r in g.rows if r.kind != "answer")
        mx = sum(r.max_points for r in g.rows if r.kind != "answer")
        log(f"  {sub.student} ({sub.path.name}): {g.notebook} {fmt(pts)}/{mx} "
            f"[{', '.join(r.status for r in g.rows)}] in {time.monotonic() - t0:.0f} s")
        return g

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(one, subs))
    results += [Graded(k.student, forced or "?", [Row(k.student, forced or "?", "?", 0.0, 0, "error",
                                                      f"{k.name} skipped: {k.reason}")], path=k.name)
                for k in skipped if k.notebook_like]
    changed = session.library.changed()
    if changed:
        log(f"warning: the installed course_lib changed while grading ({', '.join(changed[:5])}); the grading "
            "used the copy taken at the start")
    if not session.sandboxed:
        for g in results:
            g.notes.insert(0, "UNSAFE: graded without the sandbox (--unsafe)")
            for r in g.rows:
                r.message = "[UNSAFE: no sandbox] " + r.message
    return results


def _swap_in(staging: Path, out: Path) -> None:
    """Make ``staging`` the results folder ``out``: renames on one file system (the earlier results, if any,
    are removed only after the new ones are in place)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, old / "results")
    os.rename(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def scrub(text: str, secret_lines: frozenset[str]) -> str:
    """``text`` without the lines that are lines of the hidden tests (a student's output never shows them)."""
    if not secret_lines or not text:
        return text
    return "\n".join("[line removed by the autograder]" if line.strip() in secret_lines else line
                     for line in text.split("\n"))


def dedupe(results: list[Graded]) -> list[Graded]:
    """One graded submission per (student, notebook): the last by path; the others are noted."""
    keep: dict[tuple[str, str], Graded] = {}
    dropped: dict[tuple[str, str], list[str]] = {}
    for g in sorted(results, key=lambda g: g.path):
        key = (g.student, g.notebook)
        if key in keep and g.notebook != "?":
            dropped.setdefault(key, []).append(Path(keep[key].path).name)
        if key not in keep or g.notebook != "?":
            keep[key] = g
    for key, names in dropped.items():
        g = keep[key]
        note = f"several submissions for this notebook: graded {Path(g.path).name}, ignored {', '.join(names)}"
        g.notes.append(note)
        for r in g.rows:
            r.message += f" [note: {note}]"
    return list(keep.values())
