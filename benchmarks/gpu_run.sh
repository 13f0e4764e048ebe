#!/usr/bin/env bash
# One self-contained GPU session (about 5-7 minutes on an H200 machine): run from the repository root,
#     OUT=/some/folder bash benchmarks/gpu_run.sh
# Installs nothing and needs no network: course_lib is imported from this checkout (PYTHONPATH), the data from
# data/. It needs python with torch (CUDA build), torch_geometric, e3nn, numpy. Everything it writes goes to $OUT:
#   env.txt                     versions, CUDA device (and why it stopped, if a library is missing)
#   gpu_check.txt               CUDA vs CPU energies/forces of the same weights, rotation equivariance on CUDA
#   throughput_cuda.json        benchmarks/throughput.py --device cuda (every model, 2 batch sizes)
#   profiles/*_gpu.txt          torch.profiler tables of NequIP l_max 1 and EGNN N-body training steps on CUDA
#   throughput_cpu.json         the same models on this machine's CPU, 1 thread and all threads
#   device_quick/<script>.txt   every training/benchmark script's pipeline check with --device cuda (if time is left)
#   log.txt                     everything printed
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to the folder for the results}
mkdir -p "$OUT/profiles"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
exec > >(tee -a "$OUT/log.txt") 2>&1
echo "== $(date -u +%FT%TZ) $(git rev-parse HEAD 2>/dev/null || echo 'no git')"

# 1. the environment: stop with a clear message when a library or the GPU is missing
if ! "$PY" - > "$OUT/env.txt" 2>&1 <<'EOF'
import sys
missing = []
for name in ("torch", "torch_geometric", "e3nn", "numpy"):
    try:
        __import__(name)
    except ImportError as err:
        missing.append(f"{name} ({err})")
if missing:
    sys.exit("MISSING: " + ", ".join(missing) + " -- this script installs nothing; install them (pip install -e .)")
import e3nn, numpy, torch, torch_geometric
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA build", torch.version.cuda,
      "| torch_geometric", torch_geometric.__version__, "| e3nn", e3nn.__version__, "| numpy", numpy.__version__)
if not torch.cuda.is_available():
    sys.exit("NO CUDA: torch.cuda.is_available() is False (a CPU-only torch build, or no driver)")
print("device:", torch.cuda.get_device_name(0), "| capability", torch.cuda.get_device_capability(0),
      "| cpu cores", __import__("os").cpu_count())
import course_lib.models.nequip  # noqa: F401  (the course imports: fails here, not in the middle of the run)
print("course_lib from", course_lib.models.nequip.__file__)
EOF
then
    cat "$OUT/env.txt"; echo "== environment check FAILED, nothing else was run"; exit 2
fi
cat "$OUT/env.txt"

# 2. correctness on the GPU (seconds)
timeout 120 "$PY" benchmarks/gpu_check.py 2>&1 | tee "$OUT/gpu_check.txt"

# 3. the GPU numbers first (the point of the session), then the profiles, then the CPU of the same machine
# (each throughput run writes <out>.partial.json after every model, so a run cut by its timeout keeps its rows)
timeout 200 "$PY" benchmarks/throughput.py --device cuda --no-official --out "$OUT/throughput_cuda.json" \
    --note "benchmarks/gpu_run.sh"
timeout 60 "$PY" benchmarks/profile_steps.py --device cuda --models nequip_l1,egnn_nbody --batch 32 --tag gpu \
    --out "$OUT/profiles"
timeout 150 "$PY" benchmarks/throughput.py --device cpu --threads 1,all --repeats 20 --no-official \
    --models nequip_l1,egnn_nbody,schnet,nequip_l0 --out "$OUT/throughput_cpu.json" \
    --note "benchmarks/gpu_run.sh, the CPU of the GPU machine"
# 4. the --device cuda path of every script, in its quick mode (never run on a GPU before: a first smoke test)
mkdir -p "$OUT/device_quick"
for script in committee painn_ethanol energy_learning_curve schnet_molecules egnn_dynamics nbody vibrations; do
    timeout 60 "$PY" "benchmarks/$script.py" --quick --device cuda --out "$OUT/device_quick/$script" \
        > "$OUT/device_quick/$script.txt" 2>&1
    echo "device_quick $script: exit $?"
done
timeout 60 "$PY" benchmarks/nequip_learning_curve.py --lmax 1 --quick --device cuda \
    --out "$OUT/device_quick/nequip_learning_curve" > "$OUT/device_quick/nequip_learning_curve.txt" 2>&1
echo "device_quick nequip_learning_curve: exit $?"
echo "== done $(date -u +%FT%TZ); files in $OUT:"; ls -l "$OUT"
