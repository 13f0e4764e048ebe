"""Small utilities every notebook uses: the fast-mode switch, seeding, device choice, and the
environment-doctor line printed by each notebook's setup cell."""

from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch

__all__ = ["FAST", "is_fast", "fast_or_full", "seed_everything", "get_device", "doctor", "machine_info",
           "DEVICE_HELP", "add_device_argument", "check_device", "device_info", "synchronize"]


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


#: ``--help`` text of every benchmark script's ``--device`` option.
DEVICE_HELP = ("where the learned models run: cpu, cuda or cuda:N (default cpu; the committed results in "
               "benchmarks/results/ are CPU results). xTB reference calculations always run on the CPU.")


def add_device_argument(parser, default: str = "cpu", help: str = DEVICE_HELP) -> None:
    """The ``--device`` option of the benchmark scripts (one convention: name, default ``cpu``, help text)."""
    parser.add_argument("--device", default=default, help=help)


def check_device(name: str) -> torch.device:
    """``torch.device(name)`` for a benchmark's ``--device``; exits with a clear message when the name is not a
    device or CUDA is asked for and absent (before any data is loaded or model trained)."""
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise SystemExit(f"--device {name}: not a torch device ({exc}); use --device cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available here (torch {torch.__version__}, "
                         f"built with CUDA {torch.version.cuda}); use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device {name}: only cpu and cuda are supported by the benchmarks")
    return dev


def device_info(device) -> dict:
    """What a results file records about the device: ``{"device": "cpu"}`` or, on a GPU, also its name and the
    CUDA version (pass it into :func:`machine_info`: ``machine_info(**device_info(dev))``)."""
    dev = torch.device(device)
    info = {"device": str(dev)}
    if dev.type == "cuda":
        info.update(cuda=torch.cuda.get_device_name(dev), cuda_version=torch.version.cuda)
    return info


def synchronize(device) -> None:
    """``torch.cuda.synchronize`` on a CUDA device (around every timed region), nothing on the CPU."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
