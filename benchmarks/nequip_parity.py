"""Mirror images in the data: NequIP with and without parity, trained on ONE conformer well of ethanol (notebook 07).

    OMP_NUM_THREADS=1 python benchmarks/nequip_parity.py              # -> results/nequip_parity.json (+ .md)
    python benchmarks/nequip_parity.py --quick --out /tmp/parity        # pipeline check (CI)
    python benchmarks/nequip_parity.py --device cuda --out /tmp/parity  # train on a GPU

Ethanol's OH group has three wells of the H-O-C-C torsion (``course_lib.observables.conformers``): gauche+
(0 < phi <= 120 deg), gauche- (the mirror image of gauche+: a reflection changes the sign of every torsion) and
trans. Protocol: ``course_lib.models.NequIP`` (l_max 1, 16 channels, 3 blocks) with ``parity=True`` (O(3):
rotations and reflections) and ``parity=False`` (SO(3): rotations only), trained on ``--n-train`` frames drawn at
random per seed (``course_lib.stats.random_subset``) from the **gauche+ frames only** of the training block of the
time split (``load_molecules(scheme="time")``, the first 7 ps of the 500 K run), validated on the gauche+ frames of
the validation block; the same seed gives both variants the same subset, initial-weight seed and batch order
(paired). Equal budgets: ``--steps`` Adam steps of batch 5 (lr 0.01, halved on validation plateaus), the
per-atom energy + force loss of ``nequip_learning_curve.py``, no early stopping, best-validation weights tested.
Test sets (all from frames the models never saw):

- ``gplus_test``: the gauche+ frames of the test block (a later stretch of the run after a 250 fs gap):
  the well seen in training (interpolation in conformation space);
- ``gminus_test``: the gauche- frames of the test block: the mirror-image well, never seen (generalisation by
  mirror symmetry);
- ``mirror_gplus_test``: the mirror images x -> -x of the ``gplus_test`` frames (labels: the same energy, forces
  with the x component negated: exact xTB labels, since the physics has no handedness). The O(3) model must
  give every mirror image the energy of its original: asserted to round-off (float64, < 1e-8 eV);
- ``ood_1000K`` (and its gauche+ part ``ood_1000K_gplus``): the independent 1000 K run
  (``load_molecules_ood``): a different distribution (generalisation out of distribution).

Also: a rigid scan of the torsion (H of the OH turned about the C-O bond of ``ase.build.molecule("CH3CH2OH")``,
a mirror-symmetric trans geometry, so E(phi) = E(-phi) exactly) with xTB and every model, and the
out-of-distribution test of the **shipped** ethanol models (``ood_shipped``): the SchNet committee
(``committee_s<k>.pt``, 3 seeds, trained on 200 frames of the random split) and the pilot NequIP models
(``nequip_curve_l<l>.pt``, one seed each, trained on frames of the random split): error on the random split's
test frames (interpolation: ~10 fs from training frames) vs on the 1000 K frames (generalisation).

Writes ``nequip_parity.json`` (command, date, machine, protocol, per-seed rows, summaries mean ± s.e., paired
differences SO(3) - O(3) per set) and ``nequip_parity.md`` after every run (resumable: finished (variant, seed)
runs of the same protocol are kept), and the seed-0 models as ``nequip_parity_<o3|so3>.pt``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from course_lib import symmetry as S
from course_lib.datasets import load_molecules, load_molecules_ood
from course_lib.losses import molecule_errors, per_atom_energy_force_loss
from course_lib.models.nequip import NequIP
from course_lib.observables import ETHANOL_HOCC, conformers, dihedral_angles
from course_lib.stats import difference, plateau, random_subset, summarize
from course_lib.train import fit, load_model, save_checkpoint
from course_lib.utils import DEVICE_HELP, check_device, device_info, machine_info, seed_everything

HERE = Path(__file__).resolve().parent
BATCH = 5
LR = 0.01
VARIANTS = {"o3": True, "so3": False}  # name -> parity
SETS = {
    "gplus_test": "gauche+ frames of the test block (the well seen in training; interpolation)",
    "gminus_test": "gauche- frames of the test block (the mirror-image well, never seen; generalisation by "
                   "mirror symmetry)",
    "mirror_gplus_test": "mirror images x -> -x of the gplus_test frames (exact labels; gauche- geometries)",
    "ood_1000K": "the independent 1000 K run, all 200 frames (out of distribution; generalisation)",
    "ood_1000K_gplus": "the gauche+ frames of the 1000 K run (the trained well, hotter)",
}
MIRROR = S.orthogonal(S.reflection_matrix([1.0, 0.0, 0.0]), "mirror x -> -x")
MIRROR_TOL_EV = 1e-8
SHIPPED = {"committee_s0.pt": "SchNet committee member, seed 0", "committee_s1.pt": "SchNet committee member, seed 1",
           "committee_s2.pt": "SchNet committee member, seed 2", "nequip_curve_l0.pt": "NequIP l_max=0 (pilot)",
           "nequip_curve_l1.pt": "NequIP l_max=1 (pilot)", "nequip_curve_l2.pt": "NequIP l_max=2 (pilot)"}


def by_conformer(frames) -> np.ndarray:
    """The rotamer label (gauche+, gauche-, trans) of every frame, from the H-O-C-C torsion."""
    pos = np.stack([g.pos.double().numpy() for g in frames])
    return conformers(dihedral_angles(pos, *ETHANOL_HOCC))


def make_sets(quick: bool) -> tuple[list, list, dict]:
    """(gauche+ training pool, gauche+ validation frames, {test set name: frames})."""
    tr, va, te = (load_molecules("ethanol", s, scheme="time") for s in ("train", "val", "test"))
    ood = load_molecules_ood("ethanol")
    pick = {name: [g for g, c in zip(frames, by_conformer(frames)) if c == well]
            for name, frames, well in (("pool", tr, "gauche+"), ("val", va, "gauche+"), ("gplus_test", te, "gauche+"),
                                       ("gminus_test", te, "gauche-"), ("ood_1000K_gplus", ood, "gauche+"))}
    tests = {"gplus_test": pick["gplus_test"], "gminus_test": pick["gminus_test"],
             "mirror_gplus_test": [MIRROR(g) for g in pick["gplus_test"]], "ood_1000K": ood,
             "ood_1000K_gplus": pick["ood_1000K_gplus"]}
    if quick:
        tests = {k: v[:8] for k, v in tests.items()}
        pick["val"] = pick["val"][:8]
    return pick["pool"], pick["val"], tests


def mirror_energy_gap(model, frames) -> float:
    """max |E(frame) - E(mirror image)| (eV) over ``frames``, computed in float64 on the CPU."""
    m64 = copy.deepcopy(model).cpu().double().eval()
    b = Batch.from_data_list([g.clone() for g in frames])
    b.pos = b.pos.double()
    bm = MIRROR(b)
    with torch.no_grad():
        return float((m64(b) - m64(bm)).abs().max())


def torsion_scan(step_deg: float = 10.0) -> dict:
    """A rigid scan of ethanol's H-O-C-C torsion from the mirror-symmetric trans geometry of ASE, with xTB energies
    (None without tblite); ``frames`` are graphs for the models, ``dihedral_deg`` the angle of each frame measured
    by :func:`course_lib.observables.dihedral_angles` (the frames come in the order 180 ... -180 degrees)."""
    from ase.build import molecule
    from torch_geometric.data import Data

    settings = np.arange(-180.0, 180.0 + step_deg / 2, step_deg)
    base = molecule("CH3CH2OH")
    frames, xtb = [], []
    try:
        from course_lib.simulate.molecules import xtb_calculator
        calc = xtb_calculator()
    except ImportError:
        calc = None
    for phi in settings:
        atoms = base.copy()
        atoms.set_dihedral(*ETHANOL_HOCC, phi, mask=[i == ETHANOL_HOCC[0] for i in range(len(atoms))])
        frames.append(Data(z=torch.as_tensor(atoms.numbers, dtype=torch.long),
                           pos=torch.as_tensor(atoms.positions, dtype=torch.float32)))
        if calc is not None:
            atoms.calc = calc
            xtb.append(float(atoms.get_potential_energy()))
    # the angle as course_lib.observables measures it (ase's set_dihedral moving atom 3 turns the other way)
    angles = dihedral_angles(np.stack([f.pos.double().numpy() for f in frames]), *ETHANOL_HOCC)
    return {"dihedral_deg": np.round(angles, 6).tolist(), "xtb_energy_eV": xtb or None, "frames": frames}


def scan_energies(model, frames) -> list[float]:
    m = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        return m(Batch.from_data_list(frames)).double().tolist()


def train_one(variant: str, seed: int, pool, val, args, device):
    """Train one model; return (model, history)."""
    seed_everything(seed)
    train = [pool[int(i)] for i in random_subset(range(len(pool)), args.n_train, seed)]
    model = NequIP(l_max=args.lmax, parity=VARIANTS[variant], hidden=args.features, num_layers=args.layers)
    model.fit_energy_scale(train)
    epoch_steps = 2 if args.quick else 100
    reps = max(1, -(-epoch_steps * BATCH // len(train)))
    tl = DataLoader(list(train) * reps, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(seed))
    epochs = max(2, round(args.steps / len(tl)))
    hist = fit(model, tl, DataLoader(val, batch_size=50), per_atom_energy_force_loss, epochs=epochs, lr=LR,
               patience=None, progress=not args.no_progress, needs_grad_eval=True, desc=f"{variant} seed {seed}",
               device=device)
    hist.steps = len(hist.train) * len(tl)
    return model, hist


def evaluate(model, tests: dict, device) -> dict:
    return {name: molecule_errors(model, DataLoader(frames, batch_size=50), device=device)
            for name, frames in tests.items()}


def _s(values) -> dict:
    s = summarize(values)
    return {"mean": s.mean, "se": s.se, "n": s.n}


def summarise(runs: list, seeds: list) -> tuple[dict, dict]:
    """Per variant and set: mean ± s.e. over seeds; paired differences so3 - o3 and gminus - gplus per seed."""
    row = {(r["variant"], r["seed"]): r for r in runs}
    done = [s for s in seeds if all((v, s) in row for v in VARIANTS)]
    summary, paired = {}, {}
    for v in VARIANTS:
        vs = [row[(v, s)] for s in seeds if (v, s) in row]
        summary[v] = {t: {k: _s([r["errors"][t][k] for r in vs]) for k in ("energy_mae_meV", "force_mae_meV_A")}
                      for t in SETS} if vs else {}
        if vs:
            summary[v]["mirror_energy_gap_eV_max"] = max(r["mirror_energy_gap_eV"] for r in vs)
            paired[f"{v}: gminus_test - gplus_test"] = {
                k: _d([row[(v, s)]["errors"]["gminus_test"][k] for s in seeds if (v, s) in row],
                      [row[(v, s)]["errors"]["gplus_test"][k] for s in seeds if (v, s) in row])
                for k in ("energy_mae_meV", "force_mae_meV_A")}
    if done:
        for t in SETS:
            paired[f"so3 - o3: {t}"] = {k: _d([row[("so3", s)]["errors"][t][k] for s in done],
                                              [row[("o3", s)]["errors"][t][k] for s in done])
                                        for k in ("energy_mae_meV", "force_mae_meV_A")}
    return summary, paired


def _d(a, b) -> dict:
    if len(a) < 2:
        return {"mean": float(np.mean(np.subtract(a, b))) if a else None, "se": None, "n": len(a)}
    d = difference(a, b, paired=True)
    return {"mean": d.mean, "se": d.se, "n": d.n}


def ood_shipped(quick: bool) -> list:
    """Test errors of the shipped ethanol models on the random split's test frames and on the 1000 K frames."""
    test = load_molecules("ethanol", "test")[: 8 if quick else None]
    ood = load_molecules_ood("ethanol")[: 8 if quick else None]
    rows = []
    for name, what in SHIPPED.items():
        model, _ = load_model(HERE / "results" / name)
        errs = {k: molecule_errors(model, DataLoader(frames, batch_size=50))
                for k, frames in (("random_test", test), ("ood_1000K", ood))}
        rows.append({"checkpoint": name, "model": what, **errs})
    return rows


def markdown(res: dict) -> str:
    def f(x):
        return "–" if not x or x.get("se") is None else f"{x['mean']:.1f} ± {x['se']:.1f}"
    lines = ["# NequIP O(3) vs SO(3) trained on gauche+ ethanol only", "", f"`{res['command']}` ({res['date']}); "
             f"{res['protocol']['steps']} steps of batch {BATCH}, n = {res['protocol']['n_train']} gauche+ frames "
             f"per seed, seeds {res['seeds_done']}.", "",
             "| test set | O(3) force MAE (meV/Å) | SO(3) force MAE | SO(3) − O(3) (paired) | O(3) energy MAE (meV) "
             "| SO(3) energy MAE | SO(3) − O(3) |", "|---|---|---|---|---|---|---|"]
    for t in SETS:
        o, s = res["summary"].get("o3", {}).get(t, {}), res["summary"].get("so3", {}).get(t, {})
        d = res["paired_differences"].get(f"so3 - o3: {t}", {})
        lines.append(f"| {t} | {f(o.get('force_mae_meV_A'))} | {f(s.get('force_mae_meV_A'))} | "
                     f"{f(d.get('force_mae_meV_A'))} | {f(o.get('energy_mae_meV'))} | {f(s.get('energy_mae_meV'))} | "
                     f"{f(d.get('energy_mae_meV'))} |")
    lines += ["", "Shipped models, force MAE (meV/Å) / energy MAE (meV): random-split test (interpolation) vs the "
              "1000 K run (generalisation out of distribution):", "",
              "| model | random test | 1000 K |", "|---|---|---|"]
    for r in res.get("ood_shipped", []):
        lines.append(f"| {r['model']} | {r['random_test']['force_mae_meV_A']:.1f} / "
                     f"{r['random_test']['energy_mae_meV']:.1f} | {r['ood_1000K']['force_mae_meV_A']:.1f} / "
                     f"{r['ood_1000K']['energy_mae_meV']:.1f} |")
    return "\n".join(lines) + "\n"


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default=None, help="comma-separated (default 0,1,2,3,4; --quick: 0)")
    p.add_argument("--n-train", type=int, default=None, help="gauche+ training frames per seed (default 100)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 2000)")
    p.add_argument("--lmax", type=int, default=1)
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="tiny sets and steps (pipeline check)")
    p.add_argument("--out", default=None, help="default: benchmarks/results/ (--quick: a temporary folder)")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2,3,4")).split(",")]
    args.n_train = args.n_train or (10 if args.quick else 100)
    args.steps = args.steps or (6 if args.quick else 2000)
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    device = check_device(args.device)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out) if args.out else (Path(tempfile.gettempdir()) / "course_nequip_parity_quick" if args.quick
                                           else HERE / "results")
    out.mkdir(parents=True, exist_ok=True)
    pool, val, tests = make_sets(args.quick)
    protocol = {"molecule": "ethanol", "training_pool": "gauche+ frames of the time split's training block",
                "pool_size": len(pool), "validation": f"{len(val)} gauche+ frames of the validation block",
                "n_train": args.n_train, "steps": args.steps, "batch_size": BATCH, "lr": LR, "l_max": args.lmax,
                "features": args.features, "layers": args.layers, "variants": {k: f"parity={v}" for k, v in
                                                                                VARIANTS.items()},
                "loss": "per-atom energy MSE + force-component MSE (weights 1, 1)",
                "subsets": "course_lib.stats.random_subset(pool, n, seed): the same subset for both variants",
                "selection": "best validation loss (no early stopping)", "conformers": "course_lib.observables."
                "conformers of the H-O-C-C torsion: trans |phi| > 120 deg, else gauche+ (phi >= 0) / gauche-",
                "mirror_check": f"float64, max |E - E(mirror)| < {MIRROR_TOL_EV:g} eV asserted for O(3)"}
    path = out / "nequip_parity.json"
    old = json.loads(path.read_text()) if path.exists() and not args.quick else {}
    runs = [r for r in old.get("runs", []) if old.get("protocol") == protocol]
    scan = torsion_scan()
    res = {"command": "python benchmarks/nequip_parity.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": machine_info(**device_info(device)), "protocol": protocol, "seeds": args.seeds,
           "sets": {k: {"frames": len(v), "measures": SETS[k]} for k, v in tests.items()},
           "scan": {"dihedral_deg": scan["dihedral_deg"], "xtb_energy_eV": scan["xtb_energy_eV"]},
           "ood_shipped": ood_shipped(args.quick), "runs": runs}
    for seed in args.seeds:
        for variant in VARIANTS:
            if any(r["variant"] == variant and r["seed"] == seed for r in runs):
                print(f"{variant} seed {seed}: kept from {path.name}", flush=True)
                continue
            model, hist = train_one(variant, seed, pool, val, args, device)
            gap = mirror_energy_gap(model, tests["gplus_test"])
            if VARIANTS[variant] and not gap < MIRROR_TOL_EV:
                raise AssertionError(f"O(3) model, seed {seed}: E(frame) - E(mirror) = {gap:.2e} eV, not round-off")
            row = {"variant": variant, "parity": VARIANTS[variant], "seed": seed, "errors": evaluate(model, tests,
                                                                                                   device),
                   "mirror_energy_gap_eV": gap, "scan_energy_eV": scan_energies(model, scan["frames"]),
                   "val_curve": hist.val, "best_epoch": hist.best_epoch, "epochs_run": len(hist.train),
                   "steps_run": hist.steps, "plateau": plateau(hist.val) if len(hist.val) >= 5 else None,
                   "seconds": hist.seconds}
            runs.append(row)
            e = row["errors"]
            print(f"{variant} seed {seed}: force MAE " + ", ".join(f"{t} {e[t]['force_mae_meV_A']:.1f}" for t in e)
                  + f" meV/A; mirror gap {gap:.1e} eV ({hist.seconds:.0f} s)", flush=True)
            if seed == 0:
                save_checkpoint(out / f"nequip_parity_{variant}.pt", model.cpu(), config=model.config,
                                metrics={t: e[t]["force_mae_meV_A"] for t in e})
            write(res, runs, args.seeds, path)
    write(res, runs, args.seeds, path)
    res["machine"]["load_average_end"] = os.getloadavg()
    path.write_text(json.dumps(res, indent=2) + "\n")
    return res


def write(res: dict, runs: list, seeds: list, path: Path) -> None:
    res["runs"] = sorted(runs, key=lambda r: (r["seed"], r["variant"]))
    res["seeds_done"] = sorted({r["seed"] for r in runs if r["seed"] in seeds and
                                all(any(q["variant"] == v and q["seed"] == r["seed"] for q in runs)
                                    for v in VARIANTS)})
    res["summary"], res["paired_differences"] = summarise(runs, seeds)
    path.write_text(json.dumps(res, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(res))


if __name__ == "__main__":
    main()
