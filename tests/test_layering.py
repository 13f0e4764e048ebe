"""The architecture of ``course_lib``, enforced: two layers, no private imports, no import cycles, short functions.

- the **science library** (every module of ``course_lib`` outside ``course_lib.teaching``) never imports the
  **course toolkit** (``course_lib.teaching``), not even inside a function;
- no module imports another module's ``_private`` names (``from x import _y``, or ``x._y`` on an imported
  course module);
- the import graph of ``course_lib`` (every ``import`` statement, at module level or inside a function) has no
  cycle;
- no function of ``course_lib`` is 80 lines or longer;
- the self-check framework (``course_lib/teaching/checks.py``) imports nothing of the course, and the hidden
  tests (``grading/hidden``) use no ``_private`` name of the course either.

The checks read the source with :mod:`ast` and import nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import course_lib

PACKAGE_DIR = Path(course_lib.__file__).resolve().parent
TOOLKIT = "course_lib.teaching"
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), filename=str(path)) for name, path in MODULES.items()}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module name of ``from <node.module> import ...`` written in ``module``."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(module: str) -> list[tuple[int, str, str | None]]:
    """Every import of ``module``: ``(line, imported module, imported name or None)``.

    ``from pkg import sub`` where ``pkg.sub`` is a module counts as an import of that module.
    """
    out = []
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.append((node.lineno, sub, None) if sub in MODULES else (node.lineno, target, alias.name))
    return out


def _course_imports(module: str) -> set[str]:
    return {target for _, target, _ in _imports(module) if target in MODULES and target != module}


def test_the_package_has_two_layers():
    assert TOOLKIT in MODULES, "the course toolkit package course_lib.teaching is missing"
    assert "LAYERS" in vars(course_lib), "course_lib/__init__.py names the layers in LAYERS"
    science = [m for m in MODULES if not m.startswith(TOOLKIT)]
    assert len(science) > 10 and len(MODULES) - len(science) > 5


def test_science_never_imports_the_toolkit():
    bad = [
        f"{MODULES[m].relative_to(PACKAGE_DIR.parent)}:{line} imports {target}"
        for m in MODULES
        if not m.startswith(TOOLKIT)
        for line, target, _ in _imports(m)
        if target == TOOLKIT or target.startswith(TOOLKIT + ".")
    ]
    assert not bad, "the science library must not import the course toolkit:\n" + "\n".join(bad)


def _private(name: str | None) -> bool:
    return bool(name) and name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_attribute_uses(module: str) -> list[str]:
    """``alias._name`` where ``alias`` is bound by an import of another course module."""
    aliases: dict[str, str] = {}
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in MODULES and a.asname:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for a in node.names:
                if f"{target}.{a.name}" in MODULES:
                    aliases[a.asname or a.name] = f"{target}.{a.name}"
    hits = []
    for node in ast.walk(TREES[module]):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and aliases[node.value.id] != module
            and _private(node.attr)
        ):
            hits.append(f"{MODULES[module].relative_to(PACKAGE_DIR.parent)}:{node.lineno} uses "
                        f"{aliases[node.value.id]}.{node.attr}")
    return hits


def test_no_module_imports_private_names_of_another():
    bad = []
    for m in MODULES:
        for line, target, name in _imports(m):
            if target in MODULES and target != m and _private(name):
                bad.append(f"{MODULES[m].relative_to(PACKAGE_DIR.parent)}:{line} imports {target}.{name}")
        bad += _private_attribute_uses(m)
    assert not bad, "make shared names public (or move them to their one home):\n" + "\n".join(bad)


def test_the_check_framework_imports_nothing_of_the_course():
    imported = [target for _, target, _ in _imports("course_lib.teaching.checks")]
    assert not [m for m in imported if m.startswith("course_lib")], imported


def test_hidden_tests_use_no_private_names():
    hidden = sorted((PACKAGE_DIR.parent / "grading" / "hidden").glob("*.py"))
    assert hidden, "grading/hidden holds the example hidden tests"
    bad = []
    for path in hidden:
        name = f"course_lib.__hidden_{path.stem}__"
        TREES[name], MODULES[name] = ast.parse(path.read_text()), path
        try:
            bad += [f"{path.name}:{line} imports {target}.{n}" for line, target, n in _imports(name)
                    if target in MODULES and _private(n)]
            bad += _private_attribute_uses(name)
        finally:
            del TREES[name], MODULES[name]
    assert not bad, "use the public helpers (course_lib.teaching.exercises.common):\n" + "\n".join(bad)


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    graph = {m: _course_imports(m) for m in MODULES}
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_functions_are_shorter_than_80_lines():
    long = sorted(
        (node.end_lineno - node.lineno + 1, f"{MODULES[m].relative_to(PACKAGE_DIR.parent)}:{node.lineno} {node.name}")
        for m, tree in TREES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 >= MAX_FUNCTION_LINES
    )
    assert not long, "split these functions:\n" + "\n".join(f"{n} lines: {where}" for n, where in long)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from course_lib.teaching import checks\n", ("course_lib.teaching.checks", None)),
        ("from course_lib.symmetry import _private_name\n", ("course_lib.symmetry", "_private_name")),
        ("import course_lib.graph as G\n", ("course_lib.graph", None)),
    ],
)
def test_imports_are_resolved(source, expected):
    TREES["course_lib.__probe__"] = ast.parse(source)
    MODULES["course_lib.__probe__"] = PACKAGE_DIR / "__probe__.py"
    try:
        assert _imports("course_lib.__probe__")[0][1:] == expected
    finally:
        del TREES["course_lib.__probe__"], MODULES["course_lib.__probe__"]
