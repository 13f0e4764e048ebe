"""Energy+force losses and the molecular error metrics."""

import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from course_lib.data import make_graph
from course_lib.losses import energy_force_loss, molecule_errors, per_atom_energy_force_loss
from course_lib.models import energy_and_forces


class Harmonic(torch.nn.Module):
    """E = k/2 sum_i |r_i|^2 per graph (forces -k r): a model whose loss is known in closed form."""

    def __init__(self, k=2.0):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(k, dtype=torch.float64))

    def forward(self, batch):
        e = 0.5 * self.k * (batch.pos ** 2).sum(-1)
        return torch.zeros(batch.num_graphs, dtype=e.dtype).index_add_(0, batch.batch, e)


def _batch():
    g = torch.Generator().manual_seed(0)
    graphs = [make_graph(torch.randn(n, 3, generator=g, dtype=torch.float64), dtype=torch.float64,
                         z=torch.ones(n, dtype=torch.long), energy=torch.randn(1, generator=g, dtype=torch.float64),
                         forces=torch.randn(n, 3, generator=g, dtype=torch.float64)) for n in (2, 5)]
    return graphs, Batch.from_data_list(graphs)


def test_energy_force_loss_closed_form():
    graphs, batch = _batch()
    model = Harmonic().train()
    rho = 0.3
    expected = 0.0
    for g in graphs:
        E = 0.5 * 2.0 * (g.pos ** 2).sum()
        F = -2.0 * g.pos
        expected += rho * (E - g.energy[0]) ** 2 + ((F - g.forces) ** 2).sum() / g.pos.shape[0]
    loss = energy_force_loss(model, batch, rho=rho)
    assert float(loss) == pytest.approx(float(expected) / 2, rel=1e-12)
    loss.backward()  # second derivative reaches the parameter through the forces
    assert model.k.grad is not None and float(model.k.grad) != 0.0
    assert not batch.pos.requires_grad
    e_only = energy_force_loss(model, batch, rho=rho, forces=False)
    E = model(batch)
    assert float(e_only) == pytest.approx(float((rho * (E - batch.energy) ** 2).mean()), rel=1e-12)


def test_per_atom_loss_and_bad_input():
    graphs, batch = _batch()
    model = Harmonic().train()
    E, F = energy_and_forces(model, batch)
    n = torch.tensor([2.0, 5.0], dtype=torch.float64)
    expected = (((E - batch.energy) / n) ** 2).mean() + 2 * ((F - batch.forces) ** 2).mean()
    got = per_atom_energy_force_loss(model, batch, force_weight=2.0)
    assert float(got) == pytest.approx(float(expected), rel=1e-12)
    with pytest.raises(ValueError, match="rho"):
        energy_force_loss(model, batch, rho=-1.0)
    del batch.forces
    with pytest.raises(ValueError, match="forces"):
        energy_force_loss(model, batch)


def test_molecule_errors_units_and_mode():
    graphs, _ = _batch()
    model = Harmonic().train()
    errs = molecule_errors(model, DataLoader(graphs, batch_size=1))
    assert model.training  # mode restored
    e_mae, f_abs, n_comp = 0.0, 0.0, 0
    for g in graphs:
        e_mae += abs(float(0.5 * 2.0 * (g.pos ** 2).sum() - g.energy[0]))
        f_abs += float((-2.0 * g.pos - g.forces).abs().sum())
        n_comp += g.pos.numel()
    assert errs["energy_mae_meV"] == pytest.approx(1000 * e_mae / 2, rel=1e-9)
    assert errs["force_mae_meV_A"] == pytest.approx(1000 * f_abs / n_comp, rel=1e-9)
    assert errs["n"] == 2
    with pytest.raises(ValueError, match="empty"):
        molecule_errors(model, [])
