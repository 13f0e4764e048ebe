"""One vocabulary across the models: constructor names, the edges() convention, fit_energy_scale's return
type, the declared system, and the mapping of old checkpoint configurations."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch, Data

from course_lib.models.baselines import AbsoluteCoordinateGNN, AbsolutePositionGNN, CoordinateMLP, EdgeVectorGNN
from course_lib.models.blocks import EnergyScale
from course_lib.models.egnn import EGNN
from course_lib.models.mpnn import InvariantMPNN
from course_lib.models.nbody import EGNNDynamics, GNNDynamics, RadialField
from course_lib.models.nequip import NequIP
from course_lib.models.painn import PaiNN
from course_lib.models.schnet import SchNet
from course_lib.neighbors import minimum_image
from course_lib.train import upgrade_config


def _particles(box=True):
    g = torch.Generator().manual_seed(0)
    graphs = []
    for n in (7, 9):
        d = Data(pos=torch.rand(n, 2, generator=g, dtype=torch.float64) * 8.0,
                 vel=torch.randn(n, 2, generator=g, dtype=torch.float64),
                 charge=torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double(),
                 energy=torch.randn(1, generator=g, dtype=torch.float64))
        if box:
            d.box = torch.full((1, 2), 8.0, dtype=torch.float64)
        graphs.append(d)
    return graphs


def _molecules():
    g = torch.Generator().manual_seed(1)
    out = []
    for z in ([6, 8, 1, 1, 1, 1], [6, 6, 1, 1, 1, 1, 8]):
        pos = torch.stack([torch.tensor([1.3 * k, 0.3 * (k % 2), 0.0], dtype=torch.float64) for k in range(len(z))])
        pos = pos + 0.05 * torch.randn(pos.shape, generator=g, dtype=torch.float64)
        out.append(Data(pos=pos, z=torch.tensor(z), energy=torch.randn(1, generator=g, dtype=torch.float64),
                        forces=torch.randn(len(z), 3, generator=g, dtype=torch.float64)))
    return out


@pytest.mark.parametrize("model, data", [
    (lambda: InvariantMPNN(cutoff=3.0), lambda: _particles()),
    (lambda: EGNN(cutoff=3.0), lambda: _particles()),
    (lambda: EGNN(cutoff=None), lambda: _particles()),
    (lambda: EGNN(cutoff=None), lambda: _particles(box=False)),
    (lambda: SchNet(cutoff=3.0), lambda: _molecules()),
    (lambda: NequIP(cutoff=3.0, hidden=4, num_layers=1), lambda: _molecules()),
    (lambda: PaiNN(cutoff=3.0, hidden=4, num_layers=1), lambda: _molecules()),
], ids=["mpnn", "egnn", "egnn-all-pairs-box", "egnn-all-pairs-open", "schnet", "nequip", "painn"])
def test_edges_return_index_and_vector_from_target_to_source(model, data):
    batch = Batch.from_data_list(data())
    edge_index, edge_vec = model().double().edges(batch)
    j, i = edge_index
    assert edge_index.shape[0] == 2 and edge_vec.shape == (edge_index.shape[1], batch.pos.shape[1])
    expected = batch.pos[j] - batch.pos[i]  # row 0 = source j, row 1 = target i
    if getattr(batch, "box", None) is not None:
        expected = minimum_image(expected, batch.box[batch.batch[i]])
    torch.testing.assert_close(edge_vec, expected)


def test_constructor_vocabulary():
    for model in (InvariantMPNN(), AbsolutePositionGNN(), EdgeVectorGNN(), AbsoluteCoordinateGNN(), EGNN(),
                  EGNNDynamics(), GNNDynamics(), RadialField(), SchNet(), NequIP(hidden=4, num_layers=1),
                  PaiNN(hidden=4, num_layers=1)):
        assert {"hidden", "num_layers"} <= set(model.config), type(model).__name__
        assert not {"layers", "interactions", "num_features", "r_max", "num_gaussians", "num_bessel"} & set(
            model.config), type(model).__name__


def test_fit_energy_scale_returns_energy_scale():
    for model, graphs in ((InvariantMPNN(), _particles()), (CoordinateMLP(), _particles()),
                          (SchNet(), _molecules()), (NequIP(hidden=4, num_layers=1), _molecules()),
                          (PaiNN(hidden=4, num_layers=1), _molecules())):
        fitted = model.fit_energy_scale(graphs)
        assert isinstance(fitted, EnergyScale) and isinstance(fitted.scale, float), type(model).__name__
        assert isinstance(fitted.shift, torch.Tensor)
        assert (fitted.avg_num_neighbors is not None) == isinstance(model, NequIP)


def test_declared_system_and_species():
    assert InvariantMPNN.system == AbsolutePositionGNN.system == CoordinateMLP.system == "particles2d"
    assert SchNet.system == NequIP.system == PaiNN.system == "molecule"
    schnet, nequip = SchNet(max_z=10), NequIP(hidden=4, num_layers=1, species=(1, 6, 8))
    painn = PaiNN(hidden=4, num_layers=1, species=(1, 6, 8))
    assert schnet.species == tuple(range(1, 11)) and nequip.species == painn.species == (1, 6, 8)
    assert schnet.trained_species is None and nequip.trained_species is None and painn.trained_species is None
    for model in (schnet, nequip, painn):
        model.fit_energy_scale(_molecules())
    assert schnet.trained_species == nequip.trained_species == painn.trained_species == (1, 6, 8)


def test_old_configurations_are_mapped():
    assert upgrade_config(SchNet, {"hidden": 8, "interactions": 2, "num_gaussians": 10}) == {
        "hidden": 8, "num_layers": 2, "num_basis": 10}
    assert upgrade_config(NequIP, {"num_features": 8, "r_max": 3.0, "num_bessel": 6, "l_max": 1}) == {
        "hidden": 8, "cutoff": 3.0, "num_basis": 6, "l_max": 1}
    for cls in (InvariantMPNN, AbsolutePositionGNN, AbsoluteCoordinateGNN, EGNN, EGNNDynamics, GNNDynamics,
                RadialField):
        legacy = getattr(cls, "LEGACY_CONFIG_DEFAULTS", {})
        assert upgrade_config(cls, {"hidden": 8, "layers": 2}) == {"hidden": 8, "num_layers": 2, **legacy}
        cls(**upgrade_config(cls, {"hidden": 8, "layers": 2}))
    # a key missing from an old configuration gets the old behaviour; a stored key is kept
    assert upgrade_config(InvariantMPNN, {"hidden": 8})["smooth_cutoff"] is False
    assert upgrade_config(InvariantMPNN, {"smooth_cutoff": True})["smooth_cutoff"] is True
    assert InvariantMPNN().config["smooth_cutoff"] is True and InvariantMPNN().smooth_cutoff
