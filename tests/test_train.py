"""Tests of the training loop, checkpoints and train-or-load."""

import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

import course_lib
from course_lib import train as T


def _loaders(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    graphs = []
    for _ in range(n):
        x = torch.randn(5, 2, generator=g)
        graphs.append(Data(pos=x, y=(x**2).sum().reshape(1)))
    return DataLoader(graphs[:48], batch_size=8, shuffle=True), DataLoader(graphs[48:], batch_size=16)


class SumModel(torch.nn.Module):
    def __init__(self, hidden=16):
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, 1))

    def forward(self, batch):
        e = self.mlp(batch.pos).squeeze(-1)
        return torch.zeros(batch.num_graphs).index_add(0, batch.batch, e)


def _mse(model, batch):
    return ((model(batch) - batch.y) ** 2).mean()


def test_fit_reduces_loss_and_keeps_best_weights():
    torch.manual_seed(0)
    tr, va = _loaders()
    model = SumModel()
    before = T.evaluate(model, va, _mse)
    hist = T.fit(model, tr, va, _mse, epochs=40, lr=1e-2, progress=False)
    after = T.evaluate(model, va, _mse)
    assert after < 0.5 * before
    assert after == pytest.approx(hist.best_val, rel=1e-5)
    assert len(hist.train) == len(hist.val) and hist.seconds > 0


def test_early_stopping():
    torch.manual_seed(0)
    tr, va = _loaders()
    model = SumModel()
    hist = T.fit(model, tr, va, _mse, epochs=200, lr=0.0, patience=3, progress=False, scheduler=None)
    assert hist.stopped_early and len(hist.train) <= 5


def test_nan_loss_raises_with_advice():
    tr, va = _loaders()
    with pytest.raises(FloatingPointError, match="learning rate"):
        T.fit(SumModel(), tr, va, lambda m, b: m(b).sum() * float("nan"), epochs=1, progress=False)


def test_checkpoint_roundtrip_weights_only(tmp_path):
    model = SumModel()
    p = T.save_checkpoint(tmp_path / "m.pt", model, config={"hidden": 16}, metrics={"mae": 0.1})
    payload = torch.load(p, weights_only=True)
    assert payload["course_lib_version"] == course_lib.__version__
    assert payload["config"] == {"hidden": 16}
    other = SumModel()
    T.load_checkpoint(p, other)
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)


def test_checkpoint_wrong_class_and_version_warning(tmp_path, monkeypatch):
    p = T.save_checkpoint(tmp_path / "m.pt", SumModel())
    with pytest.raises(ValueError, match="holds a SumModel"):
        T.load_checkpoint(p, torch.nn.Linear(2, 1))
    monkeypatch.setattr(course_lib, "__version__", "9.9.9")
    with pytest.warns(UserWarning, match="retrain"):
        T.load_checkpoint(p)


def test_train_or_load(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_FAST", raising=False)
    calls = []

    def train_fn(m):
        calls.append(1)
        with torch.no_grad():
            m.mlp[0].weight.fill_(0.5)
        return {"mae": 1.0}

    path = tmp_path / "ck.pt"
    info = T.train_or_load(SumModel(), path, train_fn, config={"hidden": 16})
    assert not info["loaded"] and info["saved"] and path.exists() and len(calls) == 1
    m2 = SumModel()
    info2 = T.train_or_load(m2, path, train_fn, config={"hidden": 16})
    assert info2["loaded"] and len(calls) == 1
    assert torch.all(m2.mlp[0].weight == 0.5)
    with pytest.raises(ValueError, match="retrain=True"):
        T.train_or_load(SumModel(), path, train_fn, config={"hidden": 32})


def test_train_or_load_fast_mode_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_FAST", "1")
    path = tmp_path / "ck.pt"
    info = T.train_or_load(SumModel(), path, lambda m: {"x": 1}, retrain=True)
    assert not path.exists() and info["saved"] is False
