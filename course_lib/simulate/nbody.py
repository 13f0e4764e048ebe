r"""The charged N-body data of the EGNN paper (Satorras, Hoogeboom & Welling 2021, Table 2), regenerated.

Five charged particles in open 3D space (no box) move under Coulomb forces. A model sees the state at
frame 30 (positions, velocities, charges) and predicts the positions at frame 40, 1000 integrator
steps later. Everything here is plain NumPy in float64, vectorised over all trajectories at once.

Protocol (units: particle mass 1, Coulomb constant 1, dimensionless time)
---------------------------------------------------------------------------
- ``n = 5`` particles in ``d = 3`` dimensions, charges :math:`q_i = \pm 1` with probability 1/2 each;
- initial positions :math:`x_{i,k} \sim \mathcal N(0, 1)` per coordinate;
- initial velocities of norm 0.5 in a uniformly random direction (a normalised Gaussian vector);
- forces :math:`\mathbf F_i = \sum_{j \ne i} q_i q_j\, (\mathbf x_i - \mathbf x_j) / |\mathbf x_i - \mathbf x_j|^3`
  (like charges repel), the gradient of :math:`U = \sum_{i<j} q_i q_j / r_{ij}`:
  :math:`\mathbf F_i = -\partial U / \partial \mathbf x_i`;
- the **norm** of each particle's total force is clipped at ``max_force = 100``:
  :math:`\mathbf F_i \leftarrow \mathbf F_i \min(1, 100 / |\mathbf F_i|)`;
- kick-drift-kick leapfrog (velocity Verlet) with ``dt = 0.001`` for 5000 steps, a frame stored every
  100 steps: frames 0..49, frame ``k`` at time ``0.1 k``;
- input = frame 30, target = positions at frame 40;
- 3000 train / 2000 validation / 2000 test trajectories, each split from its own seed
  (:data:`SEEDS`), so a smaller split is a prefix of the full one.

Differences from the original NRI/EGNN generator (``synthetic_sim.py``)
-----------------------------------------------------------------------
- **Clipping.** The original code clipped each *Cartesian component* of the force to [-100, 100].
  That is not rotation-equivariant: rotating a close encounter changes which components hit the
  bound, so the "ground-truth" dynamics would break the very symmetry the models are built to
  respect. We deliberately clip the *magnitude* of each particle's force vector, which commutes with
  every rotation and reflection. Where clipping is active the force is no longer the gradient of a
  potential, so energy is not conserved there (it is conserved to integration error elsewhere).
  ``clip="component"`` reproduces the original rule, for demonstrations only.
- **Integrator.** The original is a leapfrog that starts with a full kick and stores velocities half a
  step out of sync with positions; we use kick-drift-kick velocity Verlet, with positions and
  velocities at the same time.
- **Seeds and random streams** are ours (:data:`SEEDS`); positions, velocity directions and charges are
  drawn from three separate streams so that every split is prefix-stable.

The stored numbers are therefore not those of the EGNN release, but the distribution is the same up
to the two deliberate changes above.

Reproducibility
---------------
The integrator uses only element-wise IEEE operations (``+ - * /`` and ``sqrt``, all correctly
rounded, no reductions whose order could depend on the platform), so trajectories are bit-identical
across machines and independent of how many trajectories are simulated together. The ``.npz`` file is
written with fixed zip metadata (:func:`save_npz_deterministic`), so its bytes, and its SHA-256 in
``data/nbody_manifest.json``, are reproducible too. Regenerate with::

    python -m course_lib.simulate.nbody --out data          # full set, about 10 s
    python -m course_lib.simulate.nbody --out data --small  # 300/200/200, for fast mode and tests
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from course_lib.files import REPO_ROOT, cache_dir, write_npz

__all__ = [
    "N_PARTICLES",
    "DIM",
    "STEPS",
    "DT",
    "SAVE_EVERY",
    "MAX_FORCE",
    "VEL_NORM",
    "INPUT_FRAME",
    "TARGET_FRAME",
    "N_TRAJ_FRAMES",
    "SPLITS",
    "SIZES",
    "SMALL_SIZES",
    "SEEDS",
    "FILENAME",
    "SMALL_FILENAME",
    "MANIFEST",
    "forces",
    "energy",
    "initial_state",
    "integrate",
    "simulate",
    "generate_nbody",
    "save_npz_deterministic",
    "content_sha256",
    "protocol",
    "save_nbody",
    "write_manifest",
    "load_nbody_arrays",
    "load_nbody",
    "main",
]

N_PARTICLES = 5
DIM = 3
STEPS = 5000
DT = 0.001
SAVE_EVERY = 100
MAX_FORCE = 100.0
VEL_NORM = 0.5
LOC_STD = 1.0
#: Frame given to the model (positions, velocities, charges) and frame whose positions are the target.
INPUT_FRAME = 30
TARGET_FRAME = 40
#: Number of trajectories per split whose frames INPUT_FRAME..TARGET_FRAME are all stored (for plots).
N_TRAJ_FRAMES = 20

SPLITS = ("train", "valid", "test")
SIZES = {"train": 3000, "valid": 2000, "test": 2000}
SMALL_SIZES = {"train": 300, "valid": 200, "test": 200}
#: One seed per split: a split of size n is the prefix of length n of the split's full set.
SEEDS = {"train": 2021_1, "valid": 2021_2, "test": 2021_3}
_ALIASES = {"val": "valid", "validation": "valid", "training": "train"}

FILENAME = "nbody_charged_5.npz"
SMALL_FILENAME = "nbody_charged_5_small.npz"
MANIFEST = "nbody_manifest.json"

#: Reference checksums, used when no manifest is found (e.g. a pip-installed course_lib without data/).
#: They must agree with data/nbody_manifest.json (tests/test_nbody.py checks it).
EXPECTED = {
    FILENAME: {
        "sha256": "1c5d69952bf3c05fb41ca2eda5cde16ef38d996bd88061d1c7e50b8bca45c523",
        "content_sha256": "7a701ce29256a23a3d2575b08fee941449a02baf642873efce0cbbb8c0ada231",
    },
    SMALL_FILENAME: {
        "sha256": "4f88fb79bd7ef1b0c372afdc6b04db67e674e871687de208b5ef7348c165c225",
        "content_sha256": "166768cd2f680d0c4dd3d6b75bcda4f169827dd138f45f1e003d8b0004d041a5",
    },
}

# fixed zip metadata: the npz bytes do not depend on the clock, the OS or the umask


# --------------------------------------------------------------------------- physics


def _pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def _sq_norm(v: np.ndarray) -> np.ndarray:
    """Squared norm over the first axis, summed in a fixed order (bit-reproducible)."""
    s = v[0] * v[0]
    for k in range(1, v.shape[0]):
        s = s + v[k] * v[k]
    return s


_GATHER_MAX_S = 256


@functools.cache
def _pair_tables(n: int):
    """Pairs ``i < j`` in lexicographic order, and for each particle ``m`` the columns of
    ``[+f_ij | -f_ij]`` that act on it, by increasing partner index (the summation order)."""
    pairs = _pairs(n)
    col = {p: k for k, p in enumerate(pairs)}
    gather = [[col[(m, k)] if k > m else len(pairs) + col[(k, m)] for k in range(n) if k != m] for m in range(n)]
    idx_i = np.array([i for i, _ in pairs], dtype=np.intp)
    idx_j = np.array([j for _, j in pairs], dtype=np.intp)
    return idx_i, idx_j, np.array(gather, dtype=np.intp).reshape(n, n - 1)


def _forces_t(x: np.ndarray, q: np.ndarray, max_force: float | None, clip: str = "norm"):
    """Forces in the internal layout: ``x [d, n, S]``, ``q [n, S]`` -> ``(F [d, n, S], |F| unclipped [n, S])``.

    Each particle's force is summed over its partners in increasing index order, with element-wise
    operations only, so the result does not depend on the platform, on ``S`` or on the branch taken."""
    n, S = x.shape[1], x.shape[2]
    if n < 2:
        f = np.zeros_like(x)
    elif S <= _GATHER_MAX_S:  # few systems: all pairs at once (less Python overhead)
        idx_i, idx_j, gather = _pair_tables(n)
        dx = x[:, idx_i] - x[:, idx_j]  # [d, P, S]
        r2 = _sq_norm(dx)  # [P, S]
        fij = dx * ((q[idx_i] * q[idx_j]) / (r2 * np.sqrt(r2)))
        g = np.concatenate([fij, -fij], axis=1)[:, gather]  # [d, n, n - 1, S]
        f = g[:, :, 0].copy()
        for k in range(1, n - 1):
            f += g[:, :, k]
    else:  # many systems: pair by pair, in place (less memory traffic); bit-identical to the branch above
        f = np.zeros_like(x)
        for i, j in _pairs(n):
            dx = x[:, i] - x[:, j]  # [d, S]
            r2 = _sq_norm(dx)
            fij = dx * ((q[i] * q[j]) / (r2 * np.sqrt(r2)))
            f[:, i] += fij  # particle m gets -f_km (k < m) in rows k < m, then +f_mj (j > m) in row m:
            f[:, j] -= fij  # increasing partner index, the summation order of the gather branch
    norm = np.sqrt(_sq_norm(f))  # [n, S]
    if max_force is not None:
        if clip == "norm":
            f *= max_force / np.maximum(norm, max_force)  # exactly 1 where |F| <= max_force
        elif clip == "component":
            np.clip(f, -max_force, max_force, out=f)
        else:
            raise ValueError(f"clip must be 'norm' or 'component', got {clip!r}")
    return f, norm


def _to_internal(pos, charge):
    pos = np.asarray(pos, dtype=np.float64)
    charge = np.asarray(charge, dtype=np.float64)
    if pos.ndim < 2 or charge.shape != pos.shape[:-1]:
        raise ValueError(f"expected pos [..., n, d] and charge [..., n], got {pos.shape} and {charge.shape}")
    batch = pos.shape[:-2]
    n, d = pos.shape[-2:]
    x = np.ascontiguousarray(pos.reshape(-1, n, d).transpose(2, 1, 0))  # [d, n, S]
    q = np.ascontiguousarray(charge.reshape(-1, n).T)  # [n, S]
    return x, q, batch


def _from_internal(x: np.ndarray, batch: tuple) -> np.ndarray:
    d, n, _ = x.shape
    return np.ascontiguousarray(x.transpose(2, 1, 0)).reshape(*batch, n, d)


def forces(pos, charge, max_force: float | None = MAX_FORCE, clip: str = "norm") -> np.ndarray:
    """Coulomb forces ``F_i = sum_j q_i q_j (x_i - x_j) / |x_i - x_j|^3``, float64 ``[..., n, d]``.

    ``pos [..., n, d]``, ``charge [..., n]``. The norm of each particle's total force is clipped at
    ``max_force`` (``None``: no clipping), which keeps the forces rotation-equivariant;
    ``clip="component"`` clips each Cartesian component instead, as the original NRI/EGNN code did
    (not rotation-equivariant; for demonstrations only).
    """
    x, q, batch = _to_internal(pos, charge)
    f, _ = _forces_t(x, q, max_force, clip)
    return _from_internal(f, batch)


def energy(pos, vel, charge) -> np.ndarray:
    """Total energy ``sum_i |v_i|^2 / 2 + sum_{i<j} q_i q_j / r_ij`` (unit masses), shape ``[...]``.

    The unclipped forces are exactly ``-grad`` of the potential term, so the total energy is conserved
    up to integration error, except while clipping is active (the clipped force is not conservative).
    """
    x, q, batch = _to_internal(pos, charge)
    v, _, _ = _to_internal(vel, charge)
    e = 0.5 * _sq_norm(v).sum(axis=0)
    for i, j in _pairs(x.shape[1]):
        e = e + q[i] * q[j] / np.sqrt(_sq_norm(x[:, i] - x[:, j]))
    return e.reshape(batch)


# --------------------------------------------------------------------------- simulation


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream])


def initial_state(n_traj: int, seed: int, n_particles: int = N_PARTICLES, dim: int = DIM) -> dict[str, np.ndarray]:
    """Random initial states (float64): ``pos [S, n, d] ~ N(0, 1)``, ``vel`` of norm 0.5 in a uniformly
    random direction, ``charge [S, n]`` = +-1 with probability 1/2.

    Each quantity comes from its own random stream, filled trajectory by trajectory, so the first
    ``k`` trajectories do not depend on ``n_traj``.
    """
    pos = LOC_STD * _rng(seed, 0).standard_normal((n_traj, n_particles, dim))
    v = _rng(seed, 1).standard_normal((n_traj, n_particles, dim))
    vt = v.transpose(2, 0, 1)
    vel = v * (VEL_NORM / np.sqrt(_sq_norm(vt)))[..., None]
    charge = np.where(_rng(seed, 2).random((n_traj, n_particles)) < 0.5, 1.0, -1.0)
    return {"pos": pos, "vel": vel, "charge": charge}


def integrate(pos, vel, charge, steps: int = STEPS, dt: float = DT, save_every: int = SAVE_EVERY,
              max_force: float | None = MAX_FORCE, clip: str = "norm", n_frames: int | None = None) -> dict:
    """Integrate from a given state with kick-drift-kick leapfrog (velocity Verlet), all in float64.

    ``pos, vel [S, n, d]``, ``charge [S, n]`` (a single system without the batch axis also works).
    Frames are stored at steps ``0, save_every, 2 save_every, ...``: ``steps // save_every`` frames by
    default (frames 0..49 for 5000 steps), or the first ``n_frames``. The integration stops at the last
    stored frame: later steps would not change any stored number.

    Returns ``pos, vel [S, F, n, d]``, ``charge [S, n]``, ``time [F]``, and per trajectory
    ``max_force [S]`` (the largest unclipped force norm met, at any step) and ``clipped [S]``
    (whether clipping was ever active).
    """
    n_total = steps // save_every if n_frames is None else int(n_frames)
    if n_total < 1 or (n_total - 1) * save_every > steps:
        raise ValueError(f"cannot store {n_total} frames every {save_every} steps in {steps} steps")
    x, q, batch = _to_internal(pos, charge)
    v, _, _ = _to_internal(vel, charge)
    x, v = x.copy(), v.copy()
    d, n, S = x.shape
    out_x = np.empty((n_total, d, n, S))
    out_v = np.empty((n_total, d, n, S))
    out_x[0], out_v[0] = x, v
    h = 0.5 * dt
    f, norm = _forces_t(x, q, max_force, clip)
    fmax = norm.max(axis=0)
    for step in range(1, (n_total - 1) * save_every + 1):
        v += h * f
        x += dt * v
        f, norm = _forces_t(x, q, max_force, clip)
        v += h * f
        np.maximum(fmax, norm.max(axis=0), out=fmax)
        if step % save_every == 0:
            k = step // save_every
            out_x[k], out_v[k] = x, v
    if not (np.isfinite(out_x).all() and np.isfinite(out_v).all()):
        raise FloatingPointError("the simulation produced non-finite values (coinciding particles?)")

    def frames(a):  # [F, d, n, S] -> [*batch, F, n, d]
        return np.ascontiguousarray(a.transpose(3, 0, 2, 1)).reshape(*batch, n_total, n, d)

    limit = np.inf if max_force is None else max_force
    return {
        "pos": frames(out_x),
        "vel": frames(out_v),
        "charge": np.asarray(charge, dtype=np.float64).copy(),
        "time": np.arange(n_total) * (save_every * dt),
        "max_force": fmax.reshape(batch),
        "clipped": (fmax > limit).reshape(batch),
    }


def simulate(n_traj: int, seed: int, n_particles: int = N_PARTICLES, dim: int = DIM, steps: int = STEPS,
             dt: float = DT, save_every: int = SAVE_EVERY, max_force: float | None = MAX_FORCE,
             n_frames: int | None = None) -> dict:
    """Draw ``n_traj`` initial states from ``seed`` (:func:`initial_state`) and integrate them
    (:func:`integrate`). Returns ``pos, vel [S, F, n, d]`` and ``charge [S, n]`` (float64) with
    ``F = steps // save_every`` frames (or ``n_frames``), plus ``time``, ``max_force``, ``clipped``."""
    s0 = initial_state(n_traj, seed, n_particles, dim)
    return integrate(s0["pos"], s0["vel"], s0["charge"], steps, dt, save_every, max_force, n_frames=n_frames)


def _split(split: str) -> str:
    split = _ALIASES.get(split, split)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    return split


def generate_nbody(split: str, seed: int | None = None, n: int | None = None) -> dict[str, np.ndarray]:
    """Generate one split with the EGNN protocol (float64 arrays).

    ``seed`` defaults to :data:`SEEDS` ``[split]``, ``n`` to :data:`SIZES` ``[split]``. Returns
    ``pos, vel [n, 5, 3]`` (frame 30), ``charge [n, 5]``, ``target_pos [n, 5, 3]`` (frame 40),
    ``traj_pos, traj_vel [min(n, 20), 11, 5, 3]`` (frames 30..40 of the first trajectories),
    ``clipped [n]`` (clipping was active at some step up to frame 40).
    """
    split = _split(split)
    seed = SEEDS[split] if seed is None else int(seed)
    n = SIZES[split] if n is None else int(n)
    sim = simulate(n, seed, n_frames=TARGET_FRAME + 1)  # frames 0..40; identical to the 5000-step run
    pos, vel = sim["pos"], sim["vel"]
    m = min(n, N_TRAJ_FRAMES)
    return {
        "pos": pos[:, INPUT_FRAME],
        "vel": vel[:, INPUT_FRAME],
        "charge": sim["charge"],
        "target_pos": pos[:, TARGET_FRAME],
        "traj_pos": pos[:m, INPUT_FRAME:TARGET_FRAME + 1],
        "traj_vel": vel[:m, INPUT_FRAME:TARGET_FRAME + 1],
        "clipped": sim["clipped"],
    }


# --------------------------------------------------------------------------- files


def save_npz_deterministic(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a compressed ``.npz`` whose bytes depend only on the arrays (entries in sorted order)."""
    write_npz(path, {k: arrays[k] for k in sorted(arrays)})


def content_sha256(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of the arrays themselves (names, dtypes, shapes, bytes), independent of compression."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.asarray(arrays[key], order="C")
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _sha256_bytes(path: Path) -> str:
    # same digest as course_lib.data.sha256_file, without importing torch (keeps the CLI light)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _storage_arrays(sizes: dict[str, int], seeds: dict[str, int]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        g = generate_nbody(split, seed=seeds[split], n=sizes[split])
        for key in ("pos", "vel", "target_pos", "traj_pos", "traj_vel"):
            arrays[f"{split}_{key}"] = g[key].astype(np.float32)
        arrays[f"{split}_charge"] = g["charge"].astype(np.int8)
    meta = {"input_frame": INPUT_FRAME, "target_frame": TARGET_FRAME, "steps_between": (TARGET_FRAME - INPUT_FRAME)
            * SAVE_EVERY, "dt": DT, "save_every": SAVE_EVERY, "sizes": sizes, "seeds": seeds,
            "traj_frames": [INPUT_FRAME, TARGET_FRAME]}
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    return arrays


def protocol() -> dict:
    """The generation parameters, as stored in the manifest."""
    return {
        "paper": "Satorras, Hoogeboom & Welling, E(n) Equivariant Graph Neural Networks, ICML 2021, Table 2",
        "n_particles": N_PARTICLES, "dim": DIM, "charges": "+1/-1 with probability 1/2",
        "initial_positions": f"N(0, {LOC_STD}^2) per coordinate",
        "initial_velocities": f"norm {VEL_NORM}, uniformly random direction",
        "force": "F_i = sum_j q_i q_j (x_i - x_j)/|x_i - x_j|^3 (like charges repel), unit masses",
        "max_force": MAX_FORCE, "clipping": "norm of each particle's total force (rotation-equivariant)",
        "boundary": "open space, no box", "integrator": "kick-drift-kick leapfrog (velocity Verlet), float64",
        "dt": DT, "steps": STEPS, "save_every": SAVE_EVERY, "frames": STEPS // SAVE_EVERY,
        "input_frame": INPUT_FRAME, "target_frame": TARGET_FRAME, "traj_frames_for_first": N_TRAJ_FRAMES,
        "storage": "float32 pos/vel/target_pos, int8 charge",
    }


def save_nbody(path: str | Path, small: bool = False, sizes: dict[str, int] | None = None,
               seeds: dict[str, int] | None = None) -> dict:
    """Generate all three splits and write them to ``path`` (deterministic npz); return the manifest
    entry of the file (sha256, size, content_sha256, sizes, seeds, wall time).

    Layout: for each split ``s`` in ``train, valid, test``: ``s_pos, s_vel [n, 5, 3]`` float32 (frame 30),
    ``s_charge [n, 5]`` int8, ``s_target_pos [n, 5, 3]`` float32 (frame 40), ``s_traj_pos, s_traj_vel
    [20, 11, 5, 3]`` float32 (frames 30..40 of the first 20 trajectories); ``meta``: a JSON string.
    """
    sizes = dict(sizes or (SMALL_SIZES if small else SIZES))
    seeds = dict(seeds or SEEDS)
    t0 = time.perf_counter()
    arrays = _storage_arrays(sizes, seeds)
    save_npz_deterministic(path, arrays)
    wall = time.perf_counter() - t0
    path = Path(path)
    return {
        "sha256": _sha256_bytes(path),
        "size": path.stat().st_size,
        "content_sha256": content_sha256(arrays),
        "sizes": sizes,
        "seeds": seeds,
        "wall_time_s": round(wall, 1),
        "generated_with": {"python": platform.python_version(), "numpy": np.__version__,
                           "machine": platform.machine(), "cpus": os.cpu_count()},
    }


def write_manifest(directory: str | Path, name: str, entry: dict) -> Path:
    """Add or replace the entry of file ``name`` in ``directory/nbody_manifest.json``."""
    path = Path(directory) / MANIFEST
    man = json.loads(path.read_text()) if path.exists() else {}
    man["description"] = ("Charged 5-body data of the EGNN paper, regenerated by course_lib.simulate.nbody "
                          "(see data/README_nbody.md)")
    man["protocol"] = protocol()
    man.setdefault("files", {})[name] = entry
    man["files"] = dict(sorted(man["files"].items()))
    path.write_text(json.dumps(man, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- loading


def _repo_data_dir() -> Path:
    return REPO_ROOT / "data"


def _cache_dir() -> Path:
    return cache_dir() / "data"


def _search_dirs(root) -> list[Path]:
    dirs = []
    if root is not None:
        dirs.append(Path(root))
    if os.environ.get("COURSE_DATA_DIR"):
        dirs.append(Path(os.environ["COURSE_DATA_DIR"]))
    dirs.append(_repo_data_dir())
    dirs.append(_cache_dir())
    return dirs


def _reference(name: str, directory: Path) -> tuple[dict, str]:
    """The expected checksums of ``name``: from a manifest beside the file, else the repository's
    ``data/nbody_manifest.json``, else the built-in :data:`EXPECTED`."""
    for man in (directory / MANIFEST, _repo_data_dir() / MANIFEST):
        if man.exists():
            entry = json.loads(man.read_text()).get("files", {}).get(name)
            if entry is not None:
                return entry, str(man)
    return EXPECTED[name], f"{__name__}.EXPECTED"


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _verify(path: Path, generated: bool) -> dict[str, np.ndarray]:
    """Check ``path`` against its reference checksum and return its arrays.

    The file's SHA-256 must match; if only the compressed bytes differ (another zlib build), the
    SHA-256 of the decompressed arrays must match instead."""
    from course_lib.data import verify_checksum

    ref, where = _reference(path.name, path.parent)
    try:
        verify_checksum(path, expected=ref["sha256"])
        return _read_npz(path)
    except ValueError as err:
        byte_error = err
    try:
        arrays = _read_npz(path)
        ok = bool(ref.get("content_sha256")) and content_sha256(arrays) == ref["content_sha256"]
    except Exception:  # a corrupted zip fails to open or to decompress
        arrays, ok = None, False
    if ok:
        return arrays
    regen = f"python -m course_lib.simulate.nbody --out DIR{' --small' if path.name == SMALL_FILENAME else ''}"
    if generated:
        raise ValueError(
            f"checksum mismatch for {path}, which was just generated on this machine: this platform produced "
            f"different floating-point results from the reference in {where}. Use the shipped data file "
            f"(data/{path.name} of the course repository, or set COURSE_DATA_DIR), or regenerate file and "
            f"manifest together with `{regen}` and load with root=DIR (details: {byte_error})"
        )
    raise ValueError(
        f"checksum mismatch for {path} (reference: {where}): the file is corrupt or was modified. Delete it and "
        f"restore it from the repository, or regenerate it with `{regen}` (details: {byte_error})"
    )


def load_nbody_arrays(split: str, root: str | Path | None = None, n: int | None = None) -> dict[str, np.ndarray]:
    """The stored arrays of one split (``pos, vel, charge, target_pos, traj_pos, traj_vel``), checksum-verified.

    Search order for ``nbody_charged_5.npz``: ``root``, ``$COURSE_DATA_DIR``, the repository's ``data/``
    folder, the cache ``~/.cache/course_lib/data``. With ``n`` at most the small size of the split, the
    small file ``nbody_charged_5_small.npz`` is accepted too (it is a prefix of the full one). If
    nothing is found, the needed file is generated into the cache (deterministic) and verified.
    """
    split = _split(split)
    if n is not None and not 0 < n <= SIZES[split]:
        raise ValueError(f"n must be in 1..{SIZES[split]} for split {split!r}, got {n}")
    small_ok = n is not None and n <= SMALL_SIZES[split]
    names = [FILENAME, SMALL_FILENAME] if small_ok else [FILENAME]
    path = None
    for d in _search_dirs(root):
        path = next((d / nm for nm in names if (d / nm).is_file()), None)
        if path is not None:
            break
    generated = False
    if path is None:
        name = SMALL_FILENAME if small_ok else FILENAME
        path = _cache_dir() / name
        where = ", ".join(str(d) for d in _search_dirs(root)[:-1])
        how_long = "a few seconds" if small_ok else "about ten seconds"
        print(f"nbody: {name} not found in {where}; generating it into {path.parent} (deterministic, {how_long})...",
              file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        save_nbody(path, small=small_ok)
        print(f"nbody: generated {path} in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        generated = True
    arrays = _verify(path, generated)
    out = {k[len(split) + 1:]: v for k, v in arrays.items() if k.startswith(split + "_")}
    if n is not None:
        if n > len(out["pos"]):
            raise ValueError(f"{path} holds only {len(out['pos'])} {split} trajectories, asked for {n}")
        out = {k: v if k.startswith("traj_") else v[:n] for k, v in out.items()}
    out["meta"] = json.loads(arrays["meta"].item())
    return out


def load_nbody(split: str, root: str | Path | None = None, n: int | None = None) -> list:
    """The N-body task as a list of graphs ``Data(pos [5, 3], vel [5, 3], charge [5], target_pos [5, 3])``
    (float32): input at frame 30, target positions at frame 40 (1000 steps, time 1.0, later).

    ``split``: ``"train"`` (3000), ``"valid"`` (2000) or ``"test"`` (2000); ``n``: only the first ``n``
    trajectories. The file is found as in :func:`load_nbody_arrays` and its SHA-256 verified against
    ``data/nbody_manifest.json``.
    """
    import torch
    from torch_geometric.data import Data

    from course_lib.data import validate

    a = load_nbody_arrays(split, root, n)
    pos, vel = torch.from_numpy(a["pos"]), torch.from_numpy(a["vel"])
    charge = torch.from_numpy(a["charge"].astype(np.float32))
    target = torch.from_numpy(a["target_pos"])
    graphs = [Data(pos=pos[k], vel=vel[k], charge=charge[k], target_pos=target[k]) for k in range(len(pos))]
    if graphs:
        validate(graphs[0], name=f"nbody {split} graph 0")
    return graphs


def load_nbody_forces(split: str, n: int | None = None, max_force: float = 10.0,
                      root: str | Path | None = None) -> list:
    """The input states of :func:`load_nbody` with the Coulomb force on every particle as the label:
    ``Data(pos [5, 3], charge [5], forces [5, 3])`` (float32), ``forces`` from :func:`forces` with the norm
    clipped at ``max_force`` (clipping the norm keeps the label rotation-equivariant). A vector-valued,
    E(3)-equivariant regression task for small equivariant networks (notebook 06)."""
    import torch
    from torch_geometric.data import Data

    graphs = load_nbody(split, root, n)
    out = []
    for g in graphs:
        f = forces(g.pos.double().numpy(), g.charge.double().numpy(), max_force=max_force)
        out.append(Data(pos=g.pos, charge=g.charge, forces=torch.from_numpy(f).to(g.pos.dtype)))
    return out


# --------------------------------------------------------------------------- CLI


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m course_lib.simulate.nbody", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="data", help="output directory (default: data)")
    p.add_argument("--small", action="store_true", help=f"reduced set {SMALL_SIZES} -> {SMALL_FILENAME}")
    args = p.parse_args(argv)
    name = SMALL_FILENAME if args.small else FILENAME
    out = Path(args.out) / name
    t0 = time.perf_counter()
    entry = save_nbody(out, small=args.small)
    wall = time.perf_counter() - t0
    man = write_manifest(args.out, name, entry)
    print(f"wrote {out} ({entry['size'] / 1e6:.2f} MB, sha256 {entry['sha256']}) and {man}")
    print(f"sizes {entry['sizes']}, seeds {entry['seeds']}; wall time {wall:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
