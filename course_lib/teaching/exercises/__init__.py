"""Checkers of the exercises, one module per notebook (``nb00.py``, ``nb01.py``, ...).

Each module registers its checkers with :func:`course_lib.teaching.checks.exercise`.
"""
