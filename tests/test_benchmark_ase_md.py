"""The ASE MD benchmark runs end to end (quick mode, shortened further) and writes its JSON."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run(tmp_path, one_thread):
    spec = importlib.util.spec_from_file_location("ase_md_bench", ROOT / "benchmarks" / "ase_md.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.main(["--quick", "--repeats", "3", "--time-fs", "2", "--time-tau", "0.02", "--out", str(tmp_path)])
    on_disk = json.loads((tmp_path / "ase_md.json").read_text())
    assert on_disk["timing"]["float64"]["calculator_ms"] > 0
    assert len(res["nve_schnet"]) == 6 and len(res["nve_particles"]) == 4
    assert all(r["max_z"] == 0.0 for r in res["nve_particles"])  # ASE keeps the particles in the plane
