"""Graph and batch helpers shared by every model of the course (one home for each).

A batch of graphs follows PyG's convention: the nodes of all graphs are stacked, ``batch [N]`` holds
the graph index of every node (sorted), and per-graph quantities have a leading ``[num_graphs]`` axis.
A single :class:`torch_geometric.data.Data` without ``batch`` is one graph.

- :func:`scatter_sum`  sum edge or node rows into their target index  ``[E, ...] -> [dim_size, ...]``
- :func:`batch_of`     the graph index of every node, zeros for a single graph  ``[N]``
- :func:`num_graphs`   how many graphs a batch holds
"""

from __future__ import annotations

import torch

__all__ = ["scatter_sum", "batch_of", "num_graphs"]


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
