"""The channel between the checker and the student process (course_lib.teaching.grading.bridge).

Three layers: the plain-data codec refuses everything but plain data (unit tests, no process); the
semantics a checker relies on survive the channel (calls, errors, gradients, in-place changes,
callbacks, the random state; the student's end runs in a thread here); and every exercise checker of
the course gives the same verdict, message for message, whether the student's object is local (Colab)
or behind the channel in another process (the grader), for the reference solution and a wrong one.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from course_lib.teaching.grading import bridge
from course_lib.teaching.grading.bridge import ProtocolError, decode_plain, encode_plain

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# the codec
# --------------------------------------------------------------------------------------------


def _roundtrip(value):
    return decode_plain(json.loads(json.dumps(encode_plain(value))))


def test_plain_values_round_trip_exactly():
    x = torch.randn(3, 4, dtype=torch.float64)
    value = {"a": [1, 2.5, None, True, "s"], "t": (x, x.float(), torch.arange(3), torch.tensor([True, False])),
             "big": 2**70, "nan": float("nan"), "inf": -float("inf"), "c": 1 + 2j, "dtype": torch.float32,
             "size": torch.Size([2, 3]), 3: "int key"}
    got = _roundtrip(value)
    assert torch.equal(got["t"][0], x) and got["t"][0].dtype == torch.float64
    assert got["t"][1].dtype == torch.float32 and got["t"][2].dtype == torch.int64 and got["t"][3].dtype == torch.bool
    assert got["big"] == 2**70 and got["nan"] != got["nan"] and got["inf"] == -float("inf") and got["c"] == 1 + 2j
    assert got["dtype"] is torch.float32 and got["size"] == torch.Size([2, 3]) and got[3] == "int key"
    assert got["a"] == [1, 2.5, None, True, "s"] and isinstance(got["t"], tuple)
    bf = torch.randn(4).bfloat16()
    assert torch.equal(_roundtrip(bf), bf)


def test_named_tuples_and_irreps_are_rebuilt_here():
    from e3nn import o3

    tp = o3.TensorProduct("2x0e + 2x1o", "0e + 1o", "2x0e + 2x1o", [(0, 0, 0, "uvu", True), (1, 1, 0, "uvu", True)],
                          shared_weights=False, internal_weights=False)
    got = _roundtrip(list(tp.instructions))
    assert [tuple(i) for i in got] == [tuple(i) for i in tp.instructions] and got[0].connection_mode == "uvu"
    assert _roundtrip(tp.irreps_in1) == tp.irreps_in1


@pytest.mark.parametrize("entry", [
    {"$": "tensor", "dtype": "float64", "shape": [3], "data": "AAAA"},  # wrong length for the shape
    {"$": "tensor", "dtype": "object", "shape": [1], "data": ""},
    {"$": "tensor", "dtype": "float64", "shape": [10**5, 10**5], "data": ""},
    {"$": "tensor", "dtype": "float64", "shape": [-1], "data": ""},
    {"$": "tensor", "dtype": "float64", "shape": [1], "data": "not base64!"},
    {"$": "pickle", "data": "gASVAAAAAAAAAAA="},  # never unpickled on the checker's side
    {"$": "callback", "id": 0},
    {"$": "namedtuple", "name": "__class__", "fields": ["a"], "v": [1]},
    {"$": "namedtuple", "name": "T", "fields": ["_a", "b"], "v": [1, 2]},
    {"$": "namedtuple", "name": "T", "fields": ["a"], "v": [1, 2]},
    {"$": "dtype", "v": "object"},
    {"$": "irreps", "v": "1x9q"},
    {"$": "dict", "v": [[{"$": "dict", "v": []}, 1]]},
    {"$": "float", "v": "1e308"},
    {"$": "slice", "v": [1, "a", None]},
    {"$": "what"},
])
def test_anything_else_is_refused(entry):
    with pytest.raises(ProtocolError):
        decode_plain(entry)


def test_depth_and_size_are_bounded():
    deep: list = []
    cur = deep
    for _ in range(100):
        cur.append([])
        cur = cur[0]
    with pytest.raises(ProtocolError):
        decode_plain(deep)
    with pytest.raises(ProtocolError):
        decode_plain([[0] * 1000] * 300)


def test_a_frame_larger_than_the_limit_is_refused_before_it_is_read():
    a, b = socket.socketpair()
    a.sendall(struct.pack(">I", bridge.MAX_FRAME + 1))
    with pytest.raises(ProtocolError, match="larger than the limit"):
        bridge.recv_frame(b)
    a.sendall(struct.pack(">I", 5) + b"[1,2]")
    with pytest.raises(ProtocolError, match="not an object"):
        bridge.recv_frame(b)


def test_a_handle_never_claims_a_value_type():
    end = bridge.CheckerEnd(socket.socketpair()[0])
    mods = {"tensor": ["torch._tensor:Tensor"], "param": ["torch.nn.parameter:Parameter"],
            "ndarray": ["numpy:ndarray"], "float": ["builtins:float"], "untrusted": ["os:PathLike"],
            "module": ["__main__:Mine", "torch.nn.modules.module:Module", "builtins:object"]}
    got = {k: end.remote({"$": "handle", "id": i, "mro": m}) for i, (k, m) in enumerate(mods.items())}
    for k in ("tensor", "param", "ndarray", "float", "untrusted"):
        assert not isinstance(got[k], (torch.Tensor, float)) and type(got[k]).__name__ == "Remote", k
    assert isinstance(got["module"], torch.nn.Module)
    with pytest.raises(AttributeError):
        got["module"].weight = 1


# --------------------------------------------------------------------------------------------
# semantics through a live channel (the student's end in a thread)
# --------------------------------------------------------------------------------------------


class Live:
    def __init__(self, obj):
        a, b = socket.socketpair()
        self.student = bridge.StudentEnd(b, cell_files=(__file__,))
        self.thread = threading.Thread(target=self._serve, args=(obj, b), daemon=True)
        self.thread.start()
        self.end = bridge.CheckerEnd(a)
        self.remote = self.end.remote(bridge.recv_frame(a)["target"])

    def _serve(self, obj, sock):
        bridge.send_frame(sock, {"status": "ready", "target": self.student.handle(obj)})
        self.student.serve()

    def close(self):
        self.end.close()
        self.thread.join(10)


@pytest.fixture
def live():
    made = []

    def make(obj):
        made.append(Live(obj))
        return made[-1].remote

    yield make
    for m in made:
        m.close()


def test_calls_errors_and_not_implemented(live):
    def student(x, scale=1.0):
        if scale < 0:
            raise ValueError("negative scale")
        if scale == 0:
            raise NotImplementedError
        return {"y": x * scale, "n": int(x.numel())}

    f = live(student)
    out = f(torch.ones(3), scale=2.0)
    assert torch.equal(out["y"], torch.full((3,), 2.0)) and out["n"] == 3
    with pytest.raises(bridge.RemoteError) as info:
        f(torch.ones(3), scale=-1.0)
    from course_lib.teaching.checks import describe_exception

    text = describe_exception(info.value)
    assert text.startswith("ValueError: negative scale") and "raise ValueError" in text
    with pytest.raises(NotImplementedError):
        f(torch.ones(3), scale=0.0)


def test_gradients_flow_back_to_the_checkers_tensors_and_parameters(live):
    w = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)

    def student(x, model):
        return (torch.sin(x) * w).sum() + model(x[:, None]).sum()

    model = torch.nn.Linear(1, 1).double()
    f = live(student)
    x = torch.linspace(0, 1, 3, dtype=torch.float64, requires_grad=True)
    out = f(x, model)
    assert out.requires_grad
    (gx,) = torch.autograd.grad(out, x, retain_graph=True)
    x2 = x.detach().clone().requires_grad_(True)
    (want,) = torch.autograd.grad((torch.sin(x2) * w).sum() + model(x2[:, None]).sum(), x2)
    assert torch.allclose(gx, want, atol=1e-12)
    out.backward()
    assert model.weight.grad is not None and torch.allclose(model.weight.grad, x.detach().sum().reshape(1, 1))


def test_a_checker_trains_the_students_module_with_its_own_parameters(live):
    """remote_functional_call: the student's module runs with the checker's parameters, the gradients come back to
    them (the optimiser runs in the checker), and the student process forgets each step's graph after backward."""
    from course_lib.teaching.exercises.common import functional_call

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    channel = Live(module)
    try:
        remote = channel.remote
        params = {k: torch.nn.Parameter(v.detach().clone() + 0.1) for k, v in iter(remote.named_parameters())}
        local = {k: torch.nn.Parameter(v.detach().clone()) for k, v in params.items()}
        x = torch.randn(5, 2, dtype=torch.float64)
        out, want = functional_call(remote, params, (x,)), functional_call(module, local, (x,))
        assert out.requires_grad and torch.allclose(out, want, atol=1e-14)
        assert not torch.allclose(want, module(x))  # the checker's parameters were used, not the module's own
        out.pow(2).sum().backward()
        want.pow(2).sum().backward()
        for k in params:
            assert torch.allclose(params[k].grad, local[k].grad, atol=1e-12), k
        assert channel.student.graphs == {}  # a training step's graph is freed after its backward
    finally:
        channel.close()
    with pytest.raises(bridge.RemoteError, match="not a torch.nn.Module"):
        functional_call(live(lambda t: t), params, (x,))


def test_in_place_changes_are_seen_and_the_random_state_is_shared(live):
    def mutate(x):
        x.mul_(2)
        return torch.randn(2)

    f = live(mutate)
    x = torch.ones(3)
    torch.manual_seed(7)
    got = f(x)
    torch.manual_seed(7)
    assert torch.equal(got, torch.randn(2)) and torch.equal(x, torch.full((3,), 2.0))


def test_callbacks_run_in_the_checker_and_handles_follow_objects(live):
    calls = []

    def forces(x):
        calls.append(1)
        return -x

    class Module(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = 3

        def forward(self, x, f):
            return f(x) * self.scale

    m = live(Module)()
    assert isinstance(m, torch.nn.Module) and m.scale == 3
    assert torch.equal(m(torch.ones(2), forces), torch.full((2,), -3.0)) and len(calls) == 1
    assert m.forward(torch.ones(2), forces).shape == (2,) and len(calls) == 2


# --------------------------------------------------------------------------------------------
# every checker of the course: the same verdict through the channel as in one process
# --------------------------------------------------------------------------------------------

STUDENT = r'''
import socket, sys
sys.path.insert(0, sys.argv[2])
import torch
from course_lib.teaching.grading import bridge
sys.path.insert(0, sys.argv[3])
from reference_solutions import reference

exec(sys.argv[5])

objects = {}
for nb in sys.argv[4].split(","):
    for ex, sol in reference(nb).SOLUTIONS.items():
        objects[ex] = sol
        if not isinstance(sol, type):
            objects[ex + "/wrong"] = perturbed(sol)
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
end = bridge.StudentEnd(sock)
bridge.send_frame(sock, {"status": "ready", "target": end.encode(objects)})
end.serve()
'''

NOTEBOOKS = ("nb00", "nb01", "nb02", "nb03", "nb04", "nb05", "nb06", "nb07", "nb08", "nb09", "nb10")


#: checker arguments that keep a check cheap here: the design exercise 04.nbody_design trains the model; 3 steps
#: still send the parameters through the channel and its gradients back (torch.func.functional_call remotely)
CHEAP = {"04.nbody_design": {"steps": 3}}


def _verdict(checker, obj, **kwargs):
    """What the checker says; error values printed in scientific notation are masked: the global random
    state the student's code draws from is sent to its process but not taken back (a student must not set
    the checker's random inputs), so a check drawing after such a call may print another tiny error."""
    import re

    from course_lib.teaching.checks import Feedback, StopChecking

    fb = Feedback()
    try:
        checker(obj, fb, **kwargs)
    except StopChecking:
        pass
    mask = lambda msgs: [re.sub(r"\d(\.\d+)?e[-+]\d+", "#", m) for m in msgs]  # noqa: E731
    return mask(fb.passed), mask(fb.failed), round(fb.score(), 12)


def test_every_checker_gives_the_same_verdict_through_the_channel(tmp_path):
    from reference_solutions import reference

    from course_lib.teaching import checks
    from course_lib.teaching.exercises import load_checkers

    load_checkers()
    script = tmp_path / "student.py"
    script.write_text(STUDENT)
    path = str(tmp_path / "channel")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(script), path, str(REPO), str(REPO / "tests"), ",".join(NOTEBOOKS),
                             PERTURB], env=env)
    ns: dict = {}
    exec(PERTURB, ns)  # noqa: S102 - the same wrong answers on both sides
    perturbed = ns["perturbed"]
    try:
        listener.settimeout(300)
        conn, _ = listener.accept()
        end = bridge.CheckerEnd(conn)
        remotes = end.decode(bridge.recv_frame(conn)["target"])
        compared, accepted = 0, []
        for nb in NOTEBOOKS:
            for ex, sol in reference(nb).SOLUTIONS.items():
                checker = functools.partial(checks.EXERCISES[ex].checker, **CHEAP.get(ex, {}))
                local = _verdict(checker, sol)
                assert local[1] == [] or ex in CHEAP, (ex, local[1])
                assert _verdict(checker, remotes[ex]) == local, ex
                compared += 1
                if isinstance(sol, type):
                    # a class is not perturbed
                    continue
                wrong_local = _verdict(checker, perturbed(sol))
                if not wrong_local[1]:
                    accepted.append(ex)
                assert _verdict(checker, remotes[ex + "/wrong"]) == wrong_local, ex
        # only the design exercises whose properties survive "1.01 x + 0.001" (features: any affine map of a good
        # feature is as good) may accept the perturbed answer; every other checker must notice it
        assert compared >= 20 and set(accepted) <= SCALED_ANSWERS_ACCEPTED, (compared, accepted)
        end.close()
    finally:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        listener.close()


#: design exercises for which an affine map of a correct answer is a correct answer (08.md_setup returns a dict of
#: settings, which the perturbation leaves as it is)
SCALED_ANSWERS_ACCEPTED = {"01.energy_features", "03.crystal_feature", "09.angle_feature", "08.md_setup",
                           "10.failure_flag"}

PERTURB = """
def perturbed(fn):
    import numpy as np
    import torch

    def off(out):
        if isinstance(out, torch.Tensor) and out.is_floating_point() or isinstance(out, np.ndarray):
            return out * 1.01 + 1e-3
        if isinstance(out, float):
            return out * 1.01 + 1e-3
        if isinstance(out, (tuple, list)):
            return type(out)(off(o) for o in out)
        return out

    def wrong(*args, **kwargs):
        return off(fn(*args, **kwargs))

    return wrong
"""
