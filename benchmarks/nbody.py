"""Reproduce the N-body table of the EGNN paper (Satorras, Hoogeboom & Welling 2021, Table 2) on a CPU.

Usage (from the repository root)::

    python benchmarks/nbody.py --seed 1              # one seed, all models -> benchmarks/results/nbody_seeds/seed1.json
    python benchmarks/nbody.py --aggregate benchmarks/results/nbody_seeds   # -> benchmarks/results/nbody.{json,md}
    python benchmarks/nbody.py --quick               # pipeline check, < 2 minutes, writes to a temp folder
    python benchmarks/nbody.py --models egnn,gnn --epochs 50 --out /tmp/nbody.json
    python benchmarks/nbody.py --quick --device cuda # train and time on the GPU

``--device``: ``cpu`` (the default; the committed results are CPU results) or ``cuda`` (data, models and batches on
the GPU; the forward time synchronised with ``torch.cuda.synchronize()``, its thread settings then only affect the
host); recorded as ``machine.device``.

Protocol (the paper's, see benchmarks/README.md for the details and the differences):

* data: ``course_lib.simulate.nbody`` (regenerated charged 5-body set, frame 30 -> positions at frame 40),
  3000 train / 2000 validation / 2000 test; ``--quick``: the first 300 / 200 / 200;
* loss: MSE of the predicted positions (mean over particles and coordinates), Adam, batch 100
  (shuffled every epoch, last incomplete batch dropped, as in the authors' code), weight decay 1e-12,
  learning rates EGNN 5e-4, GNN 1e-3, Radial Field 2e-4; no scheduler, no gradient clipping;
* Linear (``x + t v``) is fitted in closed form (exact least squares of the training MSE);
* model selection: validation MSE after **every** epoch; the weights of the best epoch are kept; the
  test MSE is computed **once**, with those weights (the test set plays no part in any choice);
* early stopping: stop after ``patience`` (50) epochs without a better validation MSE, or at ``max_epochs``
  (EGNN 300, GNN 400, RF 1000), or, only with ``--time-limit S``, after S seconds of training (a safety
  net; it makes results depend on the load); the JSON records which one fired (``stop_reason``); a run that
  stopped at its cap is rerun with a larger ``--epochs`` into a new file, and ``--aggregate`` keeps, for the same
  (model, seed), the run with the largest cap (no schedule depends on the cap, so the longer run continues the
  shorter one) and lists the replaced file under ``superseded``;
* forward time: median over repeated ``model(batch)`` calls on one batch of 100 test systems,
  ``torch.no_grad()``, CPU, with 2 threads and with 1 (the paper timed a GTX 1080 Ti GPU: compare orders only);
* threads: training runs with 1 torch thread by default: on a 2-core machine shared with other jobs, two
  threads wait for each other and an epoch can take 10x longer (measured), while one thread is stable.

Outputs: ``<out>.json`` (every number, per-epoch curves, machine info, the exact command), ``<out>.md``
(table side by side with the paper) and ``<out stem>_egnn.pt`` (the trained EGNN,
``course_lib.train.save_checkpoint``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import course_lib  # noqa: E402
from course_lib.graph import count_parameters  # noqa: E402
from course_lib.models.nbody import NBODY_MODELS  # noqa: E402
from course_lib.simulate.nbody import load_nbody_arrays  # noqa: E402
from course_lib.train import save_checkpoint, upgrade_config  # noqa: E402
from course_lib.utils import DEVICE_HELP, check_device, synchronize  # noqa: E402

SCHEMA_VERSION = 1
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "nbody.json"
ALL_MODELS = ("linear", "gnn", "rf", "egnn")
#: Seed offset of each model (by name, so `--models egnn` reproduces the EGNN of the full run exactly).
SEED_OFFSET = {"linear": 0, "gnn": 1, "rf": 2, "egnn": 3}
BATCH_SIZE = 100
WEIGHT_DECAY = 1e-12  # the authors' default (main_nbody.py), i.e. practically none

#: Table 2 of the paper: test MSE and forward time (s) per batch of 100 on a GTX 1080 Ti GPU.
PUBLISHED = {
    "linear": {"label": "Linear", "test_mse": 0.0819, "forward_s": 0.0001},
    "se3_transformer": {"label": "SE(3) Transformer", "test_mse": 0.0244, "forward_s": 0.1346},
    "tfn": {"label": "Tensor Field Network", "test_mse": 0.0155, "forward_s": 0.0343},
    "gnn": {"label": "GNN", "test_mse": 0.0107, "forward_s": 0.0032},
    "rf": {"label": "Radial Field", "test_mse": 0.0104, "forward_s": 0.0039},
    "egnn": {"label": "EGNN", "test_mse": 0.0071, "forward_s": 0.0062},
}

#: Training settings per model. lr: the paper's. max_epochs / patience: ours (see benchmarks/README.md), in
#: epochs so that a run is reproducible whatever the load; time_limit_s: an optional wall-clock safety net.
FULL = {
    "egnn": {"lr": 5e-4, "max_epochs": 300, "patience": 50, "time_limit_s": None},
    "gnn": {"lr": 1e-3, "max_epochs": 400, "patience": 50, "time_limit_s": None},
    "rf": {"lr": 2e-4, "max_epochs": 1000, "patience": 50, "time_limit_s": None},
    "linear": {"lr": None, "max_epochs": 0, "patience": None, "time_limit_s": None},
}
QUICK = {
    "egnn": {"lr": 5e-4, "max_epochs": 6, "patience": 5, "time_limit_s": 30.0},
    "gnn": {"lr": 1e-3, "max_epochs": 6, "patience": 5, "time_limit_s": 30.0},
    "rf": {"lr": 2e-4, "max_epochs": 6, "patience": 5, "time_limit_s": 30.0},
    "linear": {"lr": None, "max_epochs": 0, "patience": None, "time_limit_s": None},
}
FULL_SIZES = {"train": 3000, "valid": 2000, "test": 2000}
QUICK_SIZES = {"train": 300, "valid": 200, "test": 200}


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


class Split:
    """One split as dense float32 tensors: pos, vel, target [S, 5, 3], charge [S, 5]."""

    def __init__(self, name: str, n: int | None):
        a = load_nbody_arrays(name, n=n)
        self.name = name
        self.pos = torch.from_numpy(np.ascontiguousarray(a["pos"], dtype=np.float32))
        self.vel = torch.from_numpy(np.ascontiguousarray(a["vel"], dtype=np.float32))
        self.charge = torch.from_numpy(a["charge"].astype(np.float32))
        self.target = torch.from_numpy(np.ascontiguousarray(a["target_pos"], dtype=np.float32))
        self.n, self.m = self.pos.shape[:2]

    def to(self, device) -> Split:
        """Move the split's tensors to ``device`` (in place); its batches are then built there."""
        for key in ("pos", "vel", "charge", "target"):
            setattr(self, key, getattr(self, key).to(device))
        return self

    def batch(self, idx: torch.Tensor) -> Data:
        """The systems ``idx`` as one PyG-style batch: pos/vel/target_pos [B*5, 3], charge, batch [B*5]."""
        B = len(idx)
        idx = idx.to(self.pos.device)
        data = Data(pos=self.pos[idx].reshape(-1, 3), vel=self.vel[idx].reshape(-1, 3),
                    charge=self.charge[idx].reshape(-1), target_pos=self.target[idx].reshape(-1, 3),
                    batch=torch.arange(B, device=self.pos.device).repeat_interleave(self.m))
        data.num_graphs = B
        return data


@torch.no_grad()
def mse(model: torch.nn.Module, split: Split, chunk: int = 500) -> float:
    """Position MSE over a whole split (mean over systems, particles and coordinates), eval mode."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, split.n, chunk):
        b = split.batch(torch.arange(start, min(start + chunk, split.n)))
        err = (model(b) - b.target_pos).double()
        total += float((err * err).sum())
        count += err.numel()
    model.train(was)
    return total / count


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


def train(name: str, model: torch.nn.Module, data: dict[str, Split], lr: float, max_epochs: int,
          patience: int | None, time_limit_s: float | None, seed: int, progress: bool = True,
          log_every: int = 0, clip: float | None = None) -> dict:
    """Adam on the position MSE; validation after every epoch; returns the record of the run.

    The best-validation weights are loaded into ``model`` at the end. The global gradient norm of every
    step is measured (before clipping); the history keeps its median and maximum per epoch. ``clip``:
    clip the global gradient norm to this value (``None``: no clipping, the paper's setting).
    """
    from tqdm.auto import tqdm

    train_split = data["train"]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
    hist_train, hist_val, epoch_end_s, grad_med, grad_max = [], [], [], [], []
    max_norm = math.inf if clip is None else float(clip)
    best_val, best_epoch, best_state, t_best = math.inf, 0, copy.deepcopy(model.state_dict()), 0.0
    since_best, stop_reason = 0, "max_epochs"
    n_batches = train_split.n // BATCH_SIZE
    t0 = time.perf_counter()
    bar = tqdm(range(1, max_epochs + 1), desc=name, disable=not progress, leave=False, file=sys.stderr)
    model.train()
    for epoch in bar:
        perm = torch.randperm(train_split.n, generator=gen)
        total, norms = 0.0, []
        for k in range(n_batches):
            b = train_split.batch(perm[k * BATCH_SIZE : (k + 1) * BATCH_SIZE])
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(model(b), b.target_pos)
            if not torch.isfinite(loss):  # recorded, not raised: a diverged run is a result
                stop_reason = f"diverged (loss {float(loss)} at epoch {epoch})"
                break
            loss.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)))
            opt.step()
            total += float(loss.detach())
        if stop_reason.startswith("diverged"):
            break
        hist_train.append(total / n_batches)
        grad_med.append(statistics.median(norms))
        grad_max.append(max(norms))
        val = mse(model, data["valid"])
        hist_val.append(val)
        elapsed = time.perf_counter() - t0
        epoch_end_s.append(elapsed)
        if val < best_val:
            best_val, best_epoch, t_best, since_best = val, epoch, elapsed, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
        bar.set_postfix(train=f"{hist_train[-1]:.4f}", val=f"{val:.4f}", best=f"{best_val:.4f}@{best_epoch}")
        if log_every and epoch % log_every == 0:
            print(f"    {name} epoch {epoch}: train {hist_train[-1]:.5f} val {val:.5f} (best {best_val:.5f} @ "
                  f"{best_epoch}) {elapsed:.0f} s, load {_loadavg()}", flush=True)
        if patience is not None and since_best >= patience:
            stop_reason = "patience"
            break
        if time_limit_s is not None and elapsed > time_limit_s:
            stop_reason = "time_limit"
            break
    bar.close()
    wall = time.perf_counter() - t0
    model.load_state_dict(best_state)
    return {
        "lr": lr, "max_epochs": max_epochs, "patience": patience, "time_limit_s": time_limit_s, "clip": clip,
        "epochs_run": len(hist_val), "best_epoch": best_epoch, "stop_reason": stop_reason,
        "val_mse": best_val, "train_wall_s": wall, "wall_to_best_s": t_best,
        "s_per_epoch": wall / max(len(hist_val), 1),
        "history": {"train_mse": [round(v, 7) for v in hist_train], "val_mse": [round(v, 7) for v in hist_val],
                    "elapsed_s": [round(v, 2) for v in epoch_end_s],
                    "grad_norm_median": [float(f"{v:.4g}") for v in grad_med],
                    "grad_norm_max": [float(f"{v:.4g}") for v in grad_max]},
    }


def fit_linear(model, data: dict[str, Split]) -> dict:
    """Closed-form least squares of the training MSE (no epochs)."""
    tr = data["train"]
    t0 = time.perf_counter()
    fitted = model.fit_closed_form(tr.pos, tr.vel, tr.target)
    wall = time.perf_counter() - t0
    return {"lr": None, "max_epochs": 0, "patience": None, "time_limit_s": None, "clip": None, "epochs_run": 0,
            "best_epoch": 0, "stop_reason": "closed_form", "val_mse": mse(model, data["valid"]),
            "train_wall_s": wall, "wall_to_best_s": wall, "s_per_epoch": None, "fitted": fitted,
            "history": {"train_mse": [], "val_mse": [], "elapsed_s": []}}


@torch.no_grad()
def forward_time(model: torch.nn.Module, split: Split, repeats: int, threads: int = 2,
                 max_seconds: float = 30.0) -> dict:
    """Median wall time of ``model(batch)`` for one batch of 100 test systems, no_grad, on the split's device
    (CUDA: synchronised before the start and before the stop of every call).

    ``repeats`` timed calls after a warm-up, fewer if they take longer than ``max_seconds`` in all
    (a heavily loaded machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model.eval()
        b = split.batch(torch.arange(min(BATCH_SIZE, split.n)))
        device = b.pos.device
        for _ in range(max(3, repeats // 10)):  # warm-up
            model(b)
        times = []
        start = time.perf_counter()
        for _ in range(repeats):
            synchronize(device)
            t0 = time.perf_counter()
            model(b)
            synchronize(device)
            times.append(time.perf_counter() - t0)
            if time.perf_counter() - start > max_seconds and len(times) >= 5:
                break
    finally:
        torch.set_num_threads(old)
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median_s": statistics.median(times), "q1_s": q[0], "q3_s": q[2], "repeats": len(times),
            "threads": threads, "batch_size": len(b.pos) // split.m}


# --------------------------------------------------------------------------------------------
# machine info, output files
# --------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_info(threads: int, device: str = "cpu") -> dict:
    return {
        "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "course_lib": course_lib.__version__, "train_threads": threads, "forward_threads": [2, 1],
        "device": device, **({"cuda": torch.cuda.get_device_name(device)} if device.startswith("cuda") else {}),
    }


def _rel(path: Path) -> str:
    """``path`` relative to the repository root when inside it (portable JSON), else absolute."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def markdown(res: dict) -> str:
    """The results table, ours next to the paper's, with the command and the machine on top."""
    m = res["machine"]
    lines = [
        "# EGNN N-body benchmark (Satorras et al. 2021, Table 2), reproduced on CPU",
        "",
        f"Command: `{res['command']}`",
        "",
        f"Written {res['created']} in {res['total_wall_s']:.0f} s on {m['cpu']} ({m['cpu_count']} cores, "
        f"shared), torch {m['torch']}, {m['train_threads']} training thread(s), forward timed with 2 and 1 threads. "
        f"Load average (1/5/15 min) at start {res['load_start']}, at end {res['load_end']}. "
        f"Data: regenerated charged 5-body set (`data/README_nbody.md`), {res['data']['sizes']} "
        f"train/valid/test systems. Test MSE at the best-validation epoch (validation after every epoch).",
        "",
        "| model | test MSE (ours) | test MSE (paper) | val MSE | epochs run | best epoch | stop | "
        "time to best (s) | total train time (s) | forward / 100 (ours, CPU 2 thr, ms) | "
        "forward / 100 (ours, CPU 1 thr, ms) | forward (paper, GPU, ms) | parameters |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = ["linear", "se3_transformer", "tfn", "gnn", "rf", "egnn"]
    for key in order:
        pub = PUBLISHED[key]
        r = res["models"].get(key)
        if r is None:
            lines.append(f"| {pub['label']} | not run | {pub['test_mse']:.4f} | - | - | - | - | - | - | - | - | "
                         f"{1000 * pub['forward_s']:.1f} | - |")
            continue
        lines.append(
            f"| {r['label']} | **{r['test_mse']:.4f}** | {pub['test_mse']:.4f} | {r['val_mse']:.4f} | "
            f"{r['epochs_run']} | {r['best_epoch']} | {r['stop_reason']} | {r['wall_to_best_s']:.0f} | "
            f"{r['train_wall_s']:.0f} | {1000 * r['forward']['median_s']:.2f} | "
            f"{1000 * r['forward_1thread']['median_s']:.2f} | {1000 * pub['forward_s']:.1f} | {r['params']} |"
        )
    lines += ["", f"Ordering EGNN < GNN < Linear reproduced: {res['checks'].get('ordering_egnn_gnn_linear')}; "
              f"EGNN test MSE <= 0.0071: {res['checks'].get('egnn_target_0.0071')}.", ""]
    if "linear" in res["models"]:
        lines.append(f"Linear: `x + t v` with t = {res['models']['linear']['fitted']['t']:.4f} fitted in closed form "
                     "on the training set (no epochs).")
    lines += [
        "SE(3) Transformer and Tensor Field Network were not run (optional in this reproduction).",
        "Forward times are CPU medians of `model(batch)` under `torch.no_grad()` with 2 and with 1 thread(s); the",
        "paper's are on a GTX 1080 Ti GPU, so compare their order, not their values. Timings on a shared machine",
        "are inflated by the load above (2 threads suffer most: they wait for each other when a core is busy).",
        "",
        f"Raw numbers: `{Path(res['out_json']).name}`; trained EGNN: `{Path(res['checkpoint']).name}`."
        if res.get("checkpoint") else f"Raw numbers: `{Path(res['out_json']).name}`.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# several seeds: one summary file (the experiment protocol of benchmarks/README.md)
# --------------------------------------------------------------------------------------------

AGG_SCHEMA_VERSION = 2
TRAINED = ("gnn", "rf", "egnn")


def run_row(name: str, seed: int, r: dict, source: str) -> dict:
    """One run of one seed, as stored in the summary: metrics, budget, plateau, curves."""
    from course_lib import stats

    row = {"model": name, "seed": seed, "label": r["label"], "test_mse": r["test_mse"], "val_mse": r["val_mse"],
           "params": r["params"], "lr": r["lr"], "max_epochs": r["max_epochs"], "patience": r["patience"],
           "epochs_run": r["epochs_run"], "best_epoch": r["best_epoch"], "stop_reason": r["stop_reason"],
           "train_wall_s": r["train_wall_s"], "s_per_epoch": r["s_per_epoch"],
           "forward_1thread_ms": 1000 * r["forward_1thread"]["median_s"], "source": source}
    if name == "linear":
        row.update(plateau=None, val_curve=[], train_curve=[], grad_norm_max=[], max_train_mse_after_best=None,
                   fitted=r.get("fitted"))
        return row
    h = r["history"]
    after = h["train_mse"][r["best_epoch"]:]  # epochs after the best one (1-based best_epoch)
    row.update(plateau=stats.plateau(h["val_mse"]), val_curve=h["val_mse"], train_curve=h["train_mse"],
               grad_norm_max=h.get("grad_norm_max", []), grad_norm_median=h.get("grad_norm_median", []),
               max_train_mse_after_best=max(after) if after else None)
    return row


def _same_settings(name: str, a: dict, b: dict) -> bool:
    """Two runs of model ``name`` differ at most in their budget: the epoch cap, the early-stopping patience or the
    wall-clock limit (learning rate, clipping and the model's configuration equal, old configuration keys read with
    today's names). The patience only decides when a run stops, so it is part of the budget."""
    cls = NBODY_MODELS[name][0]
    a, b = ({**r, "config": upgrade_config(cls, r.get("config", {}))} for r in (a, b))
    keys = ("lr", "clip", "config")
    return all(json.dumps(a.get(k), sort_keys=True) == json.dumps(b.get(k), sort_keys=True) for k in keys)


def _budget(r: dict) -> tuple[int, int]:
    """A run's budget: (epoch cap, early-stopping patience; a run without early stopping has the cap's)."""
    return (r["max_epochs"], r["patience"] if r["patience"] is not None else r["max_epochs"])


def _curve_agreement(old: list, new: list) -> dict:
    """How far the first ``len(old)`` epochs of a longer run reproduce an earlier run's validation curve."""
    a, b = np.asarray(old, dtype=float), np.asarray(new[: len(old)], dtype=float)
    rel = np.abs(a - b) / np.maximum(np.abs(a), 1e-12)
    off = np.nonzero(rel > 1e-5)[0]
    return {"epochs_compared": int(len(a)), "max_rel_diff": float(rel.max()) if len(a) else 0.0,
            "first_epoch_off_by_1e-5": int(off[0]) + 1 if len(off) else None}


def _pick_runs(files: list[Path], per_seed: list[dict]) -> tuple[list[tuple], list[dict]]:
    """One run per (model, seed): ``[(file, result, model name, run)]`` and the superseded runs.

    The same (model, seed) in several files is refused, except when the runs differ only in their budget: the
    epoch cap (``--epochs``) and the early-stopping patience (``--patience``). Then the run with the largest
    budget is kept; it must be at least as large in both (else the runs are refused). A larger cap or patience
    changes no epoch before the shorter run stopped (no schedule depends on ``max_epochs`` or ``patience``;
    initialisation and batch order come from the seed), so the longer run continues the shorter one; the summary
    records which file replaced which, why, and how closely the longer run reproduces the shorter one's
    validation curve."""
    groups: dict[tuple, list] = {}
    for f, res in zip(files, per_seed):
        for name, r in res["models"].items():
            groups.setdefault((name, res["seed"]), []).append((f, res, name, r))
    kept, superseded = [], []
    for (name, seed), runs in groups.items():
        budgets = [_budget(r) for *_, r in runs]
        same = all(_same_settings(name, runs[0][3], x[3]) for x in runs)
        if len(runs) > 1 and (len(set(budgets)) < len(budgets) or not same):
            raise SystemExit(f"a model was run twice with the same seed: {name} seed {seed} in "
                             f"{[_rel(x[0]) for x in runs]} (only runs that differ in their budget alone, the epoch "
                             "cap and the patience, are merged: the largest budget is kept)")
        runs = sorted(runs, key=lambda x: _budget(x[3]))
        best = runs[-1]
        smaller = [x for x in runs[:-1] if not all(o <= n for o, n in zip(_budget(x[3]), _budget(best[3])))]
        if smaller:
            raise SystemExit(f"{name} seed {seed}: no run has the largest epoch cap and the largest patience "
                             f"({[(_rel(x[0]), _budget(x[3])) for x in runs]}); rerun with both at least as large "
                             "as every earlier run's, so that it continues them")
        kept.append(best)
        for f, _, _, r in runs[:-1]:
            if best[3]["epochs_run"] < r["epochs_run"]:
                raise SystemExit(f"{_rel(best[0])} ({name}, seed {seed}) stopped after {best[3]['epochs_run']} epochs, "
                                 f"before the {r['epochs_run']} of {_rel(f)} it would replace")
            why = ("stopped at its epoch cap" if r["stop_reason"] == "max_epochs"
                   else f"stopped by {r['stop_reason']}")
            limit = best[3].get("time_limit_s")
            more_patience = (best[3]["patience"] or 0) > (r["patience"] or 0)
            superseded.append({
                "model": name, "seed": seed, "superseded": _rel(f), "by": _rel(best[0]),
                "old_max_epochs": r["max_epochs"], "new_max_epochs": best[3]["max_epochs"],
                "old_patience": r["patience"], "new_patience": best[3]["patience"],
                "reason": f"{why} ({r['epochs_run']} epochs, best epoch {r['best_epoch']}); rerun with the same seed "
                          f"and settings and a cap of {best[3]['max_epochs']} epochs"
                          + (f" and a patience of {best[3]['patience']} (was {r['patience']})" if more_patience else "")
                          + (f" and a wall-clock limit of {limit:.0f} s ("
                             + ("reached" if best[3]["stop_reason"] == "time_limit" else "not reached") + ")"
                             if limit else ""),
                "old": {k: r[k] for k in ("test_mse", "val_mse", "epochs_run", "best_epoch", "stop_reason")},
                "new": {k: best[3][k] for k in ("test_mse", "val_mse", "epochs_run", "best_epoch", "stop_reason")},
                "old_plateau": _run_plateau(r), "new_plateau": _run_plateau(best[3]),
                "curve_agreement": _curve_agreement(r["history"]["val_mse"], best[3]["history"]["val_mse"]),
            })
    kept.sort(key=lambda x: (x[1]["seed"], ALL_MODELS.index(x[2])))
    return kept, sorted(superseded, key=lambda s: (ALL_MODELS.index(s["model"]), s["seed"]))


def _run_plateau(r: dict) -> dict | None:
    """``course_lib.stats.plateau`` of a run's validation curve (None for the closed-form Linear)."""
    from course_lib import stats

    return stats.plateau(r["history"]["val_mse"]) if r["history"]["val_mse"] else None


def aggregate(folder: Path, out: Path, copy_checkpoint: bool = True) -> dict:
    """Read every ``folder/*.json`` (runs of ``nbody.py``, one seed each, all or some of the models: e.g.
    ``seed1.json`` from ``--models linear,gnn,rf --seed 1`` and ``egnn_seed1.json`` from ``--models egnn
    --seed 1``, which gives the same numbers as one run of all models since every model has its own seed
    offset) and write the summary ``out`` (per-seed rows, mean ± s.e. per model) and its table ``out.md``.
    A (model, seed) found in several files is kept once, from the run with the largest epoch cap
    (``_pick_runs``; the others are listed under ``superseded``)."""
    from course_lib import stats

    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise SystemExit(f"no *.json in {folder}: run python benchmarks/nbody.py --seed S --out {folder}/seedS.json")
    per_file = [json.loads(f.read_text()) for f in files]
    per_file = sorted(zip(files, per_file), key=lambda fr: (fr[1]["seed"], str(fr[0])))
    files, per_seed = [f for f, _ in per_file], [r for _, r in per_file]
    kept, superseded = _pick_runs(files, per_seed)
    rows = [run_row(name, res["seed"], r, _rel(f)) for f, res, name, r in kept]
    used = [(f, r) for f, r in zip(files, per_seed) if any(f == k[0] for k in kept)]
    summary = {}
    for name in ALL_MODELS:
        mine = [r for r in rows if r["model"] == name]
        if not mine:
            continue
        summary[name] = {
            "label": mine[0]["label"], "seeds": [r["seed"] for r in mine],
            "test_mse": [r["test_mse"] for r in mine], "val_mse": [r["val_mse"] for r in mine],
            "test_mse_mean": stats.summarize([r["test_mse"] for r in mine]).mean,
            "test_mse_se": stats.summarize([r["test_mse"] for r in mine]).se,
            "max_epochs": [r["max_epochs"] for r in mine],
            "epochs_run": [r["epochs_run"] for r in mine], "best_epoch": [r["best_epoch"] for r in mine],
            "stop_reason": [r["stop_reason"] for r in mine],
            "plateaued": [None if r["plateau"] is None else r["plateau"]["plateaued"] for r in mine],
            "paper_test_mse": PUBLISHED[name]["test_mse"],
        }
    # the file of the lowest seed's EGNN (its checkpoint is shipped), else the first file
    first = next((res for f, res, name, _ in kept if name == "egnn"), used[0][1])
    res = {
        "schema_version": AGG_SCHEMA_VERSION,
        "benchmark": first["benchmark"],
        "command": f"python benchmarks/nbody.py --aggregate {_rel(Path(folder))}",
        "seed_commands": [r["command"] for _, r in used],
        "seeds": sorted({r["seed"] for _, r in used}),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "data": first["data"], "protocol": first["protocol"], "machine": first["machine"],
        "load": {_rel(f): [r["load_start"], r["load_end"]] for f, r in zip(files, per_seed)},
        "notes": {_rel(f): r["note"] for f, r in zip(files, per_seed) if r.get("note")},
        "published": PUBLISHED, "runs": rows, "summary": summary, "superseded": superseded, "checkpoint": None,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    # the EGNN of the first seed (seed 0)
    if copy_checkpoint and first.get("checkpoint") and (ROOT / first["checkpoint"]).exists():
        ckpt = out.with_name(out.stem + "_egnn.pt")
        if ckpt.resolve() != (ROOT / first["checkpoint"]).resolve():
            shutil.copyfile(ROOT / first["checkpoint"], ckpt)
        res["checkpoint"], res["checkpoint_seed"] = _rel(ckpt), first["seed"]
    out.write_text(json.dumps(res, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown_seeds(res))
    print(f"wrote {_rel(out)} and {out.with_suffix('.md').name}: {len(rows)} runs, seeds {res['seeds']}"
          + (f", {len(superseded)} superseded run(s)" if superseded else ""))
    return res


def markdown_seeds(res: dict) -> str:
    """The table of the summary: mean ± s.e. over seeds next to the paper, budgets and plateaus per seed."""
    from course_lib import stats

    lines = ["# EGNN N-body benchmark (Satorras et al. 2021, Table 2), reproduced on CPU, several seeds", "",
             f"Summary: `{res['command']}`; runs: " + "; ".join(f"`{c}`" for c in res["seed_commands"]), "",
             f"Written {res['created']}. Seeds {res['seeds']}; test MSE at the best-validation epoch of each run; "
             "mean ± standard error over the seeds (n = number of seeds). Data: regenerated charged 5-body set "
             f"(`data/README_nbody.md`), {res['data']['sizes']} train/valid/test systems (the whole training set "
             "in every seed: a seed changes the initialisation and the batch order). Plateau: "
             "`course_lib.stats.plateau` of the validation curve (the last 20 % of the epochs improve the best "
             "value by at most 2 %).", "",
             "| model | test MSE, mean ± s.e. (ours) | test MSE (paper) | per seed | epochs run | best epoch | "
             "stop | plateau reached | forward / 100, CPU 1 thread (ms) | parameters |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key in ("linear", "se3_transformer", "tfn", "gnn", "rf", "egnn"):
        pub = PUBLISHED[key]
        mine = [r for r in res["runs"] if r["model"] == key]
        if not mine:
            lines.append(f"| {pub['label']} | not run | {pub['test_mse']:.4f} | | | | | | | |")
            continue
        s = stats.summarize([r["test_mse"] for r in mine])
        lines.append(
            f"| {mine[0]['label']} | **{s.mean:.4f} ± {s.se:.4f}** (n={s.n}) | {pub['test_mse']:.4f} | "
            + ", ".join(f"{r['test_mse']:.4f}" for r in mine) + " | "
            + ", ".join(str(r["epochs_run"]) for r in mine) + " | "
            + ", ".join(str(r["best_epoch"]) for r in mine) + " | "
            + ", ".join(r["stop_reason"] for r in mine) + " | "
            + ", ".join("-" if r["plateau"] is None else ("yes" if r["plateau"]["plateaued"] else "no")
                        for r in mine) + " | "
            + f"{statistics.median(r['forward_1thread_ms'] for r in mine):.2f} | {mine[0]['params']} |")
    caps = {key: sorted({r["max_epochs"] for r in res["runs"] if r["model"] == key}) for key in TRAINED}
    patience = sorted({r["patience"] for r in res["runs"] if r["model"] in TRAINED and r["patience"] is not None})
    lines += ["", "Budgets (epochs, batch 100, 30 steps per epoch), the epoch cap of the runs: "
              + ", ".join(f"{PUBLISHED[k]['label']} {'/'.join(map(str, c))}" for k, c in caps.items() if c)
              + f"; early stopping after {'/'.join(map(str, patience))} epochs without a better validation MSE. "
              "The paper's authors trained up to 10,000 epochs. SE(3) Transformer and Tensor Field Network were "
              "not run.", ""]
    if res.get("superseded"):
        lines += ["Runs replaced by a rerun with a larger epoch cap (same seed and settings; a larger cap changes no "
                  "epoch below the smaller one, so the longer run continues the shorter one; the shorter run's file "
                  "is kept and not counted):", "",
                  "| model | seed | replaced | by | why | old: test MSE, epochs, best, stop, plateau | "
                  "new: test MSE, epochs, best, stop, plateau | validation curves agree over the old epochs (max rel. "
                  "diff) |",
                  "|---|---|---|---|---|---|---|---|"]
        for s in res["superseded"]:
            o, n = s["old"], s["new"]
            pl = ["-" if p is None else f"{'yes' if p['plateaued'] else 'no'} ({100 * p['last_window_gain']:.1f} %)"
                  for p in (s["old_plateau"], s["new_plateau"])]
            lines.append(
                f"| {PUBLISHED[s['model']]['label']} | {s['seed']} | `{Path(s['superseded']).name}` (cap "
                f"{s['old_max_epochs']}, patience {s.get('old_patience', '-')}) | `{Path(s['by']).name}` (cap "
                f"{s['new_max_epochs']}, patience {s.get('new_patience', '-')}) | {s['reason']} | "
                f"{o['test_mse']:.4f}, {o['epochs_run']}, {o['best_epoch']}, {o['stop_reason']}, {pl[0]} | "
                f"{n['test_mse']:.4f}, {n['epochs_run']}, {n['best_epoch']}, {n['stop_reason']}, {pl[1]} | "
                f"{s['curve_agreement']['epochs_compared']} epochs, {s['curve_agreement']['max_rel_diff']:.1e} |")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="300/200/200 systems, 6 epochs: a pipeline check (< 2 min)")
    p.add_argument("--models", default=",".join(ALL_MODELS), help=f"comma-separated subset of {','.join(ALL_MODELS)}")
    p.add_argument("--epochs", type=int, default=None, help="override max_epochs of every trained model")
    p.add_argument("--patience", type=int, default=None, help="override the early-stopping patience (epochs)")
    p.add_argument("--time-limit", type=float, default=None, help="override the per-model wall-clock budget (s)")
    p.add_argument("--out", default=None,
                   help="results JSON (default: benchmarks/results/nbody_seeds/seed<S>.json; "
                        f"--aggregate: {DEFAULT_OUT.relative_to(ROOT)}; --quick: a temporary folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for training (default 1: on a shared 2-core machine, 2 threads contend with "
                        "other jobs and run many times slower); forward timing uses 1 and 2 threads")
    p.add_argument("--timing-repeats", type=int, default=None, help="forward-time repeats (default 100, quick 20)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("--log-every", type=int, default=0, help="print a line every N epochs (0: never)")
    p.add_argument("--aggregate", default=None, metavar="FOLDER",
                   help="no training: summarise FOLDER/seed*.json (one run per seed) into --out (default "
                        "benchmarks/results/nbody.json) and its .md")
    p.add_argument("--no-checkpoint", action="store_true",
                   help="with --aggregate: do not copy the first seed's EGNN checkpoint next to --out")
    p.add_argument("--set", action="append", default=[], metavar="MODEL.KEY=VALUE",
                   help="model constructor argument, e.g. --set egnn.coord_range=3 (value parsed as JSON); "
                        "also MODEL.lr=..., for ablations")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    device = str(check_device(args.device))  # fails fast, before any data is loaded
    if args.aggregate:
        return aggregate(Path(args.aggregate), Path(args.out) if args.out else DEFAULT_OUT,
                         copy_checkpoint=not args.no_checkpoint)
    t_start = time.perf_counter()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in ALL_MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose among {ALL_MODELS}")
    if args.out is None:
        out = (Path(tempfile.gettempdir()) / "course_nbody_quick" / "nbody.json") if args.quick \
            else DEFAULT_OUT.parent / "nbody_seeds" / f"seed{args.seed}.json"  # never over the summary
    else:
        out = Path(args.out)
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    md_path, ckpt_path = out.with_suffix(".md"), out.with_name(out.stem + "_egnn.pt")
    try:
        shown = out.relative_to(Path.cwd())
    except ValueError:
        shown = out
    command = "python benchmarks/nbody.py " + " ".join(shlex.quote(a) for a in argv)
    command = command.strip()

    torch.set_num_threads(args.threads)
    settings = copy.deepcopy(QUICK if args.quick else FULL)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    repeats = args.timing_repeats or (20 if args.quick else 100)
    load_start = _loadavg()
    data = {s: Split(s, sizes[s] if args.quick else None).to(device) for s in ("train", "valid", "test")}
    print(f"nbody benchmark: {', '.join(models)} | data {sizes} | device {device} | threads {args.threads} "
          f"| load {load_start} "
          f"| out {shown}", flush=True)

    results = {}
    checkpoint = None
    for name in models:
        cls, _, label = NBODY_MODELS[name]
        cfg = settings[name]
        if args.epochs is not None and name != "linear":
            cfg["max_epochs"] = args.epochs
        if args.patience is not None and name != "linear":
            cfg["patience"] = args.patience
        if args.time_limit is not None and name != "linear":
            cfg["time_limit_s"] = args.time_limit
        kwargs = {}
        for item in args.set:
            key, _, value = item.partition("=")
            target, _, attr = key.partition(".")
            if target != name:
                continue
            value = json.loads(value)
            if attr in ("lr", "max_epochs", "patience", "time_limit_s", "clip"):
                cfg[attr] = value
            else:
                kwargs[attr] = value
        torch.manual_seed(args.seed + SEED_OFFSET[name])
        model = cls(**kwargs).to(device)
        load_before = _loadavg()
        if name == "linear":
            run = fit_linear(model, data)
        else:
            run = train(name, model, data, cfg["lr"], cfg["max_epochs"], cfg["patience"], cfg["time_limit_s"],
                        seed=args.seed + 100 + SEED_OFFSET[name], progress=not args.no_progress,
                        log_every=args.log_every, clip=cfg.get("clip"))
        run["test_mse"] = mse(model, data["test"])
        run["forward"] = forward_time(model, data["test"], repeats, threads=2)
        run["forward_1thread"] = forward_time(model, data["test"], repeats, threads=1)
        run.update(label=label, cls=type(model).__name__, config=getattr(model, "config", {}),
                   params=count_parameters(model), load_before=load_before, load_after=_loadavg())
        results[name] = run
        print(f"  {label:18s} test MSE {run['test_mse']:.5f} | val {run['val_mse']:.5f} | epochs {run['epochs_run']} "
              f"(best {run['best_epoch']}, {run['stop_reason']}) | {run['wall_to_best_s']:.0f} s to best, "
              f"{run['train_wall_s']:.0f} s total | forward/100: "
              f"{1000 * run['forward_1thread']['median_s']:.2f} ms (1 thread), "
              f"{1000 * run['forward']['median_s']:.2f} ms (2) "
              f"| load {run['load_after']}", flush=True)
        if name == "egnn":
            checkpoint = save_checkpoint(ckpt_path, model, config=model.config, metrics={
                "test_mse": run["test_mse"], "val_mse": run["val_mse"], "best_epoch": run["best_epoch"],
                "epochs_run": run["epochs_run"], "command": command, "quick": args.quick})

    checks = {}
    if "egnn" in results:
        checks["egnn_target_0.0071"] = results["egnn"]["test_mse"] <= 0.0071
    if {"egnn", "gnn", "linear"} <= results.keys():
        checks["ordering_egnn_gnn_linear"] = (results["egnn"]["test_mse"] < results["gnn"]["test_mse"]
                                              < results["linear"]["test_mse"])
    res = {
        "schema_version": SCHEMA_VERSION,
        "benchmark": "EGNN N-body (Satorras, Hoogeboom & Welling 2021, Table 2)",
        "command": command,
        "argv": argv,
        "quick": args.quick,
        "seed": args.seed,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "data": {"sizes": sizes, "input_frame": 30, "target_frame": 40, "source": "course_lib.simulate.nbody"},
        "protocol": {
            "loss": "MSE of positions (mean over systems, particles, coordinates)",
            "optimizer": "Adam", "batch_size": BATCH_SIZE, "weight_decay": WEIGHT_DECAY,
            "validation": "every epoch; best-validation weights kept; test evaluated once at the end",
            "linear": "closed-form least squares (x + t v)",
            "settings": settings,
        },
        "machine": machine_info(args.threads, device),
        "load_start": load_start,
        "load_end": _loadavg(),
        "published": PUBLISHED,
        "models": results,
        "checks": checks,
        "out_json": _rel(out),
        "checkpoint": _rel(checkpoint) if checkpoint else None,
    }
    res["total_wall_s"] = time.perf_counter() - t_start
    out.write_text(json.dumps(res, indent=1) + "\n")
    md_path.write_text(markdown(res))
    print(f"wrote {shown}, {md_path.name}" + (f", {ckpt_path.name}" if checkpoint else "")
          + f" in {res['total_wall_s']:.0f} s | checks {checks}", flush=True)
    return res


if __name__ == "__main__":
    main()
