"""Repository-wide pytest configuration.

Notebooks are executed by nbval in fast mode: ``COURSE_FAST=1`` is set here, before any kernel
starts, unless the caller set it explicitly (``COURSE_FAST=0 pytest notebooks`` runs full mode).
"""

import os

os.environ.setdefault("COURSE_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# keep CPU thread counts sane on the 2-core CI machine (one kernel at a time)
os.environ.setdefault("OMP_NUM_THREADS", "2")

collect_ignore_glob = ["notebooks/student/*", "notebooks/*.py", "benchmarks/*"]
