"""course_lib: the helper library of the course *Symmetry-aware graph neural networks for physics
and chemistry*.

Modules (one idea each):

- :mod:`course_lib.symmetry`  - group elements, transforms of graphs, ``equivariance_error``
- :mod:`course_lib.neighbors` - open and periodic radius graphs (minimum-image convention)
- :mod:`course_lib.data`      - the data contract every dataset of the course follows
- :mod:`course_lib.utils`     - device, seeds, the ``COURSE_FAST`` switch, environment doctor
- :mod:`course_lib.train`     - training loop, checkpoints, train-or-load
- :mod:`course_lib.models`    - the models of the course and ``energy_and_forces``
- :mod:`course_lib.checks`    - exercise self-checks (shared with the autograder)
- :mod:`course_lib.assign`    - notebook build: stamping, student versions
"""

__version__ = "0.1.0"
