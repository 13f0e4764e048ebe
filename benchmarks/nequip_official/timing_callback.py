"""Wall-clock timing of a ``nequip-train`` run, as a Lightning callback (runs in the nequip venv only).

``benchmarks/nequip_official.py`` puts this folder on ``PYTHONPATH`` and the config names
``timing_callback.StepTimer``. At the end of ``fit`` it writes a JSON file with, per epoch: the wall time
from the first training batch's start to the last one's end (forward, backward, optimiser step and data
loading between batches; validation excluded), the number of steps and frames, the validation time and
the learning rate; and the duration of every training step (batch start to batch end).
"""

from __future__ import annotations

import json
import os
import time

import torch
from lightning.pytorch.callbacks import Callback
from nequip.data import AtomicDataDict


class StepTimer(Callback):
    """Record per-step and per-epoch wall times of training; write them to ``path`` (JSON) at fit end."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.epochs: list[dict] = []
        self.step_s: list[float] = []
        self._t_step = None
        self._t_val = None
        self._t_fit = None

    def _epoch(self) -> dict:
        return self.epochs[-1]

    def on_fit_start(self, trainer, pl_module):
        self._t_fit = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module):
        self.epochs.append({"epoch": trainer.current_epoch, "steps": 0, "frames": 0, "first_start": None,
                            "last_end": None, "val_s": None, "lr": None})

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t_step = time.perf_counter()
        if self._epoch()["first_start"] is None:
            self._epoch()["first_start"] = self._t_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        t = time.perf_counter()
        self.step_s.append(t - self._t_step)
        ep = self._epoch()
        ep["last_end"] = t
        ep["steps"] += 1
        ep["frames"] += int(AtomicDataDict.num_frames(batch))

    def on_validation_epoch_start(self, trainer, pl_module):
        self._t_val = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or not self.epochs:
            return
        self._epoch()["val_s"] = time.perf_counter() - self._t_val

    def on_train_epoch_end(self, trainer, pl_module):
        self._epoch()["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])

    def on_fit_end(self, trainer, pl_module):
        epochs = []
        for ep in self.epochs:
            ep = dict(ep)
            first, last = ep.pop("first_start"), ep.pop("last_end")
            ep["train_s"] = None if first is None else last - first
            epochs.append(ep)
        payload = {
            "fit_s": time.perf_counter() - self._t_fit,
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "epochs": epochs,
            "step_s": self.step_s,
        }
        with open(self.path, "w") as f:
            json.dump(payload, f, indent=1)
