"""The course toolkit: exercise self-checks, the notebook build and the autograder.

It sits on top of the science library (``course_lib.*``) and may import it; the science library
never imports this package.
"""
