"""Safe molecular dynamics with ASE: a guard that stops unstable runs with a clear message, and energy drift.

A learned potential driven outside its training data, or a timestep that is too large, makes an MD run
blow up: atoms fly apart, energies explode, then everything turns into NaN and every later step
computes garbage. :func:`run_md` runs any ASE dynamics object (``VelocityVerlet``, ``Langevin``, ...)
with an observer, :class:`MDGuard`, that checks the state after every step and raises
:class:`MDInstability` at the first sign of trouble, saying at which step and time, and what went
wrong:

- NaN or inf positions, forces or energies (also when the model itself refuses NaN positions);
- the total energy changed by more than ``max_energy_change`` per atom since the start (in NVE the
  total energy is conserved, so this is an integration failure; in a thermostat run the thermostat
  changes it by ~k_B T per atom at most);
- a bond stretched beyond ``max_bond_factor`` times the sum of the covalent radii of its two atoms
  (bonds = pairs closer than 1.2 times that sum at the start, or the pairs given as ``bonds=``; atoms with
  Z = 0, like the dummy "X"
  particles of :func:`course_lib.ase_calculator.particles_to_atoms`, have no bonds).

It returns an :class:`MDRecord`: times, potential / kinetic / total energy and temperature at every
step, positions every ``stride`` steps. :func:`energy_drift` fits a straight line to the total
energy against time (the *drift rate*, less sensitive to the oscillations of the energy than the
end-to-start difference); :func:`energy_drift_per_ps` gives it in eV/ps for molecular runs.

Units follow the calculator (:class:`course_lib.ase_calculator.ModelCalculator`): for molecules
(eV, Angstrom) times are in fs and temperatures in K; for the 2D particles (``calc.units ==
"reduced"``) times are in tau (ASE's internal time unit equals tau there) and temperatures in units of
eps / k_B. ASE's 3-D integrators keep the particles in the plane thanks to the ``FixCartesian``
constraint on z set by ``particles_to_atoms``: that is the course's 2-D MD path (no separate
integrator), checked in ``tests/test_ase_calculator.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms, units
from ase.data import covalent_radii
from ase.geometry import find_mic

__all__ = ["MDInstability", "MDRecord", "MDGuard", "run_md", "energy_drift", "energy_drift_per_ps", "time_unit_of",
           "thermalize", "StabilityResult", "run_until_unstable"]


class MDInstability(RuntimeError):
    """An MD run became unstable. Attributes: ``step`` (number of steps done when it was detected),
    ``time`` (in ``time_unit``), ``time_unit``, ``reason`` (what was detected) and ``record`` (the
    :class:`MDRecord` of the steps before the failure when raised by :func:`run_md`, else ``None``)."""

    def __init__(self, step: int, time: float, time_unit: str, reason: str):
        self.step, self.time, self.time_unit, self.reason = int(step), float(time), time_unit, reason
        self.record: MDRecord | None = None
        super().__init__(f"MD unstable at step {self.step} (t = {self.time:.6g} {time_unit}): {reason}. "
                         "Use a smaller timestep, start from a configuration like the training data, or check "
                         "that the model was trained on this kind of system")


def time_unit_of(atoms: Atoms) -> tuple[str, float]:
    """``(name, ASE time units per name)``: ``("tau", 1)`` for reduced-unit calculators, else ``("fs", units.fs)``."""
    if getattr(atoms.calc, "units", None) == "reduced":
        return "tau", 1.0
    return "fs", units.fs


def _temperature_unit(atoms: Atoms) -> float:
    """Factor from ASE's kelvin to the calculator's temperature unit (k_B T in eps for reduced units)."""
    return units.kB if getattr(atoms.calc, "units", None) == "reduced" else 1.0


@dataclass
class MDRecord:
    """What :func:`run_md` recorded. Per step (``T`` = steps + 1 entries, the first is the start):
    ``steps``, ``times``, ``potential``, ``kinetic``, ``total`` (energy units of the calculator),
    ``temperature`` (K, or eps/k_B for reduced units). Every ``stride`` steps (``F`` frames):
    ``frame_steps [F]``, ``positions [F, N, 3]``. ``time_unit`` is ``"fs"`` or ``"tau"``."""

    time_unit: str
    n_atoms: int
    steps: list = field(default_factory=list)
    times: list = field(default_factory=list)
    potential: list = field(default_factory=list)
    kinetic: list = field(default_factory=list)
    temperature: list = field(default_factory=list)
    frame_steps: list = field(default_factory=list)
    positions: list = field(default_factory=list)

    def finalize(self) -> MDRecord:
        """Convert the lists to arrays (done by :func:`run_md`)."""
        for name in ("steps", "frame_steps"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64))
        for name in ("times", "potential", "kinetic", "temperature"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, self.n_atoms, 3)
        return self

    @property
    def total(self) -> np.ndarray:
        """Total energy ``potential + kinetic`` per recorded step."""
        return np.asarray(self.potential) + np.asarray(self.kinetic)

    def drift(self, per_atom: bool = True) -> float:
        """Linear-fit drift rate of the total energy per time unit (:func:`energy_drift`)."""
        return energy_drift(self.times, self.total, self.n_atoms if per_atom else 1)

    def max_energy_error(self, per_atom: bool = True) -> float:
        """``max_t |E_tot(t) - E_tot(0)|`` (per atom by default)."""
        tot = self.total
        return float(np.max(np.abs(tot - tot[0]))) / (self.n_atoms if per_atom else 1)


def energy_drift(times, total, n_atoms: int = 1) -> float:
    """Slope of the least-squares straight line through ``(times [T], total [T])``, divided by ``n_atoms``:
    the energy drift rate in energy units per time unit (per atom if ``n_atoms`` is the number of atoms)."""
    t = np.asarray(times, dtype=np.float64)
    e = np.asarray(total, dtype=np.float64)
    if t.shape != e.shape or t.ndim != 1 or len(t) < 2:
        raise ValueError(f"need matching 1-D times and energies with at least 2 entries, got {t.shape} and {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError("the energies contain NaN or inf: the run was unstable")
    slope = np.polyfit(t - t.mean(), e - e.mean(), 1)[0]
    return float(slope) / n_atoms


def energy_drift_per_ps(times_fs, total_ev, n_atoms: int = 1) -> float:
    """Energy drift in eV/ps (per atom if ``n_atoms`` is given) from times in fs and total energies in eV."""
    return 1000.0 * energy_drift(times_fs, total_ev, n_atoms)


class MDGuard:
    """ASE observer that records the run and raises :class:`MDInstability` when it goes wrong.

    Args:
        dyn: the ASE dynamics object (its ``atoms`` have a calculator).
        stride: store positions every ``stride`` steps.
        max_energy_change: largest allowed ``|E_tot - E_tot(start)|`` per atom (energy units of the
            calculator: eV or eps); ``None`` = no check.
        max_bond_factor: largest allowed bond length over the sum of covalent radii; ``None`` = no check.
        bonds: the bonded pairs ``[(i, j), ...]`` to check (default: pairs closer than 1.2 x the sum of the
            covalent radii at the start). Pass the bonds of the intact molecule when a run is continued
            from a distorted structure, so that the same bonds are checked throughout.
    """

    def __init__(self, dyn, stride: int = 10, max_energy_change: float | None = 1.0,
                 max_bond_factor: float | None = 2.0, bonds=None):
        if stride < 1:
            raise ValueError("stride must be >= 1")
        self.dyn, self.atoms, self.stride = dyn, dyn.atoms, int(stride)
        self.max_energy_change, self.max_bond_factor = max_energy_change, max_bond_factor
        self.time_unit, self._t_per_unit = time_unit_of(self.atoms)
        self._kelvin = _temperature_unit(self.atoms)
        self.record = MDRecord(self.time_unit, len(self.atoms))
        self.start_step = dyn.nsteps
        self.e0: float | None = None
        self.bonds = None
        if max_bond_factor is not None:
            self.bonds = self._find_bonds() if bonds is None else self._given_bonds(bonds)

    def _find_bonds(self):
        z = self.atoms.numbers
        r = np.where(z > 0, covalent_radii[z], 0.0)
        d = self._distances(*np.triu_indices(len(z), 1))
        i, j = np.triu_indices(len(z), 1)
        ref = r[i] + r[j]
        keep = (ref > 0) & (d < 1.2 * ref)
        return i[keep], j[keep], ref[keep]

    def _given_bonds(self, bonds):
        pairs = np.asarray(list(bonds), dtype=np.int64).reshape(-1, 2)
        n = len(self.atoms)
        if len(pairs) and (pairs.min() < 0 or pairs.max() >= n or np.any(pairs[:, 0] == pairs[:, 1])):
            raise ValueError(f"bonds must be pairs (i, j) of different atom indices in 0..{n - 1}")
        z = self.atoms.numbers
        r = np.where(z > 0, covalent_radii[z], 0.0)
        i, j = pairs[:, 0], pairs[:, 1]
        ref = r[i] + r[j]
        keep = ref > 0
        return i[keep], j[keep], ref[keep]

    def _distances(self, i, j):
        d = self.atoms.positions[j] - self.atoms.positions[i]
        if self.atoms.pbc.any() and len(d):
            d, _ = find_mic(d, self.atoms.cell, self.atoms.pbc)
        return np.linalg.norm(d, axis=-1)

    def time(self) -> float:
        return float(self.dyn.get_time()) / self._t_per_unit

    def fail(self, reason: str, step: int | None = None, time: float | None = None):
        step = self.dyn.nsteps if step is None else step
        time = self.time() if time is None else time
        raise MDInstability(step, time, self.time_unit, reason)

    def __call__(self):
        atoms, step = self.atoms, self.dyn.nsteps
        if self.record.steps and self.record.steps[-1] == step:  # ASE also observes the start
            return
        if not np.all(np.isfinite(atoms.positions)):
            self.fail("NaN/inf positions")
        forces = atoms.get_forces()
        if not np.all(np.isfinite(forces)):
            self.fail("NaN/inf forces")
        epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        if not (np.isfinite(epot) and np.isfinite(ekin)):
            self.fail(f"NaN/inf energy (potential {epot}, kinetic {ekin})")
        etot = epot + ekin
        if self.e0 is None:
            self.e0 = etot
        n = max(len(atoms), 1)
        if self.max_energy_change is not None and abs(etot - self.e0) / n > self.max_energy_change:
            self.fail(f"the total energy changed by {(etot - self.e0) / n:+.4g} per atom since the start "
                      f"(> max_energy_change = {self.max_energy_change:g}; now E_pot = {epot:.6g}, E_kin = {ekin:.6g})")
        if self.bonds is not None and len(self.bonds[0]):
            i, j, ref = self.bonds
            ratio = self._distances(i, j) / ref
            k = int(np.argmax(ratio))
            if ratio[k] > self.max_bond_factor:
                s = atoms.get_chemical_symbols()
                self.fail(f"bond {s[i[k]]}{i[k]}-{s[j[k]]}{j[k]} stretched to {ratio[k] * ref[k]:.3g} A "
                          f"(> max_bond_factor = {self.max_bond_factor:g} x {ref[k]:.3g} A, the sum of covalent radii)")
        rec = self.record
        rec.steps.append(step)
        rec.times.append(self.time())
        rec.potential.append(epot)
        rec.kinetic.append(ekin)
        rec.temperature.append(atoms.get_temperature() * self._kelvin if len(atoms) else 0.0)
        if (step - self.start_step) % self.stride == 0:
            rec.frame_steps.append(step)
            rec.positions.append(atoms.positions.copy())


def run_md(dyn, steps: int, stride: int = 10, max_energy_change: float | None = 1.0,
           max_bond_factor: float | None = 2.0, bonds=None) -> MDRecord:
    """Run ``steps`` steps of the ASE dynamics ``dyn`` under an :class:`MDGuard`; return the :class:`MDRecord`.

    Example (molecules, eV/Angstrom)::

        atoms.calc = ModelCalculator(model.eval())
        MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
        rec = run_md(VelocityVerlet(atoms, timestep=0.5 * units.fs), steps=1000)
        rec.drift() * 1000          # eV/ps/atom (times in fs)

    2D particles (reduced units): ``atoms = particles_to_atoms(pos, charge, box=10.0, vel=vel)`` and
    ``VelocityVerlet(atoms, timestep=0.0005)`` or ``Langevin(atoms, timestep=0.002, temperature_K=T /
    units.kB, friction=1.0, fixcm=False)``; times in tau.

    Raises :class:`MDInstability` (with step and time) on NaN/inf, an energy change beyond
    ``max_energy_change`` per atom, or a bond beyond ``max_bond_factor`` (see :class:`MDGuard`; ``bonds``:
    the pairs to check, default the bonds of the starting structure).
    """
    if steps < 0:
        raise ValueError("steps must be >= 0")
    guard = MDGuard(dyn, stride, max_energy_change, max_bond_factor, bonds)
    guard()  # the starting state
    dyn.attach(guard, interval=1)
    try:
        dyn.run(steps)
    except MDInstability as err:
        err.record = guard.record.finalize()
        raise
    except Exception as err:  # e.g. the model refusing NaN positions inside the integrator step
        if not np.all(np.isfinite(dyn.atoms.positions)):
            # the failing step had not been counted yet
            t = (float(dyn.get_time()) + float(dyn.dt)) / guard._t_per_unit
            failure = MDInstability(dyn.nsteps + 1, t, guard.time_unit, f"NaN/inf positions ({err})")
            failure.record = guard.record.finalize()
            raise failure from err
        raise
    finally:
        dyn.observers[:] = [o for o in dyn.observers if o[0] is not guard]
    return guard.record.finalize()


def thermalize(atoms: Atoms, temperature_K: float, seed: int = 0, zero_rotation: bool = True) -> Atoms:
    """Maxwell-Boltzmann velocities at ``temperature_K`` (seeded), then zero total momentum and (for a
    free molecule, ``zero_rotation=True``) zero angular momentum; returns ``atoms`` (changed in place).

    Removing the drift and the rotation lowers the kinetic temperature slightly (6 fewer degrees of
    freedom are excited); the Langevin thermostat restores it within ~1/friction.
    """
    import warnings

    from ase.md import velocitydistribution as vd

    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if hasattr(vd, "thermalize_momenta"):  # ASE >= 3.28
            vd.thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
        else:
            vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    vd.Stationary(atoms)
    if zero_rotation:
        vd.ZeroRotation(atoms)
    return atoms


@dataclass
class StabilityResult:
    """Outcome of :func:`run_until_unstable`: ``stable`` (True if the time limit was reached), ``time``
    (time of the failure, or the full length, in ``time_unit``), ``steps`` (steps done), ``reason``
    (the :class:`MDInstability` message's reason, ``None`` when stable) and ``record`` (the
    :class:`MDRecord` up to the failure)."""

    stable: bool
    time: float
    steps: int
    time_unit: str
    reason: str | None
    record: MDRecord


def run_until_unstable(dyn, max_steps: int, stride: int = 10, max_energy_change: float | None = None,
                       max_bond_factor: float | None = 2.0, bonds=None) -> StabilityResult:
    """Run ``dyn`` for ``max_steps`` steps or until the :class:`MDGuard` detects an unphysical structure.

    The *stability time* of a potential (how long MD stays physical) is the time of the first bond
    beyond ``max_bond_factor`` x the sum of the covalent radii, or of NaN/inf. The energy check is off by
    default (``max_energy_change=None``): with a thermostat the total energy is not conserved anyway.
    """
    try:
        rec = run_md(dyn, max_steps, stride=stride, max_energy_change=max_energy_change,
                     max_bond_factor=max_bond_factor, bonds=bonds)
    except MDInstability as err:
        return StabilityResult(False, err.time, err.step, err.time_unit, err.reason, err.record)
    return StabilityResult(True, float(rec.times[-1]), int(rec.steps[-1] - rec.steps[0]), rec.time_unit, None, rec)
