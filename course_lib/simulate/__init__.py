"""Simulators that generate the course datasets (see ``data/README.md``).

- :mod:`course_lib.simulate.particles2d` - charged particles in a 2D periodic box (NumPy, batched),
  with an optional fixed crystal; energies, forces, velocity Verlet and Langevin dynamics.
- :mod:`course_lib.simulate.make_datasets` - ``python -m course_lib.simulate.make_datasets`` writes the
  particle datasets and ``data/manifest.json`` deterministically.

Import the modules directly (``from course_lib.simulate import particles2d``); this package imports
nothing on its own so that importing one simulator stays cheap.
"""
