"""Shared fixtures of the library tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny graphs run fastest on one thread (and a shared machine makes two threads wait)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
