"""Tests of course_lib.utils and the data contract."""

import pytest
import torch
from torch_geometric.data import Data

from course_lib import data as D
from course_lib import utils
from course_lib.models import energy_and_forces


def test_fast_switch(monkeypatch):
    monkeypatch.setenv("COURSE_FAST", "1")
    assert utils.is_fast() and utils.fast_or_full(1, 2) == 1
    monkeypatch.setenv("COURSE_FAST", "0")
    assert not utils.is_fast() and utils.fast_or_full(1, 2) == 2


def test_seed_and_device(monkeypatch):
    utils.seed_everything(3)
    a = torch.rand(3)
    utils.seed_everything(3)
    assert torch.equal(a, torch.rand(3))
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    assert utils.get_device().type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            utils.get_device("cuda")


def test_doctor_line():
    line = utils.doctor(print_it=False)
    for word in ("torch", "torch_geometric", "e3nn", "device", "fast mode"):
        assert word in line


def test_contract_accepts_good_graphs():
    g = D.make_graph([[0.0, 0.0], [1.0, 0.5]], charge=[1, -1], box=[5.0, 5.0], energy=0.3,
                     forces=[[0.1, 0.0], [-0.1, 0.0]], vel=[[0, 0], [0, 0]], fixed=[False, True])
    assert g.box.shape == (1, 2) and g.energy.shape == (1,) and g.fixed.dtype == torch.bool
    D.validate(D.make_graph(torch.rand(3, 3), z=[1, 6, 8]), require=("z",))


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"pos": torch.rand(3)}, "'pos' has shape"),
        ({"pos": torch.rand(3, 2)}, "node type"),
        ({"pos": torch.rand(3, 2), "charge": torch.rand(4)}, "'charge' has shape"),
        ({"pos": torch.rand(3, 2), "charge": torch.rand(3), "box": torch.ones(2)}, "'box' has shape"),
        ({"pos": torch.rand(3, 2), "charge": torch.rand(3), "box": -torch.ones(1, 2)}, "positive"),
        ({"pos": torch.rand(3, 3), "z": torch.tensor([1.0, 6.0, 8.0])}, "'z' has dtype"),
        ({"pos": torch.rand(3, 3), "z": torch.tensor([0, 6, 8])}, ">= 1"),
        ({"pos": torch.tensor([[0.0, float("nan")]] * 2), "charge": torch.ones(2)}, "NaN"),
        ({"pos": torch.rand(3, 2), "charge": torch.rand(3), "forces": torch.rand(3, 3)}, "'forces' has shape"),
        ({"pos": torch.rand(3, 2), "charge": torch.rand(3), "fixed": torch.zeros(3)}, "'fixed' has dtype"),
    ],
)
def test_contract_errors_name_the_field(fields, match):
    with pytest.raises(D.ContractError, match=match):
        D.validate(Data(**fields))


def test_contract_required_fields_and_dataset_index():
    g = D.make_graph(torch.rand(3, 2), charge=[1, 1, -1])
    with pytest.raises(D.ContractError, match="'energy' is missing"):
        D.validate(g, require=("energy",))
    bad = Data(pos=torch.rand(2, 2))
    with pytest.raises(D.ContractError, match="graph 1"):
        D.validate_dataset([g, bad])


def test_checksums(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"hello")
    h = D.sha256_file(f)
    assert D.verify_checksum(f, expected=h) == h
    f.write_bytes(b"hellO")
    with pytest.raises(ValueError, match="checksum mismatch"):
        D.verify_checksum(f, expected=h)


def test_energy_and_forces_is_minus_gradient():
    class Harmonic(torch.nn.Module):
        def forward(self, b):
            return torch.zeros(b.num_graphs, dtype=b.pos.dtype).index_add(0, b.batch, (b.pos**2).sum(-1))

    from torch_geometric.data import Batch

    b = Batch.from_data_list([Data(pos=torch.rand(3, 2, dtype=torch.float64)) for _ in range(2)])
    e, f = energy_and_forces(Harmonic(), b)
    assert e.shape == (2,) and torch.allclose(f, -2 * b.pos)
    assert not b.pos.requires_grad  # the input batch is left untouched


def test_check_device_for_the_benchmarks(monkeypatch):
    """The benchmarks' --device: cpu passes, a bad name and CUDA where there is none stop with a message."""
    assert utils.check_device("cpu") == torch.device("cpu")
    with pytest.raises(SystemExit, match="not a torch device"):
        utils.check_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="--device cuda: CUDA is not available here.*use --device cpu"):
        utils.check_device("cuda")
    assert utils.device_info("cpu") == {"device": "cpu"}
    utils.synchronize("cpu")  # a no-op on the CPU
    assert "default cpu" in utils.DEVICE_HELP
