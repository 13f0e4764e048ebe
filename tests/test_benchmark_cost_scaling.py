"""The cost-scaling benchmark runs end to end (quick mode) and writes its JSON; no timing is asserted."""

import importlib.util
import json
import math
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("cost_scaling", ROOT / "benchmarks" / "cost_scaling.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_quick_run_schema(tmp_path, one_thread):
    out = tmp_path / "cost.json"
    res = _bench().main(["--quick", "--out", str(out)])
    stored = json.loads(out.read_text())
    assert {"benchmark", "command", "date", "machine", "config", "rows", "exponents", "laws"} <= stored.keys()
    assert "load_average" in stored["machine"] and "load_average_end" in stored["machine"]
    assert {(r["path"], r["l_max"]) for r in res["rows"]} == {("tp_full", 0), ("tp_full", 1), ("tp_uvu", 0),
                                                              ("tp_uvu", 1), ("painn", 1)}
    for r in res["rows"]:
        assert r["num_atoms"] == 24 and r["num_edges"] > 0 and r["num_parameters"] > 0
        assert len(r["times_ms"]) == 2 and all(t > 0 for t in r["times_ms"])
    assert {"tp_full (all)", "tp_uvu (all)"} == set(res["exponents"])
    assert all(math.isfinite(e["mean"]) for e in res["exponents"].values())


def test_water_box_is_periodic_water():
    bench = _bench()
    pos, z, box = bench.water_box(3)
    assert pos.shape == (81, 3) and z.tolist()[:3] == [8, 1, 1]
    assert torch.allclose(box, torch.full((1, 3), 9.3).double())
    assert bool((pos >= 0).all() and (pos < 9.3).all())
    from course_lib.neighbors import radius_graph

    edge_index, edge_vec = radius_graph(pos, 1.0, box=box)  # only the O-H bonds are shorter than 1 A
    assert edge_index.shape[1] == 2 * 2 * 27
    assert torch.allclose(edge_vec.norm(dim=-1), torch.full((108,), 0.9572).double())
