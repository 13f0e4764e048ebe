"""Stability runs, thermalisation and the partial record of a failed run (course_lib.md)."""

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.md.langevin import Langevin
from ase.md.verlet import VelocityVerlet
from torch import nn

from course_lib.ase_calculator import ModelCalculator
from course_lib.md import MDInstability, run_md, run_until_unstable, thermalize
from course_lib.observables import find_bonds


class Springs(nn.Module):
    """Harmonic springs (k in eV/A^2) on the given bonds at their starting lengths: a smooth toy potential."""

    def __init__(self, atoms: Atoms, k: float = 30.0, sign: float = 1.0):
        super().__init__()
        pairs = torch.tensor(find_bonds(atoms.numbers, atoms.positions))
        x = torch.as_tensor(atoms.positions)
        self.register_buffer("pairs", pairs)
        self.register_buffer("r0", (x[pairs[:, 1]] - x[pairs[:, 0]]).norm(dim=-1))
        self.k, self.sign = k, sign

    def forward(self, batch):
        d = batch.pos[self.pairs[:, 1]] - batch.pos[self.pairs[:, 0]]
        return (self.sign * 0.5 * self.k * ((d.norm(dim=-1) - self.r0.to(d.dtype)) ** 2).sum()).reshape(1)


@pytest.fixture()
def ethanol():
    return molecule("CH3CH2OH")


def test_thermalize_is_seeded_and_removes_drift_and_rotation(ethanol):
    a, b = ethanol.copy(), ethanol.copy()
    thermalize(a, 500.0, seed=3)
    thermalize(b, 500.0, seed=3)
    assert np.array_equal(a.get_velocities(), b.get_velocities())
    assert np.abs(a.get_momenta().sum(0)).max() < 1e-12
    assert np.abs(a.get_angular_momentum()).max() < 1e-10
    assert 100 < a.get_temperature() < 1500
    c = ethanol.copy()
    thermalize(c, 500.0, seed=4)
    assert not np.array_equal(a.get_velocities(), c.get_velocities())


def test_stable_run_reaches_the_limit(ethanol):
    ethanol.calc = ModelCalculator(Springs(ethanol).eval())
    thermalize(ethanol, 300.0, seed=0)
    dyn = Langevin(ethanol, 0.5 * units.fs, temperature_K=300, friction=0.01 / units.fs, fixcm=False,
                   rng=np.random.RandomState(0))
    res = run_until_unstable(dyn, 40, stride=10)
    assert res.stable and res.reason is None and res.steps == 40
    assert res.time == pytest.approx(20.0) and res.time_unit == "fs"
    assert len(res.record.times) == 41 and res.record.positions.shape == (5, 9, 3)


def test_unstable_run_reports_the_time_and_keeps_the_record(ethanol):
    ethanol.calc = ModelCalculator(Springs(ethanol, sign=-1.0).eval())  # inverted springs: bonds fly apart
    thermalize(ethanol, 300.0, seed=0)
    res = run_until_unstable(VelocityVerlet(ethanol, timestep=0.5 * units.fs), 2000, stride=5)
    assert not res.stable and "stretched" in res.reason
    assert 0 < res.steps < 2000 and res.time == pytest.approx(0.5 * res.steps)
    assert len(res.record.times) == res.steps  # every step before the failing one
    # run_md attaches the same partial record to the exception
    atoms = molecule("CH3CH2OH")
    atoms.calc = ModelCalculator(Springs(atoms, sign=-1.0).eval())
    thermalize(atoms, 300.0, seed=0)
    with pytest.raises(MDInstability) as err:
        run_md(VelocityVerlet(atoms, timestep=0.5 * units.fs), 2000)
    assert err.value.step == res.steps and len(err.value.record.times) == res.steps


def test_explicit_bonds_are_the_ones_checked(ethanol):
    model = Springs(ethanol, sign=-1.0).eval()
    bonds = find_bonds(ethanol.numbers, ethanol.positions)
    thermalize(ethanol, 300.0, seed=1)
    a = ethanol.copy()
    a.calc = ModelCalculator(model)
    res = run_until_unstable(VelocityVerlet(a, timestep=0.5 * units.fs), 2000, bonds=bonds[:1])
    i, j = bonds[0]
    assert not res.stable and f"{a.get_chemical_symbols()[i]}{i}-{a.get_chemical_symbols()[j]}{j}" in res.reason
    b = ethanol.copy()
    b.calc = ModelCalculator(model)
    with pytest.raises(ValueError, match="pairs"):
        run_until_unstable(VelocityVerlet(b, timestep=0.5 * units.fs), 1, bonds=[(0, 0)])
