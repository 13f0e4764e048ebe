"""Checkers of notebook 03: conditioning on a fixed crystal.

Exercise:

- ``03.crystal_feature``: a design exercise. A per-particle feature ``[N]`` or ``[N, F]`` of the position of a
  mobile particle among the crystal (sites at ``((i + 1/2) a, (j + 1/2) a)`` for all integers ``i, j``; the box of
  side ``4 a`` holds 16 of them) that is invariant under the crystal's symmetry operations (lattice translations,
  the 8 rotations and reflections of the square about a site), permutation equivariant, and *not* invariant
  under operations that are no symmetry of the crystal: a shift by ``a / 2`` (a site onto a bond midpoint) and a
  rotation by 30 degrees about a site (arbitrary rotations are not a symmetry once the crystal is there). Any
  feature with these properties passes; there is no single expected output, so no stored output is needed.
"""

from __future__ import annotations

import math

import torch

from course_lib.teaching.checks import exercise
from course_lib.teaching.exercises.common import call_student, expect_tensor, rng, shape_of

__all__ = ["check_crystal_feature", "crystal_operations"]

#: the lattice of the notebook: 4 x 4 sites in a box of side 4 a
CELLS = 4


def _matrix(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _rotation(degrees: float) -> torch.Tensor:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return _matrix([[c, -s], [s, c]])


def crystal_operations(a: float) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The crystal symmetries the checker uses, as ``x -> R x + t`` (then wrapped into the box): two lattice
    translations (one of them wraps most particles through the boundary) and the non-trivial elements of the
    point group of the square about the site ``(a/2, a/2)``."""
    site = torch.tensor([a / 2, a / 2], dtype=torch.float64)
    point = {
        "90 deg rotation about a site": _matrix([[0, -1], [1, 0]]),
        "180 deg rotation about a site": _matrix([[-1, 0], [0, -1]]),
        "mirror x -> -x about a site": _matrix([[-1, 0], [0, 1]]),
        "mirror y -> -y about a site": _matrix([[1, 0], [0, -1]]),
        "diagonal mirror (x <-> y) about a site": _matrix([[0, 1], [1, 0]]),
    }
    ops = {"lattice translation (1 a, 0)": (torch.eye(2, dtype=torch.float64), _matrix([a, 0.0])),
           "lattice translation (2 a, 3 a)": (torch.eye(2, dtype=torch.float64), _matrix([2 * a, 3 * a]))}
    for name, R in point.items():
        ops[name] = (R, site - R @ site)  # x -> R (x - site) + site
    return ops


def _wrap(x: torch.Tensor, L: float) -> torch.Tensor:
    return x - L * torch.floor(x / L)


def _run(fb, fn, pos, a, what, first=False):
    """The student's feature as ``[N, F]`` float64. The prerequisites (a tensor of the right shape, finite) are
    recorded on the ``first`` call and on any failure, so that repeating them does not dilute the score."""
    out = call_student(fb, fn, (pos.clone(), a), f"crystal_feature on {what}")
    if first or not isinstance(out, torch.Tensor):
        expect_tensor(fb, out, "crystal_feature")
    n = pos.shape[0]
    ok = out.dim() in (1, 2) and out.shape[0] == n and out.numel() > 0
    if first or not ok:
        fb.expect(ok, f"return one number per particle, shape ({n},), or a row of F numbers per particle, shape "
                  f"({n}, F); got {shape_of(out)} on {what}", fatal=True)
    out = out.detach().to(torch.float64).reshape(n, -1)
    finite = bool(torch.isfinite(out).all())
    if first or not finite:
        fb.expect(finite, f"the feature has NaN or inf on {what}", fatal=True)
    return out


def _particles(seed: int, n: int, a: float) -> torch.Tensor:
    """Random positions in the box, none within 0.05 a of a site (where some valid features have a kink)."""
    g = rng(seed)
    L = CELLS * a
    pos = torch.rand(4 * n, 2, generator=g, dtype=torch.float64) * L
    offset = pos / a - 0.5
    far = (offset - torch.round(offset)).norm(dim=-1) > 0.05
    return pos[far][:n]


@exercise("03.crystal_feature", "design: a feature with the crystal's symmetries and no more")
def check_crystal_feature(fn, fb, seed: int = 0, n: int = 12, a: float = 2.5, expected=None):
    L = CELLS * a
    pos = _particles(seed, n, a)
    out = _run(fb, fn, pos, a, f"{n} particles in the box", first=True)
    scale = max(1.0, float(out.abs().max()))
    spread = float((out - out[0]).abs().max())
    fb.expect(spread > 1e-6 * scale, "the feature is the same for every position: a constant has every symmetry "
              "and tells the model nothing. Make it depend on where the particle sits relative to the sites",
              fatal=True)

    perm = torch.randperm(n, generator=rng(seed + 1))
    permuted = _run(fb, fn, pos[perm], a, "the same particles in another order")
    fb.expect(bool(torch.allclose(permuted, out[perm], atol=1e-8 * scale, rtol=0)),
              "not permutation equivariant: listing the particles in another order must list their features in "
              "the same order (compute each particle's feature from its own position only)",
              ok="permutation equivariant")

    # the crystal's symmetries: one value test (the heart of the exercise), naming every operation that fails
    broken, hints = [], []
    for name, (R, t) in crystal_operations(a).items():
        moved = _run(fb, fn, _wrap(pos @ R.T + t, L), a, f"the particles moved by the {name}")
        err = float((moved - out).abs().max())
        if err > 1e-8 * scale:
            broken.append(f"the {name} (the feature changes by {err:.1e})")
            hint = ("the crystal repeats with period a along x and y: use periodic functions of the position (e.g. "
                    "cos(2 pi x / a)) or distances to the sites with the minimum image, never the raw coordinates"
                    if name.startswith("lattice") else
                    "the feature must treat x and y, and +x and -x, alike (the square has these symmetries about "
                    "every site)")
            if hint not in hints:
                hints.append(hint)
    fb.expect(not broken, f"not invariant under symmetries of the crystal: {', '.join(broken)}; {'; '.join(hints)}",
              ok="invariant under the crystal's symmetries (lattice translations, rotations and mirrors about a site)",
              values=True)
    if broken:  # "changes under an operation that is no symmetry" means nothing for a feature without the symmetries
        return

    half = _run(fb, fn, _wrap(pos + torch.tensor([a / 2, 0.0], dtype=torch.float64), L), a,
                "the particles shifted by a/2 along x")
    change = float((half - out).abs().max())
    fb.expect(change > 1e-6 * scale, "the feature does not change under a shift by a/2 along x, which is NOT a "
              "symmetry of the crystal (it moves a particle on a site onto a bond midpoint): the feature cannot tell "
              "those places apart. Is its period a/2 instead of a?", ok="changes under a shift by a/2 (not a "
              "symmetry)", values=True)

    # probes close to a site, rotated about it by 30 degrees: a feature that only sees the distance to the nearest
    # site is isotropic there and misses the square's directions
    g = rng(seed + 2)
    k = max(4, n // 2)
    radius = a * (0.2 + 0.25 * torch.rand(k, generator=g, dtype=torch.float64))
    angle = math.radians(7.0) + (math.pi / 2 - math.radians(14.0)) * torch.rand(k, generator=g, dtype=torch.float64)
    cells = torch.randint(0, CELLS, (k, 2), generator=g).to(torch.float64)
    sites = (cells + 0.5) * a
    probe = sites + radius[:, None] * torch.stack([angle.cos(), angle.sin()], -1)
    turned = sites + (probe - sites) @ _rotation(30.0).T
    f_probe = _run(fb, fn, _wrap(probe, L), a, "particles near the sites")
    f_turned = _run(fb, fn, _wrap(turned, L), a, "the same particles rotated by 30 deg about their site")
    change = float((f_turned - f_probe).abs().max())
    fb.expect(change > 1e-6 * max(1.0, float(f_probe.abs().max())),
              "the feature does not change when a particle near a site is rotated by 30 deg about that site: it is "
              "isotropic around the sites (e.g. the distance to the nearest site only). A rotation by 30 deg is not a "
              "symmetry of the square crystal: include the directions to the sites (distances to several sites, or "
              "periodic functions of x and y)", ok="changes under a 30 deg rotation about a site (not a symmetry)",
              values=True)
