"""The grader parses submissions in parallel threads (``--jobs``); CPython 3.11 < 3.11.9 can raise
``SystemError: AST constructor recursion depth mismatch`` when two threads run ``ast.parse`` at once
(gh-106905). ``notebook.parse_python`` serialises the parses; this hammers it from several threads."""

from concurrent.futures import ThreadPoolExecutor

from course_lib.teaching.notebook import parse_python

NESTED = "x = " + "[" * 40 + "1" + "]" * 40 + "\n" + "def f(a):\n    return ((a + 1) * (a - 1)) ** 2\n" * 20


def test_parse_python_is_safe_from_many_threads():
    with ThreadPoolExecutor(8) as pool:
        trees = list(pool.map(lambda _: parse_python(NESTED), range(400)))
    assert len(trees) == 400 and all(len(t.body) == 21 for t in trees)
    assert parse_python("1 + 2", mode="eval").body.op.__class__.__name__ == "Add"
