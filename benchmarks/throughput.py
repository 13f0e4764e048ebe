"""Training-step and inference throughput of every trainable model of the course, on CPU and CUDA.

    python benchmarks/throughput.py                            # CPU, 1 and all threads -> results/throughput.json
    python benchmarks/throughput.py --device cuda,cpu          # the GPU machine (benchmarks/gpu_run.sh)
    python benchmarks/throughput.py --models nequip_l1,schnet --threads 1 --out /tmp/t.json
    python benchmarks/throughput.py --quick                    # pipeline check (CI): tiny sizes, temp folder
    python benchmarks/throughput.py --baseline-src /tmp/before # also time the course_lib of another checkout,
                                                               # alternating with this one, ratios in the JSON

What is timed, per model, setting (``cpu1`` = 1 torch thread, ``cpuN`` = all cores, ``cuda``) and batch size:

- ``train``: one optimisation step. Energy models (the invariant MPNN and its baselines, SchNet, NequIP): energies
  and forces ``-dE/dpos`` with ``create_graph=True`` (:func:`course_lib.models.energy_and_forces`), loss
  ``MSE(E) + MSE(F)``, backward, Adam step. Next-state models (EGNN in the box and its baseline): the one-step
  loss :func:`course_lib.models.egnn.next_step_loss`. N-body models: the position MSE of the EGNN paper. The
  neighbour list is built inside every step, as in training.
  ``nequip_matched`` is the course NequIP at the settings of the comparison with the official package
  (``CONFIG`` of ``benchmarks/nequip_compare.py``: l_max 1 with ``32x0e+32x1e+32x1o``, fixed Bessel frequencies,
  SiLU gates); its batch of 5 is the official run's.
- ``infer``: energy models: energies and forces in eval mode (what MD and the ASE calculator need); the others
  one forward pass under ``torch.no_grad()``.

Each is warmed up (``--warmup`` calls), then timed ``--repeats`` times (median and minimum). Wall time
(``time.perf_counter``; CUDA: ``torch.cuda.synchronize()`` before the start and before the stop) and the CPU time
of this process (``time.process_time``: on a shared machine the CPU time of a 1-thread run is the number that
depends least on the other users' load; with several threads it adds up the threads). ``per_frame`` divides by
the batch size (frames, systems or graphs).

Data: ethanol frames (``load_molecules``, float32) for the molecular models, the 2-D charged particles of
notebook 01 for the MPNN and its baselines, the trajectory pairs of notebooks 02/03 for the EGNN in the box,
the N-body systems of notebook 04 for the N-body models. Batch sizes: 5 and 32 graphs (N-body: 10 and 100
systems).

The official ``nequip`` package lives in a separate environment (``benchmarks/nequip_official.md``); it is
not timed here when that environment is absent (the JSON says why) and the committed reference step time of
``results/nequip_official_timing.json`` is quoted instead.

``--baseline-src DIR``: DIR holds another copy of ``course_lib`` (e.g. ``git archive <commit> course_lib |
tar -x -C DIR``, and a link DIR/data to this checkout's data/); each model is timed in a fresh subprocess with
DIR first on ``sys.path``, then in one with this checkout, alternately (same load for both), ``--rounds`` times, and
``ratio_after_over_before`` (median over the rounds) is added for every row.

The JSON: ``command``, ``date``, ``machine`` (:func:`course_lib.utils.machine_info`: load average included),
``config``, ``rows`` (one per model, setting and batch: ``train``/``infer`` with ``median_ms``,
``min_ms``, ``median_cpu_ms``, ``per_frame_ms``, ``per_frame_cpu_ms``), ``skipped`` (what could not run and
why), ``nequip_official``, and with ``--baseline-src`` ``baseline`` and the ratios. The same rows as a markdown
table go to the ``.md`` file next to the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch_geometric.data import Batch, Data

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: model name -> (data set, kind). kind: "energy" (energy + forces), "dynamics" (next_step_loss), "nbody"
MODELS = {
    "mpnn": ("particles", "energy"),
    "abs_gnn": ("particles", "energy"),
    "coord_mlp": ("particles", "energy"),
    "schnet": ("molecules", "energy"),
    "nequip_l0": ("molecules", "energy"),
    "nequip_l1": ("molecules", "energy"),
    "nequip_l2": ("molecules", "energy"),
    "painn": ("molecules", "energy"),
    "nequip_matched": ("molecules", "energy"),  # the settings of the official package's comparison (nequip_compare)
    "egnn_box": ("trajectories", "dynamics"),
    "abs_coord_gnn": ("trajectories", "dynamics"),
    "egnn_nbody": ("nbody", "nbody"),
    "gnn_nbody": ("nbody", "nbody"),
    "rf_nbody": ("nbody", "nbody"),
}
BATCHES = {"particles": (5, 32), "molecules": (5, 32), "trajectories": (5, 32), "nbody": (10, 100)}
QUICK_BATCHES = {"particles": (2, 4), "molecules": (2, 4), "trajectories": (2, 4), "nbody": (2, 4)}
DT = 0.2  # frame_dt of the trajectory data sets (benchmarks/egnn_dynamics.py)


def check_device(name: str) -> torch.device:
    """``torch.device(name)``; a clear error when CUDA is asked for and absent (shared by the benchmarks)."""
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available here (torch {torch.__version__}, "
                         f"built with CUDA {torch.version.cuda}); use --device cpu")
    return dev


# --------------------------------------------------------------------------------------------
# models and data
# --------------------------------------------------------------------------------------------


def make_model(name: str, graphs, quick: bool):
    """The model ``name`` at the course's default settings, its energy scale fitted on ``graphs``."""
    from course_lib.models import baselines, egnn, mpnn, nbody, schnet

    if name.startswith("nequip_l"):
        from course_lib.models.nequip import NequIP

        model = NequIP(l_max=int(name[-1]), hidden=8 if quick else 32, num_layers=2 if quick else 3)
    elif name == "nequip_matched":
        from course_lib.models.nequip import NequIP

        config = dict(_nequip_compare_config())
        if quick:
            config.update(hidden=8, num_layers=2, hidden_irreps="8x0e+8x1e+8x1o")
        model = NequIP(**config)
    elif name == "painn":
        from course_lib.models.painn import PaiNN

        model = PaiNN(hidden=8 if quick else 32, num_layers=2 if quick else 3)
    else:
        model = {
            "mpnn": lambda: mpnn.InvariantMPNN(),
            "abs_gnn": lambda: baselines.AbsolutePositionGNN(),
            "coord_mlp": lambda: baselines.CoordinateMLP(max_nodes=24),
            "schnet": lambda: schnet.SchNet(),
            "egnn_box": lambda: egnn.EGNN(cutoff=3.0, dt=DT, use_fixed=True),
            "abs_coord_gnn": lambda: baselines.AbsoluteCoordinateGNN(num_layers=3, cutoff=3.0, dt=DT, use_fixed=True),
            "egnn_nbody": lambda: nbody.EGNNDynamics(),
            "gnn_nbody": lambda: nbody.GNNDynamics(),
            "rf_nbody": lambda: nbody.RadialField(),
        }[name]()
    if hasattr(model, "fit_energy_scale"):
        model.fit_energy_scale(graphs[:100])
    return model


def _nequip_compare_config() -> dict:
    """``CONFIG`` of ``benchmarks/nequip_compare.py``: the course NequIP at the official package's settings."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("nequip_compare", HERE / "nequip_compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CONFIG


def load_graphs(dataset: str, n: int) -> list[Data]:
    """``n`` training graphs of ``dataset`` (float32)."""
    if dataset == "molecules":
        from course_lib.datasets import load_molecules

        return load_molecules("ethanol", "train")[:max(n, 100)]
    if dataset == "particles":
        from course_lib.datasets import load_particles

        return load_particles("energy", "train")[:max(n, 100)]
    if dataset == "trajectories":
        from course_lib.datasets import load_particles, trajectory_pairs

        return trajectory_pairs(load_particles("trajectories", "train")[:max(1, n // 39 + 1)])[:n]
    from course_lib.simulate.nbody import load_nbody_arrays

    a = load_nbody_arrays("train", n=n)
    out = []
    for k in range(n):
        out.append(Data(pos=torch.as_tensor(a["pos"][k], dtype=torch.float32),
                        vel=torch.as_tensor(a["vel"][k], dtype=torch.float32),
                        charge=torch.as_tensor(a["charge"][k], dtype=torch.float32).reshape(-1),
                        target_pos=torch.as_tensor(a["target_pos"][k], dtype=torch.float32)))
    return out


def loss_fn(kind: str):
    """The training loss of a model kind: ``loss(model, batch) -> scalar``."""
    from course_lib.models import energy_and_forces

    if kind == "energy":
        def energy_force_loss(model, batch):
            E, F = energy_and_forces(model, batch, create_graph=True)
            return ((E - batch.energy) ** 2).mean() + ((F - batch.forces) ** 2).mean()
        return energy_force_loss
    if kind == "dynamics":
        from course_lib.models.egnn import next_step_loss

        return next_step_loss
    return lambda model, batch: ((model(batch) - batch.target_pos) ** 2).mean()


def infer_fn(kind: str):
    """Inference: energies and forces in eval mode, or one forward pass without gradients."""
    from course_lib.models import energy_and_forces

    if kind == "energy":
        return lambda model, batch: energy_and_forces(model, batch, create_graph=False)

    def forward(model, batch):
        with torch.no_grad():
            return model(batch)
    return forward


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------


def time_calls(fn, device: torch.device, repeats: int, warmup: int) -> dict:
    """Median / min wall and CPU time (ms) of ``fn()``, with CUDA synchronisation around each call."""
    cuda = device.type == "cuda"
    wall, cpu = [], []
    for k in range(warmup + repeats):
        if cuda:
            torch.cuda.synchronize(device)
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        t1, c1 = time.perf_counter(), time.process_time()
        if k >= warmup:
            wall.append(1e3 * (t1 - t0))
            cpu.append(1e3 * (c1 - c0))
    return {"median_ms": statistics.median(wall), "min_ms": min(wall), "median_cpu_ms": statistics.median(cpu),
            "repeats": repeats, "warmup": warmup}


def time_model(name: str, device: torch.device, batch_size: int, graphs, args) -> dict:
    """Train-step and inference timings of one model at one batch size on one device."""
    dataset, kind = MODELS[name]
    torch.manual_seed(0)
    model = make_model(name, graphs, args.quick).to(device)
    batch = Batch.from_data_list(graphs[:batch_size]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)  # small: the weights barely move while timing
    loss = loss_fn(kind)

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss(model, batch).backward()
        opt.step()

    model.train()
    train = time_calls(train_step, device, args.repeats, args.warmup)
    model.eval()
    infer_call = infer_fn(kind)
    infer = time_calls(lambda: infer_call(model, batch), device, args.repeats, args.warmup)
    for t in (train, infer):
        t["per_frame_ms"] = t["median_ms"] / batch_size
        t["per_frame_cpu_ms"] = t["median_cpu_ms"] / batch_size
    return {"model": name, "kind": kind, "data": dataset, "batch": batch_size, "num_nodes": int(batch.num_nodes),
            "num_parameters": sum(p.numel() for p in model.parameters()), "train": train, "infer": infer}


def settings_for(devices: list[str], threads: list[str]) -> list[tuple[str, torch.device, int]]:
    """(label, device, torch threads) for every requested device and CPU thread count."""
    out = []
    for d in devices:
        dev = check_device(d)
        if dev.type == "cpu":
            for t in threads:
                n = (os.cpu_count() or 1) if t == "all" else int(t)
                out.append((f"cpu{n}", dev, n))
        else:
            out.append((d, dev, 1))
    return out


def run_local(args, partial: Path | None = None) -> tuple[list[dict], list[dict]]:
    """Time every requested model in this process; returns (rows, skipped). With ``partial``, the rows so far are
    written there after every model (``{"partial": true, "rows": ...}``), so a run cut short keeps its numbers."""
    rows, skipped = [], []
    data_cache: dict[str, list] = {}
    for label, device, threads in settings_for(args.device, args.threads):
        torch.set_num_threads(threads)
        for name in args.models:
            dataset = MODELS[name][0]
            sizes = (QUICK_BATCHES if args.quick else BATCHES)[dataset]
            if dataset not in data_cache:
                data_cache[dataset] = load_graphs(dataset, max(sizes))
            for bs in sizes:
                try:
                    row = time_model(name, device, bs, data_cache[dataset], args)
                except (RuntimeError, ValueError) as err:  # e.g. out of memory: record, go on
                    skipped.append({"model": name, "setting": label, "batch": bs, "reason": f"{type(err).__name__}: "
                                                                                           f"{err}"[:500]})
                    continue
                row.update(setting=label, device=str(device), threads=threads)
                rows.append(row)
                if partial is not None:
                    partial.write_text(json.dumps({"partial": True, "rows": rows, "skipped": skipped}, indent=1))
                print(f"{label:6s} {name:14s} batch {bs:4d}: train {row['train']['median_ms']:8.2f} ms "
                      f"(CPU {row['train']['median_cpu_ms']:8.2f}), infer {row['infer']['median_ms']:8.2f} ms "
                      f"(CPU {row['infer']['median_cpu_ms']:8.2f})", flush=True)
    return rows, skipped


# --------------------------------------------------------------------------------------------
# before / after in alternating subprocesses
# --------------------------------------------------------------------------------------------


def _subprocess_rows(src: Path, model: str, args, tmp: Path, tag: str) -> list[dict]:
    out = tmp / f"{tag}_{model}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--models", model, "--device", ",".join(args.device),
           "--threads", ",".join(args.threads), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
           "--out", str(out), "--no-official"] + (["--quick"] if args.quick else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]))
    subprocess.run(cmd, env=env, check=True, cwd=str(ROOT))
    res = json.loads(out.read_text())
    if Path(res["course_lib"]).resolve() != (src / "course_lib").resolve():
        raise SystemExit(f"the {tag} subprocess imported {res['course_lib']}, not {src / 'course_lib'}")
    return res["rows"]


def run_alternating(args) -> tuple[list[dict], list[dict]]:
    """Each model timed with the baseline's course_lib, then with this checkout's, in fresh processes, ``--rounds``
    times. ``ratio_after_over_before`` is the median over the rounds of the ratio of the two medians of a round
    (``ratio_rounds``: every round's); the rows are those of the last round."""
    rows, before, ratios = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            for _ in range(args.rounds):
                b_rows = _subprocess_rows(Path(args.baseline_src), model, args, Path(tmp), "before")
                a_rows = _subprocess_rows(ROOT, model, args, Path(tmp), "after")
                key = {(r["model"], r["setting"], r["batch"]): r for r in b_rows}
                for r in a_rows:
                    b = key[(r["model"], r["setting"], r["batch"])]
                    ratios.setdefault((r["model"], r["setting"], r["batch"]), []).append({
                        f"{part}_{what}": r[part][what] / b[part][what]
                        for part in ("train", "infer") for what in ("median_ms", "median_cpu_ms")})
            before += b_rows
            rows += a_rows
    for r in rows:
        rounds = ratios[(r["model"], r["setting"], r["batch"])]
        r["ratio_rounds"] = rounds
        r["ratio_after_over_before"] = {k: statistics.median(q[k] for q in rounds) for k in rounds[0]}
    return rows, before


# --------------------------------------------------------------------------------------------
# the official nequip package
# --------------------------------------------------------------------------------------------


def nequip_official(skip: bool) -> dict:
    """The official package is timed by ``benchmarks/nequip_official.py`` in its own venv; quote its committed
    step time here and say whether the venv exists (this script does not install or run it)."""
    venv = Path(os.environ.get("NEQUIP_VENV", "/tmp/nequip-venv"))
    out: dict = {"venv": str(venv)}
    ref = HERE / "results" / "nequip_official_timing.json"
    if ref.exists():
        off = json.loads(ref.read_text())
        out["committed_reference"] = {
            "file": str(ref.relative_to(ROOT)), "command": off.get("command"),
            "step_ms_median_batch5_1thread_wall": 1e3 * off["training"]["step_s_median"],
            "load_average": [off.get("load_start"), off.get("load_end")],
            "note": "wall time of nequip-train steps (forward, force loss, backward, Adam; l_max 1, 32 features, "
                    "3 layers, batch of 5 ethanol), 1 thread; compare with nequip_l1 batch 5 train median_ms, cpu1"}
    if skip:
        out["skipped"] = "not asked (--no-official)"
    elif not (venv / "bin" / "python").exists():
        out["skipped"] = (f"no separate nequip environment at {venv} (set NEQUIP_VENV; see "
                          "benchmarks/nequip_official.md): the official package is not timed in this run")
    else:
        out["skipped"] = (f"{venv} exists; re-time the official package with `{venv}/bin/python "
                          "benchmarks/nequip_official.py --epochs 3 --limit-train-batches 60 --no-compile "
                          "--out /tmp/off_timing.json` (its step timer is nequip-train's own)")
    return out


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------


def markdown(res: dict) -> str:
    """The rows as a markdown table (median ms per step / call; CPU time for CPU rows, wall time for CUDA)."""
    ratios = any("ratio_after_over_before" in r for r in res["rows"])
    head = "| model | setting | batch | train step, ms | infer, ms | train per frame, ms |"
    rule = "|---|---|---|---|---|---|"
    if ratios:
        head += " train after/before | infer after/before |"
        rule += "---|---|"
    lines = [f"`{res['command']}`, {res['date']}, load average {res['machine']['load_average'][0]:.1f} at the start, "
             f"{res['load_average_end'][0]:.1f} at the end. CPU rows: CPU time of the process; CUDA rows: wall time.",
             "", head, rule]
    for r in res["rows"]:
        key = "median_ms" if r["device"].startswith("cuda") else "median_cpu_ms"
        per = "per_frame_ms" if key == "median_ms" else "per_frame_cpu_ms"
        line = (f"| {r['model']} | {r['setting']} | {r['batch']} | {r['train'][key]:.2f} | {r['infer'][key]:.2f} | "
                f"{r['train'][per]:.3f} |")
        if ratios:
            q = r.get("ratio_after_over_before", {})
            line += "".join(f" {q[f'{part}_{key}']:.2f} |" if f"{part}_{key}" in q else " - |"
                            for part in ("train", "infer"))
        lines.append(line)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma list among {','.join(MODELS)}")
    ap.add_argument("--device", default="cpu", help="comma list: cpu, cuda, cuda:1 ... (default cpu)")
    ap.add_argument("--threads", default="1,all", help="CPU torch threads to time, comma list (all = every core)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="tiny models and batches, 3 repeats (pipeline check)")
    ap.add_argument("--baseline-src", default=None, help="folder with another course_lib to compare with")
    ap.add_argument("--rounds", type=int, default=1, help="with --baseline-src: before/after alternations per model")
    ap.add_argument("--no-official", action="store_true", help="do not look for the official nequip package")
    ap.add_argument("--note", default=None, help="free text stored in the JSON (e.g. the state of the machine)")
    ap.add_argument("--out", default=None, help="JSON path (default results/throughput.json; --quick: temp folder)")
    args = ap.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        ap.error(f"unknown models {bad}; choose among {list(MODELS)}")
    args.device = [d for d in args.device.split(",") if d]
    args.threads = [t for t in args.threads.split(",") if t]
    if args.quick:
        args.repeats, args.warmup = 3, 1
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    import course_lib
    from course_lib.utils import machine_info

    for d in args.device:
        check_device(d)
    machine_start = machine_info(cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                                 cuda_version=torch.version.cuda)
    path = Path(args.out) if args.out else (Path(tempfile.gettempdir()) / "course_throughput_quick.json"
                                            if args.quick else HERE / "results" / "throughput.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    before = None
    if args.baseline_src:
        rows, before = run_alternating(args)
        skipped = []
    else:
        rows, skipped = run_local(args, path.with_suffix(".partial.json"))
        path.with_suffix(".partial.json").unlink(missing_ok=True)
    res = {
        "benchmark": "training-step and inference throughput of the course's models",
        "command": "python " + " ".join(["benchmarks/throughput.py", *argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "course_lib": str(Path(course_lib.__file__).resolve().parent),
        "quick": args.quick,
        "machine": machine_start,
        "load_average_end": os.getloadavg(),
        "note": args.note,
        "config": {"models": args.models, "device": args.device, "threads": args.threads, "repeats": args.repeats,
               "rounds": args.rounds if args.baseline_src else None,
                   "warmup": args.warmup, "batches": QUICK_BATCHES if args.quick else BATCHES, "dtype": "float32"},
        "rows": rows,
        "skipped": skipped,
        "nequip_official": nequip_official(args.no_official),
        "total_wall_s": time.perf_counter() - t0,
    }
    if before is not None:
        res["baseline"] = {"src": str(Path(args.baseline_src).resolve()), "rows": before}
    path.write_text(json.dumps(res, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(res))
    print(f"wrote {path} and {path.with_suffix('.md').name}")
    return res


if __name__ == "__main__":
    main()
