"""The notebook-08 benchmarks (md_speed.py, md_ethanol.py) run end to end in quick mode and write their JSON.

A tiny random SchNet checkpoint stands in for all three shipped models (the pipeline, not the numbers, is
tested here), so the tests do not depend on the trained checkpoints.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib.datasets import load_molecules
from course_lib.models.schnet import SchNet
from course_lib.train import load_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _bench(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = SchNet(hidden=16, filters=16, num_layers=1, num_basis=10, cutoff=4.0)
    model.fit_energy_scale(load_molecules("ethanol", "train")[:20])
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model, config=model.config, metrics={"force_mae_meV_A": 1.0})
    return str(path)


def _models(path):
    return ["--schnet", path, "--nequip-l0", path, "--nequip-l1", path]


def test_load_model_rebuilds_the_checkpoint_and_a_missing_file_says_how_to_make_it(tiny_checkpoint, tmp_path):
    model, payload = load_model(tiny_checkpoint)
    assert isinstance(model, SchNet) and not model.training and payload["metrics"]["force_mae_meV_A"] == 1.0
    assert model.trained_species == (1, 6, 8)
    with pytest.raises(FileNotFoundError, match="python make_it.py"):
        load_model(tmp_path / "nope.pt", how_to_make="python make_it.py")
    torch.save({"model_class": "Mystery", "config": {}}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="Mystery"):
        load_model(tmp_path / "odd.pt")


def test_md_speed_quick(tmp_path, tiny_checkpoint, one_thread):
    bench = _bench("md_speed")
    res = bench.main(["--quick", "--repeats", "2", "--batch", "4", "--out", str(tmp_path), *_models(tiny_checkpoint)])
    on_disk = json.loads((tmp_path / "md_speed.json").read_text())
    assert set(on_disk["systems"]) == {"ethanol", "aspirin", "water_1", "water_3", "ethanol_batch"}
    assert on_disk["systems"]["water_3"]["atoms"] == 9
    assert res["systems"]["ethanol"]["schnet"]["cpu"]["cpu_ms"] > 0
    assert res["systems"]["ethanol"]["xtb"]["cpu"]["wall_ms"] > 0
    assert res["systems"]["ethanol_batch"]["schnet"]["cpu"]["molecules"] == 4


def test_water_cluster_geometry():
    bench = _bench("md_speed")
    a = bench.water_cluster(10)
    assert len(a) == 30 and a.get_chemical_symbols()[:3] == ["O", "H", "H"]
    oh = np.linalg.norm(a.positions[1::3] - a.positions[0::3], axis=1)
    assert np.allclose(oh, 0.96)
    d = np.linalg.norm(a.positions[0::3][:, None] - a.positions[0::3][None], axis=-1)
    assert np.min(d[np.triu_indices(10, 1)]) == pytest.approx(3.1)


@pytest.mark.parametrize("part", ["nve", "nvt", "stability"])
def test_md_ethanol_quick(part, tmp_path, tiny_checkpoint, one_thread):
    bench = _bench("md_ethanol")
    extra = ["--nve-ps", "0.004"] if part == "nve" else []
    res = bench.main([part, "--quick", "--out", str(tmp_path), *_models(tiny_checkpoint), *extra])
    on_disk = json.loads((tmp_path / f"md_ethanol_{part}.json").read_text())
    assert on_disk["command"].startswith(f"python benchmarks/md_ethanol.py {part}")
    if part == "nve":
        assert {r["method"] for r in res["nve"]["rows"]} == {"xtb", "schnet", "nequip_l0", "nequip_l1"}
        assert all("drift_eV_per_ps" in r or "failed" in r for r in res["nve"]["rows"])
    elif part == "nvt":
        floor = res["nvt"]["reference"]["noise_floor"]
        assert set(floor) == {"distances", "co_bond", "dihedral"} and floor["dihedral"]["w1"] > 0
        row = res["nvt"]["models"]["schnet"]
        assert row["min_replica_distance_A"] > 40.0  # the replicas stay far apart
        assert 0 <= row["vs_reference"]["co_bond"]["js"] <= 1
    else:
        (block,) = res["stability"]["runs"]
        assert block["temperature_K"] == 500.0 and len(block["models"]["xtb"]["failure_time_fs"]) == 1
        row = block["models"]["schnet"]
        assert len(row["failure_time_fs"]) == 2 and row["metrics"]["force_mae_meV_A"] == 1.0


def test_md_ethanol_nvt_never_measures_equilibration_frames(tmp_path, tiny_checkpoint, one_thread, monkeypatch):
    """A model that breaks during equilibration gets no observables (its few equilibration frames, one every
    0.5 ps, are not samples); one that breaks during sampling keeps what it sampled."""
    bench = _bench("md_ethanol")
    real = bench.run_md
    calls = {"n": 0, "fail_at": 0}

    def breaking(dyn, steps, stride, **kw):
        calls["n"] += 1
        rec = real(dyn, steps, stride=stride, **kw)
        if calls["n"] == calls["fail_at"]:
            err = RuntimeError("bond broken (test)")
            err.record = rec
            raise err
        return rec

    monkeypatch.setattr(bench, "run_md", breaking)
    for fail_at, phase in ((1, "equilibration"), (2, "sampling")):
        calls.update(n=0, fail_at=fail_at)
        res = bench.main(["nvt", "--quick", "--out", str(tmp_path), *_models(tiny_checkpoint)])
        row = res["nvt"]["models"]["schnet"]
        assert row["failed_in"] == phase
        assert ("vs_reference" in row) is (phase == "sampling")


def test_md_ethanol_sweep_quick(tmp_path, tiny_checkpoint, one_thread):
    """The sweep part runs every checkpoint of a folder and xTB in the stability harness and writes its schema."""
    import shutil

    bench = _bench("md_ethanol")
    ckpts = tmp_path / "ckpt"
    ckpts.mkdir()
    for name in ("schnet_s0.pt", "schnet_s1.pt"):
        shutil.copy(tiny_checkpoint, ckpts / name)
    res = bench.main(["sweep", "--quick", "--out", str(tmp_path), "--sweep-dir", str(ckpts)])
    on_disk = json.loads((tmp_path / "md_ethanol_sweep.json").read_text())
    assert on_disk["command"].startswith("python benchmarks/md_ethanol.py sweep") and "date" in on_disk
    sweep = on_disk["sweep"]
    assert sweep["temperature_K"] == 1000.0 and sweep["limit_ps"] == 0.02 and sweep["replicas"] == 2
    assert set(sweep["models"]) == {"schnet_s0", "schnet_s1"}
    for row in sweep["models"].values():
        assert len(row["failure_time_fs"]) == 2 and row["force_mae_meV_A"] == 1.0 and len(row["sha256"]) == 64
        surv = row["survival_fs"]
        assert surv["n"] == 2 and 0 <= surv["surviving"] <= 1 and 0 < surv["restricted_mean"] <= 20.0
    assert len(sweep["xtb"]["failure_time_fs"]) == 1 and sweep["xtb"]["survival_fs"]["limit"] == 20.0
    assert res["sweep"]["models"]["schnet_s0"]["failure_time_fs"] == row["failure_time_fs"]  # same model, same seeds
    with pytest.raises(FileNotFoundError, match="save-checkpoint"):
        bench.main(["sweep", "--quick", "--out", str(tmp_path), "--sweep-dir", str(tmp_path / "empty")])


def test_stability_removes_failed_replicas_and_continues(tmp_path):
    """A potential that tears one replica apart: that replica fails, the other reaches the limit."""
    bench = _bench("md_ethanol")
    from ase.calculators.calculator import Calculator, all_changes

    class PullReplicaZero(Calculator):  # pulls atom 3 (the hydroxyl H) of replica 0 away; no forces elsewhere
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            f = np.zeros((len(self.atoms), 3))
            if self.atoms.positions[:, 0].min() < 25.0:  # replica 0 is still in the system
                f[3] = [0.0, 0.0, 20.0]
            self.results = {"energy": 0.0, "forces": f}

    res = bench.stability_run(PullReplicaZero, k=2, temperature=10.0, limit_ps=0.1, seed=0)
    assert res["failure_time_fs"][0] is not None and res["failure_time_fs"][1] is None
    assert res["stable_replicas"] == 1 and "stretched" in res["reasons"]["0"]


def test_md_ethanol_floor_quick(tmp_path, tiny_checkpoint, one_thread):
    """xTB ensembles through the nvt harness: the sample-size matched noise floor, with its own seeds."""
    bench = _bench("md_ethanol_floor")
    fake = {"temperature_K": 500.0, "dt_fs": 0.5, "friction_per_fs": 0.01, "replicas": 2, "equil_ps": 0.005,
            "sample_ps_per_replica": 0.02,
            "models": {"cut_short": {"vs_reference": dict.fromkeys(("distances", "co_bond", "dihedral"),
                                                                   {"w1": 1.0, "js": 1.0}),
                                     "frames_per_replica": 2}}}
    (tmp_path / "nvt.json").write_text(json.dumps({"nvt": fake}))  # a committed run, stopped after 2 frames
    bench.main(["--quick", "--out", str(tmp_path), "--models", "schnet", "--schnet", tiny_checkpoint,
                "--nvt", str(tmp_path / "nvt.json")])
    on_disk = json.loads((tmp_path / "md_ethanol_xtb_floor.json").read_text())
    assert on_disk["command"].startswith("python benchmarks/md_ethanol_floor.py")
    f = on_disk["floor"]
    assert len(f["xtb"]) == 2 and f["replicas"] == 2
    xtb_seeds = {s for e in f["xtb"] for s in e["velocity_and_noise_seeds"]}
    (ens,) = f["models"]["schnet"]["ensembles"]
    assert len(xtb_seeds) == 4 and not xtb_seeds & ({0} | set(ens["velocity_seeds"]))  # independent of ref, models
    for e in [*f["xtb"], ens]:
        assert e["frames_per_replica"] == 3 and len(e["per_replica"]) == 2  # 0.02 ps, a frame every 10 fs
        assert set(e["vs_reference"]) == {"distances", "co_bond", "dihedral"}
    assert len(ens["floor_matched"]) == 2 and ens["floor_matched"][0] == f["xtb"][0]["vs_reference"]
    s = f["summary"]["schnet"]["dihedral_w1"]
    assert s["floor"] == [e["vs_reference"]["dihedral"]["w1"] for e in f["xtb"]] and s["model_minus_floor"] is None
    assert f["floor"]["co_bond_w1"]["n"] == 2 and "half_vs_half" in f["reference"]
    positions = np.load(tmp_path / "md_ethanol_xtb_floor.npz")
    assert positions["xtb_e1"].shape == (2, 3, 9, 3)
    cut = f["committed_nvt"]["cut_short"]["floor_matched"]  # the xTB ensembles cut to the model's 2 frames
    assert len(cut) == 2 and cut[1] != f["xtb"][1]["vs_reference"]
    z = f["summary_committed_nvt"]["cut_short"]["co_bond_w1"]
    assert z["floor"] == [c["co_bond"]["w1"] for c in cut] and z["z"] > 0  # a distance of 1 A is far above
