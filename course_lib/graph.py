"""Graph and batch helpers shared by every model of the course (one home for each).

A batch of graphs follows PyG's convention: the nodes of all graphs are stacked, ``batch [N]`` holds
the graph index of every node (sorted), and per-graph quantities have a leading ``[num_graphs]`` axis.
A single :class:`torch_geometric.data.Data` without ``batch`` is one graph.

- :func:`scatter_sum`  sum edge or node rows into their target index  ``[E, ...] -> [dim_size, ...]``
- :func:`batch_of`     the graph index of every node, zeros for a single graph  ``[N]``
- :func:`num_graphs`   how many graphs a batch holds
- :func:`same_graph_pairs`  every ordered pair ``(j, i)`` of nodes of the same graph (self-pairs
  included), the enumeration behind :func:`fully_connected_edges` and the brute-force search of
  :func:`course_lib.neighbors.radius_graph`
- :func:`fully_connected_edges`  all pairs ``i != j`` of each graph as an ``edge_index [2, E]``
- :func:`count_parameters`  the number of (trainable) parameters of a model

Helpers about periodic boxes live in :mod:`course_lib.neighbors` (one home each):
:func:`~course_lib.neighbors.wrap_into_box` / :func:`~course_lib.neighbors.wrap_positions` (positions into
``[0, L)``), :func:`~course_lib.neighbors.check_box` (the box validator),
:func:`~course_lib.neighbors.minimum_image`. Checks of model inputs against the data contract live in
:func:`course_lib.data.check_model_inputs`; building blocks of the models (``mlp``, the energy scale
fit) in :mod:`course_lib.models.blocks`.
"""

from __future__ import annotations

import torch

__all__ = ["scatter_sum", "batch_of", "num_graphs", "same_graph_pairs", "fully_connected_edges", "count_parameters"]


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """out[k] = sum of src[e] over e with index[e] == k; src [E, ...] -> [dim_size, ...]."""
    out = src.new_zeros((dim_size, *src.shape[1:]))
    return out.index_add(0, index, src)


def batch_of(data) -> torch.Tensor:
    """The graph index of every node ``[N]`` (long): ``data.batch``, or zeros for a single graph."""
    b = getattr(data, "batch", None)
    if b is None:
        return torch.zeros(data.num_nodes, dtype=torch.long, device=data.pos.device)
    return b


def num_graphs(data) -> int:
    """The number of graphs in ``data``: 1 without a ``batch`` vector, else ``num_graphs`` (or max + 1)."""
    if getattr(data, "batch", None) is None:
        return 1
    n = getattr(data, "num_graphs", None)
    if n is not None:
        return int(n)
    return int(data.batch.max()) + 1 if data.batch.numel() else 1


def same_graph_pairs(batch: torch.Tensor, counts: torch.Tensor, start: int = 0,
                     stop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ordered pair of nodes of the same graph, self-pairs included, for the targets
    ``i = start .. stop - 1``: ``(j [P], i [P])`` sorted by ``(i, j)``.

    ``batch`` [N]: graph index of every node, sorted (PyG convention); ``counts`` [num_graphs]: nodes per
    graph (``torch.bincount(batch)``). Target ``i`` gets every node ``j`` of its graph as a candidate
    source, so ``P = sum_i counts[batch[i]]``; callers drop ``i == j`` (and, for a radius graph, pairs
    beyond the cutoff). ``start``/``stop`` let a caller enumerate the pairs in chunks.
    """
    device = batch.device
    stop = batch.numel() if stop is None else stop
    first_node = torch.cumsum(counts, 0) - counts  # first node of every graph
    per_target = counts[batch[start:stop]]  # candidate sources of each target: all nodes of its graph
    i = torch.repeat_interleave(torch.arange(start, stop, device=device), per_target)
    first_of_block = torch.cumsum(per_target, 0) - per_target
    k = torch.arange(i.numel(), device=device) - torch.repeat_interleave(first_of_block, per_target)
    return first_node[batch[i]] + k, i


def fully_connected_edges(batch: torch.Tensor) -> torch.Tensor:
    """All pairs ``i != j`` within each graph: edge_index ``[2, E]`` (row 0 = source j, row 1 = target i).

    ``batch`` [N]: graph index of every node, sorted (PyG convention). ``E = sum_g M_g (M_g - 1)``.
    """
    if batch.numel() == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=batch.device)
    j, i = same_graph_pairs(batch, torch.bincount(batch))
    keep = torch.nonzero(i != j).squeeze(1)  # one host-device synchronisation for both rows
    return torch.stack([j.index_select(0, keep), i.index_select(0, keep)], dim=0)


def count_parameters(model: torch.nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` unless ``trainable_only=False``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
