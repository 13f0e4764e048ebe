"""Trajectory prediction of notebooks 02 and 03: EGNN vs baselines, one step and 39-step rollouts.

    python benchmarks/egnn_dynamics.py                          # full run, writes benchmarks/results/
    python benchmarks/egnn_dynamics.py --quick --out /tmp/dyn   # pipeline check (CI), < 2 min
    python benchmarks/egnn_dynamics.py --models egnn,abs_gnn --time-limit 300
    python benchmarks/egnn_dynamics.py --quick --device cuda --out /tmp/dyn   # train and test on the GPU

Models (``--models``):

- ``ballistic``: free flight (no training), plain trajectories.
- ``egnn``: :class:`~course_lib.models.egnn.EGNN` trained on all (t, t+1) pairs with ``next_step_loss``.
- ``egnn_multistep``: the same EGNN trained with ``rollout_loss`` (back-propagation through ``k``
  steps, on windows of the training trajectories), the ablation of notebook 02 (Q10e).
- ``egnn_finetune``: the usual recipe at the same epoch budget as the other arms: the EGNN trained with
  ``next_step_loss`` for ``epochs - finetune_epochs`` epochs, then fine-tuned with ``rollout_loss`` for
  ``--finetune-epochs`` epochs at learning rate ``lr * finetune_lr_factor`` (each phase with its own cosine
  decay); ``--epochs`` counts both phases. (The former wall-clock budget ``--finetune-time`` and the
  fine-tuning of a separately trained ``--init-dir`` model were removed: budgets are epochs, never seconds.)
- ``abs_gnn``: the non-equivariant :class:`~course_lib.models.baselines.AbsoluteCoordinateGNN`.
- ``ballistic_crystal``: free flight with the crystal held, crystal trajectories.
- ``egnn_crystal``: EGNN on the crystal trajectories (``use_fixed=True``, loss on mobile atoms).
- ``egnn_crystal_free``: ablation of notebook 03 (Q14e): ``use_fixed=False`` and a loss on every node
  (``mobile_only=False``), so the crystal atoms may move and the loss sees their (constant) targets.

Protocol: Adam, batch 32 graphs, learning rate ``lr`` with a cosine decay over the epoch budget or the
wall-clock budget (whichever runs out first; the protocol runs set ``--time-limit`` far above the run time),
gradient clipping 10, the weights of the best one-step validation loss are kept (validated every epoch
on every third validation pair). Test metrics (test split, mobile atoms only): one-step position MSE
``|dx|^2`` (minimum image, summed over x and y) and velocity MSE, and the 39-step rollout from frame 0:
position MSE per step, its value at step 39 and its mean over steps 1..39; the Wasserstein-1 distance
between the predicted and true speed distributions over the rollout; for the crystal ablation the mean
displacement of the crystal atoms.

Writes ``egnn_dynamics.json`` (all numbers, epochs, training times, the command, the machine and its
load) and ``dyn_<model>.pt`` (:func:`course_lib.train.save_checkpoint`, ``config = model.config``);
with ``--checkpoint-dir`` also ``<model>_s<seed>.pt`` there (the per-seed checkpoints of
``results/egnn_dynamics_seeds/ckpt/``, read by ``energy_dynamics.py``).

Long runs resume: every trained model keeps its training state (weights, optimiser, best weights, history,
random generators) in ``<out>/resume_<model>*.pt`` after every epoch; ``--resume`` continues an interrupted call
with the same settings where it stopped (models already in ``egnn_dynamics.json`` are kept, a model stopped
mid-training goes on from its last finished epoch) and gives the same numbers as an uninterrupted run.
``--stop-after-epoch N`` ends a call once N epochs of a model are done (its state kept), to run a long budget in
parts on a shared machine.

``--device``: ``cpu`` (the default; the committed results are CPU results) or ``cuda`` (models and batches on the
GPU, the rollout timed with ``torch.cuda.synchronize()``); recorded in ``machine``. The wall-clock budgets
(``--time-limit``) then buy more epochs than on the CPU: compare runs of one device only.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from course_lib.crystal import rollout_position_errors, speed_distance
from course_lib.datasets import load_particles, trajectory_pairs
from course_lib.files import torch_save_atomic
from course_lib.models.baselines import AbsoluteCoordinateGNN, Ballistic
from course_lib.models.egnn import EGNN, next_step_loss, rollout, rollout_loss
from course_lib.neighbors import minimum_image
from course_lib.train import save_checkpoint
from course_lib.utils import DEVICE_HELP, check_device, device_info, seed_everything, synchronize

HERE = Path(__file__).resolve().parent
DT = 0.2  # frame_dt of the trajectory data sets
MODELS = ("ballistic", "egnn", "egnn_multistep", "egnn_finetune", "abs_gnn", "ballistic_crystal", "egnn_crystal",
          "egnn_crystal_free")
LABELS = {
    "ballistic": "ballistic (free flight)",
    "egnn": "EGNN, one-step loss",
    "egnn_multistep": "EGNN, multi-step rollout loss",
    "egnn_finetune": "EGNN, one-step loss then fine-tuned on the multi-step loss",
    "abs_gnn": "GNN with absolute coordinates (not equivariant)",
    "ballistic_crystal": "ballistic, crystal held",
    "egnn_crystal": "EGNN, crystal held (use_fixed=True)",
    "egnn_crystal_free": "EGNN, crystal free to move (use_fixed=False, loss on all atoms)",
}
CRYSTAL = {"ballistic_crystal", "egnn_crystal", "egnn_crystal_free"}


def make_model(name: str, hidden: int = 64, layers: int = 4):
    """The model of a benchmark entry, untrained (the notebooks rebuild it from the checkpoint config)."""
    if name in ("ballistic", "ballistic_crystal"):
        return Ballistic(dt=DT, use_fixed=True)
    if name in ("egnn", "egnn_multistep", "egnn_finetune", "egnn_crystal"):
        return EGNN(hidden=hidden, num_layers=layers, cutoff=3.0, dt=DT, use_fixed=True)
    if name == "egnn_crystal_free":
        return EGNN(hidden=hidden, num_layers=layers, cutoff=3.0, dt=DT, use_fixed=False)
    if name == "abs_gnn":
        return AbsoluteCoordinateGNN(hidden=hidden, num_layers=3, cutoff=3.0, dt=DT, use_fixed=True)
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def rollout_windows(trajs: list[Data], k: int, stride: int) -> list[Data]:
    """Cut every trajectory into windows of ``k + 1`` frames (starts 0, stride, ...) for ``rollout_loss``."""
    out = []
    for tr in trajs:
        T = tr.traj_pos.shape[1]
        for s in range(0, T - k, stride):
            tp, tv = tr.traj_pos[:, s : s + k + 1].clone(), tr.traj_vel[:, s : s + k + 1].clone()
            out.append(Data(pos=tp[:, 0].clone(), vel=tv[:, 0].clone(), charge=tr.charge.clone(), box=tr.box.clone(),
                            fixed=tr.fixed.clone(), traj_pos=tp, traj_vel=tv))
    return out


class Paused(Exception):
    """Raised by :func:`train` when ``stop_after_epoch`` is reached (the training state is on disk)."""


def train(model, train_set, val_set, loss_fn, epochs: int, lr: float, time_limit: float, seed: int,
          log_every: int = 1, desc: str = "", device="cpu", state_file: Path | None = None,
          stop_after_epoch: int | None = None) -> dict:
    """Adam + cosine decay (over epochs or wall time), best-validation weights; returns the history.

    With ``state_file`` the training state is written there after every epoch, and training resumes from it when
    it exists (it must come from the same settings); ``stop_after_epoch = N`` raises :class:`Paused` once epoch
    N - 1 is done and saved (before epoch N).
    """
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed + 100)
    tl = DataLoader(train_set, batch_size=32, shuffle=True, generator=gen)
    vl = DataLoader(val_set, batch_size=128)
    best, best_val, best_epoch, hist = copy.deepcopy(model.state_dict()), math.inf, -1, []
    key = {"desc": desc, "epochs": epochs, "lr": lr, "seed": seed, "time_limit": time_limit,
           "n_train": len(train_set), "n_val": len(val_set)}
    elapsed = 0.0
    if state_file is not None and state_file.exists():
        st = torch.load(state_file, map_location="cpu", weights_only=False)
        if st["key"] != key:
            raise SystemExit(f"{state_file} holds the training state of other settings ({st['key']}, not {key}): "
                             "rerun with the settings that wrote it, or delete it to start this model afresh")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        gen.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        best, best_val, best_epoch, hist, elapsed = st["best"], st["best_val"], st["best_epoch"], st["history"], \
            st["elapsed"]
        print(f"  {desc}: resumed after epoch {len(hist) - 1} from {state_file}", flush=True)
    t0 = time.perf_counter() - elapsed
    stop = "max_epochs"
    for epoch in range(len(hist), epochs):
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            raise Paused(f"{desc}: paused after {epoch} epochs ({state_file}); rerun with --resume to go on")
        model.train()
        total, count = 0.0, 0
        for batch in tl:
            batch = batch.to(device)
            frac = max(epoch / epochs, (time.perf_counter() - t0) / time_limit)
            for grp in opt.param_groups:
                grp["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss {float(loss)} at epoch {epoch}")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            total += float(loss.detach()) * batch.num_graphs
            count += batch.num_graphs
        model.eval()
        with torch.no_grad():
            vals = [(float(loss_fn(model, b.to(device))), b.num_graphs) for b in vl]
        val = sum(v * n for v, n in vals) / sum(n for _, n in vals)
        hist.append({"epoch": epoch, "train": total / count, "val": val, "seconds": time.perf_counter() - t0})
        if val < best_val:
            best, best_val, best_epoch = copy.deepcopy(model.state_dict()), val, epoch
        if log_every and epoch % log_every == 0:
            print(f"  {desc} epoch {epoch:3d} train {total / count:.5f} val {val:.5f} "
                  f"({time.perf_counter() - t0:.0f}s, load {os.getloadavg()[0]:.1f})", flush=True)
        if time.perf_counter() - t0 > time_limit:
            stop = "time_limit"
            break
        if state_file is not None:
            torch_save_atomic({"key": key, "model": model.state_dict(), "optimizer": opt.state_dict(),
                               "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                               "best": best, "best_val": best_val, "best_epoch": best_epoch, "history": hist,
                               "elapsed": time.perf_counter() - t0}, state_file)  # a kill leaves the last epoch's
    model.load_state_dict(best)
    return {"epochs_run": len(hist), "best_epoch": best_epoch, "best_val": best_val, "stop_reason": stop,
            "train_seconds": time.perf_counter() - t0, "history": hist}


@torch.no_grad()
def evaluate_dynamics(model, test_trajs: list[Data], steps: int, device="cpu", return_rollout: bool = False):
    """One-step and rollout metrics on the test trajectories (mobile atoms; see the module docstring).

    With ``return_rollout`` also the rollout itself, ``(metrics, (traj_pos, traj_vel))`` (``[N, steps + 1, 2]``
    each, all test trajectories in one batch), so that further diagnostics need not roll out again."""
    model.to(device).eval()
    pairs = trajectory_pairs(test_trajs)
    sq_pos, sq_vel, n = 0.0, 0.0, 0
    for b in DataLoader(pairs, batch_size=256):
        b = b.to(device)
        p, v = model(b)
        keep = ~b.fixed
        dp = minimum_image(p - b.target_pos, b.box[b.batch])[keep]
        sq_pos += float(dp.pow(2).sum())
        sq_vel += float((v - b.target_vel)[keep].pow(2).sum())
        n += int(keep.sum())
    batch = next(iter(DataLoader(test_trajs, batch_size=len(test_trajs)))).to(device)
    synchronize(device)
    t0 = time.perf_counter()
    tp, tv = rollout(model, batch, steps)
    synchronize(device)
    rollout_s = time.perf_counter() - t0
    mobile = ~batch.fixed
    err = rollout_position_errors(tp, batch.traj_pos[:, : steps + 1], batch.box, batch.batch, mobile)
    out = {
        "one_step_pos_mse": sq_pos / n,
        "one_step_vel_mse": sq_vel / n,
        "rollout_pos_mse_per_step": [float(e) for e in err],
        "rollout_pos_mse_final": float(err[-1]),
        "rollout_pos_mse_mean": float(err[1:].mean()),
        "rollout_vel_mse_final": float((tv[:, -1] - batch.traj_vel[:, steps])[mobile].pow(2).sum(-1).mean()),
        "speed_w1": speed_distance(tv[mobile, 1:], batch.traj_vel[mobile, 1 : steps + 1]),
        "rollout_seconds": rollout_s,
    }
    if bool(batch.fixed.any()):
        fixed = batch.fixed
        disp = minimum_image(tp[fixed] - tp[fixed][:, :1], batch.box[batch.batch[fixed]][:, None, :]).norm(dim=-1)
        out["crystal_drift_per_step"] = [float(d) for d in disp.mean(0)]
        out["crystal_drift_final"] = float(disp[:, -1].mean())
        out["crystal_drift_max"] = float(disp.max())
    return (out, (tp, tv)) if return_rollout else out


def _one_step_loss(mobile_only: bool):
    def loss_fn(m, b):
        return next_step_loss(m, b, mobile_only=mobile_only)
    return loss_fn


def _multistep_loss(k: int):
    def loss_fn(m, b):  # windows carry traj_pos (training); the validation pairs do not (one step)
        return rollout_loss(m, b, k) if "traj_pos" in b else next_step_loss(m, b)
    return loss_fn


def pretrain_finetune(model, tr, pairs, val_pairs, epochs: int, ft_epochs: int, args, time_limit: float,
                      seed: int, device, state_stem: Path | None = None) -> dict:
    """egnn_finetune: ``epochs - ft_epochs`` epochs of the one-step loss, then ``ft_epochs`` of the multi-step loss
    at ``lr * finetune_lr_factor``; one history over both phases (epochs numbered on), best one-step validation
    weights of the fine-tuning phase kept (model selection as for every arm)."""
    pre_epochs = max(epochs - ft_epochs, 0)
    pre = None
    if pre_epochs:
        pre = train(model, pairs, val_pairs, _one_step_loss(True), pre_epochs, args.lr, time_limit, seed,
                    args.log_every, desc="egnn_finetune (one-step phase)", device=device,
                    state_file=state_stem and state_stem.with_name(state_stem.name + "_pretrain.pt"),
                    stop_after_epoch=args.stop_after_epoch)
    stop_ft = None if args.stop_after_epoch is None else args.stop_after_epoch - pre_epochs
    ft = train(model, rollout_windows(tr, args.k, stride=args.k), val_pairs, _multistep_loss(args.k), ft_epochs,
               args.lr * args.finetune_lr_factor, time_limit, seed + 50, args.log_every,
               desc="egnn_finetune (multi-step phase)", device=device,
               state_file=state_stem and state_stem.with_name(state_stem.name + "_finetune.pt"),
               stop_after_epoch=stop_ft)
    hist = (pre["history"] if pre else []) + [{**h, "epoch": h["epoch"] + pre_epochs} for h in ft["history"]]
    return {"epochs_run": len(hist), "best_epoch": ft["best_epoch"] + pre_epochs, "best_val": ft["best_val"],
            "stop_reason": ft["stop_reason"], "train_seconds": (pre["train_seconds"] if pre else 0.0)
            + ft["train_seconds"], "history": hist, "pretrain_epochs": pre_epochs, "finetune_epochs": ft_epochs,
            "pretrain_best_val": pre["best_val"] if pre else None,
            "n_pretrain_graphs": len(pairs)}


def _without_resume_flags(argv: list[str]) -> list[str]:
    """The command line as the results record it: --resume and --stop-after-epoch N change no number."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--resume" or a.startswith("--stop-after-epoch="):
            continue
        elif a == "--stop-after-epoch":
            skip = True
        else:
            out.append(a)
    return out


def merge(parts: list[Path], out: Path) -> dict:
    """Merge partial runs (each a folder with egnn_dynamics.json + dyn_*.pt) into ``out``."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    merged = None
    for part in parts:
        res = json.loads((part / "egnn_dynamics.json").read_text())
        if merged is None:
            merged = {**res, "models": {}, "parts": []}
        merged["parts"].append({"command": res["command"], "machine": res["machine"],
                                "total_seconds": res.get("total_seconds")})
        merged["models"].update(res["models"])
        for ck in part.glob("dyn_*.pt"):
            if ck.resolve() != (out / ck.name).resolve():
                shutil.copy(ck, out / ck.name)
    merged["models"] = {m: merged["models"][m] for m in MODELS if m in merged["models"]}
    merged["command"] = " ; ".join(p["command"] for p in merged["parts"])
    merged["total_seconds"] = max(p["total_seconds"] or 0 for p in merged["parts"])
    (out / "egnn_dynamics.json").write_text(json.dumps(merged, indent=1) + "\n")
    return merged


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few trajectories, 1 epoch (pipeline check)")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--epochs", type=int, default=None, help="max epochs of every trained model")
    p.add_argument("--time-limit", type=float, default=None, help="wall-clock budget per trained model (s)")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--k", type=int, default=5, help="rollout length of the multi-step loss")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--finetune-epochs", type=int, default=None,
                   help="egnn_finetune: the last N of --epochs are multi-step fine-tuning (default: half)")
    p.add_argument("--init-dir", default=None, help=argparse.SUPPRESS)  # removed: a clear error below
    p.add_argument("--finetune-time", default=None, help=argparse.SUPPRESS)  # removed: a clear error below
    p.add_argument("--finetune-lr-factor", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--checkpoint-dir", default=None,
                   help="also save every trained model as <dir>/<model>_s<seed>.pt (per-seed checkpoints, e.g. "
                        "results/egnn_dynamics_seeds/ckpt/ for energy_dynamics.py)")
    p.add_argument("--log-every", type=int, default=1)
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted call with the same settings in --out: keep the models already in its "
                        "egnn_dynamics.json, go on from the saved training state of the one it stopped in")
    p.add_argument("--stop-after-epoch", type=int, default=None, metavar="N",
                   help="end this call once a model has N epochs done (state kept in --out); go on with --resume")
    p.add_argument("--merge", default=None,
                   help="comma-separated result folders of partial runs (--models subsets run in parallel): "
                        "merge their JSON and checkpoints into --out and exit")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    p.add_argument("--aggregate", default=None,
                   help="a folder of per-seed runs (*.json written by this script, one seed each, e.g. "
                        "results/egnn_dynamics_seeds/): write mean +- s.e. per model to --summary and exit")
    p.add_argument("--summary", default=str(HERE / "results" / "egnn_dynamics_seeds.json"))
    args = p.parse_args(argv)
    if args.finetune_time is not None or args.init_dir is not None:
        raise SystemExit("--finetune-time and --init-dir were removed: the protocol (benchmarks/README.md) budgets "
                         "epochs, never wall-clock time. egnn_finetune now pre-trains on one step and fine-tunes "
                         "within --epochs; give the fine-tuning share with --finetune-epochs N.")
    if args.aggregate:
        return aggregate(Path(args.aggregate), Path(args.summary))
    device = str(check_device(args.device))  # fails fast, before any data is loaded
    if args.merge:
        return merge([Path(d) for d in args.merge.split(",")], Path(args.out))

    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in MODELS:
            raise SystemExit(f"unknown model {m!r}; choose from {MODELS}")
    epochs = args.epochs or (1 if args.quick else 40)
    ft_epochs = args.finetune_epochs if args.finetune_epochs is not None else max(1, epochs // 2)
    if "egnn_finetune" in models and not 1 <= ft_epochs <= epochs - 1 + args.quick:
        raise SystemExit(f"--finetune-epochs {ft_epochs} must lie between 1 and --epochs - 1 = {epochs - 1} "
                         "(one-step pre-training + multi-step fine-tuning share the --epochs budget)")
    time_limit = args.time_limit or (15.0 if args.quick else 600.0)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {}
    for kind in ("trajectories", "crystal_trajectories"):
        tr, va, te = (load_particles(kind, s) for s in ("train", "val", "test"))
        if args.quick:
            tr, va, te = tr[:8], va[:3], te[:4]
        data[kind] = (tr, va, te)
    steps = 39
    results = {
        "command": "python benchmarks/egnn_dynamics.py " + " ".join(_without_resume_flags(
            argv if argv is not None else sys.argv[1:])),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpu_count": os.cpu_count(), "load_average_start": os.getloadavg(), **device_info(device)},
        "protocol": {"epochs": epochs, "time_limit_s": time_limit, "lr": args.lr, "batch_size": 32,
                     "hidden": args.hidden, "layers": args.layers, "multistep_k": args.k, "rollout_steps": steps,
                     "dt": DT, "quick": args.quick, "seed": args.seed,
                     "finetune_epochs": ft_epochs if "egnn_finetune" in models else None,
                     "finetune_lr_factor": args.finetune_lr_factor,
                     "metrics": "test split, mobile atoms; pos MSE = mean |min_image(dx)|^2 (summed over x, y)"},
        "models": {},
    }
    previous = out / "egnn_dynamics.json"
    if args.resume and previous.exists():
        before = json.loads(previous.read_text())
        if before["protocol"] != results["protocol"]:
            raise SystemExit(f"--resume: {previous} was written with other settings ({before['protocol']}); rerun the "
                             "command that wrote it, or give another --out")
        results["models"] = {m: e for m, e in before["models"].items() if m in models}
        results["machine"]["resumed_from"] = before["machine"]
    elif not args.resume:
        for stale in out.glob("resume_*.pt"):  # a fresh call starts every model afresh
            stale.unlink()
    t_all = time.perf_counter()
    for k, name in enumerate(models):
        tr, va, te = data["crystal_trajectories" if name in CRYSTAL else "trajectories"]
        if name in results["models"]:
            print(f"{name}: done in an earlier call ({previous}), kept", flush=True)
            continue
        seed_everything(args.seed + k)
        model = make_model(name, args.hidden, args.layers)
        entry = {"label": LABELS[name], "config": model.config, "model_class": type(model).__name__}
        print(f"{name}: {LABELS[name]}", flush=True)
        if name.startswith("ballistic"):
            entry["train"] = None
        else:
            mobile_only = name != "egnn_crystal_free"
            val_pairs = trajectory_pairs(va)[::3]
            if name == "egnn_multistep":
                train_set, loss_fn = rollout_windows(tr, args.k, stride=args.k), _multistep_loss(args.k)
            else:
                train_set, loss_fn = trajectory_pairs(tr), _one_step_loss(mobile_only)
            try:
                if name == "egnn_finetune":
                    entry["train"] = pretrain_finetune(model, tr, train_set, val_pairs, epochs, ft_epochs, args,
                                                       time_limit, args.seed + k, device, out / f"resume_{name}")
                    entry["label"] = (f"{LABELS[name]} ({entry['train']['pretrain_epochs']} + "
                                      f"{entry['train']['finetune_epochs']} epochs)")
                    train_set = rollout_windows(tr, args.k, stride=args.k)
                else:
                    entry["train"] = train(model, train_set, val_pairs, loss_fn, epochs, args.lr, time_limit,
                                           args.seed + k, args.log_every, desc=name, device=device,
                                           state_file=out / f"resume_{name}.pt",
                                           stop_after_epoch=args.stop_after_epoch)
            except Paused as paused:
                print(paused, flush=True)
                results["paused"] = str(paused)
                break
            entry["train"]["n_train_graphs"] = len(train_set)
        entry["test"] = evaluate_dynamics(model, te, steps, device)
        entry["load_average"] = os.getloadavg()
        t = entry["test"]
        print(f"{name:18s} one-step pos MSE {t['one_step_pos_mse']:.5f} vel MSE {t['one_step_vel_mse']:.4f} | "
              f"rollout pos MSE step 39 {t['rollout_pos_mse_final']:.3f} mean {t['rollout_pos_mse_mean']:.3f} | "
              f"speed W1 {t['speed_w1']:.3f}" + (f" | crystal drift {t['crystal_drift_final']:.3f}"
                                                  if "crystal_drift_final" in t else ""), flush=True)
        if not name.startswith("ballistic"):
            save_checkpoint(out / f"dyn_{name}.pt", model, config=model.config,
                            metrics={k2: v for k2, v in t.items() if not isinstance(v, list)})
            if args.checkpoint_dir:
                ckdir = Path(args.checkpoint_dir)
                ckdir.mkdir(parents=True, exist_ok=True)
                save_checkpoint(ckdir / f"{name}_s{args.seed}.pt", model, config=model.config,
                                metrics={"seed": args.seed, "epochs": epochs, "command": results["command"],
                                         **{k2: v for k2, v in t.items() if not isinstance(v, list)}})
        results["models"][name] = entry
        # write after every model, so a long run can be inspected (and merged) while it goes on
        results["total_seconds"] = time.perf_counter() - t_all
        results["machine"]["load_average_end"] = os.getloadavg()
        (out / "egnn_dynamics.json").write_text(json.dumps(results, indent=1) + "\n")
        for done in out.glob(f"resume_{name}*.pt"):  # its numbers are written: the training state is not needed
            done.unlink()
    return results


METRICS = ("one_step_pos_mse", "one_step_vel_mse", "rollout_pos_mse_mean", "rollout_pos_mse_final", "speed_w1",
           "crystal_drift_final")


def aggregate(folder: Path, summary: Path) -> dict:
    """Per-seed runs (``folder/*.json``, each the ``egnn_dynamics.json`` of one ``--seed``, equal epoch budgets,
    ``--time-limit`` far above the run time) -> mean +- s.e. of every test metric per model, the validation
    curves and their plateau flags (``course_lib.stats``), written to ``summary`` and ``summary.md``."""
    from course_lib import stats

    runs = [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))]
    if not runs:
        raise SystemExit(f"no *.json in {folder}")
    rows: dict[str, list] = {}
    for run in runs:
        seed = run["protocol"]["seed"]
        for name, entry in run["models"].items():
            rows.setdefault(name, []).append((seed, run, entry))
    rows = {name: rows[name] for name in sorted(rows, key=lambda n: MODELS.index(n) if n in MODELS else len(MODELS))}
    shown = folder.resolve().relative_to(HERE.parent) if folder.resolve().is_relative_to(HERE.parent) else folder
    out = {"command": f"python benchmarks/egnn_dynamics.py --aggregate {shown}",
           "seed_commands": sorted({r["command"] for r in runs}), "models": {},
           "test_set": "the test split (25 box, 20 crystal trajectories) of the same simulation (other initial "
                       "conditions, same physics and density): an interpolation test of the learned dynamics"}
    for name, items in rows.items():
        seeds = [seed for seed, _, _ in items]
        if len(set(seeds)) != len(seeds):
            raise SystemExit(f"{name}: a seed appears twice in {folder}")
        budgets = {r["protocol"]["epochs"] for _, r, _ in items}
        m = {"label": items[0][2]["label"], "seeds": seeds, "epoch_budget": sorted(budgets)}
        for key in METRICS:
            vals = [e["test"][key] for _, _, e in items if key in e["test"]]
            if len(vals) == len(items):
                summ = stats.summarize(vals)
                m[key] = {"values": vals, "mean": summ.mean, "se": summ.se}
        if items[0][2].get("train"):
            curves = [[h["val"] for h in e["train"]["history"]] for _, _, e in items]
            m["val_curves"] = curves
            m["epochs_run"] = [e["train"]["epochs_run"] for _, _, e in items]
            m["stop_reason"] = [e["train"]["stop_reason"] for _, _, e in items]
            m["best_epoch"] = [e["train"]["best_epoch"] for _, _, e in items]
            m["plateaued"] = [stats.plateau(c)["plateaued"] for c in curves]
        out["models"][name] = m
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps(out, indent=1) + "\n")
    lines = [f"Made by `{out['command']}` from runs {', '.join(f'`{c}`' for c in out['seed_commands'])}.", "",
             "| model | seeds | epochs | one-step pos MSE | rollout pos MSE (mean of steps 1-39) | speed W1 | "
             "at a plateau |", "|---|---|---|---|---|---|---|"]
    for m in out["models"].values():
        cell = lambda key, m=m: f"{m[key]['mean']:.4g} ± {m[key]['se']:.2g}" if key in m else "—"  # noqa: E731
        plateau = f"{sum(m['plateaued'])}/{len(m['plateaued'])}" if "plateaued" in m else "—"
        lines.append(f"| {m['label']} | {len(m['seeds'])} | {', '.join(map(str, m['epoch_budget']))} | "
                     f"{cell('one_step_pos_mse')} | {cell('rollout_pos_mse_mean')} | {cell('speed_w1')} | {plateau} |")
    summary.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


if __name__ == "__main__":
    main()
