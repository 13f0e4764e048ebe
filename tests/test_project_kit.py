"""The replication kit's worked checkpoint 3 (project/checkpoint3_example.py) passes on the course's NequIP, and its
checks fail on implementations that break what they check."""

import importlib.util
from pathlib import Path

import pytest
import torch

from course_lib.datasets import load_molecules

ROOT = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("checkpoint3_example", ROOT / "project" / "checkpoint3_example.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ex():
    return _example()


@pytest.fixture(scope="module")
def frames():
    return load_molecules("ethanol", "train", dtype=torch.float64)[:8]


def test_the_worked_example_passes(ex, tmp_path, one_thread):
    out = ex.main(["--json", str(tmp_path / "c3.json"), "--steps", "200"])
    assert out["passed"] and len(out["checks"]) == 11 and all(": OK" in line for line in out["checks"])
    assert out["training"]["loss_end"] * 5 < out["training"]["loss_start"]
    assert (tmp_path / "c3.json").exists()


class _Lopsided(torch.nn.Module):
    """An energy that sees absolute x coordinates: not invariant under rotations or translations."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, data):
        return self.model(data) + 0.1 * data.pos[:, 0].sum().reshape(1)


def test_the_checks_can_fail(ex, frames, one_thread):
    model = ex.build_model().double().eval()
    with pytest.raises(AssertionError, match="symmetry broken"):
        ex.check_symmetries(_Lopsided(model).eval(), frames[0])

    class Wrong(torch.nn.Module):  # a model with a long-range term: distant molecules interact
        def __init__(self):
            super().__init__()
            self.config = model.config

        def forward(self, data):
            d = torch.cdist(data.pos, data.pos)
            return (model(data) + 1e-3 * d.sum()).reshape(1)

    with pytest.raises(AssertionError, match="interact"):
        ex.check_locality(Wrong().eval(), frames[0])
