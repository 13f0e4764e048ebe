"""Generate the particle datasets of the course, deterministically, into ``data/``.

Usage::

    python -m course_lib.simulate.make_datasets [--out DIR] [--only NAME] [--num-systems K]

``NAME`` is one of ``energy``, ``trajectories``, ``crystal_trajectories`` (or the file name). Every
dataset has its own fixed seed (a ``numpy.random.Generator``), so each run writes the **same bytes**
(on the same machine with the same NumPy/zlib; molecular dynamics is chaotic, so a different CPU or
NumPy version may round differently and produce different trajectories). ``--num-systems`` shrinks
a dataset (used by the tests); only a full-size run into the repository's ``data/`` folder updates the
checksums shipped inside the package (``course_lib/simulate/checksums.json``).

Files written to ``DIR``: the ``.npz`` files (a zip of ``.npy`` arrays, float32 storage) and
``manifest.json`` (sha256, size, seed, parameters and split sizes of each file). The layout of the
arrays is documented in ``data/README.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from course_lib.data import sha256_file
from course_lib.files import write_npz
from course_lib.simulate import particles2d as p2d

__all__ = ["DATASETS", "FILES", "generate", "write_npz", "main", "REPO_DATA_DIR", "PACKAGE_CHECKSUMS"]

#: The repository's data folder and the checksum file shipped inside the package.
REPO_DATA_DIR = Path(__file__).resolve().parents[2] / "data"
PACKAGE_CHECKSUMS = Path(__file__).resolve().parent / "checksums.json"

_COMMON = {
    "box": p2d.BOX,
    "temperature_range": [0.5, 1.0],
    "charges": "random (+1 or -1 with probability 1/2 each)",
    "dt_langevin": p2d.DT_LANGEVIN,
    "gamma": 1.0,
    "split_fractions": [0.8, 0.1, 0.1],
}

#: Parameters of every dataset (the manifest records them with each file).
DATASETS: dict[str, dict] = {
    "particles_energy.npz": {
        **_COMMON,
        "kind": "energy",
        "seed": 20250101,
        "num_runs": 500,
        "snapshots_per_run": 6,
        "n_range": [4, 24],
        "equilibration_steps": 2000,  # 4 time units of Langevin dynamics
        "sample_every_steps": 1000,  # 2 time units between snapshots of the same run
    },
    "particles_trajectories.npz": {
        **_COMMON,
        "kind": "trajectories",
        "seed": 20250102,
        "num_systems": 250,
        "n_range": [4, 24],
        "equilibration_steps": 2500,  # 5 time units of Langevin dynamics
        "dt": p2d.DT,
        "steps_per_frame": p2d.STEPS_PER_FRAME,
        "num_frames": 40,
        "max_energy_drift": 1e-4,
    },
    "crystal_trajectories.npz": {
        **_COMMON,
        "kind": "crystal",
        "seed": 20250103,
        "num_systems": 200,
        "n_mobile_range": [4, 12],
        "crystal_n_side": 4,
        "crystal_spacing": p2d.BOX / 4,
        "crystal_charge": 1.0,
        "equilibration_steps": 2500,
        "dt": p2d.DT,
        "steps_per_frame": p2d.STEPS_PER_FRAME,
        "num_frames": 40,
        "max_energy_drift": 1e-4,
    },
}

#: Short names accepted by ``--only`` and by :func:`course_lib.datasets.load_particles`.
FILES = {"energy": "particles_energy.npz", "trajectories": "particles_trajectories.npz",
         "crystal_trajectories": "crystal_trajectories.npz"}



# --------------------------------------------------------------------------- helpers


def _to_f32_positions(pos: np.ndarray, box: float) -> np.ndarray:
    """Round wrapped float64 positions to float32, keeping them in ``[0, L)`` (a value that rounds up
    to exactly ``L`` is the same point of the torus as 0)."""
    p = pos.astype(np.float32)
    return np.where(p >= np.float32(box), p - np.float32(box), p)


def _splits(rng: np.random.Generator, num: int, fractions) -> dict[str, np.ndarray]:
    """Random train/val/test partition of ``range(num)``: sorted int64 index arrays."""
    perm = rng.permutation(num)
    n_train = int(round(fractions[0] * num))
    n_val = int(round(fractions[1] * num))
    parts = {"train": perm[:n_train], "val": perm[n_train:n_train + n_val], "test": perm[n_train + n_val:]}
    return {k: np.sort(v).astype(np.int64) for k, v in parts.items()}


def _groups(sizes: np.ndarray):
    """Indices of the systems of each size, smallest size first: simulating equal-size systems
    together avoids padding."""
    for n in np.unique(sizes):
        yield int(n), np.flatnonzero(sizes == n)


# --------------------------------------------------------------------------- the three datasets


def _energy_dataset(cfg: dict, num_runs: int) -> tuple[dict[str, np.ndarray], dict]:
    rng = np.random.default_rng(cfg["seed"])
    L, n_lo, n_hi = cfg["box"], *cfg["n_range"]
    k = cfg["snapshots_per_run"]
    sizes = rng.integers(n_lo, n_hi + 1, size=num_runs)
    temps = rng.uniform(*cfg["temperature_range"], size=num_runs)
    pos = [None] * num_runs  # per run: list of k [n, 2] float32 snapshots
    vel = [None] * num_runs
    charge = [None] * num_runs
    for n, idx in _groups(sizes):
        st = p2d.random_state(rng, [n] * len(idx), L, temps[idx])
        st = p2d.langevin(st, cfg["dt_langevin"], cfg["equilibration_steps"], temps[idx], rng, cfg["gamma"])
        snaps = []
        for j in range(k):
            if j > 0:
                st = p2d.langevin(st, cfg["dt_langevin"], cfg["sample_every_steps"], temps[idx], rng, cfg["gamma"])
            snaps.append((_to_f32_positions(st.pos, L), st.vel.astype(np.float32)))
        for a, s in enumerate(idx):
            pos[s] = [sp[0][a] for sp in snaps]
            vel[s] = [sp[1][a] for sp in snaps]
            charge[s] = st.charge[a].astype(np.float32)
    # graph g = run * k + j; labels from the float32 positions that are stored
    P = np.concatenate([p for s in range(num_runs) for p in pos[s]])
    V = np.concatenate([v for s in range(num_runs) for v in vel[s]])
    Q = np.concatenate([charge[s] for s in range(num_runs) for _ in range(k)])
    num_nodes = np.repeat(sizes, k).astype(np.int64)
    E = np.zeros(len(num_nodes))
    F = np.zeros((len(P), 2))
    ptr = np.concatenate([[0], np.cumsum(num_nodes)])
    for n in np.unique(num_nodes):
        gs = np.flatnonzero(num_nodes == n)
        rows = ptr[gs][:, None] + np.arange(n)[None, :]  # [G, n]
        e, f = p2d.energy_and_forces(P[rows].astype(np.float64), Q[rows].astype(np.float64), L)
        E[gs] = e
        F[rows] = f
    run_split = _splits(rng, num_runs, cfg["split_fractions"])  # split by run: no leakage between splits
    split = {name: (ri[:, None] * k + np.arange(k)[None, :]).ravel().astype(np.int64)
             for name, ri in run_split.items()}
    arrays = {
        "num_nodes": num_nodes,
        "pos": P,
        "vel": V,
        "charge": Q,
        "forces": F.astype(np.float32),
        "energy": E.astype(np.float32),
        "box": np.full((len(num_nodes), 2), L, dtype=np.float32),
        "temperature": np.repeat(temps, k).astype(np.float32),
        "run": np.repeat(np.arange(num_runs), k).astype(np.int64),
        **{f"{name}_idx": idx for name, idx in split.items()},
    }
    stats = {"num_graphs": len(num_nodes), "num_nodes_total": int(num_nodes.sum()),
             "energy_mean": float(E.mean()), "energy_std": float(E.std()),
             "force_rms": float(np.sqrt(np.mean(F**2)))}
    return arrays, {"splits": {k_: len(v) for k_, v in split.items()}, "stats": stats}


def _trajectory_dataset(cfg: dict, num_systems: int) -> tuple[dict[str, np.ndarray], dict]:
    rng = np.random.default_rng(cfg["seed"])
    L = cfg["box"]
    crystal = cfg["kind"] == "crystal"
    T_frames = cfg["num_frames"]
    if crystal:
        n_lo, n_hi = cfg["n_mobile_range"]
        nc = cfg["crystal_n_side"] ** 2
    else:
        n_lo, n_hi = cfg["n_range"]
        nc = 0
    n_mobile = rng.integers(n_lo, n_hi + 1, size=num_systems)
    temps = rng.uniform(*cfg["temperature_range"], size=num_systems)
    out_pos, out_vel, out_q, out_fixed = [None] * num_systems, [None] * num_systems, [None] * num_systems, \
        [None] * num_systems
    U = np.zeros((num_systems, T_frames))
    K = np.zeros((num_systems, T_frames))
    drift = np.zeros(num_systems)
    for n, idx in _groups(n_mobile):
        if crystal:
            st = p2d.crystal_state(rng, [n] * len(idx), L, temps[idx], n_side=cfg["crystal_n_side"],
                                   crystal_charge=cfg["crystal_charge"])
        else:
            st = p2d.random_state(rng, [n] * len(idx), L, temps[idx])
        st = p2d.langevin(st, cfg["dt_langevin"], cfg["equilibration_steps"], temps[idx], rng, cfg["gamma"])
        if not crystal:  # NVE without crystal conserves momentum: start from zero total momentum
            st.vel = st.vel - np.mean(st.vel, axis=1, keepdims=True)
        tr = p2d.run_nve(st, T_frames, cfg["steps_per_frame"], cfg["dt"])
        U[idx], K[idx], drift[idx] = tr.potential, tr.kinetic, tr.drift
        for a, s in enumerate(idx):
            out_pos[s] = _to_f32_positions(tr.pos[a].transpose(1, 0, 2), L)  # node-first [n, T, 2]
            out_vel[s] = tr.vel[a].transpose(1, 0, 2).astype(np.float32)
            out_q[s] = st.charge[a].astype(np.float32)
            out_fixed[s] = st.fixed[a].copy()
    if drift.max() > cfg["max_energy_drift"]:
        s = int(np.argmax(drift))
        raise RuntimeError(f"trajectory {s} has relative energy drift {drift[s]:.3g} > {cfg['max_energy_drift']}; "
                           "use a smaller dt")
    split = _splits(rng, num_systems, cfg["split_fractions"])
    num_nodes = (n_mobile + nc).astype(np.int64)
    arrays = {
        "num_nodes": num_nodes,
        "charge": np.concatenate(out_q),
        "fixed": np.concatenate(out_fixed),
        "traj_pos": np.concatenate(out_pos),
        "traj_vel": np.concatenate(out_vel),
        "box": np.full((num_systems, 2), L, dtype=np.float32),
        "time": (cfg["dt"] * cfg["steps_per_frame"] * np.arange(T_frames)).astype(np.float32),
        "temperature": temps.astype(np.float32),
        "potential_energy": U.astype(np.float32),
        "kinetic_energy": K.astype(np.float32),
        "energy_drift": drift.astype(np.float32),
        **{f"{name}_idx": v for name, v in split.items()},
    }
    stats = {"num_graphs": num_systems, "num_nodes_total": int(num_nodes.sum()),
             "energy_drift_max": float(drift.max()), "energy_drift_median": float(np.median(drift))}
    return arrays, {"splits": {k: len(v) for k, v in split.items()}, "stats": stats}


def generate(name: str, out: str | Path, num_systems: int | None = None, num_frames: int | None = None) -> dict:
    """Generate one dataset (short name or file name) into the folder ``out``; return its manifest entry.

    ``num_systems`` (runs, for the energy dataset) and ``num_frames`` (trajectory datasets) override the
    sizes to make a small version, e.g. for tests.
    """
    fname = FILES.get(name, name)
    if fname not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(FILES)}")
    cfg = dict(DATASETS[fname])
    if num_frames is not None and "num_frames" in cfg:
        cfg["num_frames"] = num_frames
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg["kind"] == "energy":
        arrays, info = _energy_dataset(cfg, num_systems or cfg["num_runs"])
    else:
        arrays, info = _trajectory_dataset(cfg, num_systems or cfg["num_systems"])
    path = out / fname
    write_npz(path, arrays)
    params = dict(cfg)
    if num_systems is not None:
        params["num_runs" if cfg["kind"] == "energy" else "num_systems"] = num_systems
    return {"sha256": sha256_file(path), "size_bytes": path.stat().st_size, "seed": cfg["seed"],
            "params": params, **info}


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO_DATA_DIR), help="output folder (default: the repository's data/)")
    ap.add_argument("--only", default=None, help=f"generate only this dataset: one of {sorted(FILES)}")
    ap.add_argument("--num-systems", type=int, default=None, help="reduced number of systems (for tests)")
    ap.add_argument("--num-frames", type=int, default=None, help="reduced number of frames (for tests)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    names = [FILES.get(args.only, args.only)] if args.only else list(DATASETS)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest.setdefault("files", {})
    manifest.update({
        "generator": "python -m course_lib.simulate.make_datasets",
        "units": "reduced: length l, energy eps, mass m, k_B = 1, time tau = l*sqrt(m/eps)",
        "potential": {**asdict(p2d.DEFAULT_POTENTIAL),
                      "form": "u(r) = q_i q_j A exp(-r/lam)/r + B (sigma/r)^n, shifted-force at r_c = cutoff"},
    })
    for fname in names:
        t0 = time.perf_counter()
        entry = generate(fname, out, args.num_systems, args.num_frames)
        manifest["files"][fname] = entry
        print(f"{fname}: {entry['size_bytes'] / 1e6:.2f} MB, splits {entry['splits']}, "
              f"stats {entry['stats']}, {time.perf_counter() - t0:.1f} s", flush=True)
    _write_json(manifest_path, manifest)
    full = args.num_systems is None and args.num_frames is None
    if full and out.resolve() == REPO_DATA_DIR.resolve():
        sums = json.loads(PACKAGE_CHECKSUMS.read_text()) if PACKAGE_CHECKSUMS.exists() else {"files": {}}
        for fname in names:
            e = manifest["files"][fname]
            sums["files"][fname] = {"sha256": e["sha256"], "size_bytes": e["size_bytes"]}
        _write_json(PACKAGE_CHECKSUMS, sums)
        print(f"updated {PACKAGE_CHECKSUMS}")


if __name__ == "__main__":
    main()
