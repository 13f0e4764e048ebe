"""Loaders of the course's particle datasets as lists of ``torch_geometric.data.Data`` graphs.

>>> train = load_particles("energy", split="train")          # doctest: +SKIP
>>> trajs = load_particles("trajectories", split="val")       # doctest: +SKIP
>>> pairs = trajectory_pairs(trajs, steps=1)                   # doctest: +SKIP

Where the files come from (first match wins):

1. ``root=`` if given;
2. the folder named by the environment variable ``COURSE_DATA_DIR``;
3. the repository's ``data/`` folder (when ``course_lib`` is used from a checkout);
4. the user cache ``~/.cache/course_lib/data`` (``$XDG_CACHE_HOME/course_lib/data``), downloading the
   file from the repository named in the package metadata when it is missing.

Every file's SHA-256 is verified before it is read: against ``manifest.json`` in the same folder if it
lists the file, else against the checksums shipped inside the package
(``course_lib/simulate/checksums.json``). The graphs follow the data contract of :mod:`course_lib.data`
(all float tensors are float32); see ``data/README.md`` for the physics and the file layout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from course_lib import files
from course_lib.data import MIN_ATOM_DISTANCE, ContractError, validate, verify_checksum
from course_lib.files import repo_file

__all__ = ["FILES", "REGENERATE", "data_path", "load_arrays", "load_particles", "trajectory_pairs", "repo_file",
           "MOLECULES", "MOLECULE_SPLIT_SCHEMES", "load_molecules", "molecule_split_frames",
           "OOD_MOLECULES", "load_molecules_ood", "G2_FILE", "load_g2_conformers"]

#: Dataset short names -> file names.
FILES = {
    "energy": "particles_energy.npz",
    "trajectories": "particles_trajectories.npz",
    "crystal_trajectories": "crystal_trajectories.npz",
}
SPLITS = ("train", "val", "test", "all")

#: How to rebuild the data when it cannot be found or downloaded.
REGENERATE = (
    "regenerate the data with `python -m course_lib.simulate.make_datasets --out DIR` (a few minutes on a "
    "laptop) and set the environment variable COURSE_DATA_DIR=DIR"
)

_PACKAGE_CHECKSUMS = Path(__file__).resolve().parent / "simulate" / "checksums.json"
_REPO_DATA = files.REPO_ROOT / "data"


def _cache_dir() -> Path:
    return files.cache_dir() / "data"


def _expected_sha256(path: Path) -> str:
    """The checksum to verify ``path`` against: its folder's manifest, else the packaged checksums."""
    for manifest in (path.parent / "manifest.json", _PACKAGE_CHECKSUMS):
        if manifest.exists():
            entries = json.loads(manifest.read_text()).get("files", {})
            if path.name in entries:
                return entries[path.name]["sha256"]
    raise ValueError(f"no checksum is known for {path} (no manifest.json next to it lists it); {REGENERATE}")


def _download(filename: str, dest: Path) -> None:
    files.download(f"data/{filename}", dest, what_to_do=REGENERATE)


def data_path(name: str, root: str | Path | None = None, download: bool = True) -> Path:
    """Path of a dataset file (short name, e.g. ``"energy"``, or file name), checksum verified.

    Raises ``FileNotFoundError`` when ``root`` (or ``COURSE_DATA_DIR``) is given but lacks the file,
    ``RuntimeError`` when a download fails, ``ValueError`` when the checksum does not match.
    """
    filename = FILES.get(name, name)
    if filename not in FILES.values():
        raise ValueError(f"unknown dataset {name!r}; choose one of {list(FILES)}")
    folder = root if root is not None else os.environ.get("COURSE_DATA_DIR") or None
    if folder is not None:
        path = Path(folder).expanduser() / filename
        if not path.exists():
            source = "root" if root is not None else "COURSE_DATA_DIR"
            raise FileNotFoundError(f"{path} does not exist ({source}={folder}); {REGENERATE}")
    elif (_REPO_DATA / filename).exists():
        path = _REPO_DATA / filename
    else:
        path = _cache_dir() / filename
        if path.exists():
            try:
                verify_checksum(path, expected=_expected_sha256(path))
            except ValueError:
                path.unlink()  # stale or corrupt cached copy: fetch it again
        if not path.exists():
            if not download:
                raise FileNotFoundError(f"{path} does not exist and download=False; {REGENERATE}")
            _download(filename, path)
    verify_checksum(path, expected=_expected_sha256(path))
    return path


def load_arrays(name: str, root: str | Path | None = None) -> dict[str, np.ndarray]:
    """All arrays of a dataset file as a dict of NumPy arrays (checksum verified). See data/README.md."""
    with np.load(data_path(name, root), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _split_indices(arrays: dict[str, np.ndarray], split: str) -> np.ndarray:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    if split == "all":
        return np.arange(len(arrays["num_nodes"]))
    return arrays[f"{split}_idx"]


def _check_traj(g: Data, name: str) -> None:
    n = g.pos.shape[0]
    for key in ("traj_pos", "traj_vel"):
        t = g[key]
        if t.dim() != 3 or t.shape[0] != n or t.shape[2] != g.pos.shape[1] or t.dtype != torch.float32:
            raise ContractError(f"{name}: field '{key}' has shape {tuple(t.shape)} and dtype {t.dtype}, "
                                f"expected float32 [{n}, T, {g.pos.shape[1]}] (node-first trajectory)")


def load_particles(name: str = "energy", split: str = "train", root: str | Path | None = None) -> list[Data]:
    """Load a particle dataset as a list of validated graphs (float32 tensors).

    ``name``: ``"energy"`` | ``"trajectories"`` | ``"crystal_trajectories"``;
    ``split``: ``"train"`` | ``"val"`` | ``"test"`` | ``"all"``; ``root``: folder with the files
    (default: see the module docstring).

    Energy graphs: ``pos [N, 2], vel [N, 2], charge [N], box [1, 2], energy [1], forces [N, 2]``.

    Trajectory graphs (one per trajectory of ``T = 40`` frames): ``pos [N, 2]`` and ``vel [N, 2]``
    (frame 0), ``charge [N]``, ``box [1, 2]``, ``fixed [N]`` (bool, True for crystal atoms), the
    node-first trajectories ``traj_pos [N, T, 2]`` and ``traj_vel [N, T, 2]`` (positions wrapped into
    ``[0, L)``), and ``frame_dt [1]``, the time between two frames.
    """
    if name not in FILES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {list(FILES)}")
    arrays = load_arrays(name, root)
    idx = _split_indices(arrays, split)
    counts = arrays["num_nodes"]
    ptr = np.concatenate([[0], np.cumsum(counts)])
    t = {k: torch.from_numpy(v) for k, v in arrays.items()}
    graphs = []
    if name == "energy":
        for g in idx:
            a, b = int(ptr[g]), int(ptr[g + 1])
            data = Data(pos=t["pos"][a:b].clone(), vel=t["vel"][a:b].clone(), charge=t["charge"][a:b].clone(),
                        box=t["box"][g].reshape(1, 2).clone(), energy=t["energy"][g].reshape(1).clone(),
                        forces=t["forces"][a:b].clone())
            graphs.append(validate(data, require=("vel", "charge", "box", "energy", "forces"),
                                   name=f"{name} graph {int(g)}"))
        return graphs
    time = arrays["time"]
    frame_dt = torch.tensor([float(time[1] - time[0]) if len(time) > 1 else 0.0], dtype=torch.float32)
    for g in idx:
        a, b = int(ptr[g]), int(ptr[g + 1])
        tp, tv = t["traj_pos"][a:b].clone(), t["traj_vel"][a:b].clone()
        data = Data(pos=tp[:, 0].clone(), vel=tv[:, 0].clone(), charge=t["charge"][a:b].clone(),
                    box=t["box"][g].reshape(1, 2).clone(), fixed=t["fixed"][a:b].clone(),
                    traj_pos=tp, traj_vel=tv, frame_dt=frame_dt.clone())
        gname = f"{name} graph {int(g)}"
        validate(data, require=("vel", "charge", "box", "fixed"), name=gname)
        _check_traj(data, gname)
        graphs.append(data)
    return graphs


def trajectory_pairs(trajs: list[Data], steps: int = 1) -> list[Data]:
    """One graph per frame pair ``(t, t + steps)`` of every trajectory: ``T - steps`` graphs per
    trajectory (39 for 40 frames and ``steps=1``).

    Each graph has ``pos, vel [N, 2]`` at frame ``t``, ``target_pos, target_vel [N, 2]`` at frame
    ``t + steps``, ``charge, box, fixed`` as in the trajectory, and ``dt [1] = steps * frame_dt``.
    Positions are wrapped into the box, so a displacement is ``target_pos - pos`` taken with the
    minimum image convention.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    out = []
    for k, tr in enumerate(trajs):
        _check_traj(tr, f"trajectory {k}")
        T = tr.traj_pos.shape[1]
        if steps >= T:
            raise ValueError(f"trajectory {k} has {T} frames; steps={steps} must be smaller")
        dt = tr.frame_dt * steps
        for t0 in range(T - steps):
            data = Data(pos=tr.traj_pos[:, t0].clone(), vel=tr.traj_vel[:, t0].clone(),
                        target_pos=tr.traj_pos[:, t0 + steps].clone(), target_vel=tr.traj_vel[:, t0 + steps].clone(),
                        charge=tr.charge.clone(), box=tr.box.clone(), fixed=tr.fixed.clone(), dt=dt.clone())
            out.append(validate(data, require=("vel", "charge", "box", "fixed"), name=f"pair {k}:{t0}"))
    return out


# --------------------------------------------------------------------------- molecules (GFN2-xTB)

#: Molecular data sets (``data/molecules/<name>.npz``, made by ``python -m course_lib.simulate.molecules``).
MOLECULES = ("ethanol", "malonaldehyde", "aspirin")
#: Split schemes of ``load_molecules``: scheme -> index file (see its docstring).
MOLECULE_SPLIT_SCHEMES = {"random": "{name}_splits.npz", "time": "{name}_time_splits.npz"}
_MOLECULE_DIR = "molecules"
_REGENERATE_MOLECULES = (
    "regenerate with `python -m course_lib.simulate.molecules --out DIR --frames 1000` and pass root=DIR "
    "(or set COURSE_DATA_DIR to the parent of DIR/molecules)"
)


def _molecule_file(filename: str, root, regenerate: str = _REGENERATE_MOLECULES) -> Path:
    """Find ``molecules/<filename>`` (root, COURSE_DATA_DIR, the checkout's data/, the cache) and verify
    it against ``manifest.json`` in the same folder (``regenerate``: how to rebuild it, for the errors)."""
    folder = root if root is not None else os.environ.get("COURSE_DATA_DIR") or None
    if folder is not None:
        base = Path(folder).expanduser()
        path = base / filename if (base / filename).exists() else base / _MOLECULE_DIR / filename
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; {regenerate}")
    elif (_REPO_DATA / _MOLECULE_DIR / filename).exists():
        path = _REPO_DATA / _MOLECULE_DIR / filename
    else:
        path = _cache_dir() / _MOLECULE_DIR / filename
        cached = path.parent / "manifest.json"
        if cached.exists() and filename not in json.loads(cached.read_text()):
            cached.unlink()  # a manifest cached before this file existed: fetch the current one
        for name in ("manifest.json", filename):
            if not (path.parent / name).exists():
                files.download(f"data/{_MOLECULE_DIR}/{name}", path.parent / name, what_to_do=regenerate)
    manifest = path.parent / "manifest.json"
    if not manifest.exists():
        raise ValueError(f"no manifest.json next to {path}: cannot verify its checksum; {regenerate}")
    entry = json.loads(manifest.read_text()).get(filename)
    if entry is None:
        raise ValueError(f"{manifest} does not list {filename}; {regenerate}")
    verify_checksum(path, expected=entry["sha256"], what_to_do=regenerate)
    return path


def load_molecules(name: str = "ethanol", split: str = "train", root: str | Path | None = None,
                   dtype: torch.dtype = torch.float32, scheme: str = "random") -> list[Data]:
    """GFN2-xTB molecular-dynamics frames of one molecule as validated graphs
    ``Data(z [N], pos [N, 3] (Å), energy [1] (eV), forces [N, 3] (eV/Å))``.

    ``split``: ``"train"`` | ``"val"`` | ``"test"`` or ``"all"``. ``scheme``: which index file defines them:
    ``"random"`` (``<name>_splits.npz``, frames drawn at random from one trajectory: a test frame is ~10 fs
    from a training frame, so the test error measures **interpolation**) or ``"time"``
    (``<name>_time_splits.npz``: train, val and test are consecutive blocks of the trajectory separated by
    250 fs gaps, so the test error measures **generalisation** to a later, unseen stretch of the run).
    Energies are total xTB energies (hundreds of eV below zero): subtract per-species reference energies
    before training (e.g. ``SchNet.fit_energy_scale``), or a model has to learn a huge offset.
    """
    if name not in MOLECULES:
        raise ValueError(f"unknown molecule {name!r}; choose one of {list(MOLECULES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    with np.load(_molecule_file(f"{name}.npz", root), allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    if split == "all":
        idx = np.arange(len(arrays["energy"]))
    else:
        if scheme not in MOLECULE_SPLIT_SCHEMES:
            raise ValueError(f"unknown split scheme {scheme!r}; choose one of {list(MOLECULE_SPLIT_SCHEMES)}")
        with np.load(_molecule_file(MOLECULE_SPLIT_SCHEMES[scheme].format(name=name), root),
                     allow_pickle=False) as f:
            idx = f[split]
    z = torch.as_tensor(arrays["z"], dtype=torch.long)
    graphs = []
    for k in idx:
        data = Data(z=z.clone(), pos=torch.as_tensor(arrays["pos"][k], dtype=dtype),
                    energy=torch.as_tensor(arrays["energy"][k], dtype=dtype).reshape(1),
                    forces=torch.as_tensor(arrays["forces"][k], dtype=dtype))
        graphs.append(validate(data, require=("z", "energy", "forces"), name=f"{name} frame {int(k)}",
                               min_distance=MIN_ATOM_DISTANCE))
    return graphs


def molecule_split_frames(name: str = "ethanol", scheme: str = "random", root: str | Path | None = None
                          ) -> dict[str, np.ndarray]:
    """Which frames of the trajectory of ``name`` each split of ``scheme`` holds, and when they were taken:
    ``{"time_fs": [F] (fs), "train": [n_train], "val": [n_val], "test": [n_test]}`` (frame indices, in the
    order :func:`load_molecules` returns the graphs). For questions such as "how far in time is a test frame
    from the nearest training frame?", i.e. what a test set measures."""
    if name not in MOLECULES:
        raise ValueError(f"unknown molecule {name!r}; choose one of {list(MOLECULES)}")
    if scheme not in MOLECULE_SPLIT_SCHEMES:
        raise ValueError(f"unknown split scheme {scheme!r}; choose one of {list(MOLECULE_SPLIT_SCHEMES)}")
    with np.load(_molecule_file(f"{name}.npz", root), allow_pickle=False) as f:
        frames = {"time_fs": np.asarray(f["time_fs"], dtype=float)}
    with np.load(_molecule_file(MOLECULE_SPLIT_SCHEMES[scheme].format(name=name), root), allow_pickle=False) as f:
        frames.update({split: np.asarray(f[split]) for split in ("train", "val", "test")})
    return frames


#: Out-of-distribution test trajectories (``python -m course_lib.simulate.molecules --ood``): name -> file.
OOD_MOLECULES = {"ethanol": "ethanol_1000K.npz"}
_REGENERATE_OOD = (
    "regenerate with `python -m course_lib.simulate.molecules --ood --out DIR --molecules ethanol` (seconds) and "
    "pass root=DIR (or set COURSE_DATA_DIR to the parent of DIR/molecules)"
)


def load_molecules_ood(name: str = "ethanol", root: str | Path | None = None,
                       dtype: torch.dtype = torch.float32) -> list[Data]:
    """The out-of-distribution test frames of ``name``: an independent GFN2-xTB Langevin run at **1000 K**
    (the training data: 500 K), 200 frames 10 fs apart, as graphs like :func:`load_molecules`.

    All frames are test frames (there are no splits). A model trained on the 500 K data meets larger
    distortions and other conformer populations here (for ethanol 19 % trans frames instead of 6.5 %), so the
    error on this set measures **generalisation** to a different distribution; compare it with the test error of
    the 500 K data (interpolation for the random split). See ``data/README.md`` and ``manifest.json``.
    """
    if name not in OOD_MOLECULES:
        raise ValueError(f"no out-of-distribution set for {name!r}; available: {list(OOD_MOLECULES)}")
    filename = OOD_MOLECULES[name]
    with np.load(_molecule_file(filename, root, _REGENERATE_OOD), allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    z = torch.as_tensor(arrays["z"], dtype=torch.long)
    return [validate(Data(z=z.clone(), pos=torch.as_tensor(arrays["pos"][k], dtype=dtype),
                          energy=torch.as_tensor(arrays["energy"][k], dtype=dtype).reshape(1),
                          forces=torch.as_tensor(arrays["forces"][k], dtype=dtype)),
                     require=("z", "energy", "forces"), name=f"{filename} frame {k}", min_distance=MIN_ATOM_DISTANCE)
            for k in range(len(arrays["energy"]))]


#: The multi-element conformer set (``data/molecules/g2_conformers.npz``, ``--g2`` of the generator).
G2_FILE = "g2_conformers.npz"
_G2_SPLITS_FILE = "g2_conformers_splits.npz"
_REGENERATE_G2 = (
    "regenerate with `python -m course_lib.simulate.molecules --g2 --out DIR` (a few minutes) and pass root=DIR "
    "(or set COURSE_DATA_DIR to the parent of DIR/molecules)"
)


def load_g2_conformers(split: str = "train", root: str | Path | None = None,
                       dtype: torch.dtype = torch.float32) -> list[Data]:
    """Thermal (500 K) GFN2-xTB conformers of ~120 small molecules of ASE's g2 collection, 13 elements
    (H, Li, B, C, N, O, F, Na, Al, Si, P, S, Cl), as validated graphs
    ``Data(z [N], pos [N, 3] (Å), energy [1] (eV), forces [N, 3] (eV/Å), name (str, the g2 name))``.

    ``split``: ``"train"`` | ``"val"`` | ``"test"`` or ``"all"``. The splits are **by molecule**: all frames of
    a molecule are in the same split, so val/test measure transfer to unseen molecules (every element of
    val/test also occurs in training). Energies are total xTB energies: subtract per-species shifts first
    (e.g. ``SchNet.fit_energy_scale`` on the training graphs). See ``data/README.md``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    with np.load(_molecule_file(G2_FILE, root, _REGENERATE_G2), allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    n_atoms = arrays["n_atoms"]
    ptr = np.concatenate([[0], np.cumsum(n_atoms)])
    if ptr[-1] != len(arrays["z"]) or not len(n_atoms) == len(arrays["energy"]) == len(arrays["molecule"]):
        raise ValueError(f"{G2_FILE}: inconsistent ragged layout (sum(n_atoms) = {ptr[-1]}, {len(arrays['z'])} "
                         f"atoms); {_REGENERATE_G2}")
    if split == "all":
        idx = np.arange(len(n_atoms))
    else:
        with np.load(_molecule_file(_G2_SPLITS_FILE, root, _REGENERATE_G2), allow_pickle=False) as f:
            idx = f[split]
    names = [str(n) for n in arrays["names"]]
    graphs = []
    for k in idx:
        a, b = ptr[k], ptr[k + 1]
        name = names[arrays["molecule"][k]]
        data = Data(z=torch.as_tensor(arrays["z"][a:b], dtype=torch.long),
                    pos=torch.as_tensor(arrays["pos"][a:b], dtype=dtype),
                    energy=torch.as_tensor(arrays["energy"][k], dtype=dtype).reshape(1),
                    forces=torch.as_tensor(arrays["forces"][a:b], dtype=dtype), name=name)
        graphs.append(validate(data, require=("z", "energy", "forces"), name=f"{G2_FILE} frame {int(k)} ({name})",
                               min_distance=MIN_ATOM_DISTANCE))
    return graphs
