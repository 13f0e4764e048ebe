"""The counterexamples of course_lib.expressivity, checked with the course's own (untrained, seeded) models:
what distance-only models cannot tell apart, what equivariant ones can, the k-fold star, the homometric pair
(equal 3-body, different 4-body descriptors), mirror images, and the receptive field of T layers."""

import math

import pytest
import torch

from course_lib import expressivity as X
from course_lib.models.nequip import NequIP
from course_lib.neighbors import radius_graph

ROUND_OFF = 1e-12  # float64: "the same output"
APART = 1e-5       # clearly different outputs (untrained models give differences of 1e-4 .. 1e-1)

DISTANCE_ONLY = ("SchNet", "NequIP l_max=0")
DIRECTIONAL = ("NequIP l_max=1", "NequIP l_max=1 SO(3)", "PaiNN")


@pytest.fixture(scope="module")
def models_short():
    return X.demo_models(cutoff=1.5)


def _neighbour_distances(graph, cutoff):
    """Sorted bond lengths of every atom within the cutoff, as a sorted list of tuples (what a distance-only
    message-passing model sees, with species all equal per role)."""
    edge_index, edge_vec = radius_graph(graph.pos, cutoff)
    r = edge_vec.norm(dim=-1)
    per_atom = [tuple(sorted(round(float(x), 9) for x in r[edge_index[1] == i])) for i in range(graph.num_nodes)]
    return sorted(per_atom)


@pytest.mark.parametrize("pair", ["bent", "ring"])
def test_distance_only_models_cannot_separate_what_equivariant_models_can(pair, models_short):
    a, b = {"bent": X.bent_pair, "ring": X.ring_pair}[pair]()
    # the premise: within the cutoff every atom has the same bond lengths, but the structures differ
    assert _neighbour_distances(a, 1.5) == _neighbour_distances(b, 1.5)
    assert not torch.allclose(torch.cdist(a.pos, a.pos).sort(dim=1).values.sort(dim=0).values,
                              torch.cdist(b.pos, b.pos).sort(dim=1).values.sort(dim=0).values, atol=1e-3)
    for name in DISTANCE_ONLY:
        gap = X.energy_gap(models_short[name], a, b)
        print(f"{pair}: {name} |dE| = {gap:.1e}")
        assert gap < ROUND_OFF
    for name in DIRECTIONAL:
        gap = X.energy_gap(models_short[name], a, b)
        print(f"{pair}: {name} |dE| = {gap:.1e}")
        assert gap > APART


def test_ring_pair_geometry():
    planar, chair = X.ring_pair()
    for g in (planar, chair):
        d = (g.pos - g.pos.roll(1, 0)).norm(dim=-1)
        assert torch.allclose(d, torch.ones(6, dtype=torch.float64), atol=1e-12)
    u, w = chair.pos[1] - chair.pos[0], chair.pos[5] - chair.pos[0]
    assert math.degrees(math.acos(float(u @ w))) == pytest.approx(109.4712, abs=1e-3)
    assert float(planar.pos[:, 2].abs().max()) == 0.0 and float(chair.pos[:, 2].abs().max()) > 0.1


def test_homometric_pair_has_equal_three_body_and_different_four_body_descriptors():
    a, b = X.homometric_pair()
    ua, ub = a.pos[1:], b.pos[1:]
    # equal distances and angles as multisets (a homometric pair), not congruent
    da, db = torch.pdist(a.pos).sort().values, torch.pdist(b.pos).sort().values
    assert torch.allclose(da, db, atol=1e-12)
    assert torch.allclose(X.power_spectrum(ua, 8), X.power_spectrum(ub, 8), atol=1e-10)
    assert X.bispectrum_gap(ua, ub) > 1.0
    # a random pair of neighbour sets differs already in the power spectrum (the check can fail)
    other = X.star(4).pos[1:]
    assert (X.power_spectrum(ua) - X.power_spectrum(other)).abs().max() > 1.0


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_star_features_below_order_k_do_not_see_its_orientation(k):
    s0, s1 = X.star(k), X.star(k, phase=math.pi / k)
    for l in range(k + 1):
        c0, c1 = X.summed_harmonics(s0.pos[1:], l), X.summed_harmonics(s1.pos[1:], l)
        if l < k:
            assert torch.allclose(c0, c1, atol=1e-12)              # the same for the turned star
            if l % 2 == 1:
                assert c0.abs().max() < 1e-12                      # odd l: the sum vanishes
            assert torch.allclose(X.summed_harmonics(X.turn_about_z(s0, 0.3).pos[1:], l), c0, atol=1e-12)
        else:
            assert (c0 - c1).abs().max() > 1.0                     # order k sees the orientation


def test_star_features_of_nequip_first_layer():
    torch.manual_seed(0)
    model = NequIP(l_max=4, hidden=4, num_layers=1, cutoff=1.5).double().eval()
    for k in (2, 3, 4):
        f0 = X.first_layer_features(model, X.star(k))
        f1 = X.first_layer_features(model, X.star(k, phase=math.pi / k))
        for l in range(k):
            assert torch.allclose(f0[l], f1[l], atol=1e-12)
        assert (f0[k] - f1[k]).abs().max() > 1e-3


def test_polyhedra_cancel_low_orders():
    tet, octa = X.tetrahedron(), X.octahedron()
    for l in (1, 2):
        assert X.summed_harmonics(tet, l).abs().max() < 1e-12
    assert X.summed_harmonics(tet, 3).abs().max() > 1.0
    for l in (1, 2, 3):
        assert X.summed_harmonics(octa, l).abs().max() < 1e-12
    assert X.summed_harmonics(octa, 4).abs().max() > 1.0


def test_mirror_images_only_so3_models_separate():
    a, b = X.enantiomers()
    # a chiral pair: no proper rotation maps one onto the other (the signed volume of three bonds flips)
    vol = lambda g: float(torch.det(g.pos[1:4] - g.pos[0]))  # noqa: E731
    assert vol(a) == pytest.approx(-vol(b)) and abs(vol(a)) > 0.1
    models = X.demo_models(cutoff=4.0)
    for name, model in models.items():
        gap = X.energy_gap(model, a, b)
        print(f"mirror images: {name} |dE| = {gap:.1e}")
        if name.endswith("SO(3)"):
            assert gap > APART
        else:
            assert gap < ROUND_OFF


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_receptive_field_is_num_layers_hops(num_layers):
    chain = X.chain(7, spacing=1.5)
    models = X.demo_models(cutoff=2.0, num_layers=num_layers)
    for name in ("SchNet", "PaiNN", "NequIP l_max=1"):
        for hops in range(1, 6):
            response = X.receptive_field_response(models[name], chain, moved=hops)
            if hops <= num_layers:
                assert response > 1e-14, (name, num_layers, hops)
            else:
                assert response == 0.0, (name, num_layers, hops)


def test_bad_star():
    with pytest.raises(ValueError, match="k >= 1"):
        X.star(0)
