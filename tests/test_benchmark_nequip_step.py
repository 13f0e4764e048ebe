"""The NequIP step-time benchmark runs end to end (quick mode) and writes its JSON."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run(tmp_path, one_thread):
    spec = importlib.util.spec_from_file_location("nequip_step", ROOT / "benchmarks" / "nequip_step.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "step.json"
    res = bench.main(["--quick", "--lmax", "0,1", "--layers", "1", "--features", "8", "--out", str(out)])
    assert [r["l_max"] for r in res["results"]] == [0, 1]
    assert all(r["median_ms"] > 0 and r["median_cpu_ms"] > 0 for r in res["results"])
    assert json.loads(out.read_text())["results"][1]["hidden_irreps"] == "8x0e+8x1o"
