"""The throughput benchmark runs end to end (quick mode) and writes its JSON; no timing is asserted."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TOP_KEYS = {"benchmark", "command", "date", "course_lib", "quick", "machine", "load_average_end", "config", "rows",
            "skipped", "nequip_official", "total_wall_s"}
ROW_KEYS = {"model", "kind", "data", "batch", "num_nodes", "num_parameters", "train", "infer", "setting", "device",
            "threads"}
TIMING_KEYS = {"median_ms", "min_ms", "median_cpu_ms", "per_frame_ms", "per_frame_cpu_ms", "repeats", "warmup"}


def _bench():
    spec = importlib.util.spec_from_file_location("throughput", ROOT / "benchmarks" / "throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _check_rows(rows, models, batches):
    assert {(r["model"], r["batch"]) for r in rows} == {(m, b) for m in models for b in batches[m]}
    for r in rows:
        assert ROW_KEYS <= r.keys(), ROW_KEYS - r.keys()
        assert r["setting"] == "cpu1" and r["device"] == "cpu" and r["threads"] == 1
        assert r["num_parameters"] > 0 and r["num_nodes"] > 0
        for part in ("train", "infer"):
            t = r[part]
            assert TIMING_KEYS <= t.keys(), (r["model"], part)
            assert all(math.isfinite(t[k]) and t[k] >= 0 for k in ("median_ms", "min_ms", "median_cpu_ms"))
            assert t["per_frame_ms"] == pytest.approx(t["median_ms"] / r["batch"])


def test_quick_run_every_model(tmp_path, one_thread):
    bench = _bench()
    out = tmp_path / "throughput.json"
    res = bench.main(["--quick", "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    assert TOP_KEYS <= res.keys(), TOP_KEYS - res.keys()
    assert res["quick"] is True and res["command"].startswith("python benchmarks/throughput.py --quick")
    assert {"platform", "torch", "threads", "cpu_count", "load_average", "cuda"} <= res["machine"].keys()
    assert res["skipped"] == []
    batches = {m: bench.QUICK_BATCHES[data] for m, (data, _) in bench.MODELS.items()}
    _check_rows(res["rows"], list(bench.MODELS), batches)
    assert {r["kind"] for r in res["rows"]} == {"energy", "dynamics", "nbody"}
    official = res["nequip_official"]
    assert "skipped" in official or "rows" in official


def test_baseline_comparison_adds_ratios(tmp_path):
    """--baseline-src times another course_lib in alternating subprocesses (here: this checkout itself)."""
    bench = _bench()
    res = bench.main(["--quick", "--threads", "1", "--models", "coord_mlp", "--baseline-src", str(ROOT),
                      "--out", str(tmp_path / "t.json")])
    _check_rows(res["rows"], ["coord_mlp"], {"coord_mlp": bench.QUICK_BATCHES["particles"]})
    assert len(res["baseline"]["rows"]) == len(res["rows"]) == 2
    for r in res["rows"]:
        assert set(r["ratio_after_over_before"]) == {"train_median_ms", "train_median_cpu_ms", "infer_median_ms",
                                                     "infer_median_cpu_ms"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_cuda_asked_but_absent_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="CUDA is not available"):
        _bench().main(["--quick", "--device", "cuda", "--out", str(tmp_path / "t.json")])
