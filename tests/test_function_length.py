"""No function of the science layer (``course_lib`` without the toolkit ``course_lib/teaching``) is longer
than 80 lines (decorators excluded, docstring included): split long ones into named steps."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 80


def test_no_long_functions():
    long = []
    for path in sorted((ROOT / "course_lib").rglob("*.py")):
        if "teaching" in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []
