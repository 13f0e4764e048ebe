"""The authors' own EGNN code (Satorras, Hoogeboom & Welling, ICML 2021) trained on the course's N-body data.

Usage (from the repository root; their code is NOT part of this repository and is never imported by it)::

    git clone https://github.com/vgsatorras/egnn /tmp/egnn_authors          # or any copy of that repository
    python benchmarks/nbody_authors.py --authors-src /tmp/egnn_authors --seed 0 --epochs 120
    python benchmarks/nbody_authors.py --authors-src /tmp/egnn_authors --seed 1 --epochs 120   # one per seed
    python benchmarks/nbody_authors.py --aggregate                 # -> benchmarks/results/nbody_authors.{json,md}
    python benchmarks/nbody_authors.py --authors-src /tmp/egnn_authors --quick   # pipeline check, temp folder

What it does, per seed:

1. **export**: the course's regenerated charged 5-body splits (``course_lib.simulate.nbody``, 3000 / 2000 / 2000
   systems, ``--quick``: 300 / 200 / 200) are written in the layout their ``n_body_system/dataset_nbody.py`` reads
   for ``--dataset nbody_small``: ``n_body_system/dataset/{loc,vel}_{split}_charged5_initvel1small.npy``
   ``[S, 41, 3, 5]`` (frames x coordinates x particles; they transpose to ``[S, 41, 5, 3]``),
   ``edges_*`` ``[S, 5, 5]`` (the charge products q_i q_j, their edge attribute) and ``charges_*`` ``[S, 5, 1]``,
   with ``split`` in train / valid / test. Their loader uses frame 30 as the input and frame 40 as the target;
   the course's input (time 3.0) goes into frame 30, its target (time 4.0, 1000 steps later) into frame 40, and
   every other frame is NaN (unused: a NaN would show up in every loss if it were read).
2. **train**: their ``main_nbody.py`` in a private copy of their source (their loader reads paths relative to the
   working directory), CPU, one torch thread, with their EGNN defaults (``--model egnn_vel``, 64 features,
   4 layers, lr 5e-4, batch 100, weight decay 1e-12, Adam) and ``--test_interval 1`` (validation after every
   epoch, as in ``benchmarks/nbody.py``; their default is every 5 epochs).
   **Shim** (no text of their code is changed): their ``--seed`` flag is parsed but never used, so a 6-line
   runner seeds ``random``, ``numpy`` and ``torch`` with the seed, sets one torch thread, and runs their script
   with ``runpy``. The JSON records this under ``shims``.
3. **parse**: every line of their output is time-stamped as it arrives (``[t=<s>] line`` in the log); the parser
   reads the per-epoch training loss, validation and test MSE (printed with 5 decimals), their best epoch, and
   the full-precision test MSE of every epoch from their ``losess.json``. Time per epoch: from the time stamps,
   training pass + validation (the quantity ``benchmarks/nbody.py`` times), median over epochs.

Protocol check against ``benchmarks/nbody.py`` (read from their code): same splits and sizes, same input
(frame-30 positions, velocities; charges as the q_i q_j edge attribute) and target (positions 1000 steps later),
same loss (position MSE, mean over particles and coordinates; their per-batch means weighted by batch size equal
the course's global mean since every system has 5 particles), same optimiser settings, same shuffling rule (shuffle
every epoch, last incomplete batch dropped), same selection (validation after every epoch, test MSE of the epoch
with the lowest validation MSE). Differences: they also *evaluate* the test set at every epoch (it plays no part
in the choice, so the reported number is the same), their epochs are numbered from 0 (converted here: ``epoch``
= theirs + 1, as in the course), they keep the first epoch on a tie (like the course), and they have no early
stopping (every run goes to the epoch budget; the course's ``--epochs 120`` runs with patience 50 stopped by
max_epochs too).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SCHEMA_VERSION = 1
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_RUNS = RESULTS / "nbody_authors"
DEFAULT_OUT = RESULTS / "nbody_authors.json"
REPO_URL = "https://github.com/vgsatorras/egnn"
SUFFIX = "charged5_initvel1small"  # their `--dataset nbody_small` file names
SPLIT_NAMES = {"train": "train", "valid": "valid", "test": "test"}  # course split -> their file infix
N_FRAMES, INPUT_FRAME, TARGET_FRAME = 41, 30, 40
FULL_SIZES = {"train": 3000, "valid": 2000, "test": 2000}
QUICK_SIZES = {"train": 300, "valid": 200, "test": 200}
#: Their EGNN's command-line settings (all equal to their defaults except --test_interval and --no-cuda).
AUTHORS_FLAGS = ["--model", "egnn_vel", "--dataset", "nbody_small", "--nf", "64", "--n_layers", "4",
                 "--lr", "5e-4", "--batch_size", "100", "--weight_decay", "1e-12", "--test_interval", "1",
                 "--no-cuda"]
RUNNER = '''import random, runpy, sys
import numpy as np, torch
seed = int(sys.argv[1])  # their --seed flag is parsed by main_nbody.py but never used: seed here
torch.set_num_threads(1); random.seed(seed); np.random.seed(seed); torch.manual_seed(seed)
sys.argv = ["main_nbody.py"] + sys.argv[2:]
runpy.run_path("main_nbody.py", run_name="__main__")
'''
SHIMS = [
    "no change to their source; their script is run by a 6-line runner (course_runner.py) that seeds random, "
    "numpy and torch with --seed (their main_nbody.py parses --seed but never uses it), sets 1 torch thread and "
    "calls runpy.run_path('main_nbody.py'); command-line flags: " + " ".join(AUTHORS_FLAGS),
]


# --------------------------------------------------------------------------------------------
# export: the course's arrays in their loader's layout
# --------------------------------------------------------------------------------------------


def authors_arrays(pos, vel, charge, target) -> dict[str, np.ndarray]:
    """One split in their layout: loc/vel [S, 41, 3, 5] (frame 30 input, frame 40 target, others NaN),
    edges [S, 5, 5] = q_i q_j, charges [S, 5, 1]. Inputs: pos/vel/target [S, 5, 3], charge [S, 5]."""
    pos, vel, target = (np.asarray(a, dtype=np.float32) for a in (pos, vel, target))
    q = np.asarray(charge, dtype=np.float32)
    if pos.ndim != 3 or pos.shape[2] != 3 or q.shape != pos.shape[:2]:
        raise ValueError(f"expected pos [S, N, 3] and charge [S, N], got {pos.shape} and {q.shape}")
    S, N, _ = pos.shape
    loc = np.full((S, N_FRAMES, 3, N), np.nan, dtype=np.float32)
    v = np.full((S, N_FRAMES, 3, N), np.nan, dtype=np.float32)
    loc[:, INPUT_FRAME] = pos.transpose(0, 2, 1)
    loc[:, TARGET_FRAME] = target.transpose(0, 2, 1)
    v[:, INPUT_FRAME] = vel.transpose(0, 2, 1)
    v[:, TARGET_FRAME] = 0.0  # never read; finite so that nothing NaN is near the target frame by accident
    return {"loc": loc, "vel": v, "edges": q[:, :, None] * q[:, None, :], "charges": q[:, :, None]}


def export(dataset_dir: Path, sizes: dict[str, int]) -> dict[str, dict]:
    """Write the course's splits (first ``sizes[s]`` systems) as their ``.npy`` files; return shapes per file."""
    from course_lib.simulate.nbody import load_nbody_arrays

    dataset_dir = Path(dataset_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, infix in SPLIT_NAMES.items():
        a = load_nbody_arrays(split, n=sizes[split])
        arrays = authors_arrays(a["pos"], a["vel"], a["charge"], a["target_pos"])
        for key, arr in arrays.items():
            path = dataset_dir / f"{key}_{infix}_{SUFFIX}.npy"
            np.save(path, arr)
            written[path.name] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    return written


def check_authors_src(path: str | None) -> Path:
    """The folder of their repository (with main_nbody.py); a clear error saying how to get it otherwise."""
    how = (f"get their code with `git clone {REPO_URL} /tmp/egnn_authors` (or unpack any copy of that "
           "repository) and pass --authors-src /tmp/egnn_authors")
    if not path:
        raise SystemExit(f"--authors-src is required: {how}")
    src = Path(path).expanduser()
    if not (src / "main_nbody.py").is_file() or not (src / "n_body_system" / "dataset_nbody.py").is_file():
        raise SystemExit(f"--authors-src {src}: no main_nbody.py / n_body_system/dataset_nbody.py there; {how}")
    return src


def authors_commit(src: Path, given: str | None) -> str | None:
    """Their git commit: ``--authors-commit`` if given, else ``git rev-parse HEAD`` in ``src``, else None."""
    if given:
        return given
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, timeout=30)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# --------------------------------------------------------------------------------------------
# parse their log
# --------------------------------------------------------------------------------------------

_STAMP = re.compile(r"^\[t=([0-9.]+)\] (.*)$")
_LOSS = re.compile(r"^(==> )?(train|val|test) epoch (\d+) avg loss: ([0-9.eE+-]+|nan|inf)$")
_BEST = re.compile(r"^\*\*\* Best Val Loss: ([0-9.eE+-]+)\s+Best Test Loss: ([0-9.eE+-]+)\s+Best epoch (\d+)")


def parse_log(text: str, test_curve: list[float] | None = None) -> dict:
    """Per-epoch curves from their time-stamped output (``[t=<seconds>] <line>``).

    Returns epochs (1-based, the course's numbering), train/val/test curves, best epoch (theirs + 1), the
    validation and test MSE at it (test at full precision from ``test_curve`` = their losess.json when given),
    per-epoch times (``s_train_val``: end of the previous epoch's evaluation to the end of this epoch's
    validation; ``s_train``: training pass only), and the largest validation MSE after the best epoch.
    """
    cur = {"train": {}, "val": {}, "test": {}}
    t_line = {"train": {}, "val": {}, "test": {}}
    best = None
    for raw in text.splitlines():
        m = _STAMP.match(raw.strip())
        t, line = (float(m.group(1)), m.group(2).strip()) if m else (None, raw.strip())
        if (lm := _LOSS.match(line)):
            part, epoch = lm.group(2), int(lm.group(3))
            cur[part][epoch] = float(lm.group(4))
            t_line[part][epoch] = t
        elif (bm := _BEST.match(line)):
            best = (float(bm.group(1)), float(bm.group(2)), int(bm.group(3)))
    epochs = sorted(cur["val"])
    if not epochs or best is None:
        raise ValueError("no validation epochs / no 'Best Val Loss' line in the log: did their script run?")
    if epochs != list(range(len(epochs))):
        raise ValueError(f"validation epochs {epochs[:5]}...: run their script with --test_interval 1")
    val = [cur["val"][e] for e in epochs]
    test = [cur["test"][e] for e in epochs]
    if test_curve is not None:
        if len(test_curve) < len(epochs):
            raise ValueError(f"losess.json has {len(test_curve)} test values for {len(epochs)} epochs")
        test = [float(x) for x in test_curve[: len(epochs)]]
    b = best[2]
    times_tv, times_t = [], []
    for e in epochs:
        start = t_line["test"].get(e - 1) if e > 0 else None
        if start is not None and t_line["val"].get(e) is not None and t_line["train"].get(e) is not None:
            times_tv.append(t_line["val"][e] - start)
            times_t.append(t_line["train"][e] - start)
    after = val[b + 1:]
    return {
        "epochs_run": len(epochs), "best_epoch": b + 1, "best_epoch_theirs": b,
        "val_mse": val[b], "test_mse": test[b], "best_line": {"val": best[0], "test": best[1], "epoch": best[2]},
        "train_curve": [cur["train"].get(e) for e in epochs], "val_curve": val, "test_curve": test,
        "s_per_epoch_median": statistics.median(times_tv) if times_tv else None,
        "s_train_median": statistics.median(times_t) if times_t else None,
        "s_per_epoch": [round(x, 3) for x in times_tv],
        "max_val_after_best": max(after) if after else None,
        "max_val_after_best_ratio": (max(after) / val[b]) if after else None,
    }


# --------------------------------------------------------------------------------------------
# run one seed
# --------------------------------------------------------------------------------------------


def run_seed(src: Path, seed: int, epochs: int, sizes: dict, log_path: Path, keep: bool = False) -> dict:
    """Copy their source to a temp folder, export the data into it, run their script; return the parsed run."""
    from course_lib.utils import machine_info

    work = Path(tempfile.mkdtemp(prefix="egnn_authors_"))
    try:
        shutil.copytree(src, work / "src", ignore=shutil.ignore_patterns(".git", "*.npy", "logs"))
        files = export(work / "src" / "n_body_system" / "dataset", sizes)
        (work / "src" / "course_runner.py").write_text(RUNNER)
        flags = AUTHORS_FLAGS + ["--epochs", str(epochs), "--max_training_samples", str(sizes["train"]),
                                 "--seed", str(seed), "--exp_name", f"course_seed{seed}", "--outf", str(work / "logs")]
        cmd = [sys.executable, "-u", "course_runner.py", str(seed), *flags]
        env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
               "PYTHONHASHSEED": "0", "HOME": str(work)}
        load_before = machine_info()["load_average"]
        t0 = time.perf_counter()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log, subprocess.Popen(cmd, cwd=work / "src", env=env, stdout=subprocess.PIPE,
                                                          stderr=subprocess.STDOUT, text=True, bufsize=1) as p:
            for line in p.stdout:
                log.write(f"[t={time.perf_counter() - t0:.3f}] {line.rstrip()}\n")
                log.flush()
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"their script failed (exit {p.returncode}); see {log_path}")
        losses = json.loads((work / "logs" / f"course_seed{seed}" / "losess.json").read_text())
        parsed = parse_log(log_path.read_text(), test_curve=losses["losess"])
        return {"seed": seed, "epochs": epochs, "sizes": sizes, "exported_files": files,
                "their_command": "python main_nbody.py " + " ".join(flags), "wall_s": wall,
                "load_before": load_before, "load_after": machine_info()["load_average"],
                "log": _rel(log_path), **parsed}
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def timing_side_by_side(src: Path, epochs: int, runs_dir: Path, course_sets: list[str]) -> dict:
    """Both codes at the same time, one thread each, batch 100, full data: their EGNN (seed 0) and the course's
    ``benchmarks/nbody.py --models egnn`` (seed 0, with ``course_sets``), ``epochs`` epochs each. Seconds per
    epoch (training pass + validation, median over epochs) of each and their ratio; wall clock on a shared
    machine, so the load is recorded and only the concurrent ratio means much."""
    from course_lib.utils import machine_info

    course_out = Path(tempfile.mkdtemp(prefix="course_timing_")) / "course.json"
    course_args = ["--models", "egnn", "--seed", "0", "--epochs", str(epochs), "--no-progress",
                   "--timing-repeats", "3", *[x for item in course_sets for x in ("--set", item)]]
    course_cmd = [sys.executable, str(ROOT / "benchmarks" / "nbody.py"), *course_args, "--out", str(course_out)]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    load_before = machine_info()["load_average"]
    course = subprocess.Popen(course_cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        theirs = run_seed(src, 0, epochs, FULL_SIZES, runs_dir / "timing_authors.log")
    finally:
        course.wait()
    if course.returncode != 0:
        raise SystemExit(f"the course's nbody.py failed (exit {course.returncode}): {' '.join(course_cmd)}")
    h = json.loads(course_out.read_text())["models"]["egnn"]["history"]["elapsed_s"]
    ours = [b - a for a, b in zip(h[:-1], h[1:])]  # epochs 2.. (the first includes start-up)
    t_theirs, t_ours = theirs["s_per_epoch_median"], statistics.median(ours)
    return {
        "epochs": epochs, "course_command": "python benchmarks/nbody.py " + " ".join(course_args),
        "authors_command": theirs["their_command"], "load_before": load_before,
        "load_after": machine_info()["load_average"], "authors_s_per_epoch": t_theirs,
        "course_s_per_epoch": t_ours, "ratio_course_over_authors": t_ours / t_theirs,
        "authors_per_epoch": theirs["s_per_epoch"], "course_per_epoch": [round(x, 3) for x in ours],
        "summary": f"authors {t_theirs:.2f} s, course {t_ours:.2f} s (course / authors = {t_ours / t_theirs:.2f}), "
                   f"{epochs} epochs each, load average {load_before} before",
    }


# --------------------------------------------------------------------------------------------
# aggregate
# --------------------------------------------------------------------------------------------


def aggregate_runs(runs: list[dict], meta: dict) -> dict:
    """Per-seed rows -> the summary (mean ± s.e. of test / validation MSE, epochs, time, divergence)."""
    from course_lib import stats

    runs = sorted(runs, key=lambda r: r["seed"])
    seeds = [r["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"a seed was run twice: {seeds}")
    test, val = [r["test_mse"] for r in runs], [r["val_mse"] for r in runs]
    summary = {
        "seeds": seeds, "test_mse": test, "val_mse": val,
        "test_mse_mean": stats.summarize(test).mean, "test_mse_se": stats.summarize(test).se,
        "val_mse_mean": stats.summarize(val).mean, "val_mse_se": stats.summarize(val).se,
        "epochs_run": [r["epochs_run"] for r in runs], "best_epoch": [r["best_epoch"] for r in runs],
        "plateaued": [_plateaued(r["val_curve"]) for r in runs],
        "s_per_epoch_median": [r["s_per_epoch_median"] for r in runs],
        "max_val_after_best": [r["max_val_after_best"] for r in runs],
        "max_val_after_best_ratio": [r["max_val_after_best_ratio"] for r in runs],
        "max_val_spike": [_spike(r["val_curve"]) for r in runs],
    }
    return {"schema_version": SCHEMA_VERSION, **meta, "summary": summary, "runs": runs}


def _spike(curve: list[float]) -> float | None:
    """The largest ratio of an epoch's validation MSE to the lowest one before it (10 or more: a divergence)."""
    v = np.asarray(curve, dtype=float)
    return float(np.max(v[1:] / np.minimum.accumulate(v)[:-1])) if v.size > 1 else None


def _plateaued(curve: list[float]) -> bool | None:
    """``course_lib.stats.plateau`` of a validation curve; None when the curve is too short to tell (--quick)."""
    from course_lib import stats

    try:
        return bool(stats.plateau(curve)["plateaued"])
    except ValueError:
        return None


def markdown(res: dict) -> str:
    s = res["summary"]
    lines = [
        "# The authors' EGNN code on the course's N-body data",
        "",
        f"Summary: `{res['command']}`; runs: " + "; ".join(f"`{c}`" for c in res.get("seed_commands", [])),
        "",
        f"Written {res['created']}. Their code: {REPO_URL} at commit `{res.get('authors_commit')}`, run unchanged "
        f"(shim: {res['shims'][0]}). Data: the course's regenerated charged 5-body set exported to their loader "
        f"format, {res['sizes']} train/valid/test systems. Test MSE at the best-validation epoch (validation "
        "after every epoch); mean ± standard error over the seeds. Epochs numbered from 1.",
        "",
        "| seed | test MSE | val MSE | best epoch | epochs run | plateau | max val MSE after best | "
        "s / epoch (train + val, median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r, plat in zip(res["runs"], s["plateaued"]):
        mx = "-" if r["max_val_after_best"] is None else f"{r['max_val_after_best']:.5f}"
        t = "-" if r["s_per_epoch_median"] is None else f"{r['s_per_epoch_median']:.2f}"
        lines.append(f"| {r['seed']} | {r['test_mse']:.5f} | {r['val_mse']:.5f} | {r['best_epoch']} | "
                     f"{r['epochs_run']} | {'-' if plat is None else ('yes' if plat else 'no')} | {mx} | {t} |")
    lines += ["", f"Mean ± s.e. (n={len(s['seeds'])}): test MSE **{s['test_mse_mean']:.4f} ± {s['test_mse_se']:.4f}**,"
              f" validation MSE {s['val_mse_mean']:.4f} ± {s['val_mse_se']:.4f}.", ""]
    tm = res.get("timing")
    if tm:
        load = ", ".join(f"{x:.1f}" for x in tm["load_before"])
        lines += [f"Side-by-side time per epoch (wall clock on a shared machine, both codes concurrent, one thread "
                  f"each, batch 100, training pass + validation, median of epochs 2-{tm['epochs']}): authors "
                  f"{tm['authors_s_per_epoch']:.2f} s, course {tm['course_s_per_epoch']:.2f} s (course / authors = "
                  f"{tm['ratio_course_over_authors']:.2f}); load average (1/5/15 min) {load} before. "
                  f"Course: `{tm['course_command']}`.", ""]
    return "\n".join(lines)


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--authors-src", default=None, help=f"a copy of {REPO_URL} (folder with main_nbody.py)")
    p.add_argument("--authors-commit", default=None, help="their commit, when --authors-src is not a git checkout")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=120, help="epoch budget (default 120)")
    p.add_argument("--quick", action="store_true", help="300/200/200 systems, 3 epochs, temp folder")
    p.add_argument("--runs", default=None, help=f"per-seed JSON folder (default {_rel(DEFAULT_RUNS)})")
    p.add_argument("--aggregate", action="store_true", help="no training: summarise --runs into --out")
    p.add_argument("--out", default=None, help=f"summary JSON (default {_rel(DEFAULT_OUT)})")
    p.add_argument("--timing", type=int, default=None, metavar="EPOCHS",
                   help="no seeds: time both codes side by side (concurrently) for EPOCHS epochs -> <runs>/timing.json")
    p.add_argument("--course-set", action="append", default=[], metavar="egnn.KEY=VALUE",
                   help="with --timing: --set options for the course's EGNN (default: its default settings)")
    p.add_argument("--keep", action="store_true", help="keep the temporary copy of their source (debugging)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    from course_lib.utils import machine_info

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    command = ("python benchmarks/nbody_authors.py " + " ".join(shlex.quote(a) for a in argv)).strip()
    tmp = Path(tempfile.gettempdir()) / "course_nbody_authors_quick"
    runs_dir = Path(args.runs) if args.runs else (tmp / "runs" if args.quick else DEFAULT_RUNS)
    out = Path(args.out) if args.out else (tmp / "nbody_authors.json" if args.quick else DEFAULT_OUT)
    if args.timing:
        src = check_authors_src(args.authors_src)
        timing = timing_side_by_side(src, args.timing, runs_dir, args.course_set)
        timing.update(command=command, created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                      machine=machine_info())
        runs_dir.mkdir(parents=True, exist_ok=True)
        (runs_dir / "timing.json").write_text(json.dumps(timing, indent=1) + "\n")
        print("timing:", timing["summary"], flush=True)
        return timing
    if not args.aggregate:
        src = check_authors_src(args.authors_src)
        epochs = 3 if args.quick else args.epochs
        sizes = QUICK_SIZES if args.quick else FULL_SIZES
        run = run_seed(src, args.seed, epochs, sizes, runs_dir / f"seed{args.seed}.log", keep=args.keep)
        run.update(command=command, created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                   machine=machine_info(), authors_commit=authors_commit(src, args.authors_commit), quick=args.quick)
        runs_dir.mkdir(parents=True, exist_ok=True)
        (runs_dir / f"seed{args.seed}.json").write_text(json.dumps(run, indent=1) + "\n")
        print(f"seed {args.seed}: test MSE {run['test_mse']:.5f} at epoch {run['best_epoch']} (val "
              f"{run['val_mse']:.5f}), {run['s_per_epoch_median'] or float('nan'):.2f} s/epoch, "
              f"wall {run['wall_s']:.0f} s", flush=True)
        if not args.quick:
            return run
    files = sorted(runs_dir.glob("seed*.json"))
    if not files:
        raise SystemExit(f"no seed*.json in {runs_dir}: run with --authors-src PATH --seed S first")
    runs = [json.loads(f.read_text()) for f in files]
    timing_path = runs_dir / "timing.json"
    meta = {
        "benchmark": "authors' EGNN code (Satorras et al. 2021, main_nbody.py) on the course's N-body data",
        "command": command, "seed_commands": [r["command"] for r in sorted(runs, key=lambda r: r["seed"])],
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine_info(),
        "authors_repo": REPO_URL, "authors_commit": runs[0].get("authors_commit"), "shims": SHIMS,
        "sizes": runs[0]["sizes"], "epochs": sorted({r["epochs"] for r in runs}),
        "protocol": "test MSE at the epoch of lowest validation MSE, validation after every epoch, epochs from 1; "
                    "see the docstring of benchmarks/nbody_authors.py for the comparison with benchmarks/nbody.py",
        "timing": json.loads(timing_path.read_text()) if timing_path.exists() else None,
    }
    res = aggregate_runs(runs, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(res))
    s = res["summary"]
    print(f"wrote {out}: test MSE {s['test_mse_mean']:.5f} ± {s['test_mse_se']:.5f} over seeds {s['seeds']}")
    return res


if __name__ == "__main__":
    main()
