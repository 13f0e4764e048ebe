"""Sample submissions of two *design* exercises (any correct design passes): notebook 09's ``09.angle_feature``
(``grading/samples/nb09``) and notebook 01's ``01.energy_features`` (``grading/samples/nb01``, with an accuracy bar
on hidden data).

Run from the repository root after editing notebook 09 or 01 (then regrade them and review the new
``grading/samples/nbNN/expected_gradebook.csv``, see grading/README.md)::

    python grading/samples/make_design_samples.py

Four students, each with ``09.bond_vector_sum`` right and a different design for ``09.angle_feature``:

* ``correct``: the cosines of the bond angles at each atom, summed (a design other than the reference's);
* ``non_equivariant``: a good feature plus the height ``z`` of the atom "to tell a chair from a plane":
  not invariant under rotations and reflections (the grader names both, with the error);
* ``under_threshold``: the sum of the bond lengths: invariant, local, permutation equivariant, but it does not
  reach the exercise's bar (the two pairs must be told apart by more than 1e-6): distances alone cannot;
* ``too_slow``: made permutation invariant by averaging over every renumbering of the atoms (N! of them):
  correct in principle, hopeless for the hidden tests' 12 atoms (12! = 479,001,600): a time-out.

Four students with a design for ``01.energy_features`` (the other exercises of notebook 01 left as stubs):

* ``correct``: the sums over pairs within the cutoff of the terms the potential is made of (inverse powers,
  screened Coulomb with the charges): not the reference's radial basis;
* ``non_equivariant``: the same plus the centre of mass of the particles "to locate the cluster": not invariant
  under the box's translations, rotation and mirrors (the grader names each, with the change);
* ``under_threshold``: invariant counts (particles, net charge, pairs within the cutoff, like minus unlike
  pairs): every symmetry, but a test MAE far above the bar of 0.3 (the grader prints the MAE);
* ``too_slow``: made permutation invariant by averaging over every ordering of the particles (N! of them, up
  to 24!): a time-out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from make_samples import REPO, make, student_notebook

from course_lib.teaching import assign

SLUG = "09_expressivity_and_cost"
OUT = Path(__file__).resolve().parent / "nb09"
SLUG_01 = "01_invariant_mpnn_energy"
OUT_01 = Path(__file__).resolve().parent / "nb01"

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


PAIRS = """\
d = pos[:, None, :] - pos[None, :, :]
d = d - L * torch.round(d / L)                # minimum image
i, j = torch.triu_indices(len(pos), len(pos), 1)
r = d[i, j].norm(dim=-1)
qq = charge[i] * charge[j]
near = (r < 3.0).to(pos.dtype)                # the pairs within the cutoff
"""

PHYSICAL_TERMS = PAIRS + """\
terms = [near * r ** -k for k in (1, 2, 6, 12)] + [near * qq * torch.exp(-r) / r, near * qq * torch.exp(-r),
                                                    near * qq, near]
return torch.stack([t.sum() for t in terms])"""

WITH_CENTRE = PAIRS + """\
terms = [near * r ** -k for k in (1, 2, 6, 12)] + [near * qq * torch.exp(-r) / r, near * qq * torch.exp(-r),
                                                    near * qq, near]
return torch.cat([torch.stack([t.sum() for t in terms]), pos.mean(0)])  # where the cluster is"""

COUNTS = PAIRS + """\
n = torch.tensor(float(len(pos)), dtype=pos.dtype)
return torch.stack([n, charge.sum(), near.sum(), (near * qq).sum()])"""

ALL_ORDERINGS = """\
import itertools
total = 0
for p in itertools.permutations(range(len(pos))):  # average over every ordering: permutation invariant by force
    p = torch.tensor(p)
    x, q = pos[p], charge[p]
    d = x[1:] - x[:1]
    d = d - L * torch.round(d / L)
    total = total + torch.stack([(q[0] * q[1:] * torch.exp(-d.norm(dim=-1))).sum(), q[0]])
return total"""

SAMPLES_01: dict[str, dict] = {
    name: {"fill": {"01.energy_features": body}}
    for name, body in (("correct", PHYSICAL_TERMS), ("non_equivariant", WITH_CENTRE), ("under_threshold", COUNTS),
                       ("too_slow", ALL_ORDERINGS))
}


def write(slug: str, samples: dict, out: Path) -> None:
    student = student_notebook(slug)
    out.mkdir(parents=True, exist_ok=True)
    for name, spec in samples.items():
        path = out / f"{name}.ipynb"
        path.write_text(assign.notebook_text(make(student, spec)), encoding="utf-8", newline="\n")
        print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder of the notebook-09 samples "
                        f"(default {OUT.relative_to(REPO)})")
    parser.add_argument("--out-01", type=Path, default=OUT_01, help=f"output folder of the notebook-01 samples "
                        f"(default {OUT_01.relative_to(REPO)})")
    args = parser.parse_args(argv)
    write(SLUG, SAMPLES, args.out)
    write(SLUG_01, SAMPLES_01, args.out_01)
    return 0


if __name__ == "__main__":
    sys.exit(main())
