"""Checkers of notebook 09: what invariance cannot see, what equivariance costs.

Exercises:

- ``09.bond_vector_sum``: the sum of the unit bond vectors of every atom,
  ``v_i = sum_{j -> i} (r_j - r_i) / |r_j - r_i|`` over the edges ``(j, i)`` of ``edge_index`` (the first vector
  feature of an equivariant model, e.g. PaiNN's message with all filters equal to 1).
- ``09.angle_feature``: a design exercise: a per-atom feature ``[N]`` computed from ``pos`` and ``edge_index``
  that is invariant (rotations, reflections, translations), permutation equivariant and local (only the pairs
  of ``edge_index``), and that tells apart the planar and the chair six-ring of
  :func:`course_lib.expressivity.ring_pair` (and the two bent triatomics of
  :func:`~course_lib.expressivity.bent_pair`), which no distance-only message passing can. Any feature with
  these properties passes; there is no single expected output.

No reference solution is here: the expected outputs of ``09.bond_vector_sum`` (of the correct solution and
of the known mistakes) come from the checker's ``expected`` provider
(:mod:`course_lib.teaching.exercises.stored`).
"""

from __future__ import annotations

import torch

from course_lib import expressivity
from course_lib.neighbors import radius_graph
from course_lib.teaching.checks import exercise
from course_lib.teaching.exercises.common import (
    call_student,
    close,
    expect_tensor,
    random_rotation_and_reflection,
    rng,
    shape_of,
)
from course_lib.teaching.exercises.stored import provider

__all__ = ["check_bond_vector_sum", "check_angle_feature"]

_SUM_MISTAKES = {
    "negated": "the sign is flipped: the bond vector of edge (j, i) is r_j - r_i (from the centre i to its "
               "neighbour j), summed into the target i = edge_index[1]",
    "not normalised": "divide every bond vector by its length: the sum is over *unit* vectors",
    "mean": "sum over the neighbours, do not average (a mean would also hide how many neighbours there are)",
}


def _random_structure(seed: int, n: int, cutoff: float = 1.6):
    g = rng(seed)
    pos = torch.rand(n, 3, generator=g, dtype=torch.float64) * (n ** (1 / 3)) * 1.2
    edge_index, _ = radius_graph(pos, cutoff)
    return pos, edge_index


@exercise("09.bond_vector_sum", "the sum of the unit bond vectors of every atom")
def check_bond_vector_sum(fn, fb, seed: int = 0, n: int = 9, expected=None):
    want = provider(expected)
    pos, edge_index = _random_structure(seed, n)
    inputs = (pos, edge_index)
    ref = want("09.bond_vector_sum", "values", *inputs)
    mistakes = {name: want("09.bond_vector_sum", name, *inputs) for name in _SUM_MISTAKES}
    out = call_student(fb, fn, (pos.clone(), edge_index.clone()), "bond_vector_sum(pos, edge_index)")
    expect_tensor(fb, out, "bond_vector_sum")
    fb.expect(out.shape == pos.shape, f"return one 3-vector per atom, shape {tuple(pos.shape)}; got {shape_of(out)}",
              fatal=True)
    ok = close(out, ref, atol=1e-9, rtol=1e-9)
    diagnosis = next((text for name, text in _SUM_MISTAKES.items()
                      if close(out, mistakes[name], atol=1e-9, rtol=1e-9)),
                     "the sums differ from sum_{(j, i) in edges} (r_j - r_i) / |r_j - r_i| collected at "
                     "i = edge_index[1]")
    fb.expect(ok, diagnosis, ok="values OK", values=True)
    if ok:  # a vector feature: it rotates with the structure
        R, _ = random_rotation_and_reflection(seed + 1, seed + 1)
        rotated = call_student(fb, fn, (pos @ R.T, edge_index.clone()), "bond_vector_sum on a rotated structure")
        fb.expect(close(rotated, out @ R.T, atol=1e-9, rtol=1e-9), "the output does not rotate with the structure",
                  ok="equivariant under rotations")


def _run(fb, fn, pos, edge_index, what):
    out = call_student(fb, fn, (pos, edge_index), f"angle_feature on {what}")
    expect_tensor(fb, out, "angle_feature")
    fb.expect(out.shape == (pos.shape[0],), f"return one number per atom, shape ({pos.shape[0]},), on {what}; got "
              f"{shape_of(out)}", fatal=True)
    fb.expect(bool(torch.isfinite(out).all()), f"the feature has NaN or inf on {what} (a division by a zero norm? "
              "atoms with a single neighbour, or bonds that cancel, must give finite values)", fatal=True)
    return out.detach().to(torch.float64)


def _symmetry_checks(fn, fb, seed: int, n: int) -> list[str]:
    """Record each required property; return the names of those the feature breaks."""
    broken = []
    pos, edge_index = _random_structure(seed + 100, n)
    out = _run(fb, fn, pos, edge_index, "a random structure")
    scale = max(1.0, float(out.abs().max()))
    R, M = random_rotation_and_reflection(seed, seed)
    t = torch.randn(3, generator=rng(seed + 7), dtype=torch.float64) * 3.0
    for name, moved in (("rotation", pos @ R.T), ("reflection", pos @ M.T), ("translation", pos + t)):
        err = float((_run(fb, fn, moved, edge_index, f"a {name} of it") - out).abs().max())
        if err > 1e-8 * scale:
            broken.append(f"{name} invariance (error {err:.1e})")
        fb.expect(err <= 1e-8 * scale, f"not invariant under {name}: the feature changes by {err:.1e} (use only "
                  "lengths, angles, dot products or norms of bond vectors r_j - r_i, never coordinates)",
                  ok=f"invariant under {name}")
    perm = torch.randperm(n, generator=rng(seed + 3))
    inverse = torch.argsort(perm)
    permuted = _run(fb, fn, pos[perm], inverse[edge_index], "the same structure with the atoms renumbered")
    if not torch.allclose(permuted, out[perm], atol=1e-8 * scale):
        broken.append("permutation equivariance")
    fb.expect(torch.allclose(permuted, out[perm], atol=1e-8 * scale), "not permutation equivariant: renumbering the "
              "atoms must renumber the outputs the same way (sum over neighbours, do not use atom indices)",
              ok="permutation equivariant")
    far = torch.cat([pos, torch.full((1, 3), 50.0, dtype=torch.float64)])
    with_far = _run(fb, fn, far, edge_index, "the structure with one more, isolated atom")
    if not torch.allclose(with_far[:n], out, atol=1e-8 * scale):
        broken.append("locality")
    fb.expect(torch.allclose(with_far[:n], out, atol=1e-8 * scale), "the feature of an atom changes when an atom "
              "that is in no edge is added: use only the pairs of edge_index (the neighbour list)", ok="local")
    return broken


@exercise("09.angle_feature", "design: an invariant feature that sees bond angles")
def check_angle_feature(fn, fb, seed: int = 0, n: int = 8, expected=None):
    """A design exercise: the required properties (invariance, permutation equivariance, locality) are
    prerequisites, the goal is to tell the two pairs apart. A feature that breaks a required property earns
    nothing for the case (the feedback still says which properties it breaks, with the errors, and whether it
    separates the pairs); one that has them all earns the rest of the case for the properties and the
    value share for separating the pairs (so a symmetric feature that misses the goal gets a fraction)."""
    broken = _symmetry_checks(fn, fb, seed, n)
    for name, (a, b) in (("planar and chair six-rings", expressivity.ring_pair()),
                         ("bent triatomics (105 and 150 degrees)", expressivity.bent_pair())):
        R, _ = random_rotation_and_reflection(seed + 11, seed + 11)
        ea, _ = radius_graph(a.pos, 1.5)
        eb, _ = radius_graph(b.pos, 1.5)
        fa = _run(fb, fn, a.pos @ R.T, ea, name.split(" and ")[0])
        fb_ = _run(fb, fn, b.pos, eb, name)
        gap = float((fa.sort().values - fb_.sort().values).abs().max())
        fb.expect(gap > 1e-6, f"the feature is the same for the {name}: there the bond lengths within the cutoff are "
                  "all equal, so a feature of distances alone cannot tell them apart; use the bond *directions* "
                  "(e.g. the cosine between two bonds of an atom, or the length of the sum of its unit bond vectors)",
                  ok=f"tells the {name} apart", values=True)
    fb.expect(not broken, f"the design breaks a required property ({'; '.join(broken)}): whatever else it does, a "
              "feature without them is not a solution, and this case scores 0", fatal=True,
              ok="has every required property")
