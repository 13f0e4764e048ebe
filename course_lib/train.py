"""A small training loop, checkpoints and train-or-load, shared by every notebook.

- :func:`fit` trains with Adam, a tqdm progress bar, validation every epoch, early stopping on the
  validation loss, and keeps the best weights.
- :func:`save_checkpoint` / :func:`load_checkpoint` store only tensors and plain Python values, so a
  checkpoint loads with ``torch.load(weights_only=True)`` (no pickled code), and are stamped with
  the course_lib version and the model's configuration.
- :func:`train_or_load` lets a CPU student load a shipped checkpoint instead of training for minutes;
  :func:`load_model` rebuilds a shipped model (class + config) from its checkpoint alone.
- Checkpoints written before a constructor argument was renamed keep loading: every model class lists
  its renames in ``LEGACY_CONFIG_KEYS`` (old key -> new) and :func:`upgrade_config` applies them to a
  stored configuration; renamed parameters or buffers are mapped by the model itself on
  ``load_state_dict`` (``LEGACY_STATE_KEYS``, e.g. SchNet's ``species_mask`` -> ``trained_mask``).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from course_lib.utils import is_fast

__all__ = ["History", "fit", "evaluate", "save_checkpoint", "load_checkpoint", "train_or_load", "load_model",
           "load_shipped_model", "MODEL_CLASSES", "upgrade_config"]


@dataclass
class History:
    """Per-epoch losses and the best epoch of a :func:`fit` run."""

    train: list[float] = field(default_factory=list)
    val: list[float] = field(default_factory=list)
    best_epoch: int = -1
    best_val: float = math.inf
    seconds: float = 0.0
    stopped_early: bool = False
    lr: list[float] = field(default_factory=list)  # learning rate used in each epoch

    def as_dict(self) -> dict:
        return {"train": self.train, "val": self.val, "best_epoch": self.best_epoch,
                "best_val": self.best_val, "seconds": self.seconds, "stopped_early": self.stopped_early,
                "lr": self.lr}


def _to(batch, device):
    return batch.to(device) if hasattr(batch, "to") else batch


@torch.no_grad()
def _eval_no_grad(model, loader, loss_fn, device):
    return _mean_loss(model, loader, loss_fn, device)


def _mean_loss(model, loader, loss_fn, device):
    total, count = 0.0, 0
    for batch in loader:
        batch = _to(batch, device)
        loss = loss_fn(model, batch)
        n = getattr(batch, "num_graphs", 1)
        total += float(loss.detach()) * n
        count += n
    return total / max(count, 1)


def evaluate(model: torch.nn.Module, loader: Iterable, loss_fn: Callable, device=None,
             needs_grad: bool = False) -> float:
    """Mean of ``loss_fn(model, batch)`` over a loader (weighted by graphs per batch), in eval mode.

    Set ``needs_grad=True`` when the loss differentiates the model (forces by autograd).
    """
    device = device or next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        if needs_grad:
            return _mean_loss(model, loader, loss_fn, device)
        return _eval_no_grad(model, loader, loss_fn, device)
    finally:
        model.train(was)


def _train_epoch(model, train_loader, loss_fn, opt, device, grad_clip, epoch) -> float:
    """One pass over ``train_loader``; returns the mean training loss (weighted by graphs per batch)."""
    model.train()
    total, count = 0.0, 0
    for batch in train_loader:
        batch = _to(batch, device)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model, batch)
        loss.backward()
        # one host-device synchronisation per step, after the backward pass has been queued (on a GPU a
        # check before it would stall the queue between forward and backward); no weight is updated yet
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(
                f"loss became {value} at epoch {epoch}: lower the learning rate (now "
                f"{opt.param_groups[0]['lr']}) or check the data for NaNs"
            )
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        n = getattr(batch, "num_graphs", 1)
        total += value * n
        count += n
    return total / max(count, 1)


def fit(
    model: torch.nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None,
    loss_fn: Callable,
    epochs: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    patience: int | None = 20,
    device=None,
    progress: bool = True,
    needs_grad_eval: bool = False,
    scheduler: str | None = "plateau",
    grad_clip: float | None = 10.0,
    desc: str = "training",
    lr_patience: int | None = None,
    min_lr: float = 0.0,
) -> History:
    """Train ``model`` with Adam; return a :class:`History`. The best weights (lowest validation loss)
    are loaded into the model at the end.

    ``loss_fn(model, batch) -> scalar tensor`` holds everything model-specific (energy loss, force
    loss, rollout loss, ...). ``patience``: stop after that many epochs without a better validation
    loss (None: never). ``scheduler="plateau"`` halves the learning rate when validation has not
    improved for ``lr_patience`` epochs (default: a third of ``patience``, at least 2), never below
    ``min_lr``; the rate of every epoch is in ``History.lr``.
    """
    from tqdm.auto import tqdm

    device = device or next(model.parameters()).device
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = None
    if scheduler == "plateau":
        if lr_patience is None:
            lr_patience = max(2, (patience or 20) // 3)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=lr_patience, min_lr=min_lr)
    hist = History()
    best_state = copy.deepcopy(model.state_dict())
    t0 = time.perf_counter()
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    since_best = 0
    for epoch in bar:
        hist.lr.append(float(opt.param_groups[0]["lr"]))
        hist.train.append(_train_epoch(model, train_loader, loss_fn, opt, device, grad_clip, epoch))
        val = hist.train[-1] if val_loader is None else evaluate(model, val_loader, loss_fn, device,
                                                                  needs_grad=needs_grad_eval)
        hist.val.append(val)
        if sched is not None:
            sched.step(val)
        if val < hist.best_val:
            hist.best_val, hist.best_epoch, since_best = val, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
        bar.set_postfix(train=f"{hist.train[-1]:.3g}", val=f"{val:.3g}", best=f"{hist.best_val:.3g}")
        if patience is not None and since_best >= patience:
            hist.stopped_early = True
            break
    model.load_state_dict(best_state)
    hist.seconds = time.perf_counter() - t0
    return hist


def save_checkpoint(path: str | Path, model: torch.nn.Module, config: dict | None = None,
                    metrics: dict | None = None) -> Path:
    """Save weights + plain metadata (atomically); loadable with ``torch.load(path, weights_only=True)``."""
    import course_lib
    from course_lib.files import torch_save_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "course_lib_version": course_lib.__version__,
        "model_class": type(model).__name__,
        "config": dict(config or {}),
        "metrics": dict(metrics or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return torch_save_atomic(payload, path)


def load_checkpoint(path: str | Path, model: torch.nn.Module | None = None, map_location="cpu") -> dict:
    """Load a checkpoint saved by :func:`save_checkpoint` (``weights_only=True``: no code is executed).

    With ``model`` given, its class must match the checkpoint and the weights are loaded into it.
    Warns when the checkpoint was written by another course_lib version.
    """
    import course_lib

    payload = torch.load(Path(path), map_location=map_location, weights_only=True)
    if payload.get("course_lib_version") != course_lib.__version__:
        warnings.warn(
            f"checkpoint {path} was written by course_lib {payload.get('course_lib_version')}, "
            f"this is {course_lib.__version__}; retrain if the model definition changed",
            stacklevel=2,
        )
    if model is not None:
        if payload["model_class"] != type(model).__name__:
            raise ValueError(f"checkpoint {path} holds a {payload['model_class']}, not a {type(model).__name__}")
        model.load_state_dict(payload["state_dict"])
    return payload


def train_or_load(
    model: torch.nn.Module,
    path: str | Path,
    train_fn: Callable[[torch.nn.Module], dict | None],
    config: dict | None = None,
    retrain: bool | None = None,
) -> dict:
    """Load ``path`` into ``model`` if it exists (and matches ``config``); otherwise train and save.

    ``train_fn(model) -> metrics dict`` trains in place. ``retrain=True`` always trains (never in fast
    mode: fast mode trains a tiny model and must not overwrite a shipped checkpoint, so it returns
    without saving). Returns the checkpoint metadata, with ``"loaded": True/False``.
    """
    path = Path(path)
    fast = is_fast()
    if path.exists() and not retrain:
        payload = load_checkpoint(path, model)
        payload["config"] = upgrade_config(type(model), payload.get("config") or {})
        if config is not None and payload.get("config") != dict(config):
            raise ValueError(
                f"checkpoint {path} was trained with config {payload.get('config')}, but this model uses "
                f"{dict(config)}: delete the file or pass retrain=True to train again"
            )
        return {**payload, "loaded": True}
    metrics = train_fn(model) or {}
    if fast:
        return {"config": dict(config or {}), "metrics": metrics, "loaded": False, "saved": False}
    save_checkpoint(path, model, config, metrics)
    return {"config": dict(config or {}), "metrics": metrics, "loaded": False, "saved": True}


#: Model classes that :func:`load_model` can rebuild from a checkpoint: class name -> "module:Class".
MODEL_CLASSES = {
    "SchNet": "course_lib.models.schnet:SchNet",
    "NequIP": "course_lib.models.nequip:NequIP",
    "PaiNN": "course_lib.models.painn:PaiNN",
    "InvariantMPNN": "course_lib.models.mpnn:InvariantMPNN",
    "AbsolutePositionGNN": "course_lib.models.baselines:AbsolutePositionGNN",
    "EdgeVectorGNN": "course_lib.models.baselines:EdgeVectorGNN",
    "CoordinateMLP": "course_lib.models.baselines:CoordinateMLP",
    "AbsoluteCoordinateGNN": "course_lib.models.baselines:AbsoluteCoordinateGNN",
    "EGNN": "course_lib.models.egnn:EGNN",
    "EGNNDynamics": "course_lib.models.nbody:EGNNDynamics",
    "TensorFieldNetwork": "course_lib.models.tfn:TensorFieldNetwork",
}


def upgrade_config(model_class: type, config: dict) -> dict:
    """A stored configuration with the keys of today's constructor: the old keys of
    ``model_class.LEGACY_CONFIG_KEYS`` (old -> new) are renamed, the others kept (a copy is returned).

    The mapping tables (one per model class, in the class): ``InvariantMPNN``, ``AbsolutePositionGNN``,
    ``AbsoluteCoordinateGNN``, ``EGNN``, ``GNNDynamics``, ``RadialField``, ``EGNNDynamics``:
    ``layers -> num_layers``; ``SchNet``: ``interactions -> num_layers``, ``num_gaussians -> num_basis``;
    ``NequIP``: ``num_features -> hidden``, ``r_max -> cutoff``, ``num_bessel -> num_basis``.

    Then the keys of ``model_class.LEGACY_CONFIG_DEFAULTS`` missing from the configuration are added with
    the behaviour the old code had (``InvariantMPNN`` and its subclasses: ``smooth_cutoff=False``), so an
    old checkpoint keeps computing what it was trained to compute when a new option's default changes.
    """
    renames = getattr(model_class, "LEGACY_CONFIG_KEYS", {})
    upgraded = {renames.get(key, key): value for key, value in dict(config).items()}
    return {**getattr(model_class, "LEGACY_CONFIG_DEFAULTS", {}), **upgraded}


def load_model(path: str | Path, how_to_make: str | None = None, map_location="cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model saved in a checkpoint (its class and ``config``), load the weights, return
    ``(model.eval(), payload)`` (``payload["metrics"]`` holds the test errors recorded at training).

    A missing file raises ``FileNotFoundError`` that says how to make it (``how_to_make``, e.g. the
    benchmark command that trains it); an unknown model class raises ``ValueError``.
    """
    import importlib

    path = Path(path)
    if not path.exists():
        hint = f": {how_to_make}" if how_to_make else ""
        raise FileNotFoundError(f"checkpoint {path} not found (is the repository checkout complete?); it is made "
                                f"by a benchmark script{hint}")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    name = payload.get("model_class")
    if name not in MODEL_CLASSES:
        raise ValueError(f"checkpoint {path} holds a {name!r}; load_model knows {sorted(MODEL_CLASSES)}")
    module, cls_name = MODEL_CLASSES[name].split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    model = cls(**upgrade_config(cls, payload["config"]))
    payload = load_checkpoint(path, model, map_location=map_location)
    return model.eval(), payload


def load_shipped_model(relpath: str, how_to_make: str | None = None) -> tuple[torch.nn.Module, dict]:
    """:func:`load_model` for a checkpoint shipped with the repository, e.g.
    ``"benchmarks/results/schnet_ethanol.pt"`` (from the checkout, else the download cache).

    When the file is neither in the checkout nor downloadable, raises ``FileNotFoundError`` naming the
    command that makes it (``how_to_make``).
    """
    from course_lib.files import repo_file

    try:
        path = repo_file(relpath)
    except RuntimeError as err:
        make = f"; make it with `{how_to_make}`" if how_to_make else ""
        raise FileNotFoundError(f"the shipped checkpoint {relpath} is not in this checkout and could not be "
                                f"downloaded ({err}){make}") from err
    return load_model(path, how_to_make=how_to_make)
