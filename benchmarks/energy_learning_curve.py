"""Learning curves of notebook 01: test MAE vs number of training systems, for the invariant MPNN and
the baselines that do not have its symmetry, on the periodic charged-particle energy data set, under
the experiment protocol of ``benchmarks/README.md``.

    python benchmarks/energy_learning_curve.py                     # full run, writes benchmarks/results/
    python benchmarks/energy_learning_curve.py --quick --out /tmp/lc  # pipeline check (CI)
    python benchmarks/energy_learning_curve.py --device cuda --out /tmp/lc  # train on the GPU

``--device``: ``cpu`` (the default; the committed results are CPU results) or ``cuda``; recorded in ``machine``.

Protocol: for every model, size n and seed s the training set is ``stats.random_subset(train, n, s)``
(the same subset for every model of a seed: paired runs); every run gets the same budget of ``--steps``
optimiser steps (batch 32, Adam, learning rate halved when the validation loss stalls), whatever n;
the validation MSE is recorded ``--evals`` times per run (an "epoch" below is one such interval of
steps) and the weights of the best validation point are the ones tested (model selection on
validation only); ``stats.plateau`` of each validation curve is recorded. The test set is 300 systems
drawn like the training systems (interpolation, not generalisation to other densities or sizes).

Resumable: every finished run is written to ``<out>/energy_learning_curve_runs/<model>_n<n>_s<seed>.json``
and skipped when the script is started again; ``energy_learning_curve.json`` (per-run rows with their
validation curves, mean ± s.e. per model and size, command, machine, budgets) is rebuilt from those files
at the end (``--aggregate``: only that). The checkpoints of the first seed at the largest size
(``energy_<model>.pt``) are what notebook 01 loads instead of training for minutes on a CPU. With
``--tag final`` it writes ``energy_final.json`` and ``energy_<model>_final.pt`` instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import RandomSampler
from torch_geometric.loader import DataLoader

from course_lib import stats
from course_lib import symmetry as S
from course_lib.datasets import load_particles
from course_lib.models.baselines import AbsolutePositionGNN, CoordinateMLP, EdgeVectorGNN
from course_lib.models.mpnn import InvariantMPNN
from course_lib.train import evaluate, fit, save_checkpoint
from course_lib.utils import DEVICE_HELP, check_device, device_info, machine_info, seed_everything

HERE = Path(__file__).resolve().parent
MODELS = ("mpnn", "abs_gnn", "abs_gnn_aug", "vec_gnn", "mlp")
DEFAULT_MODELS = ("mpnn", "abs_gnn", "abs_gnn_aug", "vec_gnn")
LABELS = {
    "mpnn": "invariant MPNN",
    "abs_gnn": "GNN with absolute positions",
    "abs_gnn_aug": "GNN with absolute positions + augmentation",
    "vec_gnn": "GNN with edge vectors (translation invariant only)",
    "mlp": "MLP on padded coordinates",
}
BATCH = 32


def make_model(name: str):
    if name == "mpnn":
        return InvariantMPNN()
    if name in ("abs_gnn", "abs_gnn_aug"):
        return AbsolutePositionGNN()
    if name == "vec_gnn":
        return EdgeVectorGNN()
    if name == "mlp":
        return CoordinateMLP(max_nodes=24)
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def energy_mse(model, batch):
    return ((model(batch) - batch.energy) ** 2).mean()


def augmented_mse(generator):
    """MSE on a randomly transformed copy of each batch (periodic translation + a box symmetry)."""

    def loss(model, batch):
        if model.training:  # drawn on the CPU with the CPU generator (the same draws on every device)
            device = batch.pos.device
            batch = S.random_augmentation(batch.cpu(), generator=generator).to(device)
        return energy_mse(model, batch)

    return loss


def energy_mae(model, batch):
    return (model(batch) - batch.energy).abs().mean()


def train_one(name: str, train, val, test, steps: int, evals: int, seed: int, progress: bool,
              device="cpu", lr_patience: int | None = None, patience: int | None = None) -> tuple:
    """One run: ``steps`` optimiser steps in ``evals`` intervals, each followed by a validation pass."""
    seed_everything(seed)
    model = make_model(name)
    model.fit_energy_scale(train)
    loss = augmented_mse(torch.Generator().manual_seed(seed)) if name == "abs_gnn_aug" else energy_mse
    interval = max(1, steps // evals)
    sampler = RandomSampler(train, num_samples=interval * BATCH, generator=torch.Generator().manual_seed(seed))
    tl = DataLoader(train, batch_size=BATCH, sampler=sampler)
    vl = DataLoader(val, batch_size=256)
    hist = fit(model, tl, vl, loss, epochs=evals, lr=1e-3, patience=patience, progress=progress,
               desc=f"{name} n={len(train)} s={seed}", device=device, lr_patience=lr_patience, min_lr=1e-6)
    model.eval()
    mae = evaluate(model, DataLoader(test, batch_size=256), energy_mae, device=device)
    return model, hist, mae, interval


def run_path(runs: Path, name: str, n: int, seed: int) -> Path:
    return runs / f"{name}_n{n}_s{seed}.json"


def summarize_runs(rows: list[dict], sizes: list[int]) -> list[dict]:
    """Mean ± s.e. of the test MAE over seeds, per size, and how many runs reached their plateau."""
    out = []
    for n in sizes:
        at_n = [r for r in rows if r["n_train"] == n]
        if not at_n:
            continue
        s = stats.summarize([r["test_mae"] for r in at_n])
        out.append({"n_train": n, "test_mae_mean": s.mean, "test_mae_se": s.se, "seeds": [r["seed"] for r in at_n],
                    "plateaued": sum(r["plateau"]["plateaued"] for r in at_n), "runs": len(at_n)})
    return out


def aggregate(out: Path, header: dict, models: list[str], sizes: list[int], seeds: list[int], name: str) -> dict:
    runs_dir = out / f"{Path(name).stem}_runs"
    results = {**header, "models": {}}
    for m in models:
        rows = [json.loads(run_path(runs_dir, m, n, s).read_text()) for n in sizes for s in seeds
                if run_path(runs_dir, m, n, s).exists()]
        if rows:
            results["models"][m] = {"label": LABELS[m], "runs": rows, "summary": summarize_runs(rows, sizes)}
    all_rows = [r for m in results["models"].values() for r in m["runs"]]
    evals = header["protocol"]["evals_per_run"]
    budget = header["protocol"]["steps_per_run"] // evals * evals
    if any(r["steps"] != budget for r in all_rows):
        raise ValueError(f"runs in {runs_dir} were made with other --steps/--evals than {budget} steps: aggregate "
                         "only comparable runs (pass the --steps and --evals of the sweep)")
    results["run_commands"] = sorted({r["command"] for r in all_rows})  # e.g. one process per seed
    results["total_seconds"] = sum(r["seconds"] for r in all_rows)
    (out / name).write_text(json.dumps(results, indent=2) + "\n")
    (out / name).with_suffix(".md").write_text(markdown_table(results))
    return results


def markdown_table(results: dict) -> str:
    """Test MAE mean ± s.e. per model and size, with the number of runs that reached their plateau."""
    sizes = results["sizes"]
    lines = [f"Made by: `{'`, `'.join(results['run_commands'])}`", "",
             "| model | " + " | ".join(f"n = {n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for res in results["models"].values():
        cells = {s["n_train"]: f"{s['test_mae_mean']:.3f} ± {s['test_mae_se']:.3f} ({s['plateaued']}/{s['runs']})"
                 for s in res["summary"]}
        lines.append(f"| {res['label']} | " + " | ".join(cells.get(n, "–") for n in sizes) + " |")
    lines += ["", "Test MAE of the energy, mean ± standard error over seeds; in brackets: runs whose validation "
              "curve reached the plateau criterion of `course_lib.stats.plateau` / runs."]
    return "\n".join(lines) + "\n"


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes and budgets (pipeline check)")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help=f"comma-separated, from {MODELS}")
    p.add_argument("--sizes", default=None, help="comma-separated training-set sizes")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (subset and initialisation)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps per run (the same for every n)")
    p.add_argument("--evals", type=int, default=None, help="validation points per run")
    p.add_argument("--lr-patience", type=int, default=None,
                   help="halve the learning rate after this many validation points without a better one "
                        "(default 6; never below 1e-6)")
    p.add_argument("--patience", type=int, default=None,
                   help="stop a run after this many validation points without a better one (default: never); "
                        "the budget --steps is then a cap, the same for every run")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--tag", default="", help="suffix of the output names (e.g. 'final' for a longer run)")
    p.add_argument("--checkpoint-seed", type=int, default=0,
                   help="save the checkpoints of this seed's runs at the largest size")
    p.add_argument("--aggregate", action="store_true", help="only rebuild the results file from the finished runs")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    device = str(check_device(args.device))  # fails fast, before any data is loaded
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    train_all, val, test = (load_particles("energy", s) for s in ("train", "val", "test"))
    q = args.quick
    sizes = [int(s) for s in (args.sizes or ("50,100" if q else "100,300,1000")).split(",")]
    seeds = [int(s) for s in (args.seeds or ("0,1" if q else "0,1,2")).split(",")]
    steps, evals = args.steps or (30 if q else 800), args.evals or (5 if q else 20)
    if q:
        val, test = val[:64], test[:64]
    out = Path(args.out)
    name = f"energy_{args.tag}.json" if args.tag else "energy_learning_curve.json"
    runs_dir = out / f"{Path(name).stem}_runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    models = [m for m in args.models.split(",") if m]
    for m in models:
        make_model(m)  # unknown names fail before any training
    header = {
        "command": "python benchmarks/energy_learning_curve.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_info(**device_info(device)),
        "protocol": {"steps_per_run": steps, "evals_per_run": evals, "batch_size": BATCH, "seeds": seeds,
                     "lr": "Adam 1e-3, halved after --lr-patience validation points without improvement (min 1e-6)",
                     "lr_patience": args.lr_patience or 6, "patience": args.patience,
                     "subsets": "course_lib.stats.random_subset(range(len(train)), n, seed), same for every model",
                     "selection": "weights of the best validation MSE", "n_val": len(val), "n_test": len(test),
                     "test_set": "interpolation (systems drawn like the training systems)"},
        "test_energy_std": float(torch.cat([g.energy for g in test]).std()),
        "sizes": sizes, "seeds": seeds, "steps_per_run": steps,
    }
    if args.aggregate:
        return aggregate(out, header, models, sizes, seeds, name)
    for seed in seeds:  # seed-major: a stopped sweep has complete seeds for every model and size
        for n in sizes:
            train = [train_all[i] for i in stats.random_subset(range(len(train_all)), n, seed)]
            for m in models:
                path = run_path(runs_dir, m, n, seed)
                if path.exists():
                    continue
                model, hist, mae, interval = train_one(m, train, val, test, steps, evals, seed, not args.no_progress,
                                                       device, args.lr_patience, args.patience)
                row = {"model": m, "n_train": n, "seed": seed, "test_mae": mae, "test_mae_over_std":
                       mae / header["test_energy_std"], "steps": interval * evals, "steps_per_eval": interval,
                       "best_eval": hist.best_epoch, "val_curve": hist.val, "train_curve": hist.train,
                       "lr_curve": hist.lr, "lr_patience": args.lr_patience or 6, "patience": args.patience,
                       "stopped_early": hist.stopped_early, "steps_run": interval * len(hist.val),
                       "plateau": stats.plateau(hist.val), "seconds": hist.seconds,
                       "machine": machine_info(**device_info(device)),
                       "command": header["command"]}
                path.write_text(json.dumps(row, indent=1) + "\n")
                print(f"{m:12s} n={n:5d} seed={seed} test MAE {mae:.4f} best eval {hist.best_epoch}/{evals} "
                      f"plateau {row['plateau']['plateaued']} {hist.seconds:.0f}s", flush=True)
                if n == sizes[-1] and seed == args.checkpoint_seed:
                    tag = f"_{args.tag}" if args.tag else ""
                    save_checkpoint(out / f"energy_{m}{tag}.pt", model, config=model.config,
                                    metrics={"test_mae": mae, "n_train": n, "seed": seed, "steps": interval * evals})
    return aggregate(out, header, models, sizes, seeds, name)


if __name__ == "__main__":
    main()
