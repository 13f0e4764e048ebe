"""The notebook-08 checkers accept the reference solutions and reject typical mistakes with specific messages."""

import numpy as np
import pytest
from reference_solutions import reference

from course_lib.teaching.exercises import check

nb08 = reference("nb08")


def _msgs(res):
    return " ".join(res.messages) + (res.error or "")


def test_velocity_verlet_reference_passes():
    for kw in ({}, {"seed": 1}, {"seed": 2, "n": 3, "d": 2, "dt": 0.02}):
        live = {"expected": nb08.compute} if kw else {}  # hidden cases: the reference computes, nothing stored
        res = check("08.velocity_verlet_step", nb08.velocity_verlet_step, verbose=False, **kw, **live)
        assert res.passed, res


def _vv(pos_update, vel_update, count_twice=False, in_place=False, old_forces=False):
    def step(pos, vel, forces, masses, dt, force_fn):
        acc = forces / masses[:, None]
        new_pos = pos_update(pos, vel, forces, masses, dt, acc)
        if count_twice:
            force_fn(pos)
        new_forces = force_fn(new_pos)
        new_vel = vel_update(vel, acc, new_forces / masses[:, None], forces, new_forces, dt)
        if in_place:
            pos += 0.0
            pos[0, 0] += 1e-3
        return new_pos, new_vel, forces if old_forces else new_forces
    return step


def _good_pos(p, v, f, m, dt, a):
    return p + dt * v + 0.5 * dt ** 2 * a


def _good_vel(v, a, a_new, f, f_new, dt):
    return v + 0.5 * dt * (a + a_new)


@pytest.mark.parametrize("pos_update, vel_update, kwargs, expected", [
    (lambda p, v, f, m, dt, a: p + dt * v, _good_vel, {}, "misses the acceleration term"),
    (lambda p, v, f, m, dt, a: p + dt * v + dt ** 2 * a, _good_vel, {}, "factor 1/2"),
    (lambda p, v, f, m, dt, a: p + dt * v + 0.5 * dt ** 2 * f, _good_vel, {}, "divide the forces by the masses"),
    (_good_pos, lambda v, a, a_new, f, f_new, dt: v + dt * a, {}, "only the old forces"),
    (_good_pos, lambda v, a, a_new, f, f_new, dt: v + dt * a_new, {}, "only the new forces"),
    (_good_pos, lambda v, a, a_new, f, f_new, dt: v + dt * (a + a_new), {}, "forgot the 1/2"),
    (_good_pos, lambda v, a, a_new, f, f_new, dt: v + 0.5 * dt * (f + f_new), {}, "velocity update too"),
    (_good_pos, _good_vel, {"count_twice": True}, "called 2 times"),
    (_good_pos, _good_vel, {"in_place": True}, "in place"),
    (_good_pos, _good_vel, {"old_forces": True}, "forces at the *new* positions"),
])
def test_velocity_verlet_mistakes(pos_update, vel_update, kwargs, expected):
    res = check("08.velocity_verlet_step", _vv(pos_update, vel_update, **kwargs), verbose=False)
    assert not res.passed and expected in _msgs(res), _msgs(res)


def test_velocity_verlet_wrong_return_and_stub():
    res = check("08.velocity_verlet_step", lambda *a: a[0], verbose=False)
    assert not res.passed and "tuple" in _msgs(res)

    def stub(*a):
        raise NotImplementedError

    assert "not implemented" in check("08.velocity_verlet_step", stub, verbose=False).error


def test_distance_histogram_reference_passes():
    for kw in ({}, {"seed": 1}, {"seed": 2, "frames": 1, "n": 9, "d": 2}):
        live = {"expected": nb08.compute} if kw else {}
        res = check("08.distance_histogram", nb08.distance_histogram, verbose=False, **kw, **live)
        assert res.passed, res


def _pairs(positions, which="upper"):
    positions = np.asarray(positions)
    n = positions.shape[1]
    if which == "upper":
        i, j = np.triu_indices(n, k=1)
    elif which == "all":
        i, j = (a.ravel() for a in np.indices((n, n)))
    else:  # "with_self"
        i, j = np.triu_indices(n, k=0)
    return np.linalg.norm(positions[:, j] - positions[:, i], axis=-1).ravel()


@pytest.mark.parametrize("fn, expected", [
    (lambda P, e: np.histogram(_pairs(P, "all"), bins=e)[0] / (len(P) * np.diff(e)), "distance matrix"),
    (lambda P, e: np.histogram(_pairs(P, "with_self"), bins=e)[0] / (len(P) * np.diff(e)), "i = j"),
    (lambda P, e: np.histogram(_pairs(P), bins=e)[0] / np.diff(e), "number of frames"),
    (lambda P, e: np.histogram(_pairs(P), bins=e)[0] / len(P), "width"),
    (lambda P, e: np.histogram(_pairs(P), bins=e)[0] / (len(P) * (e[1] - e[0])), "own width"),
    (lambda P, e: np.histogram(_pairs(P), bins=e, density=True)[0], "density=True"),
    (lambda P, e: np.histogram(_pairs(P), bins=e)[0] / len(_pairs(P)), "not a probability"),
    (lambda P, e: np.histogram(np.asarray(P)[..., 0].ravel(), bins=e)[0] / (len(P) * np.diff(e)), "differs"),
])
def test_distance_histogram_mistakes(fn, expected):
    res = check("08.distance_histogram", fn, verbose=False)
    assert not res.passed and expected in _msgs(res), _msgs(res)


def test_distance_histogram_shape_error():
    res = check("08.distance_histogram", lambda P, e: np.zeros(len(e)), verbose=False)
    assert not res.passed and "one value per bin" in _msgs(res)


def _hidden():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "grading" / "hidden" / "nb08.py"
    spec = importlib.util.spec_from_file_location("_hidden_nb08", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_hidden_tests_accept_the_references_and_reject_mistakes():
    from course_lib.teaching.checks import Feedback

    hidden = _hidden()
    refs = {"08.velocity_verlet_step": nb08.velocity_verlet_step, "08.distance_histogram": nb08.distance_histogram}
    assert set(hidden.HIDDEN) == set(refs) | {"08.md_setup"}  # the design exercise: tests below
    for ex, fn in refs.items():
        fb = Feedback()
        hidden.HIDDEN[ex](fn, fb)
        assert not fb.failed and not getattr(fb, "test_errors", []), (ex, fb.failed, fb.test_errors)
        assert all(score == 1.0 for _, score in fb.cases), (ex, fb.cases)

    def only_3d(pos, vel, forces, masses, dt, force_fn):  # hard-codes three coordinates: fails the 1-D/2-D cases
        acc = forces / masses[:, None]
        new_pos = pos + dt * vel + 0.5 * dt ** 2 * acc
        new_forces = force_fn(new_pos)
        new_vel = vel + 0.5 * dt * (acc + new_forces / masses[:, None])
        return new_pos.reshape(-1, 3), new_vel.reshape(-1, 3), new_forces

    fb = Feedback()
    hidden.HIDDEN["08.velocity_verlet_step"](only_3d, fb)
    assert fb.failed and min(score for _, score in fb.cases) < 1.0 and fb.cases[0][1] == 1.0

    def no_frames(positions, edges):  # right for a single frame only
        i, j = np.triu_indices(positions.shape[1], k=1)
        d = np.linalg.norm(positions[:, j] - positions[:, i], axis=-1)
        return np.histogram(d.ravel(), bins=edges)[0] / np.diff(edges) / min(len(positions), 7)

    fb = Feedback()
    hidden.HIDDEN["08.distance_histogram"](no_frames, fb)
    assert fb.failed and fb.cases[0][1] == 1.0 and min(score for _, score in fb.cases) < 1.0


# --------------------------------------------------------------------------------------------
# 08.md_setup (design, graded by running MD)
# --------------------------------------------------------------------------------------------


def _md_score(setup, **kw):
    from course_lib.teaching.checks import Feedback
    from course_lib.teaching.exercises.nb08 import check_md_setup
    from course_lib.teaching.grading import run_cases

    fb = Feedback()
    run_cases(fb, lambda: setup, [("public", check_md_setup, kw)])
    return fb.cases[0][1], fb.failed


def test_md_setup_accepts_the_reference_and_another_design():
    assert check("08.md_setup", nb08.md_setup, verbose=False).passed
    other = {"timestep_fs": 1.0, "thermostat": "bussi", "taut_fs": 50.0}  # a different thermostat and timestep
    score, messages = _md_score(other)
    assert score == 1.0, messages


def test_md_setup_verdicts_broken_weak_and_too_slow():
    score, messages = _md_score({"timestep_fs": 3.0, "thermostat": "langevin", "friction_per_fs": 0.01})
    assert score == 0.0 and any("stability of NVE at dt = 3 fs" in m and "scores 0" in m for m in messages), messages
    score, messages = _md_score({"timestep_fs": 1.5, "thermostat": "langevin", "friction_per_fs": 0.01})
    assert 0.0 < score < 1.0 and any("energy error is 5." in m and "bar of 4 meV" in m for m in messages), messages
    score, messages = _md_score({"timestep_fs": 0.5, "thermostat": "langevin", "friction_per_fs": 0.01})
    assert 0.0 < score < 1.0 and any("too slow: 300 fs" in m and "600 force calls" in m for m in messages), messages
    score, messages = _md_score({"timestep_fs": 0.8, "thermostat": "langevin", "friction_per_fs": 0.0005})
    assert 0.0 < score < 1.0 and any("coupling time is 2000 fs" in m and "too weak" in m for m in messages)
    score, messages = _md_score({"timestep_fs": 0.8, "thermostat": "berendsen", "taut_fs": 100.0})
    assert score == 0.0 and any("canonical ensemble" in m for m in messages)
    score, messages = _md_score([0.8])
    assert score == 0.0 and any("must return a dict" in m for m in messages)


def test_md_setup_hidden_tests_accept_the_reference():
    from course_lib.teaching.checks import Feedback

    fb = Feedback()
    _hidden().HIDDEN["08.md_setup"](nb08.md_setup, fb)
    assert not fb.failed and [s for _, s in fb.cases] == [1.0, 1.0, 1.0], fb.failed
