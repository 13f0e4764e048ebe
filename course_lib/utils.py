"""Small utilities every notebook uses: the fast-mode switch, seeding, device choice, and the
environment-doctor line printed by each notebook's setup cell."""

from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch

__all__ = ["FAST", "is_fast", "fast_or_full", "seed_everything", "get_device", "doctor"]


def is_fast() -> bool:
    """True when the environment variable ``COURSE_FAST`` is set to a true value.

    CI sets ``COURSE_FAST=1`` so every notebook shrinks its data and epochs; students leave it unset.
    """
    return os.environ.get("COURSE_FAST", "").strip().lower() in {"1", "true", "yes", "on"}


#: The fast-mode switch, read once at import time (``COURSE_FAST=1``).
FAST: bool = is_fast()


def fast_or_full(fast, full):
    """Return ``fast`` in fast mode and ``full`` otherwise (e.g. ``epochs = fast_or_full(2, 100)``)."""
    return fast if is_fast() else full


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a ``torch.Generator`` seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds legacy global-state code students may use
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def get_device(prefer: str | None = None) -> torch.device:
    """Pick the device: ``prefer`` if given, else ``COURSE_DEVICE``, else CUDA when available, else CPU."""
    name = prefer or os.environ.get("COURSE_DEVICE")
    if name:
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available; use 'cpu'.")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _version(module: str) -> str:
    try:
        mod = __import__(module)
    except ImportError:
        return "not installed"
    return getattr(mod, "__version__", "unknown")


def doctor(print_it: bool = True) -> str:
    """One line describing the environment: library versions, device and fast mode."""
    import course_lib

    dev = get_device()
    gpu = f" ({torch.cuda.get_device_name(0)})" if dev.type == "cuda" else ""
    line = (
        f"course_lib {course_lib.__version__} | python {platform.python_version()} | torch {torch.__version__}"
        f" | torch_geometric {_version('torch_geometric')} | e3nn {_version('e3nn')}"
        f" | device {dev}{gpu} | fast mode {'ON' if is_fast() else 'off'}"
    )
    if print_it:
        print(line)
    return line


def machine_info(**extra) -> dict:
    """Where a benchmark ran: platform, processor, torch version, torch threads, CPU count and the load
    average (timings on a shared machine swing with load, so every results file records it)."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg()}
    info.update(extra)
    return info
