"""The ASE MD benchmark runs end to end (quick mode, shortened further) and writes its JSON."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run(tmp_path, one_thread):
    spec = importlib.util.spec_from_file_location("ase_md_bench", ROOT / "benchmarks" / "ase_md.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.main(["--quick", "--repeats", "3", "--time-fs", "2", "--time-tau", "0.02", "--out", str(tmp_path)])
    on_disk = json.loads((tmp_path / "ase_md.json").read_text())
    assert on_disk["timing"]["float64"]["calculator_ms"] > 0
    assert len(res["nve_schnet"]) == 6 and len(res["nve_particles"]) == 6
    assert {r["model"] for r in res["nve_particles"]} == {"mpnn", "mpnn_nocutoff", "exact"}
    assert all(r["max_z"] == 0.0 for r in res["nve_particles"])  # ASE keeps the particles in the plane
    # --parts reruns one part and keeps the others, each with its command
    again = bench.main(["--quick", "--time-tau", "0.01", "--parts", "nve_particles", "--out", str(tmp_path)])
    assert again["timing"] == on_disk["timing"] and again["nve_schnet"] == on_disk["nve_schnet"]
    assert again["nve_particles"][0]["steps"] < res["nve_particles"][0]["steps"]
    assert "--parts nve_particles" in again["part_commands"]["nve_particles"]
    assert "--parts" not in again["part_commands"]["timing"]


def test_parts_are_checked(tmp_path):
    spec = importlib.util.spec_from_file_location("ase_md_bench", ROOT / "benchmarks" / "ase_md.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--parts", "nve_particle", "--out", str(tmp_path)])  # a typo: argparse error
    with pytest.raises(SystemExit, match="run all parts first"):
        bench.main(["--quick", "--parts", "nve_particles", "--out", str(tmp_path)])  # nothing to keep
