"""What invariance cannot see: structures that some symmetric models cannot tell apart, and why.

A model that only ever looks at *distances between neighbours* (SchNet, NequIP with l_max = 0: every
message is a function of the sender's features and the bond length) gives every atom the same features,
at every layer, in two structures whose atoms have the same bond lengths to neighbours of the same kind,
however the bonds are arranged in space. Models that carry *directions* (PaiNN's vectors, NequIP with
l_max >= 1, EGNN's coordinate updates) can see bond angles and separate such pairs (Joshi et al., "On the
expressive power of geometric graph neural networks", ICML 2023: distance-only networks cannot tell apart
"1-hop identical" geometric graphs; Pozdnyakov et al., "Incompleteness of atomic structure representations",
Phys. Rev. Lett. 125, 166001, 2020: even distances *and angles* around a centre do not determine it).

The structures (all float64 graphs of :func:`course_lib.data.make_graph`, lengths in Angstrom):

- :func:`bent_pair`: two triatomics X-C-X with the same bond lengths and different bond angles; the two outer
  atoms are farther apart than the cutoff, so within the neighbour graph both are "one centre, two neighbours
  at distance b".
- :func:`ring_pair`: a planar regular six-ring and a chair six-ring with the same bond length: every atom has
  two neighbours at distance b in both (the next-nearest atoms are beyond the cutoff); the bond angles are 120
  and 109.47 degrees.
- :func:`homometric_pair`: Pozdnyakov-type environments: four neighbours on a circle around a centre, at the
  angles {0, 1, 2, 5} x 45 degrees and {0, 1, 3, 4} x 45 degrees. Every centre-neighbour distance *and* the
  multiset of angles between neighbours are the same (so every 3-body descriptor of the centre, e.g. the power
  spectrum :func:`power_spectrum`, is the same); the structures are not congruent (:func:`bispectrum_gap`).
- :func:`star`: a centre with k neighbours in a plane at angles 2 pi m / k + phase (the k-fold star of Joshi
  et al. 2023): :func:`summed_harmonics` of its bonds has, for every l < k, only its m = 0 part left (odd l
  vanish entirely), so an order-l feature with l < k is the same however the star is turned about its axis.
- :func:`enantiomers`: a tetrahedral centre with four different neighbours and its mirror image: every
  O(3)-invariant model gives both the same energy; an SO(3)-only model (NequIP ``parity=False``) does not.

:func:`energy_gap` returns |E(a) - E(b)| of a model in float64; :func:`demo_models` builds the course's
untrained, seeded models used in notebook 09 and in ``tests/test_expressivity.py``.
"""

from __future__ import annotations

import math

import torch

from course_lib.data import make_graph

__all__ = ["bent_pair", "ring_pair", "homometric_pair", "star", "enantiomers", "tetrahedron", "octahedron",
           "summed_harmonics", "power_spectrum", "bispectrum_gap", "turn_about_z", "energy_gap", "demo_models",
           "chain", "receptive_field_response", "first_layer_features"]

_F64 = torch.float64


def _graph(pos, z) -> object:
    return make_graph(torch.as_tensor(pos, dtype=_F64), dtype=_F64, z=torch.as_tensor(z, dtype=torch.long))


def bent_pair(bond: float = 1.0, angles=(105.0, 150.0), centre: int = 6, outer: int = 1):
    """Two triatomics ``outer-centre-outer`` with bond length ``bond`` and bond angles ``angles`` (degrees).
    With a cutoff between ``bond`` and ``2 bond sin(min(angles) / 2)`` the outer atoms do not see each other."""
    out = []
    for angle in angles:
        t = math.radians(angle) / 2
        x, y = bond * math.sin(t), bond * math.cos(t)
        pos = [[0.0, 0.0, 0.0], [x, y, 0.0], [-x, y, 0.0]]
        out.append(_graph(pos, [centre, outer, outer]))
    return tuple(out)


def ring_pair(bond: float = 1.0, z: int = 6):
    """A planar regular six-ring and a chair six-ring (bond angles 109.47 degrees), all bonds ``bond``.

    Chair: atom k at angle k pi / 3 on a circle of radius rho, height +-h alternating, with
    ``sqrt(3) rho = 2 bond sin(theta / 2)`` (the next-nearest distance) and ``rho^2 + 4 h^2 = bond^2``.
    Next-nearest distances: ``sqrt(3) bond`` (planar), ``1.633 bond`` (chair): a cutoff of 1.5 bond sees only
    the two bonded neighbours in both.
    """
    k = torch.arange(6, dtype=_F64)
    phi = k * math.pi / 3
    planar = torch.stack([bond * torch.cos(phi), bond * torch.sin(phi), torch.zeros(6, dtype=_F64)], -1)
    theta = math.acos(-1.0 / 3.0)
    rho = 2 * bond * math.sin(theta / 2) / math.sqrt(3)
    h = math.sqrt(bond**2 - rho**2) / 2
    chair = torch.stack([rho * torch.cos(phi), rho * torch.sin(phi), h * (-1.0) ** k], -1)
    return _graph(planar, [z] * 6), _graph(chair, [z] * 6)


def homometric_pair(radius: float = 1.0, centre: int = 6, outer: int = 1):
    """Centre + four neighbours on a circle of ``radius`` at multiples of 45 degrees: {0, 1, 2, 5} and {0, 1, 3, 4}.

    The six angles between neighbours are {45, 45, 90, 135, 135, 180} degrees in both (a homometric pair of
    subsets of the octagon), so the distances centre-neighbour and neighbour-neighbour agree as multisets.
    """
    out = []
    for ks in ((0, 1, 2, 5), (0, 1, 3, 4)):
        pos = [[0.0, 0.0, 0.0]] + [[radius * math.cos(k * math.pi / 4), radius * math.sin(k * math.pi / 4), 0.0]
                                   for k in ks]
        out.append(_graph(pos, [centre] + [outer] * 4))
    return tuple(out)


def star(k: int, radius: float = 1.0, phase: float = 0.0, centre: int = 6, outer: int = 1):
    """A centre with ``k`` neighbours in the xy-plane at angles ``2 pi m / k + phase``."""
    if k < 1:
        raise ValueError(f"a star needs k >= 1 arms, got {k}")
    a = 2 * math.pi * torch.arange(k, dtype=_F64) / k + phase
    arms = torch.stack([radius * torch.cos(a), radius * torch.sin(a), torch.zeros(k, dtype=_F64)], -1)
    return _graph(torch.cat([torch.zeros(1, 3, dtype=_F64), arms]), [centre] + [outer] * k)


def tetrahedron() -> torch.Tensor:
    """The four unit vectors to the corners of a regular tetrahedron [4, 3]."""
    return torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=_F64) / math.sqrt(3)


def octahedron() -> torch.Tensor:
    """The six unit vectors to the corners of a regular octahedron [6, 3]."""
    return torch.cat([torch.eye(3, dtype=_F64), -torch.eye(3, dtype=_F64)])


def enantiomers(bond: float = 1.1, species=(1, 7, 8, 6), centre: int = 6):
    """A tetrahedral centre with four *different* neighbours (slightly distorted, so no accidental symmetry)
    and its mirror image (x -> -x): a chiral pair."""
    u = tetrahedron() * torch.tensor([1.0, 1.05, 0.95], dtype=_F64)[None, :]
    pos = torch.cat([torch.zeros(1, 3, dtype=_F64), bond * torch.tensor([1.0, 1.1, 1.2, 1.3], dtype=_F64)[:, None] * u])
    mirror = pos * torch.tensor([-1.0, 1.0, 1.0], dtype=_F64)
    z = [centre, *species]
    return _graph(pos, z), _graph(mirror, z)


def turn_about_z(graph, angle: float):
    """A copy of ``graph`` turned by ``angle`` (radians) about the z axis through the origin."""
    c, s = math.cos(angle), math.sin(angle)
    R = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=graph.pos.dtype)
    out = graph.clone()
    out.pos = graph.pos @ R.T
    return out


# -- descriptors built from spherical harmonics -----------------------------------------------------------


def summed_harmonics(vectors: torch.Tensor, l: int) -> torch.Tensor:
    """sum_j Y^l(u_j) [2l + 1] over the bond vectors ``vectors`` [n, 3] (e3nn, component normalisation)."""
    from e3nn import o3

    return o3.spherical_harmonics(l, vectors.to(_F64), normalize=True, normalization="component").sum(0)


def power_spectrum(vectors: torch.Tensor, l_max: int = 6) -> torch.Tensor:
    """p_l = |sum_j Y^l(u_j)|^2 = sum_{j,k} (2l + 1) P_l(u_j . u_k), l = 0..l_max [l_max + 1]: a 3-body invariant
    (it depends on the angles between pairs of bonds only)."""
    return torch.stack([summed_harmonics(vectors, l).pow(2).sum() for l in range(l_max + 1)])


def bispectrum_gap(a: torch.Tensor, b: torch.Tensor, l_max: int = 4) -> float:
    """The largest difference between the bispectra of two neighbour sets [n, 3]: the 4-body invariants
    ``sum_{m} C^{l3 m3}_{l1 m1 l2 m2} c^{l1}_{m1} c^{l2}_{m2} c^{l3}_{m3}`` with ``c^l = summed_harmonics``,
    for l1, l2, l3 <= l_max (a product of three sums over neighbours: it sees triples of bonds)."""
    from e3nn import o3

    gap = 0.0
    ca = [summed_harmonics(a, l) for l in range(l_max + 1)]
    cb = [summed_harmonics(b, l) for l in range(l_max + 1)]
    for l1 in range(l_max + 1):
        for l2 in range(l1, l_max + 1):
            for l3 in range(abs(l1 - l2), min(l1 + l2, l_max) + 1):
                C = o3.wigner_3j(l1, l2, l3, dtype=_F64)
                ba = torch.einsum("ijk,i,j,k->", C, ca[l1], ca[l2], ca[l3])
                bb = torch.einsum("ijk,i,j,k->", C, cb[l1], cb[l2], cb[l3])
                gap = max(gap, abs(float(ba - bb)))
    return gap


# -- models -----------------------------------------------------------------------------------------------


@torch.no_grad()
def energy_gap(model, a, b) -> float:
    """|E(a) - E(b)| of ``model`` (float64 graphs, model in eval mode)."""
    return abs(float(model(a) - model(b)))


def demo_models(cutoff: float, seed: int = 0, hidden: int = 8, num_layers: int = 3) -> dict:
    """The course's models, untrained (seeded) and in float64, with the same ``cutoff``: name -> model.

    SchNet and NequIP l_max = 0 see distances only; NequIP l_max = 1 and PaiNN see directions (O(3)); NequIP
    l_max = 1 with ``parity=False`` is rotation-equivariant only (SO(3)) and can tell mirror images apart.
    """
    from course_lib.models.nequip import NequIP
    from course_lib.models.painn import PaiNN
    from course_lib.models.schnet import SchNet

    makers = {
        "SchNet": lambda: SchNet(hidden=hidden, filters=hidden, num_layers=num_layers, num_basis=16, cutoff=cutoff),
        "NequIP l_max=0": lambda: NequIP(l_max=0, hidden=hidden, num_layers=num_layers, cutoff=cutoff),
        "NequIP l_max=1": lambda: NequIP(l_max=1, hidden=hidden, num_layers=num_layers, cutoff=cutoff),
        "NequIP l_max=1 SO(3)": lambda: NequIP(l_max=1, parity=False, hidden=hidden, num_layers=num_layers,
                                               cutoff=cutoff),
        "PaiNN": lambda: PaiNN(hidden=hidden, num_layers=num_layers, cutoff=cutoff),
    }
    out = {}
    for k, (name, make) in enumerate(makers.items()):
        torch.manual_seed(seed + k)
        out[name] = make().double().eval()
    return out


@torch.no_grad()
def first_layer_features(model, graph, atom: int = 0) -> dict[int, torch.Tensor]:
    """The features of ``atom`` after the first interaction block of a NequIP ``model``, by rotation order:
    ``{l: [channels * (2l + 1)]}`` (the blocks of ``model.layers[0].irreps_out`` with that l, concatenated)."""
    idx = model.check_inputs(graph)
    a, h = model.embedding.embed(idx, graph.pos.dtype)
    edge_index, edge_vec = model.edges(graph)
    layer = model.layers[0]
    h = layer(h, a, model.spherical_harmonics(edge_vec), model.radial(edge_vec.norm(dim=-1)), edge_index)[atom]
    out: dict[int, list[torch.Tensor]] = {}
    for (_, ir), sl in zip(layer.irreps_out, layer.irreps_out.slices()):
        out.setdefault(ir.l, []).append(h[sl])
    return {l: torch.cat(parts) for l, parts in sorted(out.items())}


# -- receptive field --------------------------------------------------------------------------------------


def chain(n: int, spacing: float = 1.5, z: int = 6):
    """``n`` atoms on the x axis, ``spacing`` apart (a cutoff between spacing and 2 spacing links neighbours only)."""
    pos = torch.zeros(n, 3, dtype=_F64)
    pos[:, 0] = spacing * torch.arange(n, dtype=_F64)
    return _graph(pos, [z] * n)


@torch.no_grad()
def receptive_field_response(model, graph, moved: int, shift: float = 0.3, watched: int = 0) -> float:
    """|E_watched(moved atom shifted by ``shift`` along y) - E_watched(original)|: the change of the per-atom
    energy of atom ``watched`` when atom ``moved`` moves (``model.atomic_energies``)."""
    other = graph.clone()
    other.pos = graph.pos.clone()
    other.pos[moved, 1] += shift
    return abs(float(model.atomic_energies(other)[watched] - model.atomic_energies(graph)[watched]))
