"""``python -m course_lib.teaching.grading SUBMISSIONS_DIR --out RESULTS_DIR [...]``: see :mod:`.cli`."""

import sys

from course_lib.teaching.grading.cli import main

sys.exit(main())
