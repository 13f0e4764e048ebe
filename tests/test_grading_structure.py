"""Structure of the grader package: a standalone, stdlib-only child and a complete guard program.

Short functions, public seams and the absence of import cycles are checked for the whole package by
``tests/test_layering.py``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEACHING = REPO / "course_lib" / "teaching"
GRADING = TEACHING / "grading"


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_child_and_checker_import_only_the_standard_library():
    """The student and checker processes start from child.py / checker.py alone: nothing of the package
    before the pristine copy (the checker imports it from there, the student process never)."""
    for program in ("child.py", "checker.py"):
        tree = _tree(GRADING / program)
        top = set()
        for node in tree.body:
            if isinstance(node, ast.Import):
                top.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"relative import in {program}"
                top.add(node.module.split(".")[0])
        assert top - set(sys.stdlib_module_names) - {"__future__"} == set(), program
    for path in (GRADING / "guard.py", TEACHING / "notebook.py", GRADING / "bridge.py"):  # loaded by path by the child
        tree = _tree(path)
        names = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom)}
        assert names - set(sys.stdlib_module_names) - {"__future__"} == set(), path


def test_child_and_checker_run_as_standalone_files(tmp_path):
    for program, flag in (("child.py", "--exercise-child"), ("checker.py", "--checker-server")):
        res = subprocess.run([sys.executable, "-I", "-B", str(GRADING / program)], capture_output=True, text=True,
                             cwd=tmp_path, timeout=60)
        assert res.returncode == 2 and flag in res.stderr, res.stderr


def test_guard_source_is_a_complete_program():
    from course_lib.teaching.grading.guard import GUARD_PROGRAM, guard_source, kernel_startup_source

    source = guard_source()
    namespace: dict = {}
    exec(compile(source, "<guard>", "exec"), namespace)  # noqa: S102 - defines the functions, installs nothing
    assert set(namespace) - {"__builtins__"} == set(GUARD_PROGRAM)
    startup = kernel_startup_source(["/h"], ["/p"], "/log")
    compile(startup, "<startup>", "exec")
    assert startup.rstrip().endswith("fork_safe_kernel()\ndel block_network, make_audit_hook, student_policy, "
                                     "install_guard, fork_safe_kernel")
