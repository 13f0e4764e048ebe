"""Every benchmark script that trains or times a model takes ``--device`` (issue 16), default ``cpu``, and
refuses ``--device cuda`` at once with a clear message where there is no CUDA.

Cheap: ``--help`` (all scripts in one subprocess) and argument parsing only (nothing is trained or timed here).
The quick runs of each script live in its own ``tests/test_benchmark_*.py``.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"

#: scripts without ``--device``, and why (every other ``benchmarks/*.py`` must have it)
NO_DEVICE = {
    "ethanol_conformers.py": "runs GFN2-xTB (tblite, CPU only) and no learned model",
    "nequip_official.py": "drives the official nequip package in its own environment (its trainer picks the "
                          "device); it is the CPU reference of nequip_compare.py",
    "mace_ethanol.py": "drives the mace-torch package in its own environment, like nequip_official.py; the "
                       "committed MACE reference is a CPU run",
    "student_runs.py": "measures what a student waits for on one CPU thread; the notebooks pick their device "
                       "themselves",
    "md_ethanol_floor.py": "runs GFN2-xTB (tblite, CPU only) through notebook 08's harness; the models' runs "
                           "it compares with are md_ethanol.py's, which takes --device",
    "nbody_authors.py": "drives the authors' EGNN code in their own script, on the CPU (their --no-cuda flag), "
                        "side by side with nbody.py's CPU runs; nbody.py takes --device",
}
#: scripts whose ``--device`` defaults to something else than cpu, and why
OTHER_DEFAULT = {"gpu_check.py": "its point is a GPU against the CPU (default cuda; --device cpu checks the pipeline)"}
#: the positional arguments a script needs before its options
POSITIONAL = {"md_ethanol.py": ["nve"], "schnet_molecules.py": ["final"]}
#: the scripts given --device by issue 16 (they share course_lib.utils.check_device)
CHANGED = ["ase_md.py", "committee.py", "cost_scaling.py", "egnn_dynamics.py", "energy_learning_curve.py",
           "md_ethanol.py", "md_speed.py", "nbody.py", "nbody_divergence.py", "nequip_compare.py",
           "nequip_learning_curve.py", "painn_ethanol.py", "schnet_molecules.py", "vibrations.py"]

SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_"))


#: one subprocess prints every script's ``--help`` (runpy, as ``python benchmarks/X.py --help`` would), as JSON:
#: torch and the library are imported once, not once per script
HELP_DRIVER = """
import contextlib, io, json, runpy, sys
out = {}
for path in sys.argv[1:]:
    buf = io.StringIO()
    sys.argv = [path, "--help"]
    try:
        with contextlib.redirect_stdout(buf):
            runpy.run_path(path, run_name="__main__")
        code = None
    except SystemExit as exc:
        code = exc.code
    out[path] = {"code": code, "help": buf.getvalue()}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def helps():
    scripts = [str(BENCH / s) for s in SCRIPTS]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", HELP_DRIVER, *scripts], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    return {Path(k).name: v for k, v in json.loads(res.stdout.strip().splitlines()[-1]).items()}


def test_the_exception_lists_name_existing_scripts():
    for name in [*NO_DEVICE, *OTHER_DEFAULT, *POSITIONAL, *CHANGED]:
        assert (BENCH / name).exists(), name
    assert not set(NO_DEVICE) & set(CHANGED)


@pytest.mark.parametrize("script", sorted(NO_DEVICE))
def test_the_exceptions_still_lack_device(script, helps):
    """Keeps NO_DEVICE honest: a script that gained --device leaves the list."""
    assert "--device" not in helps[script]["help"], f"{script} has --device now: remove it from NO_DEVICE"


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s not in NO_DEVICE])
def test_help_has_device_option_default_cpu(script, helps):
    assert helps[script]["code"] in (0, None), f"{script} --help exited with {helps[script]['code']}"
    text = " ".join(helps[script]["help"].split())  # argparse wraps the help text
    assert "--device" in text, f"{script}: no --device in --help (or list it in NO_DEVICE with the reason)"
    if script not in OTHER_DEFAULT:
        assert "default cpu" in text, f"{script}: --help does not say that the default device is cpu"


def _load(script):
    spec = importlib.util.spec_from_file_location(f"bench_device_{Path(script).stem}", BENCH / script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here: --device cuda would run")
@pytest.mark.parametrize("script", CHANGED)
def test_device_cuda_without_cuda_fails_fast_with_a_message(script, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        _load(script).main([*POSITIONAL.get(script, []), "--quick", "--device", "cuda", "--out", str(out)])
    assert "--device cuda: CUDA is not available here" in str(exc.value) and "use --device cpu" in str(exc.value)
    assert not out.exists()  # nothing was run or written
