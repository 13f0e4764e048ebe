"""Sample submissions of a *design* exercise: notebook 09's ``09.angle_feature`` (any correct design passes).

Run from the repository root after editing notebook 09 (then regrade them and review the new
``grading/samples/nb09/expected_gradebook.csv``, see grading/README.md)::

    python grading/samples/make_design_samples.py

Four students, each with ``09.bond_vector_sum`` right and a different design for ``09.angle_feature``:

* ``correct``: the cosines of the bond angles at each atom, summed (a design other than the reference's);
* ``non_equivariant``: a good feature plus the height ``z`` of the atom "to tell a chair from a plane":
  not invariant under rotations and reflections (the grader names both, with the error);
* ``under_threshold``: the sum of the bond lengths: invariant, local, permutation equivariant, but it does not
  reach the exercise's bar (the two pairs must be told apart by more than 1e-6): distances alone cannot;
* ``too_slow``: made permutation invariant by averaging over every renumbering of the atoms (N! of them):
  correct in principle, hopeless for the hidden tests' 12 atoms (12! = 479,001,600): a time-out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from make_samples import REPO, make, student_notebook

from course_lib.teaching import assign

SLUG = "09_expressivity_and_cost"
OUT = Path(__file__).resolve().parent / "nb09"

BOND_VECTOR_SUM = """\
j, i = edge_index
d = pos[j] - pos[i]
return torch.zeros_like(pos).index_add(0, i, d / d.norm(dim=-1, keepdim=True))"""

ANGLE_COSINES = """\
j, i = edge_index
u = pos[j] - pos[i]
u = u / u.norm(dim=-1, keepdim=True)
same = i[:, None] == i[None, :]            # pairs of bonds that share their centre atom
same.fill_diagonal_(False)
cos = (u @ u.T) * same                      # cosine of the angle between two bonds of one atom
return torch.zeros(pos.shape[0], dtype=pos.dtype).index_add(0, i, cos.sum(dim=1))"""

WITH_HEIGHT = """\
j, i = edge_index
d = pos[j] - pos[i]
v = torch.zeros_like(pos).index_add(0, i, d / d.norm(dim=-1, keepdim=True))
return (v * v).sum(-1) + 0.1 * pos[:, 2]    # the height helps to tell a chair from a plane"""

BOND_LENGTHS = """\
j, i = edge_index
return torch.zeros(pos.shape[0], dtype=pos.dtype).index_add(0, i, (pos[j] - pos[i]).norm(dim=-1))"""

ALL_RENUMBERINGS = """\
import itertools
n = pos.shape[0]
total, count = torch.zeros(n, dtype=pos.dtype), 0
for p in itertools.permutations(range(n)):  # average over every renumbering: permutation invariant by force
    p = torch.tensor(p)
    inv = torch.argsort(p)
    q, e = pos[p], inv[edge_index]
    d = q[e[0]] - q[e[1]]
    v = torch.zeros_like(q).index_add(0, e[1], d / d.norm(dim=-1, keepdim=True))
    total += (v * v).sum(-1)[inv]
    count += 1
return total / count"""

SAMPLES: dict[str, dict] = {
    name: {"fill": {"09.bond_vector_sum": BOND_VECTOR_SUM, "09.angle_feature": body}}
    for name, body in (("correct", ANGLE_COSINES), ("non_equivariant", WITH_HEIGHT),
                       ("under_threshold", BOND_LENGTHS), ("too_slow", ALL_RENUMBERINGS))
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT.relative_to(REPO)})")
    args = parser.parse_args(argv)
    student = student_notebook(SLUG)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, spec in SAMPLES.items():
        path = args.out / f"{name}.ipynb"
        path.write_text(assign.notebook_text(make(student, spec)), encoding="utf-8", newline="\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
