"""The grader parses submissions in parallel threads (``--jobs``). CPython 3.11 can raise a spurious ``SystemError: AST
constructor recursion depth mismatch`` (gh-106905, seen rarely in threaded programs; CI saw it once, as an "internal
grader error" for one valid grading sample; and, most likely, once more on 2026-12-06, for a red-team submission
failed in 0 s, whose message was not printed: the kernel's startup file was then parsed without the lock, beside a
submission parsed in the other thread). It is too rare to reproduce on demand, so the tests check the cure instead:
every parse of the course toolkit goes through ``notebook.parse_python``, which holds one lock and retries on that
error."""

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from course_lib.teaching import notebook
from course_lib.teaching.notebook import parse_python

TOOLKIT = Path(notebook.__file__).resolve().parent


def test_the_toolkit_parses_only_through_the_locked_helper():
    offenders = [f"{p.relative_to(TOOLKIT)}:{i}" for p in sorted(TOOLKIT.rglob("*.py"))
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"\bast\.parse\(", line)
                 and not (p.name == "notebook.py" and "return ast.parse(source, mode=mode)" in line)]
    assert offenders == [], f"use notebook.parse_python (thread-safe) instead of ast.parse: {offenders}"


def test_parse_python_holds_the_lock_and_parses():
    assert isinstance(notebook._AST_LOCK, type(threading.Lock()))
    with ThreadPoolExecutor(4) as pool:
        trees = list(pool.map(lambda _: parse_python("def f(a):\n    return [[a]]\n"), range(50)))
    assert all(t.body[0].name == "f" for t in trees)
    assert parse_python("1 + 2", mode="eval").body.op.__class__.__name__ == "Add"
    notebook._AST_LOCK.acquire()  # a parse waits for the lock: nothing parses behind it
    try:
        result = []
        t = threading.Thread(target=lambda: result.append(parse_python("x = 1")))
        t.start()
        t.join(0.2)
        assert t.is_alive() and not result
    finally:
        notebook._AST_LOCK.release()
    t.join(10)
    assert len(result) == 1


def test_parse_python_retries_the_spurious_error_and_nothing_else(monkeypatch):
    calls = []

    def flaky(source, mode="exec"):
        calls.append(source)
        if len(calls) == 1:
            raise SystemError("AST constructor recursion depth mismatch (before=30, after=29)")
        return real(source, mode=mode)

    real = notebook.ast.parse
    monkeypatch.setattr(notebook.ast, "parse", flaky)
    assert parse_python("y = 2").body[0].targets[0].id == "y" and len(calls) == 2
    monkeypatch.setattr(notebook.ast, "parse", lambda s, mode="exec": (_ for _ in ()).throw(SystemError("other")))
    try:
        parse_python("z = 3")
    except SystemError as err:
        assert str(err) == "other"
    else:
        raise AssertionError("a different SystemError must not be swallowed")


def test_the_kernel_startup_file_is_parsed_behind_the_lock():
    from course_lib.teaching.grading.guard import kernel_startup_source

    notebook._AST_LOCK.acquire()
    try:
        result = []
        t = threading.Thread(target=lambda: result.append(
            kernel_startup_source([], [], "/tmp/audit.log", parse=parse_python)))
        t.start()
        t.join(0.2)
        assert t.is_alive() and not result  # it waits for the lock that every other parse holds
    finally:
        notebook._AST_LOCK.release()
    t.join(10)
    assert "install_guard(" in result[0] and "fork_safe_kernel()" in result[0]
    # and the grader's own calls (the notebook run, in the worker threads) pass the locked parser
    calls = [f"{p.relative_to(TOOLKIT)}:{i}: {line.strip()}"
             for p in sorted(TOOLKIT.rglob("*.py")) if p.name != "guard.py"
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"\b(kernel_startup_source|guard_source)\(", line)]
    assert calls and all("parse=parse_python" in c for c in calls), calls
