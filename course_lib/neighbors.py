"""Radius graphs (neighbour lists) in open space and in periodic boxes.

A message-passing network only lets particles talk to their neighbours: every pair closer than a
``cutoff`` becomes an edge. :func:`radius_graph` builds these edges for a batch of graphs, in
open space or in a periodic box, in pure PyTorch.

Edge convention (PyG)
---------------------
``edge_index`` has shape ``[2, E]``: ``edge_index[0]`` is the *source* ``j`` and
``edge_index[1]`` is the *target* ``i``; messages flow ``j -> i``. Every edge comes with
``edge_vec = pos[j] - pos[i]`` (shape ``[E, d]``), the vector pointing from the target to the
source. Both directions ``j -> i`` and ``i -> j`` are present, there are no self-loops and
edges never connect two different graphs of a batch. Edges are sorted by ``(i, j)``: the output
does not depend on which algorithm produced it.

A pair is an edge when its distance is *strictly* smaller than the cutoff: ``|edge_vec| < cutoff``.
The selection is done in float64, so the output does not depend on the dtype of ``pos``.

Periodic boxes and the minimum-image convention
-----------------------------------------------
A periodic box (here: orthorhombic, origin at 0, side lengths ``L = (L_x, L_y[, L_z])``) is tiled
infinitely: every particle has images at ``pos + n * L`` for all integer vectors ``n``. The
*minimum-image convention* keeps, for each pair, only the image closest to the target::

    edge_vec = pos[j] - pos[i]
    edge_vec = edge_vec - L * round(edge_vec / L)        # every component now in [-L/2, L/2]

This is only correct when at most one image of ``j`` can lie within the cutoff of ``i``. Two
images are ``L`` apart, so this holds exactly when ``cutoff < L / 2`` for the *smallest* side of the
box. With a larger cutoff the minimum image would silently miss neighbours (the second image) or,
with other algorithms, count a pair twice. :func:`radius_graph` therefore refuses
``cutoff >= L_min / 2``: use a smaller cutoff, or a larger box (replicate the cell).

Positions do not have to lie inside the box: a particle at ``-0.3 L`` or at ``1.7 L`` (or exactly
on a face, ``0`` or ``L``) is handled by the minimum-image formula. :func:`wrap_positions` maps
positions back into ``[0, L)`` if you want to store them that way (:func:`wrap_into_box` is the same
formula for per-node side lengths, without input checks, as used inside the models).
:func:`check_box` is the one validator of box side lengths (used by the models through
:func:`course_lib.data.check_model_inputs`).

Forces by automatic differentiation
-----------------------------------
Which pairs are edges is a discrete decision, taken under ``torch.no_grad``. ``edge_vec`` is then
recomputed from ``pos`` with the integer image shift found during the search::

    edge_vec = pos[j] - pos[i] + shift * L               # shift: integer, no gradient

so ``edge_vec`` is differentiable with respect to ``pos`` and ``-dE/dpos`` gives forces.

Two algorithms
--------------
* ``"brute"``: check all pairs of nodes of the same graph, ``O(N^2)`` per graph, vectorised over
  the whole batch and processed in chunks to bound memory. Simple, exact, fast for the system
  sizes of this course.
* ``"vesin"``: the `vesin <https://github.com/Luthaf/vesin>`_ cell-list neighbour list
  (``O(N)``), called graph by graph on float64 numpy copies. vesin is 3-D only; 2-D systems are
  embedded in the plane ``z = 0`` with a non-periodic ``z`` direction.

``method="auto"`` (the default) uses ``"brute"`` unless a graph has more than
:data:`BRUTE_FORCE_MAX_NODES` nodes, in which case it uses ``"vesin"``. Both give identical output.
"""

from __future__ import annotations

import torch

from course_lib.graph import same_graph_pairs

__all__ = [
    "BRUTE_FORCE_MAX_NODES",
    "radius_graph",
    "minimum_image",
    "wrap_into_box",
    "wrap_positions",
    "check_box",
]

#: ``method="auto"`` switches from the O(N^2) brute-force search to vesin when any single graph has
#: more nodes than this.
BRUTE_FORCE_MAX_NODES = 1024

# The brute-force search looks at this many (i, j) candidate pairs at a time: small enough to stay
# in the CPU cache (fastest in our timings), large enough to keep the Python loop short.
_PAIRS_PER_CHUNK = 2**16

_METHODS = ("auto", "brute", "vesin")


# --------------------------------------------------------------------------------------------
# Small public helpers
# --------------------------------------------------------------------------------------------


def minimum_image(vec: torch.Tensor, box) -> torch.Tensor:
    """Reduce displacement vectors to their minimum image in an orthorhombic periodic box.

    Args:
        vec: displacements, shape ``[..., d]``.
        box: side lengths, broadcastable to ``vec`` (e.g. ``[d]``, or ``[..., d]`` per vector).

    Returns:
        ``vec - box * round(vec / box)``, shape ``[..., d]``: every component in ``[-L/2, L/2]``.
        Differentiable with respect to ``vec`` (the rounding only adds a constant).
    """
    box = torch.as_tensor(box, dtype=vec.dtype, device=vec.device)
    if not bool((box > 0).all()):
        raise ValueError("minimum_image: box side lengths must be positive")
    return vec - box * torch.round(vec / box)


def wrap_positions(pos: torch.Tensor, box, batch: torch.Tensor | None = None) -> torch.Tensor:
    """Map positions into the periodic box ``[0, L)`` of their graph.

    Args:
        pos: positions, shape ``[N, d]``.
        box: side lengths, shape ``[num_graphs, d]`` or ``[d]`` (same box for every graph).
        batch: graph index of every node, shape ``[N]`` (``None`` = a single graph).

    Returns:
        Wrapped positions, shape ``[N, d]``, every coordinate in ``[0, L)`` (differentiable).
    """
    pos, batch, num_graphs = _check_pos_and_batch(pos, batch)
    box = check_box(box, num_graphs, pos.shape[1])
    return wrap_into_box(pos, box.to(dtype=pos.dtype, device=pos.device)[batch])


def wrap_into_box(x: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """``x - L floor(x / L)``: coordinates into ``[0, L)``, with side lengths ``L`` broadcastable to ``x``
    (e.g. per node, ``[N, d]``). No input checks (NaN passes through); differentiable.

    Rounding can turn a tiny negative coordinate into exactly ``L`` (``-1e-17 + L == L`` in floating
    point): such values are folded back to 0, so the result really is ``< L``.
    """
    wrapped = x - L * torch.floor(x / L)
    return torch.where(wrapped >= L, wrapped - L, wrapped)


# --------------------------------------------------------------------------------------------
# radius_graph
# --------------------------------------------------------------------------------------------


def radius_graph(
    pos: torch.Tensor,
    cutoff: float,
    box=None,
    batch: torch.Tensor | None = None,
    method: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """All pairs of nodes closer than ``cutoff`` (strictly), in open space or a periodic box.

    Args:
        pos: positions, float tensor of shape ``[N, d]`` with ``d = 2`` or ``3``.
        cutoff: neighbour cutoff radius; pairs with distance ``< cutoff`` become edges.
        box: ``None`` for open space, or the periodic box side lengths, shape ``[num_graphs, d]``
            or ``[d]`` (same box for every graph). Requires ``cutoff < min(L) / 2``.
        batch: graph index of every node, long tensor of shape ``[N]``, sorted (PyG convention);
            ``None`` = a single graph.
        method: ``"auto"``, ``"brute"`` or ``"vesin"`` (see the module docstring).

    Returns:
        ``(edge_index, edge_vec)``:

        * ``edge_index``: long tensor ``[2, E]`` on ``pos.device``; row 0 = source ``j``,
          row 1 = target ``i``; sorted by ``(i, j)``.
        * ``edge_vec``: ``pos[j] - pos[i]`` (minimum image if periodic), shape ``[E, d]``,
          same dtype/device as ``pos``, differentiable with respect to ``pos``.
    """
    if method not in _METHODS:
        raise ValueError(f"radius_graph: method must be one of {_METHODS}, got {method!r}")
    pos, batch, num_graphs = _check_pos_and_batch(pos, batch)
    cutoff = _check_cutoff(cutoff)
    N, d = pos.shape
    counts = torch.bincount(batch, minlength=num_graphs)  # nodes per graph, [num_graphs]

    periodic = box is not None
    if periodic:
        box = check_box(box, num_graphs, d)
        _check_cutoff_vs_box(cutoff, box)
        box = box.to(pos.device)

    if method == "auto":
        largest = int(counts.max()) if num_graphs > 0 else 0
        method = "vesin" if largest > BRUTE_FORCE_MAX_NODES else "brute"

    # 1) Which pairs are edges, and through which periodic image? A discrete choice: no gradient.
    with torch.no_grad():
        pos64 = pos.detach().to(torch.float64)
        box64 = box.detach().to(torch.float64) if periodic else None
        if method == "brute":
            j, i, shift = _pairs_brute(pos64, cutoff, box64, batch, counts)
        else:
            j, i, shift = _pairs_vesin(pos64, cutoff, box64, counts)
        # Deterministic order: by target i, then source j. With cutoff < L/2 a pair (i, j)
        # appears at most once, so the key is unique. The brute-force search enumerates the pairs
        # in this order already (same_graph_pairs, chunks of increasing i): only vesin's output is sorted.
        if method != "brute":
            order = torch.argsort(i * max(N, 1) + j)
            j, i = j[order], i[order]
            shift = shift[order] if periodic else None

    # 2) Recompute the vectors from pos so that they carry gradients.
    edge_vec = pos[j] - pos[i]
    if periodic:
        L = box.to(pos.dtype)[batch[i]]  # [E, d]
        edge_vec = edge_vec + shift.to(pos.dtype) * L
    edge_index = torch.stack([j, i], dim=0)
    return edge_index, edge_vec


# --------------------------------------------------------------------------------------------
# The two pair searches. Both work in float64 without gradients and return
# (j, i, shift): sources [E], targets [E] (long, on pos.device) and integer image shifts [E, d]
# (None in open space) such that the minimum-image vector is pos[j] - pos[i] + shift * L.
# --------------------------------------------------------------------------------------------


def _pairs_brute(pos64, cutoff, box64, batch, counts):
    """All same-graph pairs, vectorised over the batch, ``_PAIRS_PER_CHUNK`` pairs at a time."""
    N, d = pos64.shape
    device = pos64.device
    # Target i has counts[batch[i]] candidate sources: all nodes of its graph.
    per_target = counts[batch]  # [N]
    cum = torch.cumsum(per_target, 0)  # pairs up to and including target i

    sources, targets, shifts = [], [], []
    start = 0
    while start < N:
        done = int(cum[start - 1]) if start > 0 else 0
        stop = int(torch.searchsorted(cum, done + _PAIRS_PER_CHUNK, right=True))
        stop = max(stop, start + 1)  # always make progress
        # Targets start..stop-1, each paired with every node of its graph.
        j, i = same_graph_pairs(batch, counts, start, stop)

        vec = pos64[j] - pos64[i]
        shift = None
        if box64 is not None:
            L = box64[batch[i]]
            shift = -torch.round(vec / L)  # integer image shift (stored as float)
            vec = vec + shift * L
        keep = torch.nonzero(((vec * vec).sum(-1) < cutoff * cutoff) & (i != j)).squeeze(1)  # one sync, not three
        sources.append(j.index_select(0, keep))
        targets.append(i.index_select(0, keep))
        if shift is not None:
            shifts.append(shift.index_select(0, keep).long())
        start = stop

    empty = torch.zeros(0, dtype=torch.long, device=device)
    j = torch.cat(sources) if sources else empty
    i = torch.cat(targets) if targets else empty
    if box64 is None:
        return j, i, None
    shift = torch.cat(shifts) if shifts else torch.zeros(0, d, dtype=torch.long, device=device)
    return j, i, shift


def _pairs_vesin(pos64, cutoff, box64, counts):
    """vesin cell lists, graph by graph, re-filtered with the same float64 test as ``_pairs_brute``."""
    import numpy as np
    import vesin

    N, d = pos64.shape
    device = pos64.device
    periodic = box64 is not None
    # Ask vesin for a hair more than the cutoff, then apply our own strict test below: both
    # methods then decide borderline pairs with exactly the same float64 arithmetic.
    calculator = vesin.NeighborList(cutoff=cutoff * (1 + 1e-9), full_list=True)

    points_all = np.zeros((N, 3))
    points_all[:, :d] = pos64.cpu().numpy()  # 2-D: embed in the plane z = 0
    sources, targets, shifts = [], [], []
    start = 0
    for g, n in enumerate(counts.tolist()):
        if n > 1:
            points = points_all[start : start + n]
            if periodic:
                sides = np.full(3, 2 * cutoff + 1.0)  # z side for 2-D; never periodic
                sides[:d] = box64[g].cpu().numpy()
                pbc = [True] * d + [False] * (3 - d)
                cell = np.diag(sides)
            else:
                pbc, cell = False, np.zeros((3, 3))  # vesin's convention for open space
            # vesin returns pairs (a, b) with vector points[b] - points[a] + S @ cell, so
            # a = target i, b = source j and S = our shift.
            a, b, S = calculator.compute(points, cell, pbc, quantities="ijS")
            targets.append(torch.as_tensor(a.astype(np.int64)) + start)
            sources.append(torch.as_tensor(b.astype(np.int64)) + start)
            shifts.append(torch.as_tensor(S[:, :d].astype(np.int64)))
        start += n

    if sources:
        j = torch.cat(sources).to(device)
        i = torch.cat(targets).to(device)
        shift = torch.cat(shifts).to(device)
    else:
        j = i = torch.zeros(0, dtype=torch.long, device=device)
        shift = torch.zeros(0, d, dtype=torch.long, device=device)

    # Same strict test (and same arithmetic) as the brute-force path.
    batch = torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts.to(device))
    vec = pos64[j] - pos64[i]
    if periodic:
        vec = vec + shift.to(torch.float64) * box64[batch[i]]
    keep = ((vec * vec).sum(-1) < cutoff * cutoff) & (i != j)
    return j[keep], i[keep], (shift[keep] if periodic else None)


# --------------------------------------------------------------------------------------------
# Input validation: fail early, and say what to do.
# --------------------------------------------------------------------------------------------


def _check_pos_and_batch(pos, batch):
    """Return ``(pos, batch, num_graphs)`` with ``batch`` a long tensor ``[N]`` on ``pos.device``."""
    if not isinstance(pos, torch.Tensor) or not pos.is_floating_point():
        raise ValueError("pos must be a float tensor of shape [num_nodes, d] with d = 2 or 3")
    if pos.dim() != 2 or pos.shape[1] not in (2, 3):
        raise ValueError(
            f"pos must have shape [num_nodes, d] with d = 2 or 3, got {tuple(pos.shape)}; "
            "use pos.view(-1, d) for a single configuration"
        )
    if not bool(torch.isfinite(pos).all()):
        raise ValueError(
            "pos contains NaN or inf; check the simulation / data that produced it "
            "(e.g. a blown-up integration step)"
        )
    N = pos.shape[0]
    if batch is None:
        return pos, torch.zeros(N, dtype=torch.long, device=pos.device), 1
    batch = torch.as_tensor(batch, device=pos.device)
    if batch.dtype.is_floating_point or batch.dtype == torch.bool or batch.dim() != 1:
        raise ValueError("batch must be an integer tensor of shape [num_nodes] (graph index per node)")
    if batch.numel() != N:
        raise ValueError(f"batch has {batch.numel()} entries but pos has {N} nodes; they must match")
    batch = batch.long()
    if N == 0:
        return pos, batch, 0
    # one host-device synchronisation for the three checks (matters on a GPU, where each one waits for the queue)
    smallest, unsorted, largest = torch.stack([batch.min(), (batch[1:] < batch[:-1]).any().long(),
                                               batch.max()]).tolist()
    if smallest < 0:
        raise ValueError("batch contains negative graph indices")
    if unsorted:
        raise ValueError(
            "batch must be sorted (nodes of graph 0 first, then graph 1, ...), as produced by "
            "torch_geometric's Batch / DataLoader"
        )
    return pos, batch, largest + 1


def _check_cutoff(cutoff) -> float:
    cutoff = float(cutoff)
    if not (cutoff > 0 and cutoff < float("inf")):
        raise ValueError(f"cutoff must be a positive finite number, got {cutoff}")
    return cutoff


def check_box(box, num_graphs: int, d: int) -> torch.Tensor:
    """The one validator of periodic boxes: return ``box`` as a float tensor ``[num_graphs, d]``.

    Accepts ``[num_graphs, d]`` (one row per graph, what PyG makes of ``[1, d]`` boxes when batching) or
    ``[d]`` (one box shared by every graph); raises ``ValueError`` naming ``'box'`` and what to do for
    any other shape and for side lengths that are not positive and finite.
    """
    box = torch.as_tensor(box)
    if not box.is_floating_point():
        box = box.to(torch.get_default_dtype())
    if box.dim() == 1 and box.shape[0] == d:
        box = box.expand(num_graphs, d)
    if box.dim() != 2 or box.shape[1] != d:
        raise ValueError(
            f"'box' must hold the side lengths of the periodic box, shape [num_graphs, {d}] or "
            f"[{d}], got shape {tuple(box.shape)}"
        )
    if box.shape[0] != num_graphs:
        raise ValueError(
            f"'box' has {box.shape[0]} rows but the batch has {num_graphs} graphs; "
            "give one row of side lengths per graph (PyG stacks [1, d] boxes into [num_graphs, d] when "
            "batching), or a single [d] box shared by all"
        )
    if not bool(torch.isfinite(box).all()) or not bool((box > 0).all()):
        raise ValueError(f"'box' side lengths must be positive and finite, got {box.tolist()}")
    return box


def _check_cutoff_vs_box(cutoff: float, box: torch.Tensor) -> None:
    if box.numel() == 0:
        return
    smallest = float(box.min())
    if cutoff >= smallest / 2:
        raise ValueError(
            f"cutoff = {cutoff} is >= half of the smallest box side (L = {smallest}, L/2 = "
            f"{smallest / 2}). Under the minimum-image convention a cutoff >= L/2 would miss "
            "neighbours or double count periodic images. Use a smaller cutoff or a larger box "
            "(replicate the cell)."
        )
