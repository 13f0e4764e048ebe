"""Loaders of two public molecular benchmarks, rMD17 and QM9, as graphs of the course's data contract.

>>> train = load_rmd17("aspirin", split="train", n_train=950)   # doctest: +SKIP
>>> val = load_rmd17("aspirin", split="val", n_train=950)       # doctest: +SKIP
>>> test = load_rmd17("aspirin", split="test")                  # doctest: +SKIP
>>> qm9 = load_qm9(target="U0")                                 # doctest: +SKIP

Both data sets are downloaded on first use from their original publication (figshare) into
``~/.cache/course_lib/public/<name>`` (``$XDG_CACHE_HOME/course_lib/public/<name>``) unless ``root=`` names
another folder, an archive you downloaded yourself, or its extracted content. Nothing is redistributed by
the course. Cite the original papers when you use them.

rMD17 (Christensen & von Lilienfeld, Mach. Learn.: Sci. Technol. 1, 045018, 2020; figshare article 12672038)
------------------------------------------------------------------------------------------------------------
Archive ``rmd17.tar.bz2`` (figshare file 23950376; about 1 GB) with the layout::

    rmd17/readme.txt
    rmd17/npz_data/rmd17_<molecule>.npz      # 10 molecules, 100,000 frames each (azobenzene 99,988)
    rmd17/splits/index_train_0{1..5}.csv     # 1000 frame indices each, one integer per line, 0-based
    rmd17/splits/index_test_0{1..5}.csv      # the same five splits apply to every molecule

Keys of each ``.npz``: ``nuclear_charges [N]``, ``coords [F, N, 3]`` (Å), ``energies [F]`` (kcal/mol),
``forces [F, N, 3]`` (kcal/mol/Å), and the provenance arrays ``old_indices``, ``old_energies``,
``old_forces`` (index and labels in the original MD17). Energies and forces were recomputed at the
PBE/def2-SVP level (very tight SCF, dense integration grid). The frames come from MD trajectories and are strongly
correlated: the authors' readme says not to train on more than 1000 of them, which is what the split files
give. :func:`load_rmd17` converts to eV and eV/Å with :data:`KCAL_PER_MOL` (``ase.units.kcal / ase.units.mol``
= 0.0433641 eV, CODATA 2014 as used by ASE).

QM9 (Ramakrishnan, Dral, Rupp, von Lilienfeld, Sci. Data 1, 140022, 2014; figshare collection 978904)
------------------------------------------------------------------------------------------------------
Archive ``dsgdb9nsd.xyz.tar.bz2`` (figshare file 3195389; 133,885 files ``dsgdb9nsd_NNNNNN.xyz`` at the top
level of the archive) in the paper's extended XYZ format, one molecule per file (``na`` atoms)::

    line 1            na
    line 2            gdb <id> A B C mu alpha homo lumo gap r2 zpve U0 U H G Cv      (tab separated)
    lines 3..na+2     element  x  y  z  mulliken_charge                                (Å, e)
    line na+3         harmonic frequencies (cm^-1)
    line na+4         SMILES of GDB-17 and of the relaxed geometry
    line na+5         InChI of GDB-17 and of the relaxed geometry

Numbers may use Mathematica's exponent notation (``1.2*^-5``). All properties were computed with
B3LYP/6-31G(2df,p). ``uncharacterized.txt`` (figshare file 3195404) lists 3054 molecules whose relaxed
geometry no longer matches their GDB-17 SMILES: a header, a ``#   Index ...`` column line between two ``===``
rules, one molecule per line (index, three SMILES, D_IJ) and a closing ``===`` rule. They are excluded by
default. Units (upstream -> returned, see :data:`QM9_UNITS`): A, B, C in GHz (unchanged); mu Debye -> e·Å;
alpha Bohr^3 -> Å^3; homo, lumo, gap, zpve, U0, U, H, G Hartree -> eV; r2 Bohr^2 -> Å^2; Cv cal/(mol K)
(unchanged). Constants from ``ase.units``: :data:`HARTREE`, :data:`DEBYE`, :data:`BOHR`.

Checksums
---------
Neither publication states a checksum. The only published values found are SHA-256 *prefixes* (12 hex
digits) that the ``load-atoms`` package (J. Gardner, ``load_atoms/database/importers/rmd17.py`` and
``qm9.py``) records for the same figshare files: :data:`RMD17_SHA256_PREFIX` and :data:`QM9_SHA256_PREFIX`.
They are third-party values that the course could not re-check offline; nothing is known for
``uncharacterized.txt``. Verification therefore works as follows (:func:`verify_sha256`):

1. ``expected_sha256=`` given: the file must match it exactly;
2. else a record ``<file>.sha256`` (``sha256sum`` format) written beside the file on first use: it must match
   (trust on first use: this detects later corruption or replacement, not a bad first download);
3. else the published prefix, if one is known: a mismatch only *warns* (the prefix is a third-party value
   the course could not re-check, so it must not lock users out) and nothing is recorded;
4. then, if no record exists yet, the full hash is recorded.

Any other mismatch raises ``ValueError`` naming the expected and the actual hash and what to do. Extracted
``.npz`` and split files are checked the same way (their records are written on first use).

Fixtures
--------
The test helper ``tests/public_datasets_fixtures.py`` writes tiny archives in exactly these layouts from
the course's own GFN2-xTB data; the tests load them offline. They are course-made and not rMD17 or QM9 data.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.data import atomic_numbers
from torch_geometric.data import Data

from course_lib import files
from course_lib.data import sha256_file, validate
from course_lib.files import write_npz

__all__ = [
    "KCAL_PER_MOL",
    "HARTREE",
    "DEBYE",
    "BOHR",
    "RMD17_MOLECULES",
    "RMD17_URLS",
    "RMD17_ARCHIVE",
    "RMD17_SHA256_PREFIX",
    "QM9_URLS",
    "QM9_ARCHIVE",
    "QM9_SHA256_PREFIX",
    "QM9_UNCHARACTERIZED_URLS",
    "QM9_PROPERTIES",
    "QM9_UNITS",
    "QM9_ENERGY_TARGETS",
    "download_url",
    "verify_sha256",
    "safe_extract",
    "rmd17_folder",
    "read_rmd17_npz",
    "read_split_file",
    "load_rmd17",
    "parse_qm9_xyz",
    "parse_uncharacterized",
    "qm9_arrays",
    "load_qm9",
]

#: 1 kcal/mol in eV (``ase.units``, CODATA 2014): 0.0433641 eV.
KCAL_PER_MOL = units.kcal / units.mol
#: 1 Hartree in eV (``ase.units``): 27.2114 eV.
HARTREE = units.Hartree
#: 1 Debye in e·Å (``ase.units``): 0.208194 e·Å.
DEBYE = units.Debye
#: 1 Bohr in Å (``ase.units``): 0.529177 Å.
BOHR = units.Bohr

# ------------------------------------------------------------------------------------------- sources

#: The ten molecules of rMD17 (file ``rmd17/npz_data/rmd17_<name>.npz``).
RMD17_MOLECULES = ("aspirin", "azobenzene", "benzene", "ethanol", "malonaldehyde", "naphthalene", "paracetamol",
                   "salicylic", "toluene", "uracil")
RMD17_ARCHIVE = "rmd17.tar.bz2"
#: Where ``rmd17.tar.bz2`` is downloaded from, tried in order (figshare file 23950376; Materials Cloud mirror).
RMD17_URLS = (
    "https://figshare.com/ndownloader/files/23950376",
    "https://archive.materialscloud.org/record/file?filename=rmd17.tar.bz2&record_id=466",
)
#: First 12 hex digits of the SHA-256 of ``rmd17.tar.bz2`` as recorded by load-atoms (third party, see above).
RMD17_SHA256_PREFIX = "cddeea2ec2c4"
RMD17_SPLITS = ("train", "val", "test", "all")

QM9_ARCHIVE = "dsgdb9nsd.xyz.tar.bz2"
#: Where ``dsgdb9nsd.xyz.tar.bz2`` is downloaded from, tried in order (figshare file 3195389).
QM9_URLS = (
    "https://ndownloader.figshare.com/files/3195389",
    "https://springernature.figshare.com/ndownloader/files/3195389",
)
#: First 12 hex digits of the SHA-256 of ``dsgdb9nsd.xyz.tar.bz2`` as recorded by load-atoms (third party).
QM9_SHA256_PREFIX = "3a63848ac806"
QM9_UNCHARACTERIZED = "uncharacterized.txt"
#: Where ``uncharacterized.txt`` is downloaded from (figshare file 3195404); no published checksum.
QM9_UNCHARACTERIZED_URLS = (
    "https://ndownloader.figshare.com/files/3195404",
    "https://springernature.figshare.com/ndownloader/files/3195404",
)
#: The 15 properties of line 2 of a QM9 file, in file order.
QM9_PROPERTIES = ("A", "B", "C", "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv")
#: property -> (upstream unit, returned unit, factor upstream -> returned).
QM9_UNITS = {
    "A": ("GHz", "GHz", 1.0),
    "B": ("GHz", "GHz", 1.0),
    "C": ("GHz", "GHz", 1.0),
    "mu": ("Debye", "e Å", DEBYE),
    "alpha": ("Bohr^3", "Å^3", BOHR**3),
    "homo": ("Hartree", "eV", HARTREE),
    "lumo": ("Hartree", "eV", HARTREE),
    "gap": ("Hartree", "eV", HARTREE),
    "r2": ("Bohr^2", "Å^2", BOHR**2),
    "zpve": ("Hartree", "eV", HARTREE),
    "U0": ("Hartree", "eV", HARTREE),
    "U": ("Hartree", "eV", HARTREE),
    "H": ("Hartree", "eV", HARTREE),
    "G": ("Hartree", "eV", HARTREE),
    "Cv": ("cal/(mol K)", "cal/(mol K)", 1.0),
}
#: Targets that are total energies of the molecule: they also fill the graph's ``energy`` field.
QM9_ENERGY_TARGETS = ("U0", "U", "H", "G")
_QM9_NAME = re.compile(r"dsgdb9nsd_(\d+)\.xyz$")


def _default_root(name: str) -> Path:
    return files.cache_dir() / "public" / name


# ----------------------------------------------------------------------------- download and checksums


def download_url(url: str, dest: str | Path) -> Path:
    """Download ``url`` to ``dest`` with a progress bar, writing ``dest.part`` and renaming it at the end
    (an interrupted download never leaves a file that looks complete). Raises ``RuntimeError`` on failure."""
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": "course_lib (python urllib)"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response, open(tmp, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr) as bar:
                while block := response.read(1 << 20):
                    f.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError) as err:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"could not download {url} ({err})") from err
    tmp.replace(dest)
    return dest


def _fetch(urls: Sequence[str], dest: Path, manual: str) -> Path:
    """Download the first of ``urls`` that works to ``dest`` (through :func:`download_url`)."""
    errors = []
    dest.parent.mkdir(parents=True, exist_ok=True)
    for url in urls:
        try:
            return download_url(url, dest)
        except RuntimeError as err:
            errors.append(str(err))
    raise RuntimeError("; ".join(errors) + f". If you are offline: {manual}")


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def verify_sha256(path: str | Path, expected: str | None = None, known_prefix: str | None = None,
                  source: str = "", redownload: str = "") -> str:
    """Verify a downloaded file and record its SHA-256 on first use; return the hex digest.

    Order: ``expected`` (full hex digest) if given, else the record ``<path>.sha256`` if present, else
    ``known_prefix`` (a published prefix) if given. Afterwards a missing record is written (trust on first
    use; a read-only folder only gives a warning). ``source`` says where ``known_prefix`` comes from and
    ``redownload`` how to get the file again; both go into the error message.
    """
    path = Path(path)
    got = sha256_file(path)
    record = _record_path(path)
    recorded = None
    if record.exists():
        parts = record.read_text().split()
        recorded = parts[0].lower() if parts else ""
    how = (f"delete {path} (and {record.name} if present) and {redownload or 'download it again'}; if you "
           f"know this file is the right one, pass expected_sha256='{got}'")
    if expected is not None:
        if got != expected.lower():
            raise ValueError(f"checksum mismatch for {path}: expected sha256 {expected.lower()} (expected_sha256=), "
                             f"got {got}; {how}")
    elif recorded is not None:
        if got != recorded:
            raise ValueError(f"checksum mismatch for {path}: expected sha256 {recorded} (recorded in {record} when "
                             f"the file was first used), got {got}; the file changed since: {how}")
    elif known_prefix is not None and not got.startswith(known_prefix.lower()):
        # the prefix is a third-party value the course could not re-check: warn, do not refuse, and do not
        # record the hash (the next load warns again until the user confirms with expected_sha256=)
        warnings.warn(f"checksum mismatch for {path}: expected a sha256 starting with {known_prefix} "
                      f"({source or 'published value'}, unverified by the course), got {got}; the file may be "
                      f"corrupt, incomplete or not the upstream file: {how}", stacklevel=3)
        return got
    if recorded is None:
        try:
            record.write_text(f"{got}  {path.name}\n")
        except OSError as err:
            warnings.warn(f"could not record the checksum of {path} in {record} ({err}); later loads cannot "
                          "detect a changed file", stacklevel=3)
    return got


def safe_extract(archive: str | Path, dest: str | Path) -> None:
    """Extract a tar archive into ``dest``; a member that would land outside it, a link or a device file raises
    ``ValueError`` (``tarfile``'s ``"data"`` filter where Python has it, the same checks by hand otherwise)."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
            try:
                tar.extractall(dest, filter="data")
            except tarfile.FilterError as err:
                raise ValueError(f"{archive}: refusing to extract it ({err})") from err
            return
        root = dest.resolve()
        for member in tar.getmembers():
            target = (dest / member.name).resolve()
            outside = root not in target.parents and target != root
            if outside or not (member.isfile() or member.isdir()):
                raise ValueError(f"{archive}: refusing to extract member {member.name!r} (outside the folder "
                                 "or not a plain file)")
        tar.extractall(dest)


def _check_tar(path: Path, how: str) -> None:
    if not tarfile.is_tarfile(path):
        raise ValueError(f"{path} is not a tar archive; {how}")


# ------------------------------------------------------------------------------------------------ rMD17

_RMD17_HOW = (f"download {RMD17_ARCHIVE} from {RMD17_URLS[0]} (figshare article 12672038, 'Revised MD17 dataset "
              "(rMD17)') and pass root=<the archive, its folder, or the extracted rmd17/ folder>, or call with "
              "download=True")


def rmd17_folder(root: str | Path | None = None, download: bool = True, expected_sha256: str | None = None) -> Path:
    """The extracted ``rmd17/`` folder (with ``npz_data/`` and ``splits/``), downloading and extracting the
    archive when needed.

    ``root`` may be the archive ``rmd17.tar.bz2`` itself, a folder holding it and/or the extracted
    ``rmd17/`` folder, or the extracted ``rmd17/`` folder (default: ``~/.cache/course_lib/public/rmd17``).
    An archive is verified (:func:`verify_sha256`, ``expected_sha256`` or :data:`RMD17_SHA256_PREFIX`)
    before it is extracted beside itself.
    """
    root = Path(root).expanduser() if root is not None else _default_root("rmd17")
    if root.is_file():
        archive, base = root, root.parent
    else:
        if (root / "npz_data").is_dir():
            return root
        base, archive = root, root / RMD17_ARCHIVE
    if (base / "rmd17" / "npz_data").is_dir():
        return base / "rmd17"
    if not archive.exists():
        if not download:
            raise FileNotFoundError(f"no rMD17 data at {root} (neither {RMD17_ARCHIVE} nor an extracted "
                                    f"rmd17/npz_data/ folder) and download=False; {_RMD17_HOW}")
        _fetch(RMD17_URLS, archive, manual=_RMD17_HOW)
    verify_sha256(archive, expected=expected_sha256, known_prefix=RMD17_SHA256_PREFIX,
                  source="prefix recorded by the load-atoms package for figshare file 23950376",
                  redownload=f"download it again from {RMD17_URLS[0]}")
    _check_tar(archive, _RMD17_HOW)
    tmp = base / f".rmd17-extracting-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        safe_extract(archive, tmp)
        if not (tmp / "rmd17" / "npz_data").is_dir():
            raise ValueError(f"{archive} does not contain rmd17/npz_data/: is it the rMD17 archive? {_RMD17_HOW}")
        os.replace(tmp / "rmd17", base / "rmd17")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return base / "rmd17"


def read_rmd17_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of one ``rmd17_<molecule>.npz`` (units as stored: Å, kcal/mol, kcal/mol/Å), checked:
    ``nuclear_charges [N]`` (int64), ``coords [F, N, 3]``, ``energies [F]``, ``forces [F, N, 3]`` (float64).
    Other keys (``old_*``) are ignored. A missing key or a wrong shape raises ``ValueError`` naming it."""
    path = Path(path)
    want = ("nuclear_charges", "coords", "energies", "forces")
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in want if k not in f.files]
        if missing:
            raise ValueError(f"{path}: missing key(s) {missing} (found {sorted(f.files)}); an rMD17 file has "
                             f"{list(want)} and old_indices, old_energies, old_forces")
        out = {k: f[k] for k in want}
    z, x, e, frc = (out[k] for k in want)
    if z.ndim != 1 or not np.issubdtype(z.dtype, np.number) or (z < 1).any():
        raise ValueError(f"{path}: 'nuclear_charges' must be atomic numbers >= 1 of shape [N], got {z.shape}")
    n = z.shape[0]
    if x.ndim != 3 or x.shape[1:] != (n, 3):
        raise ValueError(f"{path}: 'coords' has shape {x.shape}, expected [F, {n}, 3]")
    frames = x.shape[0]
    if e.shape != (frames,):
        raise ValueError(f"{path}: 'energies' has shape {e.shape}, expected [{frames}]")
    if frc.shape != x.shape:
        raise ValueError(f"{path}: 'forces' has shape {frc.shape}, expected {x.shape} like 'coords'")
    return {"nuclear_charges": z.astype(np.int64), "coords": x.astype(np.float64),
            "energies": e.astype(np.float64), "forces": frc.astype(np.float64)}


def read_split_file(path: str | Path, n_frames: int | None = None) -> np.ndarray:
    """Frame indices of an rMD17 split file (one integer per line, 0-based) as int64 ``[K]``.

    A line that is not an integer, or an index outside ``[0, n_frames)``, raises ``ValueError`` naming the line.
    """
    path = Path(path)
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        try:
            v = float(s)
        except ValueError:
            v = float("nan")
        if not np.isfinite(v) or not v.is_integer():
            raise ValueError(f"{path} line {lineno}: expected one integer frame index per line, got {line!r}")
        if v < 0 or (n_frames is not None and v >= n_frames):
            raise ValueError(f"{path} line {lineno}: frame index {int(v)} is outside [0, {n_frames}) "
                             "(the split does not fit this molecule's file)")
        out.append(int(v))
    if not out:
        raise ValueError(f"{path}: no frame indices found")
    return np.asarray(out, dtype=np.int64)


def load_rmd17(molecule: str, split: str = "train", split_index: int = 1, root: str | Path | None = None,
               download: bool = True, n_train: int | None = None, dtype: torch.dtype = torch.float32,
               expected_sha256: str | None = None) -> list[Data]:
    """Frames of one rMD17 molecule as validated graphs ``Data(z [N], pos [N, 3] (Å), energy [1] (eV),
    forces [N, 3] (eV/Å), frame [1])`` (``frame`` = row in the ``.npz``).

    ``split``: ``"train"`` (the first ``n_train`` indices of ``splits/index_train_0<split_index>.csv``, all
    1000 if ``n_train`` is None), ``"val"`` (the remaining indices of that file; needs ``n_train``),
    ``"test"`` (``index_test_0<split_index>.csv``) or ``"all"`` (every frame, in file order).
    ``split_index``: 1..5. ``root``/``download``/``expected_sha256``: see :func:`rmd17_folder`.

    Energies are DFT total energies (about -17,600 eV for aspirin): float32 resolves them to about 2 meV, so
    subtract per-species shifts (e.g. ``SchNet.fit_energy_scale``) or use ``dtype=torch.float64`` when that
    matters. ``n_train`` is ignored for ``"test"`` and ``"all"``. Returns the frames in split-file order
    (``"all"``: 100,000 graphs, about 20 s to build).
    """
    if molecule not in RMD17_MOLECULES:
        raise ValueError(f"unknown rMD17 molecule {molecule!r}; choose one of {list(RMD17_MOLECULES)}")
    if split not in RMD17_SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {RMD17_SPLITS}")
    if split_index not in (1, 2, 3, 4, 5):
        raise ValueError(f"split_index must be 1, 2, 3, 4 or 5 (files index_train_0<k>.csv), got {split_index!r}")
    folder = rmd17_folder(root, download=download, expected_sha256=expected_sha256)
    npz = folder / "npz_data" / f"rmd17_{molecule}.npz"
    if not npz.exists():
        raise FileNotFoundError(f"{npz} does not exist: the extracted folder {folder} is incomplete; delete it "
                                f"and extract {RMD17_ARCHIVE} again ({_RMD17_HOW})")
    how = f"extract {RMD17_ARCHIVE} again ({_RMD17_HOW})"
    verify_sha256(npz, redownload=how)
    arrays = read_rmd17_npz(npz)
    n_frames = arrays["energies"].shape[0]
    if split == "all":
        idx = np.arange(n_frames)
    else:
        kind = "test" if split == "test" else "train"
        split_file = folder / "splits" / f"index_{kind}_0{split_index}.csv"
        if not split_file.exists():
            raise FileNotFoundError(f"{split_file} does not exist; {how}")
        verify_sha256(split_file, redownload=how)
        idx = read_split_file(split_file, n_frames)
        if split != "test" and n_train is not None:
            if not 0 < n_train <= len(idx) - (split == "val"):
                raise ValueError(f"n_train={n_train} must be in [1, {len(idx) - (split == 'val')}] for split "
                                 f"{split!r} ({split_file.name} has {len(idx)} indices)")
            idx = idx[:n_train] if split == "train" else idx[n_train:]
        elif split == "val":
            raise ValueError("split='val' holds out the training indices after the first n_train: pass n_train, "
                             "e.g. n_train=950 for a 950/50 train/validation split of the 1000 training frames")
    z = torch.as_tensor(arrays["nuclear_charges"], dtype=torch.long)
    graphs = []
    for k in idx:
        data = Data(z=z.clone(), pos=torch.as_tensor(arrays["coords"][k], dtype=dtype),
                    energy=torch.tensor([arrays["energies"][k] * KCAL_PER_MOL], dtype=dtype),
                    forces=torch.as_tensor(arrays["forces"][k] * KCAL_PER_MOL, dtype=dtype),
                    frame=torch.tensor([int(k)], dtype=torch.long))
        graphs.append(validate(data, require=("z", "energy", "forces"), name=f"rmd17_{molecule} frame {int(k)}"))
    return graphs


# -------------------------------------------------------------------------------------------------- QM9

_QM9_HOW = (f"download {QM9_ARCHIVE} from {QM9_URLS[0]} and {QM9_UNCHARACTERIZED} from "
            f"{QM9_UNCHARACTERIZED_URLS[0]} (figshare collection 978904, 'Quantum chemistry structures and "
            "properties of 134 kilo molecules') into one folder and pass root=<that folder>, or call with "
            "download=True")


def _qm9_float(token: str) -> float:
    """A number of a QM9 file; Mathematica writes ``1.2*^-5`` for ``1.2e-5``."""
    return float(token.replace("*^", "e"))


def parse_qm9_xyz(text: str, name: str = "qm9.xyz") -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Parse one QM9 file: ``(gdb_id, z [n] int64, pos [n, 3] float64 (Å), props [15] float64)`` with the
    properties of :data:`QM9_PROPERTIES` in their upstream units. A malformed file raises ``ValueError``
    naming ``name`` and the line."""
    lines = text.splitlines()

    def bad(lineno: int, what: str) -> ValueError:
        got = lines[lineno - 1] if lineno <= len(lines) else "<end of file>"
        return ValueError(f"{name} line {lineno}: expected {what}, got {got!r}")

    try:
        n = int(lines[0].strip()) if lines else -1
    except ValueError:
        raise bad(1, "the number of atoms") from None
    if n < 1:
        raise bad(1, "the number of atoms (a positive integer)")
    if len(lines) < n + 5:
        raise bad(len(lines) + 1, f"{n + 5} lines (count, properties, {n} atoms, frequencies, SMILES, InChI)")
    tok = lines[1].split()
    if len(tok) != 2 + len(QM9_PROPERTIES) or tok[0] != "gdb" or not tok[1].isdigit():
        raise bad(2, f"'gdb <id>' and {len(QM9_PROPERTIES)} properties ({' '.join(QM9_PROPERTIES)})")
    try:
        props = np.array([_qm9_float(t) for t in tok[2:]], dtype=np.float64)
    except ValueError:
        raise bad(2, "numbers after 'gdb <id>'") from None
    z = np.empty(n, dtype=np.int64)
    pos = np.empty((n, 3), dtype=np.float64)
    for i in range(n):
        t = lines[2 + i].split()
        if len(t) != 5 or t[0] not in atomic_numbers:
            raise bad(3 + i, "'element x y z mulliken_charge'")
        try:
            pos[i] = [_qm9_float(v) for v in t[1:4]]
            _qm9_float(t[4])
        except ValueError:
            raise bad(3 + i, "'element x y z mulliken_charge' with numeric coordinates") from None
        z[i] = atomic_numbers[t[0]]
    if not np.isfinite(pos).all() or not np.isfinite(props).all():
        raise ValueError(f"{name}: non-finite coordinates or properties")
    return int(tok[1]), z, pos, props


def parse_uncharacterized(text: str, name: str = QM9_UNCHARACTERIZED) -> np.ndarray:
    """The molecule indices listed in QM9's ``uncharacterized.txt`` as sorted int64 ``[K]`` (3054 upstream).

    The table starts after the column line beginning with ``#`` (``#   Index  GDB17 SMILES ...``); lines of
    ``=`` and blank lines are skipped, every other line must start with an integer index."""
    lines = text.splitlines()
    start = next((i for i, s in enumerate(lines) if s.lstrip().startswith("#")), None)
    if start is None:
        raise ValueError(f"{name}: no column line starting with '#' ('#   Index   GDB17 SMILES ...'); is this the "
                         f"uncharacterized.txt of QM9 ({QM9_UNCHARACTERIZED_URLS[0]})?")
    ids = []
    for lineno, line in enumerate(lines[start + 1:], start=start + 2):
        s = line.strip()
        if not s or set(s) == {"="}:
            continue
        tok = s.split()
        if not tok[0].isdigit() or len(tok) < 2:
            raise ValueError(f"{name} line {lineno}: expected 'index GDB17-SMILES B3LYP-SMILES Corina-SMILES D_IJ', "
                             f"got {line!r}")
        ids.append(int(tok[0]))
    if not ids:
        raise ValueError(f"{name}: the table lists no molecules")
    return np.unique(np.asarray(ids, dtype=np.int64))


def _parse_many(items, source: str) -> dict[str, np.ndarray]:
    """Concatenate parsed molecules ``(name, text)`` into ragged arrays sorted by gdb id."""
    records = []
    for name, text in items:
        m = _QM9_NAME.search(name)
        if m is None:
            continue
        gid, z, pos, props = parse_qm9_xyz(text, name=name)
        if gid != int(m.group(1)):
            raise ValueError(f"{name} line 2: 'gdb {gid}' does not match the file name's index {int(m.group(1))}")
        records.append((gid, z, pos, props))
    if not records:
        raise ValueError(f"{source}: no dsgdb9nsd_NNNNNN.xyz files found; {_QM9_HOW}")
    records.sort(key=lambda r: r[0])
    gids = np.array([r[0] for r in records], dtype=np.int64)
    if (np.diff(gids) == 0).any():
        raise ValueError(f"{source}: molecule {int(gids[np.diff(gids) == 0][0])} appears twice")
    return {"gdb_id": gids, "num_atoms": np.array([len(r[1]) for r in records], dtype=np.int64),
            "z": np.concatenate([r[1] for r in records]), "pos": np.concatenate([r[2] for r in records]),
            "props": np.stack([r[3] for r in records])}


def _iter_tar(archive: Path):
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".xyz"):
                yield Path(member.name).name, tar.extractfile(member).read().decode("utf-8")


def qm9_arrays(root: str | Path | None = None, download: bool = True,
               expected_sha256: str | None = None) -> dict[str, np.ndarray]:
    """All QM9 molecules (uncharacterized ones included) as ragged arrays sorted by gdb id: ``gdb_id [M]``,
    ``num_atoms [M]``, ``z [P]``, ``pos [P, 3]`` (Å), ``props [M, 15]`` (upstream units, :data:`QM9_PROPERTIES`).

    ``root`` may be the archive, a folder holding it (default ``~/.cache/course_lib/public/qm9``; downloaded
    there when missing), or a folder of extracted ``dsgdb9nsd_*.xyz`` files. Parsing costs about 0.07 ms per
    file (measured on the fixture files), so the 133,885 files of the archive take tens of seconds with the
    decompression; the result is cached beside the archive (``<archive>.parsed.npz``, tied to the archive's
    SHA-256) and reused.
    """
    root = Path(root).expanduser() if root is not None else _default_root("qm9")
    if root.is_dir() and not (root / QM9_ARCHIVE).exists() and any(root.glob("dsgdb9nsd_*.xyz")):
        paths = sorted(root.glob("dsgdb9nsd_*.xyz"))
        return _parse_many(((p.name, p.read_text(encoding="utf-8")) for p in paths), str(root))
    archive = root if root.is_file() else root / QM9_ARCHIVE
    if not archive.exists():
        if not download:
            raise FileNotFoundError(f"no QM9 data at {root} (neither {QM9_ARCHIVE} nor dsgdb9nsd_*.xyz files) and "
                                    f"download=False; {_QM9_HOW}")
        _fetch(QM9_URLS, archive, manual=_QM9_HOW)
    sha = verify_sha256(archive, expected=expected_sha256, known_prefix=QM9_SHA256_PREFIX,
                        source="prefix recorded by the load-atoms package for figshare file 3195389",
                        redownload=f"download it again from {QM9_URLS[0]}")
    _check_tar(archive, _QM9_HOW)
    cache = archive.with_name(archive.name + ".parsed.npz")
    if cache.exists():
        with np.load(cache, allow_pickle=False) as f:
            if "source_sha256" in f.files and str(f["source_sha256"]) == sha:
                return {k: f[k] for k in ("gdb_id", "num_atoms", "z", "pos", "props")}
    arrays = _parse_many(_iter_tar(archive), str(archive))
    try:
        write_npz(cache, {**arrays, "source_sha256": np.array(sha)})
    except OSError as err:
        warnings.warn(f"could not cache the parsed QM9 data in {cache} ({err})", stacklevel=2)
    return arrays


def _uncharacterized_ids(folder: Path, download: bool, expected_sha256: str | None) -> np.ndarray:
    path = folder / QM9_UNCHARACTERIZED
    if not path.exists():
        if not download:
            raise FileNotFoundError(f"{path} does not exist and download=False; put QM9's {QM9_UNCHARACTERIZED} "
                                    f"({QM9_UNCHARACTERIZED_URLS[0]}) there, or pass exclude_uncharacterized=False")
        _fetch(QM9_UNCHARACTERIZED_URLS, path, manual=_QM9_HOW)
    verify_sha256(path, expected=expected_sha256, redownload=f"download it again from {QM9_UNCHARACTERIZED_URLS[0]}")
    return parse_uncharacterized(path.read_text(encoding="utf-8"), name=str(path))


def load_qm9(root: str | Path | None = None, download: bool = True, target: str = "U0",
             exclude_uncharacterized: bool = True, limit: int | None = None, dtype: torch.dtype = torch.float32,
             expected_sha256: str | None = None, uncharacterized_sha256: str | None = None) -> list[Data]:
    """QM9 molecules as validated graphs ``Data(z [N], pos [N, 3] (Å), y [1], props [1, 15], gdb_id [1])``,
    plus ``energy [1]`` (eV) when ``target`` is a total energy (U0, U, H, G).

    ``target``: one of :data:`QM9_PROPERTIES`; ``y`` holds it converted to the units of :data:`QM9_UNITS`
    (default ``"U0"``: internal energy at 0 K in eV, about -11,000 eV for nine heavy atoms: subtract
    per-species shifts before training). ``props`` holds all 15 properties in those units, in the order of
    :data:`QM9_PROPERTIES`. ``exclude_uncharacterized``: drop the molecules of ``uncharacterized.txt``
    (looked for beside the archive, downloaded when missing). ``limit``: keep only the first ``limit``
    molecules (by gdb id) after the exclusion. ``root``, ``download``, ``expected_sha256``: see
    :func:`qm9_arrays`; ``uncharacterized_sha256`` pins ``uncharacterized.txt``.

    There is no official split: split the list yourself with a fixed seed (e.g. 110,000 / 10,000 / rest).
    Building and validating a graph costs about 0.2 ms, so all 130,831 take about half a minute: use
    ``limit`` for quick experiments.
    """
    if target not in QM9_PROPERTIES:
        raise ValueError(f"unknown QM9 target {target!r}; choose one of {list(QM9_PROPERTIES)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of molecules or None, got {limit}")
    arrays = qm9_arrays(root, download=download, expected_sha256=expected_sha256)
    keep = np.ones(len(arrays["gdb_id"]), dtype=bool)
    if exclude_uncharacterized:
        root_path = Path(root).expanduser() if root is not None else _default_root("qm9")
        folder = root_path.parent if root_path.is_file() else root_path
        keep &= ~np.isin(arrays["gdb_id"], _uncharacterized_ids(folder, download, uncharacterized_sha256))
    factors = np.array([QM9_UNITS[p][2] for p in QM9_PROPERTIES])
    props = arrays["props"] * factors
    col = QM9_PROPERTIES.index(target)
    ptr = np.concatenate([[0], np.cumsum(arrays["num_atoms"])])
    graphs = []
    for m in np.flatnonzero(keep)[:limit]:
        a, b = int(ptr[m]), int(ptr[m + 1])
        fields = dict(z=torch.as_tensor(arrays["z"][a:b], dtype=torch.long),
                      pos=torch.as_tensor(arrays["pos"][a:b], dtype=dtype),
                      y=torch.tensor([props[m, col]], dtype=dtype),
                      props=torch.as_tensor(props[m], dtype=dtype).reshape(1, -1),
                      gdb_id=torch.tensor([int(arrays["gdb_id"][m])], dtype=torch.long))
        require: tuple[str, ...] = ("z",)
        if target in QM9_ENERGY_TARGETS:
            fields["energy"] = fields["y"].clone()
            require = ("z", "energy")
        graphs.append(validate(Data(**fields), require=require, name=f"QM9 molecule {int(arrays['gdb_id'][m])}"))
    return graphs
