"""An ASE calculator for the energy models of the course: energies, and forces by automatic differentiation.

:class:`ModelCalculator` wraps any energy model ``model(batch) -> [num_graphs]`` (SchNet, NequIP, the
invariant MPNN of notebook 01) as an ``ase.calculators.calculator.Calculator``, so that ASE can run
geometry optimisations and molecular dynamics with it (:mod:`course_lib.md`). Forces are
``F = -dE/dpos`` (:func:`course_lib.models.energy_and_forces`): exactly the gradient of the returned
energy, so NVE dynamics conserve the energy up to the integrator's error.

Two kinds of systems (``system=``; ``"auto"`` reads the system the model declares in its class
attribute ``system`` -- ``"particles2d"`` for :class:`~course_lib.models.mpnn.InvariantMPNN`,
``"molecule"`` for SchNet and NequIP -- and takes ``"molecule"`` for a model that declares none):

``"molecule"`` -- atoms with atomic numbers (SchNet, NequIP). Units: **eV and Angstrom** (ASE's own),
    so ASE's time unit, ``ase.units.fs``, temperatures in kelvin and masses in amu work as usual. The
    batch is ``Data(z [N], pos [N, 3])``. Open space (``pbc = False``), or a periodic **orthorhombic**
    cell with ``pbc = True`` in all three directions, passed to the model as ``box [1, 3]`` (the
    models use the minimum-image radius graph, :func:`course_lib.neighbors.radius_graph`, which needs
    ``cutoff < L/2``). Mixed ``pbc`` and skewed cells are refused.

``"particles2d"`` -- the charged particles of :mod:`course_lib.simulate.particles2d` (the MPNN).
    Units: **reduced units** (length l, energy eps, mass m, ``k_B = 1``, time ``tau = l sqrt(m/eps)``),
    read by ASE as if they were Angstrom, eV and amu. Then ASE's internal time unit
    (``Angstrom sqrt(amu/eV)``) *is* tau: pass ``timestep=dt`` (in tau, not ``dt * units.fs``),
    ``friction=gamma`` (in 1/tau) and ``temperature_K=T / ase.units.kB`` to ASE's integrators, and
    read temperatures as ``atoms.get_temperature() * ase.units.kB``. Particles live in the plane
    ``z = 0``: positions ``[N, 3]`` with a zero third column, cell ``diag(L, L, anything)`` with
    ``pbc = (True, True, False)`` (periodic square box of side L, ``box [1, 2]`` for the model) or
    ``pbc = False`` (open plane); charges from ``atoms.get_initial_charges()`` or the ``charges=``
    argument. Returned forces have a zero z component. :func:`particles_to_atoms` builds such Atoms,
    with a ``FixCartesian`` constraint on z so that ASE's 3-D integrators (VelocityVerlet, Langevin)
    never move a particle out of the plane (checked in ``tests/test_ase_calculator.py``).

Refusals (``ValueError`` with what to do): a model (or any submodule) in training mode (call
``model.eval()``); atoms whose element the model was not trained on; atoms out of the plane, a
non-square or skewed cell or unsupported ``pbc`` for the particles; ``use_speed=True`` MPNNs (their
"energy" depends on the velocities: not a potential energy).

Trained-species protocol
------------------------
A model may declare the elements it was trained on as ``model.trained_species`` and the elements it can
embed at all as ``model.species`` (iterables of atomic numbers, or ``None``: unknown). The calculator
refuses atoms outside ``trained_species`` when it is known, else outside ``species``; a model with
neither is not checked. :class:`~course_lib.models.schnet.SchNet` and
:class:`~course_lib.models.nequip.NequIP` record their ``trained_species`` in ``fit_energy_scale``
(saved in checkpoints); their ``species`` is the embedding table (``1..max_z`` for SchNet).

The model is *copied* and converted to ``device`` and ``dtype`` (the original is left alone; later
changes to it are not seen by the calculator). ASE works in float64; ``dtype=torch.float32`` is
faster but its forces carry ~1e-6 relative rounding noise, which shows up as an energy drift in
long NVE runs.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.constraints import FixAtoms, FixCartesian
from ase.data import chemical_symbols
from torch_geometric.data import Data

from course_lib.models import energy_and_forces

__all__ = ["ModelCalculator", "particles_to_atoms", "SYSTEMS"]

#: Kinds of systems the calculator understands (see the module docstring).
SYSTEMS = ("molecule", "particles2d")

#: Largest |z| accepted for a particle "in the plane" (ASE's integrators keep z exactly 0 with the
#: FixCartesian constraint of :func:`particles_to_atoms`).
_PLANE_TOL = 1e-8


def _symbol(z: int) -> str:
    return chemical_symbols[z] if 0 <= z < len(chemical_symbols) else f"Z={z}"


def _training_modules(model: torch.nn.Module) -> list[str]:
    return [name or type(model).__name__ for name, m in model.named_modules() if m.training]


def _check_eval(model: torch.nn.Module) -> None:
    training = _training_modules(model)
    if training:
        raise ValueError(
            f"the model is in training mode ({', '.join(training[:3])}{' ...' if len(training) > 3 else ''}): "
            "call model.eval() before using it in a calculator (training mode may change the outputs, e.g. "
            "dropout, and keeps a second-order autograd graph for every force evaluation)")


def _orthogonal(cell: np.ndarray, tol: float = 1e-10) -> bool:
    off = cell - np.diag(np.diag(cell))
    return bool(np.all(np.abs(off) <= tol * max(1.0, np.abs(cell).max())))


class ModelCalculator(Calculator):
    """ASE calculator for an energy model ``model(batch) -> [num_graphs]``: ``energy`` (and
    ``free_energy``, the same) as a float, ``forces [N, 3]`` (float64 numpy), ``F = -dE/dpos``.

    Args:
        model: the energy model, in eval mode (it is copied, not modified).
        device: where to evaluate it (``"cpu"``, ``"cuda"``, a ``torch.device``).
        dtype: ``torch.float64`` (default) or ``torch.float32``: the precision of the evaluation.
        system: ``"molecule"`` (eV, Angstrom), ``"particles2d"`` (reduced units, z = 0) or ``"auto"``
            (the model's declared ``system``, ``"molecule"`` if it declares none).
        charges: particles only, charges ``[N]`` to use instead of ``atoms.get_initial_charges()``.
        **kwargs: passed to ``ase.calculators.calculator.Calculator``.

    Attributes: ``model`` (the copy), ``system``, ``units`` (``"eV/Angstrom"`` or ``"reduced"``),
    ``species`` (the trained atomic numbers or ``None``).
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, model: torch.nn.Module, device="cpu", dtype: torch.dtype = torch.float64,
                 system: str = "auto", charges=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"model must be a torch.nn.Module energy model, got {type(model).__name__}")
        _check_eval(model)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if system == "auto":
            system = getattr(model, "system", "molecule")
        if system not in SYSTEMS:
            raise ValueError(f"unknown system {system!r}; use one of {SYSTEMS} or 'auto'")
        if system == "particles2d" and getattr(model, "use_speed", False):
            raise ValueError("this MPNN was built with use_speed=True: its 'energy' depends on the velocities, so "
                             "it is not a potential energy and cannot drive MD; use a model with use_speed=False")
        self.system = system
        self.units = "reduced" if system == "particles2d" else "eV/Angstrom"
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = copy.deepcopy(model).to(device=self.device, dtype=dtype)
        for p in self.model.parameters():  # forces only need d/dpos
            p.requires_grad_(False)
        self._all_modules = list(self.model.modules())  # for a cheap training-mode check at every call
        # the elements the model was trained on if it records them (NequIP), else its species table
        species = getattr(model, "trained_species", None) or getattr(model, "species", None)
        self.species = None if species is None else tuple(sorted(int(z) for z in species))
        self.charges = None if charges is None else np.asarray(charges, dtype=np.float64).reshape(-1)

    # -- Atoms -> batch ---------------------------------------------------------------------------
    def _tensor(self, x, dtype=None) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype or self.dtype, device=self.device)

    def check_species(self, numbers) -> None:
        """Refuse atomic numbers outside the model's trained :attr:`species` (no check if unknown)."""
        if self.species is None:
            return
        bad = sorted(set(int(z) for z in numbers) - set(self.species))
        if bad:
            raise ValueError(
                f"the model was not trained on {', '.join(_symbol(z) for z in bad)} (Z = {bad}); it knows "
                f"{', '.join(_symbol(z) for z in self.species)} (Z = {list(self.species)}). Its energies for "
                "other elements are meaningless: train a model on data containing them")

    def molecule_batch(self, atoms: Atoms) -> Data:
        """``Data(z [N], pos [N, 3], box [1, 3] if periodic)`` from atoms (eV/Angstrom models)."""
        self.check_species(atoms.numbers)
        data = Data(z=self._tensor(atoms.numbers, torch.long), pos=self._tensor(atoms.positions))
        pbc = atoms.pbc
        if pbc.all():
            cell = np.asarray(atoms.cell)
            if not _orthogonal(cell) or np.any(np.diag(cell) <= 0):
                raise ValueError(f"only orthorhombic periodic cells are supported (the minimum-image neighbour "
                                 f"list), got cell\n{cell}\nuse an orthorhombic supercell")
            data.box = self._tensor(np.diag(cell)[None])
        elif pbc.any():
            raise ValueError(f"mixed periodicity pbc={pbc.tolist()} is not supported: use pbc=False (a molecule in "
                             "open space) or pbc=True with an orthorhombic cell")
        return data

    def particles_batch(self, atoms: Atoms) -> Data:
        """``Data(pos [N, 2], charge [N], box [1, 2] if periodic)`` from atoms in the plane z = 0 (reduced units)."""
        n = len(atoms)
        pos = atoms.positions
        z_max = float(np.abs(pos[:, 2]).max()) if n else 0.0
        if z_max > _PLANE_TOL:
            i = int(np.argmax(np.abs(pos[:, 2])))
            raise ValueError(f"2D particles live in the plane z = 0, but particle {i} has z = {pos[i, 2]:.3g}: "
                             "set atoms.positions[:, 2] = 0 (and do not call atoms.center()); "
                             "particles_to_atoms builds valid Atoms")
        if self.charges is not None:
            q = self.charges
        elif atoms.has("initial_charges"):
            q = atoms.get_initial_charges()
        else:
            raise ValueError("the particles have no charges: call atoms.set_initial_charges(q) or pass "
                             "ModelCalculator(model, charges=q)")
        if q.shape != (n,):
            raise ValueError(f"{q.shape[0]} charges for {n} particles")
        data = Data(pos=self._tensor(pos[:, :2]), charge=self._tensor(q))
        pbc = tuple(bool(p) for p in atoms.pbc)
        if pbc == (True, True, False):
            cell = np.asarray(atoms.cell)
            L = cell[0, 0]
            if not _orthogonal(cell) or L <= 0 or abs(cell[1, 1] - L) > 1e-10 * L:
                raise ValueError(f"2D particles need a square box: cell diag(L, L, anything) with no off-diagonal "
                                 f"entries, got cell\n{cell}\nuse particles_to_atoms(pos, charge, box=L)")
            data.box = self._tensor([[L, L]])
        elif pbc != (False, False, False):
            raise ValueError(f"2D particles need pbc=(True, True, False) (a periodic square box in the plane) or "
                             f"pbc=False (open plane), got pbc={list(pbc)}")
        return data

    def batch(self, atoms: Atoms) -> Data:
        """The model's input graph for ``atoms`` (see :meth:`molecule_batch`, :meth:`particles_batch`)."""
        return self.particles_batch(atoms) if self.system == "particles2d" else self.molecule_batch(atoms)

    # -- ASE ----------------------------------------------------------------------------------------
    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if any(m.training for m in self._all_modules):
            _check_eval(self.model)  # raises with the names of the modules in training mode
        energy, forces = energy_and_forces(self.model, self.batch(self.atoms), create_graph=False)
        f = np.zeros((len(self.atoms), 3))
        f[:, : forces.shape[1]] = forces.detach().cpu().double().numpy()
        e = float(energy.detach().sum())
        self.results = {"energy": e, "free_energy": e, "forces": f}


def particles_to_atoms(pos, charge, box: float | None = None, vel=None, mass=None, fixed=None,
                       symbol: str = "X", height: float | None = None) -> Atoms:
    """ASE Atoms for 2D particles in reduced units (the conventions of :mod:`course_lib.simulate.particles2d`).

    Args:
        pos: positions ``[N, 2]`` (``[N, 3]`` with a zero third column is accepted).
        charge: charges ``[N]`` (stored as ``initial_charges``).
        box: side ``L`` of the periodic square box (cell ``diag(L, L, height)``, pbc ``(True, True, False)``),
            or ``None`` for the open plane.
        vel: velocities ``[N, 2]`` (default 0); ``mass``: masses ``[N]`` (default 1).
        fixed: bool ``[N]``, True for atoms that never move (crystal atoms): ``FixAtoms``.
        symbol: chemical symbol of every particle (default ``"X"``, a dummy element; masses are set anyway).
        height: z size of the cell (default ``L``); irrelevant for the energy.

    The other particles get ``FixCartesian(mask=(False, False, True))``: ASE's integrators then keep
    ``z = 0`` and ``v_z = 0`` exactly, and count 2 degrees of freedom per particle in temperatures.
    """
    pos = np.asarray(pos, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] not in (2, 3) or (pos.shape[1] == 3 and np.any(pos[:, 2] != 0)):
        raise ValueError(f"pos must be [N, 2] (or [N, 3] with z = 0), got shape {pos.shape}")
    n = len(pos)
    p3 = np.zeros((n, 3))
    p3[:, :2] = pos[:, :2]
    atoms = Atoms([symbol] * n, positions=p3)
    atoms.set_initial_charges(np.asarray(charge, dtype=np.float64).reshape(n))
    atoms.set_masses(np.ones(n) if mass is None else np.asarray(mass, dtype=np.float64).reshape(n))
    if box is not None:
        sides = np.asarray(box, dtype=np.float64).reshape(-1)
        L = float(sides[0])
        if L <= 0 or np.any(sides != L):
            raise ValueError(f"box must be the side L > 0 of a square box, got {sides.tolist()}")
        atoms.set_cell([L, L, L if height is None else height])
        atoms.set_pbc((True, True, False))
    fixed = np.zeros(n, dtype=bool) if fixed is None else np.asarray(fixed, dtype=bool).reshape(n)
    constraints = []
    if fixed.any():
        constraints.append(FixAtoms(indices=np.flatnonzero(fixed)))
    if (~fixed).any():
        constraints.append(FixCartesian(np.flatnonzero(~fixed), mask=(False, False, True)))
    atoms.set_constraint(constraints)
    if vel is not None:  # after the constraints: fixed atoms get v = 0, everybody v_z = 0
        v = np.zeros((n, 3))
        v[:, :2] = np.asarray(vel, dtype=np.float64)[:, :2]
        atoms.set_velocities(v)
    return atoms
