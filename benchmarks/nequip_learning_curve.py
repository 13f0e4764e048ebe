"""The data-efficiency experiment of the NequIP paper on the course's xTB ethanol data (notebook 07).

    python benchmarks/nequip_learning_curve.py --lmax 0            # one process per l_max (run them in parallel)
    python benchmarks/nequip_learning_curve.py --lmax 1
    python benchmarks/nequip_learning_curve.py --lmax 2
    python benchmarks/nequip_learning_curve.py --lmax 0 --quick --out /tmp/lc   # pipeline check (CI)
    python benchmarks/nequip_learning_curve.py --aggregate     # -> nequip_curve_summary.{json,md}
    python benchmarks/nequip_learning_curve.py --lmax 1 --device cuda --out /tmp/lc   # train on the GPU
    python benchmarks/nequip_learning_curve.py --lmax 1 --sizes 25,400 --steps 6000 \
        --out benchmarks/results/nequip_curve_6000steps --no-checkpoint     # a budget check (benchmarks/README.md)

For each ``l_max`` it trains ``course_lib.models.NequIP`` (16 features, 3 blocks) on n frames drawn at random
(``course_lib.stats.random_subset``, nested, a different subset per ``--seed``) from the training pool of the
ethanol split ``--split`` (``time``, the default: train pool = the first 7 ps, validation and test = later blocks
after 250 fs gaps, so the test error measures generalisation; ``random``: the older random split, whose test frames
are ~10 fs from training frames, an interpolation error), n = 25, 100, 400 by default (the budget of a shared 2-core
machine), with the
energy+force loss of the official configs (per-atom energy MSE + force-component MSE, weights 1 and 1),
batch size 5, Adam with learning rate 0.01 halved on validation plateaus, and the same number of
optimizer steps for every size (2000; small sets are repeated so that an epoch has >= 100 steps, large
sets get at least 30 passes). No early stopping: the best weights on the 100 validation frames are
tested on the test frames (force and energy MAE); every run stores its validation curve and
``course_lib.stats.plateau`` of it. Writes ``nequip_curve_l<l_max>.json`` (seed 0; other seeds
``nequip_curve_l<l_max>_s<seed>.json``) into
``--out`` (default ``benchmarks/results/``) after every run (an interrupted call resumes), with the
command, the thread count and the load average. ``--device``: ``cpu`` (the default; the committed results are CPU
results) or ``cuda``; recorded in ``machine``, and a resumed call keeps only runs made on the same device.
``--save-checkpoint`` also saves the seed-0 model of the largest
set as ``nequip_curve_time_l<l_max>.pt``. (The shipped ``nequip_curve_l<l_max>.pt`` are the older pilot models,
one seed trained on the first 400 frames of the random split, whose runs are kept in
``results/nequip_curve_pilot/``: notebooks 07 section 12, 08 and 10 and the MD and vibration benchmarks use them,
and their results were made with them, so the learning-curve runs do not overwrite them.)

The paper's claim (Batzner et al., Nat. Commun. 13, 2453 (2022), the learning curves of its data-efficiency
section): l >= 1 makes the learning curve *steeper* (a more negative slope of log force-MAE vs log training-set
size) than l = 0.

``--aggregate`` reads every ``nequip_curve_l<l>[_s<seed>].json`` of ``--out`` made with the time split and
writes ``nequip_curve_summary.json`` and ``.md``: per (l_max, n) the per-seed test errors, their mean ± s.e.
(``course_lib.stats.summarize``) and the plateau count; per l_max the slope of log force-MAE vs log n fitted per
seed (``course_lib.stats.log_slope``); and the differences between l_max values paired by seed
(``course_lib.stats.difference(..., paired=True)``: the same training subset for every l_max at a seed).

Before the three-seed sweep, ``nequip_curve_l{0,1,2}.json`` held a one-seed pilot trained on ``train[:n]`` of
the random split (the first, time-ordered frames), without a ``split`` key; the seed-0 runs of the sweep replaced
them (they are in the git history). ``nequip_curve6000_l{0,1,2}.json`` are the same pilot with ``--steps 6000``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch_geometric.loader import DataLoader

from course_lib.datasets import load_molecules
from course_lib.losses import molecule_errors, per_atom_energy_force_loss
from course_lib.models.nequip import NequIP
from course_lib.stats import difference, log_slope, plateau, random_subset, summarize
from course_lib.train import fit, save_checkpoint
from course_lib.utils import DEVICE_HELP, check_device, device_info, machine_info, seed_everything

HERE = Path(__file__).resolve().parent
BATCH = 5
LR = 0.01
MIN_EPOCHS = 30


def train_nequip(train, val, test, l_max: int, steps: int, seed: int, features: int, layers: int,
                 progress: bool = True, desc: str = "nequip", epoch_steps: int = 100, min_epochs: int = 30,
                 device="cpu"):
    """Train one NequIP for about ``steps`` optimizer steps; return (model, history, test errors)."""
    seed_everything(seed)
    model = NequIP(l_max=l_max, hidden=features, num_layers=layers)
    model.fit_energy_scale(train)
    # small training sets are repeated so that an "epoch" has >= 100 steps: validation (with forces, costly)
    # then runs every ~100 steps whatever the size, instead of after every 5 steps for n = 25
    reps = max(1, -(-epoch_steps * BATCH // len(train)))
    tl = DataLoader(list(train) * reps, batch_size=BATCH, shuffle=True,
                    generator=torch.Generator().manual_seed(seed))
    vl = DataLoader(val, batch_size=50)
    steps = max(steps, min_epochs * -(-len(train) // BATCH))  # large sets get at least min_epochs passes
    epochs = max(2, round(steps / len(tl)))
    # no early stopping: every size gets its whole budget (with 30 short epochs, a patience of a few epochs
    # stopped the largest sets at half their budget); the best-validation weights are tested
    hist = fit(model, tl, vl, per_atom_energy_force_loss, epochs=epochs, lr=LR, patience=None,
               progress=progress, needs_grad_eval=True, desc=desc, device=device)
    hist.steps = epochs and len(hist.train) * len(tl)
    return model, hist, molecule_errors(model, DataLoader(test, batch_size=50), device=device)


RESULT_FILE = re.compile(r"nequip_curve_l(\d+)(?:_s(\d+))?\.json")
METRICS = {"force_mae_meV_A": "force MAE (meV/Å)", "energy_mae_meV": "energy MAE (meV)"}


def _summary(values) -> dict:
    s = summarize(values)
    return {"mean": s.mean, "se": s.se, "n": s.n}


def _plateau(run: dict, key: str):
    """One entry of a run's plateau record (None when its curve was too short to judge, e.g. --quick)."""
    return None if run.get("plateau") is None else run["plateau"][key]


def _paired(b_values, ib, a_values, ia) -> dict:
    """b - a paired by seed: ``ib``/``ia`` pick the common seeds, in the same order, from each side."""
    d = difference([b_values[j] for j in ib], [a_values[i] for i in ia], paired=True)
    return {"mean": d.mean, "se": d.se, "n": d.n}


def aggregate(out: Path, split: str = "time", sizes: list[int] | None = None) -> dict:
    """Summarise the per-seed files of ``out`` (those made with ``split``) into ``nequip_curve_summary.{json,md}``.

    A file counts only when it holds a run for every size of its ``sizes`` (an unfinished seed is listed under
    ``incomplete`` and left out). ``sizes``: summarise only these sizes (files that hold runs for all of them count,
    their other runs are left out; for a sweep extended to new sizes that not every file has finished yet).
    Paired differences use the seeds present for both l_max values."""
    files, incomplete = {}, []
    for path in sorted(out.glob("nequip_curve_l*.json")):
        m = RESULT_FILE.fullmatch(path.name)
        if not m:
            continue
        res = json.loads(path.read_text())
        if res.get("split") != split:
            continue
        l_max, seed = int(m.group(1)), int(m.group(2) or 0)
        if seed != res["seed"] or l_max != res["l_max"]:
            raise ValueError(f"{path.name}: file name and contents disagree (l_max {res['l_max']}, seed {res['seed']})")
        have = sorted(r["n_train"] for r in res["runs"])
        if (have != sorted(res["sizes"])) if sizes is None else not set(sizes) <= set(have):
            incomplete.append(path.name)
            continue
        files[(l_max, seed)] = (path.name, res)
    if not files:
        raise FileNotFoundError(f"no finished {split}-split runs in {out}: run the sweep first")
    first = next(iter(files.values()))[1]
    keys = ("molecule", "features", "layers", "batch_size", "lr", "steps_per_run", "sizes", "loss", "split")
    for name, res in files.values():
        if any(res[k] != first[k] for k in keys if not (k == "sizes" and sizes)):
            raise ValueError(f"{name}: settings differ from {next(iter(files.values()))[0]} "
                             f"({[k for k in keys if res[k] != first[k]]}); aggregate one configuration at a time "
                             "(files "
                             "of a sweep extended by new sizes: --sizes with the sizes every file holds)")
    explicit = bool(sizes)
    sizes = sorted(sizes) if sizes else first["sizes"]
    lmaxes = sorted({lm for lm, _ in files})
    seeds = {lm: sorted(s for l_, s in files if l_ == lm) for lm in lmaxes}
    # per_seed[l][metric][n] = [value per seed, in the order of seeds[l]]
    run = {(lm, s): {r["n_train"]: r for r in files[(lm, s)][1]["runs"]} for lm, s in files}
    per_seed = {f"l{lm}": {**{key: {str(n): [run[(lm, s)][n][key] for s in seeds[lm]] for n in sizes}
                              for key in METRICS},
                           "plateaued": {str(n): [_plateau(run[(lm, s)][n], "plateaued") for s in seeds[lm]]
                                         for n in sizes},
                           "last_window_gain": {str(n): [_plateau(run[(lm, s)][n], "last_window_gain")
                                                         for s in seeds[lm]] for n in sizes},
                           "seconds": {str(n): [run[(lm, s)][n]["seconds"] for s in seeds[lm]] for n in sizes}}
                for lm in lmaxes}
    summary, slopes = {}, {}
    for lm in lmaxes:
        ps = per_seed[f"l{lm}"]
        summary[f"l{lm}"] = {str(n): {**{key: _summary(ps[key][str(n)]) for key in METRICS},
                                      "plateaued": sum(p is True for p in ps["plateaued"][str(n)]),
                                      "runs": len(seeds[lm])}
                             for n in sizes}
        per_seed_curves = [[ps["force_mae_meV_A"][str(n)][k] for n in sizes] for k in range(len(seeds[lm]))]
        sl = log_slope(sizes, per_seed_curves)
        slopes[f"l{lm}"] = {"per_seed": [log_slope(sizes, [c]).mean for c in per_seed_curves],
                            "mean": sl.mean, "se": sl.se, "n": sl.n}
    paired = {}
    for la in lmaxes:
        for lb in lmaxes:
            if lb <= la:
                continue
            common = sorted(set(seeds[la]) & set(seeds[lb]))
            if not common:
                continue
            ia = [seeds[la].index(s) for s in common]
            ib = [seeds[lb].index(s) for s in common]
            row = {"seeds": common,
                   "slope": _paired(slopes[f"l{lb}"]["per_seed"], ib, slopes[f"l{la}"]["per_seed"], ia)}
            for key in METRICS:
                row[key] = {str(n): _paired(per_seed[f"l{lb}"][key][str(n)], ib, per_seed[f"l{la}"][key][str(n)], ia)
                            for n in sizes}
            paired[f"l{lb}-l{la}"] = row
    res = {"command": "python benchmarks/nequip_learning_curve.py --aggregate"
                      + ("" if out == HERE / "results" else f" --out {out}")
                      + (f" --sizes {','.join(map(str, sizes))}" if explicit else ""),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "files": [name for name, _ in files.values()], "incomplete": incomplete,
           "runs_commands": sorted({res["command"] for _, res in files.values()}),
           "load_average_end": {name: res["machine"].get("load_average_end") for name, res in files.values()},
           **{k: first[k] for k in keys}, "sizes": sizes,
           "test_set": "time split: frames 825-999, a later block of the trajectory "
           "after a 250 fs gap (generalisation within the trajectory)" if split == "time" else "random split",
           "l_max": lmaxes, "seeds": {f"l{lm}": seeds[lm] for lm in lmaxes},
           "per_seed": per_seed, "summary": summary, "slopes": slopes,
           "paired_differences": paired,
           "notes": "paired_differences['l<b>-l<a>']: per-seed value of l_max=b minus l_max=a (same seed = same "
                    "training subset and batch-order seed), mean ± s.e. over the common seeds; slope = slope of "
                    "log force MAE vs log n (negative: the error falls with n; a more negative difference: l_max=b "
                    "steeper)"}
    (out / "nequip_curve_summary.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "nequip_curve_summary.md").write_text(summary_markdown(res))
    return res


def _fmt(s: dict, digits: int = 1) -> str:
    return f"{s['mean']:.{digits}f} ± {s['se']:.{digits}f}"


def summary_markdown(res: dict) -> str:
    sizes = res["sizes"]
    lines = [f"# NequIP learning curves on {res['molecule']} ({res['split']} split)", "",
             f"`{res['command']}` ({res['date']}); {res['steps_per_run']} optimizer steps of {res['batch_size']} "
             f"frames per run, {res['features']} channels, {res['layers']} blocks; test set: {res['test_set']}.", "",
             "Test force MAE (meV/Å), mean ± s.e. over seeds; in brackets: runs at a validation plateau "
             "(`course_lib.stats.plateau`) / runs; slope of log force MAE vs log n fitted per seed, mean ± s.e.", "",
             "| l_max | seeds | " + " | ".join(f"n = {n}" for n in sizes) + " | slope |",
             "|---|---|" + "---|" * len(sizes) + "---|"]
    for lm in res["l_max"]:
        row = res["summary"][f"l{lm}"]
        cells = [f"{_fmt(row[str(n)]['force_mae_meV_A'])} ({row[str(n)]['plateaued']}/{row[str(n)]['runs']})"
                 for n in sizes]
        lines.append(f"| {lm} | {', '.join(map(str, res['seeds'][f'l{lm}']))} | " + " | ".join(cells)
                     + f" | {_fmt(res['slopes'][f'l{lm}'], 2)} |")
    lines += ["", "Test energy MAE (meV), mean ± s.e. over seeds:", "",
              "| l_max | " + " | ".join(f"n = {n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for lm in res["l_max"]:
        row = res["summary"][f"l{lm}"]
        lines.append(f"| {lm} | " + " | ".join(_fmt(row[str(n)]["energy_mae_meV"]) for n in sizes) + " |")
    lines += ["", "Differences paired by seed (same training subset), mean ± s.e.; |mean| / s.e. in brackets:", "",
              "| l_max | seeds | " + " | ".join(f"force MAE, n = {n}" for n in sizes) + " | slope |",
              "|---|---|" + "---|" * len(sizes) + "---|"]
    for pair, row in res["paired_differences"].items():
        def z(s):
            return f"{abs(s['mean']) / s['se']:.1f}" if s["se"] > 0 else "inf"
        cells = [f"{_fmt(row['force_mae_meV_A'][str(n)])} ({z(row['force_mae_meV_A'][str(n)])})" for n in sizes]
        b, a = pair.replace("l", "").split("-")
        lines.append(f"| {b} minus {a} | {', '.join(map(str, row['seeds']))} | " + " | ".join(cells)
                     + f" | {_fmt(row['slope'], 2)} ({z(row['slope'])}) |")
    if res["incomplete"]:
        lines += ["", f"Unfinished files left out: {', '.join(res['incomplete'])}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lmax", type=int, default=None, help="l_max of the runs (required unless --aggregate)")
    p.add_argument("--aggregate", action="store_true",
                   help="summarise the finished per-seed files of --out into nequip_curve_summary.{json,md}")
    p.add_argument("--sizes", default=None, help="training-set sizes (comma-separated)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run")
    p.add_argument("--features", type=int, default=16, help="channels per irrep")
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--molecule", default="ethanol")
    p.add_argument("--quick", action="store_true", help="tiny data and steps (pipeline check)")
    p.add_argument("--out", default=None, help="default: benchmarks/results/ (--quick: a temporary folder)")
    p.add_argument("--seed", type=int, default=0, help="initialisation, batch order and training subset")
    p.add_argument("--split", choices=("time", "random"), default="time",
                   help="load_molecules scheme: time blocks (generalisation) or random frames (interpolation)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--save-checkpoint", action="store_true",
                   help="save the seed-0 model of the largest set as nequip_curve_time_l<l_max>.pt (never over the "
                        "shipped pilot checkpoints nequip_curve_l<l_max>.pt)")
    p.add_argument("--no-checkpoint", action="store_true", help="(the default; kept for old commands)")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    args = p.parse_args(argv)
    device = str(check_device(args.device))  # fails fast, before any data is loaded
    if args.aggregate:
        return aggregate(Path(args.out) if args.out else HERE / "results", args.split,
                         [int(s) for s in args.sizes.split(",")] if args.sizes else None)
    if args.lmax is None:
        p.error("--lmax is required (or --aggregate)")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    tr, va, te = (load_molecules(args.molecule, s, scheme=args.split) for s in ("train", "val", "test"))
    if args.quick:
        va, te = va[:10], te[:10]
    sizes = [int(s) for s in (args.sizes or ("10,20" if args.quick else "25,100,400")).split(",")]
    steps = args.steps or (10 if args.quick else 2000)
    out = Path(args.out) if args.out else (Path(tempfile.gettempdir()) / "course_nequip_curve_quick" if args.quick
                                           else HERE / "results")
    out.mkdir(parents=True, exist_ok=True)
    cmd = "python benchmarks/nequip_learning_curve.py " + " ".join(argv if argv is not None else sys.argv[1:])
    res = {"command": cmd,
           "machine": machine_info(**device_info(device)), "molecule": args.molecule, "l_max": args.lmax,
           "features": args.features,
           "layers": args.layers, "batch_size": BATCH, "lr": LR, "steps_per_run": steps, "sizes": sizes,
           "loss": "per-atom energy MSE + force-component MSE (weights 1, 1)", "seed": args.seed,
           "split": args.split, "subsets": "course_lib.stats.random_subset(pool, n, seed): random, nested per seed",
           "runs": []}
    suffix = "" if args.seed == 0 else f"_s{args.seed}"
    path = out / f"nequip_curve_l{args.lmax}{suffix}.json"
    done = {}
    if path.exists() and not args.quick:  # resume: keep the runs of an interrupted call with the same settings
        old = json.loads(path.read_text())
        keys = ("molecule", "l_max", "features", "layers", "steps_per_run", "batch_size", "seed", "split")
        if all(old.get(k) == res[k] for k in keys) and old["machine"].get("device", "cpu") == device:
            done = {r["n_train"]: r for r in old["runs"]}
    t0 = time.perf_counter()
    for n in sizes:
        # a finished run is kept, unless it is the seed-0 largest set whose checkpoint is asked for
        if n in done and not (n == sizes[-1] and args.seed == 0 and args.save_checkpoint):
            res["runs"].append(done[n])
            print(f"l_max={args.lmax} n={n:4d}  kept from {path.name}", flush=True)
            continue
        subset = [tr[int(i)] for i in random_subset(range(len(tr)), n, args.seed)]
        model, hist, err = train_nequip(subset, va, te, args.lmax, steps, args.seed, args.features, args.layers,
                                        progress=not args.no_progress, desc=f"l={args.lmax} n={n}",
                                        epoch_steps=2 if args.quick else 100,
                                        min_epochs=1 if args.quick else MIN_EPOCHS, device=device)
        res["runs"].append({**err, "n_train": n, "epochs_run": len(hist.train), "best_epoch": hist.best_epoch,
                            "steps_run": hist.steps, "seed": args.seed, "val_curve": hist.val,
                            "plateau": plateau(hist.val) if len(hist.val) >= 5 else None,
                            "seconds": hist.seconds})
        print(f"l_max={args.lmax} n={n:4d}  energy MAE {err['energy_mae_meV']:7.1f} meV  force MAE "
              f"{err['force_mae_meV_A']:6.1f} meV/A  ({len(hist.train)} epochs, {hist.seconds:.0f} s)", flush=True)
        path.write_text(json.dumps(res, indent=2) + "\n")  # after every run: an interrupted call can resume
        if n == sizes[-1] and args.seed == 0 and args.save_checkpoint:
            save_checkpoint(out / f"nequip_curve_time_l{args.lmax}.pt", model, config=model.config,
                            metrics={k: v for k, v in err.items() if isinstance(v, (int, float))})
    res["total_seconds"] = time.perf_counter() - t0
    res["machine"]["load_average_end"] = os.getloadavg()
    path.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
