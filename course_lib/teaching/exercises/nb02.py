"""Checkers of notebook 02: EGNN trajectory prediction in a periodic box.

Exercises:

- ``02.periodic_mse``: the mean squared error of predicted positions in a periodic box (minimum image).
- ``02.equivariant_update``: the EGNN coordinate update "per-edge scalars times edge vectors",
  ``x_i <- x_i + C_i sum_j x_ij phi_ij`` with ``x_ij = x_i - x_j`` (minimum image) and
  ``C_i = 1 / (1 + deg_i)``, wrapped back into the box.
- ``02.momentum_update``: a design exercise. A velocity update ``v' = f(pos, vel, charge, edge_index, L)`` of
  the student's design. Required (a case that breaks one scores 0, the broken ones named with their errors):
  equivariance under the box's symmetries (translations through the boundaries, the square's rotations and
  mirrors) and Galilean boosts, permutation equivariance, locality (only the pairs of ``edge_index``) and the
  conservation of the total momentum ``sum_i v_i`` to round-off, on graphs whose particles have different numbers
  of neighbours. Must *not* be: blind to the positions (``v' = v`` has every symmetry and conserves everything).
  Budget: :data:`UPDATE_SECONDS` seconds for a step of 400 particles.

No reference solution is here: the expected outputs (of the correct solution and of the known mistakes)
come from the checker's ``expected`` provider (:mod:`course_lib.teaching.exercises.stored`).
"""

from __future__ import annotations

import time

import torch

from course_lib import symmetry as S
from course_lib.neighbors import minimum_image, radius_graph
from course_lib.teaching.checks import exercise
from course_lib.teaching.exercises.common import (
    call_student,
    expect_tensor,
    rng,
    shape_of,
    square_box_operations,
    wrap_into_box,
)
from course_lib.teaching.exercises.stored import provider

__all__ = ["check_periodic_mse", "check_equivariant_update", "check_momentum_update", "UPDATE_SECONDS"]

#: 02.momentum_update: the budget, in seconds for one update of 400 particles in a box of side 40
UPDATE_SECONDS = 5.0


# ------------------------------------------------------------------------- helpers


def _periodic_close(a, b, L, atol=1e-6) -> bool:
    """Positions equal up to whole box lengths."""
    if not (isinstance(a, torch.Tensor) and a.shape == b.shape):
        return False
    return bool(minimum_image(a.double() - b.double(), L.double()).abs().max() < atol)


def _problem(seed: int, n: int = 12, L: float = 6.0, cutoff: float = 2.5):
    g = torch.Generator().manual_seed(seed)
    box = torch.tensor([L, L], dtype=torch.float64)
    x = torch.rand(n, 2, generator=g, dtype=torch.float64) * box
    edge_index, edge_vec = radius_graph(x, cutoff, box=box[None])
    dist = edge_vec.norm(dim=-1, keepdim=True)
    q = torch.randint(0, 2, (n,), generator=g).to(torch.float64) * 2 - 1  # charges: phi_ij != phi_ji
    phi = torch.tanh(1.5 - dist) * 0.8 * (1 + 0.5 * q[edge_index[1], None])  # invariant scalars
    return x, edge_index, phi, box


# ------------------------------------------------------------------------- checkers


@exercise("02.periodic_mse", "mean squared position error in a periodic box")
def check_periodic_mse(fn, fb, seed: int = 0, n: int = 50, expected=None):
    g = torch.Generator().manual_seed(seed)
    L = torch.tensor([10.0, 8.0], dtype=torch.float64)
    target = torch.rand(n, 2, generator=g, dtype=torch.float64) * L
    pred = target + 0.3 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    pred = pred - L * torch.floor(pred / L)  # wrapped: some predictions sit across a boundary
    ref = provider(expected)("02.periodic_mse", "values", pred, target, L)
    out = fn(pred.clone(), target.clone(), L)
    fb.expect(isinstance(out, torch.Tensor) and out.dim() == 0,
              f"return a scalar tensor (0-dim), got {shape_of(out)}: take the mean over nodes and components",
              fatal=True)
    plain = (pred - target).pow(2).mean()
    fb.expect(not torch.isclose(out.double(), plain, rtol=1e-6).item() or torch.isclose(plain, ref).item(),
              "you compare raw coordinates: a particle predicted at x = 0.1 whose target is x = L - 0.1 is only "
              "0.2 away through the boundary. Reduce pred - target with the minimum image before squaring")
    fb.expect(not torch.isclose(out.double(), ref * 2 * n, rtol=1e-6).item(),
              "you sum instead of averaging: divide by the number of nodes and components (use .mean())")
    fb.expect(not torch.isclose(out.double(), ref * 2, rtol=1e-6).item(),
              "you sum over the x/y components and average over nodes: the course's MSE averages over "
              "components too (.mean() over every entry)")
    fb.expect(torch.isclose(out.double(), ref, rtol=1e-6).item(),
              f"the value {float(out):.6f} differs from the expected {float(ref):.6f}: mean over all entries "
              "of minimum_image(pred - target, L) ** 2", values=True)
    # invariance: shifting both by a periodic translation must not change the loss
    shift = torch.tensor([3.7, -2.2], dtype=torch.float64)
    moved = fn((pred + shift) % L, (target + shift) % L, L)
    fb.expect(isinstance(moved, torch.Tensor) and torch.isclose(moved.double(), out.double(), rtol=1e-6).item(),
              "the loss changes when prediction and target are shifted together through the boundary: it must "
              "be invariant under periodic translations (minimum image)")


_UPDATE_MISTAKES = {
    "negated": "the update has the wrong sign: use x_ij = x_i - x_j (from j to i), so that phi_ij > 0 pushes i "
               "away from j",
    "flipped": "the messages go to the wrong node: edge_index[0] is the source j and edge_index[1] the target i; "
               "sum over the edges that end at i",
    "no minimum image": "pairs that interact through the boundary move the wrong way: reduce x_i - x_j with the "
                        "minimum image before multiplying by phi",
    "mean": "you divide by deg_i; the course uses C_i = 1 / (1 + deg_i), which stays finite for an isolated particle",
    "no normalisation": "the normalisation C_i = 1 / (1 + deg_i) is missing",
}


@exercise("02.equivariant_update", "EGNN coordinate update: per-edge scalars times edge vectors")
def check_equivariant_update(fn, fb, seed: int = 0, expected=None):
    want = provider(expected)
    x, edge_index, phi, L = _problem(seed)
    ref = want("02.equivariant_update", "values", x, edge_index, phi, L)
    mistakes = {name: want("02.equivariant_update", name, x, edge_index, phi, L) for name in _UPDATE_MISTAKES}
    out = fn(x.clone(), edge_index, phi.clone(), L)
    expect_tensor(fb, out)
    fb.expect(out.shape == x.shape, f"the output has shape {shape_of(out)}; expected {tuple(x.shape)} "
              "(one new position per particle)", fatal=True)
    if not _periodic_close(out, ref, L):
        same = [name for name, value in mistakes.items() if _periodic_close(out, value, L)]
        err = float(minimum_image(out.double() - ref, L).abs().max()) if out.is_floating_point() else float("nan")
        fb.expect(False, _UPDATE_MISTAKES[same[0]] if same else
                  f"the new positions differ from the expected ones by up to {err:.3g}: "
                  "x_i + C_i * sum_j min_image(x_i - x_j) * phi_ij with C_i = 1 / (1 + deg_i)", values=True)
        return
    fb.expect(True, "values", values=True)
    # two particles attracting each other through the left/right boundary: particle 0 leaves the box
    x2 = torch.tensor([[0.02, 3.0], [5.8, 3.0]], dtype=torch.float64)
    e2 = torch.tensor([[1, 0], [0, 1]])
    out2 = fn(x2.clone(), e2, torch.full((2, 1), -0.8, dtype=torch.float64), L)
    fb.expect(isinstance(out2, torch.Tensor) and bool(((out2 >= 0) & (out2 < L)).all()),
              "some positions are outside [0, L): wrap the result back into the box (x - L * floor(x / L))")

    # symmetry: the update, with phi an invariant function of the distance, commutes with the box symmetries
    from torch_geometric.data import Data

    def step(data):
        ei, ev = radius_graph(data.pos, 2.5, box=data.box)
        ph = torch.tanh(1.5 - ev.norm(dim=-1, keepdim=True)) * 0.8
        return fn(data.pos, ei, ph, data.box[0])

    data = Data(pos=x, box=L[None])
    for name, T in S.standard_transforms(data, generator=seed).items():
        err = S.equivariance_error(step, data, T, output="position")
        fb.expect(err < 1e-9, f"the update does not commute with the {name} (error {err:.2e}): only "
                  "differences x_i - x_j times invariant scalars may move a particle")


# ------------------------------------------------------------------------- 02.momentum_update


def _system(seed: int, n: int, L: float, cutoff: float = 2.5):
    """Positions in a square box (particles at least 0.5 apart), velocities, charges +-1, the periodic cutoff
    graph (symmetric: both directions of every pair), float64."""
    g = rng(seed)
    pos = torch.rand(8 * n, 2, generator=g, dtype=torch.float64) * L
    keep = []
    for k in range(len(pos)):  # a few random points rejected: no two particles on top of each other
        d = minimum_image(pos[keep] - pos[k], torch.tensor([L, L], dtype=torch.float64)).norm(dim=-1)
        if len(keep) < n and bool((d > 0.5).all()):
            keep.append(k)
    pos = pos[keep]
    vel = torch.randn(len(pos), 2, generator=g, dtype=torch.float64)
    charge = torch.randint(0, 2, (len(pos),), generator=g).to(torch.float64) * 2 - 1
    edge_index, _ = radius_graph(pos, cutoff, box=torch.tensor([[L, L]], dtype=torch.float64))
    return pos, vel, charge, edge_index, L


def _update(fb, fn, system, what):
    pos, vel, charge, edge_index, L = system
    out = call_student(fb, fn, (pos.clone(), vel.clone(), charge.clone(), edge_index.clone(), L),
                       f"momentum_update on {what}")
    if not isinstance(out, torch.Tensor):
        expect_tensor(fb, out, "momentum_update")
    if out.shape != vel.shape:
        fb.expect(False, f"return the new velocities, shape {tuple(vel.shape)}, on {what}; got {shape_of(out)}",
                  fatal=True)
    out = out.detach().to(torch.float64)
    if not bool(torch.isfinite(out).all()):
        fb.expect(False, f"the new velocities have NaN or inf on {what}", fatal=True)
    return out


def _momentum_properties(fn, fb, system, seed: int) -> list[str]:
    """Record each required property; return the names (with errors) of those the update breaks."""
    pos, vel, charge, edge_index, L = system
    out = _update(fb, fn, system, "a random system")
    scale = max(1.0, float(out.abs().max()))
    errors = {}
    for name, (R, t) in square_box_operations(L, seed).items():
        moved = (wrap_into_box(pos @ R.T + t, L), vel @ R.T, charge, edge_index, L)
        key = name.split(" by (")[0] if name.startswith("translation") else name
        errors[key] = float((_update(fb, fn, moved, f"the system after the {key}") - out @ R.T).abs().max())
    boost = torch.tensor([0.7, -1.3], dtype=torch.float64)
    errors["Galilean boost (the same velocity added to every particle)"] = float(
        (_update(fb, fn, (pos, vel + boost, charge, edge_index, L), "a boosted system") - (out + boost)).abs().max())
    perm = torch.randperm(len(pos), generator=rng(seed + 3))
    errors["renumbering of the particles"] = float((_update(
        fb, fn, (pos[perm], vel[perm], charge[perm], torch.argsort(perm)[edge_index], L), "the particles renumbered")
        - out[perm]).abs().max())
    lonely = (torch.cat([pos, pos[:1] + 0.01]), torch.cat([vel, vel[:1]]), torch.cat([charge, charge[:1]]),
              edge_index, L)  # one more particle, in no edge
    errors["locality (a particle in no edge changed the others)"] = float(
        (_update(fb, fn, lonely, "the system with one more particle in no edge")[:-1] - out).abs().max())
    hints = {"translation": "use minimum-image displacements x_i - x_j, never positions",
             "Galilean": "use velocity differences v_i - v_j (or none), never the velocities themselves, "
                         "except in the term v_i itself",
             "renumbering": "sum over the edges: no particle may have a special place in the list",
             "locality": "use only the pairs of edge_index"}
    broken = []
    for key, err in errors.items():
        ok = err <= 1e-9 * scale
        if not ok:
            broken.append(f"{key} (error {err:.1e})")
        hint = next((h for word, h in hints.items() if word in key),
                    "multiply invariant scalars by the vectors x_i - x_j (and v_i - v_j)")
        fb.expect(ok, f"not equivariant under the {key}: the new velocities are off by {err:.1e} ({hint})",
                  ok=f"equivariant under the {key}")
    drift = float((out.sum(0) - vel.sum(0)).norm())
    degrees = torch.bincount(edge_index[1], minlength=len(pos))
    if drift > 1e-10 * scale * len(pos):
        broken.append(f"momentum conservation (|sum v' - sum v| = {drift:.1e})")
    fb.expect(drift <= 1e-10 * scale * len(pos), f"the total momentum changes by {drift:.1e} in one update (here "
              f"the particles have {int(degrees.min())} to {int(degrees.max())} neighbours): the pair terms must "
              "cancel in pairs, the term of (i, j) exactly minus that of (j, i): a scalar symmetric in i and j times "
              "x_i - x_j, and no per-particle factor (no C_i = 1/(1 + deg_i), no phi_v(h_i) v_i)",
              ok="conserves the total momentum to round-off")
    return broken


@exercise("02.momentum_update", "design: an equivariant velocity update that conserves the total momentum")
def check_momentum_update(fn, fb, seed: int = 0, n: int = 14, L: float = 6.0, expected=None):
    """Required properties first (a case that breaks one scores 0, naming each with its error), then what it must
    not be (blind to the positions) and the time budget."""
    system = _system(seed, n, L)
    broken = _momentum_properties(fn, fb, system, seed)
    fb.expect(not broken, f"the design breaks a required property ({'; '.join(broken)}): whatever else it does, an "
              "update without them is not a solution, and this case scores 0", fatal=True,
              ok="has every required property")
    pos, vel, charge, edge_index, L = system
    out = _update(fb, fn, system, "a random system")
    shifted = _system(seed + 50, n, L)
    moved = _update(fb, fn, (shifted[0], vel, charge, shifted[3], L), "the same velocities at other positions")
    change = float((moved - out).abs().max()) if len(shifted[0]) == len(pos) else 1.0
    fb.expect(float((out - vel).abs().max()) > 1e-6 and change > 1e-6, "the update ignores the positions (v' = v, or "
              "the same for every configuration): that has every symmetry and conserves momentum, but it is no "
              "interaction. Let the pairs of edge_index push each other", ok="the positions move the velocities",
              values=True)
    big = _system(seed + 100, 400, 40.0)
    start = time.perf_counter()
    _update(fb, fn, big, "400 particles in a box of side 40")
    seconds = time.perf_counter() - start
    fb.expect(seconds <= UPDATE_SECONDS, f"too slow: one update of 400 particles took {seconds:.1f} s, the budget is "
              f"{UPDATE_SECONDS:.0f} s (loop over the edges with tensor operations, not in Python)",
              ok="within the time budget")
