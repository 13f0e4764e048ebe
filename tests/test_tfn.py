"""The Tensor Field Network of notebook 06's training run, its data (N-body states labelled with their Coulomb
forces), the measured student runs and the section finder of course_lib.teaching.student_run."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
import torch
from torch_geometric.data import Batch

from course_lib import symmetry as S
from course_lib.models.tfn import TensorFieldNetwork
from course_lib.simulate.nbody import forces, load_nbody_forces
from course_lib.teaching import student_run
from course_lib.train import load_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def graphs():
    return load_nbody_forces("test", n=6)


def test_labels_are_the_clipped_coulomb_forces(graphs):
    g = graphs[0]
    expected = forces(g.pos.double().numpy(), g.charge.double().numpy(), max_force=10.0)
    assert torch.allclose(g.forces.double(), torch.from_numpy(expected), atol=1e-5)
    assert float(g.forces.norm(dim=-1).max()) <= 10.0 + 1e-4
    # the label itself is equivariant: rotate the positions, the forces rotate
    R = S.random_orthogonal(3, det=-1, generator=0).to(torch.float64)
    rotated = forces((g.pos.double() @ R.T).numpy(), g.charge.double().numpy(), max_force=10.0)
    assert torch.allclose(torch.from_numpy(rotated), torch.from_numpy(expected) @ R.T, atol=1e-8)


@pytest.mark.parametrize("l_max", [1, 2])
def test_tfn_is_e3_and_permutation_equivariant(graphs, l_max):
    torch.manual_seed(0)
    model = TensorFieldNetwork(hidden=4, num_layers=2, l_max=l_max).eval()
    batch = Batch.from_data_list(graphs)
    out = model(batch)
    assert out.shape == (batch.num_nodes, 3) and out.abs().max() > 0
    with torch.no_grad():
        for name, T in S.standard_transforms(batch, generator=1).items():
            S.assert_equivariant(model, batch, T, output="vector", name=name)


def test_tfn_is_rebuilt_from_its_checkpoint(graphs, tmp_path):
    torch.manual_seed(0)
    model = TensorFieldNetwork(hidden=3, num_layers=1)
    save_checkpoint(tmp_path / "tfn.pt", model, model.config)
    again, _ = load_model(tmp_path / "tfn.pt")
    batch = Batch.from_data_list(graphs[:2])
    assert torch.allclose(again(batch), model.eval()(batch))


def test_section_cells_finds_the_section_and_its_end():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import torch"),
        nbformat.v4.new_markdown_cell("## 3. Training\ntext"),
        nbformat.v4.new_code_cell("a = 1"),
        nbformat.v4.new_markdown_cell("### Your training run: a model\nknobs"),
        nbformat.v4.new_code_cell("N = 2"),
        nbformat.v4.new_markdown_cell("more text, no heading"),
        nbformat.v4.new_code_cell("fit()"),
        nbformat.v4.new_markdown_cell("text first\n\n## 4. Next section"),
        nbformat.v4.new_code_cell("after = 1"),
    ])
    before, cells = student_run.section_cells(nb)
    assert before == ["import torch", "a = 1"] and cells == ["N = 2", "fit()"]
    with pytest.raises(ValueError, match="Your training run"):
        student_run.section_cells(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("## 1. x")]))


def test_compare_prints_one_row_per_model():
    table = student_run.compare({"shipped": {"MAE": 0.1, "n": 800}, "yours": {"MAE": 0.25, "n": None}}, title="t")
    lines = table.splitlines()
    assert lines[0] == "t" and "MAE" in lines[1] and lines[2].startswith("shipped") and lines[3].startswith("yours")
    assert "800" in lines[2] and lines[3].rstrip().endswith("-")


def test_measured_runs_record_the_machine_and_the_command():
    data = json.loads((ROOT / student_run.RESULTS).read_text())
    for number, row in data["runs"].items():
        assert {"seconds", "load_average", "load_after", "machine", "command", "date", "threads"} <= set(row), number
        assert row["command"].startswith("OMP_NUM_THREADS=1 ") and row["threads"] == 1
    assert "not measured yet" in student_run.measured("99") and "s (" in student_run.measured(next(iter(data["runs"])))



def test_tfn_forces_benchmark_quick(tmp_path, monkeypatch):
    """benchmarks/tfn_forces.py --quick: the checkpoint loads with load_model and the results file has the schema."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import tfn_forces

    assert tfn_forces.main(["--quick", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "tfn_forces.json").read_text())
    assert {"command", "date", "machine", "seeds", "sizes", "config", "metrics", "history"} <= set(record)
    assert {"test_force_mae", "zero_prediction_mae", "best_epoch", "steps"} <= set(record["metrics"])
    model, payload = load_model(tmp_path / "tfn_forces.pt")
    assert isinstance(model, TensorFieldNetwork) and payload["config"] == model.config
