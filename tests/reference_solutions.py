"""The reference solutions of the exercises, for the tests: loaded by path from the instructor material
``grading/hidden/reference/nbNN.py`` (not part of the installed package)."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "grading" / "hidden" / "reference"


@cache
def reference(notebook: str):
    """The module ``grading/hidden/reference/<notebook>.py`` (``"nb01"``): solutions, ``SOLUTIONS``, ``compute``."""
    spec = importlib.util.spec_from_file_location(f"_course_reference_{notebook}", REFERENCE_DIR / f"{notebook}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
