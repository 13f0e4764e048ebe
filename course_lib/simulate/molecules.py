"""Molecular reference data: Langevin molecular dynamics of small molecules with GFN2-xTB energies and forces.

Usage::

    python -m course_lib.simulate.molecules --out DIR [--molecules ethanol,malonaldehyde,aspirin]
                                            [--frames N] [--sample-every K] [--seed S]

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
:func:`xtb_calculator` calls ``omp_set_num_threads(1)`` of the loaded OpenMP runtime(s) around each calculation
and restores the previous value afterwards (``OMP_NUM_THREADS`` alone is not enough: it is read only once,
when the runtime starts, which may already have happened, e.g. by importing torch).

Files written to ``DIR``: ``<molecule>.npz`` (written with :func:`course_lib.files.write_npz`; arrays ``z [N]``
int64, ``pos [F, N, 3]``, ``energy [F]``, ``forces [F, N, 3]``, ``time_fs [F]``, all float64) and
``manifest.json`` (sha256, size, seed and all parameters of each file). :func:`to_graphs` turns the arrays into
validated ``torch_geometric`` graphs of the course's data contract.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import time
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import molecule as ase_molecule

from course_lib.data import sha256_file
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
    "make_splits",
    "write_splits",
    "SPLIT_FRACTIONS",
    "main",
]

#: Closest allowed distance between two atoms (Å); anything closer is rejected as overlapping.
MIN_DISTANCE = 0.5

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
    """Context manager: one OpenMP thread in every loaded runtime, previous thread counts restored on exit."""

    def __enter__(self):
        self.saved = [(lib, lib.omp_get_max_threads()) for lib in _openmp_runtimes()]
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
        def calculate(self, *args, **kw):
            with _SingleThreadOpenMP():
                return super().calculate(*args, **kw)

    return _TBLite(method="GFN2-xTB", accuracy=accuracy, verbosity=0, **kwargs)


def check_atoms(atoms: Atoms, min_distance: float = MIN_DISTANCE) -> Atoms:
    """Raise ValueError if two atoms are closer than ``min_distance`` Å (overlapping); return ``atoms``."""
    pos = atoms.get_positions()
    if len(pos) > 1:
        d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
        d[np.diag_indices(len(pos))] = np.inf
        i, j = np.unravel_index(np.argmin(d), d.shape)
        if d[i, j] < min_distance:
            raise ValueError(f"atoms {min(i, j)} and {max(i, j)} overlap: {d[i, j]:.3f} Å apart "
                             f"(less than {min_distance} Å)")
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
    """One validated ``torch_geometric`` graph per frame (fields ``z, pos, energy, forces``)."""
    from course_lib.data import make_graph

    z = arrays["z"]
    return [make_graph(arrays["pos"][f], dtype=dtype, z=z, energy=float(arrays["energy"][f]),
                       forces=arrays["forces"][f]) for f in range(len(arrays["energy"]))]


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
        print(f"{path.name}: {n_frames} frames, {path.stat().st_size / 1e6:.2f} MB, wall time {wall:.1f} s")
    out.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return manifest


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--molecules", default=",".join(MOLECULES), help=f"comma-separated, from {list(MOLECULES)}")
    ap.add_argument("--frames", type=int, required=True, help="frames per molecule")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample-every", type=int, default=20, help="MD steps between stored frames")
    ap.add_argument("--equilibration-steps", type=int, default=2000)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    generate(args.out, [m.strip() for m in args.molecules.split(",") if m.strip()], args.frames, args.seed,
             args.sample_every, args.equilibration_steps)
    print(f"total wall time {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
