"""Checkers of notebook 04: the EGNN N-body benchmark.

Exercises:

- ``04.coulomb_step``: one "kick and drift" prediction from Coulomb's law, written in the form of the Radial Field
  update (a sum over the other particles of relative vectors times invariant scalars):
  ``x_i' = x_i + t v_i + c sum_{j != i, same system} q_i q_j (x_i - x_j) / |x_i - x_j|^3``.
- ``04.nbody_design``: a design exercise. A class whose instances (built with no arguments) are N-body models
  ``model(data) -> [N, 3]`` (``data``: a PyG batch with ``pos``, ``vel`` ``[N, 3]``, ``charge`` ``[N]``, ``batch``;
  the output: the positions one time unit later). Required (a case that breaks one scores 0, the broken ones named
  with their errors): equivariance under rotations, reflections, translations of the positions (velocities
  unchanged) and permutations of the particles, on random inputs in float64; and learning: the untrained model
  must not already reach the bar. Budget: at most :data:`NBODY_MAX_PARAMETERS` parameters. Goal: after the fixed
  training run (:func:`train_nbody`: Adam, :data:`NBODY_STEPS` steps of :data:`NBODY_BATCH` systems, learning rate
  :data:`NBODY_LR`) the test MSE is below :data:`NBODY_MSE_BAR`. Budgets in steps and parameters, never seconds.

No reference solution is here: the expected outputs (of the correct solution and of the known mistakes) come from
the checker's ``expected`` provider (:mod:`course_lib.teaching.exercises.stored`). When the values are wrong, the
checker also measures the answer's symmetries and names the one that is broken, with its error.
"""

from __future__ import annotations

import math
from functools import cache

import torch

from course_lib.teaching.checks import exercise
from course_lib.teaching.exercises.common import (
    call_student,
    close,
    expect_tensor,
    functional_call,
    random_rotation_and_reflection,
    rng,
    shape_of,
    type_name,
)
from course_lib.teaching.exercises.stored import provider

__all__ = ["check_coulomb_step", "check_nbody_design", "train_nbody", "nbody_batch", "MISTAKES",
           "NBODY_MAX_PARAMETERS", "NBODY_STEPS", "NBODY_BATCH", "NBODY_LR", "NBODY_MSE_BAR"]

#: 04.nbody_design: the parameter budget (the notebook's EGNN has about 100,000 parameters)
NBODY_MAX_PARAMETERS = 50_000
#: 04.nbody_design: the fixed training run (the same for every design): Adam, this many optimiser steps on batches of
#: this many systems (drawn in a seeded order from the training subset), this learning rate, float64
NBODY_STEPS = 400
NBODY_BATCH = 50
NBODY_LR = 1e-3
#: 04.nbody_design: the accuracy bar, the test MSE of the predicted positions after the fixed training run
#: (the linear x + t v: about 0.087)
NBODY_MSE_BAR = 0.03

#: the known mistakes the checker diagnoses by comparison with their outputs (made by the reference's compute)
MISTAKES = {
    "attractive": "like charges attract in your answer: the pair term of particle i must point along "
                  "x_i - x_j (away from j) when q_i q_j > 0 (Coulomb: like charges repel)",
    "inverse square": "wrong power of the distance: the force is q_i q_j (x_i - x_j) / |x_i - x_j|^3, i.e. the unit "
                      "vector divided by r^2 (you divided the vector x_i - x_j by |x_i - x_j|^2 only)",
    "mean": "you average over the other particles (the Radial Field's 1 / (M - 1)): Coulomb forces add up, take "
            "the sum",
    "across systems": "particles of different systems interact in your answer: sum only over the particles j of the "
                      "same system (batch[j] == batch[i])",
}


def _systems(seed: int, systems: int, per_system: int):
    g = rng(seed)
    n = systems * per_system
    pos = torch.randn(n, 3, generator=g, dtype=torch.float64)
    vel = 0.5 * torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
    charge = torch.randint(0, 2, (n,), generator=g).to(torch.float64) * 2 - 1
    batch = torch.arange(systems).repeat_interleave(per_system)
    return pos, vel, charge, batch


def _call(fb, fn, pos, vel, charge, batch, t, c, what):
    out = call_student(fb, fn, (pos.clone(), vel.clone(), charge.clone(), batch.clone(), t, c),
                       f"coulomb_step on {what}")
    expect_tensor(fb, out, "coulomb_step")
    fb.expect(out.shape == pos.shape, f"return one position per particle, shape {tuple(pos.shape)}; got "
              f"{shape_of(out)}", fatal=True)
    return out.detach().to(torch.float64)


def _symmetry_errors(fn, fb, inputs, out, seed):
    """The error of the answer under each symmetry the prediction must have (positions rotate, reflect, translate
    and are permuted with the particles; velocities rotate and reflect, and do not translate)."""
    pos, vel, charge, batch, t, c = inputs
    R, M = random_rotation_and_reflection(seed + 1, seed + 1)
    shift = torch.randn(3, generator=rng(seed + 2), dtype=torch.float64) * 2.0
    perm = torch.randperm(len(pos), generator=rng(seed + 3))
    scale = max(1.0, float(out.abs().max()))
    errors = {}
    for name, Q in (("rotation", R), ("reflection", M)):
        moved = _call(fb, fn, pos @ Q.T, vel @ Q.T, charge, batch, t, c, f"a {name} of the systems")
        errors[name] = float((moved - out @ Q.T).abs().max()) / scale
    moved = _call(fb, fn, pos + shift, vel, charge, batch, t, c, "the systems translated")
    errors["translation"] = float((moved - (out + shift)).abs().max()) / scale
    moved = _call(fb, fn, pos[perm], vel[perm], charge[perm], batch[perm], t, c,
                  "the particles listed in another order")
    errors["permutation"] = float((moved - out[perm]).abs().max()) / scale
    return errors


@exercise("04.coulomb_step", "one Coulomb kick and drift, in the form of the Radial Field")
def check_coulomb_step(fn, fb, seed: int = 0, systems: int = 3, per_system: int = 5, t: float = 1.0,
                       c: float = 0.05, expected=None):
    want = provider(expected)
    pos, vel, charge, batch = _systems(seed, systems, per_system)
    inputs = (pos, vel, charge, batch, float(t), float(c))
    ref = want("04.coulomb_step", "values", *inputs)
    mistakes = {name: want("04.coulomb_step", name, *inputs) for name in MISTAKES}
    out = _call(fb, fn, *inputs, f"{systems} systems of {per_system} particles")
    ok = close(out, ref, atol=1e-9, rtol=1e-9)
    if not ok:
        free = pos + t * vel
        if close(out, free, atol=1e-9, rtol=1e-9):
            diagnosis = "you return free flight x + t v: add the Coulomb term c sum_j q_i q_j x_ij / |x_ij|^3"
        else:
            diagnosis = next((text for name, text in MISTAKES.items()
                              if close(out, mistakes[name], atol=1e-9, rtol=1e-9)), None)
        if diagnosis is None:
            errors = _symmetry_errors(fn, fb, inputs, out, seed)
            broken = [f"{name} (error {err:.1e})" for name, err in errors.items() if err > 1e-9]
            diagnosis = ("the values differ from x_i + t v_i + c sum_{j != i, same system} q_i q_j (x_i - x_j) / "
                         "|x_i - x_j|^3" + (f"; your answer is not equivariant under {', '.join(broken)}: build the "
                                            "pair term from x_i - x_j times a function of |x_i - x_j| and the charges "
                                            "only, never from the coordinates themselves" if broken else ""))
        fb.expect(False, diagnosis, values=True)
        return
    fb.expect(True, "", ok="values OK", values=True)
    errors = _symmetry_errors(fn, fb, inputs, out, seed)  # the right values on one input; on others too?
    for name, err in errors.items():
        fb.expect(err <= 1e-9, f"not equivariant under {name} (error {err:.1e}): the answer must not depend on the "
                  "orientation, origin or order of the particles", ok=f"equivariant under {name}")


# ----------------------------------------------------------------------------------------------- 04.nbody_design

#: the library's N-body models: the exercise asks for a design of the student's own
_LIBRARY_MODELS = ("LinearDynamics", "GNNDynamics", "RadialField", "EGNNDynamics", "EGNN")


@cache
def _nbody_split(split: str) -> tuple:
    """``(pos, vel, charge, target)`` of every system of a split, float64 ``[S, 5, 3]`` (charge ``[S, 5]``)."""
    from course_lib.simulate.nbody import load_nbody_arrays  # the data are loaded when the exercise is checked

    a = load_nbody_arrays(split)
    return tuple(torch.from_numpy(a[k]).to(torch.float64) for k in ("pos", "vel", "charge", "target_pos"))


def nbody_batch(pos: torch.Tensor, vel: torch.Tensor, charge: torch.Tensor):
    """A PyG batch of systems from ``pos``, ``vel`` ``[B, M, 3]`` and ``charge`` ``[B, M]``: what the model gets (no
    target)."""
    from torch_geometric.data import Batch

    b, m = charge.shape
    return Batch(pos=pos.reshape(b * m, 3), vel=vel.reshape(b * m, 3), charge=charge.reshape(b * m),
                 batch=torch.arange(b).repeat_interleave(m), ptr=torch.arange(b + 1) * m)


def _predict(fb, model, params, pos, vel, charge, what: str) -> torch.Tensor:
    """The model's positions ``[B, M, 3]`` with the parameters ``params``; a wrong type, shape or a NaN is fatal."""
    out = call_student(fb, functional_call, (model, params, (nbody_batch(pos, vel, charge),)), f"the model on {what}")
    n = pos.shape[0] * pos.shape[1]
    if not (isinstance(out, torch.Tensor) and tuple(out.shape) == (n, 3)):
        expect_tensor(fb, out, "the model")
        fb.expect(False, f"the model must return one position per particle, shape ({n}, 3), on {what}; got "
                  f"{shape_of(out)}", fatal=True)
    if not bool(torch.isfinite(out.detach()).all()):
        fb.expect(False, f"the model returns NaN or inf on {what}", fatal=True)
    return out.reshape(pos.shape)


def _random_systems(seed: int, systems: int = 3, per_system: int = 5):
    g = rng(seed)
    pos = torch.randn(systems, per_system, 3, generator=g, dtype=torch.float64)
    vel = 0.5 * torch.nn.functional.normalize(torch.randn(systems, per_system, 3, generator=g,
                                                          dtype=torch.float64), dim=-1)
    charge = (torch.randint(0, 2, (systems, per_system), generator=g) * 2 - 1).to(torch.float64)
    return pos, vel, charge


def _nbody_symmetries(fb, model, params, seed: int) -> list[str]:
    """Equivariance of the untrained model on random systems; the names (with errors) of the broken symmetries."""
    pos, vel, charge = _random_systems(seed + 20)
    with torch.no_grad():
        out = _predict(fb, model, params, pos, vel, charge, "3 random systems")
        scale = max(1.0, float(out.abs().max()))
        R, M = random_rotation_and_reflection(seed + 21, seed + 22)
        shift = torch.randn(3, generator=rng(seed + 23), dtype=torch.float64) * 2.0
        perm = torch.stack([torch.randperm(pos.shape[1], generator=rng(seed + 24 + k)) for k in range(len(pos))])
        take = lambda x: torch.gather(x, 1, perm[..., None].expand_as(x)) if x.dim() == 3 else torch.gather(x, 1, perm)  # noqa: E731
        moved = {
            "rotation": (pos @ R.T, vel @ R.T, charge, out @ R.T),
            "reflection": (pos @ M.T, vel @ M.T, charge, out @ M.T),
            "translation": (pos + shift, vel, charge, out + shift),
            "permutation": (take(pos), take(vel), take(charge), take(out)),
        }
        hints = {"rotation": "feed the networks invariants only (|x_ij|, |v_i|, q_i q_j) and move the particles "
                             "along vectors (x_ij, v_i) times those invariants",
                 "reflection": "a cross product or a fixed axis is not reflection equivariant: use x_ij and v_i "
                               "times invariant scalars",
                 "translation": "use differences x_i - x_j, never positions themselves, and return x_i plus a "
                                "displacement (the velocities do not change under a translation)",
                 "permutation": "sum (or average) over the other particles of the same system: no particle may "
                                "have a special place in the list"}
        broken = []
        for name, (p, v, q, want) in moved.items():
            got = _predict(fb, model, params, p, v, q, f"the random systems after a {name}")
            err = float((got - want).abs().max()) / scale
            ok = err <= 1e-8
            fb.expect(ok, f"not equivariant under {name}: the prediction is off by {err:.1e} (relative); "
                      + hints[name], ok=f"equivariant under {name}")
            broken += [] if ok else [f"{name} (error {err:.1e})"]
    return broken


def train_nbody(model, params: dict, train: tuple, steps: int = NBODY_STEPS, seed: int = 0,
                batch_size: int = NBODY_BATCH, lr: float = NBODY_LR, predict=None) -> list[float]:
    """The fixed training run of 04.nbody_design: Adam with learning rate ``lr`` on the parameters ``params`` (name ->
    float64 tensor, changed in place), ``steps`` optimiser steps, each on ``batch_size`` systems of ``train`` =
    ``(pos, vel, charge, target)`` in a seeded random order (epoch by epoch), loss = MSE of the positions. Returns
    the training losses; stops at the first one that is not finite."""
    predict = predict or (lambda p, v, q: functional_call(model, params, (nbody_batch(p, v, q),)).reshape(p.shape))
    pos, vel, charge, target = train
    opt = torch.optim.Adam(list(params.values()), lr=lr)
    g, order, losses = rng(seed + 100), torch.empty(0, dtype=torch.long), []
    for _ in range(steps):
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(len(pos), generator=g)])
        idx, order = order[:batch_size], order[batch_size:]
        loss = torch.nn.functional.mse_loss(predict(pos[idx], vel[idx], charge[idx]), target[idx])
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses


def _test_mse(fb, model, params, test: tuple, what: str) -> float:
    pos, vel, charge, target = test
    with torch.no_grad():
        err = sum(float(((_predict(fb, model, params, pos[k:k + 500], vel[k:k + 500], charge[k:k + 500], what)
                          - target[k:k + 500]) ** 2).sum()) for k in range(0, len(pos), 500))
    return err / target.numel()


def _nbody_build(cls, fb, seed: int):
    """The student's model built with no arguments (seeded weights), in float64, and its parameters."""
    with torch.random.fork_rng(devices=[]):  # seeded weights, the notebook's random state left alone
        torch.manual_seed(seed)
        model = call_student(fb, cls, (), "building the model with no arguments (NBodyModel())")
    fb.expect(isinstance(model, torch.nn.Module), f"NBodyModel() must be a torch.nn.Module, got {type_name(model)}",
              fatal=True)
    fb.expect(type_name(model) not in _LIBRARY_MODELS, f"this is the library's {type_name(model)}: the exercise asks "
              "for a model of your own (the library's layers, such as EGNNLayer, may be used)", fatal=True)
    model = call_student(fb, model.double, (), "model.double()")
    named = call_student(fb, lambda: list(iter(model.named_parameters())), (), "model.named_parameters()")
    params = {name: torch.nn.Parameter(p.detach().to(torch.float64).clone()) for name, p in named}
    count = sum(p.numel() for p in params.values())
    fb.expect(count > 0, "the model has no parameters: the exercise asks for a model that learns from the data",
              fatal=True)
    fb.expect(count <= NBODY_MAX_PARAMETERS, f"over the budget: {count} parameters > {NBODY_MAX_PARAMETERS}. Fewer "
              "hidden units or layers (an MLP layer of width H has about H^2 weights)", fatal=True,
              ok=f"{count} parameters (budget {NBODY_MAX_PARAMETERS})")
    return model, params


def _nbody_data(seed: int, n_train: int, n_test: int, test_split: str) -> tuple[tuple, tuple]:
    train, test = _nbody_split("train"), _nbody_split(test_split)
    g = rng(seed)
    pick = torch.arange(n_train) if seed == 0 else torch.randperm(len(train[0]), generator=g)[:n_train]
    chosen = torch.arange(n_test) if seed == 0 else torch.randperm(len(test[0]), generator=g)[:n_test]
    return tuple(t[pick] for t in train), tuple(t[chosen] for t in test)


#: the grader's time limit for this exercise at least (wall clock, s): its hidden tests train the model three times
#: (about 20-25 s of CPU in all); 140 s of wall clock were measured on a 2-core machine at load 10-12
NBODY_GRADING_SECONDS = 600.0


@exercise("04.nbody_design", "design: an E(3)-equivariant N-body model that reaches the bar within the budget",
          min_grading_seconds=NBODY_GRADING_SECONDS)
def check_nbody_design(cls, fb, seed: int = 0, n_train: int = 500, n_test: int = 300, test_split: str = "valid",
                       steps: int = NBODY_STEPS, expected=None):
    """Required properties first (a case that breaks one scores 0, naming each with its error), the budget, then
    the goal: after :func:`train_nbody` on ``n_train`` training systems the MSE on ``n_test`` systems of
    ``test_split`` is below :data:`NBODY_MSE_BAR` (``steps``: smaller only in the course's own tests)."""
    model, params = _nbody_build(cls, fb, seed)
    broken = _nbody_symmetries(fb, model, params, seed)
    fb.expect(not broken, f"the design breaks a required symmetry ({'; '.join(broken)}): whatever its accuracy, a "
              "model without them is not a solution, and this case scores 0", fatal=True,
              ok="has every required symmetry")
    train, test = _nbody_data(seed, n_train, n_test, test_split)
    before = _test_mse(fb, model, params, test, "the test systems")
    fb.expect(before >= NBODY_MSE_BAR, f"the untrained model already reaches the bar (test MSE {before:.4f}): the "
              "exercise asks for a model that learns within the step budget, not for weights trained or "
              "loaded elsewhere, nor for a numerical integrator of the dynamics", fatal=True,
              ok="learns: the untrained model is not at the bar")
    losses = train_nbody(model, params, train, steps=steps, seed=seed)
    if not math.isfinite(losses[-1]):  # a missed bar, not a broken property: the symmetries keep their share
        fb.expect(False, f"missed the accuracy bar: the training diverged (the loss is {losses[-1]} at step "
                  f"{len(losses)} of {steps}; your untrained model: test MSE {before:.4f}). Bound the updates, e.g. "
                  "with a tanh, and start close to free flight x + v", values=True)
        return
    mse = _test_mse(fb, model, params, test, "the test systems")
    pos, vel, _, target = train
    t = float((vel * (target - pos)).sum() / (vel * vel).sum())  # the linear x + t v, fitted in closed form
    linear = float(((test[0] + t * test[1] - test[3]) ** 2).mean())
    fb.expect(mse < NBODY_MSE_BAR, f"missed the accuracy bar: after {steps} training steps your model's test MSE is "
              f"{mse:.4f} on {n_test} systems, the bar is {NBODY_MSE_BAR} (the linear x + t v: {linear:.4f}; your "
              f"untrained model: {before:.4f}). The charges decide attraction or repulsion: does every pair term see "
              "q_i q_j and the distance? Several layers let a particle react to where the others are going",
              ok=f"test MSE {mse:.4f} < {NBODY_MSE_BAR} on {n_test} systems after {steps} steps (the linear "
                 f"x + t v: {linear:.4f})", values=True)
