"""Checkers of notebook 02: EGNN trajectory prediction in a periodic box.

Exercises:

- ``02.periodic_mse``: the mean squared error of predicted positions in a periodic box (minimum image).
- ``02.equivariant_update``: the EGNN coordinate update "per-edge scalars times edge vectors",
  ``x_i <- x_i + C_i sum_j x_ij phi_ij`` with ``x_ij = x_i - x_j`` (minimum image) and
  ``C_i = 1 / (1 + deg_i)``, wrapped back into the box.

No reference solution is here: the expected outputs (of the correct solution and of the known mistakes)
come from the checker's ``expected`` provider (:mod:`course_lib.teaching.exercises.stored`).
"""

from __future__ import annotations

import torch

from course_lib import symmetry as S
from course_lib.neighbors import minimum_image, radius_graph
from course_lib.teaching.checks import exercise
from course_lib.teaching.exercises.common import expect_tensor, shape_of
from course_lib.teaching.exercises.stored import provider

__all__ = ["check_periodic_mse", "check_equivariant_update"]


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
