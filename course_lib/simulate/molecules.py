"""Molecular reference data: Langevin molecular dynamics of small molecules with GFN2-xTB energies and forces.

Usage::

    python -m course_lib.simulate.molecules --out DIR [--molecules ethanol,malonaldehyde,aspirin]
                                            [--frames N] [--sample-every K] [--seed S]
    python -m course_lib.simulate.molecules --g2 --out DIR [--molecules NAME,...] [--frames N] ...
    python -m course_lib.simulate.molecules --ood --out DIR [--molecules ethanol] [--temperature 1000] [--frames 200]

The second form writes the multi-element conformer set ``g2_conformers.npz`` (:func:`generate_g2`): short
Langevin runs of every closed-shell molecule of ASE's g2 collection (:func:`select_g2`), for learning species
embeddings across H, Li, B, C, N, O, F, Na, Al, Si, P, S, Cl. The third writes an out-of-distribution test
trajectory ``<name>_<T>K.npz`` (:func:`generate_ood`: an independent Langevin run at 1000 K by default).

The protocol follows MD17 (Chmiela et al., Sci. Adv. 3, e1603015, 2017): Langevin dynamics at 500 K with a
0.5 fs timestep, but with the semi-empirical tight-binding method GFN2-xTB (Bannwarth, Ehlert, Grimme,
JCTC 15, 1652, 2019; computed by ``tblite``) in place of DFT, so that every student can regenerate the data
on a laptop. Steps:

1. :func:`make_molecule` builds the molecule (ethanol from ``ase.build.molecule``; malonaldehyde and aspirin,
   which ASE's g2 collection does not contain, from hand-written internal coordinates) and relaxes it with
   BFGS on the xTB surface.
2. :func:`run_md` draws Maxwell-Boltzmann velocities, equilibrates for ``equilibration_steps`` and then keeps
   one frame every ``sample_every`` steps, storing positions (Å), energy (eV) and forces (eV/Å).

Everything is seeded (``numpy.random.RandomState(seed)`` drives the velocities and the Langevin noise), so a
run with the same seed, machine and library versions writes the same bytes. tblite parallelises with
OpenMP, and with 2 threads two runs differed in the last bits (1e-15 Å after a few steps; MD is chaotic, so
this grows). Every xTB call of this module therefore runs with one OpenMP thread: the calculator of
:func:`xtb_calculator` calls ``omp_set_num_threads(1)`` of the OpenMP runtime(s) loaded at its first calculation
around each calculation and restores the previous value afterwards (``OMP_NUM_THREADS`` alone is not enough: it
is read only once, when the runtime starts, which may already have happened, e.g. by importing torch).

Files written to ``DIR``: ``<molecule>.npz`` (written with :func:`course_lib.files.write_npz`; arrays ``z [N]``
int64, ``pos [F, N, 3]``, ``energy [F]``, ``forces [F, N, 3]``, ``time_fs [F]``, all float64) and
``manifest.json`` (sha256, size, seed and all parameters of each file). :func:`to_graphs` turns the arrays into
validated ``torch_geometric`` graphs of the course's data contract. With ``--g2``: ``g2_conformers.npz`` (ragged
layout, see :func:`generate_g2`), ``g2_conformers_splits.npz`` (split by molecule) and their manifest entries.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import time
import zlib
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import molecule as ase_molecule

from course_lib.data import MIN_ATOM_DISTANCE, check_min_distance, sha256_file
from course_lib.files import write_npz

__all__ = [
    "MOLECULES",
    "FREE_ATOM_MULTIPLICITY",
    "MIN_DISTANCE",
    "make_molecule",
    "xtb_calculator",
    "check_atoms",
    "optimize",
    "run_md",
    "reference_energies",
    "fit_species_shift",
    "to_graphs",
    "generate",
    "ood_filename",
    "OOD_DEFAULTS",
    "generate_ood",
    "make_splits",
    "write_splits",
    "SPLIT_FRACTIONS",
    "TIME_BLOCKS",
    "make_time_splits",
    "write_time_splits",
    "G2_FILE",
    "G2_SPLITS_FILE",
    "G2_DEFAULTS",
    "select_g2",
    "is_connected",
    "g2_seed",
    "make_molecule_splits",
    "generate_g2",
    "main",
]

#: Closest allowed distance between two atoms (Å); anything closer is rejected as overlapping.
MIN_DISTANCE = MIN_ATOM_DISTANCE

#: Spin multiplicity (2S + 1) of the ground state of each free atom (Hund's rules), for reference_energies.
FREE_ATOM_MULTIPLICITY = {"H": 2, "B": 2, "C": 3, "N": 4, "O": 3, "F": 2, "Si": 3, "P": 4, "S": 3, "Cl": 2}

# --------------------------------------------------------------------------- hand-built geometries
# Z-matrices: (symbol, bonded atom, bond length Å, angle atom, angle deg, dihedral atom, dihedral deg), indices
# into the rows above. Start values are textbook bond lengths and angles (C-C aromatic 1.39, C=O 1.21-1.25,
# C-O 1.34-1.37, O-H 0.97, C-H 1.08-1.09 Å; sp2 angles 120 deg, sp3 109.5 deg); make_molecule then relaxes them
# with GFN2-xTB (BFGS, fmax 0.01 eV/Å), so the geometry that is used is an xTB minimum, not these numbers.

# Malonaldehyde (propanedial), the enol tautomer of MD17: O=CH-CH=CH-OH, planar, with the intramolecular
# O-H...O hydrogen bond closing a six-membered pseudo-ring.
_MALONALDEHYDE = [
    ("C", None, None, None, None, None, None),  # 0 central C
    ("C", 0, 1.40, None, None, None, None),  # 1 carbonyl C
    ("C", 0, 1.38, 1, 120.0, None, None),  # 2 enol C
    ("O", 1, 1.25, 0, 124.0, 2, 0.0),  # 3 carbonyl O
    ("O", 2, 1.32, 0, 124.0, 1, 0.0),  # 4 hydroxyl O
    ("H", 4, 0.99, 2, 105.0, 0, 0.0),  # 5 hydroxyl H, pointing at O3
    ("H", 0, 1.08, 1, 118.0, 3, 180.0),  # 6
    ("H", 1, 1.10, 0, 118.0, 2, 180.0),  # 7
    ("H", 2, 1.08, 0, 120.0, 1, 180.0),  # 8
]

# Aspirin (2-acetoxybenzoic acid, C9H8O4): benzene ring, carboxylic acid on C0, acetoxy group on C1 turned out
# of the ring plane (as in the crystal structure).
_ASPIRIN = [
    ("C", None, None, None, None, None, None),  # 0 ring, carries COOH
    ("C", 0, 1.39, None, None, None, None),  # 1 ring, carries O-acetyl
    ("C", 1, 1.39, 0, 120.0, None, None),  # 2 ring
    ("C", 2, 1.39, 1, 120.0, 0, 0.0),  # 3 ring
    ("C", 3, 1.39, 2, 120.0, 1, 0.0),  # 4 ring
    ("C", 4, 1.39, 3, 120.0, 2, 0.0),  # 5 ring
    ("C", 0, 1.48, 1, 120.0, 2, 180.0),  # 6 carboxyl C
    ("O", 6, 1.22, 0, 123.0, 1, 0.0),  # 7 carboxyl =O (towards the acetoxy side)
    ("O", 6, 1.34, 0, 114.0, 1, 180.0),  # 8 carboxyl O-H
    ("H", 8, 0.97, 6, 108.0, 0, 180.0),  # 9
    ("O", 1, 1.37, 0, 120.0, 5, 180.0),  # 10 ester O
    ("C", 10, 1.36, 1, 118.0, 0, 90.0),  # 11 acetyl C
    ("O", 11, 1.20, 10, 123.0, 1, 0.0),  # 12 acetyl =O
    ("C", 11, 1.50, 10, 110.0, 1, 180.0),  # 13 methyl C
    ("H", 13, 1.09, 11, 109.5, 10, 60.0),  # 14
    ("H", 13, 1.09, 11, 109.5, 10, 180.0),  # 15
    ("H", 13, 1.09, 11, 109.5, 10, 300.0),  # 16
    ("H", 2, 1.08, 1, 120.0, 0, 180.0),  # 17
    ("H", 3, 1.08, 2, 120.0, 1, 180.0),  # 18
    ("H", 4, 1.08, 3, 120.0, 2, 180.0),  # 19
    ("H", 5, 1.08, 4, 120.0, 3, 180.0),  # 20
]

#: Molecules the generator knows: name -> ASE g2 name (str) or hand-built Z-matrix (list).
MOLECULES: dict[str, str | list] = {
    "ethanol": "CH3CH2OH",
    "malonaldehyde": _MALONALDEHYDE,
    "aspirin": _ASPIRIN,
}

#: Offset added to the seed for each molecule, so that molecules of one run get independent noise.
_SEED_OFFSET = {"ethanol": 0, "malonaldehyde": 1, "aspirin": 2}
#: Fractions of frames in the train / val / test splits (a seeded random permutation of the frames).
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
#: The time-block splits (``<name>_time_splits.npz``): fractions of the trajectory, in time order, of
#: train, gap, val, gap, test. The gaps (250 fs for 1000 frames 10 fs apart) are dropped, so that no test
#: frame is a few femtoseconds from a training frame: the test block measures generalisation to a later,
#: unseen stretch of the trajectory, the random splits (``<name>_splits.npz``) interpolation between neighbours.
TIME_BLOCKS = {"train": 0.7, "gap1": 0.025, "val": 0.075, "gap2": 0.025, "test": 0.175}


def _place(a: np.ndarray, b: np.ndarray, c: np.ndarray, r: float, theta: float, phi: float) -> np.ndarray:
    """Position d with |d - c| = r, angle b-c-d = theta, dihedral a-b-c-d = phi (degrees; NeRF construction)."""
    theta, phi = np.radians(theta), np.radians(phi)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    return c + r * (-np.cos(theta) * bc + np.sin(theta) * np.cos(phi) * m + np.sin(theta) * np.sin(phi) * n)


def _from_zmatrix(rows: list) -> Atoms:
    pos = np.zeros((len(rows), 3))
    for i, (_, j, r, k, theta, l, phi) in enumerate(rows):
        if i == 0:
            continue
        if i == 1:
            pos[1] = pos[j] + [r, 0.0, 0.0]
        elif l is None:  # third atom: in the xy plane
            a = pos[k] + [0.0, 1.0, 0.0]  # any point off the j-k line defines the plane
            pos[i] = _place(a, pos[k], pos[j], r, theta, 0.0)
        else:
            pos[i] = _place(pos[l], pos[k], pos[j], r, theta, phi)
    atoms = Atoms([row[0] for row in rows], positions=pos)
    atoms.positions -= atoms.get_center_of_mass()
    return atoms


# --------------------------------------------------------------------------- building blocks


def _openmp_runtimes() -> list:
    """The OpenMP runtimes loaded in this process (Linux: read from /proc/self/maps), as ctypes libraries."""
    import ctypes
    import re

    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux: nothing to control, rely on OMP_NUM_THREADS
        return []
    paths = sorted({line.split()[-1] for line in maps.splitlines()
                    if re.search(r"/lib(g|i|)omp[^/]*\.so", line.split()[-1] if line.split() else "")})
    libs = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
            lib.omp_get_max_threads, lib.omp_set_num_threads  # noqa: B018 (both must exist)
        except (OSError, AttributeError):
            continue
        libs.append(lib)
    return libs


class _SingleThreadOpenMP:
    """Context manager: one OpenMP thread in every loaded runtime (or in ``runtimes``, a list from
    :func:`_openmp_runtimes`), previous thread counts restored on exit."""

    def __init__(self, runtimes: list | None = None):
        self.runtimes = runtimes

    def __enter__(self):
        runtimes = _openmp_runtimes() if self.runtimes is None else self.runtimes
        self.saved = [(lib, lib.omp_get_max_threads()) for lib in runtimes]
        for lib, _ in self.saved:
            lib.omp_set_num_threads(1)
        return self

    def __exit__(self, *exc):
        for lib, n in self.saved:
            lib.omp_set_num_threads(n)
        return False


def xtb_calculator(accuracy: float = 1.0, **kwargs):
    """A quiet GFN2-xTB calculator (tblite) returning energies in eV and forces in eV/Å.

    Each calculation runs on one OpenMP thread, so that results are bit-reproducible (see the module docstring).
    """
    from tblite.ase import TBLite

    class _TBLite(TBLite):
        _omp = None  # the OpenMP runtimes, found at the first calculation (tblite's library is loaded by then)

        def calculate(self, *args, **kw):
            # scanning /proc/self/maps takes ~2 ms (torch maps thousands of regions): once per calculator, not
            # once per MD step, where it cost 2-3x the xTB calculation of a small molecule
            if self._omp is None:
                self._omp = _openmp_runtimes()
            with _SingleThreadOpenMP(self._omp):
                return super().calculate(*args, **kw)

    return _TBLite(method="GFN2-xTB", accuracy=accuracy, verbosity=0, **kwargs)


def check_atoms(atoms: Atoms, min_distance: float = MIN_DISTANCE) -> Atoms:
    """Raise ValueError if two atoms are closer than ``min_distance`` Å (overlapping); return ``atoms``.

    The same check as the data path's (:func:`course_lib.data.check_min_distance`, used by the loaders).
    """
    check_min_distance(atoms.get_positions(), min_distance, z=atoms.get_atomic_numbers(),
                       name=atoms.get_chemical_formula() or "molecule")
    return atoms


def optimize(atoms: Atoms, fmax: float = 0.01, steps: int = 500) -> Atoms:
    """Relax ``atoms`` in place with BFGS on the GFN2-xTB surface (converged to ``fmax`` eV/Å)."""
    from ase.optimize import BFGS

    check_atoms(atoms)
    if atoms.calc is None:
        atoms.calc = xtb_calculator()
    opt = BFGS(atoms, logfile=None)
    if not opt.run(fmax=fmax, steps=steps):
        raise RuntimeError(f"BFGS did not converge to fmax={fmax} eV/Å in {steps} steps")
    return atoms


def make_molecule(name: str, relax: bool = True) -> Atoms:
    """The molecule ``name`` (one of :data:`MOLECULES`), centred, relaxed with GFN2-xTB unless ``relax=False``.

    The returned atoms carry an xTB calculator.
    """
    if name not in MOLECULES:
        raise ValueError(f"unknown molecule {name!r}; valid choices: {', '.join(MOLECULES)}")
    src = MOLECULES[name]
    atoms = ase_molecule(src) if isinstance(src, str) else _from_zmatrix(src)
    atoms.positions -= atoms.get_center_of_mass()
    check_atoms(atoms)
    atoms.calc = xtb_calculator()
    if relax:
        optimize(atoms)
    return atoms


def _maxwell_boltzmann(atoms: Atoms, temperature_K: float, rng) -> None:
    from ase.md import velocitydistribution as vd

    if hasattr(vd, "thermalize_momenta"):  # ASE >= 3.28; MaxwellBoltzmannDistribution is deprecated there
        vd.thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)
    else:
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)


def run_md(atoms: Atoms, n_frames: int, sample_every: int = 20, seed: int = 0, temperature_K: float = 500.0,
           timestep_fs: float = 0.5, equilibration_steps: int = 2000, friction_per_fs: float = 0.01) -> dict:
    """Langevin MD with GFN2-xTB; returns ``dict(z [N], pos [F,N,3], energy [F], forces [F,N,3], time_fs [F])``.

    Velocities are drawn from the Maxwell-Boltzmann distribution at ``temperature_K`` (zero total momentum and
    angular momentum), then ``equilibration_steps`` Langevin steps are discarded and one frame is kept every
    ``sample_every`` steps. Units: Å, eV, eV/Å, fs. ``atoms`` is copied, not changed.
    """
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, ZeroRotation

    if n_frames < 1 or sample_every < 1 or equilibration_steps < 0:
        raise ValueError("need n_frames >= 1, sample_every >= 1 and equilibration_steps >= 0")
    atoms = check_atoms(atoms.copy())
    atoms.calc = xtb_calculator()
    atoms.set_constraint(FixCom())  # no drift of the centre of mass (ASE's recommended fixcm=False + FixCom)
    rng = np.random.RandomState(seed)
    _maxwell_boltzmann(atoms, temperature_K, rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    dyn = Langevin(atoms, timestep=timestep_fs * units.fs, temperature_K=temperature_K,
                   friction=friction_per_fs / units.fs, fixcm=False, rng=rng, logfile=None)
    n = len(atoms)
    pos = np.zeros((n_frames, n, 3))
    forces = np.zeros((n_frames, n, 3))
    energy = np.zeros(n_frames)
    if equilibration_steps:
        dyn.run(equilibration_steps)
    for f in range(n_frames):
        if f > 0:
            dyn.run(sample_every)
        check_atoms(atoms)
        pos[f] = atoms.get_positions()
        energy[f] = atoms.get_potential_energy()
        forces[f] = atoms.get_forces(apply_constraint=False)  # raw -dE/dx, not the FixCom-projected force
    time_fs = (equilibration_steps + sample_every * np.arange(n_frames)) * timestep_fs
    return {"z": atoms.get_atomic_numbers().astype(np.int64), "pos": pos, "energy": energy, "forces": forces,
            "time_fs": time_fs.astype(np.float64)}


def reference_energies(elements=("H", "C", "N", "O"), spin_polarized: bool = False) -> dict[str, float]:
    """GFN2-xTB energies (eV) of the free atoms ``elements``, in their Hund's-rule spin multiplicity.

    ``spin_polarized=False`` (the default) is the energy GFN2-xTB was parametrised with (e.g. H: -10.7072 eV =
    -0.393483 Eh, the value of the ``xtb`` program); ``spin_polarized=True`` adds tblite's spin-polarisation
    correction, which lowers open-shell atoms by 1-3 eV. Subtract ``sum(E_atom[z])`` from a molecular energy to
    get an atomisation energy; for learning, :func:`fit_species_shift` is an alternative that needs no atoms.
    """
    out = {}
    for sym in elements:
        if sym not in FREE_ATOM_MULTIPLICITY:
            raise ValueError(f"unknown element {sym!r}; valid choices: {', '.join(FREE_ATOM_MULTIPLICITY)}")
        kw = {"spin_polarization": 1.0} if spin_polarized else {}
        atom = Atoms(sym, positions=[[0.0, 0.0, 0.0]])
        atom.calc = xtb_calculator(multiplicity=FREE_ATOM_MULTIPLICITY[sym], **kw)
        out[sym] = float(atom.get_potential_energy())
    return out


def fit_species_shift(zs, energies) -> dict[int, float]:
    """Least-squares per-species energy shifts: ``E ≈ sum_i shift[z_i]`` over a set of molecules.

    ``zs``: list of atomic-number arrays, ``energies``: their energies. Returns ``{z: shift}``; the residual
    ``E - sum shift`` is the part a model has to learn. With a single molecule type the split between species
    is not unique; ``lstsq`` returns the minimum-norm solution, which still removes the mean energy.
    """
    species = sorted({int(z) for zz in zs for z in np.asarray(zz)})
    A = np.array([[np.sum(np.asarray(zz) == s) for s in species] for zz in zs], dtype=np.float64)
    coef, *_ = np.linalg.lstsq(A, np.asarray(energies, dtype=np.float64), rcond=None)
    return {s: float(c) for s, c in zip(species, coef)}


def to_graphs(arrays: dict, dtype=None) -> list:
    """One validated ``torch_geometric`` graph per frame (fields ``z, pos, energy, forces``; overlapping atoms
    are refused, see :func:`check_atoms`)."""
    from course_lib.data import make_graph

    z = arrays["z"]
    return [make_graph(arrays["pos"][f], dtype=dtype, min_distance=MIN_DISTANCE, z=z,
                       energy=float(arrays["energy"][f]), forces=arrays["forces"][f])
            for f in range(len(arrays["energy"]))]


# --------------------------------------------------------------------------- g2 conformers (many elements)

#: File names of the g2 conformer set (in the output folder, next to ``manifest.json``).
G2_FILE = "g2_conformers.npz"
G2_SPLITS_FILE = "g2_conformers_splits.npz"
#: MD parameters of the g2 set: 8 frames 20 fs apart after 50 fs of equilibration, at 500 K. The friction is
#: 5x that of the MD17-like sets: here we want thermal conformers, not dynamics, and a stronger thermostat
#: thermalises the relaxed start and decorrelates successive frames faster (velocity memory 1/friction = 20 fs).
G2_DEFAULTS = {"n_frames": 8, "sample_every": 40, "equilibration_steps": 100, "temperature_K": 500.0,
               "timestep_fs": 0.5, "friction_per_fs": 0.05}
#: The selection rule of :func:`select_g2`, in words (copied into the manifest).
G2_RULE = ("molecules of ase.collections.g2 with at least 2 atoms, no net charge, an even number of electrons and "
           "all initial magnetic moments zero in ASE's data (closed-shell singlets; radicals and triplets such as "
           "O2 are left out), whose GFN2-xTB relaxation converges (BFGS, fmax 0.01 eV/Å), keeps the bonding of "
           "the g2 geometry, and whose MD frames stay one connected molecule")
#: Two atoms are bonded when closer than this multiple of the sum of their covalent radii: at a minimum
#: (the bonding of the relaxed geometry must equal that of the g2 geometry), and in MD frames (which must stay one
#: connected molecule; looser, since bonds stretch at 500 K: H2 reaches 1.3x its covalent length).
_BOND_FACTOR = 1.3
_BOND_FACTOR_MD = 1.6


def select_g2() -> tuple[list[str], dict[str, str]]:
    """The g2 molecules the static part of the rule admits (sorted names) and the others with the reason.

    Rule (static part): at least 2 atoms, neutral, even number of electrons, all of ASE's initial magnetic
    moments zero, i.e. closed-shell singlets that GFN2-xTB treats without spin. :func:`generate_g2` then drops
    molecules whose relaxation fails or changes the bonding, or that fall apart in the MD.
    """
    from ase.collections import g2

    keep, excluded = [], {}
    for name in sorted(g2.names):
        atoms = g2[name]
        if len(atoms) < 2:
            excluded[name] = "single atom"
        elif abs(float(atoms.get_initial_charges().sum())) > 1e-8:
            excluded[name] = "charged"
        elif int(atoms.get_atomic_numbers().sum()) % 2:
            excluded[name] = "odd number of electrons (radical)"
        elif np.any(atoms.get_initial_magnetic_moments() != 0):
            excluded[name] = "open shell (non-zero magnetic moments in ASE's g2 data, e.g. a triplet)"
        else:
            keep.append(name)
    return keep, excluded


def _bonds(z: np.ndarray, pos: np.ndarray, factor: float = _BOND_FACTOR) -> np.ndarray:
    """Adjacency matrix [N, N] (bool): pairs closer than ``factor`` x (sum of covalent radii)."""
    from ase.data import covalent_radii

    r = covalent_radii[z]
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    adj = d < factor * (r[:, None] + r[None, :])
    np.fill_diagonal(adj, False)
    return adj


def is_connected(z, pos, factor: float = _BOND_FACTOR_MD) -> bool:
    """True if the bond graph of atoms ``z [N]`` at ``pos [N, 3]`` (Å) is one connected molecule (bond: closer
    than ``factor`` x the sum of the covalent radii)."""
    adj = _bonds(np.asarray(z), np.asarray(pos, dtype=np.float64), factor)
    seen, todo = {0}, [0]
    while todo:
        for j in np.flatnonzero(adj[todo.pop()]):
            if int(j) not in seen:
                seen.add(int(j))
                todo.append(int(j))
    return len(seen) == len(adj)


def g2_seed(name: str, seed: int = 0) -> int:
    """The MD seed of molecule ``name``: ``(seed + crc32(name)) mod 2^32``, independent of which others run."""
    return (seed + zlib.crc32(name.encode())) % 2**32


def make_molecule_splits(zs, seed: int = 0, fractions=SPLIT_FRACTIONS) -> dict[str, np.ndarray]:
    """Split molecules (not frames): sorted molecule indices ``train``, ``val``, ``test``.

    ``zs``: one atomic-number array per molecule. A seeded permutation gives the val and test molecules
    (``round(fraction * M)`` each); then every val/test molecule that contains an element no training molecule
    contains is moved to train (in permutation order), so every element of val/test has a trained embedding.
    """
    m = len(zs)
    perm = np.random.default_rng(seed).permutation(m)
    n_val, n_test = int(round(fractions[1] * m)), int(round(fractions[2] * m))
    held = {"val": list(perm[:n_val]), "test": list(perm[n_val:n_val + n_test])}
    train = list(perm[n_val + n_test:])
    elements = {int(v) for k in train for v in np.asarray(zs[k])}
    for part in ("val", "test"):
        kept = []
        for k in held[part]:
            if {int(v) for v in np.asarray(zs[k])} <= elements:
                kept.append(k)
            else:
                train.append(k)
                elements |= {int(v) for v in np.asarray(zs[k])}
        held[part] = kept
    # a molecule kept early stays valid: the training elements only grow
    return {k: np.sort(np.asarray(v, dtype=np.int64)) for k, v in
            (("train", train), ("val", held["val"]), ("test", held["test"]))}


def _g2_names(names) -> tuple[list[str], dict[str, str]]:
    """The molecules to simulate and the exclusions to report: all of :func:`select_g2` (with its
    exclusions), or ``names`` (checked against it; then only the run's own exclusions are reported)."""
    allowed, excluded = select_g2()
    if names is None:
        return allowed, excluded
    names = list(names)
    for name in names:
        if name not in allowed:
            why = excluded.get(name, "not in ase.collections.g2")
            raise ValueError(f"g2 molecule {name!r} is not available ({why}); valid choices: {', '.join(allowed)}")
    return names, {}


def _simulate_g2_molecule(name: str, n_frames: int, sample_every: int, seed: int, temperature_K: float,
                          timestep_fs: float, equilibration_steps: int, friction_per_fs: float):
    """Relax one g2 molecule with GFN2-xTB and run its MD: ``(arrays of run_md, None)``, or ``(None, reason)``
    when the molecule is dropped (bonding changed by the relaxation, xTB failure, falls apart)."""
    from ase.collections import g2

    atoms = g2[name]
    atoms.positions -= atoms.get_center_of_mass()
    ref_bonds = _bonds(atoms.get_atomic_numbers(), atoms.get_positions())
    try:
        atoms.calc = xtb_calculator()
        optimize(atoms)
        if not np.array_equal(_bonds(atoms.get_atomic_numbers(), atoms.get_positions()), ref_bonds):
            return None, "the GFN2-xTB relaxation changes the bonding of the g2 geometry"
        arrays = run_md(atoms, n_frames, sample_every, g2_seed(name, seed), temperature_K, timestep_fs,
                        equilibration_steps, friction_per_fs)
    except (RuntimeError, ValueError) as err:  # BFGS not converged, SCF failure, overlapping atoms
        return None, f"GFN2-xTB failed: {err}"
    if not all(is_connected(arrays["z"], p) for p in arrays["pos"]):
        return None, "falls apart during the MD"
    return arrays, None


def _g2_arrays(runs: dict, n_frames: int) -> dict[str, np.ndarray]:
    """The ragged arrays of :data:`G2_FILE` from the runs of the kept molecules (see :func:`generate_g2`)."""
    kept = list(runs)
    zs = [runs[k]["z"] for k in kept]
    return {
        "names": np.array(kept),
        "z": np.concatenate([np.tile(runs[k]["z"], n_frames) for k in kept]).astype(np.int64),
        "pos": np.concatenate([runs[k]["pos"].reshape(-1, 3) for k in kept]),
        "forces": np.concatenate([runs[k]["forces"].reshape(-1, 3) for k in kept]),
        "energy": np.concatenate([runs[k]["energy"] for k in kept]),
        "n_atoms": np.repeat([len(z) for z in zs], n_frames).astype(np.int64),
        "molecule": np.repeat(np.arange(len(kept)), n_frames).astype(np.int64),
    }


def _g2_splits(molecule: np.ndarray, mol_split: dict) -> dict[str, np.ndarray]:
    """Frame indices of every split (all frames of a molecule in one split) and the molecules of each."""
    splits = {}
    for part in ("train", "val", "test"):
        splits[part] = np.flatnonzero(np.isin(molecule, mol_split[part])).astype(np.int64)
    for part in ("train", "val", "test"):
        splits[f"{part}_molecules"] = mol_split[part]
    return splits


def _g2_entries(path: Path, split_path: Path, data: dict, zs: list, splits: dict, mol_split: dict,
                excluded: dict, settings: dict) -> dict:
    """The ``manifest.json`` entries of :data:`G2_FILE` and :data:`G2_SPLITS_FILE`."""
    from ase.data import chemical_symbols

    counts = {}
    for zz in sorted({int(v) for z in zs for v in z}):
        counts[chemical_symbols[zz]] = {"molecules": int(sum(int(zz in z) for z in zs)),
                                        "atoms": int(np.sum(data["z"] == zz))}
    kept = [str(k) for k in data["names"]]
    return {
        G2_FILE: {"sha256": sha256_file(path), "size_bytes": path.stat().st_size, "method": "GFN2-xTB",
                  "source": "ase.collections.g2", "selection_rule": G2_RULE, "n_molecules": len(kept),
                  "n_frames": int(len(data["energy"])), "n_atoms_total": int(len(data["z"])),
                  "frames_per_molecule": settings["n_frames"], "sample_every_steps": settings["sample_every"],
                  "equilibration_steps": settings["equilibration_steps"], "temperature_K": settings["temperature_K"],
                  "timestep_fs": settings["timestep_fs"], "friction_per_fs": settings["friction_per_fs"],
                  "thermostat": "ase Langevin", "relaxation": "BFGS, fmax 0.01 eV/Å", "seed": settings["seed"],
                  "seed_per_molecule": "(seed + crc32(name)) mod 2^32", "element_counts": counts,
                  "molecules": kept, "excluded": excluded,
                  "units": {"pos": "Å", "energy": "eV", "forces": "eV/Å"},
                  "versions": {p: importlib.metadata.version(p) for p in ("tblite", "ase", "numpy")},
                  "openmp_threads_per_xtb_call": 1},
        G2_SPLITS_FILE: {"sha256": sha256_file(split_path), "size_bytes": split_path.stat().st_size,
                         "split": "by molecule (all frames of a molecule in one split; every val/test element "
                                  "also occurs in a training molecule)",
                         "fractions": list(SPLIT_FRACTIONS), "seed": settings["seed"],
                         "n_molecules": {k: int(len(mol_split[k])) for k in ("train", "val", "test")},
                         "n_frames": {k: int(len(splits[k])) for k in ("train", "val", "test")}},
    }


def generate_g2(out: str | Path, names=None, seed: int = 0, n_frames: int = G2_DEFAULTS["n_frames"],
                sample_every: int = G2_DEFAULTS["sample_every"],
                equilibration_steps: int = G2_DEFAULTS["equilibration_steps"],
                temperature_K: float = G2_DEFAULTS["temperature_K"], timestep_fs: float = G2_DEFAULTS["timestep_fs"],
                friction_per_fs: float = G2_DEFAULTS["friction_per_fs"], verbose: bool = True) -> dict:
    """Write :data:`G2_FILE`, :data:`G2_SPLITS_FILE` and their entries of ``manifest.json``; return the entries.

    For every molecule of :func:`select_g2` (or of ``names``, a subset of it): take ASE's g2 geometry, relax it
    with GFN2-xTB, run :func:`run_md` (seed :func:`g2_seed`) and keep ``n_frames`` frames. Ragged layout
    (``A`` = atoms of all frames, ``F`` = frames, ``M`` = molecules): ``z [A]`` int64, ``pos [A, 3]`` Å,
    ``forces [A, 3]`` eV/Å, ``energy [F]`` eV, ``n_atoms [F]`` int64, ``molecule [F]`` int64 (index into
    ``names [M]``); frame ``f`` owns rows ``ptr[f]:ptr[f + 1]``, ``ptr = [0, cumsum(n_atoms)]``.
    """
    out = Path(out)
    names, excluded = _g2_names(names)
    runs = {}
    for name in names:
        t0 = time.perf_counter()
        arrays, reason = _simulate_g2_molecule(name, n_frames, sample_every, seed, temperature_K, timestep_fs,
                                               equilibration_steps, friction_per_fs)
        if arrays is None:
            excluded[name] = reason
            continue
        runs[name] = arrays
        if verbose:
            print(f"  {name:24s} {len(arrays['z']):3d} atoms  {time.perf_counter() - t0:5.1f} s")
    if not runs:
        raise RuntimeError(f"no g2 molecule survived the selection: {excluded}")
    zs = [runs[k]["z"] for k in runs]
    data = _g2_arrays(runs, n_frames)
    path = out / G2_FILE
    write_npz(path, data)
    mol_split = make_molecule_splits(zs, seed)
    splits = _g2_splits(data["molecule"], mol_split)
    split_path = out / G2_SPLITS_FILE
    write_npz(split_path, splits)
    settings = {"n_frames": n_frames, "sample_every": sample_every, "equilibration_steps": equilibration_steps,
                "temperature_K": temperature_K, "timestep_fs": timestep_fs, "friction_per_fs": friction_per_fs,
                "seed": seed}
    entries = _g2_entries(path, split_path, data, zs, splits, mol_split, excluded, settings)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest.update(entries)
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    if verbose:
        print(f"{G2_FILE}: {len(runs)} molecules, {len(data['energy'])} frames, {len(excluded)} excluded, "
              f"{path.stat().st_size / 1e6:.2f} MB")
    return entries


# --------------------------------------------------------------------------- CLI


def make_splits(n_frames: int, seed: int, fractions=SPLIT_FRACTIONS) -> dict[str, np.ndarray]:
    """Index arrays ``train``, ``val``, ``test`` (sorted int64) from a seeded permutation of the frames."""
    perm = np.random.default_rng(seed).permutation(n_frames)
    n_train = int(round(fractions[0] * n_frames))
    n_val = int(round(fractions[1] * n_frames))
    parts = {"train": perm[:n_train], "val": perm[n_train:n_train + n_val], "test": perm[n_train + n_val:]}
    return {k: np.sort(v).astype(np.int64) for k, v in parts.items()}


def write_splits(out: str | Path, name: str, n_frames: int, seed: int) -> Path:
    """Write ``<name>_splits.npz`` (the index files of the splits) next to the data."""
    path = Path(out) / f"{name}_splits.npz"
    write_npz(path, make_splits(n_frames, seed))
    return path


def make_time_splits(n_frames: int, blocks: dict = TIME_BLOCKS) -> dict[str, np.ndarray]:
    """Index arrays ``train``, ``val``, ``test`` (sorted int64) as consecutive blocks of the trajectory in time
    order, separated by the dropped gaps of ``blocks`` (fractions of ``n_frames``, in order, summing to 1)."""
    if abs(sum(blocks.values()) - 1) > 1e-9:
        raise ValueError(f"the time blocks {blocks} must sum to 1")
    edges = np.round(np.cumsum([0.0, *blocks.values()]) * n_frames).astype(int)
    parts = {k: np.arange(a, b, dtype=np.int64) for k, a, b in zip(blocks, edges[:-1], edges[1:])}
    if any(len(parts[k]) == 0 for k in ("train", "val", "test")):
        raise ValueError(f"{n_frames} frames are too few for the time blocks {blocks}: use more frames")
    return {k: parts[k] for k in ("train", "val", "test")}


def write_time_splits(out: str | Path, name: str, n_frames: int) -> Path:
    """Write ``<name>_time_splits.npz`` (the time-block splits of :func:`make_time_splits`) next to the data."""
    path = Path(out) / f"{name}_time_splits.npz"
    write_npz(path, make_time_splits(n_frames))
    return path


def generate(out: str | Path, names, n_frames: int, seed: int = 0, sample_every: int = 20,
             equilibration_steps: int = 2000, temperature_K: float = 500.0, timestep_fs: float = 0.5,
             friction_per_fs: float = 0.01) -> dict:
    """Write ``<name>.npz`` for every molecule and ``manifest.json``; return the manifest."""
    out = Path(out)
    names = list(names)
    for name in names:
        if name not in MOLECULES:
            raise ValueError(f"unknown molecule {name!r}; valid choices: {', '.join(MOLECULES)}")
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for name in names:
        t0 = time.perf_counter()
        atoms = make_molecule(name)
        params = {"molecule": name, "formula": atoms.get_chemical_formula(), "method": "GFN2-xTB",
                  "seed": seed + _SEED_OFFSET[name], "n_frames": n_frames, "sample_every_steps": sample_every,
                  "equilibration_steps": equilibration_steps, "temperature_K": temperature_K,
                  "timestep_fs": timestep_fs, "friction_per_fs": friction_per_fs, "thermostat": "ase Langevin",
                  "units": {"pos": "Å", "energy": "eV", "forces": "eV/Å", "time_fs": "fs"},
                  "versions": {p: importlib.metadata.version(p) for p in ("tblite", "ase", "numpy")},
                  "openmp_threads_per_xtb_call": 1}
        arrays = run_md(atoms, n_frames, sample_every, params["seed"], temperature_K, timestep_fs,
                        equilibration_steps, friction_per_fs)
        path = out / f"{name}.npz"
        write_npz(path, arrays)
        wall = time.perf_counter() - t0
        manifest[path.name] = {"sha256": sha256_file(path), "size_bytes": path.stat().st_size, **params}
        split_path = write_splits(out, name, n_frames, params["seed"])
        manifest[split_path.name] = {"sha256": sha256_file(split_path), "size_bytes": split_path.stat().st_size,
                                     "fractions": list(SPLIT_FRACTIONS), "seed": params["seed"]}
        try:
            time_path = write_time_splits(out, name, n_frames)
        except ValueError as exc:  # a short test trajectory: no time blocks (scheme="time" is then unavailable)
            print(f"{name}: no time-block splits ({exc})")
        else:
            manifest[time_path.name] = {"sha256": sha256_file(time_path), "size_bytes": time_path.stat().st_size,
                                        "time_blocks": dict(TIME_BLOCKS)}
        print(f"{path.name}: {n_frames} frames, {path.stat().st_size / 1e6:.2f} MB, wall time {wall:.1f} s")
    out.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return manifest


#: The out-of-distribution set (``--ood``): an independent, hotter trajectory of one molecule.
OOD_DEFAULTS = {"temperature_K": 1000.0, "n_frames": 200, "sample_every": 20, "equilibration_steps": 2000,
                "seed_offset": 1000}


def ood_filename(name: str, temperature_K: float) -> str:
    """File name of an out-of-distribution trajectory: ``<name>_<T>K.npz`` (e.g. ``ethanol_1000K.npz``)."""
    return f"{name}_{temperature_K:g}K.npz"


def generate_ood(out: str | Path, name: str = "ethanol", temperature_K: float = OOD_DEFAULTS["temperature_K"],
                 n_frames: int = OOD_DEFAULTS["n_frames"], seed: int = 0,
                 sample_every: int = OOD_DEFAULTS["sample_every"],
                 equilibration_steps: int = OOD_DEFAULTS["equilibration_steps"]) -> dict:
    """Write ``<name>_<T>K.npz`` (:func:`ood_filename`): a Langevin run at ``temperature_K`` (default 1000 K,
    twice the temperature of the training data), independent of the 500 K run (its own seed, ``seed +
    OOD_DEFAULTS["seed_offset"] + offset of the molecule``), with the same protocol otherwise (relaxed start,
    0.5 fs steps, friction 0.01/fs). All frames form one test set (no splits): it measures generalisation
    to a different distribution (larger distortions, other conformer populations), not interpolation.
    Adds the file's entry to ``manifest.json`` in ``out``; returns the manifest."""
    if name not in MOLECULES:
        raise ValueError(f"unknown molecule {name!r}; valid choices: {', '.join(MOLECULES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    t0 = time.perf_counter()
    atoms = make_molecule(name)
    params = {"molecule": name, "formula": atoms.get_chemical_formula(), "method": "GFN2-xTB",
              "seed": seed + OOD_DEFAULTS["seed_offset"] + _SEED_OFFSET[name], "n_frames": n_frames,
              "sample_every_steps": sample_every, "equilibration_steps": equilibration_steps,
              "temperature_K": float(temperature_K), "timestep_fs": 0.5, "friction_per_fs": 0.01,
              "thermostat": "ase Langevin", "role": "out-of-distribution test set (no splits)",
              "units": {"pos": "Å", "energy": "eV", "forces": "eV/Å", "time_fs": "fs"},
              "versions": {p: importlib.metadata.version(p) for p in ("tblite", "ase", "numpy")},
              "openmp_threads_per_xtb_call": 1}
    arrays = run_md(atoms, n_frames, sample_every, params["seed"], float(temperature_K), 0.5, equilibration_steps,
                    0.01)
    path = out / ood_filename(name, temperature_K)
    write_npz(path, arrays)
    manifest[path.name] = {"sha256": sha256_file(path), "size_bytes": path.stat().st_size, **params}
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"{path.name}: {n_frames} frames at {temperature_K:g} K, {path.stat().st_size / 1e6:.2f} MB, "
          f"wall time {time.perf_counter() - t0:.1f} s")
    return manifest


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--ood", action="store_true",
                    help="write the out-of-distribution trajectory <molecule>_<T>K.npz (generate_ood) instead")
    ap.add_argument("--temperature", type=float, default=None,
                    help=f"K (default 500; --ood: {OOD_DEFAULTS['temperature_K']:g})")
    ap.add_argument("--g2", action="store_true",
                    help=f"write the multi-element conformer set {G2_FILE} of ASE's g2 molecules instead")
    ap.add_argument("--molecules", default=None,
                    help=f"comma-separated, from {list(MOLECULES)} (default: all); with --g2: g2 names "
                         "(default: every molecule of the selection rule)")
    ap.add_argument("--frames", type=int, default=None,
                    help=f"frames per molecule (required without --g2; --g2 default {G2_DEFAULTS['n_frames']})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample-every", type=int, default=None,
                    help=f"MD steps between stored frames (default 20; --g2: {G2_DEFAULTS['sample_every']})")
    ap.add_argument("--equilibration-steps", type=int, default=None,
                    help=f"default 2000; --g2: {G2_DEFAULTS['equilibration_steps']}")
    args = ap.parse_args(argv)
    names = None if args.molecules is None else [m.strip() for m in args.molecules.split(",") if m.strip()]
    t0 = time.perf_counter()
    if args.ood:
        kw = {"n_frames": args.frames, "sample_every": args.sample_every,
              "equilibration_steps": args.equilibration_steps, "temperature_K": args.temperature}
        for name in names or ["ethanol"]:
            generate_ood(args.out, name, seed=args.seed, **{k: v for k, v in kw.items() if v is not None})
    elif args.g2:
        kw = {"n_frames": args.frames, "sample_every": args.sample_every,
              "equilibration_steps": args.equilibration_steps}
        generate_g2(args.out, names, args.seed, **{k: v for k, v in kw.items() if v is not None})
    else:
        if args.frames is None:
            ap.error("--frames is required (without --g2)")
        generate(args.out, names or list(MOLECULES), args.frames, args.seed,
                 20 if args.sample_every is None else args.sample_every,
                 2000 if args.equilibration_steps is None else args.equilibration_steps,
                 500.0 if args.temperature is None else args.temperature)
    print(f"total wall time {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
