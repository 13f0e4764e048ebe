"""Time per energy+force call of GFN2-xTB, SchNet and NequIP (l_max = 0, 1) at growing system sizes (notebook 08).

    python benchmarks/md_speed.py                       # ~10 min on 1 shared CPU thread, writes results/md_speed.json
    python benchmarks/md_speed.py --quick --out /tmp    # pipeline check (small systems, few repeats)
    python benchmarks/md_speed.py --device cpu,cuda     # the learned models also on the GPU

What is timed: one call of ``atoms.get_forces()`` through the calculator that MD uses
(:class:`course_lib.ase_calculator.ModelCalculator` for the learned models, ``xtb_calculator()`` of
:mod:`course_lib.simulate.molecules` for GFN2-xTB), with the positions displaced randomly by 0.01 A (per
component, around the starting structure) before each call, about one MD step of motion (nothing cached; xTB
restarts its self-consistent iterations from the previous density, as in MD), median over ``--repeats`` calls
after warm-up. Reported per system and method: wall-clock ms and CPU ms of this process
(``time.process_time``; on the shared 2-core development machine the CPU time is the less load-dependent
number, the wall time includes waiting for the other jobs).

Systems:

- ``ethanol`` (9 atoms) and ``aspirin`` (21): test frames of the course's xTB data;
- ``water_K`` (3K atoms, K = 1, 3, 10, 33, 100): clusters of K rigid water molecules (O-H 0.96 A, 104.5
  degrees, random orientations) on the K sites of a cubic grid of spacing 3.1 A (liquid density) closest
  to its centre. The learned models were trained on ethanol (H, C, O), so their water energies are
  meaningless, but the cost of a call only depends on the number of atoms and neighbours: the clusters
  measure the *scaling* with system size at a liquid-like density;
- ``ethanol_batch``: ``--batch`` ethanol frames in one model call (a PyG batch through
  ``energy_and_forces``; xTB: one call per molecule), reported per molecule (throughput).

Models: the shipped checkpoints ``results/schnet_ethanol.pt`` (``schnet_molecules.py final``) and
``results/nequip_curve_l0.pt`` / ``nequip_curve_l1.pt`` (``nequip_learning_curve.py``; 16 features, 3
layers), or others given with ``--schnet`` / ``--nequip-l0`` / ``--nequip-l1``. ``--dtype`` sets the
precision of the learned models (default float32). ``--device`` (a comma list: ``cpu``, ``cuda``, ``cpu,cuda``;
default ``cpu``, as the committed ``results/md_speed.json``) says where the learned models are timed: results
per device under its name, on the GPU with ``torch.cuda.synchronize()`` around each call; ``--device cuda``
without CUDA stops at once with a message. xTB always runs on the CPU (its entry is keyed ``cpu``).

Table VI of the NequIP preprint (Batzner et al., arXiv:2101.03164v1 (2021); NequIP, l = 1: 16 ms per force
call for toluene, 15 atoms, against hours of CCSD(T)) is a speed-up against *ab-initio* methods; GFN2-xTB is a
semi-empirical method that is itself
thousands of times faster than DFT, so against it the learned models win only for larger systems (xTB's
cost grows faster than linearly with the number of atoms, a local model's linearly).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from torch_geometric.data import Batch

from course_lib.ase_calculator import ModelCalculator
from course_lib.datasets import load_molecules
from course_lib.models import energy_and_forces
from course_lib.train import load_model
from course_lib.utils import DEVICE_HELP, check_device, device_info, machine_info, synchronize

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
HOW_TO_MAKE = {
    "schnet": "python benchmarks/schnet_molecules.py final --molecules ethanol",
    "nequip_l0": "python benchmarks/nequip_learning_curve.py --lmax 0",
    "nequip_l1": "python benchmarks/nequip_learning_curve.py --lmax 1",
}
#: Literature rows of Table VI of arXiv:2101.03164v1 (NequIP l = 1 on a GPU against CCSD(T)), for the notebook's table.
TABLE_VI = [{"system": "toluene", "atoms": 15, "nequip_ms": 16, "reference": "CCSD(T)", "reference_time": "4 hours",
             "speed_up": 900000},
            {"system": "formate on Cu", "atoms": 52, "nequip_ms": 58, "reference": "DFT", "reference_time": "1045.6 s",
             "speed_up": 18028}]


#: Random displacement (A, per component, around the starting structure) before every timed call: consecutive
#: structures differ by ~0.014 A, about the motion of an H atom in one 0.5 fs step at 500 K. xTB starts its
#: self-consistent iterations from the previous call's density, so much smaller changes would flatter it.
JITTER = 0.01


def water_cluster(n_molecules: int, seed: int = 0, spacing: float = 3.1) -> Atoms:
    """``n_molecules`` water molecules with random orientations on the grid sites nearest to the centre."""
    if n_molecules < 1:
        raise ValueError("n_molecules must be >= 1")
    rng = np.random.default_rng(seed)
    m = int(np.ceil(n_molecules ** (1 / 3))) + 2
    grid = np.stack(np.meshgrid(*[np.arange(m)] * 3, indexing="ij"), -1).reshape(-1, 3) * spacing
    grid -= grid.mean(0)
    sites = grid[np.argsort(np.linalg.norm(grid, axis=1), kind="stable")[:n_molecules]]
    half = np.radians(104.5) / 2
    local = np.array([[0.0, 0.0, 0.0], [0.96 * np.sin(half), 0.96 * np.cos(half), 0.0],
                      [-0.96 * np.sin(half), 0.96 * np.cos(half), 0.0]])
    pos = []
    for s in sites:
        q, r = np.linalg.qr(rng.standard_normal((3, 3)))
        pos.append(s + local @ (q * np.sign(np.diag(r))).T)
    return Atoms(["O", "H", "H"] * n_molecules, positions=np.concatenate(pos))


def _median_ms(fn, repeats: int, warmup: int, sync=None) -> tuple[float, float]:
    """(median wall ms, median CPU ms) per call."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        if sync:
            sync()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if sync:
            sync()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return 1e3 * statistics.median(wall), 1e3 * statistics.median(cpu)


def time_calculator(atoms: Atoms, calc, repeats: int, warmup: int = 3, sync=None) -> dict:
    """Median time of ``atoms.get_forces()`` with ``calc``, positions displaced (``JITTER``) before each call."""
    atoms = atoms.copy()
    atoms.calc = calc
    start = atoms.positions.copy()
    rng = np.random.default_rng(0)

    def call():
        atoms.positions = start + JITTER * rng.standard_normal(start.shape)
        atoms.get_forces()

    wall, cpu = _median_ms(call, repeats, warmup, sync)
    return {"wall_ms": wall, "cpu_ms": cpu, "repeats": repeats}


def time_batch(model, graphs, device, dtype, repeats: int, sync=None) -> dict:
    """Median time of one ``energy_and_forces`` call on a batch of ``graphs``, and per molecule."""
    batch = Batch.from_data_list(graphs).to(device)
    batch.pos = batch.pos.to(dtype)
    m = copy.deepcopy(model).to(device=device, dtype=dtype)
    wall, cpu = _median_ms(lambda: energy_and_forces(m, batch, create_graph=False), repeats, 3, sync)
    n = len(graphs)
    return {"wall_ms": wall, "cpu_ms": cpu, "wall_ms_per_molecule": wall / n, "cpu_ms_per_molecule": cpu / n,
            "molecules": n, "repeats": repeats}


def systems(quick: bool) -> dict[str, Atoms]:
    out = {}
    for name in ("ethanol", "aspirin"):
        g = load_molecules(name, "test", dtype=torch.float64)[0]
        out[name] = Atoms(numbers=g.z.numpy(), positions=g.pos.numpy())
    for k in ((1, 3) if quick else (1, 3, 10, 33, 100)):
        out[f"water_{k}"] = water_cluster(k)
    return out


def _sha256(path) -> str:
    from course_lib.data import sha256_file

    return sha256_file(Path(path))


def _rel(path) -> str:
    """A checkpoint path relative to the repository when it lies inside it, else its file name."""
    try:
        return str(Path(path).resolve().relative_to(HERE.parent))
    except ValueError:
        return Path(path).name


def load_models(args) -> dict:
    paths = {"schnet": args.schnet, "nequip_l0": args.nequip_l0, "nequip_l1": args.nequip_l1}
    models = {}
    for name, path in paths.items():
        model, payload = load_model(path, how_to_make=HOW_TO_MAKE[name])
        models[name] = {"model": model, "path": _rel(path), "sha256": _sha256(path), "config": payload["config"]}
    return models


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small systems, few repeats (pipeline check)")
    p.add_argument("--out", default=str(RESULTS), help="folder for md_speed.json")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=None, help="timed calls per case (default 30, quick 3)")
    p.add_argument("--batch", type=int, default=32, help="ethanol frames in the batched call")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--schnet", default=str(RESULTS / "schnet_ethanol.pt"))
    p.add_argument("--nequip-l0", default=str(RESULTS / "nequip_curve_l0.pt"))
    p.add_argument("--nequip-l1", default=str(RESULTS / "nequip_curve_l1.pt"))
    p.add_argument("--no-xtb", action="store_true", help="skip GFN2-xTB (tblite not installed)")
    p.add_argument("--device", default="cpu", help="comma list of devices for the learned models, e.g. cpu,cuda. "
                   + DEVICE_HELP)
    args = p.parse_args(argv)
    devices = [str(check_device(d)) for d in args.device.split(",") if d]  # fails fast, before any model is loaded
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 30)
    dtype = getattr(torch, args.dtype)
    models = load_models(args)
    res = {
        "command": " ".join(["python", "benchmarks/md_speed.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(devices=devices, load_average_start=os.getloadavg(), **{"cuda": None, **{
            k: v for d in devices for k, v in device_info(d).items() if k != "device"}}),
        "dtype": args.dtype, "repeats": repeats,
        "models": {k: {"path": v["path"], "sha256": v["sha256"], "config": v["config"]} for k, v in models.items()},
        "note": "the time of a call depends on the architecture (config) and the system, not on the weights",
        "table_vi": TABLE_VI, "systems": {},
    }
    for name, atoms in systems(args.quick).items():
        row = {"atoms": len(atoms)}
        if not args.no_xtb:
            from course_lib.simulate.molecules import xtb_calculator

            reps = max(2, repeats // 10) if len(atoms) > 100 else repeats
            row["xtb"] = {"cpu": time_calculator(atoms, xtb_calculator(), reps, warmup=1)}
        for mname, m in models.items():
            row[mname] = {}
            for dev in devices:
                row[mname][dev] = time_calculator(atoms, ModelCalculator(m["model"], device=dev, dtype=dtype),
                                                  repeats, sync=lambda d=dev: synchronize(d))
        res["systems"][name] = row
        print(f"{name:10s} {len(atoms):4d} atoms: " + ", ".join(
            f"{k} {next(iter(v.values()))['cpu_ms']:.1f} ms" for k, v in row.items() if isinstance(v, dict)),
            flush=True)
    graphs = load_molecules("ethanol", "test", dtype=torch.float64)[: args.batch]
    row = {"atoms": int(sum(g.num_nodes for g in graphs)), "molecules": len(graphs)}
    if not args.no_xtb:
        row["xtb"] = {"cpu": {**res["systems"]["ethanol"]["xtb"]["cpu"], "note": "one call per molecule"}}
        row["xtb"]["cpu"]["cpu_ms_per_molecule"] = row["xtb"]["cpu"]["cpu_ms"]
        row["xtb"]["cpu"]["wall_ms_per_molecule"] = row["xtb"]["cpu"]["wall_ms"]
    for mname, m in models.items():
        row[mname] = {}
        for dev in devices:
            row[mname][dev] = time_batch(m["model"], graphs, dev, dtype, repeats, lambda d=dev: synchronize(d))
    res["systems"]["ethanol_batch"] = row
    print(f"ethanol batch of {len(graphs)}: " + ", ".join(
        f"{k} {next(iter(v.values()))['cpu_ms_per_molecule']:.2f} ms/molecule" for k, v in row.items()
        if isinstance(v, dict)),
        flush=True)
    res["machine"]["load_average_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "md_speed.json").write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
