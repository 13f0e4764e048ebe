"""COURSE-MADE FIXTURES in the exact file layouts of rMD17 and QM9, for offline tests of
:mod:`course_lib.public_datasets`. They contain the course's own GFN2-xTB data and placeholder numbers, not a
single value of the real data sets.

- :func:`write_rmd17_fixture` writes ``rmd17.tar.bz2`` with ``rmd17/npz_data/rmd17_<molecule>.npz`` for the
  course molecules that rMD17 also has (ethanol, malonaldehyde, aspirin): a few frames of
  :func:`course_lib.datasets.load_molecules` with energies and forces converted to kcal/mol and kcal/mol/Å,
  ``old_indices`` = the frame indices in the course file and ``old_energies``/``old_forces`` = copies of the
  labels (the course has no "old" data); five ``splits/index_{train,test}_0k.csv``; and a ``readme.txt``
  saying what it is. One deliberate addition to the upstream format: every ``.npz`` also holds a string
  ``course_fixture_note`` (readers look keys up by name, so an extra key changes nothing for them).
- :func:`write_qm9_fixture` writes ``dsgdb9nsd.xyz.tar.bz2`` with ``dsgdb9nsd_00000k.xyz`` files in the
  paper's extended XYZ format and an ``uncharacterized.txt`` with the upstream layout (9 header lines, the
  table, one closing rule). Molecules 1-3 are CH4, NH3 and H2O from ``ase.build.molecule``, shifted by
  :data:`QM9_FIXTURE_SHIFT` so that their central atom has tiny coordinates, which are written in Mathematica's
  ``*^`` notation as upstream does; their U0 is a round placeholder. The others are frames of the course's
  ethanol and malonaldehyde data with U0 = the GFN2-xTB total energy in Hartree. A, B, C are the rotational
  constants of the stored geometry (GHz); every other property, the Mulliken charges and the frequencies are
  placeholders; the InChI line of every file says ``COURSE-MADE-FIXTURE``.

Both writers are deterministic (fixed tar metadata, seeded splits): the same inputs give the same bytes.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule as ase_molecule
from scipy import constants

from course_lib.datasets import load_molecules
from course_lib.files import write_npz
from course_lib.public_datasets import HARTREE, KCAL_PER_MOL, QM9_ARCHIVE, QM9_PROPERTIES, RMD17_ARCHIVE

__all__ = [
    "FIXTURE_NOTE",
    "QM9_FIXTURE_SHIFT",
    "QM9_FIXTURE_UNCHARACTERIZED",
    "rotational_constants_ghz",
    "format_qm9_number",
    "qm9_xyz_text",
    "write_rmd17_fixture",
    "write_qm9_fixture",
]

FIXTURE_NOTE = ("COURSE-MADE FIXTURE written by tests/public_datasets_fixtures.py from the course's own "
                "GFN2-xTB data and placeholder numbers; this is NOT data of rMD17 or QM9.")
#: Shift (Å) of the ase-built QM9 fixture molecules: gives coordinates below 1e-4 Å, written with ``*^``.
QM9_FIXTURE_SHIFT = (2.5e-5, -4.0e-6, 0.0)
#: gdb ids that the fixture's ``uncharacterized.txt`` lists.
QM9_FIXTURE_UNCHARACTERIZED = (3, 6)

_RMD17_FIXTURE_MOLECULES = ("ethanol", "malonaldehyde", "aspirin")
_PLACEHOLDER = {"mu": 1.5, "alpha": 20.0, "homo": -0.25, "lumo": 0.05, "gap": 0.30, "r2": 150.0, "zpve": 0.05,
                "Cv": 10.0}
_PLACEHOLDER_THERMAL = {"U": 0.0028, "H": 0.0038, "G": -0.0200}  # Hartree, added to U0
_ASE_MOLECULES = (("CH4", "C", -40.0), ("NH3", "N", -56.0), ("H2O", "O", -76.0))  # name, SMILES, U0 placeholder
_COURSE_FRAMES = (("ethanol", "CCO", 3), ("malonaldehyde", "O=CC=CO", 2))  # name, SMILES, frames


def _tar_bytes(members: dict[str, bytes], compression: str = "bz2") -> bytes:
    """A tar archive (``members``: path -> content, parent folders added) with fixed metadata."""
    folders = sorted({str(Path(p).parents[i]) for p in members for i in range(len(Path(p).parts) - 1)})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}", format=tarfile.PAX_FORMAT) as tar:
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for path in sorted(members):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(members[path]), 0o644, 0
            tar.addfile(info, io.BytesIO(members[path]))
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        write_npz(Path(d) / "a.npz", arrays)
        return (Path(d) / "a.npz").read_bytes()


def write_rmd17_fixture(out_dir: str | Path, molecules=_RMD17_FIXTURE_MOLECULES, n_frames: int = 10,
                        n_train: int = 5, n_test: int = 3, seed: int = 0, data_root=None) -> Path:
    """Write ``out_dir/rmd17.tar.bz2`` in the rMD17 layout from the course's GFN2-xTB frames; return its path.

    ``n_frames`` evenly spaced frames of each molecule (``load_molecules(name, "all", root=data_root)``);
    each of the five splits holds ``n_train`` train and ``n_test`` disjoint test indices (seeded).
    """
    if n_train + n_test > n_frames:
        raise ValueError(f"n_train + n_test = {n_train + n_test} exceeds n_frames = {n_frames}")
    members = {"rmd17/readme.txt": (FIXTURE_NOTE + "\n\nLayout and keys as in the revised MD17 data set "
                                    "(rmd17.tar.bz2); energies in kcal/mol, forces in kcal/mol/Angstrom.\n").encode()}
    for name in molecules:
        frames = load_molecules(name, "all", root=data_root, dtype=torch.float64)
        idx = np.unique(np.linspace(0, len(frames) - 1, n_frames).round().astype(np.int64))
        if len(idx) != n_frames:
            raise ValueError(f"{name}: only {len(frames)} frames, cannot take {n_frames} distinct ones")
        energies = np.array([float(frames[k].energy) for k in idx]) / KCAL_PER_MOL
        forces = np.stack([frames[k].forces.numpy() for k in idx]) / KCAL_PER_MOL
        arrays = {
            "nuclear_charges": frames[0].z.numpy().astype(np.int64),
            "coords": np.stack([frames[k].pos.numpy() for k in idx]),
            "energies": energies,
            "forces": forces,
            "old_indices": idx,
            "old_energies": energies.copy(),
            "old_forces": forces.copy(),
            "course_fixture_note": np.array(FIXTURE_NOTE),
        }
        members[f"rmd17/npz_data/rmd17_{name}.npz"] = _npz_bytes(arrays)
    rng = np.random.default_rng(seed)
    for k in range(1, 6):
        perm = rng.permutation(n_frames)
        for kind, part in (("train", perm[:n_train]), ("test", perm[n_train:n_train + n_test])):
            members[f"rmd17/splits/index_{kind}_0{k}.csv"] = "".join(f"{int(i)}\n" for i in part).encode()
    return _write_atomic(Path(out_dir) / RMD17_ARCHIVE, _tar_bytes(members))


# ------------------------------------------------------------------------------------------------ QM9


def rotational_constants_ghz(atoms: Atoms) -> np.ndarray:
    """Rotational constants ``A >= B >= C`` (GHz) of a non-linear molecule: ``h / (8 pi^2 I)``."""
    inertia = np.sort(atoms.get_moments_of_inertia())  # amu Å^2
    if inertia[0] <= 1e-8:
        raise ValueError("a linear molecule has an infinite rotational constant A")
    return constants.h / (8 * np.pi**2 * inertia * constants.atomic_mass * 1e-20) / 1e9


def format_qm9_number(x: float, decimals: int = 10) -> str:
    """A number as QM9 writes it: ``0.`` for zero, Mathematica's ``m*^e`` below 1e-4, else fixed point with
    trailing zeros removed (``-0.0126981359``, ``157.7118``)."""
    x = float(x)
    if x == 0.0:
        return "0."
    if abs(x) < 1e-4:
        mantissa, exponent = f"{x:.{decimals - 4}e}".split("e")
        mantissa = mantissa.rstrip("0")
        return f"{mantissa}*^{int(exponent)}"
    return f"{x:.{decimals}f}".rstrip("0")


def qm9_xyz_text(gdb_id: int, symbols, pos, props, smiles: str) -> str:
    """The text of one file in QM9's extended XYZ format (tabs as upstream), labelled as a course fixture in
    its InChI line. ``props``: the 15 values of :data:`~course_lib.public_datasets.QM9_PROPERTIES`."""
    if len(props) != len(QM9_PROPERTIES):
        raise ValueError(f"need {len(QM9_PROPERTIES)} properties, got {len(props)}")
    n = len(symbols)
    prop_decimals = {"A": 5, "B": 5, "C": 5, "mu": 4, "alpha": 2, "homo": 4, "lumo": 4, "gap": 4, "r2": 4,
                     "zpve": 6, "U0": 6, "U": 6, "H": 6, "G": 6, "Cv": 3}
    head = "\t".join(format_qm9_number(v, prop_decimals[p]) for p, v in zip(QM9_PROPERTIES, props))
    lines = [str(n), f"gdb {gdb_id}\t{head}\t"]
    for s, (x, y, z) in zip(symbols, np.asarray(pos, dtype=np.float64)):
        coords = "\t".join(f"{format_qm9_number(v):>13}" for v in (x, y, z))
        lines.append(f"{s}\t{coords}\t 0.")
    lines.append("\t".join(["0."] * max(3 * n - 6, 1)))
    lines.append(f"{smiles}\t{smiles}\t")
    lines.append("InChI=COURSE-MADE-FIXTURE/not-QM9-data\tInChI=COURSE-MADE-FIXTURE/not-QM9-data")
    return "\n".join(lines) + "\n"


def _uncharacterized_text(rows) -> str:
    rule = "=" * 158
    header = [
        "",
        " COURSE-MADE FIXTURE written by tests/public_datasets_fixtures.py: NOT the uncharacterized.txt of QM9.",
        " It has the layout of that file: a prose header, a '#' column line between two '=' rules, one molecule per",
        " line (index, GDB-17 SMILES, SMILES of the relaxed geometry, SMILES of the Corina geometry, D_IJ in au) and",
        " a closing rule. The molecules listed are course fixtures as well; the D_IJ values are placeholders.",
        "",
        rule,
        f"#   Index{'GDB17 SMILES':>39}{'SMILES for B3LYP XYZ':>45}{'SMILES for Corina generated XYZ':>45}{'D_IJ':>16}",
        rule,
    ]
    body = [f"{gid:8d}{s:>40}{s:>45}{s:>45}{1.0:>20.6f}" for gid, s in rows]
    return "\n".join([*header, *body, rule]) + "\n"


def write_qm9_fixture(out_dir: str | Path, data_root=None) -> tuple[Path, Path]:
    """Write ``out_dir/dsgdb9nsd.xyz.tar.bz2`` and ``out_dir/uncharacterized.txt`` in the QM9 layout (see the
    module docstring); return both paths. Molecules: 1 CH4, 2 NH3, 3 H2O (ase, placeholder U0), 4-6 ethanol
    and 7-8 malonaldehyde frames of the course data (U0 = xTB energy); :data:`QM9_FIXTURE_UNCHARACTERIZED`
    are listed as uncharacterized."""
    entries = []  # (symbols, pos, U0 in Hartree, smiles)
    for name, smiles, u0 in _ASE_MOLECULES:
        atoms = ase_molecule(name)
        atoms.positions += np.asarray(QM9_FIXTURE_SHIFT)
        entries.append((atoms.get_chemical_symbols(), atoms.positions.copy(), u0, smiles))
    for name, smiles, count in _COURSE_FRAMES:
        frames = load_molecules(name, "all", root=data_root, dtype=torch.float64)
        for k in np.linspace(0, len(frames) - 1, count).round().astype(int):
            g = frames[k]
            symbols = Atoms(numbers=g.z.numpy()).get_chemical_symbols()
            entries.append((symbols, g.pos.numpy(), float(g.energy) / HARTREE, smiles))
    members, rows = {}, []
    for gid, (symbols, pos, u0, smiles) in enumerate(entries, start=1):
        abc = rotational_constants_ghz(Atoms(symbols, positions=pos))
        values = {"A": abc[0], "B": abc[1], "C": abc[2], **_PLACEHOLDER, "U0": u0,
                  **{k: u0 + d for k, d in _PLACEHOLDER_THERMAL.items()}}
        props = [values[p] for p in QM9_PROPERTIES]
        members[f"dsgdb9nsd_{gid:06d}.xyz"] = qm9_xyz_text(gid, symbols, pos, props, smiles).encode()
        if gid in QM9_FIXTURE_UNCHARACTERIZED:
            rows.append((gid, smiles))
    out_dir = Path(out_dir)
    archive = _write_atomic(out_dir / QM9_ARCHIVE, _tar_bytes(members))
    unchar = _write_atomic(out_dir / "uncharacterized.txt", _uncharacterized_text(rows).encode())
    return archive, unchar
