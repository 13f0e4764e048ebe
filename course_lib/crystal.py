"""Helpers for trajectories in a periodic box, with or without a fixed crystal (notebooks 02 and 03).

- Crystal symmetries (Curie's principle: with the crystal present, only the operations that map the
  crystal onto itself remain symmetries of the dynamics): :func:`lattice_sites`,
  :func:`lattice_translation`, :func:`lattice_point_operation`, :func:`crystal_maps_onto_itself`.
  :func:`mobile_only` (move the particles, not the crystal: not a symmetry).
  They return :class:`course_lib.symmetry.Transform` objects, so the checks use the same API as every
  other symmetry check of the course.
- Rollout metrics: :func:`rollout_position_errors` (minimum-image squared error per step),
  :func:`total_momentum` (unit masses) and :func:`speed_distance` (Wasserstein-1 between speed
  distributions).

Conventions: the square crystal of ``crystal_trajectories`` has sites at ``((i + 1/2) a, (j + 1/2) a)``
with spacing ``a = L / n`` (``a = 2.5``, ``n = 4``, ``L = 10``).
"""

from __future__ import annotations

import torch

from course_lib import symmetry as S
from course_lib.neighbors import minimum_image

__all__ = [
    "lattice_sites",
    "lattice_translation",
    "lattice_point_operation",
    "crystal_maps_onto_itself",
    "MobileOnlyTransform",
    "mobile_only",
    "rollout_position_errors",
    "total_momentum",
    "speed_distance",
]


def lattice_sites(n: int = 4, spacing: float = 2.5) -> torch.Tensor:
    """The ``n * n`` sites ``((i + 1/2) a, (j + 1/2) a)`` of the square crystal, float64 ``[n*n, 2]``."""
    idx = torch.arange(n, dtype=torch.float64)
    gx, gy = torch.meshgrid(idx, idx, indexing="ij")
    return (torch.stack([gx.flatten(), gy.flatten()], dim=-1) + 0.5) * spacing


def lattice_translation(i: int, j: int, spacing: float = 2.5) -> S.Transform:
    """Translation by the lattice vector ``(i a, j a)``, wrapped into the box (a crystal symmetry)."""
    t = torch.tensor([i * spacing, j * spacing], dtype=torch.float64)
    return S.Transform(f"lattice translation ({i}, {j})", t=t, wrap=True)


def lattice_point_operation(R: torch.Tensor, center, name: str | None = None) -> S.Transform:
    """The point operation ``x -> R (x - c) + c`` about the point ``c``, wrapped into the box.

    With ``R`` a 90-degree rotation or a mirror of the square lattice and ``c`` a lattice site (or the
    centre of a square of four sites, such as the box corner ``c = 0`` of the course's crystal), this
    maps the crystal onto itself (check with :func:`crystal_maps_onto_itself`). About the midpoint of a
    bond, e.g. ``c = (2.5, 1.25)``, a 90-degree rotation does not: that point has only a 2-fold axis.
    """
    R = torch.as_tensor(R, dtype=torch.float64)
    c = torch.as_tensor(center, dtype=torch.float64)
    t = c - R @ c
    label = name or f"point operation (det {float(torch.linalg.det(R)):+.0f}) about {tuple(c.tolist())}"
    return S.Transform(label, R=R, t=t, wrap=True)


def crystal_maps_onto_itself(data, transform: S.Transform, atol: float = 1e-5) -> bool:
    """True when ``transform`` maps the crystal atoms (``data.fixed``) of a graph onto themselves
    up to a permutation: every transformed site coincides (minimum image) with some original site."""
    fixed = data.fixed.to(torch.bool)
    batch = getattr(data, "batch", None)
    if batch is None:
        batch = torch.zeros(data.num_nodes, dtype=torch.long)
    moved_all = transform.apply(data.pos.to(torch.float64), "position", data)
    box = data.box.reshape(-1, data.pos.shape[-1]).to(torch.float64)
    for g in batch.unique():
        sel = fixed & (batch == g)
        sites, moved = data.pos[sel].to(torch.float64), moved_all[sel]
        L = box[int(g)] if box.shape[0] > 1 else box[0]
        d = minimum_image(moved[:, None, :] - sites[None, :, :], L).norm(dim=-1)  # [n, n]
        close = d < atol
        if not (bool(close.sum(dim=1).eq(1).all()) and bool(close.sum(dim=0).eq(1).all())):
            return False
    return True


def rollout_position_errors(pred_pos: torch.Tensor, true_pos: torch.Tensor, box: torch.Tensor,
                            batch: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared position error per frame, ``[T]``: ``mean_i |min_image(pred_i(t) - true_i(t))|^2``.

    ``pred_pos``, ``true_pos``: ``[N, T, d]``; ``box``: ``[G, d]`` (or ``[1, d]``); ``batch``: ``[N]``
    graph of every node (None: one graph); ``mask``: ``[N]`` bool, the nodes to average over (e.g. the
    mobile ones). The squared distance is summed over the ``d`` components (units: length^2).
    """
    n = pred_pos.shape[0]
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=pred_pos.device)
    L = box.reshape(-1, pred_pos.shape[-1]).to(pred_pos.dtype)
    L = L[batch] if L.shape[0] > 1 else L.expand(n, -1)
    diff = minimum_image(pred_pos - true_pos.to(pred_pos.dtype), L[:, None, :])
    sq = diff.pow(2).sum(-1)  # [N, T]
    if mask is not None:
        sq = sq[mask.to(torch.bool)]
    return sq.mean(0)


def total_momentum(vel: torch.Tensor, batch: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                   num_graphs: int | None = None) -> torch.Tensor:
    """Total momentum of every graph with unit masses: ``sum_i v_i``.

    ``vel``: ``[N, d]`` or ``[N, T, d]`` (a trajectory); returns ``[G, d]`` or ``[G, T, d]``.
    ``mask``: ``[N]`` bool, the nodes to include (e.g. the mobile ones).
    """
    n = vel.shape[0]
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=vel.device)
    if mask is not None:
        vel = vel * mask.to(vel.dtype).view(n, *([1] * (vel.dim() - 1)))
    G = int(batch.max()) + 1 if num_graphs is None else num_graphs
    out = vel.new_zeros(G, *vel.shape[1:])
    return out.index_add_(0, batch, vel)


def speed_distance(pred_vel: torch.Tensor, true_vel: torch.Tensor) -> float:
    """Wasserstein-1 distance between the distributions of the speeds ``|v|`` of two sets of velocities
    (any shape ``[..., d]``; every vector is one sample). Same units as the speeds."""
    from scipy.stats import wasserstein_distance

    p = pred_vel.detach().reshape(-1, pred_vel.shape[-1]).norm(dim=-1).cpu().double().numpy()
    q = true_vel.detach().reshape(-1, true_vel.shape[-1]).norm(dim=-1).cpu().double().numpy()
    return float(wasserstein_distance(p, q))


class MobileOnlyTransform(S.Transform):
    """A transform that moves only the mobile atoms (``data.fixed`` False); crystal atoms stay put.

    Not a symmetry of a system with a crystal (in general): used to show that a crystal-conditioned
    model is *not* equivariant when the particles move and the crystal does not.
    """

    def apply(self, value: torch.Tensor, kind: str, data=None) -> torch.Tensor:
        out = super().apply(value, kind, data)
        fixed = None if data is None else getattr(data, "fixed", None)
        if fixed is None or kind not in ("position", "vector", "pseudovector"):
            return out
        hold = fixed.to(torch.bool).view(-1, *([1] * (value.dim() - 1)))
        return torch.where(hold, value.to(out.dtype), out)


def mobile_only(transform: S.Transform) -> MobileOnlyTransform:
    """The same rotation/translation as ``transform``, applied to the mobile atoms only (no permutation)."""
    if transform.perm is not None:
        raise ValueError("mobile_only: a permutation cannot be restricted to the mobile atoms")
    return MobileOnlyTransform(f"{transform.name}, mobile atoms only", transform.R, transform.t, None,
                               transform.wrap, dict(transform.field_kinds))
