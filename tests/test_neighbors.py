"""Tests for course_lib.neighbors: radius graphs in open space and periodic boxes.

The reference below knows nothing about the minimum-image convention: it tries every periodic
image of every pair explicitly, in float64 numpy, and is compared with both search methods.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import vesin
from scipy.spatial.distance import cdist

import course_lib.neighbors as nb
from course_lib.neighbors import minimum_image, radius_graph, wrap_positions

METHODS = ("brute", "vesin")
DIMS = (2, 3)


# --------------------------------------------------------------------------------------------
# Reference implementations and helpers
# --------------------------------------------------------------------------------------------


def reference_edges(pos, cutoff, box=None, sizes=None, max_shift=2):
    """Edges by trying all image shifts n in {-max_shift..max_shift}^d for all ordered pairs.

    Returns (edge_index [2, E], edge_vec [E, d]) as float64/int64 numpy arrays sorted by (i, j).
    """
    pos = np.asarray(pos, dtype=np.float64)
    N, d = pos.shape
    sizes = [N] if sizes is None else list(sizes)
    periodic = box is not None
    if periodic:
        box = np.broadcast_to(np.asarray(box, dtype=np.float64), (len(sizes), d))
    shifts = np.array(list(itertools.product(range(-max_shift, max_shift + 1), repeat=d)), dtype=np.float64)
    if not periodic:
        shifts = np.zeros((1, d))

    src, dst, vecs = [], [], []
    start = 0
    for g, n in enumerate(sizes):
        x = pos[start : start + n]
        L = box[g] if periodic else np.zeros(d)
        for i in range(n):
            for j in range(n):
                if i == j:
                    continue
                images = x[j] + shifts * L - x[i]  # [num_shifts, d]
                close = np.linalg.norm(images, axis=1) < cutoff
                assert close.sum() <= 1, "cutoff < L/2 allows at most one image per pair"
                if close.any():
                    src.append(start + j)
                    dst.append(start + i)
                    vecs.append(images[close][0])
        start += n
    edge_index = np.array([src, dst], dtype=np.int64).reshape(2, -1)
    edge_vec = np.array(vecs, dtype=np.float64).reshape(-1, d)
    order = np.lexsort((edge_index[0], edge_index[1]))  # by target i, then source j
    return edge_index[:, order], edge_vec[order]


def random_system(rng, d, sizes, low=-0.3, high=1.7):
    """Several graphs with different non-cubic boxes; positions in [low*L, high*L].

    The first nodes of every graph sit exactly on the box faces and corners.
    """
    boxes = rng.uniform(3.0, 6.0, size=(len(sizes), d))
    chunks = []
    for n, L in zip(sizes, boxes):
        x = rng.uniform(low, high, size=(n, d)) * L
        if n >= 4:
            x[0] = 0.0  # a corner ...
            x[1] = L  # ... and the opposite corner: the same point under periodicity
            x[2, 0] = L[0]  # on a face
            x[3, 0], x[3, 1] = -0.3 * L[0], 1.7 * L[1]  # outside the box
        chunks.append(x)
    pos = np.concatenate(chunks)
    batch = np.repeat(np.arange(len(sizes)), sizes)
    return pos, boxes, batch


def as_torch(pos, boxes=None, batch=None):
    out = [torch.tensor(pos, dtype=torch.float64)]
    out.append(None if boxes is None else torch.tensor(boxes, dtype=torch.float64))
    out.append(None if batch is None else torch.tensor(batch, dtype=torch.long))
    return out


def assert_same_as_reference(edge_index, edge_vec, ref_index, ref_vec):
    assert edge_index.dtype == torch.long
    np.testing.assert_array_equal(edge_index.numpy(), ref_index)
    np.testing.assert_allclose(edge_vec.detach().numpy(), ref_vec, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------------------------
# Correctness against the all-images reference
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frac", [0.35, 0.8, 0.999])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("d", DIMS)
def test_periodic_matches_all_images_reference(d, method, frac):
    rng = np.random.default_rng(100 * d + int(1000 * frac))
    sizes = [1, 5, 23, 40]
    pos, boxes, batch = random_system(rng, d, sizes)
    cutoff = frac * boxes.min() / 2  # up to just below L/2
    ref_index, ref_vec = reference_edges(pos, cutoff, boxes, sizes)
    assert ref_index.shape[1] > 0

    pos_t, box_t, batch_t = as_torch(pos, boxes, batch)
    edge_index, edge_vec = radius_graph(pos_t, cutoff, box=box_t, batch=batch_t, method=method)
    assert_same_as_reference(edge_index, edge_vec, ref_index, ref_vec)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("d", DIMS)
def test_open_space_matches_scipy(d, method):
    rng = np.random.default_rng(d)
    sizes = [3, 30, 17]
    pos = rng.normal(size=(sum(sizes), d)) * 2.0
    batch = np.repeat(np.arange(len(sizes)), sizes)
    cutoff = 1.7

    ref_src, ref_dst = [], []
    start = 0
    for n in sizes:
        dist = cdist(pos[start : start + n], pos[start : start + n])
        i, j = np.nonzero((dist < cutoff) & ~np.eye(n, dtype=bool))  # row-major: sorted by (i, j)
        ref_src.append(j + start)
        ref_dst.append(i + start)
        start += n
    ref_index = np.stack([np.concatenate(ref_src), np.concatenate(ref_dst)])
    ref_vec = pos[ref_index[0]] - pos[ref_index[1]]

    pos_t, _, batch_t = as_torch(pos, None, batch)
    edge_index, edge_vec = radius_graph(pos_t, cutoff, batch=batch_t, method=method)
    assert_same_as_reference(edge_index, edge_vec, ref_index, ref_vec)
    # The numpy all-images reference agrees too (without a box it tries only n = 0).
    assert_same_as_reference(edge_index, edge_vec, *reference_edges(pos, cutoff, None, sizes))


@pytest.mark.parametrize("method", METHODS)
def test_handmade_periodic_example(method):
    # Two particles near opposite faces of the box are neighbours through the face at x = 0.
    box = torch.tensor([4.0, 5.0, 6.0], dtype=torch.float64)
    pos = torch.tensor([[0.1, 0.0, 0.0], [3.9, 5.0, 0.0]], dtype=torch.float64)
    edge_index, edge_vec = radius_graph(pos, 1.0, box=box, method=method)
    assert edge_index.tolist() == [[1, 0], [0, 1]]  # 1 -> 0 then 0 -> 1
    expected = torch.tensor([[-0.2, 0.0, 0.0], [0.2, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(edge_vec, expected, rtol=0, atol=1e-12)
    # Without the box they are far apart.
    assert radius_graph(pos, 1.0, method=method)[0].shape == (2, 0)


@pytest.mark.parametrize("method", METHODS)
def test_cutoff_is_strict(method):
    pos = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    assert radius_graph(pos, 1.0, method=method)[0].shape[1] == 0  # distance == cutoff: no edge
    assert radius_graph(pos, 1.0 + 1e-12, method=method)[0].shape[1] == 2
    box = torch.tensor([3.0, 3.0], dtype=torch.float64)
    pos = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)  # distance 1 through the face
    assert radius_graph(pos, 1.0, box=box, method=method)[0].shape[1] == 0
    assert radius_graph(pos, 1.0 + 1e-12, box=box, method=method)[0].shape[1] == 2


# --------------------------------------------------------------------------------------------
# vesin: same output as brute force, and consistent with a raw vesin call
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("d", DIMS)
def test_vesin_and_brute_are_identical(d, periodic):
    rng = np.random.default_rng(7 + d)
    sizes = [300, 2, 120]
    pos, boxes, batch = random_system(rng, d, sizes)
    boxes *= 2.0
    pos_t, box_t, batch_t = as_torch(pos, boxes if periodic else None, batch)
    cutoff = 0.45 * boxes.min()
    ei_b, ev_b = radius_graph(pos_t, cutoff, box=box_t, batch=batch_t, method="brute")
    ei_v, ev_v = radius_graph(pos_t, cutoff, box=box_t, batch=batch_t, method="vesin")
    assert ei_b.shape[1] > 1000
    assert torch.equal(ei_b, ei_v)
    assert torch.equal(ev_b, ev_v)  # bitwise: both are computed from the same integer shifts


def test_matches_raw_vesin_call():
    rng = np.random.default_rng(3)
    L = np.array([4.0, 5.0, 6.5])
    pos = rng.uniform(-0.3, 1.7, size=(80, 3)) * L
    cutoff = 1.9
    cell = np.diag(L)
    i, j, S, D = vesin.NeighborList(cutoff=cutoff, full_list=True).compute(pos, cell, True, quantities="ijSD")
    # vesin's sign convention: the vector of pair (i, j) is pos[j] - pos[i] + S @ cell.
    np.testing.assert_allclose(D, pos[j] - pos[i] + S @ cell, atol=1e-12)

    edge_index, edge_vec = radius_graph(torch.tensor(pos), cutoff, box=torch.tensor(L))
    ours = {(int(s), int(t)): v for s, t, v in zip(*edge_index.numpy(), edge_vec.numpy())}
    theirs = {(int(b), int(a)): v for a, b, v in zip(i, j, D)}  # vesin i = our target
    assert ours.keys() == theirs.keys()
    for key, vec in theirs.items():
        np.testing.assert_allclose(ours[key], vec, atol=1e-12)


def test_auto_switches_to_vesin_above_threshold(monkeypatch):
    calls = []
    original = nb._pairs_vesin

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(nb, "_pairs_vesin", spy)
    rng = np.random.default_rng(0)
    pos, boxes, batch = random_system(rng, 3, [12, 30])
    pos_t, box_t, batch_t = as_torch(pos, boxes, batch)
    cutoff = 0.4 * boxes.min()

    brute = radius_graph(pos_t, cutoff, box=box_t, batch=batch_t, method="brute")
    radius_graph(pos_t, cutoff, box=box_t, batch=batch_t)  # largest graph 30 <= 1024 nodes
    assert not calls
    monkeypatch.setattr(nb, "BRUTE_FORCE_MAX_NODES", 20)
    auto = radius_graph(pos_t, cutoff, box=box_t, batch=batch_t)  # 30 > 20 nodes
    assert calls
    assert torch.equal(brute[0], auto[0]) and torch.equal(brute[1], auto[1])


def test_brute_force_chunking_does_not_change_the_result(monkeypatch):
    rng = np.random.default_rng(4)
    pos, boxes, batch = random_system(rng, 3, [9, 1, 40, 13])
    pos_t, box_t, batch_t = as_torch(pos, boxes, batch)
    cutoff = 0.45 * boxes.min()
    one_chunk = radius_graph(pos_t, cutoff, box=box_t, batch=batch_t, method="brute")
    monkeypatch.setattr(nb, "_PAIRS_PER_CHUNK", 37)  # smaller than one target's candidate list
    many_chunks = radius_graph(pos_t, cutoff, box=box_t, batch=batch_t, method="brute")
    assert torch.equal(one_chunk[0], many_chunks[0]) and torch.equal(one_chunk[1], many_chunks[1])


# --------------------------------------------------------------------------------------------
# Structure of the graph
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("d", DIMS)
def test_graph_structure(d, method):
    rng = np.random.default_rng(11)
    pos, boxes, batch = random_system(rng, d, [6, 25, 1, 30])
    pos_t, box_t, batch_t = as_torch(pos, boxes, batch)
    edge_index, edge_vec = radius_graph(pos_t, 0.45 * boxes.min(), box=box_t, batch=batch_t, method=method)
    j, i = edge_index
    assert bool((i != j).all()), "no self-loops"
    assert torch.equal(batch_t[i], batch_t[j]), "edges never cross graphs"
    # Sorted by (target, source).
    key = i * len(pos) + j
    assert bool((key[1:] > key[:-1]).all())
    # Symmetric: the reverse of every edge is an edge, with the opposite vector.
    reverse = {(int(a), int(b)): v for a, b, v in zip(i, j, edge_vec)}
    for a, b, v in zip(j, i, edge_vec):
        torch.testing.assert_close(reverse[(int(a), int(b))], -v, rtol=0, atol=1e-12)


def test_dtype_device_and_small_inputs():
    rng = np.random.default_rng(5)
    pos, boxes, batch = random_system(rng, 3, [10, 15])
    pos64, box_t, batch_t = as_torch(pos, boxes, batch)
    cutoff = 0.4 * boxes.min()
    ei64, ev64 = radius_graph(pos64, cutoff, box=box_t, batch=batch_t)
    ei32, ev32 = radius_graph(pos64.float(), cutoff, box=box_t, batch=batch_t)
    assert ev32.dtype == torch.float32 and ev64.dtype == torch.float64
    assert ei32.dtype == torch.long and ei32.device == pos64.device
    torch.testing.assert_close(ev32, ev64.float())

    # A [d] box is shared by all graphs; lists and numpy arrays are accepted.
    a = radius_graph(pos64, 1.2, box=torch.tensor([4.0, 5.0, 6.0]).repeat(2, 1), batch=batch_t)
    b = radius_graph(pos64, 1.2, box=[4.0, 5.0, 6.0], batch=batch_t)
    c = radius_graph(pos64, 1.2, box=np.array([[4.0, 5.0, 6.0]] * 2), batch=batch_t)
    assert torch.equal(a[0], b[0]) and torch.equal(a[0], c[0]) and torch.equal(a[1], b[1])

    for method in METHODS:
        ei, ev = radius_graph(torch.zeros(0, 3), 1.0, method=method)
        assert ei.shape == (2, 0) and ev.shape == (0, 3)
        ei, ev = radius_graph(torch.zeros(1, 2), 1.0, box=[3.0, 3.0], method=method)
        assert ei.shape == (2, 0) and ev.shape == (0, 2)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(cutoff=1.5), "box"),  # cutoff == L/2 of the smallest side (3.0)
        (dict(cutoff=2.5), "smaller cutoff or a larger box"),
        (dict(cutoff=0.0), "positive"),
        (dict(cutoff=-1.0), "positive"),
        (dict(cutoff=float("nan")), "positive"),
        (dict(box=[3.0, 4.0]), "shape"),
        (dict(box=[[3.0, 4.0, 5.0], [3.0, 4.0, 5.0]]), "graphs"),
        (dict(box=[3.0, 0.0, 5.0]), "positive"),
        (dict(box=[3.0, -4.0, 5.0]), "positive"),
        (dict(batch=torch.zeros(3, dtype=torch.long)), "batch"),
        (dict(batch=torch.tensor([1, 0, 0, 0])), "sorted"),
        (dict(method="kdtree"), "method"),
    ],
)
def test_invalid_input_raises(kwargs, match):
    args = dict(pos=torch.rand(4, 3), cutoff=1.0, box=[3.0, 4.0, 5.0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        radius_graph(**args)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_positions_raise(bad):
    pos = torch.rand(5, 3)
    pos[2, 1] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        radius_graph(pos, 1.0)


@pytest.mark.parametrize("shape", [(5,), (5, 4), (5, 1), (2, 5, 3)])
def test_wrong_pos_shape_raises(shape):
    with pytest.raises(ValueError, match="pos"):
        radius_graph(torch.rand(*shape), 0.5)


def test_cutoff_checked_against_every_graph():
    # Graph 1 has a small box: cutoff 1.5 is fine for graph 0 (L = 10) but not for graph 1 (L = 2.9).
    pos = torch.rand(6, 2)
    batch = torch.tensor([0, 0, 0, 1, 1, 1])
    box = torch.tensor([[10.0, 10.0], [10.0, 2.9]])
    with pytest.raises(ValueError, match="minimum-image"):
        radius_graph(pos, 1.5, box=box, batch=batch)
    radius_graph(pos, 1.4, box=box, batch=batch)  # fine


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------


def _well_separated_system(cutoff, L, n, d, seed):
    """Positions where no pair is within 0.05 of the cutoff and no two points coincide."""
    rng = np.random.default_rng(seed)
    while True:
        pos = rng.uniform(-0.3, 1.3, size=(n, d)) * L.numpy()
        dist = np.linalg.norm(minimum_image(torch.tensor(pos[:, None] - pos[None]), L).numpy(), axis=-1)
        off = dist[~np.eye(n, dtype=bool)]
        if np.abs(off - cutoff).min() > 0.05 and off.min() > 0.1 and (off < cutoff).sum() >= 4:
            return torch.tensor(pos)


@pytest.mark.parametrize("method", METHODS)
def test_edge_vec_is_differentiable(method):
    L = torch.tensor([4.0, 5.0, 4.5], dtype=torch.float64)
    pos = _well_separated_system(1.8, L, 8, 3, seed=1).requires_grad_(True)
    edge_index, edge_vec = radius_graph(pos, 1.8, box=L, method=method)
    assert edge_vec.requires_grad
    (grad,) = torch.autograd.grad(edge_vec.sum(), pos)
    assert bool(torch.isfinite(grad).all())
    # d(sum of pos[j] - pos[i])/dpos_k = (#edges with source k) - (#edges with target k) = 0 here,
    # because the edge set is symmetric.
    torch.testing.assert_close(grad, torch.zeros_like(grad))


def test_gradcheck_through_edge_lengths():
    L = torch.tensor([4.0, 5.0, 4.5], dtype=torch.float64)
    cutoff = 1.8
    pos = _well_separated_system(cutoff, L, 7, 3, seed=2).requires_grad_(True)

    def pair_energy(p):  # any smooth function of the edge lengths
        _, edge_vec = radius_graph(p, cutoff, box=L)
        r = edge_vec.norm(dim=-1)
        return torch.cos(torch.pi * r / cutoff).sum() + (1.0 / r).sum()

    assert torch.autograd.gradcheck(pair_energy, (pos,), eps=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Symmetries
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", DIMS)
def test_periodic_translation_leaves_graph_unchanged(d):
    rng = np.random.default_rng(21)
    pos, boxes, batch = random_system(rng, d, [20, 35])
    pos_t, box_t, batch_t = as_torch(pos, boxes, batch)
    cutoff = 0.45 * boxes.min()
    edge_index, edge_vec = radius_graph(pos_t, cutoff, box=box_t, batch=batch_t)

    shift = torch.tensor(rng.uniform(-10, 10, size=(2, d)))[batch_t]  # one translation per graph
    moved = wrap_positions(pos_t + shift, box_t, batch_t)
    edge_index2, edge_vec2 = radius_graph(moved, cutoff, box=box_t, batch=batch_t)
    assert torch.equal(edge_index, edge_index2)  # the same nodes, so even the labels agree
    torch.testing.assert_close(edge_vec, edge_vec2, rtol=0, atol=1e-10)


@pytest.mark.parametrize("periodic", [True, False])
def test_permuting_nodes_relabels_the_graph(periodic):
    rng = np.random.default_rng(8)
    sizes = [15, 25]
    pos, boxes, batch = random_system(rng, 3, sizes)
    pos_t, box_t, batch_t = as_torch(pos, boxes if periodic else None, batch)
    cutoff = 0.45 * boxes.min()
    # Permute nodes within each graph so that batch stays sorted.
    perm = torch.cat(
        [torch.randperm(n, generator=torch.Generator().manual_seed(n)) + s for n, s in zip(sizes, [0, 15])]
    )
    edge_index, edge_vec = radius_graph(pos_t, cutoff, box=box_t, batch=batch_t)
    edge_index_p, edge_vec_p = radius_graph(pos_t[perm], cutoff, box=box_t, batch=batch_t)

    # Node k of the permuted system is node perm[k] of the original one.
    original = {(int(j), int(i)): v for (j, i), v in zip(edge_index.T, edge_vec)}
    relabelled = {(int(perm[j]), int(perm[i])): v for (j, i), v in zip(edge_index_p.T, edge_vec_p)}
    assert original.keys() == relabelled.keys()
    for key, vec in original.items():
        torch.testing.assert_close(relabelled[key], vec, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------
# minimum_image and wrap_positions
# --------------------------------------------------------------------------------------------


def test_minimum_image():
    box = torch.tensor([2.0, 3.0], dtype=torch.float64)
    vec = torch.tensor([[0.4, -0.4], [1.2, 2.0], [-1.2, -2.0], [4.3, -7.0], [2.0, 3.0]], dtype=torch.float64)
    expected = torch.tensor(
        [[0.4, -0.4], [-0.8, -1.0], [0.8, 1.0], [0.3, -1.0], [0.0, 0.0]], dtype=torch.float64
    )
    out = minimum_image(vec, box)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert bool((out.abs() <= box / 2).all())
    # Per-vector boxes broadcast, and lists are accepted.
    torch.testing.assert_close(minimum_image(vec, box.expand(5, 2)), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(minimum_image(vec, [2.0, 3.0]), expected, rtol=0, atol=1e-12)
    # The result differs from vec by whole box vectors, and the gradient passes straight through.
    n = (vec - out) / box
    torch.testing.assert_close(n, torch.round(n))
    v = vec.clone().requires_grad_(True)
    minimum_image(v, box).sum().backward()
    torch.testing.assert_close(v.grad, torch.ones_like(vec))
    with pytest.raises(ValueError, match="positive"):
        minimum_image(vec, [2.0, 0.0])


def test_wrap_positions():
    box = torch.tensor([[2.0, 3.0], [4.0, 5.0]], dtype=torch.float64)
    batch = torch.tensor([0, 0, 0, 1, 1])
    pos = torch.tensor(
        [[0.0, 3.0], [-0.5, 7.5], [2.0, -1e-20], [4.5, -5.0], [-0.3 * 4.0, 1.7 * 5.0]], dtype=torch.float64
    )
    expected = torch.tensor([[0.0, 0.0], [1.5, 1.5], [0.0, 0.0], [0.5, 0.0], [2.8, 3.5]], dtype=torch.float64)
    out = wrap_positions(pos, box, batch)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    L = box[batch]
    assert bool((out >= 0).all()) and bool((out < L).all())
    # Wrapping only moves points by whole box vectors.
    n = (pos - out) / L
    torch.testing.assert_close(n, torch.round(n))
    # A [d] box is shared by all graphs; no batch means a single graph.
    torch.testing.assert_close(wrap_positions(pos, box[0]), wrap_positions(pos, box[0].expand(2, 2), batch))
    torch.testing.assert_close(wrap_positions(pos[:3], box[:1]), expected[:3])
    with pytest.raises(ValueError, match="graphs"):
        wrap_positions(pos, box)  # two boxes but no batch
