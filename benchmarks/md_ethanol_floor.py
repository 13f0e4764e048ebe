"""The sample-size matched noise floor of notebook 08's 500 K observables (issue 18, item 6).

    python benchmarks/md_ethanol_floor.py                          # ~25 min on 1 shared thread
    python benchmarks/md_ethanol_floor.py --quick --out /tmp/floor  # pipeline check (CI), ~10 s

``md_ethanol.py nvt`` measures each learned model by one *ensemble* (8 replicas x 2.5 ps after 1 ps of
equilibration, velocity seeds 0-7, Langevin noise seed 0) against the 10 ps xTB data set, and its noise floor
compares the two 5 ps halves of that one xTB trajectory: a different sample size and only one draw. This
script measures the floor the models have to be compared with: GFN2-xTB itself run through the same harness,

- ``--xtb-ensembles`` (default 6) ensembles of ``--replicas`` (8) xTB replicas, each replica one molecule from
  the same start (the first test frame) with its own Maxwell-Boltzmann velocities and Langevin noise (seed
  ``1000 + 8 e + r`` for replica r of ensemble e: distinct from the seed 0 of the reference trajectory and from
  the models' seeds), ``--equil-ps`` (1) of equilibration, then ``--nvt-ps`` (2.5) of sampling, a frame every
  20 steps; dt 0.5 fs, friction 0.01/fs, 500 K: the protocol of ``md_ethanol.py nvt``. (The models simulate
  their 8 molecules 50 A apart in one system, which a learned model with a cutoff does exactly; xTB has no
  cutoff, so its replicas run one molecule at a time. Both give independent Langevin runs.)
- ``committed_nvt``: the models' ensembles of the committed ``--nvt`` file (``md_ethanol_nvt.json``), each
  with ``floor_matched``, the distances of the xTB ensembles cut to the model's frames per replica (a model run
  stopped by a broken bond keeps what it sampled before, so its ensemble can be shorter), and ``subsets``: the
  same distances for ``--subsets`` random 8-replica subsets of all xTB replicas (cut likewise), the sample-size
  matched block bootstrap (replicas as blocks), whose 95th percentile and the fraction of subsets at least as far
  from the reference as the model are in ``summary_committed_nvt``.
- ``--model-ensembles`` (default 0: none, the budget of a shared 2-core machine) more ensembles per learned model,
  with ``md_ethanol.py nvt``'s own code path and seeds ``8 e + r`` (ensemble 0 repeats the committed run's seeds);
  an ensemble whose molecule breaks during the equilibration has no samples (``failed_during``).

Each ensemble is measured against the whole 10 ps reference exactly as the models are (pooled samples,
``md_ethanol.compare``: Wasserstein-1 and Jensen-Shannon distances of h(r), the C-O bond and the H-O-C-C
dihedral). The xTB ensembles' distances are the distribution of that distance for a method that samples
exactly xTB's distribution at the models' sample size (the null distribution): ``summary`` gives, per model,
observable and distance, the model's value, the matched floor's mean and standard deviation over the xTB
ensembles and ``z`` = (model - floor mean) / floor sd. Also stored: the old half-vs-half floor, and the distance
of every single replica (2.5 ps).

Writes ``md_ethanol_xtb_floor.json`` (and the xTB positions, float32, ``md_ethanol_xtb_floor.npz``, from which
the distances are computed) into ``--out`` after every ensemble; an interrupted call resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.md.langevin import Langevin

sys.path.insert(0, str(Path(__file__).resolve().parent))
import md_ethanol as M  # noqa: E402  (the harness of notebook 08's model runs)

from course_lib import observables as O  # noqa: E402
from course_lib.md import run_md, thermalize  # noqa: E402
from course_lib.stats import difference, summarize  # noqa: E402

FLOOR_SEED = 1000
OBSERVABLES = ("distances", "co_bond", "dihedral")


def xtb_replica(seed: int, equil_steps: int, sample_steps: int) -> np.ndarray:
    """One xTB molecule through the nvt protocol: positions [F, 9, 3] of the sampling stage."""
    from course_lib.simulate.molecules import xtb_calculator

    atoms = M.start_atoms()
    bonds = O.find_bonds(atoms.numbers, atoms.positions)
    thermalize(atoms, M.TEMPERATURE, seed=seed)
    atoms.calc = xtb_calculator()
    dyn = Langevin(atoms, M.DT_FS * units.fs, temperature_K=M.TEMPERATURE, friction=M.FRICTION / units.fs,
                   fixcm=False, rng=np.random.RandomState(seed))
    run_md(dyn, equil_steps, stride=1000, max_energy_change=None, bonds=bonds)
    return run_md(dyn, sample_steps, stride=20, max_energy_change=None, bonds=bonds).positions


def model_ensemble(make, k: int, seed: int, equil_steps: int, sample_steps: int) -> tuple[np.ndarray, dict]:
    """``md_ethanol.part_nvt``'s run of one model: frames [K, F, 9, 3] (up to a failure) and a row."""
    n = 9
    base = M.start_atoms()
    bonds1 = O.find_bonds(base.numbers, base.positions)
    bonds = [(a + m * n, b + m * n) for m in range(k) for a, b in bonds1]
    atoms = M.replicas(base, k, seed=seed)
    atoms.calc = make()
    dyn = Langevin(atoms, M.DT_FS * units.fs, temperature_K=M.TEMPERATURE, friction=M.FRICTION / units.fs,
                   fixcm=False, rng=np.random.RandomState(seed))
    row = {"seed": seed, "velocity_seeds": [seed + r for r in range(k)]}
    try:
        run_md(dyn, equil_steps, stride=1000, max_energy_change=None, bonds=bonds)
    except Exception as err:  # nothing sampled yet (md_ethanol.py nvt would take the equilibration frames)
        row.update({"failed": str(err), "failed_during": "equilibration"})
        return np.zeros((k, 0, n, 3)), row
    try:
        rec = run_md(dyn, sample_steps, stride=20, max_energy_change=None, bonds=bonds)
    except Exception as err:  # keep what was sampled before an instability, as md_ethanol.py nvt does
        row.update({"failed": str(err), "failed_during": "sampling"})
        rec = getattr(err, "record", None)
    if rec is None or len(rec.positions) < 2:
        return np.zeros((k, 0, n, 3)), row
    row["mean_temperature_K"] = float(rec.temperature.mean())
    return M._replica_blocks(rec.positions, n).transpose(1, 0, 2, 3), row


def pooled(frames: np.ndarray) -> dict:
    """Observables of an ensemble [K, F, 9, 3], all replicas pooled."""
    return M.observables(frames.reshape(-1, *frames.shape[-2:]))


def measure(ref: dict, frames: np.ndarray) -> dict:
    """Pooled and per-replica distances of an ensemble [K, F, 9, 3] to the reference observables."""
    return {"frames_per_replica": int(frames.shape[1]), "vs_reference": M.compare(ref, pooled(frames)),
            "per_replica": [M.compare(ref, M.observables(f)) for f in frames],
            "co_bond_mean_A": float(pooled(frames)["co_bond"].mean())}


def committed(body: dict, ref: dict, xtb: list, nvt_path: Path) -> dict:
    """The models of the committed nvt run with their matched floors (empty when the protocols differ)."""
    nvt = json.loads(nvt_path.read_text())["nvt"]
    same = {"temperature_K": "temperature_K", "dt_fs": "dt_fs", "friction_per_fs": "friction_per_fs",
            "replicas": "replicas", "equil_ps": "equil_ps", "sample_ps_per_replica": "sample_ps_per_replica"}
    if any(nvt.get(a) != body.get(b) for a, b in same.items()):
        print(f"{nvt_path.name}: another protocol, not compared", flush=True)
        return {}
    out = {}
    for name, row in nvt["models"].items():
        if "vs_reference" in row:
            f = row["frames_per_replica"]
            out[name] = {"vs_reference": row["vs_reference"], "frames_per_replica": f, "failed": row.get("failed"),
                         "floor_matched": [M.compare(ref, pooled(x[:, :f])) for x in xtb],
                         "subsets": replica_subsets(ref, xtb, body["replicas"], f, body["subsets"])}
    return out


def replica_subsets(ref: dict, xtb: list, k: int, frames: int, n_subsets: int, seed: int = 0) -> list:
    """Distances of ``n_subsets`` random ``k``-replica subsets of all xTB replicas (cut to ``frames``).

    The sample-size matched block bootstrap: each subset is a sample of exactly the models' size (replicas are
    the blocks, drawn without replacement); subsets overlap, so they scatter somewhat less than independent
    ensembles would."""
    pool = np.concatenate([x[:, :frames] for x in xtb])
    rng = np.random.default_rng(seed)
    return [M.compare(ref, pooled(pool[np.sort(rng.choice(len(pool), k, replace=False))])) for _ in range(n_subsets)]


def _committed_summary(body: dict) -> dict:
    out = {}
    for name, row in body.get("committed_nvt", {}).items():
        out[name] = {}
        for obs in OBSERVABLES:
            for metric in ("w1", "js"):
                floor = [f[obs][metric] for f in row["floor_matched"]]
                value = row["vs_reference"][obs][metric]
                mean, sd = float(np.mean(floor)), float(np.std(floor, ddof=1)) if len(floor) > 1 else float("nan")
                sub = np.array([f[obs][metric] for f in row.get("subsets", [])])
                out[name][f"{obs}_{metric}"] = {
                    "model": value, "floor": floor, "floor_mean": mean, "floor_sd": sd,
                    "z": (value - mean) / sd if sd > 0 else None,
                    "subsets_q95": float(np.quantile(sub, 0.95)) if sub.size else None,
                    "subsets_fraction_at_least_model": float(np.mean(sub >= value)) if sub.size else None}
    return out


def summary(body: dict) -> dict:
    """Per model, observable and distance: the ensembles' values, the matched floors, model minus floor."""
    out = {}
    for name, mrow in body["models"].items():
        ens = [e for e in mrow["ensembles"] if "vs_reference" in e]
        if not ens:
            continue
        out[name] = {}
        for obs in OBSERVABLES:
            for metric in ("w1", "js"):
                model = [e["vs_reference"][obs][metric] for e in ens]
                # one floor value per xTB ensemble, averaged over the model ensembles' lengths
                floor = np.mean([[f[obs][metric] for f in e["floor_matched"]] for e in ens], axis=0).tolist()
                d = difference(model, floor) if len(model) > 1 and len(floor) > 1 else None
                out[name][f"{obs}_{metric}"] = {
                    "model": model, "floor": floor, "model_mean": float(np.mean(model)),
                    "floor_mean": float(np.mean(floor)),
                    "model_minus_floor": None if d is None else {"mean": d.mean, "se": d.se}}
    return out


def _floor_stats(body: dict) -> dict:
    vals = {f"{obs}_{m}": [e["vs_reference"][obs][m] for e in body["xtb"]] for obs in OBSERVABLES
            for m in ("w1", "js")}
    return {k: (lambda s: {"mean": s.mean, "se": s.se, "n": s.n})(summarize(v)) for k, v in vals.items()
            if len(v) > 1}


def run_xtb(args, body, ref, positions, save):
    k, (eq, smp) = args.replicas, args.steps
    for e in range(args.xtb_ensembles):
        key = f"xtb_e{e}"
        if key not in positions:
            seeds = [FLOOR_SEED + k * e + r for r in range(k)]
            t0, c0 = time.perf_counter(), time.process_time()
            positions[key] = np.stack([xtb_replica(s, eq, smp) for s in seeds]).astype(np.float32)
            body["xtb_timing"][key] = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
        if e >= len(body["xtb"]):
            seeds = [FLOOR_SEED + k * e + r for r in range(k)]
            body["xtb"].append({"ensemble": e, "velocity_and_noise_seeds": seeds,
                                **measure(ref, positions[key].astype(np.float64)), **body["xtb_timing"].get(key, {})})
            v = body["xtb"][-1]["vs_reference"]
            print(f"xTB ensemble {e}: W1 h(r) {v['distances']['w1']:.4f} A, C-O {v['co_bond']['w1']:.4f} A, "
                  f"dihedral {v['dihedral']['w1']:.1f} deg", flush=True)
            save()


def run_models(args, body, ref, positions, save):
    k, (eq, smp) = args.replicas, args.steps
    xtb = [positions[f"xtb_e{e}"].astype(np.float64) for e in range(len(body["xtb"]))]
    calcs = M.calculators(args, args.models)
    for e in range(args.model_ensembles):
        for name, (make, metrics) in calcs.items():
            mrow = body["models"].setdefault(name, {"metrics": metrics, "ensembles": []})
            if e < len(mrow["ensembles"]):
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            frames, row = model_ensemble(make, k, args.seed + k * e, eq, smp)
            if frames.shape[1] > 1:
                f = frames.shape[1]
                row.update(measure(ref, frames))
                row["floor_matched"] = [M.compare(ref, pooled(x[:, :f])) for x in xtb]
            row.update({"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0})
            mrow["ensembles"].append(row)
            v = row.get("vs_reference")
            print(f"{name} ensemble {e}: " + (f"W1 h(r) {v['distances']['w1']:.4f} A, C-O {v['co_bond']['w1']:.4f} "
                                              f"A, dihedral {v['dihedral']['w1']:.1f} deg" if v else "no frames")
                  + (f"; {row['failed'][:60]}" if "failed" in row else ""), flush=True)
            save()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny runs (pipeline check)")
    p.add_argument("--out", default=None, help="default: benchmarks/results/ (--quick: a temporary folder)")
    p.add_argument("--seed", type=int, default=0, help="the models' seed of ensemble 0 (md_ethanol.py nvt's)")
    p.add_argument("--replicas", type=int, default=None, help="replicas per ensemble (default 8, quick 2)")
    p.add_argument("--xtb-ensembles", type=int, default=None, help="default 6, quick 2")
    p.add_argument("--model-ensembles", type=int, default=None, help="default 0, quick 1")
    p.add_argument("--subsets", type=int, default=None, help="random replica subsets per committed model "
                   "(default 200, quick 5)")
    p.add_argument("--nvt", default=str(M.RESULTS / "md_ethanol_nvt.json"), help="the committed models' run")
    p.add_argument("--equil-ps", type=float, default=None, help="default 1, quick 0.005")
    p.add_argument("--nvt-ps", type=float, default=None, help="sampling per replica (default 2.5, quick 0.02)")
    p.add_argument("--models", default="schnet,nequip_l0,nequip_l1")
    p.add_argument("--schnet", default=str(M.RESULTS / "schnet_ethanol.pt"))
    p.add_argument("--nequip-l0", dest="nequip_l0", default=str(M.RESULTS / "nequip_curve_l0.pt"))
    p.add_argument("--nequip-l1", dest="nequip_l1", default=str(M.RESULTS / "nequip_curve_l1.pt"))
    args = p.parse_args(argv)
    args.device = "cpu"
    q = args.quick
    args.replicas = args.replicas or (2 if q else 8)
    args.xtb_ensembles = args.xtb_ensembles or (2 if q else 6)
    args.model_ensembles = args.model_ensembles if args.model_ensembles is not None else (1 if q else 0)
    equil = args.equil_ps if args.equil_ps is not None else (0.005 if q else 1.0)
    nvt = args.nvt_ps or (0.02 if q else 2.5)
    args.steps = (int(round(equil * 1000 / M.DT_FS)), int(round(nvt * 1000 / M.DT_FS)))
    args.models = [m for m in args.models.split(",") if m]
    out = Path(args.out) if args.out else (Path("/tmp/course_md_floor_quick") if q else M.RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    jpath, npath = out / "md_ethanol_xtb_floor.json", out / "md_ethanol_xtb_floor.npz"
    protocol = {"temperature_K": M.TEMPERATURE, "dt_fs": M.DT_FS, "friction_per_fs": M.FRICTION,
                "replicas": args.replicas, "equil_ps": equil, "sample_ps_per_replica": nvt, "frame_every_steps": 20}
    body = {**protocol, "xtb_seeds": f"{FLOOR_SEED} + {args.replicas} e + r (velocities and Langevin noise of "
            "replica r of ensemble e; one molecule per run)", "model_seeds": f"{args.seed} + {args.replicas} e "
            "(+ r for the velocities of replica r; md_ethanol.py nvt's code path)", "edges": None,
            "subsets": args.subsets or (5 if q else 200), "xtb": [], "xtb_timing": {}, "models": {}}
    positions = {}
    if jpath.exists() and not q:  # resume: same protocol
        old = json.loads(jpath.read_text())["floor"]
        if all(old.get(k) == v for k, v in protocol.items()) and npath.exists():
            body.update({k: old[k] for k in ("xtb", "xtb_timing", "models")})
            positions = dict(np.load(npath))
    ref_pos = M.reference_positions()
    ref = M.observables(ref_pos)
    half = len(ref_pos) // 2
    body["edges"] = {k: v.tolist() for k, v in M.EDGES.items()}
    body["reference"] = {"what": "the xTB ethanol data set (all 1000 frames, 10 ps, seed 0)", "frames": len(ref_pos),
                         "half_vs_half": M.compare(M.observables(ref_pos[:half]), M.observables(ref_pos[half:]))}
    res = {"command": " ".join(["python", "benchmarks/md_ethanol_floor.py", *(argv if argv is not None
                                                                              else sys.argv[1:])]),
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": M.machine("cpu"),
           "checkpoints": {k: {"path": M._rel(getattr(args, k)), "sha256": M._sha256(getattr(args, k))}
                           for k in args.models}}

    def save():
        body["floor"] = _floor_stats(body)
        body["summary"] = summary(body)
        body["summary_committed_nvt"] = _committed_summary(body)
        res["machine"]["load_average_end"] = os.getloadavg()
        np.savez_compressed(npath, **positions)
        jpath.write_text(json.dumps({**res, "floor": body}, indent=1) + "\n")

    run_xtb(args, body, ref, positions, save)
    xtb = [positions[f"xtb_e{e}"].astype(np.float64) for e in range(len(body["xtb"]))]
    if Path(args.nvt).exists():
        body["committed_nvt"] = committed(body, ref, xtb, Path(args.nvt))
        save()
    run_models(args, body, ref, positions, save)
    save()
    return {**res, "floor": body}


if __name__ == "__main__":
    main()
