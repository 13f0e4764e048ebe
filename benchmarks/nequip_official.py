"""The OFFICIAL NequIP package (``nequip`` on PyPI) on the course's GFN2-xTB ethanol data, for a side-by-side
comparison with the course's own NequIP (``course_lib/models/nequip.py``) under the same budget.

Runs with the python of a SEPARATE venv (``nequip`` is not a course dependency; see
``benchmarks/nequip_official/requirements.txt``)::

    python3 -m venv /tmp/nequip-venv
    /tmp/nequip-venv/bin/pip install torch==2.13.0      # the CPU wheel first: then nequip pulls no CUDA
    /tmp/nequip-venv/bin/pip install -r benchmarks/nequip_official/requirements.txt
    /tmp/nequip-venv/bin/python benchmarks/nequip_official.py --epochs 30    # the committed run (~10 min, 1 thread)
    /tmp/nequip-venv/bin/python benchmarks/nequip_official.py --quick        # pipeline check, ~2 min, temp folder
    /tmp/nequip-venv/bin/python benchmarks/nequip_official.py --seed 1 --no-timing   # another seed: training + test
    python benchmarks/nequip_official.py --aggregate    # mean ± s.e. over the seeds' files (numpy only, any venv)

Seeds: ``--seed S`` is nequip-train's ``seed=S`` override (model initialisation and data-loader order). Seed 0
is the committed run (``results/nequip_official.json``, with timings); S != 0 writes
``results/nequip_official_seeds/seedS.json`` (+ ``seedS_test_predictions.npz``) from its own work folder, and
``--no-timing`` skips the inference timing and the compilation (the comparison needs only the test errors).

What it does (``benchmarks/nequip_official.md`` has the protocol and the numbers):

1. exports ``data/molecules/ethanol.npz`` with the course's splits (``ethanol_splits.npz``: 800 / 100 / 100
   frames; total xTB energies in eV, forces in eV/Å) to extxyz files in a work folder (never committed);
2. copies the config ``benchmarks/nequip_official/config.yaml`` (the "comparison config") there and trains
   with the package's own CLI, ``nequip-train`` (``ASEDataModule`` reading the extxyz files; Hydra
   overrides set the data folder, epochs and seed), ``OMP_NUM_THREADS`` = ``--threads`` (default 1);
   the ``test`` stage of ``nequip-train`` evaluates the best-validation checkpoint;
3. reads the per-step timings (``benchmarks/nequip_official/timing_callback.py``) and the CSV log;
4. reloads the best checkpoint (eager), recomputes the test MAEs frame by frame, and times one ethanol
   (batch of 1, energy + forces): the bare model on a prepared graph, and the ASE calculator (conversion and
   neighbour list included);
5. ``nequip-compile --mode aotinductor`` (TorchScript is refused on torch >= 2.10; ``--target ase`` fails on a
   molecule, see :data:`COMPILE_NOTE`) and the same timings with the compiled model, plus its agreement with
   the eager one;
6. writes the JSON (versions, threads, load averages, hyper-parameters, commands, every number).

This file imports only the standard library and numpy at module level (tests import it with the course's
venv); ase, torch and nequip are imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
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
HERE = Path(__file__).resolve().parent / "nequip_official"
CONFIG_TEMPLATE = HERE / "config.yaml"
DATA = ROOT / "data" / "molecules"
RESULTS = ROOT / "benchmarks" / "results"
SEEDS_DIR_REL = "benchmarks/results/nequip_official_seeds"
SEEDS_DIR = ROOT / SEEDS_DIR_REL
SUMMARY_REL = SEEDS_DIR_REL + "/summary.json"
SPLITS = ("train", "val", "test")
EV_TO_MEV = 1000.0


# --------------------------------------------------------------------------------------------
# data export
# --------------------------------------------------------------------------------------------


def load_split_arrays(molecule: str = "ethanol", data_dir: Path = DATA) -> dict[str, dict[str, np.ndarray]]:
    """The frames of each split as arrays: ``{split: {"z" [N], "pos" [F, N, 3] (Å), "energy" [F] (eV),
    "forces" [F, N, 3] (eV/Å), "index" [F]}}`` (``index``: frame numbers in ``<molecule>.npz``)."""
    frames, splits = data_dir / f"{molecule}.npz", data_dir / f"{molecule}_splits.npz"
    for p in (frames, splits):
        if not p.exists():
            raise ValueError(f"{p} not found: run from a checkout of the course that has data/molecules/")
    with np.load(frames, allow_pickle=False) as f:
        arrays = {k: f[k] for k in ("z", "pos", "energy", "forces")}
    with np.load(splits, allow_pickle=False) as f:
        index = {s: f[s] for s in SPLITS}
    out = {}
    for s, idx in index.items():
        out[s] = {"z": arrays["z"], "pos": arrays["pos"][idx], "energy": arrays["energy"][idx],
                  "forces": arrays["forces"][idx], "index": idx}
    return out


def export_extxyz(split_arrays: dict[str, dict[str, np.ndarray]], out_dir: Path) -> dict[str, dict]:
    """Write ``<split>.xyz`` (extxyz, energy and forces as calculator results, no cell, pbc False) for each
    split; return ``{split: {"frames", "sha256"}}``."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    out_dir.mkdir(parents=True, exist_ok=True)
    info = {}
    for split, a in split_arrays.items():
        images = []
        for pos, e, f in zip(a["pos"], a["energy"], a["forces"]):
            atoms = Atoms(numbers=a["z"], positions=pos, pbc=False)
            atoms.calc = SinglePointCalculator(atoms, energy=float(e), forces=np.asarray(f))
            images.append(atoms)
        path = out_dir / f"{split}.xyz"
        write(path, images, format="extxyz")
        info[split] = {"frames": len(images), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return info


# --------------------------------------------------------------------------------------------
# training (nequip-train) and its logs
# --------------------------------------------------------------------------------------------


def train_overrides(data_dir: Path, run_dir: Path, epochs: int, seed: int,
                    limit_train_batches: int | float | None = None) -> list[str]:
    """Hydra command-line overrides of ``config.yaml`` for one run."""
    ov = [f"data_dir={data_dir}", f"max_epochs={epochs}", f"seed={seed}", f"hydra.run.dir={run_dir}"]
    if limit_train_batches is not None:
        ov.append(f"limit_train_batches={limit_train_batches}")
    return ov


def thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    env["TORCHINDUCTOR_COMPILE_THREADS"] = str(threads)  # nequip-compile: no pool of compiler processes
    env["PYTHONPATH"] = os.pathsep.join([str(HERE)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def venv_tool(name: str) -> str:
    """``nequip-train`` / ``nequip-compile`` next to the running python (the nequip venv)."""
    tool = Path(sys.executable).parent / name
    if not tool.exists():
        found = shutil.which(name)
        if found is None:
            raise ValueError(f"{name} not found next to {sys.executable}: run this script with the python of "
                             "the nequip venv (benchmarks/nequip_official/requirements.txt)")
        return found
    return str(tool)


def read_csv_log(path: Path) -> tuple[list[dict], dict]:
    """Lightning's CSVLogger file -> (per-epoch validation rows, test metrics). Values are floats; empty
    cells are dropped."""
    rows = []
    with open(path) as f:
        for row in csv.DictReader(f):
            rows.append({k: float(v) for k, v in row.items() if v not in ("", None)})
    val, test = {}, {}
    for r in rows:
        if any(k.startswith("test0_epoch/") for k in r):
            test.update({k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("test0_epoch/")})
        if "val0_epoch/weighted_sum" in r:
            ep = int(r["epoch"])
            val.setdefault(ep, {"epoch": ep}).update(
                {k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("val0_epoch/")})
    return [val[k] for k in sorted(val)], test


def summarize_timing(timing: dict, warmup_epochs: int = 1) -> dict:
    """Throughput after warm-up from the callback's JSON: frames / (sum of the training spans of the epochs
    after the first ``warmup_epochs``); median step time over the same epochs."""
    epochs = [e for e in timing["epochs"] if e.get("train_s")]
    steps_per_epoch = [e["steps"] for e in epochs]
    measured = epochs[warmup_epochs:] if len(epochs) > warmup_epochs else epochs[-1:]
    n_skip = sum(steps_per_epoch[: len(epochs) - len(measured)])
    step_s = timing["step_s"][n_skip:]
    frames = sum(e["frames"] for e in measured)
    train_s = sum(e["train_s"] for e in measured)
    val_s = [e["val_s"] for e in measured if e.get("val_s") is not None]
    steps = sum(e["steps"] for e in measured)
    return {
        "warmup_epochs": len(epochs) - len(measured),
        "measured_epochs": len(measured),
        "measured_steps": steps,
        "train_frames_per_s": frames / train_s,
        "step_s_median": statistics.median(step_s),
        "step_s_mean": train_s / steps,
        "frames_per_step": frames / steps,
        "epoch_train_s_median": statistics.median(e["train_s"] for e in measured),
        "epoch_val_s_median": statistics.median(val_s) if val_s else None,
        "first_epoch_train_s": epochs[0]["train_s"],
        "total_steps": sum(steps_per_epoch),
        "fit_s": timing["fit_s"],
    }


# --------------------------------------------------------------------------------------------
# evaluation and inference timing (nequip venv)
# --------------------------------------------------------------------------------------------


def _timings(fns: dict, repeats: int, warmup: int, block: int = 10) -> dict:
    """Per-call wall times of several functions, measured in alternating blocks of ``block`` calls (so a
    change of the machine's load hits all of them alike); ``warmup`` untimed calls of each first."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    ts = {k: [] for k in fns}
    while min(len(v) for v in ts.values()) < repeats:
        for k, fn in fns.items():
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                ts[k].append(time.perf_counter() - t0)
    out = {}
    for k, v in ts.items():
        v = sorted(v[:repeats])
        out[k] = {"median_ms": 1e3 * statistics.median(v), "p10_ms": 1e3 * v[len(v) // 10],
                  "p90_ms": 1e3 * v[(9 * len(v)) // 10], "repeats": len(v), "warmup": warmup}
    return out


def predict_frames(calc, images) -> tuple[np.ndarray, np.ndarray]:
    """Energies [F] (eV) and forces [F, N, 3] (eV/Å) of ``images`` with a NequIPCalculator, one frame a call."""
    from nequip.data import AtomicDataDict

    energies, forces = [], []
    for atoms in images:
        out = calc.call_model(calc.atoms_to_data(atoms))
        energies.append(float(out[AtomicDataDict.TOTAL_ENERGY_KEY].detach().reshape(())))
        forces.append(out[AtomicDataDict.FORCE_KEY].detach().cpu().numpy().astype(np.float64))
    return np.asarray(energies), np.stack(forces)


def errors(e_pred, f_pred, e_ref, f_ref, n_atoms: int) -> dict:
    """MAE / RMSE of total energy (meV), energy per atom (meV/atom) and force components (meV/Å); the mean
    signed energy error and the energy MAE after removing it (a constant offset, diagnostic only)."""
    de, df = e_pred - e_ref, f_pred - f_ref
    return {
        "energy_mae_meV": EV_TO_MEV * float(np.abs(de).mean()),
        "energy_mean_error_meV": EV_TO_MEV * float(de.mean()),
        "energy_mae_offset_removed_meV": EV_TO_MEV * float(np.abs(de - de.mean()).mean()),
        "energy_rmse_meV": EV_TO_MEV * float(np.sqrt((de**2).mean())),
        "energy_per_atom_mae_meV": EV_TO_MEV * float(np.abs(de).mean()) / n_atoms,
        "forces_mae_meV_per_A": EV_TO_MEV * float(np.abs(df).mean()),
        "forces_rmse_meV_per_A": EV_TO_MEV * float(np.sqrt((df**2).mean())),
        "frames": int(len(de)),
    }


def time_calculator(calc, atoms, repeats: int, warmup: int) -> dict:
    """Per-frame times of one ethanol (batch of 1, energy + forces): ``model`` = the model on a prepared
    graph (neighbour list done), ``calculator`` = ``NequIPCalculator.calculate`` from an ``Atoms`` (ASE ->
    graph conversion, matscipy neighbour list, model, results back to numpy)."""
    from ase.calculators.calculator import all_changes

    data = calc.atoms_to_data(atoms)
    return _timings({"model": lambda: calc.call_model(dict(data)),
                     "calculator": lambda: calc.calculate(atoms, ["energy", "forces"], all_changes)},
                    repeats, warmup)


def parameters_by_block(model) -> dict[str, int]:
    """Parameter counts grouped by block and kind, in the model's order: ``type_embed``, then per interaction
    block ``layerK_convnet: radial MLP`` (edge MLP), ``: linear`` (the two linears of the convolution) and
    ``: self-connection`` (the species-conditioned tensor product), then the readout."""
    out: dict[str, int] = {}
    for name, p in model.named_parameters():
        parts = [x for x in name.split(".") if x not in ("model", "func")]
        block = parts[0]
        if block.endswith("_convnet"):
            kind = "self-connection" if ".sc." in name else "radial MLP" if "edge_mlp" in name else "linear"
            block = f"{block}: {kind}"
        out[block] = out.get(block, 0) + int(p.numel())
    return out


def model_summary(ckpt: Path, eager_model) -> dict:
    """Resolved model hyper-parameters (data statistics filled in) from the checkpoint, parameter count and
    the feature irreps the package built."""
    import torch

    payload = torch.load(ckpt, map_location="cpu", weights_only=False)
    info = payload["hyper_parameters"]["info_dict"]
    model_cfg = dict(info["training_module"]["model"])
    irreps = []
    for name, mod in eager_model.named_modules():
        if type(mod).__name__ == "ConvNetLayer":
            irreps.append({"layer": name, "irreps_in": str(mod.irreps_in.get("node_features")),
                           "irreps_out": str(mod.irreps_out.get("node_features"))})
    return {
        "model": model_cfg,
        "parameters": int(sum(p.numel() for p in eager_model.parameters())),
        "parameters_by_block": parameters_by_block(eager_model),
        "trainable_parameters": int(sum(p.numel() for p in eager_model.parameters() if p.requires_grad)),
        "convnet_irreps": irreps,
        "epoch_of_checkpoint": int(payload.get("epoch", -1)),
        "global_step_of_checkpoint": int(payload.get("global_step", -1)),
        "versions_in_checkpoint": info.get("versions"),
    }


#: ``--target ase`` exports the stress too; a molecule has no cell (volume 0), so eager and compiled stress
#: are both NaN and nequip-compile's eager-vs-compiled check fails (measured with nequip 0.19.1). The same
#: inputs as the ASE target with the stress left out compile and run.
COMPILE_FIELDS = {"input": ["pos", "edge_index", "atom_types", "cell", "edge_cell_shift"],
                  "output": ["atomic_energy", "total_energy", "forces"]}
COMPILE_NOTE = ("nequip-compile --mode aotinductor --target ase fails on this molecule (AssertionError: compilation "
                "check MaxAbsError nan for field `stress`: no cell); compiled instead with the ASE target's input "
                "fields, outputs without stress, --num-frames static, and loaded with load_compiled_model into a "
                "NequIPCalculator; --mode torchscript is refused by nequip on torch >= 2.10")


def compiled_calculator(pt2: Path):
    """A NequIPCalculator around an AOTInductor model compiled with :data:`COMPILE_FIELDS` (what
    ``NequIPCalculator.from_compiled_model`` does, with the fields read from the file's metadata)."""
    from nequip.integrations.ase import NequIPCalculator
    from nequip.integrations.utils import basic_transforms, handle_chemical_species_map
    from nequip.model.inference_models import load_compiled_model
    from nequip.nn import graph_model

    model, metadata = load_compiled_model(str(pt2), "cpu")
    type_names = metadata[graph_model.TYPE_NAMES_KEY]
    species_map = handle_chemical_species_map(True, type_names)  # type names are the element symbols
    transforms = basic_transforms(metadata, metadata[graph_model.R_MAX_KEY], type_names, species_map)
    return NequIPCalculator(model=model, device="cpu", transforms=transforms)


def compile_and_time(ckpt: Path, work: Path, env: dict, test_images, e_eager, f_eager, e_ref, f_ref,
                     n_atoms: int, repeats: int, timeout: int) -> dict:
    """``nequip-compile --mode aotinductor`` (CPU), then test errors, agreement with eager and timings."""
    pt2 = work / "ethanol.nequip.pt2"
    if pt2.exists():
        pt2.unlink()
    cmd = [venv_tool("nequip-compile"), str(ckpt), str(pt2), "--mode", "aotinductor", "--device", "cpu",
           "--input-fields", *COMPILE_FIELDS["input"], "--output-fields", *COMPILE_FIELDS["output"],
           "--num-frames", "static"]
    res = {"command": shlex.join(["nequip-compile", *[c.replace(str(work), "<work>") for c in cmd[1:]]])}
    print("running:", shlex.join(cmd), flush=True)
    log = work / "compile.log"
    t0 = time.perf_counter()
    try:
        with open(log, "w") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=work, timeout=timeout)
        res["compile_s"] = time.perf_counter() - t0
        res["ok"] = proc.returncode == 0 and pt2.exists()
    except subprocess.TimeoutExpired:
        res.update(ok=False, compile_s=time.perf_counter() - t0, error=f"timeout after {timeout} s")
    if not res["ok"]:
        res.setdefault("error", _tail(log, 15))
        return res
    res["file_bytes"] = pt2.stat().st_size
    try:
        calc = compiled_calculator(pt2)
        e_c, f_c = predict_frames(calc, test_images)
        res["test"] = errors(e_c, f_c, e_ref, f_ref, n_atoms)
        res["max_abs_diff_vs_eager"] = {"energy_meV": EV_TO_MEV * float(np.abs(e_c - e_eager).max()),
                                        "forces_meV_per_A": EV_TO_MEV * float(np.abs(f_c - f_eager).max())}
        res["timing"] = time_calculator(calc, test_images[0], repeats, warmup=20)
    except Exception as exc:  # report what does not work instead of losing the training results
        res.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    return res


# --------------------------------------------------------------------------------------------
# machine
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


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("nequip", "torch", "e3nn", "lightning", "hydra-core", "omegaconf", "ase", "numpy", "matscipy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    import torch

    out["torch_full"] = torch.__version__
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------
# seeds: where each run's results go, and their summary
# --------------------------------------------------------------------------------------------


def default_work_name(quick: bool, seed: int) -> str:
    """Work folder name under $TMPDIR: one per seed, so seeds can run one after the other without
    overwriting each other's checkpoints (seed 0 keeps the name of the committed run)."""
    name = "nequip_official_quick" if quick else "nequip_official"
    return name if seed == 0 else f"{name}_seed{seed}"


def results_path(seed: int) -> Path:
    """Seed 0 = the committed run (``results/nequip_official.json``); the other seeds
    ``results/nequip_official_seeds/seedS.json`` (predictions next to each as ``seedS_test_predictions.npz``)."""
    return RESULTS / "nequip_official.json" if seed == 0 else SEEDS_DIR / f"seed{seed}.json"


def seed_results(results_dir: Path = RESULTS) -> dict[int, Path]:
    """``{seed: results file}`` of the finished runs (seed 0 and every ``nequip_official_seeds/seed*.json``)."""
    found = {}
    if (results_dir / "nequip_official.json").exists():
        found[0] = results_dir / "nequip_official.json"
    for p in sorted((results_dir / "nequip_official_seeds").glob("seed*.json")):
        if p.stem[4:].isdigit():
            found[int(p.stem[4:])] = p
    return dict(sorted(found.items()))


#: the per-seed numbers the summary averages (all from ``test.eager_recomputed``)
SUMMARY_METRICS = ("energy_mae_meV", "energy_mae_offset_removed_meV", "energy_mean_error_meV", "forces_mae_meV_per_A")


def mean_se(values: list[float]) -> dict:
    """Mean and standard error (sample std / sqrt(n), ddof = 1; None for n = 1) of a list of per-seed numbers;
    the same convention as ``course_lib.stats.summarize`` (not imported: this script runs in the nequip venv)."""
    v = np.asarray(values, dtype=float)
    se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None
    return {"mean": float(v.mean()), "se": se, "n": int(len(v)), "values": [float(x) for x in v]}


def summarize_seeds(files: dict[int, Path]) -> dict:
    """Per-seed rows and mean ± s.e. of the test errors over the seeds' results files; checks that every run
    had the same config, budget and parameter count."""
    rows, by_block = [], None
    for seed, path in files.items():
        r = json.loads(path.read_text())
        by_block = by_block or r["model"].get("parameters_by_block")  # the same model: any run that has it
        if r["hyperparameters"]["seed"] != seed:
            raise ValueError(f"{path} holds seed {r['hyperparameters']['seed']}, not {seed}")
        t = r["test"]["eager_recomputed"]
        rows.append({"seed": seed, "file": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
                     **{k: t[k] for k in SUMMARY_METRICS}, "parameters": r["model"]["parameters"],
                     "epochs": r["hyperparameters"]["epochs"], "total_steps": r["training"]["total_steps"],
                     "template_sha256": r["config"]["template_sha256"],
                     "epoch_of_checkpoint": r["model"]["epoch_of_checkpoint"],
                     "training_wall_s": r["training"]["wall_s"]})
    for key in ("parameters", "epochs", "total_steps", "template_sha256"):
        if len({row[key] for row in rows}) > 1:
            raise ValueError(f"the seeds' runs differ in {key}: {[row[key] for row in rows]}")
    return {"what": "official nequip, comparison config: test errors of the best-validation checkpoint, "
                    "mean ± standard error over seeds (model initialisation and data-loader order)",
            "seeds": [row["seed"] for row in rows], "parameters": rows[0]["parameters"],
            "parameters_by_block": by_block,
            "epochs": rows[0]["epochs"], "total_steps": rows[0]["total_steps"],
            "template_sha256": rows[0]["template_sha256"],
            "test": {k: mean_se([row[k] for row in rows]) for k in SUMMARY_METRICS}, "runs": rows}


def write_summary(out: Path) -> dict:
    files = seed_results()
    if not files:
        raise ValueError(f"no results in {RESULTS}: run the seeds first (--seed S)")
    res = {"command": shlex.join(["python", "benchmarks/nequip_official.py", "--aggregate"]),
           "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), **summarize_seeds(files)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    for k, v in res["test"].items():
        print(f"{k}: {v['mean']:.2f} ± {v['se'] if v['se'] is None else round(v['se'], 2)} (n = {v['n']})")
    print(f"wrote {out}", flush=True)
    return res


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=30, help="training epochs (fixed budget, no early stopping)")
    p.add_argument("--quick", action="store_true",
                   help="pipeline check: 2 epochs of 40 steps, writes to the work folder unless --out is given")
    p.add_argument("--limit-train-batches", type=int, default=None, help="steps per epoch (default: all 160)")
    p.add_argument("--seed", type=int, default=0,
                   help="model-initialisation and data-loader seed (nequip-train's seed= override); 0 is the "
                        "committed run (results/nequip_official.json), S != 0 writes " + SEEDS_DIR_REL + "/seedS.json")
    p.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads for training and timing")
    p.add_argument("--work", type=Path, default=None,
                   help="work folder (extxyz, nequip-train output, compiled model); default $TMPDIR/nequip_official")
    p.add_argument("--out", type=Path, default=None,
                   help="results JSON (default benchmarks/results/nequip_official.json; --quick: <work>/quick.json)")
    p.add_argument("--skip-train", action="store_true", help="reuse the work folder's finished training run")
    p.add_argument("--no-compile", action="store_true", help="skip nequip-compile (AOTInductor) and its timings")
    p.add_argument("--no-timing", action="store_true",
                   help="training + test evaluation only: no inference timing, no nequip-compile (the extra seeds)")
    p.add_argument("--aggregate", action="store_true",
                   help="no training: mean ± s.e. over the seeds' results files -> " + SUMMARY_REL)
    p.add_argument("--timing-repeats", type=int, default=200)
    p.add_argument("--compile-timeout", type=int, default=1200, help="seconds allowed for nequip-compile")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.quick:
        args.epochs = 2
        args.limit_train_batches = args.limit_train_batches or 40
        args.timing_repeats = min(args.timing_repeats, 30)
    if args.epochs < 1:
        raise ValueError("--epochs must be >= 1")
    if args.aggregate:
        return write_summary(args.out or ROOT / SUMMARY_REL)
    if args.no_timing:
        args.no_compile = True
    work = args.work or Path(tempfile.gettempdir()) / default_work_name(args.quick, args.seed)
    work = work.resolve()
    out = args.out or (work / "quick.json" if args.quick else results_path(args.seed))
    data_dir, run_dir = work / "data", work / "run"

    import torch

    torch.set_num_threads(args.threads)
    command = shlex.join([Path(sys.executable).name, *sys.argv]) if argv is None else shlex.join(
        ["python", "benchmarks/nequip_official.py", *argv])
    load_start = _loadavg()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    print(f"nequip_official: work {work} | epochs {args.epochs} | threads {args.threads} | load {load_start}",
          flush=True)

    # 1. data
    split_arrays = load_split_arrays()
    n_atoms = int(split_arrays["train"]["z"].shape[0])
    exported = export_extxyz(split_arrays, data_dir)

    # 2. training with the package's CLI
    env = thread_env(args.threads)
    overrides = train_overrides(data_dir, run_dir, args.epochs, args.seed, args.limit_train_batches)
    train_cmd = [venv_tool("nequip-train"), "-cp", str(work), "-cn", "config", *overrides]
    train_record = work / "train_run.json"  # what --skip-train reports about the reused training run
    if not args.skip_train:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        shutil.copyfile(CONFIG_TEMPLATE, work / "config.yaml")
        log = work / "train.log"
        print("running:", shlex.join(train_cmd), flush=True)
        t0 = time.perf_counter()
        with open(log, "w") as f:
            proc = subprocess.run(train_cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=work)
        train_wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"nequip-train failed (exit {proc.returncode}); last lines of {log}:\n{_tail(log)}")
        print(f"nequip-train done in {train_wall:.0f} s | load {_loadavg()}", flush=True)
        train_run = {"command": command, "started_utc": started, "wall_s": train_wall, "load_start": load_start,
                     "load_after_train": _loadavg()}
        train_record.write_text(json.dumps(train_run, indent=1))
    elif train_record.exists():
        train_run = {**json.loads(train_record.read_text()), "reused_by": command}
    else:
        train_run = {"command": None, "wall_s": None, "reused_by": command}
    ckpt = run_dir / "best.ckpt"
    timing = json.loads((run_dir / "timing.json").read_text())
    val_curve, test_nequip = read_csv_log(run_dir / "csv" / "version_0" / "metrics.csv")
    throughput = summarize_timing(timing)
    lr_after = {e["epoch"]: e["lr"] for e in timing["epochs"]}
    for row in val_curve:
        row["lr_after_epoch"] = lr_after.get(row["epoch"])

    # 3. eager evaluation and timing
    from ase.io import read
    from nequip.integrations.ase import NequIPCalculator

    test_images = read(data_dir / "test.xyz", index=":")
    e_ref, f_ref = split_arrays["test"]["energy"], split_arrays["test"]["forces"]
    # the loader behind the package's own ASE tests (a checkpoint, eager); type names are the element symbols
    eager = NequIPCalculator._from_saved_model(str(ckpt), device="cpu", chemical_species_to_atom_type_map=True)
    e_eager, f_eager = predict_frames(eager, test_images)
    test_eager = errors(e_eager, f_eager, e_ref, f_ref, n_atoms)
    out.parent.mkdir(parents=True, exist_ok=True)
    predictions = out.with_name(out.stem + "_test_predictions.npz")
    np.savez_compressed(predictions, index=split_arrays["test"]["index"], energy=e_eager.astype(np.float64),
                        forces=f_eager.astype(np.float32))
    summary = model_summary(ckpt, eager.model)
    timing_eager = (None if args.no_timing else
                    time_calculator(eager, test_images[0], args.timing_repeats, warmup=20))
    print(f"test (eager, best checkpoint): energy MAE {test_eager['energy_mae_meV']:.2f} meV, "
          f"force MAE {test_eager['forces_mae_meV_per_A']:.2f} meV/A"
          + ("" if timing_eager is None else f" | model {timing_eager['model']['median_ms']:.2f} ms/frame"),
          flush=True)

    # 4. AOTInductor compilation
    compiled = {"attempted": not args.no_compile, "note": COMPILE_NOTE}
    if not args.no_compile:
        compiled.update(compile_and_time(ckpt, work, env, test_images, e_eager, f_eager, e_ref, f_ref, n_atoms,
                                         args.timing_repeats, args.compile_timeout))
        if compiled["ok"]:
            print(f"compiled: {compiled['timing']['model']['median_ms']:.2f} ms/frame "
                  f"(compile {compiled['compile_s']:.0f} s)", flush=True)
        else:
            print("compile / compiled inference failed:", compiled.get("error"), flush=True)

    cfg_text = CONFIG_TEMPLATE.read_text()
    res = {
        "benchmark": "official nequip package on the course's GFN2-xTB ethanol (comparison config)",
        "started_utc": started,
        "command": command,
        "git_commit": _git_commit(),
        "versions": versions(),
        "machine": {"cpu": _cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "device": "cpu"},
        "threads": {"requested": args.threads, "training_process": {k: timing[k] for k in (
            "torch_threads", "torch_interop_threads", "omp_num_threads")},
            "evaluation_process": torch.get_num_threads()},
        "load_start": load_start,
        "training_run": train_run,
        "load_end": _loadavg(),
        "data": {"molecule": "ethanol", "source": "data/molecules/ethanol.npz + ethanol_splits.npz",
                 "atoms_per_frame": n_atoms, "splits": exported,
                 "units": "total GFN2-xTB energy in eV, forces in eV/Å"},
        "config": {"template": "benchmarks/nequip_official/config.yaml", "template_sha256": _sha256(CONFIG_TEMPLATE),
                   "overrides": [o.replace(str(work), "<work>") for o in overrides],
                   "train_command": shlex.join(["nequip-train", "-cp", "<work>", "-cn", "config",
                                                *[o.replace(str(work), "<work>") for o in overrides]]),
                   "lines": len(cfg_text.splitlines())},
        "hyperparameters": {
            "epochs": args.epochs, "steps_per_epoch": args.limit_train_batches or 160,
            "batch_size": 5, "val_batch_size": 10, "optimizer": "Adam", "lr": 0.01,
            "lr_scheduler": "ReduceLROnPlateau(factor=0.8, patience=5) on the validation loss, every epoch",
            "loss": "EnergyForceLoss: coefficients 1.0 (per-atom energy MSE) and 1.0 (force-component MSE), "
                    "normalised by nequip to 0.5 / 0.5",
            "ema": False, "gradient_clipping": None, "seed": args.seed, "global_seed": 123,
            "model_selection": "best validation loss (ModelCheckpoint), used by the test stage and below",
        },
        "model": summary,
        "training": {"wall_s": train_run["wall_s"], **throughput, "val_curve": val_curve,
                     "step_s_all": [round(s, 5) for s in timing["step_s"]]},
        "test": {"eager_recomputed": test_eager,
                 "predictions": {"file": str(predictions.relative_to(ROOT)) if predictions.is_relative_to(ROOT)
                                 else str(predictions),
                                 "what": "eager best-checkpoint predictions on the test split: index (frame in "
                                         "ethanol.npz), energy [100] (eV, float64), forces [100, 9, 3] (eV/Å, "
                                         "float32)"},
                 "nequip_test_stage": {"energy_mae_meV": EV_TO_MEV * test_nequip.get("total_energy_mae", float("nan")),
                                       "forces_mae_meV_per_A": EV_TO_MEV * test_nequip.get("forces_mae", float("nan")),
                                       "raw": test_nequip}},
        "inference": {
            "what": ("skipped (--no-timing: training and test evaluation only)" if args.no_timing else
                     "one ethanol (9 atoms), batch of 1, energy + forces, CPU; median of repeated calls"),
            "threads": torch.get_num_threads(), "eager": timing_eager, "aotinductor": compiled},
    }
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}", flush=True)
    return res


if __name__ == "__main__":
    main()
