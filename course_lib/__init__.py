"""course_lib: the helper library of the course *Symmetry-aware graph neural networks for physics
and chemistry*.

Two layers. The **science library** is everything directly under ``course_lib`` (one idea a
module); the **course toolkit** lives in :mod:`course_lib.teaching` and builds on it. The science
never imports the toolkit (``tests/test_layering.py`` enforces it, together with: no module imports
another module's ``_private`` names, and no import cycles).

Science library:

- :mod:`course_lib.symmetry`   group elements, transforms of graphs, ``equivariance_error``
- :mod:`course_lib.irreps`     the same checks for e3nn irreps features (Wigner-D matrices)
- :mod:`course_lib.neighbors`  open and periodic radius graphs (minimum-image convention)
- :mod:`course_lib.graph`      batch helpers shared by every model (``scatter_sum``, ``batch_of``, ...)
- :mod:`course_lib.data`       the data contract every dataset of the course follows
- :mod:`course_lib.datasets`, :mod:`course_lib.public_datasets`, :mod:`course_lib.files`  data loading
- :mod:`course_lib.simulate`   the course's own simulators (2D particles, N-body, xTB molecules)
- :mod:`course_lib.models`     the models of the course and ``energy_and_forces``
- :mod:`course_lib.losses`, :mod:`course_lib.train`  losses, metrics, training loop, train-or-load
- :mod:`course_lib.crystal`, :mod:`course_lib.md`, :mod:`course_lib.ase_calculator`,
  :mod:`course_lib.observables`  crystal metrics, molecular dynamics, observables
- :mod:`course_lib.utils`      device, seeds, the ``COURSE_FAST`` switch, environment doctor

Course toolkit (:mod:`course_lib.teaching`):

- :mod:`course_lib.teaching.checks`     exercise self-check framework
- :mod:`course_lib.teaching.exercises`  the checkers of each notebook's exercises
- :mod:`course_lib.teaching.assign`     notebook build: stamping, student versions
- :mod:`course_lib.teaching.notebook`   cell and exercise-metadata parsing shared by the build and the grader
- :mod:`course_lib.teaching.grading`    the autograder
"""

__version__ = "0.1.0"

#: The layers of the package, lowest first: a module may import only from its own layer or below.
LAYERS = {
    "science": "course_lib (every module outside course_lib.teaching)",
    "teaching": "course_lib.teaching (checks, exercises, notebook parsing and build, grader)",
}
