"""Layering of the self-check framework and the exercise checkers (read from the source with ``ast``).

- ``course_lib/teaching/checks.py`` (framework and registry) imports nothing of the course;
- no import circle between the modules of ``course_lib/teaching`` (imports inside functions count);
- the checker modules, their shared helpers and the hidden tests use no ``_private`` name of another module
  (``from x import _y`` or ``x._y``): shared helpers are public in ``course_lib.teaching.exercises.common``;
- no function of the checkers or of the framework is longer than 80 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEACHING = ROOT / "course_lib" / "teaching"
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> tuple[set[str], dict[str, str], list[str]]:
    """(modules imported, local alias -> module, ``from x import _y`` of other modules) of one file."""
    course_modules = {_module_name(p) for p in (ROOT / "course_lib").rglob("*.py")}
    this = _module_name(path)
    package = this.split(".") if path.name == "__init__.py" else this.split(".")[:-1]
    imported, aliases, private = set(), {}, []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                imported.add(a.name)
                local = a.asname or a.name.split(".")[0]
                aliases[local] = a.name if a.asname else local
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            imported.add(base)
            for a in node.names:
                if f"{base}.{a.name}" in course_modules:
                    imported.add(f"{base}.{a.name}")
                    aliases[a.asname or a.name] = f"{base}.{a.name}"
                elif a.name.startswith("_") and not a.name.startswith("__"):
                    private.append(f"from {base} import {a.name}")
    return imported, aliases, private


def _private_uses(path: Path) -> list[str]:
    _, aliases, private = _imports(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and aliases[node.value.id].startswith("course_lib")
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            private.append(f"{node.value.id}.{node.attr}")
    return [f"{path.relative_to(ROOT)}: {p}" for p in private]


def test_checks_imports_nothing_of_the_course():
    imported, _, _ = _imports(TEACHING / "checks.py")
    assert not [m for m in imported if m.startswith("course_lib")], imported


def test_no_import_circle_in_teaching():
    modules = {_module_name(p): p for p in TEACHING.rglob("*.py")}
    graph = {m: {i for i in _imports(p)[0] if i in modules and i != m} for m, p in modules.items()}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, f"import circle: {' -> '.join(path[path.index(n):] + [n])}"
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_no_private_names_of_other_modules():
    files = [TEACHING / "checks.py", *sorted((TEACHING / "exercises").glob("*.py")),
             *sorted((ROOT / "grading" / "hidden").glob("*.py"))]
    problems = [p for f in files for p in _private_uses(f)]
    assert not problems, "use the public helpers of course_lib.teaching.exercises.common:\n" + "\n".join(problems)


def test_checker_functions_are_short():
    files = [TEACHING / "checks.py", *sorted((TEACHING / "exercises").glob("*.py"))]
    functions = [(f, n) for f in files for n in ast.walk(ast.parse(f.read_text()))
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    long = [f"{f.relative_to(ROOT)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for f, n in functions if n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"split these into named sub-checks (at most {MAX_FUNCTION_LINES} lines):\n" + "\n".join(long)
