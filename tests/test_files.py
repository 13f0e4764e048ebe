"""Tests of course_lib.files: repository URL, repo_file, deterministic npz."""

import numpy as np
import pytest

from course_lib import files


def test_repository_url_is_the_pyproject_one():
    assert files.repository_url().startswith("https://github.com/")
    assert files.raw_url("a/b.txt").endswith("/main/a/b.txt")


def test_repository_override_is_a_loopback_testing_hook(monkeypatch):
    """COURSE_LIB_REPOSITORY (tests/test_colab.py) points downloads at a local stand-in of GitHub."""
    monkeypatch.setenv(files.REPOSITORY_ENV, "http://127.0.0.1:8123/")
    assert files.repository_url() == "http://127.0.0.1:8123"
    assert files.raw_url("data/x.npz") == "http://127.0.0.1:8123/raw/main/data/x.npz"
    monkeypatch.setenv(files.REPOSITORY_ENV, "https://example.org/repo")
    with pytest.raises(RuntimeError, match="not a GitHub repository"):
        files.raw_url("data/x.npz")


def test_repo_file_prefers_the_checkout():
    assert files.repo_file("pyproject.toml") == files.REPO_ROOT / "pyproject.toml"


def test_repo_file_downloads_into_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "REPO_ROOT", tmp_path / "no-checkout")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    src = tmp_path / "src.txt"
    src.write_text("hello")
    monkeypatch.setattr(files, "raw_url", lambda rel: src.as_uri())
    p = files.repo_file("benchmarks/results/x.txt")
    assert p.read_text() == "hello" and "cache" in str(p)
    with pytest.raises(ValueError, match="checksum mismatch"):
        files.repo_file("benchmarks/results/x.txt", sha256="0" * 64)


def test_write_npz_is_bit_identical(tmp_path):
    arrays = {"b": np.arange(5, dtype=np.float32), "a": np.ones((2, 3))}
    files.write_npz(tmp_path / "1.npz", arrays)
    files.write_npz(tmp_path / "2.npz", arrays)
    assert (tmp_path / "1.npz").read_bytes() == (tmp_path / "2.npz").read_bytes()
    with np.load(tmp_path / "1.npz") as z:
        assert list(z.files) == ["b", "a"] and np.array_equal(z["a"], arrays["a"])


def test_torch_save_atomic_never_leaves_a_truncated_file(tmp_path, monkeypatch):
    """A write that dies half-way (a killed training run) leaves the previous file whole and no temporary."""
    import torch

    path = tmp_path / "sub" / "state.pt"
    assert files.torch_save_atomic({"epoch": 1, "w": torch.ones(3)}, path) == path
    assert torch.load(path, weights_only=True)["epoch"] == 1

    real_save = torch.save

    def dies_half_way(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as fh:
            fh.truncate(10)
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        files.torch_save_atomic({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.pt"]
